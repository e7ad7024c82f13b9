//! One I/O reactor per worker thread: the sockets of a connection are registered once, edge
//! triggered, with the reactor of the thread that runs the connection.
//!
//! async-io has one reactor per process. Its sockets are registered one-shot, so every wait
//! for readiness re-arms them (a system call), its poller re-arms its own notifier and timer on
//! every wait (three more), and an event is often harvested by one thread for a task that runs
//! on another, which then has to be woken. Here a worker thread waits on its own `mio::Poll`,
//! and an event wakes a task of that same thread: no registration per wait, no second thread.
//!
//! A socket's readiness is two flags. An event sets them and wakes the task waiting; a read or
//! write that finds the socket drained clears them. Edge-triggered notification makes that
//! exact: bytes that arrive after the flag was cleared bring a new event.
//!
//! The thread's timers are kept here too: the earliest bounds the thread's wait.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::io;
use std::os::fd::RawFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll, Waker};
use std::time::Instant;

use atomic_waker::AtomicWaker;
use mio::unix::SourceFd;
use mio::{Interest, Registry, Token};
use slab::Slab;

/// The token of the reactor's own waker (never a socket's slab index).
pub(crate) const WAKER: Token = Token(usize::MAX);

/// The part of a worker thread's reactor that other threads and the sockets use: registering
/// sockets, and waking the thread out of its wait.
#[derive(Debug)]
pub(crate) struct Reactor {
    registry: Registry,
    waker: mio::Waker,
    sources: Mutex<Slab<Arc<Readiness>>>,
    timers: Mutex<Timers>,
    /// The worker waits (or is about to) for I/O: work given to it must wake it.
    sleeping: AtomicBool,
}

thread_local! {
    /// The reactor of the worker thread running here; none on other threads.
    static CURRENT: RefCell<Option<Arc<Reactor>>> = const { RefCell::new(None) };
}

impl Reactor {
    /// The reactor of `poll`, whose events the calling worker thread harvests.
    pub(crate) fn new(poll: &mio::Poll) -> io::Result<Self> {
        Ok(Self {
            registry: poll.registry().try_clone()?,
            waker: mio::Waker::new(poll.registry(), WAKER)?,
            sources: Mutex::new(Slab::new()),
            timers: Mutex::new(Timers::default()),
            sleeping: AtomicBool::new(false),
        })
    }

    /// Makes `reactor` the one sockets polled on this thread register with.
    pub(crate) fn enter(reactor: &Arc<Self>) {
        CURRENT.with(|current| *current.borrow_mut() = Some(Arc::clone(reactor)));
    }

    /// The reactor of the calling worker thread.
    fn current() -> io::Result<Arc<Self>> {
        Self::current_opt().ok_or_else(|| {
            io::Error::other("a socket was polled outside the worker threads of proxy-smol")
        })
    }

    /// The reactor of the calling thread, if it is a worker thread.
    pub(crate) fn current_opt() -> Option<Arc<Self>> {
        CURRENT.with(|current| current.borrow().clone())
    }

    /// The timers of this reactor's thread.
    pub(crate) fn timers(&self) -> MutexGuard<'_, Timers> {
        // Every change to the timers is one tree operation: a panic elsewhere leaves them whole.
        self.timers.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Registers the socket `fd` for both directions, edge triggered.
    fn register(self: Arc<Self>, fd: RawFd) -> io::Result<Registration> {
        let readiness = Arc::new(Readiness::default());
        let key = self.lock_sources().insert(Arc::clone(&readiness));
        let interest = Interest::READABLE | Interest::WRITABLE;
        if let Err(e) = self
            .registry
            .register(&mut SourceFd(&fd), Token(key), interest)
        {
            self.lock_sources().remove(key);
            return Err(e);
        }
        Ok(Registration {
            reactor: self,
            key,
            readiness,
        })
    }

    /// Hands an event of this reactor's poll to its socket.
    pub(crate) fn dispatch(&self, event: &mio::event::Event) {
        let readiness = self.lock_sources().get(event.token().0).cloned();
        // A socket deregistered after the event was harvested: nobody waits for it.
        let Some(readiness) = readiness else { return };
        if event.is_readable() || event.is_read_closed() || event.is_error() {
            readiness.readable.store(true, Ordering::Release);
            readiness.reader.wake();
        }
        if event.is_writable() || event.is_write_closed() || event.is_error() {
            readiness.writable.store(true, Ordering::Release);
            readiness.writer.wake();
        }
    }

    /// The worker is about to wait for I/O; returns whether it should not, because work was
    /// given to it meanwhile (`has_work` is read after the flag is set).
    pub(crate) fn fall_asleep(&self, has_work: impl FnOnce() -> bool) -> bool {
        self.sleeping.store(true, Ordering::SeqCst);
        if has_work() {
            self.sleeping.store(false, Ordering::SeqCst);
            return false;
        }
        true
    }

    /// The worker is back from its wait.
    pub(crate) fn woke_up(&self) {
        self.sleeping.store(false, Ordering::SeqCst);
    }

    /// Work was given to the worker (after it was queued): wakes it if it waits for I/O. A
    /// worker busy running tasks is not woken; it looks at its queue before it waits.
    pub(crate) fn notify(&self) {
        std::sync::atomic::fence(Ordering::SeqCst);
        if self.sleeping.swap(false, Ordering::SeqCst) {
            // A failed wake-up leaves the worker in its wait: nothing better to do than log.
            if let Err(e) = self.waker.wake() {
                log::error!("could not wake a worker thread: {e}");
            }
        }
    }

    fn lock_sources(&self) -> MutexGuard<'_, Slab<Arc<Readiness>>> {
        // The slab is left consistent at every step: a panic elsewhere does not spoil it.
        self.sources.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// What the reactor last saw of a socket, and the tasks waiting for it.
#[derive(Debug)]
struct Readiness {
    readable: AtomicBool,
    writable: AtomicBool,
    reader: AtomicWaker,
    writer: AtomicWaker,
}

impl Default for Readiness {
    /// A new socket is tried once before any wait: the event of bytes that came before the
    /// registration may have been reported already.
    fn default() -> Self {
        Self {
            readable: AtomicBool::new(true),
            writable: AtomicBool::new(true),
            reader: AtomicWaker::new(),
            writer: AtomicWaker::new(),
        }
    }
}

/// A socket's place in a reactor. Dropping it does not deregister the socket (the owner of the
/// descriptor does, before closing it).
#[derive(Debug)]
pub(crate) struct Registration {
    reactor: Arc<Reactor>,
    key: usize,
    readiness: Arc<Readiness>,
}

/// A socket's registration, made at its first wait, on the thread that runs its task (a socket
/// accepted on the listening thread belongs to the worker its connection is given to).
#[derive(Debug, Default)]
pub(crate) struct Source(std::sync::OnceLock<Registration>);

/// Which way a socket is waited for.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Direction {
    Read,
    Write,
}

impl Source {
    fn registration(&self, fd: RawFd) -> io::Result<&Registration> {
        if let Some(registration) = self.0.get() {
            return Ok(registration);
        }
        let registration = Reactor::current()?.register(fd)?;
        // The socket's task runs on one thread only: nobody registered it meanwhile.
        Ok(self.0.get_or_init(|| registration))
    }

    /// Ready once the reactor saw the socket ready in `direction` since it was last drained.
    pub(crate) fn poll_ready(
        &self,
        fd: RawFd,
        direction: Direction,
        cx: &mut Context<'_>,
    ) -> Poll<io::Result<()>> {
        let registration = match self.registration(fd) {
            Ok(registration) => registration,
            Err(e) => return Poll::Ready(Err(e)),
        };
        let (flag, waker) = registration.readiness.direction(direction);
        if flag.load(Ordering::Acquire) {
            return Poll::Ready(Ok(()));
        }
        waker.register(cx.waker());
        // An event between the first look and the registration of the waker.
        if flag.load(Ordering::Acquire) {
            return Poll::Ready(Ok(()));
        }
        Poll::Pending
    }

    /// Whether the socket may be ready in `direction` (true before its first wait).
    pub(crate) fn may_be_ready(&self, direction: Direction) -> bool {
        self.0.get().is_none_or(|registration| {
            let (flag, _) = registration.readiness.direction(direction);
            flag.load(Ordering::Acquire)
        })
    }

    /// The socket has nothing more to give (or take) in `direction` until its next event.
    pub(crate) fn drained(&self, direction: Direction) {
        if let Some(registration) = self.0.get() {
            let (flag, _) = registration.readiness.direction(direction);
            flag.store(false, Ordering::Release);
        }
    }

    /// Removes the socket from its reactor; called before the descriptor is closed.
    pub(crate) fn deregister(&mut self, fd: RawFd) {
        if let Some(registration) = self.0.take() {
            let reactor = &registration.reactor;
            // A failure leaves nothing to undo: closing the descriptor removes it anyway.
            let _ = reactor.registry.deregister(&mut SourceFd(&fd));
            reactor.lock_sources().try_remove(registration.key);
        }
    }
}

impl Readiness {
    fn direction(&self, direction: Direction) -> (&AtomicBool, &AtomicWaker) {
        match direction {
            Direction::Read => (&self.readable, &self.reader),
            Direction::Write => (&self.writable, &self.writer),
        }
    }
}

/// The timers set on one worker thread, earliest first.
#[derive(Debug, Default)]
pub(crate) struct Timers {
    entries: BTreeMap<(Instant, u64), Waker>,
    next_id: u64,
}

impl Timers {
    pub(crate) fn insert(&mut self, at: Instant, waker: Waker) -> u64 {
        let id = self.next_id;
        self.next_id += 1;
        self.entries.insert((at, id), waker);
        id
    }

    pub(crate) fn remove(&mut self, at: Instant, id: u64) {
        self.entries.remove(&(at, id));
    }

    pub(crate) fn replace_waker(&mut self, at: Instant, id: u64, waker: Waker) {
        if let Some(entry) = self.entries.get_mut(&(at, id)) {
            *entry = waker;
        }
    }

    /// When the earliest timer is due.
    pub(crate) fn next(&self) -> Option<Instant> {
        self.entries.first_key_value().map(|(&(at, _), _)| at)
    }

    /// Takes the waker of one timer due at `now`.
    pub(crate) fn pop_due(&mut self, now: Instant) -> Option<Waker> {
        match self.entries.first_key_value() {
            Some((&(at, _), _)) if at <= now => self.entries.pop_first().map(|(_, waker)| waker),
            _ => None,
        }
    }
}
