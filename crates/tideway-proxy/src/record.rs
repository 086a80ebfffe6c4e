//! One request's record: opened when the request arrives, completed exactly once when its response ends,
//! into the request metrics and the access log.

use std::sync::Arc;

use http::StatusCode;
use tideway_core::{App, Replica};
use tokio::time::Instant;
use tracing::info;

use crate::app_link::AppLink;
use crate::client::{ClientConn, InFlight};
use crate::metrics::ProxyMetrics;
use crate::trace_log::{Refused, TraceLog, Traced};

/// A request on its way through the proxy: also keeps its client connection's "request in flight" mark.
pub(crate) struct Record {
    _in_flight: InFlight,
    started: Instant,
    app: Option<(Arc<App>, Arc<AppLink>)>,
    status: StatusCode,
    bytes: u64,
    metrics: Arc<ProxyMetrics>,
    /// The method and path the access log names; kept only when the access log is on.
    access: Option<Box<(Box<str>, Box<str>)>>,
    /// The connection's line in the trace, while it holds its seat (`[proxy] trace_log`).
    trace: Option<Traced>,
    finished: bool,
}

/// How a response ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Outcome {
    /// Its body was sent whole.
    Complete,
    /// The client stopped reading or went away first.
    ClientGone,
    /// The replica failed mid-body.
    UpstreamFailed,
    /// The replica paused mid-body past `response_timeout`.
    UpstreamStalled,
}

impl Record {
    /// Opens the record of a request (its method and path, if it could be parsed) routed to `app` (if it
    /// was), with the data plane's state of that app.
    pub(crate) fn open(
        in_flight: InFlight,
        request: Option<(&str, &str)>,
        app: Option<(Arc<App>, Arc<AppLink>)>,
        metrics: Arc<ProxyMetrics>,
        access_log: bool,
    ) -> Self {
        Record {
            _in_flight: in_flight,
            started: Instant::now(),
            app,
            status: StatusCode::OK,
            bytes: 0,
            metrics,
            access: access_log.then(|| {
                let (method, path) = request.unwrap_or_default();
                Box::new((method.into(), path.into()))
            }),
            trace: None,
            finished: false,
        }
    }

    /// The request got its seat on `app`: with a trace log, its line is written when the record ends
    /// (or, for an upgrade, when its tunnel does: [`Record::take_trace`]).
    pub(crate) fn seated(&mut self, trace: Option<&Arc<TraceLog>>, app: &Arc<App>) {
        if let Some(log) = trace {
            self.trace = Some(log.seated(app, self.started));
        }
    }

    /// The request got no seat on `app`, or lost the one it had before any replica took it: with a trace
    /// log, its line says why (and no line says it held a seat).
    pub(crate) fn refused(&mut self, trace: Option<&Arc<TraceLog>>, app: &App, why: Refused) {
        if let Some(seated) = self.trace.take() {
            seated.cancel();
        }
        if let Some(log) = trace {
            log.refused(app.name(), self.started, why);
        }
    }

    /// The trace line of an upgraded connection, which goes on with its tunnel.
    pub(crate) fn take_trace(&mut self) -> Option<Traced> {
        self.trace.take().map(Traced::upgraded)
    }

    /// Records the status of the response being sent.
    pub(crate) fn responded(mut self, status: StatusCode) -> Self {
        self.set_status(status);
        self
    }

    /// Records the status of the response being sent.
    pub(crate) fn set_status(&mut self, status: StatusCode) {
        self.status = status;
    }

    /// Counts response body bytes passed to the client.
    pub(crate) fn count(&mut self, bytes: usize) {
        self.bytes += bytes as u64;
    }

    /// The client connection the request came on.
    pub(crate) fn client(&self) -> &ClientConn {
        self._in_flight.client()
    }

    /// Completes the record: the request's metrics and its access-log line.
    pub(crate) fn finish(mut self, replica: Option<&Replica>, outcome: Outcome) {
        self.record(replica, outcome);
    }

    fn record(&mut self, replica: Option<&Replica>, outcome: Outcome) {
        self.finished = true;
        let duration = self.started.elapsed();
        match &self.app {
            Some((_, link)) => link.metrics.request(self.status, duration),
            None => self.metrics.unrouted(),
        }
        if let Some(access) = &self.access {
            let (method, path) = &**access;
            info!(
                target: "tideway::access",
                app = self.app.as_ref().map_or("", |(app, _)| app.name()),
                replica = replica.map_or("", Replica::name),
                method = &**method,
                path = &**path,
                status = self.status.as_u16(),
                duration_ms = duration.as_secs_f64() * 1_000.0,
                bytes = self.bytes,
                outcome = outcome.as_str(),
                "request"
            );
        }
    }
}

impl Drop for Record {
    /// A record dropped unfinished belongs to a request cut short with its connection.
    fn drop(&mut self) {
        if !self.finished {
            self.record(None, Outcome::ClientGone);
        }
    }
}

impl Outcome {
    /// The value in the access log.
    pub(crate) const fn as_str(self) -> &'static str {
        match self {
            Outcome::Complete => "complete",
            Outcome::ClientGone => "client_gone",
            Outcome::UpstreamFailed => "upstream_failed",
            Outcome::UpstreamStalled => "upstream_stalled",
        }
    }
}
