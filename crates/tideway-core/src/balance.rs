//! Choosing the replica that gets a new connection.

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;

use crate::clock::Timestamp;
use crate::replica::{Replica, ReplicaId};

/// How a replica is chosen among those with room (the `balance` key).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum Balance {
    /// The replica with the fewest connections: spreads load, the usual choice.
    #[default]
    LeastConnections,
    /// The oldest replica with room: fills replicas in order so that the newest ones empty first and can be
    /// removed sooner.
    Pack,
}

impl Balance {
    /// The value as spelled in the config file.
    pub const fn as_str(self) -> &'static str {
        match self {
            Balance::LeastConnections => "least-connections",
            Balance::Pack => "pack",
        }
    }
}

impl fmt::Display for Balance {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Balance {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "least-connections" => Ok(Balance::LeastConnections),
            "pack" => Ok(Balance::Pack),
            other => Err(format!(
                "unknown balance \"{other}\", expected \"least-connections\" or \"pack\""
            )),
        }
    }
}

/// Why no seat could be taken.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NoSeat {
    /// Ready replicas exist, but every one holds `max_connections`: the connection may wait for a seat.
    Full,
    /// No ready replica exists (or every one was already tried): waiting only helps if one is coming.
    NoReplica,
}

/// Takes a seat on the replica `balance` prefers among the ready, untried, reachable ones.
///
/// When `leaving` (some replica is marked so), a replica a pending scale-down will drain
/// ([`Replica::is_leaving`]) is chosen only when no other has room, whatever the balance; unmarked, the
/// marks are not read at all. A replica in connect-failure backoff is out of routing until its backoff ends: it just refused a
/// connection, and, having lost its connections, would otherwise look the least busy of all. `rotation`
/// breaks least-connections ties so that equal replicas share the load instead of the first one taking
/// every burst.
pub(crate) fn take_seat(
    replicas: &[Arc<Replica>],
    balance: Balance,
    max_connections: u32,
    now: Timestamp,
    tried: &[ReplicaId],
    rotation: usize,
    leaving: bool,
) -> Result<Arc<Replica>, NoSeat> {
    let eligible =
        |r: &Arc<Replica>| r.takes_connections() && !tried.contains(&r.id()) && r.is_reachable(now);
    if !replicas.iter().any(eligible) {
        return Err(NoSeat::NoReplica);
    }
    let seated = match balance {
        Balance::Pack if leaving => {
            let pack = |leaving: bool| {
                replicas
                    .iter()
                    .find(|r| eligible(r) && r.is_leaving() == leaving && r.try_take_seat(max_connections))
            };
            pack(false).or_else(|| pack(true))
        }
        Balance::Pack => replicas
            .iter()
            .find(|r| eligible(r) && r.try_take_seat(max_connections)),
        Balance::LeastConnections => {
            least_connections(replicas, max_connections, rotation, leaving, eligible)
        }
    };
    seated.cloned().ok_or(NoSeat::Full)
}

fn least_connections(
    replicas: &[Arc<Replica>],
    max_connections: u32,
    rotation: usize,
    leaving: bool,
    eligible: impl Fn(&Arc<Replica>) -> bool,
) -> Option<&Arc<Replica>> {
    let len = replicas.len();
    // Each failed compare-and-swap means another connection took a seat; the rescan sees it. Bounded so a
    // storm of competitors cannot keep one caller spinning.
    for _ in 0..=2 * len {
        let best = (0..len)
            .map(|i| &replicas[(rotation + i) % len])
            .filter(|r| eligible(r))
            .map(|r| (r.total_connections(), r))
            .filter(|(connections, _)| *connections < max_connections)
            // One integer key, a leaving replica's above every other's: cheaper to compare than a pair.
            .min_by_key(|(connections, r)| {
                u64::from(leaving && r.is_leaving()) << 32 | u64::from(*connections)
            })?;
        if best.1.try_take_seat(max_connections) {
            return Some(best.1);
        }
    }
    None
}

#[cfg(test)]
mod tests;
