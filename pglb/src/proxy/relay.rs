//! The byte relay between client and server, in one task per session.
//!
//! Each direction waits for readiness, then moves data with non-blocking
//! reads and writes through a per-thread buffer, so an idle session holds no
//! buffer at all: only bytes the destination could not take yet are kept
//! (`pending`), and only until they are written. Half-closes are forwarded.

use super::sniff::{Event, Sniffer};
use crate::state::counters::Counters;
use std::cell::RefCell;
use std::io;
use std::net::Shutdown;
use std::time::Duration;
use tokio::net::TcpStream;
use tokio::sync::watch;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

const BUF_SIZE: usize = 64 * 1024;
/// Reads per wake-up before yielding to other directions and sessions.
const MAX_READS_PER_WAKE: usize = 16;

thread_local! {
    static BUF: RefCell<Box<[u8]>> = RefCell::new(vec![0u8; BUF_SIZE].into_boxed_slice());
}

/// Idle timeouts of an established session; `None` = no timeout.
#[derive(Debug, Clone, Copy, Default)]
pub struct Timeouts {
    pub client: Option<Duration>,
    pub server: Option<Duration>,
    pub client_fin: Option<Duration>,
    pub server_fin: Option<Duration>,
}

/// Why the relay ended, in HAProxy's termination-state terms.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum End {
    /// Both sides closed normally.
    Normal,
    ClientError,
    ServerError,
    ClientTimeout,
    ServerTimeout,
    /// Closed by pglb: runtime API, server marked down, or hard stop.
    Killed,
}

impl End {
    /// First letter of HAProxy's termination state (the second is 'D').
    pub fn code(self) -> &'static str {
        match self {
            End::Normal => "--",
            End::ClientError => "CD",
            End::ServerError => "SD",
            End::ClientTimeout => "cD",
            End::ServerTimeout => "sD",
            End::Killed => "KD",
        }
    }
}

#[derive(Debug, Default)]
struct Direction {
    pending: Vec<u8>,
    offset: usize,
    eof: bool,
    done: bool,
    moved: u64,
    /// Part of `moved` already added to the shared counters.
    flushed: u64,
}

impl Direction {
    fn wants_read(&self) -> bool {
        !self.done && !self.eof && self.pending.is_empty()
    }
    fn wants_write(&self) -> bool {
        !self.done && !self.pending.is_empty()
    }
}

enum Step {
    Progress,
    Idle,
}

/// Which side an I/O error came from.
enum Side {
    Src(io::Error),
    Dst(io::Error),
}

/// Moves what `src` has to `dst` without blocking.
fn pump(
    src: &TcpStream,
    dst: &TcpStream,
    dir: &mut Direction,
    sniffer: &mut Option<Sniffer>,
    on_event: &mut impl FnMut(Event),
) -> Result<Step, Side> {
    let mut progressed = false;
    if !dir.pending.is_empty() {
        match dst.try_write(&dir.pending[dir.offset..]) {
            Ok(n) => {
                dir.offset += n;
                progressed = n > 0;
                if dir.offset == dir.pending.len() {
                    // Free the memory: an idle session should hold no buffer.
                    dir.pending = Vec::new();
                    dir.offset = 0;
                } else {
                    return Ok(Step::Progress);
                }
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(Step::Idle),
            Err(e) => return Err(Side::Dst(e)),
        }
    }
    if dir.eof {
        if dir.pending.is_empty() {
            let _ = socket2::SockRef::from(dst).shutdown(Shutdown::Write);
            dir.done = true;
        }
        return Ok(if progressed { Step::Progress } else { Step::Idle });
    }
    BUF.with(|buf| {
        let mut buf = buf.borrow_mut();
        for _ in 0..MAX_READS_PER_WAKE {
            let n = match src.try_read(&mut buf) {
                Ok(0) => {
                    dir.eof = true;
                    let _ = socket2::SockRef::from(dst).shutdown(Shutdown::Write);
                    dir.done = true;
                    return Ok(Step::Progress);
                }
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(Side::Src(e)),
            };
            progressed = true;
            let data = &buf[..n];
            if let Some(s) = sniffer.as_mut() {
                s.feed(data, &mut *on_event);
                if s.done {
                    *sniffer = None;
                }
            }
            dir.moved += n as u64;
            let written = match dst.try_write(data) {
                Ok(w) => w,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => 0,
                Err(e) => return Err(Side::Dst(e)),
            };
            if written < n {
                dir.pending = data[written..].to_vec();
                dir.offset = 0;
                break;
            }
        }
        Ok(if progressed { Step::Progress } else { Step::Idle })
    })
}

/// What the relay reports when it ends.
#[derive(Debug, Clone, Copy)]
pub struct Outcome {
    pub end: End,
    /// Client to server.
    pub bytes_in: u64,
    /// Server to client.
    pub bytes_out: u64,
}

pub struct Relay<'a> {
    pub client: &'a TcpStream,
    pub server: &'a TcpStream,
    pub timeouts: Timeouts,
    /// Watches the server's startup answer, if it is unencrypted.
    pub sniffer: Option<Sniffer>,
    /// Counters to add bytes to (frontend, backend, server).
    pub counters: [&'a Counters; 3],
    pub kill: watch::Receiver<u64>,
    pub hard_stop: CancellationToken,
}

impl Relay<'_> {
    pub async fn run(self, mut on_event: impl FnMut(Event)) -> Outcome {
        let Relay { client, server, timeouts, mut sniffer, counters, mut kill, hard_stop } = self;
        let mut up = Direction::default();
        let mut down = Direction::default();
        let mut last = Instant::now();
        // Futures that live for the whole session: re-creating them at every
        // wake-up would register a timer and two waiters per message.
        let mut kill = std::pin::pin!(kill.changed());
        let mut hard_stop = std::pin::pin!(hard_stop.cancelled());
        // The idle timer is armed at or before the real deadline and only
        // re-armed when it fires early: activity does not touch the timer wheel.
        let far = Instant::now() + Duration::from_secs(86400 * 365);
        let mut timer = std::pin::pin!(tokio::time::sleep_until(far));
        let mut armed: Option<Instant> = None;
        let end = loop {
            if up.done && down.done {
                break End::Normal;
            }
            let (deadline, which) = deadline(&timeouts, &up, &down, last);
            match (deadline, armed) {
                (Some(d), Some(a)) if a <= d => {}
                (Some(d), _) => {
                    timer.as_mut().reset(d);
                    armed = Some(d);
                }
                (None, Some(_)) => {
                    timer.as_mut().reset(far);
                    armed = None;
                }
                (None, None) => {}
            }
            let step = tokio::select! {
                r = client.readable(), if up.wants_read() => r.map_err(Side::Src).and_then(|_| pump(client, server, &mut up, &mut None, &mut on_event)),
                r = server.writable(), if up.wants_write() => r.map_err(Side::Dst).and_then(|_| pump(client, server, &mut up, &mut None, &mut on_event)),
                r = server.readable(), if down.wants_read() => r.map_err(Side::Src).and_then(|_| pump(server, client, &mut down, &mut sniffer, &mut on_event)).map_err(swap),
                r = client.writable(), if down.wants_write() => r.map_err(Side::Dst).and_then(|_| pump(server, client, &mut down, &mut sniffer, &mut on_event)).map_err(swap),
                _ = &mut timer, if armed.is_some() => {
                    armed = None;
                    timer.as_mut().reset(far);
                    match deadline {
                        Some(d) if Instant::now() >= d => break which,
                        // Activity since the timer was armed: re-arm at the new deadline.
                        _ => continue,
                    }
                }
                _ = &mut kill => break End::Killed,
                _ = &mut hard_stop => break End::Killed,
            };
            match step {
                Ok(Step::Progress) => {
                    last = Instant::now();
                    flush(&counters, &mut up, &mut down, FLUSH_EVERY);
                }
                Ok(Step::Idle) => {}
                // Once one side has closed cleanly, a reset from the other is
                // how many peers finish (TLS close_notify, PostgreSQL after
                // Terminate): not an error.
                Err(_) if up.eof || down.eof => break End::Normal,
                Err(Side::Src(_)) => break End::ClientError,
                Err(Side::Dst(_)) => break End::ServerError,
            }
        };
        flush(&counters, &mut up, &mut down, 0);
        Outcome { end, bytes_in: up.moved, bytes_out: down.moved }
    }
}

/// Shared byte counters are updated in batches: every session adding to
/// the same frontend/backend counters at each read would make their cache
/// lines bounce between cores.
const FLUSH_EVERY: u64 = 256 * 1024;

fn flush(counters: &[&Counters; 3], up: &mut Direction, down: &mut Direction, at_least: u64) {
    let (i, o) = (up.moved - up.flushed, down.moved - down.flushed);
    if i + o > at_least {
        for c in counters {
            Counters::add(&c.bytes_in, i);
            Counters::add(&c.bytes_out, o);
        }
        up.flushed = up.moved;
        down.flushed = down.moved;
    }
}

/// The idle deadline: HAProxy's client/server timeouts apply while waiting
/// on that side; once a side has closed, its `-fin` timeout (if set)
/// applies to the other.
fn deadline(t: &Timeouts, up: &Direction, down: &Direction, last: Instant) -> (Option<Instant>, End) {
    {
        let client = if down.done { t.client_fin.or(t.client) } else { t.client };
        let server = if up.done { t.server_fin.or(t.server) } else { t.server };
        match (client, server) {
            (Some(c), Some(s)) if s < c => (Some(last + s), End::ServerTimeout),
            (Some(c), _) => (Some(last + c), End::ClientTimeout),
            (None, Some(s)) => (Some(last + s), End::ServerTimeout),
            (None, None) => (None, End::Normal),
        }
    }
}

/// In the server-to-client direction the source is the server.
fn swap(side: Side) -> Side {
    match side {
        Side::Src(e) => Side::Dst(e),
        Side::Dst(e) => Side::Src(e),
    }
}
