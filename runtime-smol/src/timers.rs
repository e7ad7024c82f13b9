//! The runtime's timer: on a worker thread, in its reactor's timers ([`crate::reactor::Timers`]):
//! setting one is a tree insert, and the earliest bounds the thread's wait for I/O.
//!
//! A connection re-arms its timer whenever its session's earliest deadline moves earlier (the
//! lag bound, a frame left incomplete, a held write). On async-io each re-arm queued an
//! operation for the process-wide reactor and woke its thread; here it stays on the thread
//! that runs the connection. Tasks of other threads (the accept loop) use async-io's timers.

use std::future::Future as _;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};
use std::time::Instant;

use crate::reactor::Reactor;

/// A timer set in a worker thread's [`Timers`](crate::reactor::Timers).
#[derive(Debug)]
struct Entry {
    reactor: Arc<Reactor>,
    at: Instant,
    id: u64,
    waker: Waker,
}

/// The runtime's timer: in its worker thread's [`Timers`](crate::reactor::Timers) when polled
/// on a worker thread, async-io's elsewhere. After firing it stays pending until set again.
#[derive(Debug, Default)]
pub(crate) struct SmolTimer {
    at: Option<Instant>,
    entry: Option<Entry>,
    elsewhere: Option<async_io::Timer>,
}

impl SmolTimer {
    fn cancel(&mut self) {
        if let Some(entry) = self.entry.take() {
            entry.reactor.timers().remove(entry.at, entry.id);
        }
        self.elsewhere = None;
    }
}

impl Drop for SmolTimer {
    fn drop(&mut self) {
        self.cancel();
    }
}

impl cqlmirror_runtime::Timer for SmolTimer {
    fn set(&mut self, at: Instant) {
        if self.at != Some(at) {
            self.cancel();
            self.at = Some(at);
        }
    }

    fn poll_fired(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        let Some(at) = self.at else {
            return Poll::Pending;
        };
        if at <= Instant::now() {
            self.cancel();
            self.at = None;
            return Poll::Ready(());
        }
        let Some(reactor) = Reactor::current_opt() else {
            let timer = self
                .elsewhere
                .get_or_insert_with(|| async_io::Timer::at(at));
            return match Pin::new(timer).poll(cx) {
                Poll::Ready(_) => {
                    self.cancel();
                    self.at = None;
                    Poll::Ready(())
                }
                Poll::Pending => Poll::Pending,
            };
        };
        match &mut self.entry {
            Some(entry) if Arc::ptr_eq(&entry.reactor, &reactor) => {
                if !entry.waker.will_wake(cx.waker()) {
                    entry.waker = cx.waker().clone();
                    reactor
                        .timers()
                        .replace_waker(entry.at, entry.id, entry.waker.clone());
                }
            }
            _ => {
                self.cancel();
                let id = reactor.timers().insert(at, cx.waker().clone());
                self.entry = Some(Entry {
                    reactor,
                    at,
                    id,
                    waker: cx.waker().clone(),
                });
            }
        }
        Poll::Pending
    }
}
