//! One client connection, from its first packet to its log line.
//!
//! Phases: read the client's first packet (bounded in size and time) ->
//! CancelRequest: route it and close; otherwise get a server connection
//! (or answer with a PostgreSQL FATAL) -> replay the first packet and the
//! SSL/GSS negotiation -> relay, watching the unencrypted startup answer
//! for BackendKeyData -> release the slot, log.

use super::cancel::Delivery;
use super::connect::{self, Attempts, Connected};
use super::handshake::{self, Exchange};
use super::log::{Cause, ConnLog, Load, Phase, Termination, ms, ms32};
use super::relay::{self, End, Relay};
use super::sniff::Event;
use crate::pg::startup::{self, CancelKey, FirstPacket, Startup};
use crate::pg::{self, sqlstate};
use crate::state::{BackendState, FrontendState, Runtime, ServerState};
use crate::tls::Stream;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Instant;

/// Bound on the startup phase when `timeout client` is not set:
/// PostgreSQL's own authentication_timeout default.
const DEFAULT_STARTUP_TIMEOUT: Duration = Duration::from_secs(60);

/// Why the first packet could not be read.
pub(super) enum ReadError {
    /// Closed before sending anything.
    Empty,
    Timeout,
    Io,
    NotPostgres(String),
}

/// What the first read of a packet asks for. A StartupMessage with the
/// usual parameters fits, so it arrives in one recv(2), and the short read
/// tells tokio the socket is drained: no `EAGAIN` read follows, neither
/// for the body nor for the check that the client is still there. The read
/// goes through the thread's relay buffer, so a session allocates only
/// what arrived.
const FIRST_READ: usize = 1024;

/// A length-prefixed packet as read: `bytes[..len]` is the packet; any
/// bytes after it were sent by the client without waiting for an answer
/// and are forwarded with it.
pub(super) struct Packet {
    pub(super) bytes: Vec<u8>,
    len: usize,
}

impl Packet {
    pub(super) fn packet(&self) -> &[u8] {
        &self.bytes[..self.len]
    }

    /// Whether the client sent more than this packet.
    pub(super) fn pipelined(&self) -> bool {
        self.bytes.len() > self.len
    }

    /// The bytes the client sent after this packet.
    fn rest(&self) -> &[u8] {
        &self.bytes[self.len..]
    }
}

/// Reads one length-prefixed first packet, starting with `carry` (bytes
/// already read after the previous packet).
pub(super) async fn read_packet(client: &mut Stream, limit: Duration, carry: &[u8]) -> Result<Packet, ReadError> {
    let read = async {
        let mut bytes = carry.to_vec();
        while bytes.len() < 4 {
            match relay::read_into(client, &mut bytes, FIRST_READ).await {
                Ok(0) | Err(_) if bytes.is_empty() => return Err(ReadError::Empty),
                Ok(0) | Err(_) => return Err(ReadError::Io),
                Ok(_) => {}
            }
        }
        let len = startup::packet_len([bytes[0], bytes[1], bytes[2], bytes[3]]).map_err(|e| ReadError::NotPostgres(e.to_string()))?;
        if bytes.len() < len {
            let have = bytes.len();
            bytes.resize(len, 0);
            client.read_exact(&mut bytes[have..]).await.map_err(|_| ReadError::Io)?;
        }
        Ok(Packet { bytes, len })
    };
    tokio::time::timeout(limit, read).await.unwrap_or(Err(ReadError::Timeout))
}

/// A session past its startup exchange: the server took it.
struct Opened {
    be: Arc<BackendState>,
    conn: Connected,
    /// Watches the rest of an unencrypted startup answer for BackendKeyData.
    sniffer: Option<Box<super::sniff::Sniffer>>,
    /// The session's BackendKeyData, once seen (unregistered at the end).
    key: Option<CancelKey>,
    /// Where the conversation is, to close it at a transaction boundary.
    track: super::track::Track,
}

/// The first packet, cancel requests, refusals, the server connection and
/// the startup exchange (replayed on another server when one refuses).
/// `None` when the session ends here (`log` says how).
async fn open(rt: &Arc<Runtime>, fe: &Arc<FrontendState>, client: &mut Stream, peer: SocketAddr, log: &mut ConnLog) -> Option<Opened> {
    let mut backend = fe.backend.clone();
    if let Some(be) = &backend {
        log.backend = be.cfg.name.clone();
    }
    let startup_limit = fe.cfg.timeout_client.unwrap_or(DEFAULT_STARTUP_TIMEOUT);
    // With content rules, `tcp-request inspect-delay` bounds the wait for
    // the first packet, as it bounds HAProxy's inspection.
    let first_limit = match fe.cfg.tcp_rules.inspect_delay {
        Some(d) if !fe.cfg.tcp_rules.content.is_empty() => d.min(startup_limit),
        _ => startup_limit,
    };
    // `bind ... ssl`: pglb ends the client's TLS itself, whether it starts
    // with an SSLRequest or (PostgreSQL 17's direct TLS) a ClientHello.
    let acceptor = acceptor_for(fe, client);
    if let Some(acceptor) = acceptor {
        match crate::tls::starts_with_client_hello(client, first_limit).await {
            Some(true) => accept_tls(client, acceptor, true, startup_limit, log).await?,
            Some(false) => {}
            None => return read_failed(fe, ReadError::Timeout, log),
        }
    }
    let mut first = match read_packet(client, first_limit, &[]).await {
        Ok(p) => p,
        Err(e) => return read_failed(fe, e, log),
    };
    if let Some(acceptor) = acceptor {
        first = negotiate(fe, client, acceptor, first, startup_limit, log).await?;
    }
    if !fe.cfg.tcp_rules.content.is_empty()
        && let crate::config::tcprules::Verdict::Reject(line) =
            fe.cfg.tcp_rules.on_content(peer, client.local_addr().ok(), first.packet(), &|b| usable(rt, b))
    {
        log.termination = Termination::new(Cause::Proxy, Phase::Request);
        log.reason = Some(format!("rejected by tcp-request content (line {line})").into());
        return None;
    }
    let parsed = match startup::parse_first(first.packet()) {
        Ok(p) => p,
        Err(e) => {
            crate::state::counters::Counters::add(&fe.counters.req_errors, 1);
            log.termination = Termination::new(Cause::Proxy, Phase::Request);
            log.reason = Some(format!("not a PostgreSQL client: {e}").into());
            let msg = pg::fatal(sqlstate::PROTOCOL_VIOLATION, &format!("pglb: {e}"), None, None);
            let _ = tokio::time::timeout(Duration::from_secs(1), client.write_all(&msg)).await;
            return None;
        }
    };
    if acceptor.is_some() && !client.is_tls() && matches!(parsed, FirstPacket::Startup(_)) {
        // A TLS port takes no plaintext session (as HAProxy's `bind ...
        // ssl`); plaintext CancelRequests are welcome (libpq before 17
        // sends them so even for TLS sessions).
        if let FirstPacket::Startup(s) = &parsed {
            note_startup(log, s);
        }
        log.termination = Termination::new(Cause::Proxy, Phase::Request);
        log.reason = Some("a plaintext startup on a TLS port (bind ... ssl)".into());
        let msg = pg::fatal(
            sqlstate::INVALID_AUTHORIZATION,
            "pglb: this port accepts only TLS connections (bind ... ssl): connect with sslmode=require or stricter",
            None,
            None,
        );
        let _ = tokio::time::timeout(Duration::from_secs(1), client.write_all(&msg)).await;
        return None;
    }
    if let FirstPacket::Cancel(key) = parsed {
        log.transport = "cancel";
        let delivery = super::cancel::deliver(&rt.cancel, key, first.packet(), backend.as_deref()).await;
        log.reason = Some(format!("cancel request {}", delivery.as_str()).into());
        if delivery == Delivery::Broadcast {
            log.server = "*".into();
        }
        return None;
    }
    if let FirstPacket::Startup(s) = &parsed {
        note_startup(log, s);
        // `use_backend B if ...` on the StartupMessage's parameters. (A
        // client that asked for TLS first goes to default_backend: pglb
        // cannot read the parameters it sends under TLS.)
        if !fe.cfg.switching.is_empty()
            && let Some(to) = switch(rt, fe, peer, client.local_addr().ok(), first.packet())
        {
            log.backend = to.cfg.name.clone();
            backend = Some(to);
        }
    }
    let mut first = (first, parsed);
    let mut counts = (first.0.bytes.len() as u64, 0u64);
    let refusal = match &backend {
        _ if rt.stopping.is_cancelled() => Refusal::stopping(),
        None => Refusal {
            code: sqlstate::CONNECTION_FAILURE,
            message: format!("frontend \"{}\" has no backend", fe.cfg.name),
            termination: Termination::new(Cause::Proxy, Phase::Connect),
            answer: Vec::new(),
        },
        Some(be) => {
            let mut attempts = Attempts::default();
            let r = start_on_a_server(rt, be, client, peer, &mut first, startup_limit, &mut counts, &mut attempts, log).await;
            log.retries = attempts.retries;
            log.redispatched = attempts.redispatched;
            log.queue_ms = Some(ms32(attempts.queue_wait));
            match r {
                Ok((conn, plain, mut answer)) => {
                    if conn.stream.is_tls() && !client.is_tls() {
                        // Channel binding needs TLS on the client's side too.
                        if let Some(a) = pg::sasl::without_channel_binding(&answer) {
                            answer = a;
                        }
                    }
                    let be = be.clone();
                    log.server = conn.slot.server.cfg.name.clone();
                    log.connect_ms = Some(ms32(conn.connect_time));
                    let track = if plain { super::track::Track::default() } else { super::track::Track::opaque() };
                    let mut opened = Opened { be, conn, sniffer: plain.then(Box::default), key: None, track };
                    // What the client sent behind its StartupMessage went to
                    // the server with it (a pipelined query).
                    opened.track.client(first.0.rest());
                    (log.bytes_in, log.bytes_out) = counts;
                    if forward_first_answer(rt, client, &mut opened, &answer).await.is_err() {
                        log.termination = Termination::new(Cause::Client, Phase::Data);
                        return None;
                    }
                    log.bytes_out += answer.len() as u64;
                    return Some(opened);
                }
                Err(r) => r,
            }
        }
    };
    let Refusal { code, message, termination, answer } = refusal;
    log.termination = termination;
    log.reason = Some(message.as_str().into());
    if !code.is_empty() || termination == Termination::new(Cause::Client, Phase::Queue) {
        if let Some(be) = &backend {
            crate::state::counters::Counters::add(&be.counters.errors_sent, 1);
        }
        crate::state::counters::Counters::add(&fe.counters.errors_sent, 1);
    }
    if !answer.is_empty() {
        let _ = tokio::time::timeout(Duration::from_secs(1), client.write_all(&answer)).await;
    } else if !code.is_empty() {
        super::reject::refuse(client, &first.1, first.0.rest(), code, &format!("pglb: {message}"), startup_limit).await;
    }
    None
}

/// Logs why the first packet could not be read; the session ends.
fn read_failed<T>(fe: &FrontendState, e: ReadError, log: &mut ConnLog) -> Option<T> {
    let e_null = matches!(e, ReadError::Empty);
    log.termination = match e {
        ReadError::Empty | ReadError::Io => Termination::new(Cause::Client, Phase::Request),
        ReadError::Timeout => Termination::new(Cause::ClientTimeout, Phase::Request),
        ReadError::NotPostgres(_) => Termination::new(Cause::Proxy, Phase::Request),
    };
    if let ReadError::NotPostgres(why) = &e {
        crate::state::counters::Counters::add(&fe.counters.req_errors, 1);
        log.reason = Some(format!("not a PostgreSQL client: {why}").into());
    }
    // option dontlognull: a connection that sent nothing at all
    // (a port scan, a TCP health check) is not logged.
    log.silent = fe.cfg.log.dontlognull && e_null;
    None
}

/// The TLS a client arrived on, when its bind terminates TLS (`bind ...
/// ssl`); found by the address the client connected to, and only looked up
/// in frontends with such a bind.
fn acceptor_for<'a>(fe: &'a FrontendState, client: &Stream) -> Option<&'a crate::tls::Acceptor> {
    if !fe.cfg.binds.iter().any(|b| b.tls.is_some()) {
        return None;
    }
    let local = client.local_addr().ok()?;
    let ip = local.ip().to_canonical();
    // The listener the client came through: its exact address first, then
    // a wildcard of its family, then an IPv6 wildcard that takes IPv4 too;
    // the configured port first, then a port chosen by the kernel (port 0).
    let rank = |b: &crate::config::Bind| {
        let port = if b.addr.port() == local.port() {
            0
        } else if b.addr.port() == 0 {
            3
        } else {
            return None;
        };
        let addr = if b.addr.ip().to_canonical() == ip {
            0
        } else if b.addr.ip().is_unspecified() && b.addr.is_ipv4() == ip.is_ipv4() {
            1
        } else if b.addr.ip().is_unspecified() && b.addr.is_ipv6() && !b.v6only {
            2
        } else {
            return None;
        };
        Some(port + addr)
    };
    let bind = fe.cfg.binds.iter().filter_map(|b| rank(b).map(|r| (r, b))).min_by_key(|(r, _)| *r)?.1;
    bind.tls.as_deref()
}

/// The TLS handshake with a client, within `limit`; `None` (logged) when
/// it fails.
async fn accept_tls(client: &mut Stream, acceptor: &crate::tls::Acceptor, direct: bool, limit: Duration, log: &mut ConnLog) -> Option<()> {
    log.transport = "tls-terminated";
    match tokio::time::timeout(limit, crate::tls::accept(client, acceptor, direct)).await {
        Ok(Ok(())) => Some(()),
        Ok(Err(e)) => {
            log.termination = Termination::new(Cause::Client, Phase::Request);
            log.reason = Some(format!("client {e}").into());
            None
        }
        Err(_) => {
            log.termination = Termination::new(Cause::ClientTimeout, Phase::Request);
            log.reason = Some("client TLS handshake timed out".into());
            None
        }
    }
}

/// The encryption requests pglb answers itself on a TLS port: `S` and the
/// handshake to an SSLRequest, `N` to a GSSENCRequest. Returns the packet
/// that follows them (a StartupMessage or a CancelRequest, encrypted or
/// not).
async fn negotiate(
    fe: &FrontendState,
    client: &mut Stream,
    acceptor: &crate::tls::Acceptor,
    mut first: Packet,
    limit: Duration,
    log: &mut ConnLog,
) -> Option<Packet> {
    // GSSENCRequest, then SSLRequest, then the packet: three rounds at most.
    for _ in 0..3 {
        let answer = match startup::parse_first(first.packet()) {
            Ok(FirstPacket::GssEncRequest) if !client.is_tls() => b'N',
            Ok(FirstPacket::SslRequest) if !client.is_tls() => b'S',
            Ok(FirstPacket::SslRequest | FirstPacket::GssEncRequest) => {
                log.termination = Termination::new(Cause::Proxy, Phase::Request);
                log.reason = Some("an encryption request inside TLS".into());
                return None;
            }
            _ => return Some(first),
        };
        if first.pipelined() {
            // Bytes sent after an encryption request, before its answer,
            // could be injected by anyone on the path: PostgreSQL refuses
            // them (CVE-2021-23214), and so does pglb.
            log.termination = Termination::new(Cause::Proxy, Phase::Request);
            log.reason = Some("data sent after an encryption request, before its answer".into());
            return None;
        }
        if client.write_all(&[answer]).await.is_err() {
            log.termination = Termination::new(Cause::Client, Phase::Request);
            return None;
        }
        if answer == b'S' {
            accept_tls(client, acceptor, false, limit, log).await?;
        }
        first = match read_packet(client, limit, &[]).await {
            Ok(p) => p,
            Err(e) => return read_failed(fe, e, log),
        };
    }
    log.termination = Termination::new(Cause::Proxy, Phase::Request);
    log.reason = Some("too many encryption requests".into());
    None
}

/// Sends the client what the server answered so far (held until pglb knew
/// the server takes the session), and reads it as the relay would have:
/// message framing, BackendKeyData.
async fn forward_first_answer(rt: &Runtime, client: &mut Stream, opened: &mut Opened, answer: &[u8]) -> io::Result<()> {
    if answer.is_empty() {
        return Ok(());
    }
    client.write_all(answer).await?;
    opened.track.server(answer);
    if let Some(sniffer) = opened.sniffer.as_mut() {
        let key = &mut opened.key;
        sniffer.feed(answer, |e| {
            if let Event::Key(k) = e {
                *key = Some(k);
            }
        });
        if sniffer.done {
            opened.sniffer = None;
        }
    }
    if let Some(k) = opened.key {
        rt.cancel.register(k, opened.conn.addr);
    }
    Ok(())
}

/// Why a session could not start: the FATAL to send (no `code`: nothing
/// to send, or the server's own `answer`) and the termination state.
struct Refusal {
    code: &'static str,
    message: String,
    termination: Termination,
    answer: Vec<u8>,
}

impl From<connect::ConnectError> for Refusal {
    fn from(e: connect::ConnectError) -> Self {
        Refusal { code: e.sqlstate(), message: e.to_string(), termination: e.termination(), answer: Vec::new() }
    }
}

impl Refusal {
    fn stopping() -> Refusal {
        Refusal {
            code: sqlstate::ADMIN_SHUTDOWN,
            message: "shutting down".to_string(),
            termination: Termination::new(Cause::Proxy, Phase::Connect),
            answer: Vec::new(),
        }
    }

    fn quiet(termination: Termination) -> Refusal {
        Refusal { code: "", message: String::new(), termination, answer: Vec::new() }
    }
}

/// Connects and runs the startup exchange until a server takes the
/// session, replaying the client's startup on another server (or the same
/// one, as `retries` and `option redispatch` say) when one refuses before
/// anything reached the client. Returns the connection, whether the
/// startup is unencrypted, and the server's first answer (to forward).
#[allow(clippy::too_many_arguments)]
async fn start_on_a_server(
    rt: &Arc<Runtime>,
    be: &Arc<BackendState>,
    client: &mut Stream,
    peer: SocketAddr,
    first: &mut (Packet, FirstPacket),
    startup_limit: Duration,
    counts: &mut (u64, u64),
    attempts: &mut Attempts,
    log: &mut ConnLog,
) -> Result<(Connected, bool, Vec<u8>), Refusal> {
    let server_limit = be.cfg.timeout_server.unwrap_or(DEFAULT_STARTUP_TIMEOUT);
    loop {
        let pipelined = first.0.pipelined();
        let mut conn = tokio::select! {
            r = connect::connect(be, peer.ip(), attempts) => r?,
            _ = rt.stopping.cancelled() => return Err(Refusal::stopping()),
            _ = client_gone(client, pipelined) => return Err(Refusal::quiet(Termination::new(Cause::Client, Phase::Queue))),
        };
        let srv = conn.slot.server.clone();
        match handshake::exchange(client, &mut conn.stream, srv.cfg.tls.as_deref(), first, startup_limit, server_limit, counts, log).await {
            Exchange::Relay { plain, answer } => {
                srv.passive_ok();
                return Ok((conn, plain, answer));
            }
            Exchange::End(termination) => {
                log.server = srv.cfg.name.clone();
                return Err(Refusal::quiet(termination));
            }
            Exchange::Replay { reason, health, answer } => {
                let addr = conn.addr;
                drop(conn);
                tracing::debug!(backend = %be.cfg.name, server = %srv.cfg.name, %reason, "startup refused; replaying it");
                crate::state::counters::Counters::add(&srv.counters.conn_errors, 1);
                crate::state::counters::Counters::add(&be.counters.conn_errors, 1);
                if health {
                    srv.passive_error(be, &format!("startup refused: {reason}"));
                }
                if let Err(e) = attempts.failed(be, &srv, addr, format!("refused the startup: {reason}"), false, true) {
                    log.server = srv.cfg.name.clone();
                    return Err(Refusal { answer, ..Refusal::from(e) });
                }
            }
        }
    }
}

/// Why pglb ended a relaying session, for the log line's `reason`: which
/// idle timeout expired, or what closed it.
fn end_reason(rt: &Runtime, fe: &FrontendState, be: &BackendState, srv: &ServerState, termination: Termination) -> Option<Box<str>> {
    let idle = |side: &str, own: Option<std::time::Duration>| {
        let (name, t) = match be.cfg.timeout_tunnel {
            Some(t) => ("tunnel", Some(t)),
            None => (side, own),
        };
        t.map(|t| format!("idle longer than timeout {name} {}", crate::config::units::fmt_duration(t)).into())
    };
    match termination.cause {
        Cause::ClientTimeout => idle("client", fe.cfg.timeout_client),
        Cause::ServerTimeout => idle("server", be.cfg.timeout_server),
        Cause::Killed if rt.hard_stop.is_cancelled() => {
            Some("closed at hard stop (hard-stop-after expired after a stop or a reload, or a second SIGTERM)".into())
        }
        Cause::Killed if srv.health() == crate::state::Health::Down => Some("closed: server marked DOWN (on-marked-down shutdown-sessions)".into()),
        Cause::Killed => Some("closed by pglb (shutdown sessions, or on-marked-up shutdown-backup-sessions)".into()),
        _ => None,
    }
}

/// One client session, run as a task of its own on a session thread:
/// `permits` (the `maxconn` slots it holds) are released when it ends.
///
/// An async block rather than an async fn: an async fn keeps each argument
/// twice (as passed, and moved into its body), and this future is what
/// every idle session costs.
#[allow(clippy::manual_async_fn)]
pub fn handle<P: Send + 'static>(
    rt: Arc<Runtime>,
    fe: Arc<FrontendState>,
    client: std::net::TcpStream,
    peer: SocketAddr,
    permits: P,
) -> impl Future<Output = ()> + Send + 'static {
    async move {
        let _permits = &permits;
        match TcpStream::from_std(client) {
            Ok(client) => session(&rt, &fe, &mut Stream::Plain(client), &peer).await,
            Err(e) => tracing::warn!(%peer, error = %e, "a session thread cannot take the client; closed"),
        }
    }
}

async fn session(rt: &Arc<Runtime>, fe: &Arc<FrontendState>, client: &mut Stream, peer: &SocketAddr) {
    let peer = *peer;
    let started = Instant::now();
    let mut log =
        ConnLog { client: Some(peer), frontend: fe.cfg.name.clone(), transport: "plain", termination: Termination::NORMAL, ..Default::default() };
    let _fe_open = Open::new(&fe.counters);
    let _rt_open = Open::new(&rt.sessions);
    // The phase before the relay is boxed: a session spends its life in the
    // relay, and an unboxed phase's state would make every idle session's
    // future as large as that phase.
    if !fe.cfg.tcp_rules.is_empty()
        && let crate::config::tcprules::Verdict::Reject(_) = fe.cfg.tcp_rules.on_connection(peer, client.local_addr().ok(), &|b| usable(rt, b))
    {
        // HAProxy closes such a connection without a word or a log line
        // (these rules are its first line of defence against floods).
        log.silent = true;
        return finish(fe, client, &mut log, started, Load::default());
    }
    if !fe.cfg.log.tcplog && fe.cfg.logs.format.is_none() {
        // HAProxy's default traffic line in tcp mode, logged at accept.
        connect_line(fe, client, peer);
    }
    let Some(mut opened) = Box::pin(open(rt, fe, client, peer, &mut log)).await else {
        return finish(fe, client, &mut log, started, load(rt, fe, None));
    };
    let termination = serve(rt, fe, client, &mut opened, &mut log).await;
    let Opened { be, conn, key, .. } = opened;
    // Aborts count on the frontend, the backend and the server, as in HAProxy.
    let srv = &conn.slot.server.counters;
    let abrt = match termination.cause {
        Cause::Client | Cause::ClientTimeout => Some([&fe.counters.cli_abrt, &be.counters.cli_abrt, &srv.cli_abrt]),
        Cause::Server | Cause::ServerTimeout => Some([&fe.counters.srv_abrt, &be.counters.srv_abrt, &srv.srv_abrt]),
        _ => None,
    };
    for counter in abrt.into_iter().flatten() {
        crate::state::counters::Counters::add(counter, 1);
    }
    if let Some(reason) = end_reason(rt, fe, &be, &conn.slot.server, termination) {
        log.reason = Some(reason);
    }
    // (Read only for a traffic line: four counters per session otherwise.)
    let load = if crate::syslog::wanted(&fe.cfg.logs, crate::syslog::Severity::Info) {
        load(rt, fe, Some((&be, &conn.slot.server)))
    } else {
        Load::default()
    };
    // Frees the server slot (and wakes a queued session).
    drop(conn);
    if let Some(key) = key {
        rt.cancel.unregister(&key);
    }
    log.termination = termination;
    let total = started.elapsed().as_millis() as u64;
    crate::state::counters::Counters::add(&be.counters.session_time_ms, total);
    crate::state::counters::Counters::add(&be.counters.queue_time_ms, u64::from(log.queue_ms.unwrap_or(0)));
    finish(fe, client, &mut log, started, load);
}

/// Finishes a session's log line: every session, whatever phase it ended
/// in, is logged here (and sent to the frontend's log targets).
fn finish(fe: &FrontendState, client: &Stream, log: &mut ConnLog, started: Instant, load: Load) {
    log.total_ms = ms(started.elapsed());
    log.emit();
    log.send_traffic(&fe.cfg.logs, fe.cfg.log.tcplog, || client.local_addr().ok(), load);
}

/// The backend of the first `use_backend ... if|unless` rule whose condition
/// holds for this StartupMessage, if any.
fn switch(rt: &Runtime, fe: &FrontendState, peer: SocketAddr, local: Option<SocketAddr>, packet: &[u8]) -> Option<Arc<BackendState>> {
    use crate::config::tcprules::{Sample, holds};
    let nbsrv = |b: &str| usable(rt, b);
    let sample = Sample { peer, local, data: Some(packet), nbsrv: &nbsrv };
    let sw = fe.cfg.switching.iter().find(|sw| holds(&sw.cond, &sample))?;
    rt.backend(&sw.backend).cloned()
}

/// `nbsrv(B)`: the servers backend B may use now.
fn usable(rt: &Runtime, backend: &str) -> usize {
    rt.backend(backend).map_or(0, |be| be.usable.load().servers.len())
}

/// The counts a traffic line shows, now.
fn load(rt: &Runtime, fe: &FrontendState, on: Option<(&BackendState, &ServerState)>) -> Load {
    use crate::state::counters::Counters;
    Load {
        act: Counters::get(&rt.sessions.cur),
        fe: Counters::get(&fe.counters.cur),
        be: on.map_or(0, |(b, _)| Counters::get(&b.counters.cur)),
        srv: on.map_or(0, |(_, s)| Counters::get(&s.counters.cur)),
        srv_queue: 0,
        be_queue: on.map_or(0, |(b, _)| Counters::get(&b.counters.queue_cur)),
    }
}

/// HAProxy's line for a session accepted by a frontend without `option
/// tcplog` or `log-format`: `Connect from IP:PORT to IP:PORT (FE/TCP)`.
fn connect_line(fe: &FrontendState, client: &Stream, peer: SocketAddr) {
    use crate::syslog::{Severity, send, wanted};
    if wanted(&fe.cfg.logs, Severity::Info) {
        let local = client.local_addr().map_or("-".to_string(), |a| a.to_string());
        send(&fe.cfg.logs, Severity::Info, &format!("Connect from {peer} to {local} ({}/TCP)", fe.cfg.name));
    }
}

/// A client accepted on the reserved descriptor while pglb is out of file
/// descriptors: told so with SQLSTATE 53300 (as PostgreSQL says "too many
/// clients"), logged with HAProxy's resource termination state "RR".
pub async fn refuse_out_of_fds(fe: &FrontendState, client: TcpStream, peer: SocketAddr, error: &io::Error) {
    let mut client = Stream::Plain(client);
    let started = Instant::now();
    let mut log = ConnLog {
        client: Some(peer),
        frontend: fe.cfg.name.clone(),
        transport: "plain",
        termination: Termination::new(Cause::Resource, Phase::Request),
        ..Default::default()
    };
    let message = format!("pglb: out of file descriptors ({error}); raise its limit (ulimit -n, LimitNOFILE) or lower maxconn");
    log.reason = Some(message.as_str().into());
    crate::state::counters::Counters::add(&fe.counters.errors_sent, 1);
    let limit = Duration::from_secs(1);
    if let Ok(first) = read_packet(&mut client, limit, &[]).await
        && let Ok(parsed) = startup::parse_first(first.packet())
    {
        if let FirstPacket::Startup(s) = &parsed {
            note_startup(&mut log, s);
        }
        if !matches!(parsed, FirstPacket::Cancel(_)) {
            super::reject::refuse(&mut client, &parsed, first.rest(), sqlstate::TOO_MANY_CONNECTIONS, &message, limit).await;
        }
    }
    finish(fe, &client, &mut log, started, Load { fe: crate::state::counters::Counters::get(&fe.counters.cur), ..Load::default() });
}

pub(super) fn note_startup(log: &mut ConnLog, s: &Startup) {
    log.user = s.user.as_deref().map(Box::from);
    log.database = s.database.as_deref().or(s.user.as_deref()).map(Box::from);
    log.application_name = s.application_name.as_deref().map(Box::from);
}

/// Resolves when the client closes or errors, without consuming data it
/// may have sent (only peeks). It peeks only once the socket is reported
/// readable, so a connect that does not wait costs no system call here.
/// A client that sent more than its first packet (a request pipelined
/// behind it, already read by pglb) may have half-closed on purpose: then
/// only an error counts as gone, and what it sent is still delivered.
async fn client_gone(client: &Stream, pipelined: bool) {
    let Some(tcp) = client.tcp() else { return std::future::pending().await };
    if client.is_tls() {
        // What a TLS client sends is ciphertext (its close_notify too, in
        // TLS 1.3): only the end of the stream (EPOLLRDHUP) or an error says
        // it is gone. Readiness for data is cleared and waited for again.
        loop {
            match tcp.ready(tokio::io::Interest::READABLE).await {
                Ok(r) if r.is_read_closed() || r.is_error() => return,
                Ok(_) => {
                    let _ = tcp.try_io(tokio::io::Interest::READABLE, || Err::<(), _>(io::ErrorKind::WouldBlock.into()));
                }
                Err(_) => return,
            }
        }
    }
    let client = tcp;
    let mut b = [0u8; 1];
    loop {
        if client.readable().await.is_err() {
            return;
        }
        match client.peek(&mut b).await {
            Ok(0) if pipelined => std::future::pending::<()>().await,
            Ok(0) | Err(_) => return,
            // Pipelined data after the first packet: keep waiting.
            Ok(_) => std::future::pending::<()>().await,
        }
    }
}

/// The relay; returns the termination state. Everything large is borrowed
/// or boxed: this future is what an idle session costs, and an async fn
/// keeps room for its arguments for its whole life.
async fn serve(rt: &Arc<Runtime>, fe: &FrontendState, client: &mut Stream, opened: &mut Opened, log: &mut ConnLog) -> Termination {
    // Borrowed, not copied: this frame lives as long as the session.
    let Opened { be, conn, sniffer, key, track } = opened;
    let (addr, server, srv) = (&conn.addr, &mut conn.stream, &conn.slot.server);
    // A kill from here on ends the session once it relays.
    let kill = srv.kill.load_full();
    let seen = (kill.generation(), kill.drains());
    let _be_open = Open::new(&be.counters);
    if rt.hard_stop.is_cancelled() {
        // A hard stop cancels this before it throws the kill switches:
        // a session that noted its generation after the throw ends here.
        crate::state::counters::Counters::add(&srv.counters.killed, 1);
        return End::Killed.termination();
    }
    let (client_idle, server_idle) = match be.cfg.timeout_tunnel {
        Some(t) => (Some(t), Some(t)),
        None => (fe.cfg.timeout_client, be.cfg.timeout_server),
    };
    let timeouts = relay::Timeouts::new(client_idle, server_idle, fe.cfg.timeout_client_fin, be.cfg.timeout_server_fin);
    let mut relay = Relay { client, server, timeouts, sniffer: sniffer.take(), counters: [&fe.counters, &be.counters, &srv.counters], track };
    let outcome = relay
        .run(&kill, seen, &mut |e| {
            if let Event::Key(k) = e {
                rt.cancel.register(k, *addr);
                *key = Some(k);
            }
        })
        .await;
    if outcome.end == End::Killed {
        crate::state::counters::Counters::add(&srv.counters.killed, 1);
    }
    if outcome.end == End::Drained {
        // The server's session ends as a client's would: no "unexpected
        // EOF on client connection" in its log. The client sees the
        // connection close while idle, which pools and drivers handle as
        // a connection to replace, not as a failed query.
        // Boxed: this rare step must not add to every idle session's future.
        Box::pin(close_at_boundary(client, server)).await;
        log.reason = Some("closed at a transaction boundary: pglb is stopping or the server's sessions are drained".into());
    }
    log.bytes_in += outcome.bytes_in;
    log.bytes_out += outcome.bytes_out;
    outcome.end.termination()
}

/// Ends a drained session: Terminate to the server, then a FIN (never a
/// reset) to the client. lib/pq turns an EOF into driver.ErrBadConn, which
/// database/sql retries on another connection, but passes a reset on to the
/// application; a socket closed with unread bytes sends a reset, so
/// whatever the client sent meanwhile is read and discarded.
async fn close_at_boundary(client: &mut Stream, server: &mut Stream) {
    let _ = tokio::time::timeout(Duration::from_secs(1), server.write_all(&pg::TERMINATE)).await;
    let _ = tokio::time::timeout(Duration::from_secs(1), client.shutdown()).await;
    client.discard_pending();
}

/// Counts a session as open in `counters` for as long as it lives.
struct Open<'a>(&'a crate::state::counters::Counters);

impl<'a> Open<'a> {
    fn new(c: &'a crate::state::counters::Counters) -> Self {
        c.open();
        Open(c)
    }
}

impl Drop for Open<'_> {
    fn drop(&mut self) {
        self.0.close();
    }
}

/// Accepted connection options (TCP_NODELAY, keepalive).
pub fn prepare_client(stream: &std::net::TcpStream, keepalive: Option<&crate::config::Keepalive>) -> io::Result<()> {
    stream.set_nodelay(true)?;
    if let Some(k) = keepalive {
        k.apply(&socket2::SockRef::from(stream))?;
    }
    Ok(())
}

/// Reads and parses the packet a client sends after pglb declined
/// encryption, starting with the bytes it sent early (`carry`); returns it
/// with any bytes after it. `None` when it is not a PostgreSQL packet or
/// never comes.
pub(super) async fn read_first_after_no(client: &mut Stream, limit: Duration, carry: &[u8]) -> Option<(FirstPacket, Vec<u8>)> {
    let packet = read_packet(client, limit, carry).await.ok()?;
    Some((startup::parse_first(packet.packet()).ok()?, packet.rest().to_vec()))
}

#[cfg(test)]
mod tests {
    /// What an idle session costs is mostly this future: it must not grow
    /// back (docs/performance.md, idle memory per client connection).
    #[test]
    fn the_session_future_stays_small() {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        rt.block_on(async {
            let cfg = crate::config::parse_str(std::path::Path::new("x.cfg"), "listen pg\n    bind 127.0.0.1:0\n    server a 127.0.0.1:1\n")
                .unwrap()
                .config;
            let r = crate::state::Runtime::new(std::sync::Arc::new(cfg));
            let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let c = tokio::net::TcpStream::connect(l.local_addr().unwrap()).await.unwrap();
            let peer = c.local_addr().unwrap();
            let permits: (super::super::listener::Permit, super::super::listener::Permit) = (None, None);
            let size = std::mem::size_of_val(&super::handle(r.clone(), r.frontends[0].clone(), c.into_std().unwrap(), peer, permits));
            // 1,288 bytes (release) with today's compiler; 1,912 (in two
            // allocations) before the session became its own task, the
            // relay grouped its state, one waiter replaced the kill and
            // stop signals and the log record shrank; 2,560 before the
            // relay and the startup phase stopped keeping copies of their
            // arguments.
            //
            // The bound is not arbitrary. The task that holds the session is
            // aligned to 128 bytes: its header and trailer (80 bytes), 40
            // bytes of wrappers and bookkeeping and this future round up to
            // 1,408 bytes while this is at most 1,288, to 1,536 above
            // (`pglb bench --only idle`: 2.40 KiB per idle session at 1,408
            // with 1,000 held; 2.52 KiB at 1,536 and 2.66 at 1,664 with 500).
            // A debug build (plain `cargo test`) lays it out 24 bytes larger.
            let bound = if cfg!(debug_assertions) { 1_312 } else { 1_288 };
            eprintln!("the session future: {size} bytes");
            assert!(size <= bound, "the session future grew to {size} bytes");
        });
    }
}
