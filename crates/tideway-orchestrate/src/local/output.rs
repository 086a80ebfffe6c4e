//! A replica's standard output and error, line by line into tideway's log with `app` and `replica` fields.

use std::sync::Arc;

use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, BufReader};
use tracing::info;

/// Longest line logged whole; longer ones are split, so a replica cannot make tideway buffer without end.
const MAX_LINE: u64 = 16 * 1024;

/// Logs every line read from `source` until it closes.
pub(super) async fn forward_lines(
    source: impl AsyncRead + Unpin,
    app: Arc<str>,
    replica: Arc<str>,
    stream: &'static str,
) {
    let mut reader = BufReader::new(source);
    let mut line = Vec::new();
    loop {
        line.clear();
        match (&mut reader).take(MAX_LINE).read_until(b'\n', &mut line).await {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
        let text = String::from_utf8_lossy(&line);
        if let Some(text) = loggable(&text) {
            info!(target: "tideway::replica", app = &*app, replica = &*replica, stream, "{text}");
        }
    }
}

/// A line as logged: without its line ending, and nothing at all for a blank line, which is layout in the
/// app's own output, not an event.
fn loggable(line: &str) -> Option<&str> {
    let text = line.trim_end_matches(['\r', '\n']);
    (!text.trim().is_empty()).then_some(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blank_lines_are_not_events() {
        assert_eq!(loggable("started on port 8000\r\n"), Some("started on port 8000"));
        assert_eq!(loggable("  indented\n"), Some("  indented"));
        assert_eq!(loggable("\n"), None);
        assert_eq!(loggable(" \t\r\n"), None);
    }
}
