//! Health checking: one task per checked server runs its probe on HAProxy's
//! schedule, feeds the rise/fall state machine, and publishes transitions to
//! the routing snapshot. Another task per backend re-resolves server names.

pub mod fsm;
pub mod maintenance;
pub mod probe;
mod resolve;
pub mod sql;

use crate::config::{CheckSpec, OnError, OnMarkedDown, OnMarkedUp};
use crate::state::check::CheckStatus;
use crate::state::{Admin, BackendState, CheckInfo, Health, Runtime, ServerState};
use crate::syslog::Severity;
use fsm::{Fsm, Transition};
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;
use tokio_util::task::TaskTracker;

/// Starts the check and resolver tasks; they end at hard stop.
pub fn start(rt: &Arc<Runtime>, tasks: &TaskTracker) {
    for be in &rt.backends {
        for srv in &be.servers {
            if srv.cfg.check {
                let (rt, be, srv) = (rt.clone(), be.clone(), srv.clone());
                tasks.spawn(async move {
                    let prober = NetProber::new(&be, &srv, Arc::new(rt.config.global.clone()));
                    tokio::select! {
                        _ = check_loop(&be, &srv, prober) => {}
                        _ = rt.hard_stop.cancelled() => {}
                        _ = rt.retired.cancelled() => {}
                    }
                });
            }
        }
        if be.servers.iter().any(|s| s.cfg.host.parse::<std::net::IpAddr>().is_err() || s.cfg.resolvers.is_some()) {
            let (rt, be) = (rt.clone(), be.clone());
            tasks.spawn(async move {
                tokio::select! {
                    _ = resolve::resolve_loop(&be, &rt.config.resolvers) => {}
                    _ = rt.hard_stop.cancelled() => {}
                    _ = rt.retired.cancelled() => {}
                }
            });
        }
    }
}

/// While clients wait for a usable server in a backend, its servers are
/// checked at least this often (and at `fastinter` when that is shorter):
/// the check that finds the new primary releases them.
pub const HELD_CHECK_INTERVAL: Duration = Duration::from_millis(500);

/// One server's checks, for ever: HAProxy's schedule, passive errors and
/// check requests between checks. `prober` does the I/O (a seam: the
/// scheduler's tests use a scripted one under paused time).
pub async fn check_loop(be: &BackendState, srv: &ServerState, mut prober: impl Prober) {
    let cfg = &srv.cfg;
    let checked_before = srv.check.lock().unwrap_or_else(|e| e.into_inner()).status.has_result();
    let mut fsm = if checked_before {
        // Carried over a reload: continue where the previous generation was.
        Fsm::with_health(cfg.rise, cfg.fall, srv.check_health.load(std::sync::atomic::Ordering::Relaxed))
    } else if srv.health() == Health::Down {
        Fsm::new_pending(cfg.rise, cfg.fall)
    } else {
        Fsm::new(cfg.rise, cfg.fall)
    };
    // Spread the first checks over one interval so servers are not all
    // checked at the same instant.
    let mut next = Instant::now() + cfg.inter.mul_f64(fastrand::f64());
    loop {
        tokio::select! {
            biased;
            _ = srv.woken() => {
                if apply_passive(be, srv, &mut fsm) {
                    // HAProxy: every on-error action brings the next check
                    // forward to fastinter.
                    next = next.min(Instant::now() + cfg.fastinter);
                }
                if srv.take_check_request() {
                    next = Instant::now();
                }
            }
            _ = tokio::time::sleep_until(next) => {
                srv.take_check_request();
                if srv.admin() != Admin::Maint && srv.checks_enabled() {
                    let seen = prober.probe(be, srv).await;
                    apply(be, srv, &mut fsm, seen);
                }
                srv.check_health.store(fsm.health(), std::sync::atomic::Ordering::Relaxed);
                next = Instant::now() + interval(be, srv, &fsm);
            }
        }
    }
}

/// HAProxy's interval for the state, shortened while clients are held.
fn interval(be: &BackendState, srv: &ServerState, fsm: &Fsm) -> Duration {
    let cfg = &srv.cfg;
    let normal = fsm.interval(cfg.inter, cfg.fastinter, cfg.downinter);
    if be.holding.load(std::sync::atomic::Ordering::Relaxed) > 0 { normal.min(cfg.fastinter).min(HELD_CHECK_INTERVAL) } else { normal }
}

/// Applies `on-error` once sessions saw `error-limit` consecutive errors;
/// returns whether it did. The check status becomes HAProxy's `HANA`
/// ("Health analyze").
fn apply_passive(be: &BackendState, srv: &ServerState, fsm: &mut Fsm) -> bool {
    let Some((n, why)) = srv.take_passive() else { return false };
    // HAProxy's info (the reason, "Health analyze", is the status's description).
    let desc = format!("Detected {n} consecutive errors, last one was: {why}");
    match srv.cfg.observe.action {
        OnError::FastInter => {
            tracing::info!(target: "pglb::health", backend = %be.cfg.name, server = %srv.cfg.name, reason = %desc, "Server {}/{}: {desc}; checking at fastinter", be.cfg.name, srv.cfg.name);
        }
        OnError::FailCheck => record(be, srv, fsm, Verdict::Failed, CheckStatus::Hana, desc, Duration::ZERO),
        OnError::SuddenDeath => {
            fsm.sudden_death();
            record(be, srv, fsm, Verdict::Failed, CheckStatus::Hana, desc, Duration::ZERO);
        }
        OnError::MarkDown => record(be, srv, fsm, Verdict::Down, CheckStatus::Hana, desc, Duration::ZERO),
    }
    if srv.clear_passive_down() {
        be.republish();
    }
    true
}

/// What one check saw, before it is judged against the rise/fall state.
#[derive(Debug, Clone, PartialEq)]
pub struct Probed {
    pub ok: bool,
    /// HAProxy's check status (L4OK, L7STS, ...).
    pub status: CheckStatus,
    pub desc: String,
    pub duration: Duration,
    /// When the probe started (a claim to be primary dates from then).
    pub started: Instant,
    /// The SQL check's role answer: `Some(true)` primary.
    pub primary: Option<bool>,
    /// The server answered a role the backend must not route to.
    pub wrong_role: bool,
}

impl Probed {
    fn failed(status: CheckStatus, desc: String, started: Instant) -> Probed {
        Probed { ok: false, status, desc, duration: started.elapsed(), started, primary: None, wrong_role: false }
    }
}

/// Runs one check of a server (the I/O side of a check).
pub trait Prober: Send {
    fn probe<'a>(&'a mut self, be: &'a BackendState, srv: &'a ServerState) -> std::pin::Pin<Box<dyn Future<Output = Probed> + Send + 'a>>;
}

/// The real checks: TCP, tcp-check rules, PostgreSQL start-up, HTTP, or
/// the SQL-level check (which keeps its connection between checks).
pub struct NetProber {
    sql: Option<sql::SqlProbe>,
}

impl NetProber {
    /// `global` gives `password-env` the configuration's `setenv`s.
    pub fn new(be: &BackendState, srv: &ServerState, global: Arc<crate::config::Global>) -> Self {
        let sql = match &be.cfg.check {
            CheckSpec::Pgsql(p) if p.is_sql() => Some(sql::SqlProbe::new(p.clone(), srv.cfg.check_tls.clone(), global)),
            _ => None,
        };
        NetProber { sql }
    }
}

impl Prober for NetProber {
    fn probe<'a>(&'a mut self, be: &'a BackendState, srv: &'a ServerState) -> std::pin::Pin<Box<dyn Future<Output = Probed> + Send + 'a>> {
        Box::pin(net_probe(be, srv, self.sql.as_mut()))
    }
}

async fn net_probe(be: &BackendState, srv: &ServerState, sql: Option<&mut sql::SqlProbe>) -> Probed {
    let cfg = &srv.cfg;
    let started = Instant::now();
    let Some(addr) = srv.addr() else {
        return Probed::failed(CheckStatus::Unresolvable, format!("{} does not resolve", cfg.host), started);
    };
    let port = cfg.check_port.unwrap_or(addr.port());
    let check_addr = match cfg.check_addr.as_deref() {
        None => addr.ip(),
        Some(a) => match resolve_check_addr(a, port, cfg.inter).await {
            Ok(ip) => ip,
            Err(why) => return Probed::failed(CheckStatus::L4Con, format!("check addr {a} does not resolve: {why}"), started),
        },
    };
    let target = probe::Target {
        addr: std::net::SocketAddr::new(check_addr, port),
        // HAProxy: min(timeout connect, inter) to connect, then timeout check
        // (or inter when unset) to read the answer.
        connect_timeout: be.cfg.timeout_connect.map_or(cfg.inter, |c| c.min(cfg.inter)),
        read_timeout: be.cfg.timeout_check.unwrap_or(cfg.inter),
    };
    if let (Some(probe), CheckSpec::Pgsql(check)) = (sql, &be.cfg.check) {
        let answer = probe.probe(target.addr, target.read_timeout.max(target.connect_timeout)).await;
        return match answer {
            Ok(mut info) => {
                if !info.primary
                    && let Some(primary_lsn) = primary_lsn(be, srv)
                {
                    info.lag_bytes = primary_lsn.saturating_sub(info.lsn);
                }
                *srv.pg.lock().unwrap_or_else(|e| e.into_inner()) = Some(info);
                let (ok, status, desc, wrong_role) = match sql::judge(check, &info) {
                    Ok(desc) => (true, CheckStatus::L7Ok, desc, false),
                    Err(unfit) => (false, CheckStatus::L7Sts, unfit.to_string(), unfit.is_wrong_role()),
                };
                Probed { ok, status, desc, duration: started.elapsed(), started, primary: Some(info.primary), wrong_role }
            }
            Err(e) => {
                let status = match e {
                    sql::SqlError::Timeout => CheckStatus::L7Tout,
                    sql::SqlError::Connect(_) => CheckStatus::L4Con,
                    sql::SqlError::Resource(_) => CheckStatus::SockErr,
                    sql::SqlError::NewConnection { status, .. } => status,
                    _ => CheckStatus::L7Sts,
                };
                Probed::failed(status, e.to_string(), started)
            }
        };
    }
    let r = probe::run(&be.cfg.check, target).await;
    Probed { ok: r.ok, status: r.status, desc: r.desc, duration: r.duration, started, primary: None, wrong_role: false }
}

/// Judges one check: the server's claim to be primary, the rise/fall state
/// (a wrong role is DOWN at once, the only primary of a backend without one
/// is UP at once), and the routing snapshot.
fn apply(be: &BackendState, srv: &ServerState, fsm: &mut Fsm, p: Probed) {
    let (sql_check, strict) = match &be.cfg.check {
        CheckSpec::Pgsql(c) => (c.is_sql(), c.strict_rise),
        _ => (false, false),
    };
    // What the server is now, as this check saw it: a failed check leaves no
    // claim to be primary behind (a stopped primary's last answer must not
    // make a promoted replica look like a split brain).
    if sql_check {
        srv.note_role(if p.ok { p.primary } else { None }, p.started);
    }
    // A primary that came back as a replica (or the reverse) must not get
    // `fall - 1` more checks' worth of sessions: DOWN at once. The only
    // server that proves primary in a backend without one is adopted at
    // once (unless `strict-rise`): nothing else can take the writes.
    let verdict = if p.wrong_role {
        Verdict::Down
    } else if p.ok && p.primary == Some(true) && be.requires_primary() && !strict && !one_success_from_up(fsm) && sole_claimant(be, srv) {
        Verdict::Adopt
    } else {
        Verdict::from(p.ok)
    };
    record(be, srv, fsm, verdict, p.status, p.desc, p.duration);
    if sql_check && srv.health() == Health::Down && !p.ok {
        *srv.pg.lock().unwrap_or_else(|e| e.into_inner()) = None;
    }
    if be.requires_primary() {
        // Claims decide routing: a second primary must be noticed at once,
        // not at the next transition.
        be.republish();
    }
}

/// Why a `check ... addr` name gave no address.
#[derive(Debug, thiserror::Error)]
enum Unresolved {
    #[error("no address")]
    NoAddress,
    #[error("{0}")]
    Lookup(#[from] std::io::Error),
    #[error("timed out")]
    TimedOut,
}

/// `check ... addr`: an IP, or a host name resolved at each check (the
/// first answer), within `limit`.
async fn resolve_check_addr(addr: &str, port: u16, limit: Duration) -> Result<std::net::IpAddr, Unresolved> {
    if let Ok(ip) = addr.parse() {
        return Ok(ip);
    }
    match tokio::time::timeout(limit, tokio::net::lookup_host((addr, port))).await {
        Ok(found) => found?.next().map(|a| a.ip()).ok_or(Unresolved::NoAddress),
        Err(_) => Err(Unresolved::TimedOut),
    }
}

/// The WAL position of a server of the same backend that reports primary.
fn primary_lsn(be: &BackendState, except: &ServerState) -> Option<u64> {
    be.servers
        .iter()
        .filter(|s| s.index != except.index)
        .filter_map(|s| *s.pg.lock().unwrap_or_else(|e| e.into_inner()))
        .filter(|p| p.primary)
        .map(|p| p.lsn)
        .max()
}

/// Whether `rise` has nothing to add: the server is UP, or one success
/// (this one) makes it UP anyway.
fn one_success_from_up(fsm: &Fsm) -> bool {
    let mut next = *fsm;
    fsm.is_up() || next.record(true) == Some(Transition::Up)
}

/// No other server of the backend (out of maintenance) claims to be primary.
fn sole_claimant(be: &BackendState, srv: &ServerState) -> bool {
    !be.servers.iter().any(|s| s.index != srv.index && s.admin() != Admin::Maint && s.claim().is_some())
}

/// What one check concluded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Passed,
    Failed,
    /// DOWN without waiting for `fall` failures: the server answered with a
    /// role the backend must not route to, or `on-error mark-down`.
    Down,
    /// Passed, and UP without waiting for `rise`: the only server that
    /// proves to be primary in a `role primary` backend that has none.
    Adopt,
}

impl From<bool> for Verdict {
    fn from(ok: bool) -> Self {
        if ok { Verdict::Passed } else { Verdict::Failed }
    }
}

/// Applies one result: state machine, check info, transition side effects.
pub fn record(be: &BackendState, srv: &ServerState, fsm: &mut Fsm, verdict: Verdict, status: CheckStatus, desc: String, duration: Duration) {
    let desc = if verdict == Verdict::Adopt && !fsm.is_up() {
        format!(
            "{desc}; the only primary of the backend, taken without waiting for rise {} (option pgsql-check ... strict-rise to wait)",
            srv.cfg.rise
        )
    } else {
        desc
    };
    let ok = matches!(verdict, Verdict::Passed | Verdict::Adopt);
    if !ok && status == CheckStatus::SockErr {
        // pglb itself is out of file descriptors: that says nothing about
        // the server, whose state stays as it was (HAProxy's SOCKERR).
        let mut info = srv.check.lock().unwrap_or_else(|e| e.into_inner());
        if info.status != CheckStatus::SockErr {
            tracing::warn!(target: "pglb::health", backend = %be.cfg.name, server = %srv.cfg.name, reason = %desc, "Health check for server {}/{} could not run: {desc}", be.cfg.name, srv.cfg.name);
        }
        *info = CheckInfo { status: CheckStatus::SockErr, desc, duration_ms: duration.as_millis() as u64 };
        return;
    }
    let changed_info = {
        let mut info = srv.check.lock().unwrap_or_else(|e| e.into_inner());
        let changed = info.status != status;
        *info = CheckInfo { status, desc: desc.clone(), duration_ms: duration.as_millis() as u64 };
        changed
    };
    if ok {
        srv.passive_ok();
    } else {
        crate::state::counters::Counters::add(&srv.counters.check_failures, 1);
    }
    let transition = match verdict {
        Verdict::Down => fsm.fail_now(),
        Verdict::Adopt => fsm.force_up(),
        _ => fsm.record(ok),
    };
    // A passed check supersedes a session's mark-down that the check task
    // has not applied yet (the server answers again).
    if ok && srv.clear_passive_down() && transition.is_none() {
        be.republish();
    }
    let health_changed = srv.check_health.load(std::sync::atomic::Ordering::Relaxed) != fsm.health();
    srv.check_health.store(fsm.health(), std::sync::atomic::Ordering::Relaxed);
    // HAProxy logs the check when its status or the rise/fall counter changes.
    if (changed_info || health_changed) && be.cfg.log_health_checks {
        let line = check_line(be, srv, fsm, ok, status, &desc, duration);
        tracing::info!(target: "pglb::health", backend = %be.cfg.name, server = %srv.cfg.name, check_status = status.code(), check_desc = %desc, "{line}");
        crate::syslog::send(&be.cfg.logs, Severity::Notice, &line);
    }
    let Some(t) = transition else { return };
    let health = if t == Transition::Up { Health::Up } else { Health::Down };
    if !srv.set_health(health) {
        return;
    }
    if t == Transition::Down {
        crate::state::counters::Counters::add(&srv.counters.down_transitions, 1);
    }
    be.republish();
    let usable = be.usable.load();
    let (active, backup) = up_counts(be);
    let none_usable = usable.servers.is_empty();
    let sessions = crate::state::counters::Counters::get(&srv.counters.cur);
    let word = if t == Transition::Up { "UP" } else { "DOWN" };
    // HAProxy's words (server.c, srv_update_status); the reason is left to
    // the health-check line just logged when there is one.
    let queued = crate::state::counters::Counters::get(&be.counters.queue_cur);
    let reason = if be.cfg.log_health_checks { String::new() } else { check_reason(status, &desc, duration) };
    let msg = if t == Transition::Up {
        format!(
            "{}erver {}/{} is UP{reason}. {active} active and {backup} backup servers online. 0 sessions requeued, {queued} total in queue.",
            if srv.cfg.backup { "Backup S" } else { "S" },
            be.cfg.name,
            srv.cfg.name,
        )
    } else {
        format!(
            "{}erver {}/{} is DOWN{reason}. {active} active and {backup} backup servers left.{} {sessions} sessions active, 0 requeued, {queued} remaining in queue.",
            if srv.cfg.backup { "Backup S" } else { "S" },
            be.cfg.name,
            srv.cfg.name,
            if backup > 0 && active == 0 { " Running on backup." } else { "" },
        )
    };
    if t == Transition::Up {
        tracing::info!(target: "pglb::health", backend = %be.cfg.name, server = %srv.cfg.name, state = word, check_status = status.code(), reason = %desc, "{msg}");
        crate::syslog::send(&be.cfg.logs, Severity::Notice, &msg);
    } else {
        tracing::warn!(target: "pglb::health", backend = %be.cfg.name, server = %srv.cfg.name, state = word, check_status = status.code(), reason = %desc, "{msg}");
        crate::syslog::send(&be.cfg.logs, Severity::Alert, &msg);
    }
    if none_usable {
        // HAProxy quotes the name on stderr, not in syslog.
        tracing::error!(target: "pglb::health", backend = %be.cfg.name, "backend '{}' has no server available!", be.cfg.name);
        crate::syslog::send(&be.cfg.logs, Severity::Emerg, &format!("backend {} has no server available!", be.cfg.name));
    }
    match t {
        Transition::Down if srv.cfg.on_marked_down == OnMarkedDown::ShutdownSessions => srv.kill_sessions(),
        Transition::Up if srv.cfg.on_marked_up == OnMarkedUp::ShutdownBackupSessions && !srv.cfg.backup => {
            for b in be.servers.iter().filter(|s| s.cfg.backup) {
                b.kill_sessions();
            }
        }
        _ => {}
    }
}

/// HAProxy's counts in its state lines: the servers UP and not in
/// maintenance, active and backup.
pub(crate) fn up_counts(be: &BackendState) -> (usize, usize) {
    be.servers
        .iter()
        .filter(|x| x.health() == Health::Up && x.admin() != Admin::Maint)
        .fold((0, 0), |(a, b), x| if x.cfg.backup { (a, b + 1) } else { (a + 1, b) })
}

/// HAProxy's `, reason: DESCRIPTION[, code: N], info: "INFO", check
/// duration: Nms` (srv_append_status). pglb's checks have no HTTP code:
/// `code: 0` for layer-7 results, as HAProxy's tcp-check and pgsql-check.
fn check_reason(status: CheckStatus, info: &str, duration: Duration) -> String {
    let code = if matches!(status, CheckStatus::L7Ok | CheckStatus::L7Sts) { ", code: 0" } else { "" };
    let info = if info.is_empty() { String::new() } else { format!(", info: \"{}\"", info.replace('"', "\\\"")) };
    format!(", reason: {}{code}{info}, check duration: {}ms", status.description(), duration.as_millis())
}

/// HAProxy's health-check line (`option log-health-checks`):
/// `Health check for server B/S succeeded|failed, reason: ..., status: X/Y UP|DOWN.`
fn check_line(be: &BackendState, srv: &ServerState, fsm: &Fsm, ok: bool, status: CheckStatus, info: &str, duration: Duration) -> String {
    let (rise, fall, health) = (srv.cfg.rise, srv.cfg.fall, fsm.health());
    let (x, y, word) =
        if health >= rise { (health - rise + 1, fall, if srv.weight() == 0 { "DRAIN" } else { "UP" }) } else { (health, rise, "DOWN") };
    format!(
        "Health check for {}server {}/{} {}{}, status: {x}/{y} {word}.",
        if srv.cfg.backup { "backup " } else { "" },
        be.cfg.name,
        srv.cfg.name,
        if ok { "succeeded" } else { "failed" },
        check_reason(status, info, duration)
    )
}

#[cfg(test)]
mod schedule_tests;
