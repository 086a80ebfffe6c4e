//! Synthetic traces of the shapes operators meet: steady traffic, a day's rise and fall, a flash crowd,
//! long-lived sessions — each a mix of sessions (seconds to minutes) and short requests, drawn from a
//! seed so a run can be repeated exactly.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use crate::trace::{Arrival, Kind, Trace};

/// The app name synthetic traces use.
pub const SYNTHETIC_APP: &str = "synthetic";

/// A shape of demand.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Shape {
    /// Poisson arrivals at one rate: about 20 connections open on average.
    Steady,
    /// The rate rises from a tenth of its peak to the peak and back, once over the trace.
    Diurnal,
    /// A low rate, then ten times as many arrivals for a minute, then low again.
    Flash,
    /// Sessions only, of two to ten minutes.
    Longlived,
}

/// How arrivals are drawn for a shape.
struct Mix {
    /// Mean arrivals per second at the peak.
    peak_rate: f64,
    /// Share of arrivals that are sessions; the rest are short requests.
    sessions: f64,
    /// Shortest and longest session (log-uniform between them).
    session: (f64, f64),
}

impl Shape {
    /// Every shape.
    pub const ALL: [Shape; 4] = [Shape::Steady, Shape::Diurnal, Shape::Flash, Shape::Longlived];

    /// The name on the command line.
    pub const fn as_str(self) -> &'static str {
        match self {
            Shape::Steady => "steady",
            Shape::Diurnal => "diurnal",
            Shape::Flash => "flash",
            Shape::Longlived => "longlived",
        }
    }

    fn mix(self) -> Mix {
        match self {
            Shape::Steady => Mix {
                peak_rate: 0.9,
                sessions: 0.3,
                session: (5.0, 300.0),
            },
            Shape::Diurnal => Mix {
                peak_rate: 1.5,
                sessions: 0.3,
                session: (5.0, 300.0),
            },
            Shape::Flash => Mix {
                peak_rate: 1.5,
                sessions: 0.3,
                session: (5.0, 300.0),
            },
            Shape::Longlived => Mix {
                peak_rate: 0.08,
                sessions: 1.0,
                session: (120.0, 600.0),
            },
        }
    }

    /// The arrival rate at `t` of a trace lasting `length`, as a share of the peak.
    fn rate_share(self, t: f64, length: f64) -> f64 {
        match self {
            Shape::Steady | Shape::Longlived => 1.0,
            Shape::Diurnal => 0.55 - 0.45 * (2.0 * std::f64::consts::PI * t / length).cos(),
            Shape::Flash => {
                let start = length / 3.0;
                if (start..start + 60.0).contains(&t) {
                    1.0
                } else {
                    0.1
                }
            }
        }
    }

    /// A trace of this shape lasting `length`, drawn from `seed`. Arrivals follow a Poisson process whose
    /// rate follows the shape; a session holds its seat for a log-uniform time between the shape's bounds,
    /// a request for an exponential time of mean 200 ms.
    pub fn trace(self, seed: u64, length: Duration) -> Trace {
        let mut rng = fastrand::Rng::with_seed(seed);
        let mix = self.mix();
        let length_s = length.as_secs_f64();
        let mut arrivals = Vec::new();
        let mut t = 0.0;
        // Thinning: candidates at the peak rate, each kept with the shape's share of it at its time.
        loop {
            t += -(1.0 - rng.f64()).ln() / mix.peak_rate;
            if t >= length_s {
                break;
            }
            if rng.f64() >= self.rate_share(t, length_s) {
                continue;
            }
            let (kind, held) = if rng.f64() < mix.sessions {
                let (low, high) = mix.session;
                (Kind::Upgraded, low * (high / low).powf(rng.f64()))
            } else {
                (Kind::Request, -(1.0 - rng.f64()).ln() * 0.2)
            };
            arrivals.push(Arrival {
                app: SYNTHETIC_APP.to_owned(),
                at: Duration::from_millis((t * 1000.0) as u64),
                kind,
                held: Duration::from_millis((held * 1000.0).max(1.0) as u64),
                seated: Ok(Duration::ZERO),
            });
        }
        Trace {
            arrivals,
            cold_starts: Vec::new(),
        }
    }
}

impl fmt::Display for Shape {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Shape {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Shape::ALL
            .into_iter()
            .find(|shape| shape.as_str() == s)
            .ok_or_else(|| format!("expected one of steady, diurnal, flash, longlived, got {s:?}"))
    }
}
