//! Waiting in tests without sleeping to pass: poll a condition, or bound a future, up to a deadline.

use std::future::Future;
use std::time::Duration;

use tokio::time::Instant;

/// How often [`eventually`] looks again: often enough that a time a test reports is accurate to a
/// millisecond.
const POLL: Duration = Duration::from_millis(1);

/// Polls `check` every few milliseconds until it holds; fails the test, naming `what`, once `patience`
/// runs out.
pub async fn eventually(what: &str, patience: Duration, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + patience;
    while !check() {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        tokio::time::sleep(POLL).await;
    }
}

/// What `future` gives; fails the test, naming `what`, if it takes longer than `patience`.
pub async fn within<T>(what: &str, patience: Duration, future: impl Future<Output = T>) -> T {
    tokio::time::timeout(patience, future)
        .await
        .unwrap_or_else(|_| panic!("timed out: {what}"))
}
