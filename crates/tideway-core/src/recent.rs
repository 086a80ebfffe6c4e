//! Counts of the last few minutes, per reason: "3 refused in the last 5 minutes" tells an operator at the
//! status page what a total since start cannot. Lock-free: one slot per minute, reused as the minutes go
//! round; a count that lands exactly as its slot is reused for a new minute may be lost, which a figure
//! for people can afford.

use std::sync::atomic::{AtomicU64, Ordering};

use crate::clock::Timestamp;

/// Minutes a recent count covers (the current one included).
pub const RECENT_MINUTES: u64 = 5;
/// One slot more than the window, so the oldest minute is never reused while it still counts.
const SLOTS: usize = RECENT_MINUTES as usize + 1;

/// The counts of `N` reasons over the last [`RECENT_MINUTES`] minutes.
pub(crate) struct Recent<const N: usize> {
    slots: [Slot<N>; SLOTS],
}

struct Slot<const N: usize> {
    /// The minute counted here, plus one (0: never used).
    minute: AtomicU64,
    counts: [AtomicU64; N],
}

impl<const N: usize> Default for Recent<N> {
    fn default() -> Self {
        Recent {
            slots: std::array::from_fn(|_| Slot {
                minute: AtomicU64::new(0),
                counts: std::array::from_fn(|_| AtomicU64::new(0)),
            }),
        }
    }
}

impl<const N: usize> Recent<N> {
    /// Counts one of reason `index` at `now`.
    pub(crate) fn record(&self, index: usize, now: Timestamp) {
        let minute = minute_of(now);
        let slot = &self.slots[slot_of(minute)];
        let counted = slot.minute.load(Ordering::Acquire);
        if counted != minute
            && slot
                .minute
                .compare_exchange(counted, minute, Ordering::AcqRel, Ordering::Acquire)
                .is_ok()
        {
            for count in &slot.counts {
                count.store(0, Ordering::Relaxed);
            }
        }
        slot.counts[index].fetch_add(1, Ordering::Relaxed);
    }

    /// The count of reason `index` over the last [`RECENT_MINUTES`] minutes before `now`.
    pub(crate) fn count(&self, index: usize, now: Timestamp) -> u64 {
        let minute = minute_of(now);
        self.slots
            .iter()
            .filter(|slot| {
                let counted = slot.minute.load(Ordering::Acquire);
                counted != 0 && counted <= minute && minute - counted < RECENT_MINUTES
            })
            .map(|slot| slot.counts[index].load(Ordering::Relaxed))
            .sum()
    }
}

fn minute_of(now: Timestamp) -> u64 {
    now.as_millis() / 60_000 + 1
}

fn slot_of(minute: u64) -> usize {
    usize::try_from(minute % SLOTS as u64).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn at(seconds: u64) -> Timestamp {
        Timestamp::ZERO.saturating_add(Duration::from_secs(seconds))
    }

    #[test]
    fn counts_cover_the_last_minutes_only() {
        let recent = Recent::<2>::default();
        recent.record(0, at(0));
        recent.record(0, at(30));
        recent.record(1, at(90));
        assert_eq!((recent.count(0, at(100)), recent.count(1, at(100))), (2, 1));
        // Minute 0 leaves the window after five minutes; minute 1 a minute later.
        assert_eq!(recent.count(0, at(4 * 60 + 59)), 2);
        assert_eq!(recent.count(0, at(5 * 60)), 0);
        assert_eq!(recent.count(1, at(5 * 60)), 1);
        assert_eq!(recent.count(1, at(6 * 60)), 0);
        // A slot reused for a later minute starts from zero.
        recent.record(0, at(6 * 60));
        assert_eq!(recent.count(0, at(6 * 60)), 1);
        assert_eq!(recent.count(0, at(0)), 0, "the future is not the past");
    }

    proptest::proptest! {
        #[test]
        fn a_count_is_the_events_of_the_window(events in proptest::collection::vec((0usize..3, 0u64..1_200), 0..200), probe in 0u64..1_300) {
            let mut events = events;
            events.sort_by_key(|(_, second)| *second);
            let recent = Recent::<3>::default();
            for (reason, second) in &events {
                recent.record(*reason, at(*second));
            }
            // Only probes at or after the last event: the slots hold the latest minutes.
            let last = events.last().map_or(0, |(_, second)| *second);
            let probe = last.max(probe);
            let minute = probe / 60;
            for reason in 0..3 {
                let expected = events
                    .iter()
                    .filter(|(r, second)| *r == reason && second / 60 + RECENT_MINUTES > minute)
                    .count() as u64;
                proptest::prop_assert_eq!(recent.count(reason, at(probe)), expected);
            }
        }
    }
}
