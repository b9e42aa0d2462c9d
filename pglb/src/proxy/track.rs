//! Where a plaintext session is in its conversation, from message framing
//! alone: each PostgreSQL message after the StartupMessage starts with a
//! type byte and a 4-byte length, so pglb can follow both directions
//! without reading payloads or keeping any of them.
//!
//! Every request the client makes that the server answers with exactly one
//! ReadyForQuery is counted (Query, Sync, FunctionCall; the StartupMessage
//! counts as the first), and so is every ReadyForQuery, with its status.
//! The session is **idle** (a transaction boundary where it can be closed
//! without cutting anything) when every request has had its ReadyForQuery,
//! the last one said `I` (no transaction open), and neither direction is
//! in the middle of a message.

/// One direction's framing: the header being gathered, the body bytes
/// still to skip, and what was counted. 16 bytes, kept inline in the relay.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Framing {
    header: [u8; 5],
    have: u8,
    /// The next body byte is ReadyForQuery's status.
    want_status: bool,
    remaining: u32,
    /// Requests (client) or ReadyForQuery messages (server) seen.
    count: u32,
}

/// The client's messages answered by exactly one ReadyForQuery.
fn is_request(kind: u8) -> bool {
    matches!(kind, b'Q' | b'S' | b'F')
}

impl Framing {
    fn at_boundary(&self) -> bool {
        self.have == 0 && self.remaining == 0
    }

    /// Follows `data`; calls `status` with each ReadyForQuery's status byte
    /// (server side). Returns false when the bytes are not PostgreSQL
    /// framing (a length below 4).
    fn feed(&mut self, mut data: &[u8], client: bool, status: &mut u8) -> bool {
        while !data.is_empty() {
            if self.remaining > 0 {
                if self.want_status {
                    *status = data[0];
                    self.want_status = false;
                }
                let skip = (self.remaining as usize).min(data.len());
                self.remaining -= skip as u32;
                data = &data[skip..];
                continue;
            }
            let take = (5 - self.have as usize).min(data.len());
            self.header[self.have as usize..self.have as usize + take].copy_from_slice(&data[..take]);
            self.have += take as u8;
            data = &data[take..];
            if self.have < 5 {
                break;
            }
            self.have = 0;
            let len = u32::from_be_bytes([self.header[1], self.header[2], self.header[3], self.header[4]]);
            if len < 4 {
                return false;
            }
            self.remaining = len - 4;
            let kind = self.header[0];
            if client {
                self.count += u32::from(is_request(kind));
            } else if kind == b'Z' {
                self.count += 1;
                self.want_status = self.remaining > 0;
            }
        }
        true
    }
}

/// Both directions of one session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Track {
    up: Framing,
    down: Framing,
    /// The last ReadyForQuery's status: `I` idle, `T` in a transaction,
    /// `E` in a failed transaction.
    status: u8,
    /// Framing was lost (or never known: TLS): never idle.
    lost: bool,
}

impl Default for Track {
    /// A session whose StartupMessage was sent and not yet answered.
    fn default() -> Self {
        Track { up: Framing { count: 1, ..Framing::default() }, down: Framing::default(), status: 0, lost: false }
    }
}

impl Track {
    /// For a session pglb cannot read (TLS): never idle.
    pub fn opaque() -> Self {
        Track { lost: true, ..Track::default() }
    }

    /// Bytes the client sent to the server.
    pub fn client(&mut self, data: &[u8]) {
        if !self.lost && !self.up.feed(data, true, &mut self.status) {
            self.lost = true;
        }
    }

    /// Bytes the server sent to the client.
    pub fn server(&mut self, data: &[u8]) {
        if !self.lost && !self.down.feed(data, false, &mut self.status) {
            self.lost = true;
        }
    }

    /// At a transaction boundary with nothing in flight.
    pub fn idle(&self) -> bool {
        !self.lost && self.status == b'I' && self.up.count == self.down.count && self.up.at_boundary() && self.down.at_boundary()
    }

    /// The client asked for something after its startup.
    pub fn used(&self) -> bool {
        self.up.count > 1
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::pg::message as msg;

    fn startup_answer() -> Vec<u8> {
        [msg(b'R', &[0, 0, 0, 0]), msg(b'S', b"a\0b\0"), msg(b'K', &[0; 8]), msg(b'Z', b"I")].concat()
    }

    /// Feeds in chunks of every size, so message boundaries fall anywhere.
    fn feed_chunked(t: &mut Track, client: bool, data: &[u8], chunk: usize) {
        for piece in data.chunks(chunk) {
            if client { t.client(piece) } else { t.server(piece) }
        }
    }

    #[test]
    fn a_session_is_idle_only_between_transactions() {
        for chunk in 1..=12 {
            let mut t = Track::default();
            assert!(!t.idle(), "the startup is not answered yet");
            feed_chunked(&mut t, false, &startup_answer(), chunk);
            assert!(t.idle() && !t.used(), "chunk {chunk}");
            feed_chunked(&mut t, true, &msg(b'Q', b"begin\0"), chunk);
            assert!(!t.idle(), "a query in flight");
            feed_chunked(&mut t, false, &[msg(b'C', b"BEGIN\0"), msg(b'Z', b"T")].concat(), chunk);
            assert!(!t.idle(), "inside a transaction");
            // Extended protocol, pipelined: two Syncs before any answer.
            let ext = [msg(b'P', b"\0select 1\0\0\0"), msg(b'B', &[0; 6]), msg(b'E', &[0; 5]), msg(b'S', b"")].concat();
            feed_chunked(&mut t, true, &[ext.clone(), ext, msg(b'Q', b"commit\0")].concat(), chunk);
            feed_chunked(&mut t, false, &[msg(b'1', b""), msg(b'2', b""), msg(b'D', &[0, 1, 0, 0, 0, 1, b'1']), msg(b'Z', b"T")].concat(), chunk);
            assert!(!t.idle(), "one Sync still unanswered");
            feed_chunked(&mut t, false, &msg(b'Z', b"T"), chunk);
            assert!(!t.idle(), "the commit is unanswered");
            feed_chunked(&mut t, false, &[msg(b'C', b"COMMIT\0"), msg(b'Z', b"I")].concat(), chunk);
            assert!(t.idle() && t.used(), "chunk {chunk}");
        }
    }

    #[test]
    fn half_a_message_is_not_a_boundary_and_garbage_is_never_idle() {
        let mut t = Track::default();
        t.server(&startup_answer());
        let q = msg(b'Q', b"select 1\0");
        t.client(&q[..3]);
        assert!(!t.idle(), "the client is in the middle of a message");
        t.client(&q[3..]);
        t.server(&[msg(b'T', &[0, 0]), msg(b'C', b"SELECT 1\0")].concat());
        let z = msg(b'Z', b"I");
        t.server(&z[..5]);
        assert!(!t.idle(), "the status byte has not arrived");
        t.server(&z[5..]);
        assert!(t.idle());
        t.client(&[b'Q', 0, 0, 0, 1]);
        assert!(!t.idle(), "a length below 4 loses the framing for good");
        assert!(!Track::opaque().idle());
    }
}
