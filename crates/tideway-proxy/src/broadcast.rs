//! One-time broadcasts to every connection — shutdown, a replica's drain running out of time — that are
//! cheap enough to check on every poll.
//!
//! A connection's task is woken for many reasons and checks its signals each time. Polling a waiting
//! `Notified` (or a cancellation token) takes the notifier's lock, which all connections share; here a
//! connection registers its waker once, and every later check is one atomic load of a flag that is set
//! before anyone is woken.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};

use pin_project_lite::pin_project;
use tokio::sync::Notify;
use tokio::sync::futures::OwnedNotified;

/// A flag raised once, waking every subscriber.
#[derive(Debug, Default)]
pub(crate) struct Broadcast {
    raised: AtomicBool,
    notify: Arc<Notify>,
}

pin_project! {
    /// One task's subscription to a [`Broadcast`]: ready once the signal is raised.
    pub(crate) struct Subscription {
        signal: Arc<Broadcast>,
        #[pin]
        notified: OwnedNotified,
        registered: bool,
    }
}

impl Broadcast {
    /// Raises the signal: every subscription is ready from now on, and the waiting ones are woken.
    pub(crate) fn raise(&self) {
        self.raised.store(true, Ordering::SeqCst);
        self.notify.notify_waiters();
    }

    /// True once the signal was raised.
    pub(crate) fn is_raised(&self) -> bool {
        self.raised.load(Ordering::SeqCst)
    }

    /// A subscription for the task that polls it.
    pub(crate) fn subscribe(self: &Arc<Self>) -> Subscription {
        Subscription {
            signal: Arc::clone(self),
            notified: Arc::clone(&self.notify).notified_owned(),
            registered: false,
        }
    }
}

impl Future for Subscription {
    type Output = ();

    /// Registers the task's waker on the first poll only: a task keeps one waker for its life, so later
    /// polls need nothing but the flag.
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let this = self.project();
        if this.signal.is_raised() {
            return Poll::Ready(());
        }
        if !*this.registered {
            *this.registered = true;
            if this.notified.poll(cx).is_ready() || this.signal.is_raised() {
                return Poll::Ready(());
            }
        }
        Poll::Pending
    }
}

#[cfg(test)]
mod tests {
    use std::pin::pin;

    use super::*;

    #[tokio::test]
    async fn a_raised_signal_wakes_every_subscriber_and_stays_raised() {
        let signal = Arc::new(Broadcast::default());
        let waiting: Vec<_> = (0..3).map(|_| tokio::spawn(signal.subscribe())).collect();
        tokio::task::yield_now().await;
        assert!(!signal.is_raised());
        signal.raise();
        for task in waiting {
            task.await.expect("woken");
        }
        let mut late = pin!(signal.subscribe());
        assert!(
            futures::poll!(late.as_mut()).is_ready(),
            "a later subscription sees it at once"
        );
    }

    #[tokio::test]
    async fn a_subscription_is_pending_until_the_signal() {
        let signal = Arc::new(Broadcast::default());
        let mut subscription = pin!(signal.subscribe());
        assert!(futures::poll!(subscription.as_mut()).is_pending());
        assert!(futures::poll!(subscription.as_mut()).is_pending());
        signal.raise();
        assert!(futures::poll!(subscription.as_mut()).is_ready());
    }
}
