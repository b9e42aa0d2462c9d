//! The threads that run client sessions.
//!
//! One thread per core (or `nbthread`), each with a current-thread tokio
//! runtime of its own, and each accepting on every proxy listener (the same
//! listening socket, shared: whichever thread is free takes the client).
//! A session then lives on the thread that accepted it, with both of its
//! sockets in that thread's epoll set: a message wakes that thread only,
//! with no hand-off between threads and no work stealing. This is how
//! HAProxy's threads work, and on a machine whose cores are shared with
//! PostgreSQL and the clients, the context switches saved are throughput.
//!
//! Health checks, the stats listener, the runtime API and signals stay on
//! the runtime that called [`crate::run::start`].

use std::io;
use std::sync::mpsc;
use tokio::runtime::Handle;
use tokio_util::sync::CancellationToken;

/// Session threads; they stop when this is dropped (their runtimes drop
/// every task still on them).
#[derive(Debug)]
pub struct Workers {
    handles: Vec<Handle>,
    stop: CancellationToken,
}

impl Workers {
    /// Starts `n` threads (at least one).
    pub fn start(n: usize) -> io::Result<Workers> {
        let stop = CancellationToken::new();
        let mut handles = Vec::new();
        for i in 0..n.max(1) {
            let (tx, rx) = mpsc::channel();
            let stop = stop.clone();
            std::thread::Builder::new().name(format!("pglb-worker-{i}")).spawn(move || {
                let rt = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
                    Ok(rt) => rt,
                    Err(e) => {
                        let _ = tx.send(Err(e));
                        return;
                    }
                };
                let _ = tx.send(Ok(rt.handle().clone()));
                rt.block_on(stop.cancelled());
            })?;
            let handle = rx.recv().map_err(|_| io::Error::other("a session thread exited while starting"))??;
            handles.push(handle);
        }
        Ok(Workers { handles, stop })
    }

    /// The number of threads in `nbthread`'s sense: one per core unless set.
    pub fn count(nbthread: Option<usize>) -> usize {
        nbthread.unwrap_or_else(|| std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1))
    }

    pub fn handles(&self) -> &[Handle] {
        &self.handles
    }

    /// Stops every thread; their sessions are dropped (sockets closed).
    pub fn stop(&self) {
        self.stop.cancel();
    }
}

impl Drop for Workers {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}
