//! The connection trace (`[proxy] trace_log`, `docs/trace-format.md`): one JSON line per seated or refused
//! connection — its app, arrival, kind, time to seat and how long it held its seat, nothing that
//! identifies a person — and one per replica cold start, for `tideway simulate` to replay. Connections hand their lines to a writer
//! thread through a bounded channel, so the data plane never waits on the disk and takes no lock; a
//! line that finds the channel full is dropped and counted.

use std::fs::{self, File, OpenOptions};
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::mpsc::{Receiver, RecvTimeoutError, SyncSender, TrySendError, sync_channel};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use prometheus::IntCounter;
use tideway_core::{App, RejectReason};
use tokio::time::Instant;
use tracing::warn;

/// The version of the format written (`docs/trace-format.md`).
const VERSION: u32 = 1;
/// Lines waiting for the writer at most; beyond, lines are dropped.
const BACKLOG: usize = 65_536;
/// How long a written line may sit in the writer's buffer.
const FLUSH_EVERY: Duration = Duration::from_secs(1);
/// Rotated files kept beside the live one: `path.1` (the newest) to `path.3`.
const KEEP: u32 = 3;

/// An open trace: where connections send their lines.
pub struct TraceLog {
    lines: SyncSender<Message>,
    /// Wall-clock milliseconds at `started`: arrivals are written as Unix times.
    unix_at_start: u64,
    started: Instant,
    dropped: IntCounter,
}

enum Message {
    Line(String),
    /// Write out what is buffered, then answer.
    Flush(SyncSender<()>),
}

/// What a connection is, as the trace says it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Request,
    Upgraded,
}

/// A seated connection's line, written when it gives its seat back (when this is dropped).
pub(crate) struct Traced {
    /// Taken by [`Traced::cancel`]: no line then.
    log: Option<Arc<TraceLog>>,
    app: Arc<App>,
    arrived: Instant,
    seated: Instant,
    kind: Kind,
}

impl TraceLog {
    /// Opens (appending to) the trace at `path`, rotated once it passes `max_bytes`; `dropped` counts
    /// lines lost to a full backlog.
    pub fn open(path: &Path, max_bytes: u64, dropped: IntCounter) -> io::Result<Arc<TraceLog>> {
        let file = Writer::open(path.to_owned(), max_bytes)?;
        let (lines, receiver) = sync_channel(BACKLOG);
        std::thread::Builder::new()
            .name("trace-log".to_owned())
            .spawn(move || file.run(&receiver))?;
        let unix_at_start = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
        Ok(Arc::new(TraceLog {
            lines,
            unix_at_start,
            started: Instant::now(),
            dropped,
        }))
    }

    /// Writes out every line handed over so far (at shutdown, before the process exits).
    pub fn flush(&self) {
        let (done, wait) = sync_channel(1);
        if self.lines.send(Message::Flush(done)).is_ok() {
            let _ = wait.recv_timeout(Duration::from_secs(5));
        }
    }

    /// Starts the line of a connection to `app` that arrived at `arrived` and is seated now.
    pub(crate) fn seated(self: &Arc<Self>, app: &Arc<App>, arrived: Instant) -> Traced {
        Traced {
            log: Some(Arc::clone(self)),
            app: Arc::clone(app),
            arrived,
            seated: Instant::now(),
            kind: Kind::Request,
        }
    }

    /// Writes the line of a connection to `app` that arrived at `arrived` and got no seat: `reason` is
    /// a rejection's (`queue_timeout`…), or `client_gone` for one that left while it waited.
    pub(crate) fn refused(&self, app: &str, arrived: Instant, reason: Refused) {
        let reason = match reason {
            Refused::Rejected(reason) => reason.as_str(),
            Refused::ClientGone => "client_gone",
        };
        let at = self.unix_millis(arrived);
        let kind = Kind::Request.as_str();
        self.send(format!(
            "{{\"app\":\"{app}\",\"at_ms\":{at},\"kind\":\"{kind}\",\"refused\":\"{reason}\"}}\n"
        ));
    }

    /// Writes that a replica of `app` took `took` from its start to ready, for `tideway simulate
    /// --startup observed`.
    pub fn cold_start(&self, app: &str, took: Duration) {
        let at = self.unix_millis(Instant::now());
        let took = took.as_millis();
        self.send(format!(
            "{{\"app\":\"{app}\",\"at_ms\":{at},\"cold_start_ms\":{took}}}\n"
        ));
    }

    fn unix_millis(&self, at: Instant) -> u64 {
        let since = at.saturating_duration_since(self.started).as_millis();
        self.unix_at_start
            .saturating_add(u64::try_from(since).unwrap_or(u64::MAX))
    }

    fn send(&self, line: String) {
        match self.lines.try_send(Message::Line(line)) {
            Ok(()) => {}
            Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) => self.dropped.inc(),
        }
    }
}

/// Why a traced connection got no seat.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Refused {
    /// Refused with this reason.
    Rejected(RejectReason),
    /// The client left while it waited.
    ClientGone,
}

impl Traced {
    /// The connection switched protocols: it holds its seat until its tunnel closes.
    pub(crate) fn upgraded(mut self) -> Self {
        self.kind = Kind::Upgraded;
        self
    }

    /// The connection was refused after all: its line is the refusal's, not this one.
    pub(crate) fn cancel(mut self) {
        self.log = None;
    }
}

impl Drop for Traced {
    fn drop(&mut self) {
        let Some(log) = self.log.take() else {
            return;
        };
        let at = log.unix_millis(self.arrived);
        let seat = self.seated.saturating_duration_since(self.arrived).as_millis();
        let held = self.seated.elapsed().as_millis();
        let (app, kind) = (self.app.name(), self.kind.as_str());
        log.send(format!(
            "{{\"app\":\"{app}\",\"at_ms\":{at},\"kind\":\"{kind}\",\"seat_ms\":{seat},\"duration_ms\":{held}}}\n"
        ));
    }
}

impl Kind {
    const fn as_str(self) -> &'static str {
        match self {
            Kind::Request => "request",
            Kind::Upgraded => "upgraded",
        }
    }
}

/// The writer thread's file: appends, rotates, starts each file with the header.
struct Writer {
    path: PathBuf,
    max_bytes: u64,
    out: BufWriter<File>,
    written: u64,
}

impl Writer {
    fn open(path: PathBuf, max_bytes: u64) -> io::Result<Writer> {
        let file = OpenOptions::new().create(true).append(true).open(&path)?;
        let written = file.metadata()?.len();
        let mut writer = Writer {
            path,
            max_bytes,
            out: BufWriter::new(file),
            written,
        };
        writer.header()?;
        Ok(writer)
    }

    /// Every file, and every restart, begins with the header: a reader knows the format and version.
    fn header(&mut self) -> io::Result<()> {
        let started = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis());
        let line = format!("{{\"trace\":\"tideway\",\"version\":{VERSION},\"started_ms\":{started}}}\n");
        self.write(&line)
    }

    fn write(&mut self, line: &str) -> io::Result<()> {
        self.out.write_all(line.as_bytes())?;
        self.written += line.len() as u64;
        Ok(())
    }

    fn run(mut self, lines: &Receiver<Message>) {
        loop {
            let result = match lines.recv_timeout(FLUSH_EVERY) {
                Ok(Message::Line(line)) => self.line(&line),
                Ok(Message::Flush(done)) => {
                    let flushed = self.out.flush();
                    let _ = done.send(());
                    flushed
                }
                Err(RecvTimeoutError::Timeout) => self.out.flush(),
                Err(RecvTimeoutError::Disconnected) => {
                    let _ = self.out.flush();
                    return;
                }
            };
            if let Err(error) = result {
                warn!(path = %self.path.display(), %error, "trace_log: cannot write; lines are lost until it can");
            }
        }
    }

    fn line(&mut self, line: &str) -> io::Result<()> {
        if self.written + line.len() as u64 > self.max_bytes {
            self.rotate()?;
        }
        self.write(line)
    }

    /// `path` becomes `path.1`, `path.1` becomes `path.2`…, the oldest beyond [`KEEP`] is removed, and a
    /// new `path` begins.
    fn rotate(&mut self) -> io::Result<()> {
        self.out.flush()?;
        let numbered = |n: u32| PathBuf::from(format!("{}.{n}", self.path.display()));
        for n in (1..KEEP).rev() {
            if numbered(n).exists() {
                fs::rename(numbered(n), numbered(n + 1))?;
            }
        }
        fs::rename(&self.path, numbered(1))?;
        let file = OpenOptions::new().create(true).append(true).open(&self.path)?;
        self.out = BufWriter::new(file);
        self.written = 0;
        self.header()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scratch(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("tideway-trace-{}-{name}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).expect("scratch dir");
        dir.join("trace.jsonl")
    }

    #[test]
    fn a_full_file_rotates_keeping_three_each_beginning_with_the_header() {
        let path = scratch("rotate");
        let mut writer = Writer::open(path.clone(), 200).expect("open");
        let line = format!(
            "{{\"app\":\"a\",\"at_ms\":1,\"kind\":\"request\",\"seat_ms\":0,\"duration_ms\":{}}}\n",
            7
        );
        for _ in 0..40 {
            writer.line(&line).expect("write");
        }
        writer.out.flush().expect("flush");
        let numbered = |n: u32| PathBuf::from(format!("{}.{n}", path.display()));
        for file in [path.clone(), numbered(1), numbered(2), numbered(3)] {
            let text = fs::read_to_string(&file).expect("a kept file");
            assert!(
                text.starts_with("{\"trace\":\"tideway\",\"version\":1,"),
                "{}: {text}",
                file.display()
            );
            assert!(text.len() <= 200 + line.len(), "{}", file.display());
        }
        assert!(!numbered(4).exists(), "three rotated files are kept");
    }

    #[tokio::test]
    async fn a_seated_connection_is_written_when_it_ends_and_an_upgrade_says_so() {
        let path = scratch("lines");
        let dropped = IntCounter::new("dropped", "test").expect("counter");
        let log = TraceLog::open(&path, 1 << 20, dropped.clone()).expect("open");
        let clock = Arc::new(tideway_core::ManualClock::default());
        let app = App::new("shiny", tideway_core::Policy::default(), clock);
        let arrived = Instant::now();
        drop(log.seated(&app, arrived));
        drop(log.seated(&app, arrived).upgraded());
        log.refused("shiny", arrived, Refused::Rejected(RejectReason::QueueFull));
        log.refused("shiny", arrived, Refused::ClientGone);
        log.cold_start("shiny", Duration::from_millis(1500));
        log.flush();
        let text = fs::read_to_string(&path).expect("the trace");
        let lines: Vec<serde_json::Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).expect("JSON"))
            .collect();
        assert_eq!(lines.len(), 6, "{text}");
        assert_eq!(lines[5]["cold_start_ms"], 1500);
        assert_eq!(lines[1]["kind"], "request");
        assert_eq!(lines[2]["kind"], "upgraded");
        assert_eq!(lines[3]["refused"], "queue_full");
        assert_eq!(lines[4]["refused"], "client_gone");
        assert_eq!(
            lines[1]["at_ms"], lines[4]["at_ms"],
            "arrivals in Unix milliseconds"
        );
        assert_eq!(dropped.get(), 0);
    }
}
