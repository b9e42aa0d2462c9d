//! Getting a server connection for a session: selection, the queue,
//! `timeout connect`, and HAProxy's `retries` / `option redispatch`.

use crate::balance::{self, Pick};
use crate::state::{BackendState, ServerState};
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;
use tokio::net::{TcpSocket, TcpStream};
use tokio::time::Instant;

/// A connection slot on a server; released (and a queued session woken)
/// when dropped.
#[derive(Debug)]
pub struct Slot {
    pub server: Arc<ServerState>,
    backend: Arc<BackendState>,
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.server.counters.close();
        self.backend.slot_freed.notify_one();
    }
}

#[derive(Debug)]
pub struct Connected {
    pub stream: TcpStream,
    pub addr: SocketAddr,
    pub slot: Slot,
    pub retries: u32,
    pub redispatched: bool,
    pub queue_wait: Duration,
    pub connect_time: Duration,
}

#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error("no server is available in backend \"{backend}\" ({detail})")]
    NoServer { backend: String, detail: String },
    #[error("backend \"{backend}\" queue is full ({limit} waiting)")]
    QueueFull { backend: String, limit: u64 },
    #[error("no server of backend \"{backend}\" had a free slot within timeout queue {limit}")]
    QueueTimeout { backend: String, limit: String },
    #[error(
        "out of file descriptors connecting to server {backend}/{server} ({reason}); raise pglb's limit (ulimit -n, LimitNOFILE) or lower maxconn"
    )]
    Resource { backend: String, server: String, reason: String },
    #[error("could not connect to server {backend}/{server} ({addr}) after {attempts} attempt(s): {reason}")]
    Failed { backend: String, server: String, addr: String, attempts: u32, reason: String, timeout: bool },
}

impl ConnectError {
    /// HAProxy-style termination state.
    pub fn termination(&self) -> &'static str {
        match self {
            ConnectError::NoServer { .. } => "SC",
            ConnectError::QueueFull { .. } => "PQ",
            ConnectError::QueueTimeout { .. } => "sQ",
            ConnectError::Resource { .. } => "RC",
            ConnectError::Failed { timeout: true, .. } => "sC",
            ConnectError::Failed { .. } => "SC",
        }
    }

    pub fn sqlstate(&self) -> &'static str {
        use crate::pg::sqlstate::*;
        match self {
            ConnectError::QueueFull { .. } | ConnectError::QueueTimeout { .. } | ConnectError::Resource { .. } => TOO_MANY_CONNECTIONS,
            _ => CONNECTION_FAILURE,
        }
    }
}

/// Counters of one connect phase, kept for the log even on failure.
#[derive(Debug, Default, Clone, Copy)]
pub struct Attempts {
    pub retries: u32,
    pub redispatched: bool,
    pub queue_wait: Duration,
}

/// Whether retry number `k` (1-based) goes to another server, per
/// `option redispatch [interval]` (see the model's doc).
fn redispatch_on(interval: Option<i32>, k: u32, retries: u32) -> bool {
    match interval {
        None => false,
        Some(p) if p > 0 => k.is_multiple_of(p as u32),
        Some(n) => i64::from(k) == i64::from(retries) + 1 + i64::from(n),
    }
}

pub async fn connect(backend: &Arc<BackendState>, client: IpAddr, attempts: &mut Attempts) -> Result<Connected, ConnectError> {
    let cfg = &backend.cfg;
    let mut last_failed: Option<usize> = None;
    let mut k = 0u32;
    loop {
        // Choose the server: the same one again, or a new pick.
        let redispatch = k > 0 && redispatch_on(cfg.redispatch, k, cfg.retries);
        let slot = match last_failed {
            Some(i) if !redispatch => {
                let s = &backend.servers[i];
                // Turn-around timer before hitting the same server again.
                tokio::time::sleep(cfg.timeout_connect.unwrap_or(Duration::from_secs(1)).min(Duration::from_secs(1))).await;
                if !s.usable() {
                    // Marked DOWN (or put in maintenance, drain, weight 0)
                    // meanwhile: never retry it, even without `option
                    // redispatch` (HAProxy redispatches here only with the
                    // option). What answers at its address now may be a
                    // demoted primary restarted as a replica.
                    attempts.redispatched = true;
                    crate::state::counters::Counters::add(&backend.counters.redispatches, 1);
                    wait_for_slot(backend, client, Some(i), attempts).await?
                } else if s.try_acquire() {
                    Slot { server: s.clone(), backend: backend.clone() }
                } else {
                    wait_for_slot(backend, client, None, attempts).await?
                }
            }
            _ => {
                if redispatch {
                    attempts.redispatched = true;
                    crate::state::counters::Counters::add(&backend.counters.redispatches, 1);
                }
                wait_for_slot(backend, client, last_failed, attempts).await?
            }
        };
        let server = slot.server.clone();
        let Some(addr) = server.addr.load().as_deref().copied() else {
            return Err(ConnectError::NoServer { backend: cfg.name.to_string(), detail: format!("{} does not resolve", server.cfg.name) });
        };
        let started = Instant::now();
        match open(addr, backend, &server).await {
            Ok(stream) => {
                let connect_time = started.elapsed();
                crate::state::counters::Counters::add(&server.counters.connect_time_us, connect_time.as_micros() as u64);
                crate::state::counters::Counters::add(&backend.counters.connect_time_us, connect_time.as_micros() as u64);
                return Ok(Connected {
                    stream,
                    addr,
                    slot,
                    retries: attempts.retries,
                    redispatched: attempts.redispatched,
                    queue_wait: attempts.queue_wait,
                    connect_time,
                });
            }
            // pglb's own descriptors ran out: not the server's fault, and
            // retrying elsewhere would fail the same way.
            Err(e) if super::listener::is_resource_exhaustion(&e) => {
                return Err(ConnectError::Resource { backend: cfg.name.to_string(), server: server.cfg.name.to_string(), reason: e.to_string() });
            }
            Err(e) => {
                drop(slot);
                crate::state::counters::Counters::add(&server.counters.conn_errors, 1);
                crate::state::counters::Counters::add(&backend.counters.conn_errors, 1);
                let timeout = e.kind() == io::ErrorKind::TimedOut;
                tracing::debug!(backend = %cfg.name, server = %server.cfg.name, %addr, error = %e, attempt = k + 1, "connect failed");
                if k >= cfg.retries {
                    return Err(ConnectError::Failed {
                        backend: cfg.name.to_string(),
                        server: server.cfg.name.to_string(),
                        addr: addr.to_string(),
                        attempts: k + 1,
                        reason: e.to_string(),
                        timeout,
                    });
                }
                k += 1;
                attempts.retries = k;
                crate::state::counters::Counters::add(&server.counters.retries, 1);
                crate::state::counters::Counters::add(&backend.counters.retries, 1);
                last_failed = Some(server.index);
            }
        }
    }
}

/// Picks a server, waiting in the backend's queue while all are full.
async fn wait_for_slot(backend: &Arc<BackendState>, client: IpAddr, avoid: Option<usize>, attempts: &mut Attempts) -> Result<Slot, ConnectError> {
    let cfg = &backend.cfg;
    let started = Instant::now();
    let deadline = cfg.timeout_queue.map(|t| started + t);
    // Leaves the queue however this ends, including when the session drops
    // this future because its client left while waiting.
    let mut queued: Option<Queued> = None;
    let result = loop {
        let notified = backend.slot_freed.notified();
        tokio::pin!(notified);
        notified.as_mut().enable();
        match balance::pick(backend, client, avoid) {
            Pick::Server(i) => break Ok(Slot { server: backend.servers[i].clone(), backend: backend.clone() }),
            Pick::None => break Err(no_server(backend)),
            Pick::Full => {
                if queued.is_none() {
                    if let Some(limit) = backend.queue_limit()
                        && crate::state::counters::Counters::get(&backend.counters.queue_cur) >= limit
                    {
                        break Err(ConnectError::QueueFull { backend: cfg.name.to_string(), limit });
                    }
                    backend.counters.enqueue();
                    queued = Some(Queued(&backend.counters));
                }
                let waited = match deadline {
                    Some(d) => tokio::time::timeout_at(d, notified).await.is_ok(),
                    None => {
                        notified.await;
                        true
                    }
                };
                if !waited {
                    break Err(ConnectError::QueueTimeout {
                        backend: cfg.name.to_string(),
                        limit: cfg.timeout_queue.map(crate::config::units::fmt_duration).unwrap_or_default(),
                    });
                }
            }
        }
    };
    if queued.take().is_some() {
        attempts.queue_wait += started.elapsed();
    }
    result
}

/// A place in a backend's queue, given up when dropped.
struct Queued<'a>(&'a crate::state::counters::Counters);

impl Drop for Queued<'_> {
    fn drop(&mut self) {
        self.0.dequeue();
    }
}

fn no_server(backend: &BackendState) -> ConnectError {
    let total = backend.servers.len();
    let down = backend.servers.iter().filter(|s| s.health() == crate::state::Health::Down).count();
    let maint = backend.servers.iter().filter(|s| s.admin() != crate::state::Admin::Ready).count();
    let unresolved = backend.servers.iter().filter(|s| s.addr.load().is_none()).count();
    if backend.split_brain.load(std::sync::atomic::Ordering::Relaxed) {
        return ConnectError::NoServer {
            backend: backend.cfg.name.to_string(),
            detail: "split brain: more than one server reports being primary".into(),
        };
    }
    let mut parts = vec![format!("{total} server(s)")];
    if down > 0 {
        parts.push(format!("{down} DOWN"));
    }
    if maint > 0 {
        parts.push(format!("{maint} in maintenance or draining"));
    }
    if unresolved > 0 {
        parts.push(format!("{unresolved} unresolved"));
    }
    ConnectError::NoServer { backend: backend.cfg.name.to_string(), detail: parts.join(", ") }
}

/// Opens a TCP connection with the backend's socket options.
async fn open(addr: SocketAddr, backend: &BackendState, server: &ServerState) -> io::Result<TcpStream> {
    let socket = if addr.is_ipv4() { TcpSocket::new_v4()? } else { TcpSocket::new_v6()? };
    socket.set_nodelay(true)?;
    {
        let sock = socket2::SockRef::from(&socket);
        if backend.cfg.srvtcpka {
            backend.cfg.srvtcpka_params.apply(&sock)?;
        }
        if let Some(ut) = server.cfg.tcp_ut {
            sock.set_tcp_user_timeout(Some(ut))?;
        }
    }
    match backend.cfg.timeout_connect {
        Some(t) => tokio::time::timeout(t, socket.connect(addr)).await.map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "timeout connect"))?,
        None => socket.connect(addr).await,
    }
}

#[cfg(test)]
mod tests {
    use super::redispatch_on;

    #[test]
    fn redispatch_intervals() {
        // Default (-1): only the last retry.
        assert_eq!((1..=3).map(|k| redispatch_on(Some(-1), k, 3)).collect::<Vec<_>>(), [false, false, true]);
        // Every retry.
        assert_eq!((1..=3).map(|k| redispatch_on(Some(1), k, 3)).collect::<Vec<_>>(), [true, true, true]);
        // Every second retry.
        assert_eq!((1..=4).map(|k| redispatch_on(Some(2), k, 4)).collect::<Vec<_>>(), [false, true, false, true]);
        // The retry before the last.
        assert_eq!((1..=3).map(|k| redispatch_on(Some(-2), k, 3)).collect::<Vec<_>>(), [false, true, false]);
        assert!(!redispatch_on(None, 3, 3));
    }
}
