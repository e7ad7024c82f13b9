//! Worker threads that each run their own tasks, and the turn that deals new tasks to them:
//! the layout both adapters use (a task stays on the thread it was given to, with its sockets).

use std::io;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::thread::{self, JoinHandle};

/// Handles to the workers (`W`: what spawns a task on one), dealt in turn. Cheap to clone.
#[derive(Debug)]
pub struct Workers<W> {
    workers: Arc<[W]>,
    next: Arc<AtomicUsize>,
}

impl<W> Clone for Workers<W> {
    fn clone(&self) -> Self {
        Self {
            workers: Arc::clone(&self.workers),
            next: Arc::clone(&self.next),
        }
    }
}

impl<W> Workers<W> {
    /// Starts `threads` worker threads (at least one), named `worker-N`: `start(n)` makes the
    /// handle of worker `n` and the loop its thread runs. Returns the handles and the threads.
    pub fn start<L: FnOnce() + Send + 'static>(
        threads: usize,
        mut start: impl FnMut(usize) -> io::Result<(W, L)>,
    ) -> io::Result<(Self, Threads)> {
        let mut workers = Vec::new();
        let mut running = Vec::new();
        for n in 0..threads.max(1) {
            let (worker, run) = start(n)?;
            running.push(
                thread::Builder::new()
                    .name(format!("worker-{n}"))
                    .spawn(run)?,
            );
            workers.push(worker);
        }
        let workers = Self {
            workers: workers.into(),
            next: Arc::new(AtomicUsize::new(0)),
        };
        Ok((workers, Threads(running)))
    }

    /// The worker whose turn it is to take a new task.
    pub fn next(&self) -> &W {
        let turn = self.next.fetch_add(1, Ordering::Relaxed) % self.workers.len();
        &self.workers[turn]
    }

    /// Every worker.
    pub fn all(&self) -> &[W] {
        &self.workers
    }
}

/// The worker threads, to wait for once they were told to stop.
#[derive(Debug)]
pub struct Threads(Vec<JoinHandle<()>>);

impl Threads {
    /// Waits for every worker thread to end (one that panicked ends too).
    pub fn join(self) {
        for thread in self.0 {
            let _ = thread.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::Workers;

    #[test]
    fn tasks_are_dealt_in_turn_and_threads_are_named() {
        let (workers, threads) = Workers::start(3, |n| {
            Ok((n, move || {
                assert_eq!(
                    std::thread::current().name(),
                    Some(format!("worker-{n}").as_str())
                );
            }))
        })
        .unwrap();
        for thread in threads.0 {
            thread.join().unwrap();
        }
        let dealt: Vec<usize> = (0..7).map(|_| *workers.clone().next()).collect();
        assert_eq!(dealt, [0, 1, 2, 0, 1, 2, 0]);
        assert_eq!(workers.all(), [0, 1, 2]);
    }
}
