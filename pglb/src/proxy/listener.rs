//! Listening sockets and the accept loop of each `bind`.

use super::session;
use super::workers::Workers;
use crate::config::Bind;
use crate::state::{BindKey, Runtime};
use socket2::{Domain, Protocol, Socket, Type};
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::unix::AsyncFd;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// Binds a listening socket for `bind` (SO_REUSEADDR, the bind's backlog
/// and IPv6-only setting).
pub fn bind(b: &Bind) -> io::Result<TcpListener> {
    if let Some(fd) = b.fd {
        // An inherited listening socket (`fd@N`): this generation listens
        // on its own duplicate.
        let l = std::net::TcpListener::from(crate::os::dup_inherited(fd)?);
        l.set_nonblocking(true)?;
        return TcpListener::from_std(l);
    }
    let socket = Socket::new(Domain::for_address(b.addr), Type::STREAM, Some(Protocol::TCP))?;
    socket.set_reuse_address(true)?;
    if b.addr.is_ipv6() {
        socket.set_only_v6(b.v6only)?;
    }
    socket.set_nonblocking(true)?;
    socket.bind(&b.addr.into())?;
    socket.listen(b.backlog.min(i32::MAX as u32) as i32)?;
    TcpListener::from_std(socket.into())
}

/// Accepts until pglb stops for good. `maxconn` (global and frontend) is
/// enforced right after `accept`: while no slot is free this loop waits
/// before accepting again, so further clients wait in the kernel's backlog
/// (back-pressure) instead of being accepted and dropped.
/// What the accept loop needs of the instance that runs it (`run::Control`
/// in pglb): the data plane gets these handles, not the controller.
pub trait Host: Send + Sync + 'static {
    /// The configuration generation new sessions use.
    fn runtime(&self) -> Arc<Runtime>;
    /// The session threads.
    fn workers(&self) -> &Workers;
    /// Tracks sessions, so that stopping can wait for them.
    fn sessions(&self) -> &TaskTracker;
}

pub async fn accept_loop<H: Host>(control: Arc<H>, key: BindKey, listener: TcpListener, stop: CancellationToken) {
    // Accepted sockets go to a session thread: they are accepted without
    // registering them with this runtime (which would cost two epoll_ctl
    // calls and a registration per client for nothing).
    let registered = listener.into_std().and_then(|l| {
        // SAFETY: the std listener owns its descriptor, which stays open
        // (and the same) until the AsyncFd that owns the listener drops.
        unsafe { AsyncFd::register_with_interest(l, tokio::io::Interest::READABLE) }.map_err(|e| e.into_parts().1)
    });
    let listener = match registered {
        Ok(l) => l,
        Err(e) => {
            tracing::error!(addr = %key.addr, error = %e, "cannot watch the listener");
            return;
        }
    };
    // One descriptor held back so that a client arriving while the process
    // is out of them can still be told why (and not left in the backlog).
    let mut reserve = open_reserve();
    loop {
        let accepted = tokio::select! {
            r = accept(&listener) => r,
            _ = stop.cancelled() => return,
        };
        let (stream, peer) = match accepted {
            Ok(a) => a,
            Err(e) if crate::os::is_resource_exhaustion(&e) => {
                // Out of file descriptors. With the reserve: free it and take
                // the client that is waiting, if any. If the reserve cannot be
                // reopened the process is still out: refuse that client in
                // PostgreSQL's words. Without a reserve: back off instead of
                // spinning; clients wait in the backlog until descriptors free.
                let Some(fd) = reserve.take() else {
                    tracing::warn!(addr = %key.addr, error = %e, "accept failed: out of file descriptors, retrying in 100ms");
                    tokio::select! {
                        _ = tokio::time::sleep(Duration::from_millis(100)) => {}
                        _ = stop.cancelled() => return,
                    }
                    reserve = open_reserve();
                    continue;
                };
                drop(fd);
                // Only a client already waiting (the socket is non-blocking).
                let waiting = accept_now(listener.get_ref());
                reserve = open_reserve();
                match waiting {
                    Ok(a) if reserve.is_some() => a,
                    Ok((stream, peer)) => {
                        // Refused beside the loop (bounded to about 2 s), so a
                        // silent client cannot hold up accepting, reloads or stop.
                        if let Some(fe) = control.runtime().frontend_for(&key).cloned() {
                            let stop = stop.clone();
                            tokio::spawn(async move {
                                let Ok(stream) = TcpStream::from_std(stream) else { return };
                                tokio::select! {
                                    _ = session::refuse_out_of_fds(&fe, stream, peer, &e) => {}
                                    _ = stop.cancelled() => {}
                                }
                            });
                        }
                        continue;
                    }
                    _ => continue,
                }
            }
            Err(e) => {
                tracing::debug!(addr = %key.addr, error = %e, "accept failed");
                continue;
            }
        };
        // Each session runs with the configuration generation current when
        // it was accepted.
        let rt = control.runtime();
        let Some(fe) = rt.frontend_for(&key).cloned() else { continue };
        let permits = tokio::select! {
            p = acquire(&rt.limit, &fe.limit) => p,
            _ = stop.cancelled() => return,
        };
        if let Err(e) = session::prepare_client(&stream, fe.cfg.clitcpka.then_some(&fe.cfg.clitcpka_params)) {
            tracing::debug!(%peer, error = %e, "client socket setup failed");
            continue;
        }
        // The session runs on a session thread; its socket is registered
        // there, with that thread's runtime.
        control.workers().spawn(control.sessions().track_future(session::handle(rt, fe, stream, peer, permits)));
    }
}

pub(super) type Permit = Option<tokio::sync::OwnedSemaphorePermit>;

/// A global and a frontend slot (where limited).
async fn acquire(global: &Option<Arc<Semaphore>>, local: &Option<Arc<Semaphore>>) -> (Permit, Permit) {
    let g = match global {
        Some(s) => s.clone().acquire_owned().await.ok(),
        None => None,
    };
    let l = match local {
        Some(s) => s.clone().acquire_owned().await.ok(),
        None => None,
    };
    (g, l)
}

/// Waits for a client and accepts it (non-blocking, close-on-exec).
async fn accept(listener: &AsyncFd<std::net::TcpListener>) -> io::Result<(std::net::TcpStream, SocketAddr)> {
    loop {
        let mut ready = listener.readable().await?;
        match ready.try_io(|l| accept_now(l.get_ref())) {
            Ok(r) => return r,
            Err(_would_block) => continue,
        }
    }
}

/// A client already waiting (made non-blocking), or WouldBlock.
fn accept_now(listener: &std::net::TcpListener) -> io::Result<(std::net::TcpStream, SocketAddr)> {
    let (stream, peer) = listener.accept()?;
    stream.set_nonblocking(true)?;
    Ok((stream, peer))
}

fn open_reserve() -> Option<std::fs::File> {
    std::fs::File::open("/dev/null").ok()
}
