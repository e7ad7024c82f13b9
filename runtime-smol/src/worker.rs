//! A worker thread: its own task queue and its own reactor, run by one loop.
//!
//! The loop runs the tasks that are ready, then waits for I/O on the thread's reactor, which
//! wakes tasks of this same thread. Tasks are `async-task`'s (smol's executor is built on
//! them); a task woken from another thread (spawned by the accept loop, woken by a channel, a
//! timer or shutdown) is queued here and wakes the thread only when it waits for I/O.

use std::future::Future;
use std::io;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use async_task::Runnable;
use concurrent_queue::ConcurrentQueue;

use crate::reactor::{Reactor, WAKER};

/// Tasks run between two looks at the reactor, so that a busy thread still reads its sockets.
const TASKS_PER_LOOK: usize = 64;

/// Events taken from the reactor at once.
const EVENTS: usize = 256;

/// What other threads hold of a worker: its queue and how to wake it.
#[derive(Debug)]
pub(crate) struct Worker {
    queue: ConcurrentQueue<Runnable>,
    reactor: Arc<Reactor>,
    stop: AtomicBool,
}

impl Worker {
    /// A worker and the poll its thread must run ([`Worker::run`]).
    pub(crate) fn new() -> io::Result<(Arc<Self>, mio::Poll)> {
        let poll = mio::Poll::new()?;
        let worker = Self {
            queue: ConcurrentQueue::unbounded(),
            reactor: Arc::new(Reactor::new(&poll)?),
            stop: AtomicBool::new(false),
        };
        Ok((Arc::new(worker), poll))
    }

    /// Runs `future` on this worker's thread, to its end.
    pub(crate) fn spawn(self: &Arc<Self>, future: impl Future<Output = ()> + Send + 'static) {
        let worker = Arc::clone(self);
        let (runnable, task) = async_task::spawn(future, move |runnable| {
            worker.schedule(runnable);
        });
        task.detach();
        runnable.schedule();
    }

    fn schedule(&self, runnable: Runnable) {
        // The queue is unbounded and never closed while a handle to the worker exists.
        if self.queue.push(runnable).is_ok() {
            self.reactor.notify();
        }
    }

    /// Asks the worker's loop to end (tasks still running are dropped with it).
    pub(crate) fn stop(&self) {
        self.stop.store(true, Ordering::SeqCst);
        self.reactor.notify();
    }

    /// The worker thread's loop, until [`Worker::stop`].
    pub(crate) fn run(self: &Arc<Self>, mut poll: mio::Poll) -> io::Result<()> {
        Reactor::enter(&self.reactor);
        let mut events = mio::Events::with_capacity(EVENTS);
        while !self.stop.load(Ordering::SeqCst) {
            for _ in 0..TASKS_PER_LOOK {
                match self.queue.pop() {
                    Ok(runnable) => {
                        runnable.run();
                    }
                    Err(_) => break,
                }
            }
            let wait = self
                .reactor
                .fall_asleep(|| !self.queue.is_empty() || self.stop.load(Ordering::SeqCst));
            let timeout = if wait { None } else { Some(Duration::ZERO) };
            let polled = poll.poll(&mut events, timeout);
            self.reactor.woke_up();
            match polled {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            }
            for event in &events {
                if event.token() != WAKER {
                    self.reactor.dispatch(event);
                }
            }
        }
        // Tasks still queued are dropped here, on their thread.
        while let Ok(runnable) = self.queue.pop() {
            drop(runnable);
        }
        Ok(())
    }
}
