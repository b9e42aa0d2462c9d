//! The threads that run client sessions.
//!
//! One thread per core (or `nbthread`), each with a current-thread tokio
//! runtime of its own. The accept loops hand each new client to the thread
//! with the fewest sessions, as HAProxy's listeners do; the session then
//! lives there, with both of its sockets in that thread's epoll set: a
//! message wakes that thread only, with no hand-off between threads and no
//! work stealing. On a machine whose cores are shared with PostgreSQL and
//! the clients, the context switches saved are throughput.
//!
//! Health checks, the stats listener, the runtime API, the accept loops and
//! signals stay on the runtime that called [`crate::run::start`].

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
use std::sync::mpsc;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::runtime::Handle;
use tokio_util::sync::CancellationToken;

/// Session threads; they stop when this is dropped (their runtimes drop
/// every task still on them).
#[derive(Debug)]
pub struct Workers {
    handles: Vec<Handle>,
    /// Live sessions per thread.
    load: Vec<Arc<AtomicUsize>>,
    stop: CancellationToken,
}

impl Workers {
    /// Starts `n` threads (at least one).
    pub fn start(n: usize) -> io::Result<Workers> {
        let stop = CancellationToken::new();
        let mut handles = Vec::new();
        for i in 0..n.max(1) {
            let (tx, rx) = mpsc::channel();
            let thread_stop = stop.clone();
            std::thread::Builder::new().name(format!("pglb-worker-{i}")).spawn(move || {
                let rt = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
                    Ok(rt) => rt,
                    Err(e) => {
                        let _ = tx.send(Err(e));
                        return;
                    }
                };
                let _ = tx.send(Ok(rt.handle().clone()));
                rt.block_on(heartbeat(thread_stop));
            })?;
            let started = rx.recv().map_err(|_| io::Error::other("a session thread exited while starting")).and_then(|r| r);
            match started {
                Ok(handle) => handles.push(handle),
                Err(e) => {
                    // The threads already started must not wait for ever.
                    stop.cancel();
                    return Err(e);
                }
            }
        }
        let load = handles.iter().map(|_| Arc::new(AtomicUsize::new(0))).collect();
        Ok(Workers { handles, load, stop })
    }

    /// The number of threads in `nbthread`'s sense: one per core unless set.
    pub fn count(nbthread: Option<usize>) -> usize {
        nbthread.unwrap_or_else(|| std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1))
    }

    /// Runs a session on the thread with the fewest sessions. The future
    /// is first polled there, so sockets it registers belong to that
    /// thread's runtime.
    pub fn spawn(&self, session: impl Future<Output = ()> + Send + 'static) {
        let i = (0..self.load.len()).min_by_key(|&i| self.load[i].load(Relaxed)).unwrap_or(0);
        self.load[i].fetch_add(1, Relaxed);
        // Made before the spawn: a task dropped before its first poll (a
        // stopping thread) still counts itself off. The session is the
        // task itself (no box, no wrapping async block, which would keep a
        // second copy of it): an idle session is one allocation.
        let done = Done(self.load[i].clone());
        self.handles[i].spawn(Counted { session, _done: done });
    }

    /// Stops every thread; their sessions are dropped (sockets closed).
    pub fn stop(&self) {
        self.stop.cancel();
    }
}

/// How often an idle session thread wakes up (see [`heartbeat`]).
const HEARTBEAT: Duration = Duration::from_secs(1);

/// Runs until `stop`, with a timer that fires every [`HEARTBEAT`].
///
/// tokio's timer wheel wakes its own thread through the eventfd (a
/// `write(2)`, and then an extra `epoll_wait` round) whenever a timer is
/// armed earlier than the earliest one it already has. A thread with no
/// timer would pay that for the first timer of every connection (the
/// startup read's, `timeout connect`'s, the relay's idle timer); with this
/// one always due within a second, timeouts of a second or more arm
/// silently. The cost is one wake-up per second per idle thread.
async fn heartbeat(stop: CancellationToken) {
    let mut tick = tokio::time::interval(HEARTBEAT);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tick.tick() => {}
        }
    }
}

/// Counts a session off its thread's load when it ends (or is dropped).
struct Done(Arc<AtomicUsize>);

pin_project_lite::pin_project! {
    /// A session and the guard that counts it off its thread.
    struct Counted<F> {
        #[pin]
        session: F,
        _done: Done,
    }
}

impl<F: Future> Future for Counted<F> {
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        self.project().session.poll(cx)
    }
}

impl Drop for Done {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Relaxed);
    }
}

impl Drop for Workers {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}
