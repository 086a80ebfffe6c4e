//! Wake-ups from synchronous code to one asynchronous listener, without tying this crate to a runtime.

use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};

use atomic_waker::AtomicWaker;

/// "Something changed, look again": raised by code that cannot await (a guard's destructor), awaited by
/// one listener task. Raises coalesce until the listener wakes, so a burst costs one wake-up.
#[derive(Debug, Default)]
pub struct Signal {
    raised: AtomicBool,
    waker: AtomicWaker,
}

impl Signal {
    /// Wakes the listener (now, or at its next wait if it is busy).
    pub fn raise(&self) {
        self.raised.store(true, Ordering::Release);
        self.waker.wake();
    }

    /// Ready once the signal was raised since the last time this returned ready.
    pub fn poll_raised(&self, cx: &mut Context<'_>) -> Poll<()> {
        if self.raised.swap(false, Ordering::AcqRel) {
            return Poll::Ready(());
        }
        self.waker.register(cx.waker());
        if self.raised.swap(false, Ordering::AcqRel) {
            Poll::Ready(())
        } else {
            Poll::Pending
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::AtomicUsize;
    use std::task::{Wake, Waker};

    use super::*;

    struct CountWakes(AtomicUsize);

    impl Wake for CountWakes {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    #[test]
    fn raises_coalesce_and_wake_the_listener() {
        let wakes = Arc::new(CountWakes(AtomicUsize::new(0)));
        let waker = Waker::from(Arc::clone(&wakes));
        let mut cx = Context::from_waker(&waker);
        let signal = Signal::default();
        assert!(signal.poll_raised(&mut cx).is_pending());
        signal.raise();
        signal.raise();
        assert_eq!(
            wakes.0.load(Ordering::SeqCst),
            1,
            "the second raise has no waker to wake"
        );
        assert!(signal.poll_raised(&mut cx).is_ready());
        assert!(
            signal.poll_raised(&mut cx).is_pending(),
            "two raises, one wake-up"
        );
    }
}
