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
use std::time::{Duration, Instant};

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
                    Ok(runnable) => run(runnable),
                    Err(_) => break,
                }
            }
            let wait = self
                .reactor
                .fall_asleep(|| !self.queue.is_empty() || self.stop.load(Ordering::SeqCst));
            let timeout = if wait {
                let next = self.reactor.timers().next();
                next.map(|at| at.saturating_duration_since(Instant::now()))
            } else {
                Some(Duration::ZERO)
            };
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
            let now = Instant::now();
            // One at a time, and woken without the timers locked.
            loop {
                let due = self.reactor.timers().pop_due(now);
                let Some(waker) = due else { break };
                waker.wake();
            }
        }
        // Tasks still queued are dropped here, on their thread.
        while let Ok(runnable) = self.queue.pop() {
            drop(runnable);
        }
        Ok(())
    }
}

/// Runs a task's turn. A task that panics (a bug: wire data never makes the proxy panic) is
/// dropped, as tokio drops it; the worker goes on with its other connections.
fn run(runnable: Runnable) {
    if std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| runnable.run())).is_err() {
        log::error!("a task panicked and was dropped (its connection with it); please report this");
    }
}

#[cfg(test)]
mod tests {
    use std::io::{Read, Write};
    use std::net::{TcpListener, TcpStream};
    use std::sync::mpsc;
    use std::task::Poll;
    use std::thread;
    use std::time::Duration;

    use cqlmirror_runtime::Stream;

    use super::Worker;
    use crate::SmolStream;

    /// A worker on a thread of its own, stopped when the test is done with it.
    struct Running {
        worker: std::sync::Arc<Worker>,
        thread: Option<thread::JoinHandle<std::io::Result<()>>>,
    }

    impl Running {
        fn start() -> Self {
            let (worker, poll) = Worker::new().expect("a poll");
            let running = std::sync::Arc::clone(&worker);
            let thread = thread::spawn(move || running.run(poll));
            Self {
                worker,
                thread: Some(thread),
            }
        }
    }

    impl Drop for Running {
        fn drop(&mut self) {
            self.worker.stop();
            if let Some(thread) = self.thread.take() {
                thread.join().expect("the worker thread").expect("its loop");
            }
        }
    }

    fn pair() -> (TcpStream, TcpStream) {
        let listener = TcpListener::bind("127.0.0.1:0").expect("a listener");
        let near =
            TcpStream::connect(listener.local_addr().expect("its address")).expect("connect");
        let (far, _) = listener.accept().expect("accept");
        (near, far)
    }

    /// Reads from `stream` on the worker until `want` bytes came, the way the connection loop
    /// does: wait for readiness, read until the socket says it is drained.
    async fn read_exactly(stream: &SmolStream, want: usize) -> Vec<u8> {
        let mut got = Vec::new();
        let mut buf = [0u8; 4];
        while got.len() < want {
            std::future::poll_fn(|cx| stream.poll_readable(cx))
                .await
                .expect("readable");
            loop {
                match stream.try_read(&mut buf) {
                    Ok(0) => return got,
                    Ok(n) => got.extend_from_slice(&buf[..n]),
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                    Err(e) => panic!("read failed: {e}"),
                }
            }
        }
        got
    }

    #[test]
    fn a_task_sleeping_on_a_drained_socket_wakes_for_bytes_that_come_later() {
        let running = Running::start();
        let (near, mut far) = pair();
        let (done, result) = mpsc::channel();
        running.worker.spawn(async move {
            let stream = SmolStream::new(near).expect("non-blocking");
            // Two bytes, a short read (drained), then the rest arrives while the task waits.
            let first = read_exactly(&stream, 2).await;
            let rest = read_exactly(&stream, 7).await;
            let _ = done.send((first, rest));
        });
        far.write_all(b"ab").expect("write");
        thread::sleep(Duration::from_millis(50));
        far.write_all(b"cdefghi").expect("write");
        let (first, rest) = result
            .recv_timeout(Duration::from_secs(10))
            .expect("the task saw every byte");
        assert_eq!(first, b"ab");
        assert_eq!(rest, b"cdefghi");
    }

    #[test]
    fn a_task_waiting_for_room_to_write_wakes_when_the_peer_reads() {
        let running = Running::start();
        let (near, mut far) = pair();
        let (done, result) = mpsc::channel();
        // More than the socket buffers of both ends hold, so that the writer has to wait.
        const TOTAL: usize = 64 << 20;
        running.worker.spawn(async move {
            let stream = SmolStream::new(near).expect("non-blocking");
            let chunk = vec![7u8; 64 << 10];
            let mut sent = 0;
            let mut full = 0;
            while sent < TOTAL {
                match stream.try_write_vectored(&[std::io::IoSlice::new(&chunk)]) {
                    Ok(n) => sent += n,
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                        full += 1;
                        std::future::poll_fn(|cx| stream.poll_writable(cx))
                            .await
                            .expect("writable");
                    }
                    Err(e) => panic!("write failed: {e}"),
                }
            }
            let _ = done.send(full);
        });
        // The reader starts late: the buffers fill and the writer waits for room.
        thread::sleep(Duration::from_millis(200));
        let mut received = 0;
        let mut buf = vec![0u8; 64 << 10];
        while received < TOTAL {
            received += far.read(&mut buf).expect("read");
        }
        let full = result
            .recv_timeout(Duration::from_secs(10))
            .expect("the writer finished");
        assert!(
            full > 0,
            "64 MiB should fill the socket's buffers at least once"
        );
    }

    #[test]
    fn work_spawned_from_another_thread_wakes_a_worker_waiting_for_io() {
        let running = Running::start();
        // Let the worker fall asleep in its wait first.
        thread::sleep(Duration::from_millis(50));
        for round in 0..100 {
            let (done, result) = mpsc::channel();
            running.worker.spawn(async move {
                let _ = done.send(round);
            });
            assert_eq!(
                result.recv_timeout(Duration::from_secs(10)),
                Ok(round),
                "spawned task {round} ran"
            );
        }
    }

    #[test]
    fn timers_fire_in_order_on_the_worker_and_a_moved_timer_fires_at_its_new_time() {
        use cqlmirror_runtime::Timer as _;
        use std::time::Instant;

        let running = Running::start();
        let (done, result) = mpsc::channel();
        running.worker.spawn(async move {
            let start = Instant::now();
            let mut late = crate::SmolTimer::default();
            let mut early = crate::SmolTimer::default();
            late.set(start + Duration::from_millis(300));
            early.set(start + Duration::from_secs(3600));
            // Polled once at its first time, then moved earlier: the new time counts.
            assert!(
                std::future::poll_fn(|cx| Poll::Ready(early.poll_fired(cx).is_pending())).await
            );
            early.set(start + Duration::from_millis(100));
            let mut order = Vec::new();
            std::future::poll_fn(|cx| {
                if order.is_empty() && early.poll_fired(cx).is_ready() {
                    order.push(("early", start.elapsed()));
                }
                if late.poll_fired(cx).is_ready() {
                    order.push(("late", start.elapsed()));
                    return Poll::Ready(());
                }
                Poll::Pending
            })
            .await;
            // Fired once: pending again until set again.
            let again = std::future::poll_fn(|cx| Poll::Ready(late.poll_fired(cx))).await;
            let _ = done.send((order, again.is_pending()));
        });
        let (order, pending_after) = result
            .recv_timeout(Duration::from_secs(10))
            .expect("both timers fired");
        assert_eq!(order.len(), 2, "{order:?}");
        assert_eq!((order[0].0, order[1].0), ("early", "late"));
        assert!(order[0].1 >= Duration::from_millis(100), "{order:?}");
        assert!(order[1].1 >= Duration::from_millis(300), "{order:?}");
        assert!(pending_after);
    }

    #[test]
    fn a_task_that_panics_is_dropped_and_the_worker_goes_on() {
        let running = Running::start();
        running.worker.spawn(async {
            panic!("a task's bug");
        });
        let (done, result) = mpsc::channel();
        running.worker.spawn(async move {
            let _ = done.send("still running");
        });
        assert_eq!(
            result.recv_timeout(Duration::from_secs(10)),
            Ok("still running")
        );
    }

    #[test]
    fn a_socket_polled_outside_the_workers_is_an_error_not_a_hang() {
        let (near, _far) = pair();
        let stream = SmolStream::new(near).expect("non-blocking");
        let waker = std::task::Waker::noop();
        let polled = stream.poll_readable(&mut std::task::Context::from_waker(waker));
        assert!(
            matches!(&polled, std::task::Poll::Ready(Err(e)) if e.to_string().contains("outside the worker threads")),
            "{polled:?}"
        );
    }
}
