//! Statistics: one snapshot of the runtime state, rendered as HAProxy's CSV
//! (`;csv`, `show stat`), JSON, the HTML page and Prometheus metrics. Every
//! surface reads the same [`Row`]s, so they never disagree.

pub mod csv;
pub mod html;
pub mod http;
pub mod json;
pub mod prometheus;

use crate::state::counters::Counters;
use crate::state::{Admin, BackendState, FrontendState, Health, Runtime, ServerState, unix_now};
use std::sync::atomic::Ordering::Relaxed;

/// HAProxy's `type` column.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Frontend = 0,
    Backend = 1,
    Server = 2,
}

/// One line of `show stat`: a frontend, a server or a backend.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Row {
    pub pxname: String,
    pub svname: String,
    pub kind: Option<Kind>,
    pub iid: usize,
    pub sid: usize,
    pub qcur: Option<u64>,
    pub qmax: Option<u64>,
    pub scur: u64,
    pub smax: u64,
    pub slim: Option<u64>,
    pub stot: u64,
    pub bin: u64,
    pub bout: u64,
    pub ereq: Option<u64>,
    pub econ: Option<u64>,
    pub wretr: Option<u64>,
    pub wredis: Option<u64>,
    /// OPEN/STOP (frontend), UP/DOWN/"UP 1/3"/"DOWN 1/2"/MAINT/DRAIN/"no check" (server), UP/DOWN (backend).
    pub status: String,
    /// Effective weight: 0 while a server drains, as in HAProxy (backend: the
    /// sum over usable servers).
    pub weight: Option<u64>,
    /// The weight as set (configuration or `set weight`), draining or not.
    pub uweight: Option<u64>,
    pub act: Option<u64>,
    pub bck: Option<u64>,
    pub chkfail: Option<u64>,
    pub chkdown: Option<u64>,
    pub lastchg: Option<u64>,
    pub downtime: Option<u64>,
    pub qlimit: Option<u64>,
    pub lbtot: Option<u64>,
    pub check_status: Option<String>,
    pub check_duration: Option<u64>,
    /// What the last check saw (HAProxy's `last_chk`): pglb's description,
    /// e.g. `role replica, lag 0.0s, 0 bytes, streaming`.
    pub check_desc: Option<String>,
    /// HAProxy's fixed description of the status (its `check_desc`), e.g.
    /// `Layer7 check passed`.
    pub check_reason: Option<&'static str>,
    pub check_rise: Option<u32>,
    pub check_fall: Option<u32>,
    pub check_health: Option<u32>,
    pub cli_abrt: Option<u64>,
    pub srv_abrt: Option<u64>,
    /// Seconds since the last session (-1 = never).
    pub lastsess: Option<i64>,
    /// Average queue, connect and session times (ms).
    pub qtime: Option<u64>,
    pub ctime: Option<u64>,
    pub ttime: Option<u64>,
    pub addr: Option<String>,
    pub mode: &'static str,
    pub algo: Option<&'static str>,
    pub conn_tot: Option<u64>,
    /// PostgreSQL-level facts from the SQL check (pglb's own columns).
    pub pg_role: Option<&'static str>,
    pub lag_seconds: Option<f64>,
    pub lag_bytes: Option<u64>,
    pub streaming: Option<bool>,
    /// Backend only: two servers claim primary.
    pub split_brain: Option<bool>,
    /// Backend only: `pause backend` holds its new clients.
    pub paused: Option<bool>,
    /// Errors pglb answered itself (PostgreSQL FATAL).
    pub errors_sent: Option<u64>,
}

fn get(c: &std::sync::atomic::AtomicU64) -> u64 {
    Counters::get(c)
}

fn avg(sum: u64, n: u64) -> u64 {
    sum.checked_div(n).unwrap_or(0)
}

/// Proxy names with their ids (`iid`), in configuration order: a listen
/// section is a frontend and a backend of the same name, one proxy, as in
/// HAProxy. Ids start at 2 (HAProxy's 1 is its internal proxy).
pub fn proxy_ids(rt: &Runtime) -> Vec<(&str, usize)> {
    let mut names: Vec<&str> = Vec::new();
    for f in &rt.frontends {
        names.push(&f.cfg.name);
    }
    for b in &rt.backends {
        if !names.contains(&&*b.cfg.name) {
            names.push(&b.cfg.name);
        }
    }
    names.into_iter().zip(2..).collect()
}

/// All rows in HAProxy's order: per proxy, FRONTEND, servers, BACKEND.
pub fn snapshot(rt: &Runtime) -> Vec<Row> {
    let mut rows = Vec::new();
    for (name, iid) in proxy_ids(rt) {
        if let Some(fe) = rt.frontends.iter().find(|f| *f.cfg.name == *name) {
            rows.push(frontend_row(rt, fe, iid));
            if fe.cfg.listen && fe.cfg.mode == crate::config::Mode::Http {
                // HAProxy shows a stats `listen` section's (empty) backend too.
                rows.push(Row {
                    pxname: fe.cfg.name.to_string(),
                    svname: "BACKEND".into(),
                    kind: Some(Kind::Backend),
                    iid,
                    status: "UP".into(),
                    mode: "http",
                    algo: Some("roundrobin"),
                    ..Default::default()
                });
            }
        }
        if let Some(be) = rt.backends.iter().find(|b| *b.cfg.name == *name) {
            for s in &be.servers {
                rows.push(server_row(be, s, iid));
            }
            rows.push(backend_row(be, iid));
        }
    }
    rows
}

fn frontend_row(rt: &Runtime, fe: &FrontendState, iid: usize) -> Row {
    let c = &fe.counters;
    Row {
        pxname: fe.cfg.name.to_string(),
        svname: "FRONTEND".into(),
        kind: Some(Kind::Frontend),
        iid,
        sid: 0,
        scur: get(&c.cur),
        smax: get(&c.max),
        slim: fe.cfg.maxconn.or(rt.config.global.maxconn).map(u64::from),
        stot: get(&c.total),
        bin: get(&c.bytes_in),
        bout: get(&c.bytes_out),
        ereq: Some(get(&c.req_errors)),
        status: if rt.stopping.is_cancelled() { "STOP".into() } else { "OPEN".into() },
        cli_abrt: Some(get(&c.cli_abrt)),
        srv_abrt: Some(get(&c.srv_abrt)),
        mode: mode(fe.cfg.mode),
        conn_tot: Some(get(&c.total)),
        errors_sent: Some(get(&c.errors_sent)),
        ..Default::default()
    }
}

fn mode(m: crate::config::Mode) -> &'static str {
    match m {
        crate::config::Mode::Tcp => "tcp",
        crate::config::Mode::Http => "http",
    }
}

/// HAProxy's server status text, including transitions ("UP 1/3").
pub fn server_status(s: &ServerState) -> String {
    match s.admin() {
        Admin::Maint => return "MAINT".into(),
        Admin::Drain => return "DRAIN".into(),
        Admin::Ready => {}
    }
    if s.addr().is_none() {
        return "DOWN (unresolved)".into();
    }
    if !s.cfg.check {
        return "no check".into();
    }
    let (rise, fall) = (s.cfg.rise, s.cfg.fall);
    let h = s.check_health.load(Relaxed);
    match s.health() {
        Health::Up if h >= rise + fall - 1 || h == 0 => "UP".into(),
        Health::Up => format!("UP {}/{}", h - rise + 1, fall),
        Health::Down if h == 0 => "DOWN".into(),
        Health::Down => format!("DOWN {h}/{rise}"),
    }
}

fn server_row(be: &BackendState, s: &ServerState, iid: usize) -> Row {
    let c = &s.counters;
    let check = s.check.lock().unwrap_or_else(|e| e.into_inner()).clone();
    let pg = *s.pg.lock().unwrap_or_else(|e| e.into_inner());
    let total = get(&c.total);
    let last = get(&c.last_session);
    Row {
        pxname: be.cfg.name.to_string(),
        svname: s.cfg.name.to_string(),
        kind: Some(Kind::Server),
        iid,
        sid: s.index + 1,
        qcur: Some(0),
        qmax: Some(0),
        scur: get(&c.cur),
        smax: get(&c.max),
        slim: s.cfg.maxconn.map(u64::from),
        stot: total,
        bin: get(&c.bytes_in),
        bout: get(&c.bytes_out),
        econ: Some(get(&c.conn_errors)),
        wretr: Some(get(&c.retries)),
        wredis: Some(0),
        status: server_status(s),
        weight: Some(if s.admin() == crate::state::Admin::Drain { 0 } else { u64::from(s.weight()) }),
        uweight: Some(u64::from(s.weight())),
        act: Some(u64::from(!s.cfg.backup)),
        bck: Some(u64::from(s.cfg.backup)),
        chkfail: s.cfg.check.then(|| get(&c.check_failures)),
        chkdown: s.cfg.check.then(|| get(&c.down_transitions)),
        lastchg: Some(unix_now().saturating_sub(s.last_change.load(Relaxed))),
        downtime: s.cfg.check.then(|| s.total_downtime()),
        qlimit: s.cfg.maxqueue.map(u64::from),
        lbtot: Some(total),
        check_status: (s.cfg.check && check.status.has_result()).then(|| check.status.code().to_string()),
        check_duration: (s.cfg.check && check.status.has_result()).then_some(check.duration_ms),
        check_desc: (s.cfg.check && !check.desc.is_empty()).then(|| check.desc.clone()),
        check_reason: (s.cfg.check && check.status.has_result()).then(|| check.status.description()),
        check_rise: s.cfg.check.then_some(s.cfg.rise),
        check_fall: s.cfg.check.then_some(s.cfg.fall),
        check_health: s.cfg.check.then(|| s.check_health.load(Relaxed)),
        cli_abrt: Some(get(&c.cli_abrt)),
        srv_abrt: Some(get(&c.srv_abrt)),
        lastsess: Some(if last == 0 { -1 } else { unix_now().saturating_sub(last) as i64 }),
        qtime: Some(0),
        ctime: Some(avg(get(&c.connect_time_us), total) / 1000),
        ttime: Some(0),
        addr: s.addr().map(|a| a.to_string()).or_else(|| Some(format!("{}:{}", s.cfg.host, s.cfg.port))),
        mode: "tcp",
        pg_role: pg.map(|p| if p.primary { "primary" } else { "replica" }),
        lag_seconds: pg.filter(|p| !p.primary).map(|p| p.lag_seconds),
        lag_bytes: pg.filter(|p| !p.primary).map(|p| p.lag_bytes),
        streaming: pg.filter(|p| !p.primary).map(|p| p.streaming),
        ..Default::default()
    }
}

fn backend_row(be: &BackendState, iid: usize) -> Row {
    let c = &be.counters;
    let usable = be.usable.load();
    let active = be.servers.iter().filter(|s| !s.cfg.backup && s.usable()).count() as u64;
    let backup = be.servers.iter().filter(|s| s.cfg.backup && s.usable()).count() as u64;
    let weight: u64 = usable.servers.iter().map(|&i| u64::from(be.servers[i].weight())).sum();
    let total = get(&c.total);
    let last = get(&c.last_session);
    Row {
        pxname: be.cfg.name.to_string(),
        svname: "BACKEND".into(),
        kind: Some(Kind::Backend),
        iid,
        sid: 0,
        qcur: Some(get(&c.queue_cur)),
        qmax: Some(get(&c.queue_max)),
        scur: get(&c.cur),
        smax: get(&c.max),
        stot: total,
        bin: get(&c.bytes_in),
        bout: get(&c.bytes_out),
        econ: Some(get(&c.conn_errors)),
        wretr: Some(get(&c.retries)),
        wredis: Some(get(&c.redispatches)),
        // HAProxy: DOWN when no server takes traffic. A paused backend says
        // so (its servers may all be UP): operators read this column.
        status: if be.paused.load(Relaxed) {
            "PAUSED".into()
        } else if usable.servers.is_empty() {
            "DOWN".into()
        } else {
            "UP".into()
        },
        weight: Some(weight),
        uweight: Some(weight),
        act: Some(active),
        bck: Some(backup),
        chkdown: Some(be.servers.iter().map(|s| get(&s.counters.down_transitions)).sum()),
        lastchg: Some(unix_now().saturating_sub(be.last_change.load(Relaxed))),
        lbtot: Some(total),
        cli_abrt: Some(get(&c.cli_abrt)),
        srv_abrt: Some(get(&c.srv_abrt)),
        lastsess: Some(if last == 0 { -1 } else { unix_now().saturating_sub(last) as i64 }),
        qtime: Some(avg(get(&c.queue_time_ms), total)),
        ctime: Some(avg(get(&c.connect_time_us), total) / 1000),
        ttime: Some(avg(get(&c.session_time_ms), total)),
        mode: "tcp",
        algo: Some(be.cfg.balance.name()),
        split_brain: Some(be.split_brain.load(Relaxed)),
        paused: Some(be.paused.load(Relaxed)),
        errors_sent: Some(get(&c.errors_sent)),
        ..Default::default()
    }
}
