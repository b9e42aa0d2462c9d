//! Watches the server's answer to a StartupMessage as it streams to the
//! client, without buffering it, to learn the session's BackendKeyData.
//! It switches itself off at ReadyForQuery or ErrorResponse, so the rest of
//! the session is relayed without any parsing.

use crate::pg::startup::CancelKey;

/// Give up watching after this many bytes (startup answers are small).
const MAX_STARTUP_ANSWER: u64 = 1 << 20;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event {
    /// BackendKeyData seen.
    Key(CancelKey),
    /// ReadyForQuery: the session is established.
    Ready,
    /// ErrorResponse during startup (e.g. authentication failed).
    Error,
}

#[derive(Debug, Clone, Default)]
pub struct Sniffer {
    /// Bytes of the current message header (type + length) gathered so far.
    header: [u8; 5],
    header_len: usize,
    /// Body bytes still to skip (or collect, for 'K').
    remaining: u32,
    key_body: Vec<u8>,
    seen: u64,
    pub done: bool,
}

impl Sniffer {
    /// Feeds bytes the server sent; calls `on` for each event.
    pub fn feed(&mut self, mut data: &[u8], mut on: impl FnMut(Event)) {
        self.seen += data.len() as u64;
        while !self.done && !data.is_empty() {
            if self.remaining == 0 && self.header_len < 5 {
                let take = (5 - self.header_len).min(data.len());
                self.header[self.header_len..self.header_len + take].copy_from_slice(&data[..take]);
                self.header_len += take;
                data = &data[take..];
                if self.header_len < 5 {
                    break;
                }
                let len = u32::from_be_bytes([self.header[1], self.header[2], self.header[3], self.header[4]]);
                if len < 4 {
                    // Not PostgreSQL framing: stop watching, keep relaying.
                    self.done = true;
                    break;
                }
                self.remaining = len - 4;
                self.key_body.clear();
                match self.header[0] {
                    b'Z' => {
                        on(Event::Ready);
                        self.done = true;
                        break;
                    }
                    b'E' => {
                        on(Event::Error);
                        self.done = true;
                        break;
                    }
                    _ => {}
                }
                if self.remaining == 0 {
                    self.header_len = 0;
                }
                continue;
            }
            let take = (self.remaining as usize).min(data.len());
            if self.header[0] == b'K' && self.key_body.len() < 8 {
                let want = (8 - self.key_body.len()).min(take);
                self.key_body.extend_from_slice(&data[..want]);
                if self.key_body.len() == 8 {
                    let b = &self.key_body;
                    on(Event::Key(CancelKey {
                        pid: u32::from_be_bytes([b[0], b[1], b[2], b[3]]),
                        secret: u32::from_be_bytes([b[4], b[5], b[6], b[7]]),
                    }));
                }
            }
            self.remaining -= take as u32;
            data = &data[take..];
            if self.remaining == 0 {
                self.header_len = 0;
            }
        }
        if self.seen > MAX_STARTUP_ANSWER {
            self.done = true;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::pg::message as msg;

    fn answer() -> Vec<u8> {
        let mut a = msg(b'R', &[0, 0, 0, 0]);
        a.extend(msg(b'S', b"server_version\x0015\x00"));
        a.extend(msg(b'K', &[0, 0, 0x30, 0x39, 0xde, 0xad, 0xbe, 0xef]));
        a.extend(msg(b'Z', b"I"));
        a.extend(msg(b'T', b"after ready: never parsed"));
        a
    }

    #[test]
    fn finds_the_key_in_any_chunking() {
        let a = answer();
        for chunk in 1..=a.len() {
            let mut s = Sniffer::default();
            let mut events = Vec::new();
            for piece in a.chunks(chunk) {
                s.feed(piece, |e| events.push(e));
            }
            assert_eq!(events, vec![Event::Key(CancelKey { pid: 12345, secret: 0xdeadbeef }), Event::Ready], "chunk {chunk}");
            assert!(s.done);
        }
    }

    #[test]
    fn stops_on_error() {
        let mut s = Sniffer::default();
        let mut events = Vec::new();
        s.feed(&msg(b'E', b"SFATAL\0"), |e| events.push(e));
        assert_eq!(events, vec![Event::Error]);
        assert!(s.done);
    }
}
