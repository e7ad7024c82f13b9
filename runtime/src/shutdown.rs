//! Shutdown, requested by SIGTERM or Ctrl-C: the listener closes, every connection is told
//! (its session stops taking requests, finishes those in flight and closes), and the process
//! exits once all are closed or the drain deadline passed.
//!
//! Signals are caught on a thread of their own, so this works the same on every runtime; the
//! connection tasks are woken through an [`event_listener::Event`], which any executor can
//! await.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};
use std::thread;

use event_listener::{Event, EventListener};
use signal_hook::consts::{SIGINT, SIGTERM};
use signal_hook::iterator::Signals;

/// Whether shutdown was requested, shared by the accept loop and every connection.
#[derive(Debug, Clone, Default)]
pub struct Shutdown {
    inner: Arc<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    requested: AtomicBool,
    event: Event,
}

impl Shutdown {
    pub fn new() -> Self {
        Self::default()
    }

    /// Asks everything to stop; the first call wakes every waiter.
    pub fn request(&self) {
        if !self.inner.requested.swap(true, Ordering::SeqCst) {
            self.inner.event.notify(usize::MAX);
        }
    }

    pub fn is_requested(&self) -> bool {
        self.inner.requested.load(Ordering::SeqCst)
    }

    /// A waiter that becomes ready once shutdown is requested (at once if it was).
    pub fn waiter(&self) -> Waiter {
        Waiter {
            shutdown: self.clone(),
            listener: None,
            registered: false,
        }
    }

    /// Requests shutdown on the first SIGTERM or SIGINT; a second one ends the process at once
    /// (an operator who presses Ctrl-C twice does not want to wait for the drain).
    pub fn on_signals(&self) -> io::Result<()> {
        let mut signals = Signals::new([SIGTERM, SIGINT])?;
        let shutdown = self.clone();
        thread::Builder::new()
            .name("signals".into())
            .spawn(move || {
                for signal in signals.forever() {
                    let name = if signal == SIGTERM {
                        "SIGTERM"
                    } else {
                        "SIGINT"
                    };
                    if shutdown.is_requested() {
                        log::warn!("{name} again: exiting without waiting for open connections");
                        std::process::exit(1);
                    }
                    log::info!("{name}: shutting down (send it again to exit at once)");
                    shutdown.request();
                }
            })?;
        Ok(())
    }
}

/// Awaits a shutdown request; see [`Shutdown::waiter`].
///
/// It is polled at every wake-up of its task, so after the first poll it only reads the flag:
/// polling the listener again would take the event's lock, shared by every connection, once
/// per request. The waker registered by the first poll is the task's own, which stays valid
/// for the task's life: the task is the one woken at shutdown.
#[derive(Debug)]
pub struct Waiter {
    shutdown: Shutdown,
    /// Registered before the flag is checked again, so that a request between the check and
    /// the wait is never missed.
    listener: Option<EventListener>,
    registered: bool,
}

impl Waiter {
    pub fn poll_requested(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        loop {
            if self.shutdown.is_requested() {
                self.listener = None;
                return Poll::Ready(());
            }
            match &mut self.listener {
                None => self.listener = Some(self.shutdown.inner.event.listen()),
                Some(_) if self.registered => return Poll::Pending,
                Some(listener) => {
                    self.registered = true;
                    if Pin::new(listener).poll(cx).is_pending() {
                        return Poll::Pending;
                    }
                    self.listener = None;
                    self.registered = false;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::task::Waker;

    #[test]
    fn a_request_wakes_the_waiting_task() {
        use std::sync::atomic::AtomicUsize;
        use std::task::Wake;

        struct Count(AtomicUsize);
        impl Wake for Count {
            fn wake(self: Arc<Self>) {
                self.0.fetch_add(1, Ordering::SeqCst);
            }
        }
        let count = Arc::new(Count(AtomicUsize::new(0)));
        let waker = Waker::from(Arc::clone(&count));
        let mut cx = Context::from_waker(&waker);
        let shutdown = Shutdown::new();
        let mut waiter = shutdown.waiter();
        assert!(waiter.poll_requested(&mut cx).is_pending());
        assert!(waiter.poll_requested(&mut cx).is_pending());
        shutdown.request();
        assert_eq!(count.0.load(Ordering::SeqCst), 1);
        assert!(waiter.poll_requested(&mut cx).is_ready());
    }

    #[test]
    fn a_waiter_sees_a_request_made_before_or_after_it_waits() {
        let mut cx = Context::from_waker(Waker::noop());
        let shutdown = Shutdown::new();
        let mut early = shutdown.waiter();
        assert!(early.poll_requested(&mut cx).is_pending());
        shutdown.request();
        assert!(early.poll_requested(&mut cx).is_ready());
        let mut late = shutdown.waiter();
        assert!(late.poll_requested(&mut cx).is_ready());
    }
}
