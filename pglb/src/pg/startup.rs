//! The client's first packet: SSLRequest, GSSENCRequest, CancelRequest or
//! StartupMessage. All start with a 4-byte length (itself included) and a
//! 4-byte code or protocol version.

use super::{CANCEL_REQUEST, GSSENC_REQUEST, MAX_STARTUP_LEN, PROTOCOL_3_0, SSL_REQUEST};

/// The identity of a backend session, as sent in BackendKeyData and in a
/// CancelRequest.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct CancelKey {
    pub pid: u32,
    pub secret: u32,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FirstPacket {
    SslRequest,
    GssEncRequest,
    Cancel(CancelKey),
    Startup(Startup),
}

/// A StartupMessage's parameters that matter for logs.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Startup {
    pub user: Option<String>,
    pub database: Option<String>,
    pub application_name: Option<String>,
    /// `replication=...` present: a walsender connection.
    pub replication: bool,
}

/// Why a first packet is not PostgreSQL.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PacketError {
    #[error("packet length {0} is outside 8..={MAX_STARTUP_LEN}")]
    BadLength(u32),
    #[error("unsupported protocol version {major}.{minor}")]
    BadProtocol { major: u16, minor: u16 },
    #[error("malformed startup parameters")]
    BadParameters,
}

/// Reads the length prefix; `Err` when it cannot be a PostgreSQL first packet.
pub fn packet_len(header: [u8; 4]) -> Result<usize, PacketError> {
    let len = u32::from_be_bytes(header);
    if !(8..=MAX_STARTUP_LEN as u32).contains(&len) {
        return Err(PacketError::BadLength(len));
    }
    Ok(len as usize)
}

/// Parses a whole first packet (length prefix included).
pub fn parse_first(packet: &[u8]) -> Result<FirstPacket, PacketError> {
    let code = u32::from_be_bytes([packet[4], packet[5], packet[6], packet[7]]);
    match code {
        SSL_REQUEST if packet.len() == 8 => Ok(FirstPacket::SslRequest),
        GSSENC_REQUEST if packet.len() == 8 => Ok(FirstPacket::GssEncRequest),
        CANCEL_REQUEST if packet.len() == 16 => Ok(FirstPacket::Cancel(CancelKey {
            pid: u32::from_be_bytes([packet[8], packet[9], packet[10], packet[11]]),
            secret: u32::from_be_bytes([packet[12], packet[13], packet[14], packet[15]]),
        })),
        _ if code >> 16 == 3 => parse_params(&packet[8..]).map(FirstPacket::Startup),
        _ => Err(PacketError::BadProtocol { major: (code >> 16) as u16, minor: code as u16 }),
    }
}

/// One parameter of a StartupMessage (the whole packet, length first), as
/// the client sent it; `None` for another packet or a missing parameter.
/// `database` defaults to `user`, as PostgreSQL has it.
pub fn param(packet: &[u8], name: &str) -> Option<String> {
    if packet.len() < 8 || u32::from_be_bytes([packet[4], packet[5], packet[6], packet[7]]) >> 16 != 3 {
        return None;
    }
    let mut fields = packet[8..].split(|b| *b == 0);
    let mut user = None;
    loop {
        let key = fields.next()?;
        if key.is_empty() {
            return if name == "database" { user } else { None };
        }
        let value = String::from_utf8_lossy(fields.next()?).into_owned();
        if key == name.as_bytes() {
            return Some(value);
        }
        if key == b"user" {
            user = Some(value);
        }
    }
}

fn parse_params(body: &[u8]) -> Result<Startup, PacketError> {
    let mut startup = Startup::default();
    let mut fields = body.split(|b| *b == 0);
    loop {
        let key = fields.next().ok_or(PacketError::BadParameters)?;
        if key.is_empty() {
            break;
        }
        let value = fields.next().ok_or(PacketError::BadParameters)?;
        let value = String::from_utf8_lossy(value).into_owned();
        match key {
            b"user" => startup.user = Some(value),
            b"database" => startup.database = Some(value),
            b"application_name" => startup.application_name = Some(value),
            b"replication" => startup.replication = true,
            _ => {}
        }
    }
    Ok(startup)
}

/// What `pglb check` says about bytes that look like a StartupMessage in a
/// `tcp-check send-binary`: the problems found and the corrected packet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StartupDiagnosis {
    pub problems: Vec<String>,
    pub corrected: Option<Vec<u8>>,
}

/// Returns `None` when `bytes` do not look like a StartupMessage at all.
pub fn diagnose(bytes: &[u8]) -> Option<StartupDiagnosis> {
    if bytes.len() < 8 {
        return None;
    }
    let proto = u32::from_be_bytes([bytes[4], bytes[5], bytes[6], bytes[7]]);
    let mentions_user = bytes.windows(5).any(|w| w == b"user\0");
    if proto != PROTOCOL_3_0 && !mentions_user {
        return None;
    }
    let mut problems = Vec::new();
    let declared = u32::from_be_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]) as usize;
    if declared != bytes.len() {
        problems.push(format!(
            "its length field says {declared} bytes while {} are sent, so PostgreSQL {}",
            bytes.len(),
            if declared > bytes.len() {
                "waits for the rest, the check times out and the server is marked DOWN"
            } else {
                "reads the next bytes as a new message"
            }
        ));
    }
    if proto != PROTOCOL_3_0 {
        problems.push(format!(
            "its protocol version is {}.{} (hex {:08x}); PostgreSQL expects 3.0 (hex 00030000)",
            proto >> 16,
            proto & 0xffff,
            proto
        ));
    }
    // Recover the parameters from the non-empty NUL-separated strings.
    let strings: Vec<&[u8]> = bytes[8..].split(|b| *b == 0).filter(|s| !s.is_empty()).collect();
    let well_formed = parse_params(&bytes[8..]).map(|s| s.user.is_some()).unwrap_or(false) && bytes.ends_with(&[0, 0]);
    if !well_formed {
        problems.push("its parameters are not NAME\\0VALUE\\0 pairs ending in one extra \\0 with a user".to_string());
    }
    let corrected = (strings.len().is_multiple_of(2) && strings.chunks(2).any(|p| p[0] == b"user"))
        .then(|| {
            let pairs: Vec<(String, String)> =
                strings.chunks(2).map(|p| (String::from_utf8_lossy(p[0]).into_owned(), String::from_utf8_lossy(p[1]).into_owned())).collect();
            let refs: Vec<(&str, &str)> = pairs.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
            super::startup_message(&refs)
        })
        .filter(|c| c != bytes);
    Some(StartupDiagnosis { problems, corrected })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pg::startup_message;

    #[test]
    fn parses_the_four_kinds() {
        assert_eq!(parse_first(&[0, 0, 0, 8, 4, 0xd2, 0x16, 0x2f]).unwrap(), FirstPacket::SslRequest);
        assert_eq!(parse_first(&[0, 0, 0, 8, 4, 0xd2, 0x16, 0x30]).unwrap(), FirstPacket::GssEncRequest);
        let cancel = [0, 0, 0, 16, 4, 0xd2, 0x16, 0x2e, 0, 0, 0, 42, 0, 0, 0, 7];
        assert_eq!(parse_first(&cancel).unwrap(), FirstPacket::Cancel(CancelKey { pid: 42, secret: 7 }));
        let s = startup_message(&[("user", "u"), ("database", "d"), ("application_name", "psql")]);
        match parse_first(&s).unwrap() {
            FirstPacket::Startup(st) => {
                assert_eq!(st.user.as_deref(), Some("u"));
                assert_eq!(st.database.as_deref(), Some("d"));
                assert_eq!(st.application_name.as_deref(), Some("psql"));
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn rejects_garbage() {
        assert!(packet_len(*b"GET ").is_err());
        assert!(packet_len([0, 0, 0, 4]).is_err());
        assert!(parse_first(b"\0\0\0\x0cHTTP/1.1").is_err());
        assert_eq!(parse_first(&[0, 0, 0, 10, 0, 3, 0, 0, b'u', b'x']).unwrap_err(), PacketError::BadParameters);
    }

    #[test]
    fn diagnoses_the_seed_packet() {
        let seed = crate::config::decode_hex("00000020000000030000757365720000706f737467726573000000").unwrap();
        let d = diagnose(&seed).unwrap();
        assert_eq!(d.problems.len(), 3, "{:?}", d.problems);
        assert!(d.problems[0].contains("says 32 bytes while 27"));
        assert!(d.problems[1].contains("0.3"));
        assert_eq!(d.corrected.unwrap(), startup_message(&[("user", "postgres")]));
    }

    #[test]
    fn a_correct_packet_has_no_problem() {
        let good = startup_message(&[("user", "postgres")]);
        let d = diagnose(&good).unwrap();
        assert!(d.problems.is_empty());
        assert!(d.corrected.is_none());
        assert!(diagnose(b"PING\r\n\0\0\0").is_none());
    }
}
