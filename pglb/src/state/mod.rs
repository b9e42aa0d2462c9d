//! Runtime state built from a configuration: one entry per frontend,
//! backend and server, with counters and the routing snapshot.
//!
//! Data flows one way: health checks and the runtime API change a server's
//! health/admin state and call [`BackendState::republish`]; sessions only
//! load the published [`Usable`] snapshot and bump counters.

pub mod cancel;
pub mod check;
pub mod counters;
pub mod routing;

use crate::config::{Backend, Config, Frontend, Server};
use arc_swap::{ArcSwap, ArcSwapOption};
use cancel::CancelRegistry;
use counters::Counters;
use routing::Usable;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU32, AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};
use tokio::sync::{Notify, Semaphore};
use tokio_util::sync::CancellationToken;

/// What the health checks say.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Health {
    Up = 0,
    Down = 1,
}

/// What the operator says (runtime API), independent of health.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Admin {
    Ready = 0,
    /// No new sessions; existing ones continue; checks continue.
    Drain = 1,
    /// No new sessions and no checks.
    Maint = 2,
}

/// Last health-check outcome, for logs and the stats surfaces.
#[derive(Debug, Clone, Default)]
pub struct CheckInfo {
    /// HAProxy's status; `Ini` until the first check ends.
    pub status: check::CheckStatus,
    /// Human description, e.g. "role replica, lag 0.0s".
    pub desc: String,
    pub duration_ms: u64,
}

#[derive(Debug)]
pub struct ServerState {
    pub cfg: Server,
    /// Position in the backend's server list (HAProxy's server id - 1).
    pub index: usize,
    /// Resolved address; `None` while the name does not resolve. Changed
    /// through [`BackendState::set_addr`] (which republishes).
    addr: ArcSwapOption<SocketAddr>,
    health: AtomicU8,
    admin: AtomicU8,
    /// Changed through [`BackendState::set_weight`] (which republishes).
    weight: AtomicU32,
    pub counters: Counters,
    /// Unix time of the last UP/DOWN or admin change.
    pub last_change: AtomicU64,
    pub check: Mutex<CheckInfo>,
    /// The rise/fall counter of the check (HAProxy's check_health).
    pub check_health: AtomicU32,
    /// Checks paused by `disable health` (the state stays as it is).
    checks_enabled: std::sync::atomic::AtomicBool,
    /// Seconds spent DOWN before the current state, and when the current DOWN began (0 = UP).
    pub downtime: AtomicU64,
    pub down_since: AtomicU64,
    /// What the SQL-level check last learned (role, lag); `None` otherwise.
    pub pg: Mutex<Option<crate::pg::PgInfo>>,
    /// `set server B/S fqdn NAME`: the name resolved instead of the
    /// configuration's host (until the next reload).
    fqdn: Mutex<Option<String>>,
    /// Thrown to close every session on this server (`shutdown sessions`,
    /// `on-marked-down shutdown-sessions`, a hard stop); sessions watch it.
    /// A reload that carries the server over hands it on, so it reaches the
    /// sessions of earlier generations too.
    pub kill: ArcSwap<KillSwitch>,
    /// Set when a reload carried this server into the next generation (its
    /// sessions then continue rather than drain).
    pub carried: std::sync::atomic::AtomicBool,
    /// The server proves to be primary now: its last check passed and said
    /// so. Cleared by a failed check, a replica answer, or passive errors.
    /// Split brain and promotions are judged on these, never on a role
    /// remembered from a check that has failed since.
    claim: Mutex<Option<Claim>>,
    /// Passive health: consecutive errors sessions saw, and the last one.
    passive_errors: AtomicU32,
    passive_last: Mutex<String>,
    /// Set by a session when passive errors reach `error-limit` with
    /// `on-error mark-down`: out of routing at once, before the check task
    /// (which owns the rise/fall state) marks it DOWN.
    passive_down: AtomicBool,
    /// Asks the check task to look at passive errors or check at once.
    wake: Notify,
    check_asap: AtomicBool,
}

/// A server's current claim to be primary.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Claim {
    /// The first check of this unbroken run of primary answers started.
    pub since: tokio::time::Instant,
    /// The latest check that said primary started (a check's start, not its
    /// end: what it saw may be that old).
    pub confirmed: tokio::time::Instant,
}

/// Closes the sessions of a server on demand. A session notes the
/// [`generation`](KillSwitch::generation) once its server connection is
/// made, and ends when it changes; [`notified`](KillSwitch::notified) wakes
/// it. One waiter per
/// session (a `watch` receiver's would be twice the size): an idle
/// session's memory is mostly the state it keeps to be woken.
#[derive(Debug, Default)]
pub struct KillSwitch {
    generation: AtomicU64,
    /// Bumped by [`drain`](KillSwitch::drain): sessions that noted an
    /// earlier value close at their next transaction boundary.
    drains: AtomicU64,
    /// When the last drain was asked for.
    drained_at: Mutex<Option<tokio::time::Instant>>,
    notify: Notify,
}

impl KillSwitch {
    pub fn generation(&self) -> u64 {
        self.generation.load(std::sync::atomic::Ordering::SeqCst)
    }

    pub fn drains(&self) -> u64 {
        self.drains.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// When the last drain was asked for (`None`: never).
    pub fn drained_at(&self) -> Option<tokio::time::Instant> {
        *self.drained_at.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Asks every session that noted an earlier drain count to close at
    /// its next transaction boundary (at once when idle).
    pub fn drain(&self) {
        *self.drained_at.lock().unwrap_or_else(|e| e.into_inner()) = Some(tokio::time::Instant::now());
        self.drains.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        self.notify.notify_waiters();
    }

    /// Ends every session that noted an earlier generation.
    pub fn throw(&self) {
        self.generation.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        self.notify.notify_waiters();
    }

    /// Resolves at the next [`throw`](KillSwitch::throw) after this call
    /// (tokio's `Notified` counts from its creation, not its first poll).
    /// A session notes the generation, then makes this, then compares the
    /// generation at each wake-up: a throw before the future exists
    /// changed the generation, one after it wakes the future.
    pub fn notified(&self) -> tokio::sync::futures::Notified<'_> {
        self.notify.notified()
    }
}

pub fn unix_now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

impl ServerState {
    pub fn new(cfg: Server, index: usize) -> Self {
        let addr = cfg.host.parse::<std::net::IpAddr>().ok().map(|ip| Arc::new(SocketAddr::new(ip, cfg.port)));
        let admin = if cfg.disabled { Admin::Maint } else { Admin::Ready };
        // HAProxy starts a checked server UP ("going down" on its first
        // failure); an unresolved name is unusable through `addr` anyway.
        let health = Health::Up;
        ServerState {
            weight: AtomicU32::new(cfg.weight),
            cfg,
            index,
            addr: ArcSwapOption::new(addr),
            health: AtomicU8::new(health as u8),
            admin: AtomicU8::new(admin as u8),
            counters: Counters::default(),
            last_change: AtomicU64::new(unix_now()),
            check: Mutex::new(CheckInfo::default()),
            pg: Mutex::new(None),
            fqdn: Mutex::new(None),
            check_health: AtomicU32::new(0),
            checks_enabled: std::sync::atomic::AtomicBool::new(true),
            downtime: AtomicU64::new(0),
            down_since: AtomicU64::new(0),
            kill: ArcSwap::default(),
            carried: AtomicBool::new(false),
            claim: Mutex::new(None),
            passive_errors: AtomicU32::new(0),
            passive_last: Mutex::new(String::new()),
            passive_down: AtomicBool::new(false),
            wake: Notify::new(),
            check_asap: AtomicBool::new(false),
        }
    }

    /// The resolved address (`None` while the name does not resolve).
    pub fn addr(&self) -> Option<SocketAddr> {
        self.addr.load().as_deref().copied()
    }

    pub fn weight(&self) -> u32 {
        self.weight.load(Relaxed)
    }

    pub fn checks_enabled(&self) -> bool {
        self.checks_enabled.load(Relaxed)
    }

    /// `disable health` / `enable health`: checks pause, the state stays.
    /// The host name the server is resolved by: `set server ... fqdn`'s,
    /// else the configuration's (which may be an IP address).
    pub fn host(&self) -> String {
        self.fqdn.lock().unwrap_or_else(|e| e.into_inner()).clone().unwrap_or_else(|| self.cfg.host.clone())
    }

    /// Sets the name to resolve (`set server ... fqdn`); the old one.
    pub fn set_fqdn(&self, name: &str) -> String {
        let old = self.host();
        *self.fqdn.lock().unwrap_or_else(|e| e.into_inner()) = Some(name.to_string());
        old
    }

    pub fn set_checks_enabled(&self, enabled: bool) {
        self.checks_enabled.store(enabled, Relaxed);
    }

    pub fn claim(&self) -> Option<Claim> {
        *self.claim.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Records what a check that started at `at` said about the role
    /// (`Some(true)` primary, `Some(false)` not primary, `None` failed).
    /// Returns true when the claim appeared or disappeared.
    pub fn note_role(&self, primary: Option<bool>, at: tokio::time::Instant) -> bool {
        let mut claim = self.claim.lock().unwrap_or_else(|e| e.into_inner());
        let had = claim.is_some();
        *claim = match (primary, *claim) {
            (Some(true), Some(c)) => Some(Claim { confirmed: at, ..c }),
            (Some(true), None) => Some(Claim { since: at, confirmed: at }),
            _ => None,
        };
        had != claim.is_some()
    }

    /// A session saw this server fail before any byte reached its client: a
    /// refused or timed-out connect, or a startup answer saying it takes no
    /// clients (`observe layer4`). At `error-limit` consecutive errors the
    /// server stops counting as a primary, `on-error mark-down` takes it out
    /// of routing at once, and the check task applies the action. Returns
    /// true when the server left routing.
    pub fn passive_error(&self, be: &BackendState, why: &str) -> bool {
        let observe = self.cfg.observe;
        if !observe.layer4 || !self.cfg.check {
            return false;
        }
        *self.passive_last.lock().unwrap_or_else(|e| e.into_inner()) = why.to_string();
        if self.passive_errors.fetch_add(1, Relaxed) + 1 < observe.error_limit {
            return false;
        }
        let dropped_claim = self.claim.lock().unwrap_or_else(|e| e.into_inner()).take().is_some();
        let marked = observe.action == crate::config::OnError::MarkDown && !self.passive_down.swap(true, Relaxed);
        if dropped_claim || marked {
            be.republish();
        }
        self.wake.notify_one();
        marked && self.health() == Health::Up
    }

    /// A session got through: the consecutive-error count starts again.
    pub fn passive_ok(&self) {
        if self.passive_errors.load(Relaxed) != 0 {
            self.passive_errors.store(0, Relaxed);
        }
    }

    /// For the check task: the passive errors to act on (count and last
    /// error), once they reached `error-limit`; resets the count.
    pub fn take_passive(&self) -> Option<(u32, String)> {
        let n = self.passive_errors.load(Relaxed);
        if n < self.cfg.observe.error_limit.max(1) {
            return None;
        }
        self.passive_errors.store(0, Relaxed);
        Some((n, std::mem::take(&mut *self.passive_last.lock().unwrap_or_else(|e| e.into_inner()))))
    }

    /// The check task marked the server DOWN (or it passed a check): the
    /// session-side mark-down is no longer needed.
    pub fn clear_passive_down(&self) -> bool {
        self.passive_down.swap(false, Relaxed)
    }

    /// Asks the check task to check now (a contested primary claim, clients
    /// waiting for a usable server).
    pub fn request_check(&self) {
        if self.cfg.check && !self.check_asap.swap(true, Relaxed) {
            self.wake.notify_one();
        }
    }

    /// For the check task: wakes at a passive error or a check request.
    pub fn woken(&self) -> tokio::sync::futures::Notified<'_> {
        self.wake.notified()
    }

    /// For the check task: whether a check was asked for (and clears it).
    pub fn take_check_request(&self) -> bool {
        self.check_asap.swap(false, Relaxed)
    }

    pub fn health(&self) -> Health {
        if self.health.load(Relaxed) == 0 { Health::Up } else { Health::Down }
    }

    pub fn admin(&self) -> Admin {
        match self.admin.load(Relaxed) {
            0 => Admin::Ready,
            1 => Admin::Drain,
            _ => Admin::Maint,
        }
    }

    /// Sets health; returns true when it changed.
    pub fn set_health(&self, h: Health) -> bool {
        let changed = self.health.swap(h as u8, Relaxed) != h as u8;
        if changed {
            let now = unix_now();
            self.last_change.store(now, Relaxed);
            match h {
                Health::Down => self.down_since.store(now, Relaxed),
                Health::Up => {
                    let since = self.down_since.swap(0, Relaxed);
                    if since > 0 {
                        self.downtime.fetch_add(now.saturating_sub(since), Relaxed);
                    }
                }
            }
        }
        changed
    }

    /// Takes over an unchanged server's state from the previous generation.
    pub fn carry_from(&self, old: &ServerState) {
        self.health.store(old.health.load(Relaxed), Relaxed);
        self.admin.store(old.admin.load(Relaxed), Relaxed);
        self.weight.store(old.weight.load(Relaxed), Relaxed);
        self.addr.store(old.addr.load_full());
        self.last_change.store(old.last_change.load(Relaxed), Relaxed);
        self.check_health.store(old.check_health.load(Relaxed), Relaxed);
        self.checks_enabled.store(old.checks_enabled.load(Relaxed), Relaxed);
        self.downtime.store(old.downtime.load(Relaxed), Relaxed);
        self.down_since.store(old.down_since.load(Relaxed), Relaxed);
        *self.check.lock().unwrap_or_else(|e| e.into_inner()) = old.check.lock().unwrap_or_else(|e| e.into_inner()).clone();
        *self.pg.lock().unwrap_or_else(|e| e.into_inner()) = *old.pg.lock().unwrap_or_else(|e| e.into_inner());
        *self.fqdn.lock().unwrap_or_else(|e| e.into_inner()) = old.fqdn.lock().unwrap_or_else(|e| e.into_inner()).clone();
        *self.claim.lock().unwrap_or_else(|e| e.into_inner()) = old.claim();
        self.kill.store(old.kill.load_full());
        old.carried.store(true, Relaxed);
    }

    /// Total seconds spent DOWN, including the current outage.
    pub fn total_downtime(&self) -> u64 {
        let since = self.down_since.load(Relaxed);
        self.downtime.load(Relaxed) + if since > 0 { unix_now().saturating_sub(since) } else { 0 }
    }

    pub fn set_admin(&self, a: Admin) -> bool {
        let changed = self.admin.swap(a as u8, Relaxed) != a as u8;
        if changed {
            self.last_change.store(unix_now(), Relaxed);
        }
        changed
    }

    /// May receive new sessions from load balancing.
    pub fn usable(&self) -> bool {
        self.health() == Health::Up
            && self.admin() == Admin::Ready
            && !self.passive_down.load(Relaxed)
            && self.addr.load().is_some()
            && self.weight.load(Relaxed) > 0
    }

    /// Takes a connection slot if the server is under its maxconn.
    pub fn try_acquire(&self) -> bool {
        let max = self.cfg.maxconn.map(u64::from).unwrap_or(u64::MAX);
        let ok = self.counters.cur.fetch_update(Relaxed, Relaxed, |c| (c < max).then_some(c + 1)).is_ok();
        if ok {
            let now = self.counters.cur.load(Relaxed);
            self.counters.total.fetch_add(1, Relaxed);
            self.counters.max.fetch_max(now, Relaxed);
            self.counters.last_session.store(unix_now(), Relaxed);
        }
        ok
    }

    pub fn has_room(&self) -> bool {
        self.cfg.maxconn.is_none_or(|m| self.counters.cur.load(Relaxed) < u64::from(m))
    }

    /// Closes every session on this server.
    pub fn kill_sessions(&self) {
        self.kill.load().throw();
    }

    /// Closes every session on this server at its next transaction
    /// boundary (TLS sessions, which pglb cannot read, go on).
    pub fn drain_sessions(&self) {
        self.kill.load().drain();
    }
}

#[derive(Debug)]
pub struct BackendState {
    pub cfg: Backend,
    pub servers: Vec<Arc<ServerState>>,
    /// The servers load balancing may pick now; rebuilt by `republish`.
    pub usable: ArcSwap<Usable>,
    /// Round-robin cursor; survives snapshot changes.
    pub rr: AtomicUsize,
    pub counters: Counters,
    /// Wakes queued sessions when a slot frees or servers change.
    pub slot_freed: Notify,
    /// Unix time the backend last went from some usable server to none or back.
    pub last_change: AtomicU64,
    /// Two servers of a `role primary` backend both prove to be primary
    /// now: pglb routes to neither until one stops claiming it.
    pub split_brain: AtomicBool,
    /// `pause backend`: new clients wait (as when no server is usable)
    /// until `resume backend`; open sessions go on.
    pub paused: AtomicBool,
    /// Sessions waiting because no server is usable (or the backend is
    /// paused); while any wait, the servers are checked at a short interval.
    pub holding: AtomicU64,
    /// Serialises `republish`: checks, sessions (passive errors) and the
    /// runtime API all republish, from different threads.
    publish: Mutex<()>,
}

impl BackendState {
    pub fn new(cfg: Backend) -> Self {
        let servers: Vec<Arc<ServerState>> = cfg.servers.iter().cloned().enumerate().map(|(i, s)| Arc::new(ServerState::new(s, i))).collect();
        if Self::checks_role(&cfg) {
            // A server's role is unknown until its first check: routing
            // writes to a replica (or reads to a primary) before then would
            // be wrong, so these start DOWN, one success away from UP.
            for s in servers.iter().filter(|s| s.cfg.check) {
                s.set_health(Health::Down);
            }
        }
        let usable = Usable::build(&servers, cfg.allbackups, |_| true);
        BackendState {
            cfg,
            servers,
            usable: ArcSwap::from_pointee(usable),
            rr: AtomicUsize::new(0),
            counters: Counters::default(),
            slot_freed: Notify::new(),
            last_change: AtomicU64::new(unix_now()),
            split_brain: AtomicBool::new(false),
            paused: AtomicBool::new(false),
            holding: AtomicU64::new(0),
            publish: Mutex::new(()),
        }
    }

    /// True when the check requires a role (primary or replica).
    pub fn checks_role(cfg: &Backend) -> bool {
        matches!(&cfg.check, crate::config::CheckSpec::Pgsql(p) if matches!(p.role, Some(crate::config::RoleRequirement::Primary | crate::config::RoleRequirement::Replica)))
    }

    /// True when this backend must only ever route to one primary.
    pub fn requires_primary(&self) -> bool {
        matches!(&self.cfg.check, crate::config::CheckSpec::Pgsql(p) if p.role == Some(crate::config::RoleRequirement::Primary))
    }

    /// Rebuilds the routing snapshot after a health, admin, weight,
    /// address or claim change, and wakes queued sessions to try again.
    ///
    /// A `role primary` backend routes by current claims (see
    /// [`ServerState::note_role`]): with one claimant, to it alone; with
    /// none, to its UP servers as HAProxy would (a primary whose last check
    /// timed out keeps its clients until `fall`); with several, to none.
    /// Several claims are a split brain only when each was confirmed by a
    /// check that started after the newest claim began; until then the
    /// older claimants are checked again at once (a stopped primary's last
    /// answer is not a second primary).
    pub fn republish(&self) {
        let _one_writer = self.publish.lock().unwrap_or_else(|e| e.into_inner());
        let before = !self.usable.load().servers.is_empty();
        let mut usable = Usable::build(&self.servers, self.cfg.allbackups, |_| true);
        if self.requires_primary() {
            let claims: Vec<(&Arc<ServerState>, Claim)> =
                self.servers.iter().filter(|s| s.admin() != Admin::Maint).filter_map(|s| s.claim().map(|c| (s, c))).collect();
            let mut split = false;
            match claims.as_slice() {
                [] => {}
                [(only, _)] => {
                    usable = Usable::build(&self.servers, self.cfg.allbackups, |s| s.index == only.index);
                    // The only claimant, not UP yet: when a contest just
                    // ended in its favour, its next check adopts it (see
                    // health's Verdict::Adopt), so it is asked for now.
                    let strict = matches!(&self.cfg.check, crate::config::CheckSpec::Pgsql(p) if p.strict_rise);
                    if !strict && only.health() == Health::Down && only.admin() == Admin::Ready {
                        only.request_check();
                    }
                }
                _ => {
                    let newest = claims.iter().map(|(_, c)| c.since).max().expect("several claims");
                    let stale: Vec<&Arc<ServerState>> = claims.iter().filter(|(_, c)| c.confirmed < newest).map(|(s, _)| *s).collect();
                    split = stale.is_empty();
                    for s in stale {
                        s.request_check();
                    }
                    usable = Usable::default();
                }
            }
            if split != self.split_brain.swap(split, Relaxed) {
                let names: Vec<&str> = claims.iter().map(|(s, _)| &*s.cfg.name).collect();
                if split {
                    tracing::error!(target: "pglb::health", backend = %self.cfg.name, servers = ?names,
                        "split brain in backend '{}': {} all report being primary; routing to none of them until only one does", self.cfg.name, names.join(", "));
                } else {
                    tracing::warn!(target: "pglb::health", backend = %self.cfg.name, "split brain in backend '{}' is over", self.cfg.name);
                }
            }
        }
        if self.paused.load(Relaxed) {
            usable = Usable::default();
        }
        if before == usable.servers.is_empty() {
            self.last_change.store(unix_now(), Relaxed);
        }
        self.usable.store(Arc::new(usable));
        self.slot_freed.notify_waiters();
    }

    /// A server's address changed (DNS, `set server addr`): routing follows.
    pub fn set_addr(&self, srv: &ServerState, addr: SocketAddr) {
        srv.addr.store(Some(Arc::new(addr)));
        self.republish();
    }

    /// `set weight`: routing follows.
    pub fn set_weight(&self, srv: &ServerState, weight: u32) {
        srv.weight.store(weight, Relaxed);
        self.republish();
    }

    /// `pause backend` / `resume backend`; returns true when it changed.
    pub fn set_paused(&self, paused: bool) -> bool {
        let changed = self.paused.swap(paused, Relaxed) != paused;
        if changed {
            self.republish();
        }
        changed
    }

    pub fn server(&self, name: &str) -> Option<&Arc<ServerState>> {
        self.servers.iter().find(|s| *s.cfg.name == *name)
    }

    /// Most sessions that may wait for a slot; `None` = unbounded. Bounded
    /// only when every server sets `maxqueue` (HAProxy's per-server queues
    /// add up to the backend's).
    pub fn queue_limit(&self) -> Option<u64> {
        self.servers.iter().map(|s| s.cfg.maxqueue.map(u64::from)).sum()
    }
}

#[derive(Debug)]
pub struct FrontendState {
    pub cfg: Frontend,
    pub backend: Option<Arc<BackendState>>,
    pub counters: Counters,
    /// `maxconn` of this frontend: a permit per open session.
    pub limit: Option<Arc<Semaphore>>,
}

/// Everything sessions and the control surfaces share.
#[derive(Debug)]
pub struct Runtime {
    pub config: Arc<Config>,
    pub frontends: Vec<Arc<FrontendState>>,
    pub backends: Vec<Arc<BackendState>>,
    /// Global `maxconn`: a permit per open session.
    pub limit: Option<Arc<Semaphore>>,
    /// Shared by every configuration generation: a cancel may name a session
    /// opened before a reload.
    pub cancel: Arc<CancelRegistry>,
    /// Cancelled when pglb starts stopping, after `grace`: new clients are
    /// refused (shared by every generation).
    pub stopping: CancellationToken,
    /// Cancelled at SIGTERM, before `grace`: `/ready` answers 503 so that
    /// load balancers stop sending clients (shared by every generation).
    pub soft_stop: CancellationToken,
    /// Cancelled at a hard stop: checks end, and a session that is not
    /// relaying yet does not start (relaying ones end by their servers'
    /// kill switches, thrown right after).
    pub hard_stop: CancellationToken,
    /// Cancelled when a reload replaced this generation: its checks stop.
    pub retired: CancellationToken,
    /// Process start (kept across reloads).
    pub started: SystemTime,
    /// Sessions open across all frontends and generations.
    pub sessions: Arc<Counters>,
    /// 1 for the configuration pglb started with, +1 per reload.
    pub generation: u64,
}

impl Runtime {
    pub fn new(config: Arc<Config>) -> Arc<Runtime> {
        Self::next(config, None)
    }

    /// The generation after `prev` (a reload): unchanged servers keep their
    /// health, admin state, weight and address; process-wide state is shared.
    pub fn next(config: Arc<Config>, prev: Option<&Runtime>) -> Arc<Runtime> {
        let backends: Vec<Arc<BackendState>> = config.backends.iter().cloned().map(|b| Arc::new(BackendState::new(b))).collect();
        if let Some(prev) = prev {
            for be in &backends {
                let Some(old_be) = prev.backend(&be.cfg.name) else { continue };
                // A pause is the operator's, not the file's: a reload keeps it.
                be.paused.store(old_be.paused.load(Relaxed), Relaxed);
                for srv in &be.servers {
                    if let Some(old) = old_be.server(&srv.cfg.name).filter(|o| o.cfg.same_settings(&srv.cfg)) {
                        srv.carry_from(old);
                    }
                }
                be.republish();
            }
        }
        let frontends = config
            .frontends
            .iter()
            .cloned()
            .map(|f| {
                let backend = f.default_backend.as_ref().and_then(|name| backends.iter().find(|b| *b.cfg.name == *name).cloned());
                Arc::new(FrontendState {
                    limit: f.maxconn.map(|m| Arc::new(Semaphore::new(m as usize))),
                    cfg: f,
                    backend,
                    counters: Counters::default(),
                })
            })
            .collect();
        Arc::new(Runtime {
            limit: config.global.maxconn.map(|m| Arc::new(Semaphore::new(m as usize))),
            config,
            frontends,
            backends,
            cancel: prev.map(|p| p.cancel.clone()).unwrap_or_default(),
            stopping: prev.map(|p| p.stopping.clone()).unwrap_or_default(),
            soft_stop: prev.map(|p| p.soft_stop.clone()).unwrap_or_default(),
            hard_stop: CancellationToken::new(),
            retired: CancellationToken::new(),
            started: prev.map(|p| p.started).unwrap_or_else(SystemTime::now),
            sessions: prev.map(|p| p.sessions.clone()).unwrap_or_default(),
            generation: prev.map(|p| p.generation + 1).unwrap_or(1),
        })
    }

    /// The frontend that owns the listener bound for `key`.
    pub fn frontend_for(&self, key: &BindKey) -> Option<&Arc<FrontendState>> {
        self.frontends.iter().find(|f| f.cfg.binds.iter().any(|b| BindKey::of(&f.cfg, b) == *key))
    }

    pub fn backend(&self, name: &str) -> Option<&Arc<BackendState>> {
        self.backends.iter().find(|b| *b.cfg.name == *name)
    }
}

/// Identifies a listening socket across reloads: the configured address,
/// plus the frontend name for port 0 (each such bind is its own socket).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct BindKey {
    pub addr: SocketAddr,
    pub frontend: Option<String>,
}

impl BindKey {
    pub fn of(fe: &Frontend, bind: &crate::config::Bind) -> BindKey {
        BindKey { addr: bind.addr, frontend: (bind.addr.port() == 0).then(|| fe.name.to_string()) }
    }
}
