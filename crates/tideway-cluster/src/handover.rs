//! Handing a session over (`docs/glossary.md`, "handover"): a client whose affinity cookie brings it back
//! through another instance than the one that held its session — the load balancer moved it, or that
//! instance is gone — makes the instance it reached ask the others to give the session up. A vacant
//! session held in its reconnect grace gives its seat back there, and the instance that asked takes it on
//! the same replica: the seat moves, and counts once.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;
use futures::stream::FuturesUnordered;
use serde::{Deserialize, Serialize};
use tideway_core::{App, GaveUp, SessionId};
use tracing::debug;

use crate::sender::{Post, connect};

/// Where peers ask for a session.
pub(crate) const HANDOVER_PATH: &str = "/v1/handover";

/// Longest a peer may take to answer: a peer that does not answer in time holds nothing back, and the
/// session is placed as if nobody held it.
const HANDOVER_TIMEOUT: Duration = Duration::from_millis(500);

/// Largest answer taken: an outcome is a few bytes.
const MAX_ANSWER_BYTES: usize = 1024;

/// What one instance asks another for.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct Ask {
    app: String,
    /// The session id, as its cookie writes it.
    session: String,
}

/// What the asked instance did.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum Outcome {
    Released,
    Forgotten,
    Open,
    Unknown,
}

impl From<GaveUp> for Outcome {
    fn from(gave_up: GaveUp) -> Self {
        match gave_up {
            GaveUp::Released => Outcome::Released,
            GaveUp::Forgotten => Outcome::Forgotten,
            GaveUp::Open => Outcome::Open,
            GaveUp::Unknown => Outcome::Unknown,
        }
    }
}

impl From<Outcome> for GaveUp {
    fn from(outcome: Outcome) -> Self {
        match outcome {
            Outcome::Released => GaveUp::Released,
            Outcome::Forgotten => GaveUp::Forgotten,
            Outcome::Open => GaveUp::Open,
            Outcome::Unknown => GaveUp::Unknown,
        }
    }
}

/// Gives up the session `ask` names, if this instance holds it vacant: what the internal listener
/// answers a peer with. `None` for an ask that names no session id.
pub(crate) fn give_up(apps: &[Arc<App>], ask: &Ask) -> Option<Outcome> {
    let id: SessionId = ask.session.parse().ok()?;
    let outcome = apps
        .iter()
        .find(|app| app.name() == ask.app)
        .map_or(GaveUp::Unknown, |app| app.give_up_session(id));
    Some(outcome.into())
}

/// Asks every one of `peers` at once to give up session `id` of `app`: the first that released its seat
/// (or has the session open) answers for all. A peer that cannot be reached, or answers late, counts as
/// not holding it.
pub(crate) async fn ask_peers(peers: Vec<SocketAddr>, secret: Arc<[u8]>, app: &str, id: SessionId) -> GaveUp {
    let ask = Ask {
        app: app.to_owned(),
        session: id.to_string(),
    };
    let Ok(body) = serde_json::to_vec(&ask) else {
        return GaveUp::Unknown;
    };
    let body = Bytes::from(body);
    let mut answers: FuturesUnordered<_> = peers
        .into_iter()
        .map(|peer| {
            let (secret, body) = (Arc::clone(&secret), body.clone());
            async move {
                let asked = tokio::time::timeout(HANDOVER_TIMEOUT, ask_one(peer, &secret, body)).await;
                match asked {
                    Ok(Ok(outcome)) => outcome,
                    Ok(Err(error)) => {
                        debug!(%peer, %error, "handover not answered");
                        Outcome::Unknown
                    }
                    Err(_) => {
                        debug!(%peer, "handover not answered in time");
                        Outcome::Unknown
                    }
                }
            }
        })
        .collect();
    let mut best = Outcome::Unknown;
    while let Some(outcome) = answers.next().await {
        match outcome {
            Outcome::Released | Outcome::Open => return outcome.into(),
            Outcome::Forgotten => best = Outcome::Forgotten,
            Outcome::Unknown => {}
        }
    }
    best.into()
}

async fn ask_one(peer: SocketAddr, secret: &[u8], body: Bytes) -> Result<Outcome, String> {
    let mut sender = connect(peer).await?;
    let posted = Post {
        address: &peer.to_string(),
        authorization: &format!("Bearer {}", String::from_utf8_lossy(secret)),
        path: HANDOVER_PATH,
        limit: MAX_ANSWER_BYTES,
    };
    posted.send(&mut sender, body).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outcomes_are_written_as_words() {
        let written = serde_json::to_string(&Outcome::from(GaveUp::Released)).ok();
        assert_eq!(written.as_deref(), Some("\"released\""));
        let read: Option<Outcome> = serde_json::from_str("\"open\"").ok();
        assert_eq!(read.map(GaveUp::from), Some(GaveUp::Open));
    }

    #[test]
    fn an_ask_for_no_session_id_is_refused_and_an_unknown_app_holds_nothing() {
        let ask = |session: &str| Ask {
            app: "none".into(),
            session: session.into(),
        };
        assert_eq!(give_up(&[], &ask("not-hex")), None);
        let id = SessionId::from_bits(7).to_string();
        assert_eq!(give_up(&[], &ask(&id)), Some(Outcome::Unknown));
    }
}
