//! One client connection, from its first packet to its log line.
//!
//! Phases: read the client's first packet (bounded in size and time) ->
//! CancelRequest: route it and close; otherwise get a server connection
//! (or answer with a PostgreSQL FATAL) -> replay the first packet and the
//! SSL/GSS negotiation -> relay, watching the unencrypted startup answer
//! for BackendKeyData -> release the slot, log.

use super::cancel::Delivery;
use super::connect::{self, Attempts, Connected};
use super::log::{ConnLog, ms};
use super::relay::{self, End, Relay};
use super::sniff::{Event, Sniffer};
use crate::pg::startup::{self, CancelKey, FirstPacket, Startup};
use crate::pg::{self, sqlstate};
use crate::state::{FrontendState, Runtime};
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
enum ReadError {
    /// Closed before sending anything.
    Empty,
    Timeout,
    Io,
    NotPostgres(String),
}

/// Reads one length-prefixed first packet.
async fn read_packet(client: &mut TcpStream, limit: Duration) -> Result<Vec<u8>, ReadError> {
    let read = async {
        let mut header = [0u8; 4];
        let mut got = 0;
        while got < 4 {
            match client.read(&mut header[got..]).await {
                Ok(0) if got == 0 => return Err(ReadError::Empty),
                Err(_) if got == 0 => return Err(ReadError::Empty),
                Ok(0) => return Err(ReadError::Io),
                Ok(n) => got += n,
                Err(_) => return Err(ReadError::Io),
            }
        }
        let len = startup::packet_len(header).map_err(|e| ReadError::NotPostgres(e.to_string()))?;
        let mut packet = vec![0u8; len];
        packet[..4].copy_from_slice(&header);
        client.read_exact(&mut packet[4..]).await.map_err(|_| ReadError::Io)?;
        Ok(packet)
    };
    tokio::time::timeout(limit, read).await.unwrap_or(Err(ReadError::Timeout))
}

pub async fn handle(rt: Arc<Runtime>, fe: Arc<FrontendState>, mut client: TcpStream, peer: SocketAddr) {
    let started = Instant::now();
    let mut log = ConnLog { client: Some(peer), frontend: fe.cfg.name.clone(), transport: "plain", termination: "--", ..Default::default() };
    let backend = fe.backend.clone();
    if let Some(be) = &backend {
        log.backend = be.cfg.name.clone();
    }
    let startup_limit = fe.cfg.timeout_client.unwrap_or(DEFAULT_STARTUP_TIMEOUT);
    let _fe_open = Open::new(&fe.counters);
    let _rt_open = Open::new(&rt.sessions);

    let first = match read_packet(&mut client, startup_limit).await {
        Ok(p) => p,
        Err(e) => {
            let e_null = matches!(e, ReadError::Empty);
            log.termination = match e {
                ReadError::Empty => "CR",
                ReadError::Timeout => "cR",
                ReadError::Io => "CR",
                ReadError::NotPostgres(_) => "PR",
            };
            if let ReadError::NotPostgres(why) = &e {
                crate::state::counters::Counters::add(&fe.counters.req_errors, 1);
                log.reason = Some(format!("not a PostgreSQL client: {why}"));
            }
            log.total_ms = ms(started.elapsed());
            // option dontlognull: a connection that sent nothing at all
            // (a port scan, a TCP health check) is not logged.
            if !(fe.cfg.log.dontlognull && e_null) {
                log.emit();
            }
            return;
        }
    };
    let parsed = match startup::parse_first(&first) {
        Ok(p) => p,
        Err(e) => {
            crate::state::counters::Counters::add(&fe.counters.req_errors, 1);
            log.termination = "PR";
            log.reason = Some(format!("not a PostgreSQL client: {e}"));
            let msg = pg::fatal(sqlstate::PROTOCOL_VIOLATION, &format!("pglb: {e}"), None, None);
            let _ = tokio::time::timeout(Duration::from_secs(1), client.write_all(&msg)).await;
            log.total_ms = ms(started.elapsed());
            log.emit();
            return;
        }
    };
    if let FirstPacket::Cancel(key) = parsed {
        log.transport = "cancel";
        let delivery = rt.cancel.deliver(key, &first, backend.as_deref()).await;
        log.reason = Some(format!("cancel request {}", delivery.as_str()));
        if delivery == Delivery::Broadcast {
            log.server = "*".into();
        }
        log.total_ms = ms(started.elapsed());
        log.emit();
        return;
    }
    if let FirstPacket::Startup(s) = &parsed {
        note_startup(&mut log, s);
    }

    let attempt = if rt.stopping.is_cancelled() {
        Err((sqlstate::ADMIN_SHUTDOWN, "pglb is shutting down".to_string(), "PC"))
    } else {
        match &backend {
            None => Err((sqlstate::CONNECTION_FAILURE, format!("frontend \"{}\" has no backend", fe.cfg.name), "PC")),
            Some(be) => {
                let mut attempts = Attempts::default();
                let r = tokio::select! {
                    r = connect::connect(be, peer.ip(), &mut attempts) => r.map_err(|e| {
                        let termination = e.termination();
                        let code = e.sqlstate();
                        (code, e.to_string(), termination)
                    }),
                    _ = rt.stopping.cancelled() => Err((sqlstate::ADMIN_SHUTDOWN, "pglb is shutting down".to_string(), "PC")),
                    _ = client_gone(&client) => Err((sqlstate::CONNECTION_FAILURE, "client left while waiting for a server".into(), "CQ")),
                };
                log.retries = attempts.retries;
                log.redispatched = attempts.redispatched;
                log.queue_ms = Some(ms(attempts.queue_wait));
                r
            }
        }
    };
    let conn = match attempt {
        Ok(c) => c,
        Err((code, message, termination)) => {
            log.termination = termination;
            log.reason = Some(message.clone());
            if let Some(be) = &backend {
                crate::state::counters::Counters::add(&be.counters.errors_sent, 1);
            }
            crate::state::counters::Counters::add(&fe.counters.errors_sent, 1);
            if termination != "CQ" {
                super::reject::refuse(&mut client, &parsed, code, &format!("pglb: {message}"), startup_limit).await;
            }
            log.total_ms = ms(started.elapsed());
            log.emit();
            return;
        }
    };
    let be = backend.expect("connected implies a backend");
    log.server = conn.slot.server.cfg.name.clone();
    log.connect_ms = Some(ms(conn.connect_time));

    let outcome = serve(&rt, &fe, &be, client, conn, first, parsed, &mut log).await;
    if let Some(key) = outcome.key {
        rt.cancel.unregister(&key);
    }
    log.termination = outcome.termination;
    let abrt = match outcome.termination {
        "CD" | "cD" => Some((&fe.counters.cli_abrt, &be.counters.cli_abrt)),
        "SD" | "sD" => Some((&fe.counters.srv_abrt, &be.counters.srv_abrt)),
        _ => None,
    };
    if let Some((f, b)) = abrt {
        crate::state::counters::Counters::add(f, 1);
        crate::state::counters::Counters::add(b, 1);
    }
    let total = started.elapsed().as_millis() as u64;
    crate::state::counters::Counters::add(&be.counters.session_time_ms, total);
    crate::state::counters::Counters::add(&be.counters.queue_time_ms, log.queue_ms.unwrap_or(0) as u64);
    log.bytes_in = outcome.bytes_in;
    log.bytes_out = outcome.bytes_out;
    log.total_ms = ms(started.elapsed());
    log.emit();
}

/// A client accepted on the reserved descriptor while pglb is out of file
/// descriptors: told so with SQLSTATE 53300 (as PostgreSQL says "too many
/// clients"), logged with HAProxy's resource termination state "RR".
pub async fn refuse_out_of_fds(fe: &FrontendState, mut client: TcpStream, peer: SocketAddr, error: &io::Error) {
    let started = Instant::now();
    let mut log = ConnLog { client: Some(peer), frontend: fe.cfg.name.clone(), transport: "plain", termination: "RR", ..Default::default() };
    let message = format!("pglb: out of file descriptors ({error}); raise its limit (ulimit -n, LimitNOFILE) or lower maxconn");
    log.reason = Some(message.clone());
    crate::state::counters::Counters::add(&fe.counters.errors_sent, 1);
    let limit = Duration::from_secs(1);
    if let Ok(first) = read_packet(&mut client, limit).await
        && let Ok(parsed) = startup::parse_first(&first)
    {
        if let FirstPacket::Startup(s) = &parsed {
            note_startup(&mut log, s);
        }
        if !matches!(parsed, FirstPacket::Cancel(_)) {
            super::reject::refuse(&mut client, &parsed, sqlstate::TOO_MANY_CONNECTIONS, &message, limit).await;
        }
    }
    log.total_ms = ms(started.elapsed());
    log.emit();
}

fn note_startup(log: &mut ConnLog, s: &Startup) {
    log.user = s.user.clone();
    log.database = s.database.clone().or_else(|| s.user.clone());
    log.application_name = s.application_name.clone();
}

/// Resolves when the client closes or errors, without consuming data it
/// may have sent (only peeks).
async fn client_gone(client: &TcpStream) {
    let mut b = [0u8; 1];
    loop {
        match client.peek(&mut b).await {
            Ok(0) | Err(_) => return,
            // Pipelined data after the first packet: keep waiting.
            Ok(_) => std::future::pending::<()>().await,
        }
    }
}

struct Served {
    termination: &'static str,
    bytes_in: u64,
    bytes_out: u64,
    key: Option<CancelKey>,
}

#[allow(clippy::too_many_arguments)]
async fn serve(
    rt: &Arc<Runtime>,
    fe: &FrontendState,
    be: &crate::state::BackendState,
    mut client: TcpStream,
    conn: Connected,
    first: Vec<u8>,
    parsed: FirstPacket,
    log: &mut ConnLog,
) -> Served {
    let Connected { stream: mut server, addr, slot, .. } = conn;
    let srv = slot.server.clone();
    let mut kill = srv.kill.subscribe();
    kill.mark_unchanged();
    let _be_open = Open::new(&be.counters);
    let mut bytes_in = first.len() as u64;
    let mut bytes_out = 0u64;
    let startup_limit = fe.cfg.timeout_client.unwrap_or(DEFAULT_STARTUP_TIMEOUT);

    // Replay the negotiation: SSLRequest / GSSENCRequest answers decide
    // whether the startup answer will be readable.
    let negotiated =
        negotiate(&mut client, &mut server, first, parsed, startup_limit, be.cfg.timeout_server, &mut bytes_in, &mut bytes_out, log).await;
    let result = match negotiated {
        Err(termination) => Served { termination, bytes_in, bytes_out, key: None },
        Ok(plain) => {
            let timeouts = match be.cfg.timeout_tunnel {
                Some(t) => {
                    relay::Timeouts { client: Some(t), server: Some(t), client_fin: fe.cfg.timeout_client_fin, server_fin: be.cfg.timeout_server_fin }
                }
                None => relay::Timeouts {
                    client: fe.cfg.timeout_client,
                    server: be.cfg.timeout_server,
                    client_fin: fe.cfg.timeout_client_fin,
                    server_fin: be.cfg.timeout_server_fin,
                },
            };
            let relay = Relay {
                client: &mut client,
                server: &mut server,
                timeouts,
                sniffer: plain.then(Sniffer::default),
                counters: [&fe.counters, &be.counters, &srv.counters],
                kill,
                hard_stop: rt.hard_stop.clone(),
            };
            let mut key = None;
            let outcome = relay
                .run(|e| {
                    if let Event::Key(k) = e {
                        rt.cancel.register(k, addr);
                        key = Some(k);
                    }
                })
                .await;
            if outcome.end == End::Killed {
                crate::state::counters::Counters::add(&srv.counters.killed, 1);
            }
            Served { termination: outcome.end.code(), bytes_in: bytes_in + outcome.bytes_in, bytes_out: bytes_out + outcome.bytes_out, key }
        }
    };
    drop(slot);
    result
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

/// Forwards the first packet and any SSL/GSS negotiation. Returns whether
/// the rest of the startup is unencrypted (so BackendKeyData is visible).
#[allow(clippy::too_many_arguments)]
async fn negotiate(
    client: &mut TcpStream,
    server: &mut TcpStream,
    mut packet: Vec<u8>,
    mut parsed: FirstPacket,
    limit: Duration,
    server_timeout: Option<Duration>,
    bytes_in: &mut u64,
    bytes_out: &mut u64,
    log: &mut ConnLog,
) -> Result<bool, &'static str> {
    // libpq may send GSSENCRequest, then SSLRequest, then the StartupMessage.
    for _ in 0..3 {
        server.write_all(&packet).await.map_err(|_| "SD")?;
        let (encrypted_answer, transport) = match parsed {
            FirstPacket::SslRequest => (b'S', "tls"),
            FirstPacket::GssEncRequest => (b'G', "gssenc"),
            _ => return Ok(true),
        };
        let mut answer = [0u8; 1];
        let read = server.read_exact(&mut answer);
        tokio::time::timeout(server_timeout.unwrap_or(DEFAULT_STARTUP_TIMEOUT), read).await.map_err(|_| "sD")?.map_err(|_| "SD")?;
        client.write_all(&answer).await.map_err(|_| "CD")?;
        *bytes_out += 1;
        if answer[0] == encrypted_answer {
            log.transport = transport;
            return Ok(false);
        }
        if answer[0] != b'N' {
            // An old server's ErrorResponse: pass the rest through untouched.
            return Ok(false);
        }
        packet = match read_packet(client, limit).await {
            Ok(p) => p,
            Err(ReadError::Timeout) => return Err("cR"),
            Err(_) => return Err("CR"),
        };
        *bytes_in += packet.len() as u64;
        parsed = match startup::parse_first(&packet) {
            Ok(p) => p,
            Err(_) => {
                // Not ours to judge after negotiation: let the server answer.
                server.write_all(&packet).await.map_err(|_| "SD")?;
                return Ok(false);
            }
        };
        if let FirstPacket::Startup(s) = &parsed {
            note_startup(log, s);
        }
    }
    Err("PR")
}

/// Accepted connection options (TCP_NODELAY, keepalive).
pub fn prepare_client(stream: &TcpStream, keepalive: Option<&crate::config::Keepalive>) -> io::Result<()> {
    stream.set_nodelay(true)?;
    if let Some(k) = keepalive {
        k.apply(&socket2::SockRef::from(stream))?;
    }
    Ok(())
}

/// Reads and parses the packet a client sends after pglb declined
/// encryption; `None` when it is not a PostgreSQL packet or never comes.
pub(super) async fn read_first_after_no(client: &mut TcpStream, limit: Duration) -> Option<FirstPacket> {
    let packet = read_packet(client, limit).await.ok()?;
    startup::parse_first(&packet).ok()
}
