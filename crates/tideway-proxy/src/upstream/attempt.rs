//! One request's attempts at its replicas, the same for every client protocol: which connection it goes
//! out on, where it moves when its replica refuses the connection, and when it may be sent again.
//!
//! A request written to a replica is never sent again (README, "Failures"): the replica may have acted on
//! it. One that never went out is sent again on a new connection when a kept-alive one turned out closed,
//! and moves to another replica when a new connection fails.

use std::io;
use std::sync::Arc;

use tideway_core::{App, RejectReason, Replica};
use tokio::net::TcpStream;
use tracing::warn;

use super::{ReplicaLink, UpstreamSettings, connect_stream};
use crate::Shared;
use crate::claim::Claim;
use crate::handler::admit;

/// How many times one request is sent again after a kept-alive connection failed before the request was
/// written to it.
const RETRIES: usize = 2;

/// How many times one request moves to another replica after connections failed, before it is given up.
const RESEATS: usize = 8;

/// The attempts of one admitted request.
pub(crate) struct Attempts<'a> {
    app: &'a Arc<App>,
    shared: &'a Shared,
    settings: UpstreamSettings,
    moves: usize,
    retries: usize,
}

/// A connection to the replica a request is seated on, ready to carry it.
pub(crate) struct ReplicaConn {
    /// The replica.
    pub(crate) replica: Arc<Replica>,
    /// The data plane's state of the replica: its pool and its eviction signal.
    pub(crate) link: Arc<ReplicaLink>,
    /// The connection.
    pub(crate) stream: TcpStream,
    /// Whether it was kept from an earlier request (a new one failing says more about the replica).
    pub(crate) reused: bool,
}

/// What becomes of a request its replica closed the connection on without answering.
pub(crate) enum Again {
    /// Send it again, with this claim.
    Retry(Claim),
    /// Give it up with a `502`: it went out, or was retried enough.
    Failed,
    /// It lost its seat and found no other.
    Rejected(RejectReason),
}

impl<'a> Attempts<'a> {
    /// The first attempt of a request routed to `app`.
    pub(crate) fn new(shared: &'a Shared, app: &'a Arc<App>) -> Self {
        Attempts {
            app,
            shared,
            settings: UpstreamSettings::from(&**shared.settings.load()),
            moves: 0,
            retries: 0,
        }
    }

    /// How connections are opened and kept for this request.
    pub(crate) fn settings(&self) -> &UpstreamSettings {
        &self.settings
    }

    /// A connection to the replica `claim` is on: a kept one if one is still good, else a new one. When
    /// the replica refuses, the request moves (see [`Attempts::reseat`]), and the claim with it.
    pub(crate) async fn connect(&mut self, mut claim: Claim) -> Result<(Claim, ReplicaConn), RejectReason> {
        loop {
            let replica = Arc::clone(claim.replica());
            let link = self.shared.links.replica(&replica);
            let (stream, reused) = match link.take(self.settings.keepalive_timeout) {
                Some(stream) => (stream, true),
                None => match connect_stream(replica.addr(), self.settings.connect_timeout).await {
                    Ok(stream) => {
                        replica.record_connect_success();
                        (stream, false)
                    }
                    Err(error) => {
                        claim = self.reseat(claim, &replica, &error).await?;
                        continue;
                    }
                },
            };
            let upstream = ReplicaConn {
                replica,
                link,
                stream,
                reused,
            };
            return Ok((claim, upstream));
        }
    }

    /// The replica closed `upstream` without answering; `written`: whether the request went out on it.
    pub(crate) async fn again(&mut self, claim: Claim, upstream: &ReplicaConn, written: bool) -> Again {
        if written {
            drop(claim);
            return Again::Failed;
        }
        if upstream.reused {
            // A kept-alive connection the replica had closed: send it again on another.
            if self.retries < RETRIES {
                self.retries += 1;
                return Again::Retry(claim);
            }
            drop(claim);
            return Again::Failed;
        }
        // A new connection the replica closed before taking the request: the replica is failing.
        let error = io::Error::from(io::ErrorKind::ConnectionReset);
        match self.reseat(claim, &upstream.replica, &error).await {
            Ok(other) => Again::Retry(other),
            Err(reason) => Again::Rejected(reason),
        }
    }

    /// After `replica` refused the connection (or closed a new one before taking the request): takes it out
    /// of routing until its backoff ends, and finds the request a seat elsewhere — on another replica with
    /// room now, else by waiting for one like any other connection (in the queue, or for a replica to
    /// start). A session moves with its connection, so its next one finds it on the new replica.
    async fn reseat(
        &mut self,
        claim: Claim,
        replica: &Replica,
        error: &io::Error,
    ) -> Result<Claim, RejectReason> {
        let app = self.app;
        warn!(app = app.name(), replica = replica.name(), %error, "replica failed the connection");
        let backoff = replica.record_connect_failure(self.shared.clock.now());
        // Connections waiting for a seat may try it again once its backoff ends.
        let waiting = Arc::clone(app);
        tokio::spawn(async move {
            tokio::time::sleep(backoff).await;
            waiting.replicas_changed();
        });
        self.moves += 1;
        if self.moves > RESEATS {
            return Err(RejectReason::NoReplica);
        }
        if let Ok(other) = app.seat_excluding(&[replica.id()]) {
            return Ok(claim.move_to(other));
        }
        // The seat on the failed replica is given up while waiting; a session keeps its place.
        let share = match claim {
            Claim::Own(guard) => {
                drop(guard);
                None
            }
            Claim::Share(share) => Some(share),
        };
        let other = admit(self.shared, app).await?;
        Ok(match share {
            Some(share) => Claim::Share(share).move_to(other),
            None => Claim::Own(other),
        })
    }
}
