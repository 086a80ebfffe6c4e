//! Startup-aware headroom (`headroom = "auto"`): spare seats for the connections expected to arrive while
//! a new replica starts, so an app whose replicas start slowly queues less in a rise, at the cost of the
//! replicas those seats keep running.

use std::collections::VecDeque;
use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use crate::clock::Timestamp;

/// Whether an app keeps startup-aware headroom.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum Headroom {
    /// None: the app wants what its demand needs.
    #[default]
    Off,
    /// Seats for the arrivals of one measured cold start ([`ArrivalRate::headroom`]).
    Auto,
}

/// How far back the arrival rate looks.
const RATE_WINDOW: Duration = Duration::from_secs(60);

/// The rate at which connections arrived over the last minute, from readings of an app's arrival count.
#[derive(Clone, Debug, Default)]
pub struct ArrivalRate {
    /// Readings (when, arrivals so far), oldest first; the oldest may be older than the window, as the
    /// last reading before it.
    readings: VecDeque<(Timestamp, u64)>,
}

impl ArrivalRate {
    /// Records that `arrivals` connections had arrived in all by `now`.
    pub fn observe(&mut self, now: Timestamp, arrivals: u64) {
        self.readings.push_back((now, arrivals));
        while let Some((since, _)) = self.readings.get(1) {
            if since.saturating_add(RATE_WINDOW) > now {
                break;
            }
            self.readings.pop_front();
        }
    }

    /// Arrivals per second between the oldest reading kept and the newest; 0 before two readings.
    pub fn per_second(&self) -> f64 {
        match (self.readings.front(), self.readings.back()) {
            (Some((first, before)), Some((last, now))) if last > first => {
                (now - before) as f64 / last.saturating_since(*first).as_secs_f64()
            }
            _ => 0.0,
        }
    }

    /// The spare seats to keep for `demand` connections when a replica takes `cold_start` to start: the
    /// arrivals expected meanwhile, `rate × cold_start`, but never more than the demand itself — by
    /// Little's law that is what connections holding their seats for less than a cold start add at most.
    pub fn headroom(&self, demand: u64, cold_start: Duration) -> u64 {
        let expected = (self.per_second() * cold_start.as_secs_f64()).ceil();
        (expected as u64).min(demand)
    }
}

impl Headroom {
    /// The value as spelled in the config file.
    pub const fn as_str(self) -> &'static str {
        match self {
            Headroom::Off => "off",
            Headroom::Auto => "auto",
        }
    }
}

impl fmt::Display for Headroom {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Headroom {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "off" => Ok(Headroom::Off),
            "auto" => Ok(Headroom::Auto),
            other => Err(format!(
                "unknown headroom \"{other}\", expected \"off\" or \"auto\""
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn at(secs: u64) -> Timestamp {
        Timestamp::ZERO.saturating_add(Duration::from_secs(secs))
    }

    #[test]
    fn the_rate_covers_the_last_minute_and_the_headroom_its_arrivals_in_a_cold_start() {
        let mut rate = ArrivalRate::default();
        assert_eq!(rate.per_second(), 0.0);
        rate.observe(at(0), 100);
        assert_eq!(rate.per_second(), 0.0, "one reading is no rate");
        rate.observe(at(10), 120);
        assert_eq!(rate.per_second(), 2.0);
        assert_eq!(rate.headroom(50, Duration::from_secs(3)), 6);
        assert_eq!(
            rate.headroom(4, Duration::from_secs(3)),
            4,
            "never more than the demand"
        );
        // Readings older than a minute leave, but for the last one before the window.
        rate.observe(at(70), 130);
        rate.observe(at(80), 150);
        assert_eq!(
            rate.per_second(),
            30.0 / 70.0,
            "from 10 s, the last reading before the window"
        );
        assert_eq!(rate.headroom(50, Duration::ZERO), 0);
    }

    proptest! {
        #[test]
        fn headroom_is_bounded_by_the_demand_and_grows_with_the_cold_start(
            steps in prop::collection::vec((1u64..30, 0u64..50), 1..40),
            demand in 0u64..200,
            cold in 0u64..30,
        ) {
            let mut rate = ArrivalRate::default();
            let (mut now, mut arrivals) = (0, 0);
            for (advance, arrived) in steps {
                now += advance;
                arrivals += arrived;
                rate.observe(at(now), arrivals);
            }
            let short = rate.headroom(demand, Duration::from_secs(cold));
            let long = rate.headroom(demand, Duration::from_secs(cold + 5));
            prop_assert!(short <= demand && long <= demand);
            prop_assert!(short <= long);
            prop_assert!(rate.per_second() >= 0.0);
        }
    }
}
