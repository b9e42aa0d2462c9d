//! Per-frontend/backend/server counters: relaxed atomics, cheap enough to
//! bump on every session and read by the stats surfaces at any time.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

#[derive(Debug, Default)]
pub struct Counters {
    /// Sessions open now.
    pub cur: AtomicU64,
    /// Highest `cur` seen.
    pub max: AtomicU64,
    /// Sessions ever started.
    pub total: AtomicU64,
    /// Bytes from clients to servers.
    pub bytes_in: AtomicU64,
    /// Bytes from servers to clients.
    pub bytes_out: AtomicU64,
    /// Failed connection attempts to servers.
    pub conn_errors: AtomicU64,
    /// Connection attempts retried (HAProxy's `wretr`).
    pub retries: AtomicU64,
    /// Retries sent to another server (HAProxy's `wredis`).
    pub redispatches: AtomicU64,
    /// Sessions waiting for a server slot now, and the most ever.
    pub queue_cur: AtomicU64,
    pub queue_max: AtomicU64,
    /// Clients refused with a PostgreSQL error by pglb itself.
    pub errors_sent: AtomicU64,
    /// Sessions closed by pglb (shutdown sessions, server marked down).
    pub killed: AtomicU64,
    /// Failed health checks (servers only).
    pub check_failures: AtomicU64,
    /// UP to DOWN transitions (servers only).
    pub down_transitions: AtomicU64,
    /// Sum of connect times in microseconds, with `total`, for averages.
    pub connect_time_us: AtomicU64,
    /// Sum of queue waits and of session durations, in milliseconds.
    pub queue_time_ms: AtomicU64,
    pub session_time_ms: AtomicU64,
    /// Sessions ended by a client error/abort (CD) or a server one (SD).
    pub cli_abrt: AtomicU64,
    pub srv_abrt: AtomicU64,
    /// Clients that did not speak PostgreSQL (HAProxy's `ereq`).
    pub req_errors: AtomicU64,
    /// Unix time of the last session start (0 = never).
    pub last_session: AtomicU64,
}

impl Counters {
    /// A session starts: bumps cur/total and the max watermark.
    pub fn open(&self) {
        self.total.fetch_add(1, Relaxed);
        self.last_session.store(crate::state::unix_now(), Relaxed);
        let now = self.cur.fetch_add(1, Relaxed) + 1;
        self.max.fetch_max(now, Relaxed);
    }

    pub fn close(&self) {
        self.cur.fetch_sub(1, Relaxed);
    }

    pub fn enqueue(&self) {
        let now = self.queue_cur.fetch_add(1, Relaxed) + 1;
        self.queue_max.fetch_max(now, Relaxed);
    }

    pub fn dequeue(&self) {
        self.queue_cur.fetch_sub(1, Relaxed);
    }

    pub fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Relaxed);
    }

    pub fn get(counter: &AtomicU64) -> u64 {
        counter.load(Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn open_close_track_max() {
        let c = Counters::default();
        c.open();
        c.open();
        c.close();
        c.open();
        assert_eq!(Counters::get(&c.cur), 2);
        assert_eq!(Counters::get(&c.max), 2);
        assert_eq!(Counters::get(&c.total), 3);
    }
}
