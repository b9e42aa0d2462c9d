//! Just enough of the PostgreSQL wire protocol (v3) for a layer-4 proxy: the
//! client's first packet, the server's startup answer, and ErrorResponse.
//! See PostgreSQL's protocol-message-formats documentation.

pub mod sasl;
pub mod startup;

/// `SSLRequest` code (1234.5679).
pub const SSL_REQUEST: u32 = 80877103;
/// A whole SSLRequest: length 8, then the code.
pub const SSL_REQUEST_PACKET: [u8; 8] = [0, 0, 0, 8, 0x04, 0xd2, 0x16, 0x2f];
/// `GSSENCRequest` code (1234.5680).
pub const GSSENC_REQUEST: u32 = 80877104;
/// `CancelRequest` code (1234.5678).
pub const CANCEL_REQUEST: u32 = 80877102;
/// Protocol 3.0 in a StartupMessage.
pub const PROTOCOL_3_0: u32 = 3 << 16;
/// Largest first packet pglb accepts; PostgreSQL's own limit is 10000 bytes.
pub const MAX_STARTUP_LEN: usize = 10_000;

/// SQLSTATE codes pglb sends in its own ErrorResponses.
pub mod sqlstate {
    /// No server could be reached (connection_failure).
    pub const CONNECTION_FAILURE: &str = "08006";
    /// Too many clients: maxconn or queue limits (too_many_connections).
    pub const TOO_MANY_CONNECTIONS: &str = "53300";
    /// pglb is stopping (admin_shutdown).
    pub const ADMIN_SHUTDOWN: &str = "57P01";
    /// The client spoke something else than PostgreSQL (protocol_violation).
    pub const PROTOCOL_VIOLATION: &str = "08P01";
    /// invalid_authorization_specification: what pg_hba.conf's refusal says.
    pub const INVALID_AUTHORIZATION: &str = "28000";
}

/// What a SQL-level check learns from one server (health checks, healthd).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PgInfo {
    pub primary: bool,
    /// Replay lag in seconds (0 when everything received is replayed).
    pub lag_seconds: f64,
    /// Bytes behind the primary (or received-but-not-replayed bytes when no
    /// primary is known to pglb).
    pub lag_bytes: u64,
    /// A WAL receiver is streaming (replicas only).
    pub streaming: bool,
    /// The server's current (primary) or replayed (replica) WAL position.
    pub lsn: u64,
}

/// Builds an ErrorResponse message with severity FATAL.
pub fn fatal(code: &str, message: &str, detail: Option<&str>, hint: Option<&str>) -> Vec<u8> {
    let mut body = Vec::with_capacity(64 + message.len());
    for (tag, value) in [(b'S', Some("FATAL")), (b'V', Some("FATAL")), (b'C', Some(code)), (b'M', Some(message)), (b'D', detail), (b'H', hint)] {
        if let Some(v) = value {
            body.push(tag);
            // A NUL inside a field would end it early; the fields are ours, but be safe.
            body.extend(v.bytes().filter(|b| *b != 0));
            body.push(0);
        }
    }
    body.push(0);
    self::message(b'E', &body)
}

/// A backend or frontend message: its type byte, its length, its body.
pub fn message(kind: u8, body: &[u8]) -> Vec<u8> {
    let mut msg = Vec::with_capacity(body.len() + 5);
    msg.push(kind);
    msg.extend_from_slice(&((body.len() + 4) as u32).to_be_bytes());
    msg.extend_from_slice(body);
    msg
}

/// The SQLSTATE ('C') and message ('M') of an ErrorResponse body (after
/// the type byte and length); empty strings for missing fields.
pub fn error_fields(body: &[u8]) -> (String, String) {
    let (mut code, mut message) = (String::new(), String::new());
    for field in body.split(|b| *b == 0) {
        match field.split_first() {
            Some((b'C', v)) => code = String::from_utf8_lossy(v).into_owned(),
            Some((b'M', v)) => message = String::from_utf8_lossy(v).into_owned(),
            _ => {}
        }
    }
    (code, message)
}

/// Builds a StartupMessage (protocol 3.0) with the given parameters.
pub fn startup_message(params: &[(&str, &str)]) -> Vec<u8> {
    let mut body = Vec::new();
    body.extend_from_slice(&PROTOCOL_3_0.to_be_bytes());
    for (k, v) in params {
        body.extend_from_slice(k.as_bytes());
        body.push(0);
        body.extend_from_slice(v.as_bytes());
        body.push(0);
    }
    body.push(0);
    let mut msg = ((body.len() + 4) as u32).to_be_bytes().to_vec();
    msg.extend_from_slice(&body);
    msg
}

/// The 5-byte Terminate message.
pub const TERMINATE: [u8; 5] = [b'X', 0, 0, 0, 4];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fatal_layout() {
        let m = fatal("08006", "no server", None, None);
        assert_eq!(m[0], b'E');
        let len = u32::from_be_bytes([m[1], m[2], m[3], m[4]]) as usize;
        assert_eq!(len + 1, m.len());
        assert!(m.windows(6).any(|w| w == b"C08006"));
        assert_eq!(*m.last().unwrap(), 0);
    }

    #[test]
    fn error_fields_are_read_back() {
        let m = fatal("57P03", "the database system is shutting down", Some("d"), None);
        assert_eq!(error_fields(&m[5..]), ("57P03".to_string(), "the database system is shutting down".to_string()));
    }

    #[test]
    fn startup_layout() {
        let m = startup_message(&[("user", "postgres")]);
        assert_eq!(hex(&m), "00000017000300007573657200706f7374677265730000");
    }

    fn hex(b: &[u8]) -> String {
        b.iter().map(|x| format!("{x:02x}")).collect()
    }
}
