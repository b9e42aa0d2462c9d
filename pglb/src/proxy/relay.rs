//! The byte relay between client and server, in one task per session.
//!
//! Each direction waits for readiness, then moves data with non-blocking
//! reads and writes through a per-thread buffer, so an idle session holds no
//! buffer at all: only bytes the destination could not take yet are kept
//! (`pending`), and only until they are written. Half-closes are forwarded.

use super::log::{Cause, Phase, Termination};
use super::sniff::{Event, Sniffer};
use super::track::Track;
use crate::state::KillSwitch;
use crate::state::counters::Counters;
use crate::tls::Stream;
use std::cell::RefCell;
use std::future::Future;
use std::io;
use std::num::NonZeroU32;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::Instant;

const BUF_SIZE: usize = 64 * 1024;
/// Reads per wake-up before yielding to other directions and sessions.
const MAX_READS_PER_WAKE: usize = 16;

thread_local! {
    static BUF: RefCell<Box<[u8]>> = RefCell::new(vec![0u8; BUF_SIZE].into_boxed_slice());
}

/// Reads what `src` has (up to `max` bytes) through the thread's relay
/// buffer and appends it to `out`: `out` grows by what arrived, not by what
/// a read could have returned. Like the relay, a short read tells tokio the
/// socket is drained.
pub(super) async fn read_into(src: &mut (impl AsyncRead + Unpin), out: &mut Vec<u8>, max: usize) -> io::Result<usize> {
    std::future::poll_fn(|cx| {
        BUF.with(|buf| {
            let mut buf = buf.borrow_mut();
            let mut rb = ReadBuf::new(&mut buf[..max.min(BUF_SIZE)]);
            match Pin::new(&mut *src).poll_read(cx, &mut rb) {
                Poll::Ready(Ok(())) => {
                    out.extend_from_slice(rb.filled());
                    Poll::Ready(Ok(rb.filled().len()))
                }
                Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
                Poll::Pending => Poll::Pending,
            }
        })
    })
    .await
}

/// Idle timeouts of an established session, in whole milliseconds
/// (HAProxy's own tick; a finer time rounds up; the configuration allows
/// at most 2^31-1 ms, and more would be capped at 2^32-1); `None` = no
/// timeout. Kept in 16 bytes rather than 64: every idle session holds one.
#[derive(Debug, Clone, Copy, Default)]
pub struct Timeouts {
    client: Option<NonZeroU32>,
    server: Option<NonZeroU32>,
    client_fin: Option<NonZeroU32>,
    server_fin: Option<NonZeroU32>,
}

impl Timeouts {
    pub fn new(client: Option<Duration>, server: Option<Duration>, client_fin: Option<Duration>, server_fin: Option<Duration>) -> Self {
        let ms = |d: Option<Duration>| d.and_then(|d| NonZeroU32::new(u32::try_from(d.as_micros().div_ceil(1000)).unwrap_or(u32::MAX)));
        Timeouts { client: ms(client), server: ms(server), client_fin: ms(client_fin), server_fin: ms(server_fin) }
    }
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
    /// Closed by pglb at a transaction boundary (stopping, `drain`).
    Drained,
}

impl End {
    /// HAProxy's termination state (in the data phase).
    pub fn termination(self) -> Termination {
        let cause = match self {
            // A drained session ends as HAProxy logs a keep-alive connection
            // closed at soft stop: normally.
            End::Normal | End::Drained => return Termination::NORMAL,
            End::ClientError => Cause::Client,
            End::ServerError => Cause::Server,
            End::ClientTimeout => Cause::ClientTimeout,
            End::ServerTimeout => Cause::ServerTimeout,
            End::Killed => Cause::Killed,
        };
        Termination::new(cause, Phase::Data)
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

/// Which side an I/O error came from (the error itself only decides the
/// termination state).
enum Side {
    Src(#[allow(dead_code)] io::Error),
    Dst(#[allow(dead_code)] io::Error),
}

/// Moves what `src` has to `dst` until either would block. tokio's
/// `poll_read` treats a short read as "drained" (edge-triggered epoll), so a
/// request/response exchange costs one read and one write per message, with
/// no extra EAGAIN round.
#[allow(clippy::too_many_arguments)]
fn pump(
    cx: &mut Context<'_>,
    src: &mut Stream,
    dst: &mut Stream,
    dir: &mut Direction,
    other_done: bool,
    sniffer: &mut Option<Box<Sniffer>>,
    on_event: &mut impl FnMut(Event),
    track: (&mut Track, fn(&mut Track, &[u8])),
) -> Poll<Result<(), Side>> {
    let mut progressed = false;
    for _ in 0..MAX_READS_PER_WAKE {
        // First the bytes the destination could not take yet.
        while dir.offset < dir.pending.len() {
            match Pin::new(&mut *dst).poll_write(cx, &dir.pending[dir.offset..]) {
                Poll::Ready(Ok(0)) => return Poll::Ready(Err(Side::Dst(io::ErrorKind::WriteZero.into()))),
                Poll::Ready(Ok(n)) => {
                    dir.offset += n;
                    progressed = true;
                }
                Poll::Ready(Err(e)) => return Poll::Ready(Err(Side::Dst(e))),
                Poll::Pending => return if progressed { Poll::Ready(Ok(())) } else { Poll::Pending },
            }
        }
        if !dir.pending.is_empty() {
            // Free the memory: an idle session should hold no buffer.
            dir.pending = Vec::new();
            dir.offset = 0;
        }
        if dir.eof {
            // Forward the half-close, unless the other direction is over
            // too: then both sockets are closed at once, which sends the FIN.
            if !other_done && dst.poll_half_close(cx).is_pending() {
                return if progressed { Poll::Ready(Ok(())) } else { Poll::Pending };
            }
            dir.done = true;
            return Poll::Ready(Ok(()));
        }
        let read = BUF.with(|buf| {
            let mut buf = buf.borrow_mut();
            let mut rb = ReadBuf::new(&mut buf[..]);
            match Pin::new(&mut *src).poll_read(cx, &mut rb) {
                Poll::Ready(Ok(())) => {
                    let n = rb.filled().len();
                    if n == 0 {
                        dir.eof = true;
                        return Poll::Ready(Ok(0));
                    }
                    let data = rb.filled();
                    (track.1)(track.0, data);
                    if let Some(s) = sniffer.as_mut() {
                        s.feed(data, &mut *on_event);
                        if s.done {
                            *sniffer = None;
                        }
                    }
                    dir.moved += n as u64;
                    // Write straight from the per-thread buffer; keep only what does not fit.
                    let written = match Pin::new(&mut *dst).poll_write(cx, data) {
                        Poll::Ready(Ok(w)) => w,
                        Poll::Ready(Err(e)) => return Poll::Ready(Err(Side::Dst(e))),
                        Poll::Pending => 0,
                    };
                    if written < n {
                        dir.pending = data[written..].to_vec();
                        dir.offset = 0;
                    }
                    Poll::Ready(Ok(n))
                }
                Poll::Ready(Err(e)) => Poll::Ready(Err(Side::Src(e))),
                Poll::Pending => Poll::Pending,
            }
        });
        match read {
            Poll::Ready(Ok(_)) => progressed = true,
            Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
            Poll::Pending => return if progressed { Poll::Ready(Ok(())) } else { Poll::Pending },
        }
    }
    // Busy: report progress and let the caller yield.
    Poll::Ready(Ok(()))
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
    pub client: &'a mut Stream,
    pub server: &'a mut Stream,
    pub timeouts: Timeouts,
    /// Watches the server's startup answer, if it is unencrypted. Boxed:
    /// it is dropped once the answer is through, and an idle session
    /// should not keep its room.
    pub sniffer: Option<Box<Sniffer>>,
    /// Counters to add bytes to (frontend, backend, server).
    pub counters: [&'a Counters; 3],
    /// Where the conversation is (transaction boundaries), for draining.
    pub track: &'a mut Track,
}

/// What the relay tracks between wake-ups.
struct Flow {
    up: Direction,
    down: Direction,
    /// The last time data moved.
    last: Instant,
    /// The deadline the idle timer is set to, if any.
    armed: Option<Instant>,
}

impl Relay<'_> {
    /// Runs until both sides close, an error, a timeout, or `kill` is
    /// thrown (or was since the session noted generation `seen`), or
    /// drained (`kill.drains()` moved past `drains_seen`) once the session
    /// is idle.
    ///
    /// Its state is what an idle session costs, so it is kept tight: the
    /// relay is borrowed and used in place (an async fn keeps its
    /// arguments' storage for its whole life, so moving a relay in would
    /// take its size twice), and the wake-up closure holds one reference
    /// per group of state rather than one per variable.
    pub async fn run(&mut self, kill: &KillSwitch, (seen, drains_seen): (u64, u64), on_event: &mut impl FnMut(Event)) -> Outcome {
        let mut flow = Flow { up: Direction::default(), down: Direction::default(), last: Instant::now(), armed: None };
        let f = &mut flow;
        // Futures that live for the whole session: re-creating them at every
        // wake-up would register a timer and a waiter per message.
        let mut killed = std::pin::pin!(kill.notified());
        // The idle timer is armed at or before the real deadline and only
        // re-armed when it fires early: activity does not touch the timer wheel.
        let mut timer = std::pin::pin!(tokio::time::sleep_until(far_future()));
        let relay = &mut *self;
        let end = std::future::poll_fn(move |cx| {
            let Flow { up, down, last, armed } = &mut *f;
            let mut rounds = 0;
            loop {
                if up.done && down.done {
                    return Poll::Ready(End::Normal);
                }
                let track = &mut *relay.track;
                let a = if up.done {
                    Poll::Pending
                } else {
                    pump(cx, relay.client, relay.server, up, down.done, &mut None, on_event, (track, Track::client))
                };
                let b = if down.done {
                    Poll::Pending
                } else {
                    pump(cx, relay.server, relay.client, down, up.done, &mut relay.sniffer, on_event, (track, Track::server))
                };
                let mut progressed = false;
                for (r, swap_sides) in [(a, false), (b, true)] {
                    match r {
                        Poll::Ready(Ok(())) => progressed = true,
                        Poll::Pending => {}
                        // Once one side has closed cleanly, a reset from the other is
                        // how many peers finish (TLS close_notify, PostgreSQL after
                        // Terminate): not an error.
                        Poll::Ready(Err(_)) if up.eof || down.eof => return Poll::Ready(End::Normal),
                        Poll::Ready(Err(side)) => {
                            let client_side = matches!(side, Side::Src(_)) != swap_sides;
                            return Poll::Ready(if client_side { End::ClientError } else { End::ServerError });
                        }
                    }
                }
                if progressed {
                    *last = Instant::now();
                    flush(&relay.counters, up, down, FLUSH_EVERY);
                    rounds += 1;
                    if rounds < 8 {
                        continue;
                    }
                    // Busy session: give other tasks a turn, then come back.
                    cx.waker().wake_by_ref();
                }
                // One waiter for kills and drains: re-armed after each wake.
                if killed.as_mut().poll(cx).is_ready() {
                    killed.set(kill.notified());
                    let _ = killed.as_mut().poll(cx);
                }
                if kill.generation() != seen {
                    return Poll::Ready(End::Killed);
                }
                // Idle, and everything the server said has reached the
                // client (its last ReadyForQuery above all): closed once
                // quiet for DRAIN_QUIET (see there), or at once when the
                // drain is older than DRAIN_PATIENCE.
                let mut drain_at = None;
                if kill.drains() != drains_seen && relay.track.idle() && down.pending.is_empty() && up.pending.is_empty() {
                    let patience = kill.drained_at().map_or(*last, |d| d + DRAIN_PATIENCE);
                    let at = (*last + DRAIN_QUIET).min(patience);
                    if Instant::now() >= at {
                        return Poll::Ready(End::Drained);
                    }
                    drain_at = Some(at);
                }
                let (mut deadline, mut which) = deadline(&relay.timeouts, up, down, *last);
                if let Some(at) = drain_at
                    && deadline.is_none_or(|d| at < d)
                {
                    (deadline, which) = (Some(at), End::Drained);
                }
                match (deadline, *armed) {
                    (Some(d), Some(a)) if a <= d => {}
                    (Some(d), _) => {
                        timer.as_mut().reset(d);
                        *armed = Some(d);
                    }
                    (None, Some(_)) => {
                        timer.as_mut().reset(far_future());
                        *armed = None;
                    }
                    (None, None) => {}
                }
                if armed.is_some() && timer.as_mut().poll(cx).is_ready() {
                    match deadline {
                        Some(d) if Instant::now() >= d => return Poll::Ready(which),
                        // Activity since the timer was armed: re-arm at the new deadline.
                        Some(d) => {
                            timer.as_mut().reset(d);
                            *armed = Some(d);
                            let _ = timer.as_mut().poll(cx);
                        }
                        None => *armed = None,
                    }
                }
                return Poll::Pending;
            }
        })
        .await;
        flush(&self.counters, &mut flow.up, &mut flow.down, 0);
        Outcome { end, bytes_in: flow.up.moved, bytes_out: flow.down.moved }
    }
}

/// A drained session is closed once its conversation has been quiet this
/// long at a transaction boundary, not on the heels of the ReadyForQuery
/// that ended its transaction: the application may still hold the
/// connection then (node-postgres emits a close that arrives while a
/// client is checked out as an 'error' nobody listens to, and the process
/// dies). Pools return a connection within a millisecond or two.
const DRAIN_QUIET: Duration = Duration::from_millis(25);

/// A connection reused within DRAIN_QUIET for this long after the drain
/// began is closed at its next transaction boundary regardless.
const DRAIN_PATIENCE: Duration = Duration::from_secs(1);

/// Where an unarmed idle timer points: a year away.
fn far_future() -> Instant {
    Instant::now() + Duration::from_secs(86400 * 365)
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
        let ms = |v: Option<NonZeroU32>| v.map(|v| Duration::from_millis(u64::from(v.get())));
        let client = ms(if down.done { t.client_fin.or(t.client) } else { t.client });
        let server = ms(if up.done { t.server_fin.or(t.server) } else { t.server });
        match (client, server) {
            (Some(c), Some(s)) if s < c => (Some(last + s), End::ServerTimeout),
            (Some(c), _) => (Some(last + c), End::ClientTimeout),
            (None, Some(s)) => (Some(last + s), End::ServerTimeout),
            (None, None) => (None, End::Normal),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timeouts_keep_whole_milliseconds_rounding_up() {
        let t = Timeouts::new(Some(Duration::from_micros(500)), None, Some(Duration::from_secs(86400 * 365)), Some(Duration::from_millis(1500)));
        let (up, down) = (Direction::default(), Direction { done: true, ..Default::default() });
        let now = Instant::now();
        // Both directions open: the client's timeout (the only one set) applies.
        assert_eq!(deadline(&t, &up, &up, now), (Some(now + Duration::from_millis(1)), End::ClientTimeout));
        // The server has finished sending: timeout client-fin applies, capped at u32::MAX ms.
        assert_eq!(deadline(&t, &up, &down, now), (Some(now + Duration::from_millis(u64::from(u32::MAX))), End::ClientTimeout));
        // The client has finished sending: timeout server-fin applies to the server.
        let fin = Timeouts::new(None, None, None, Some(Duration::from_millis(1500)));
        assert_eq!(deadline(&fin, &down, &up, now), (Some(now + Duration::from_millis(1500)), End::ServerTimeout));
        assert_eq!(deadline(&fin, &up, &up, now), (None, End::Normal));
        assert_eq!(deadline(&Timeouts::default(), &up, &up, now), (None, End::Normal));
    }
}
