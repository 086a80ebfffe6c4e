//! Connection traces (`docs/trace-format.md`): what `[proxy] trace_log` writes and `tideway simulate`
//! replays — per connection its app, arrival, kind and how long it held its seat, and the cold starts
//! replicas took; nothing that identifies a person.

use std::collections::BTreeSet;
use std::fmt;
use std::time::Duration;

use serde_json::Value;

/// The version of the format this build writes and reads.
pub const TRACE_VERSION: u64 = 1;

/// What a connection was, as the trace says it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Kind {
    /// An HTTP request (or an HTTP/2 stream's connection) that ended with its response.
    Request,
    /// A connection that switched protocols (a WebSocket): a session.
    Upgraded,
}

/// One connection of a trace.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Arrival {
    /// The app it was routed to.
    pub app: String,
    /// When it arrived, from the start of the trace.
    pub at: Duration,
    /// Request or session.
    pub kind: Kind,
    /// How long it held its seat once seated: what it asks of the app when replayed. A connection that
    /// was refused in the traced run held none; it is replayed holding `held` of the median connection
    /// of its kind (see [`Trace::parse`]).
    pub held: Duration,
    /// How long it waited for its seat in the traced run, or why it was refused one.
    pub seated: Result<Duration, String>,
}

/// A whole trace: its connections in arrival order and the cold starts it observed.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Trace {
    /// Every connection, by arrival.
    pub arrivals: Vec<Arrival>,
    /// How long each replica took from its start to ready, per app, in the traced run.
    pub cold_starts: Vec<(String, Duration)>,
}

/// A line of a trace that cannot be read: where, and why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TraceError {
    /// 1-based line number.
    pub line: usize,
    /// What is wrong with it.
    pub message: String,
}

impl fmt::Display for TraceError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "line {}: {}", self.line, self.message)
    }
}

impl std::error::Error for TraceError {}

impl Kind {
    /// The name in the trace format.
    pub const fn as_str(self) -> &'static str {
        match self {
            Kind::Request => "request",
            Kind::Upgraded => "upgraded",
        }
    }
}

impl Trace {
    /// Reads a trace in the documented format: a header line `{"trace":"tideway","version":1}`, then one
    /// JSON object per line — a connection (`app`, `at_ms`, `kind`, `duration_ms`, and `seat_ms` or
    /// `refused`) or a cold start (`app`, `at_ms`, `cold_start_ms`). Lines come in the order connections
    /// ended, not arrived; several traces laid end to end (a rotated log's pieces, oldest first) read as
    /// one, each beginning with its header. Times are from the earliest arrival. A refused connection is
    /// replayed holding its seat for the median of the seated connections of its app and kind (it never
    /// held one; what it would have held is unknown).
    pub fn parse(text: &str) -> Result<Trace, TraceError> {
        let mut trace = Trace::default();
        let mut headed = false;
        for (index, line) in text.lines().enumerate() {
            let number = index + 1;
            let fail = |message: String| TraceError {
                line: number,
                message,
            };
            if line.trim().is_empty() {
                continue;
            }
            let value: Value = serde_json::from_str(line).map_err(|e| fail(format!("not JSON: {e}")))?;
            let Value::Object(record) = value else {
                return Err(fail("expected a JSON object".to_owned()));
            };
            if let Some(name) = record.get("trace") {
                if name != "tideway" {
                    return Err(fail(format!("not a tideway trace: \"trace\" is {name}")));
                }
                match record.get("version").and_then(Value::as_u64) {
                    Some(TRACE_VERSION) => {}
                    Some(other) => {
                        return Err(fail(format!(
                            "version {other}: this build reads version {TRACE_VERSION}"
                        )));
                    }
                    None => return Err(fail("the header has no \"version\"".to_owned())),
                }
                headed = true;
                continue;
            }
            if !headed {
                return Err(fail(
                    "expected the header {\"trace\":\"tideway\",\"version\":1} first".to_owned(),
                ));
            }
            let app = match record.get("app").and_then(Value::as_str) {
                Some(app) if !app.is_empty() => app.to_owned(),
                _ => return Err(fail("\"app\" must be a non-empty string".to_owned())),
            };
            let at = millis(&record, "at_ms").map_err(fail)?;
            if record.contains_key("cold_start_ms") {
                trace
                    .cold_starts
                    .push((app, millis(&record, "cold_start_ms").map_err(fail)?));
                continue;
            }
            let kind = match record.get("kind").and_then(Value::as_str) {
                Some("request") => Kind::Request,
                Some("upgraded") => Kind::Upgraded,
                _ => return Err(fail("\"kind\" must be \"request\" or \"upgraded\"".to_owned())),
            };
            let seated = match (record.get("seat_ms"), record.get("refused")) {
                (Some(_), None) => Ok(millis(&record, "seat_ms").map_err(fail)?),
                (None, Some(Value::String(reason))) => Err(reason.clone()),
                _ => {
                    return Err(fail(
                        "a connection has either \"seat_ms\" (seated) or \"refused\" (a reason)".to_owned(),
                    ));
                }
            };
            let held = match seated {
                Ok(_) => millis(&record, "duration_ms").map_err(fail)?,
                Err(_) => Duration::ZERO,
            };
            trace.arrivals.push(Arrival {
                app,
                at,
                kind,
                held,
                seated,
            });
        }
        if !headed {
            return Err(TraceError {
                line: 1,
                message: "empty: expected the header {\"trace\":\"tideway\",\"version\":1}".to_owned(),
            });
        }
        trace.arrivals.sort_by_key(|a| a.at);
        let start = trace.arrivals.first().map_or(Duration::ZERO, |a| a.at);
        for arrival in &mut trace.arrivals {
            arrival.at -= start;
        }
        let refused: Vec<usize> = (0..trace.arrivals.len())
            .filter(|&i| trace.arrivals[i].seated.is_err())
            .collect();
        for index in refused {
            let (app, kind) = (&trace.arrivals[index].app, trace.arrivals[index].kind);
            let mut held: Vec<Duration> = trace
                .arrivals
                .iter()
                .filter(|a| a.seated.is_ok() && &a.app == app && a.kind == kind)
                .map(|a| a.held)
                .collect();
            held.sort_unstable();
            trace.arrivals[index].held = held.get(held.len() / 2).copied().unwrap_or_default();
        }
        Ok(trace)
    }

    /// The trace in the documented format, header first.
    pub fn to_json_lines(&self) -> String {
        let mut out = format!("{{\"trace\":\"tideway\",\"version\":{TRACE_VERSION}}}\n");
        for arrival in &self.arrivals {
            let mut line = serde_json::json!({
                "app": arrival.app,
                "at_ms": arrival.at.as_millis() as u64,
                "kind": arrival.kind.as_str(),
            });
            match &arrival.seated {
                Ok(waited) => {
                    line["seat_ms"] = (waited.as_millis() as u64).into();
                    line["duration_ms"] = (arrival.held.as_millis() as u64).into();
                }
                Err(reason) => line["refused"] = reason.as_str().into(),
            }
            out.push_str(&line.to_string());
            out.push('\n');
        }
        for (app, took) in &self.cold_starts {
            let line = serde_json::json!({"app": app, "at_ms": 0, "cold_start_ms": took.as_millis() as u64});
            out.push_str(&line.to_string());
            out.push('\n');
        }
        out
    }

    /// The apps the trace names, sorted.
    pub fn apps(&self) -> BTreeSet<&str> {
        self.arrivals.iter().map(|a| a.app.as_str()).collect()
    }

    /// The connections and cold starts of `app` alone.
    pub fn of_app(&self, app: &str) -> Trace {
        Trace {
            arrivals: self.arrivals.iter().filter(|a| a.app == app).cloned().collect(),
            cold_starts: self
                .cold_starts
                .iter()
                .filter(|(a, _)| a == app)
                .cloned()
                .collect(),
        }
    }

    /// When the last connection ends, had each been seated on arrival.
    pub fn end(&self) -> Duration {
        self.arrivals
            .iter()
            .map(|a| a.at + a.held)
            .max()
            .unwrap_or_default()
    }
}

fn millis(record: &serde_json::Map<String, Value>, key: &str) -> Result<Duration, String> {
    record
        .get(key)
        .and_then(Value::as_u64)
        .map(Duration::from_millis)
        .ok_or_else(|| format!("\"{key}\" must be a whole number of milliseconds"))
}
