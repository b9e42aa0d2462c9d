//! The startup exchange with one server, held until the server answers.
//!
//! The client's first packet (and any SSL/GSS negotiation) goes to the
//! server, but nothing the server says reaches the client before pglb knows
//! that the server takes the session. A server that refuses before
//! authentication starts can then be replaced by another one, and the
//! client never sees the refusal (startup replay): nothing of that session
//! has reached it, so the same packet on another server is a fresh start.
//!
//! Replayed (see [`replayable`]): a close before any answer, and an
//! ErrorResponse whose SQLSTATE says this server takes no clients now.
//! Not replayable: anything inside TLS (the client's TLS session is with the
//! server), and every other answer, which is the client's business
//! (authentication failures, unknown databases...).

use super::relay;
use super::session::{Packet, ReadError, note_startup, read_packet};
use crate::pg::startup::{self, FirstPacket};
use crate::proxy::log::{Cause, ConnLog, Phase, Termination};
use crate::tls::Stream;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Largest ErrorResponse read to decide on a replay; a longer first answer
/// is passed on as it is.
const MAX_ERROR_ANSWER: usize = 16 * 1024;

/// How one server answered the session's start.
#[derive(Debug)]
pub enum Exchange {
    /// The server takes the session. `answer` is what it said so far (to
    /// forward to the client); `plain` when the startup is unencrypted, so
    /// pglb can read BackendKeyData.
    Relay { plain: bool, answer: Vec<u8> },
    /// The server refused before anything reached the client: another
    /// attempt may take the same packet. `health` when the refusal says
    /// the server takes no clients (it counts for `observe layer4`);
    /// `answer` is the server's ErrorResponse (empty for a close), which the
    /// client gets if no attempt is left: the server's own words, as
    /// without pglb.
    Replay { reason: String, health: bool, answer: Vec<u8> },
    /// The session ends here, with this termination state.
    End(Termination),
}

/// SQLSTATEs of a startup refusal that another server (or this one,
/// later) may not give: the server is stopping, starting, in recovery
/// without hot standby, crashed, or full. All but the last say the server
/// takes no clients now.
pub fn replayable(code: &str) -> Option<bool> {
    match code {
        // admin_shutdown, crash_shutdown, cannot_connect_now, connection_failure
        "57P01" | "57P02" | "57P03" | "08006" => Some(true),
        // too_many_connections: healthy but full.
        "53300" => Some(false),
        _ => None,
    }
}

/// Sends `first` (the client's first packet, replaced by the StartupMessage
/// once the client was told 'N' to encryption) to `server` and waits for
/// its answer. Bytes read from the client are added to `bytes_in`, bytes
/// written to it to `bytes_out`.
#[allow(clippy::too_many_arguments)]
pub async fn exchange(
    client: &mut Stream,
    server: &mut Stream,
    tls: Option<&crate::tls::Connector>,
    first: &mut (Packet, FirstPacket),
    client_limit: Duration,
    server_limit: Duration,
    counts: &mut (u64, u64),
    log: &mut ConnLog,
) -> Exchange {
    // libpq may send GSSENCRequest, then SSLRequest, then the StartupMessage.
    for _ in 0..3 {
        // `server ... ssl`: a startup pglb reads goes to the server in TLS.
        // (A client's own TLS, passed through, is the client's business.)
        if let (Some(tls), FirstPacket::Startup(_)) = (tls, &first.1)
            && !server.is_tls()
        {
            match tokio::time::timeout(server_limit, crate::tls::connect(server, tls)).await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => return Exchange::Replay { reason: e.to_string(), health: true, answer: Vec::new() },
                Err(_) => return Exchange::Replay { reason: "TLS negotiation timed out".into(), health: true, answer: Vec::new() },
            }
        }
        if server.write_all(&first.0.bytes).await.is_err() {
            return Exchange::Replay { reason: "closed the connection before the startup was sent".into(), health: true, answer: Vec::new() };
        }
        let encrypted = match first.1 {
            FirstPacket::SslRequest => (b'S', "tls"),
            FirstPacket::GssEncRequest => (b'G', "gssenc"),
            _ => return startup_answer(server, server_limit).await,
        };
        let mut answer = [0u8; 1];
        match tokio::time::timeout(server_limit, server.read_exact(&mut answer)).await {
            Err(_) => return Exchange::End(Termination::new(Cause::ServerTimeout, Phase::Data)),
            Ok(Err(_)) => {
                return Exchange::Replay {
                    reason: "closed the connection before answering the encryption request".into(),
                    health: true,
                    answer: Vec::new(),
                };
            }
            Ok(Ok(_)) => {}
        }
        if client.write_all(&answer).await.is_err() {
            return Exchange::End(Termination::new(Cause::Client, Phase::Data));
        }
        counts.1 += 1;
        if answer[0] == encrypted.0 {
            log.transport = encrypted.1;
            return Exchange::Relay { plain: false, answer: Vec::new() };
        }
        if answer[0] != b'N' || first.0.pipelined() {
            // An old server's ErrorResponse, or a client that did not wait
            // for the answer (what it sent is already at the server): pass
            // the rest through untouched.
            return Exchange::Relay { plain: false, answer: Vec::new() };
        }
        let packet = match read_packet(client, client_limit, &[]).await {
            Ok(p) => p,
            Err(ReadError::Timeout) => return Exchange::End(Termination::new(Cause::ClientTimeout, Phase::Request)),
            Err(_) => return Exchange::End(Termination::new(Cause::Client, Phase::Request)),
        };
        counts.0 += packet.bytes.len() as u64;
        match startup::parse_first(packet.packet()) {
            Ok(parsed) => {
                if let FirstPacket::Startup(s) = &parsed {
                    note_startup(log, s);
                }
                *first = (packet, parsed);
            }
            Err(_) => {
                // Not ours to judge after negotiation: let the server answer.
                if server.write_all(&packet.bytes).await.is_err() {
                    return Exchange::End(Termination::new(Cause::Server, Phase::Data));
                }
                return Exchange::Relay { plain: false, answer: Vec::new() };
            }
        }
    }
    Exchange::End(Termination::new(Cause::Proxy, Phase::Request))
}

/// Reads the server's first answer to a StartupMessage: one read, or a
/// whole ErrorResponse when it starts with one.
async fn startup_answer(server: &mut Stream, limit: Duration) -> Exchange {
    let read = async {
        let mut answer = Vec::new();
        loop {
            match relay::read_into(server, &mut answer, 4096).await {
                Ok(0) | Err(_) if answer.is_empty() => {
                    return Exchange::Replay { reason: "closed the connection before answering the startup".into(), health: true, answer };
                }
                Ok(0) | Err(_) => return Exchange::Relay { plain: true, answer },
                Ok(_) => {}
            }
            if answer[0] != b'E' {
                return Exchange::Relay { plain: true, answer };
            }
            if answer.len() >= 5 {
                let len = u32::from_be_bytes([answer[1], answer[2], answer[3], answer[4]]) as usize + 1;
                if len > MAX_ERROR_ANSWER {
                    return Exchange::Relay { plain: true, answer };
                }
                if answer.len() >= len {
                    let (code, message) = crate::pg::error_fields(&answer[5..len]);
                    return match replayable(&code) {
                        Some(health) => {
                            answer.truncate(len);
                            Exchange::Replay { reason: format!("{message} ({code})"), health, answer }
                        }
                        None => Exchange::Relay { plain: true, answer },
                    };
                }
            }
        }
    };
    tokio::time::timeout(limit, read).await.unwrap_or(Exchange::End(Termination::new(Cause::ServerTimeout, Phase::Data)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn which_refusals_replay() {
        assert_eq!(replayable("57P03"), Some(true), "the database system is shutting down / starting up");
        assert_eq!(replayable("57P01"), Some(true));
        assert_eq!(replayable("53300"), Some(false), "full, not broken");
        assert_eq!(replayable("28P01"), None, "a wrong password is the client's");
        assert_eq!(replayable("3D000"), None, "an unknown database is the client's");
    }
}
