//! Warnings that repeat — accept failures at the file-descriptor limit, a flood of HTTP/2 resets, one dead
//! replica refusing every request — are written a few times per window, not thousands: past
//! [`BURST`] lines from one place in the code within [`WINDOW`], the rest are counted, and one line says
//! how many were left out once the window closes.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tokio::sync::Notify;
use tokio::time::Instant;
use tracing::callsite::Identifier;
use tracing::subscriber::Interest;
use tracing::{Event, Level, Metadata, warn};
use tracing_subscriber::layer::{Context, Filter};

/// Lines one call site may write per window.
const BURST: u32 = 5;
/// How long a burst is counted over.
pub(crate) const WINDOW: Duration = Duration::from_secs(10);
/// The target of the summary lines, which are never held back themselves.
const TARGET: &str = "tideway::log";

/// The filter on warnings and errors, and the tally of what it held back.
#[derive(Default)]
pub(crate) struct Repeats {
    sites: Mutex<HashMap<Identifier, Site>>,
    held_back: Notify,
}

struct Site {
    since: Instant,
    written: u32,
    held_back: u64,
    metadata: &'static Metadata<'static>,
}

/// The filter itself, sharing the tally with the task that reports it.
pub(crate) struct RepeatFilter(pub(crate) Arc<Repeats>);

impl<S> Filter<S> for RepeatFilter {
    fn enabled(&self, _: &Metadata<'_>, _: &Context<'_, S>) -> bool {
        true
    }

    fn callsite_enabled(&self, metadata: &'static Metadata<'static>) -> Interest {
        if metadata.is_event() && *metadata.level() <= Level::WARN && metadata.target() != TARGET {
            Interest::sometimes()
        } else {
            Interest::always()
        }
    }

    fn event_enabled(&self, event: &Event<'_>, _: &Context<'_, S>) -> bool {
        let metadata = event.metadata();
        if *metadata.level() > Level::WARN || metadata.target() == TARGET {
            return true;
        }
        self.0.admit(metadata)
    }
}

impl Repeats {
    /// Whether a warning from `metadata`'s call site is written now.
    fn admit(&self, metadata: &'static Metadata<'static>) -> bool {
        let now = Instant::now();
        let mut sites = self.sites.lock().unwrap_or_else(PoisonError::into_inner);
        let site = sites.entry(metadata.callsite()).or_insert(Site {
            since: now,
            written: 0,
            held_back: 0,
            metadata,
        });
        if now.saturating_duration_since(site.since) >= WINDOW && site.held_back == 0 {
            site.since = now;
            site.written = 0;
        }
        if site.written < BURST {
            site.written += 1;
            return true;
        }
        site.held_back += 1;
        if site.held_back == 1 {
            self.held_back.notify_one();
        }
        false
    }

    /// Writes, once each window that held lines back has closed, how many were held back and where
    /// from. Runs for the life of the process; it wakes only when something was held back.
    pub(crate) async fn report(self: Arc<Self>) {
        loop {
            self.held_back.notified().await;
            tokio::time::sleep(WINDOW).await;
            for (metadata, count) in self.take_held_back() {
                warn!(
                    target: TARGET,
                    held_back = count,
                    of = metadata.target(),
                    at = format!("{}:{}", metadata.file().unwrap_or("?"), metadata.line().unwrap_or(0)),
                    "repeated warnings held back"
                );
            }
        }
    }

    /// The counts held back since the last report, per call site; their windows start afresh.
    fn take_held_back(&self) -> Vec<(&'static Metadata<'static>, u64)> {
        let now = Instant::now();
        let mut sites = self.sites.lock().unwrap_or_else(PoisonError::into_inner);
        let mut taken = Vec::new();
        for site in sites.values_mut().filter(|site| site.held_back > 0) {
            taken.push((site.metadata, site.held_back));
            site.held_back = 0;
            site.written = 0;
            site.since = now;
        }
        taken
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use tracing_subscriber::Layer;
    use tracing_subscriber::layer::SubscriberExt;

    use super::*;

    /// Log output kept in memory.
    #[derive(Clone, Default)]
    struct Lines(Arc<Mutex<Vec<u8>>>);

    impl Write for Lines {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            self.0
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .extend_from_slice(bytes);
            Ok(bytes.len())
        }

        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    impl Lines {
        fn count(&self, text: &str) -> usize {
            let bytes = self.0.lock().unwrap_or_else(PoisonError::into_inner);
            String::from_utf8_lossy(&bytes).matches(text).count()
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_burst_is_written_and_the_rest_counted_in_one_line() {
        let repeats = Arc::new(Repeats::default());
        let lines = Lines::default();
        let writer = lines.clone();
        let layer = tracing_subscriber::fmt::layer()
            .with_ansi(false)
            .with_writer(move || writer.clone())
            .with_filter(RepeatFilter(Arc::clone(&repeats)));
        let _default = tracing::subscriber::set_default(tracing_subscriber::registry().with(layer));
        let report = tokio::spawn(Arc::clone(&repeats).report());

        for _ in 0..20 {
            warn!("accept failed");
            tracing::info!("an info line is never held back");
        }
        assert_eq!(lines.count("accept failed"), BURST as usize);
        assert_eq!(lines.count("an info line"), 20);
        tokio::time::sleep(WINDOW + Duration::from_millis(1)).await;
        tokio::task::yield_now().await;
        assert_eq!(lines.count("repeated warnings held back"), 1);
        assert_eq!(lines.count("held_back=15"), 1);

        warn!("accept failed");
        assert_eq!(lines.count("accept failed"), BURST as usize + 1, "a new window");
        report.abort();
    }
}
