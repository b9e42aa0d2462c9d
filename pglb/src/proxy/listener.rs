//! Listening sockets and the accept loop of each `bind`.

use super::session;
use crate::config::Bind;
use crate::run::Control;
use crate::state::BindKey;
use socket2::{Domain, Protocol, Socket, Type};
use std::io;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

/// Binds a listening socket for `bind` (SO_REUSEADDR, the bind's backlog
/// and IPv6-only setting).
pub fn bind(b: &Bind) -> io::Result<TcpListener> {
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
pub async fn accept_loop(control: Arc<Control>, key: BindKey, listener: TcpListener, stop: CancellationToken) {
    // One descriptor held back so that a client arriving while the process
    // is out of them can still be told why (and not left in the backlog).
    let mut reserve = open_reserve();
    loop {
        let accepted = tokio::select! {
            r = listener.accept() => r,
            _ = stop.cancelled() => return,
        };
        let (stream, peer) = match accepted {
            Ok(a) => a,
            Err(e) if is_resource_exhaustion(&e) => {
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
                // Only a client already waiting (a zero timeout still polls once).
                let waiting = tokio::time::timeout(Duration::ZERO, listener.accept()).await;
                reserve = open_reserve();
                match waiting {
                    Ok(Ok(a)) if reserve.is_some() => a,
                    Ok(Ok((stream, peer))) => {
                        let rt = control.runtime();
                        if let Some(fe) = rt.frontend_for(&key).cloned() {
                            session::refuse_out_of_fds(&fe, stream, peer, &e).await;
                        }
                        reserve = open_reserve();
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
        // The session moves to a session thread: its socket leaves this
        // runtime's reactor and joins that thread's.
        let stream = match stream.into_std() {
            Ok(s) => s,
            Err(e) => {
                tracing::debug!(%peer, error = %e, "cannot hand the client to a session thread");
                continue;
            }
        };
        control.workers().spawn(control.sessions().track_future(async move {
            let _permits = permits;
            let Ok(mut stream) = TcpStream::from_std(stream) else { return };
            session::handle(rt, fe, &mut stream, peer).await;
        }));
    }
}

type Permit = Option<tokio::sync::OwnedSemaphorePermit>;

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

fn open_reserve() -> Option<std::fs::File> {
    std::fs::File::open("/dev/null").ok()
}

/// The process or the system is out of file descriptors (or buffers):
/// pglb's own limit, not a fault of the peer.
pub fn is_resource_exhaustion(e: &io::Error) -> bool {
    matches!(e.raw_os_error(), Some(libc::EMFILE | libc::ENFILE | libc::ENOBUFS | libc::ENOMEM))
}
