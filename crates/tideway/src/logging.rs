//! Log output: `tracing` events as text or JSON lines on standard error, written by a thread of their own
//! so that a slow or stuck reader (a full pipe nobody drains) never stalls the proxy: when the buffer is
//! full, lines are dropped and counted instead (`tideway_log_lines_dropped_total`).

mod repeats;

use std::io::IsTerminal;
use std::sync::Arc;

use tracing_appender::non_blocking::{ErrorCounter, NonBlockingBuilder, WorkerGuard};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer};

use crate::cli::LogFormat;
pub(crate) use repeats::Repeats;

/// Lines held for the writer thread before new ones are dropped: seconds of a busy access log, a few
/// MiB at most.
const BUFFERED_LINES: usize = 16 * 1024;

/// The running log: keep it for the life of the process, so that buffered lines are written at exit.
pub(crate) struct Logging {
    _writer: WorkerGuard,
    dropped: ErrorCounter,
    repeats: Arc<Repeats>,
}

/// Installs the global subscriber; the level comes from `RUST_LOG` (default `info`).
pub(crate) fn init(format: LogFormat) -> Logging {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let (writer, guard) = NonBlockingBuilder::default()
        .lossy(true)
        .buffered_lines_limit(BUFFERED_LINES)
        .thread_name("tideway-log")
        .finish(std::io::stderr());
    let dropped = writer.error_counter();
    let repeats = Arc::new(Repeats::default());
    let layer = tracing_subscriber::fmt::layer()
        .with_writer(writer)
        // Colours only for a person at a terminal: in a file, a pipe or a log collector they are noise.
        .with_ansi(std::io::stderr().is_terminal());
    let layer = match format {
        LogFormat::Text => layer.boxed(),
        LogFormat::Json => layer.json().boxed(),
    };
    // The level filter outermost: it decides each call site once, so a disabled `debug!` on the hot path
    // stays a check of a cached flag, and it sets the global level hint; the repeat filter sees only the
    // events that pass it.
    tracing_subscriber::registry()
        .with(
            layer
                .with_filter(repeats::RepeatFilter(Arc::clone(&repeats)))
                .with_filter(filter),
        )
        .init();
    Logging {
        _writer: guard,
        dropped,
        repeats,
    }
}

impl Logging {
    /// Lines dropped so far because standard error did not take them in time.
    pub(crate) fn dropped_lines(&self) -> ErrorCounter {
        self.dropped.clone()
    }

    /// The tally of repeated warnings held back, whose report runs on the proxy's runtime.
    pub(crate) fn repeats(&self) -> Arc<Repeats> {
        Arc::clone(&self.repeats)
    }
}
