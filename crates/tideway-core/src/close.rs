//! Why a connection ended or was refused. The names are the metric label values and the log field values.

/// Why a counted connection (or the client connection carrying it) was closed.
///
/// Operators tune `max_connection_age` and `inactive_timeout` by watching how often each reason fires, so
/// every close is attributed to exactly one of these.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum CloseReason {
    /// The connection outlived `max_connection_age`.
    MaxAge,
    /// No application data moved for `inactive_timeout` (or a keep-alive connection waited past `keepalive_timeout` for its next request).
    Inactive,
    /// Tideway closed it to drain a replica or to shut down.
    Drain,
    /// The client closed it or went away.
    Client,
    /// The upstream replica closed it, failed, or went away.
    Upstream,
    /// The client paused its request body longer than `body_read_timeout`.
    BodyTimeout,
    /// The replica kept the request waiting longer than `response_timeout`.
    ResponseTimeout,
}

impl CloseReason {
    /// Every reason, in label order; `ALL[r.index()] == r`.
    pub const ALL: [CloseReason; 7] = [
        CloseReason::MaxAge,
        CloseReason::Inactive,
        CloseReason::Drain,
        CloseReason::Client,
        CloseReason::Upstream,
        CloseReason::BodyTimeout,
        CloseReason::ResponseTimeout,
    ];

    /// The label value used in logs and metrics.
    pub const fn as_str(self) -> &'static str {
        match self {
            CloseReason::MaxAge => "max_age",
            CloseReason::Inactive => "inactive",
            CloseReason::Drain => "drain",
            CloseReason::Client => "client",
            CloseReason::Upstream => "upstream",
            CloseReason::BodyTimeout => "body_timeout",
            CloseReason::ResponseTimeout => "response_timeout",
        }
    }

    /// Position in [`CloseReason::ALL`], for per-reason counter arrays.
    pub const fn index(self) -> usize {
        self as usize
    }
}

/// Why a connection was refused a seat on a replica.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum RejectReason {
    /// Every replica was full and the app's queue already held `max_queued` waiters.
    QueueFull,
    /// The connection waited `queue_timeout` in the queue without a seat freeing up.
    QueueTimeout,
    /// The app had no ready replica and none became ready within `startup_timeout`.
    StartupTimeout,
    /// No replica could be reached: none exists, or every one refused the connection.
    NoReplica,
    /// The connection's session had `max_session_connections` open and its own queue was full, or no share
    /// freed up within `queue_timeout`.
    SessionLimit,
}

impl RejectReason {
    /// Every reason, in label order; `ALL[r.index()] == r`.
    pub const ALL: [RejectReason; 5] = [
        RejectReason::QueueFull,
        RejectReason::QueueTimeout,
        RejectReason::StartupTimeout,
        RejectReason::NoReplica,
        RejectReason::SessionLimit,
    ];

    /// The label value used in logs and metrics.
    pub const fn as_str(self) -> &'static str {
        match self {
            RejectReason::QueueFull => "queue_full",
            RejectReason::QueueTimeout => "queue_timeout",
            RejectReason::StartupTimeout => "startup_timeout",
            RejectReason::NoReplica => "no_replica",
            RejectReason::SessionLimit => "session_limit",
        }
    }

    /// Position in [`RejectReason::ALL`], for per-reason counter arrays.
    pub const fn index(self) -> usize {
        self as usize
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn indices_match_label_order() {
        for (i, r) in CloseReason::ALL.iter().enumerate() {
            assert_eq!(r.index(), i);
        }
        for (i, r) in RejectReason::ALL.iter().enumerate() {
            assert_eq!(r.index(), i);
        }
    }
}
