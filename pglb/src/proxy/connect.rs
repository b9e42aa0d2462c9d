//! Getting a server connection for a session: selection, the queue,
//! `timeout connect`, and HAProxy's `retries` / `option redispatch`.

use super::log::Termination;
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
    pub stream: crate::tls::Stream,
    pub addr: SocketAddr,
    pub slot: Slot,
    pub connect_time: Duration,
}

/// How long a client waits for a usable server when neither `timeout
/// queue` nor `timeout connect` is set.
pub const DEFAULT_HOLD: Duration = Duration::from_secs(5);

#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    /// No server at all, or none became usable while the client waited.
    #[error("no server is available in backend \"{backend}\" ({detail}){}", waited.as_ref().map(|w| format!(" after waiting {w} (timeout queue)")).unwrap_or_default())]
    NoServer { backend: String, detail: String, waited: Option<String> },
    #[error("backend \"{backend}\" queue is full ({limit} waiting)")]
    QueueFull { backend: String, limit: u64 },
    #[error("no server of backend \"{backend}\" had a free slot within timeout queue {limit}")]
    QueueTimeout { backend: String, limit: String },
    #[error(
        "out of file descriptors connecting to server {backend}/{server} ({reason}); raise pglb's limit (ulimit -n, LimitNOFILE) or lower maxconn"
    )]
    Resource { backend: String, server: String, reason: String },
    /// Connects failed (or servers refused the startup) until `retries` ran out.
    #[error("could not connect to server {backend}/{server} ({addr}) after {attempts} attempt(s): {reason}")]
    Failed { backend: String, server: String, addr: String, attempts: u32, reason: String, timeout: bool },
}

impl ConnectError {
    /// HAProxy's termination state.
    pub fn termination(&self) -> Termination {
        use super::log::{Cause, Phase};
        let (cause, phase) = match self {
            ConnectError::NoServer { waited: None, .. } => (Cause::Server, Phase::Connect),
            ConnectError::NoServer { waited: Some(_), .. } => (Cause::ServerTimeout, Phase::Queue),
            ConnectError::QueueFull { .. } => (Cause::Proxy, Phase::Queue),
            ConnectError::QueueTimeout { .. } => (Cause::ServerTimeout, Phase::Queue),
            ConnectError::Resource { .. } => (Cause::Resource, Phase::Connect),
            ConnectError::Failed { timeout: true, .. } => (Cause::ServerTimeout, Phase::Connect),
            ConnectError::Failed { .. } => (Cause::Server, Phase::Connect),
        };
        Termination::new(cause, phase)
    }

    pub fn sqlstate(&self) -> &'static str {
        use crate::pg::sqlstate::*;
        match self {
            ConnectError::QueueFull { .. } | ConnectError::QueueTimeout { .. } | ConnectError::Resource { .. } => TOO_MANY_CONNECTIONS,
            _ => CONNECTION_FAILURE,
        }
    }
}

/// The connect phase of one session, kept for the log even on failure and
/// across startup replays (a server that refuses the startup counts as a
/// failed attempt, like a refused connect).
#[derive(Debug, Default, Clone, Copy)]
pub struct Attempts {
    /// Attempts after the first failure (counted against `retries`).
    pub retries: u32,
    pub redispatched: bool,
    /// Time spent queued for a slot or held for a usable server.
    pub queue_wait: Duration,
    /// The server of the last failed attempt.
    last_failed: Option<usize>,
    /// The last attempt's server refused the startup itself: the next one
    /// goes elsewhere when it can (that server said it takes no clients).
    refused: bool,
}

impl Attempts {
    /// Counts a failed attempt on `server`; an error once `retries` are
    /// used up. `refused`: the server answered the startup with a refusal
    /// (the next attempt redispatches), rather than failing to connect.
    pub fn failed(
        &mut self,
        backend: &BackendState,
        server: &ServerState,
        addr: SocketAddr,
        reason: String,
        timeout: bool,
        refused: bool,
    ) -> Result<(), ConnectError> {
        if self.retries >= backend.cfg.retries {
            return Err(ConnectError::Failed {
                backend: backend.cfg.name.to_string(),
                server: server.cfg.name.to_string(),
                addr: addr.to_string(),
                attempts: self.retries + 1,
                reason,
                timeout,
            });
        }
        self.retries += 1;
        self.last_failed = Some(server.index);
        self.refused = refused;
        crate::state::counters::Counters::add(&server.counters.retries, 1);
        crate::state::counters::Counters::add(&backend.counters.retries, 1);
        Ok(())
    }
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

/// A connection to a server of `backend`: waits for a slot (queued) or for
/// a usable server (held), and retries failed connects per `retries` and
/// `option redispatch`. A failed connect counts against the server
/// (`observe layer4`).
pub async fn connect(backend: &Arc<BackendState>, client: IpAddr, attempts: &mut Attempts) -> Result<Connected, ConnectError> {
    let cfg = &backend.cfg;
    loop {
        let slot = choose(backend, client, attempts).await?;
        let server = slot.server.clone();
        let Some(addr) = server.addr() else {
            return Err(ConnectError::NoServer {
                backend: cfg.name.to_string(),
                detail: format!("{} does not resolve", server.cfg.name),
                waited: None,
            });
        };
        let started = Instant::now();
        match open(addr, backend, &server).await {
            Ok(stream) => {
                let connect_time = started.elapsed();
                crate::state::counters::Counters::add(&server.counters.connect_time_us, connect_time.as_micros() as u64);
                crate::state::counters::Counters::add(&backend.counters.connect_time_us, connect_time.as_micros() as u64);
                return Ok(Connected { stream: crate::tls::Stream::Plain(stream), addr, slot, connect_time });
            }
            // pglb's own descriptors ran out: not the server's fault, and
            // retrying elsewhere would fail the same way.
            Err(e) if crate::os::is_resource_exhaustion(&e) => {
                return Err(ConnectError::Resource { backend: cfg.name.to_string(), server: server.cfg.name.to_string(), reason: e.to_string() });
            }
            Err(e) => {
                drop(slot);
                crate::state::counters::Counters::add(&server.counters.conn_errors, 1);
                crate::state::counters::Counters::add(&backend.counters.conn_errors, 1);
                let timeout = e.kind() == io::ErrorKind::TimedOut;
                let reason = io_reason(&e);
                tracing::debug!(backend = %cfg.name, server = %server.cfg.name, %addr, error = %reason, attempt = attempts.retries + 1, "connect failed");
                server.passive_error(backend, &format!("L4 unsuccessful connection: {reason}"));
                attempts.failed(backend, &server, addr, reason, timeout, false)?;
            }
        }
    }
}

/// An I/O error as HAProxy words it: "Connection refused", without Rust's
/// "(os error 111)".
pub fn io_reason(e: &io::Error) -> String {
    let text = e.to_string();
    match text.rfind(" (os error ") {
        Some(i) => text[..i].to_string(),
        None => text,
    }
}

/// The server for the next attempt: a new pick, or after a failed connect
/// the same server again (after HAProxy's turn-around of min(timeout
/// connect, 1s)) unless this retry redispatches. After a startup refusal
/// the retry always redispatches (the same server only when it is the sole
/// usable one). A failed server that is no longer
/// usable (marked DOWN meanwhile, passively or by a check) is never tried
/// again, even without `option redispatch`: what answers at its address now
/// may be a demoted primary restarted as a replica.
async fn choose(backend: &Arc<BackendState>, client: IpAddr, attempts: &mut Attempts) -> Result<Slot, ConnectError> {
    let cfg = &backend.cfg;
    let k = attempts.retries;
    let redispatch = k > 0 && (attempts.refused || redispatch_on(cfg.redispatch, k, cfg.retries));
    let last = attempts.last_failed;
    if let Some(i) = last.filter(|_| !redispatch) {
        let s = &backend.servers[i];
        if s.usable() {
            tokio::time::sleep(cfg.timeout_connect.unwrap_or(Duration::from_secs(1)).min(Duration::from_secs(1))).await;
        }
        if s.usable() {
            return if s.try_acquire() {
                Ok(Slot { server: s.clone(), backend: backend.clone() })
            } else {
                wait_for_slot(backend, client, None, attempts).await
            };
        }
    }
    if last.is_some() {
        attempts.redispatched = true;
        crate::state::counters::Counters::add(&backend.counters.redispatches, 1);
    }
    wait_for_slot(backend, client, last, attempts).await
}

/// Picks a server. While every usable server is full, waits in the
/// backend's queue (`timeout queue`); while none is usable (all DOWN, a
/// split brain, a switchover, `pause backend`), waits for one to become
/// usable, up to `timeout queue` (else `timeout connect`, else 5 s): a
/// failover becomes a pause instead of an error.
async fn wait_for_slot(backend: &Arc<BackendState>, client: IpAddr, avoid: Option<usize>, attempts: &mut Attempts) -> Result<Slot, ConnectError> {
    let cfg = &backend.cfg;
    let started = Instant::now();
    let queue_deadline = cfg.timeout_queue.map(|t| started + t);
    let hold_limit = cfg.timeout_queue.unwrap_or(DEFAULT_HOLD);
    // Leaves the queue however this ends, including when the session drops
    // this future because its client left while waiting.
    let mut queued: Option<Queued> = None;
    let mut held: Option<Held> = None;
    let result = loop {
        let notified = backend.slot_freed.notified();
        tokio::pin!(notified);
        notified.as_mut().enable();
        let pick = balance::pick(backend, client, avoid);
        if pick == Pick::None && backend.servers.is_empty() {
            break Err(no_server(backend, None));
        }
        match pick {
            Pick::Server(i) => break Ok(Slot { server: backend.servers[i].clone(), backend: backend.clone() }),
            Pick::Full | Pick::None => {
                if queued.is_none() {
                    if let Some(limit) = backend.queue_limit()
                        && crate::state::counters::Counters::get(&backend.counters.queue_cur) >= limit
                    {
                        break Err(ConnectError::QueueFull { backend: cfg.name.to_string(), limit });
                    }
                    backend.counters.enqueue();
                    queued = Some(Queued(&backend.counters));
                }
                if pick == Pick::None {
                    held.get_or_insert_with(|| Held::new(backend));
                } else {
                    held = None;
                }
                let deadline = if held.is_some() { Some(started + hold_limit) } else { queue_deadline };
                let waited = match deadline {
                    Some(d) => tokio::time::timeout_at(d, notified).await.is_ok(),
                    None => {
                        notified.await;
                        true
                    }
                };
                if !waited {
                    break Err(if held.is_some() {
                        no_server(backend, Some(crate::config::units::fmt_duration(hold_limit)))
                    } else {
                        ConnectError::QueueTimeout {
                            backend: cfg.name.to_string(),
                            limit: cfg.timeout_queue.map(crate::config::units::fmt_duration).unwrap_or_default(),
                        }
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

/// A session waiting for a usable server. The first one to wait asks every
/// server of the backend to be checked at once (and, while any waits, the
/// checks run at a short interval: see `health::HELD_CHECK_INTERVAL`).
struct Held<'a>(&'a BackendState);

impl<'a> Held<'a> {
    fn new(backend: &'a BackendState) -> Self {
        if backend.holding.fetch_add(1, std::sync::atomic::Ordering::Relaxed) == 0 {
            for s in &backend.servers {
                s.request_check();
            }
        }
        Held(backend)
    }
}

impl Drop for Held<'_> {
    fn drop(&mut self) {
        self.0.holding.fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
    }
}

/// A place in a backend's queue, given up when dropped.
struct Queued<'a>(&'a crate::state::counters::Counters);

impl Drop for Queued<'_> {
    fn drop(&mut self) {
        self.0.dequeue();
    }
}

fn no_server(backend: &BackendState, waited: Option<String>) -> ConnectError {
    let total = backend.servers.len();
    let down = backend.servers.iter().filter(|s| s.health() == crate::state::Health::Down).count();
    let maint = backend.servers.iter().filter(|s| s.admin() != crate::state::Admin::Ready).count();
    let unresolved = backend.servers.iter().filter(|s| s.addr().is_none()).count();
    let backend_name = backend.cfg.name.to_string();
    if backend.paused.load(std::sync::atomic::Ordering::Relaxed) {
        return ConnectError::NoServer { backend: backend_name, detail: "paused by the runtime API".into(), waited };
    }
    if backend.split_brain.load(std::sync::atomic::Ordering::Relaxed) {
        return ConnectError::NoServer { backend: backend_name, detail: "split brain: more than one server reports being primary".into(), waited };
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
    ConnectError::NoServer { backend: backend_name, detail: parts.join(", "), waited }
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
