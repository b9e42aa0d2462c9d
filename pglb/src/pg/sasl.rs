//! The server's AuthenticationSASL, which lists the SASL mechanisms it
//! accepts. PostgreSQL offers `SCRAM-SHA-256-PLUS` (SCRAM with channel
//! binding to the TLS connection) whenever the connection to it is TLS.

/// The mechanism that binds SCRAM to the server's TLS certificate.
pub const SCRAM_PLUS: &[u8] = b"SCRAM-SHA-256-PLUS";

/// `answer` (the server's first bytes after a StartupMessage) without
/// `SCRAM-SHA-256-PLUS` in its AuthenticationSASL, when it starts with one
/// that offers it; `None` otherwise (nothing to change).
///
/// For a client whose own connection (to pglb) is plaintext while pglb's
/// connection to the server is TLS: libpq refuses a PLUS offer over a
/// connection without TLS ("server offered SCRAM-SHA-256-PLUS
/// authentication over a non-SSL connection"), and such a client could not
/// bind to the server's TLS anyway. Without the offer it uses plain SCRAM
/// and tells the server it has no TLS, which PostgreSQL accepts.
pub fn without_channel_binding(answer: &[u8]) -> Option<Vec<u8>> {
    // 'R', length, 10 (AuthenticationSASL), mechanism\0 ... \0
    if answer.len() < 9 || answer[0] != b'R' || answer[5..9] != 10u32.to_be_bytes() {
        return None;
    }
    let end = 1 + u32::from_be_bytes([answer[1], answer[2], answer[3], answer[4]]) as usize;
    let list = answer.get(9..end)?;
    let mechanisms: Vec<&[u8]> = list.split(|b| *b == 0).filter(|m| !m.is_empty()).collect();
    if !mechanisms.contains(&SCRAM_PLUS) {
        return None;
    }
    let mut body = 10u32.to_be_bytes().to_vec();
    for m in mechanisms.iter().filter(|m| **m != SCRAM_PLUS) {
        body.extend_from_slice(m);
        body.push(0);
    }
    body.push(0);
    let mut out = super::message(b'R', &body);
    out.extend_from_slice(&answer[end..]);
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_plus_mechanism_is_taken_out_of_the_offer() {
        let offer = crate::pg::message(b'R', b"\x00\x00\x00\x0aSCRAM-SHA-256-PLUS\x00SCRAM-SHA-256\x00\x00");
        let mut answer = offer.clone();
        answer.extend_from_slice(b"rest");
        let out = without_channel_binding(&answer).unwrap();
        let mut want = crate::pg::message(b'R', b"\x00\x00\x00\x0aSCRAM-SHA-256\x00\x00");
        want.extend_from_slice(b"rest");
        assert_eq!(out, want);
        // Nothing to change: no PLUS, another message, a cut-off message.
        assert_eq!(without_channel_binding(&want), None);
        assert_eq!(without_channel_binding(b"R\x00\x00\x00\x08\x00\x00\x00\x00"), None);
        assert_eq!(without_channel_binding(&offer[..12]), None);
    }
}
