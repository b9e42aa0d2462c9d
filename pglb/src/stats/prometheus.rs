//! `/metrics` in Prometheus' text exposition format, built with
//! `prometheus-client` at each scrape from the same rows as the CSV.
//!
//! Names follow HAProxy's built-in exporter (`haproxy_frontend_*`,
//! `haproxy_backend_*`, `haproxy_server_*`, labels `proxy` and `server`), so
//! dashboards and alerts written for HAProxy (`haproxy_backend_up == 0`)
//! work unchanged; pglb's PostgreSQL facts are `pglb_*`.

use super::{Kind, Row};
use crate::state::Runtime;
use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use std::sync::atomic::AtomicU64;
use std::sync::atomic::Ordering::Relaxed;

type Labels = Vec<(String, String)>;
type G = Family<Labels, Gauge<f64, AtomicU64>>;
type C = Family<Labels, Counter<f64, AtomicU64>>;

/// A metric family and how to read its value from a row.
struct Metric {
    family: Fam,
    value: fn(&Row) -> Option<f64>,
}

enum Fam {
    Gauge(G),
    Counter(C),
}

/// Registers one metric; `name` is given without `_total` for counters.
fn add(reg: &mut Registry, list: &mut Vec<Metric>, name: &str, help: &str, counter: bool, value: fn(&Row) -> Option<f64>) {
    let family = if counter {
        let f = C::default();
        reg.register(name, sentence(help), f.clone());
        Fam::Counter(f)
    } else {
        let f = G::default();
        reg.register(name, sentence(help), f.clone());
        Fam::Gauge(f)
    };
    list.push(Metric { family, value });
}

/// prometheus-client ends every help text with a period of its own: the
/// texts here are written as sentences, so theirs is dropped.
fn sentence(help: &str) -> &str {
    help.strip_suffix('.').unwrap_or(help)
}

fn n(v: u64) -> Option<f64> {
    Some(v as f64)
}

fn o(v: Option<u64>) -> Option<f64> {
    v.map(|v| v as f64)
}

/// The HAProxy server states `haproxy_server_status` has a series for.
const SERVER_STATES: &[&str] = &["DOWN", "UP", "MAINT", "DRAIN", "NOLB"];

pub fn render(rt: &Runtime, rows: &[Row]) -> String {
    let mut reg = Registry::default();
    let mut fe = Vec::new();
    let mut be = Vec::new();
    let mut sv = Vec::new();

    add(&mut reg, &mut fe, "haproxy_frontend_current_sessions", "Number of current sessions on the frontend.", false, |r| n(r.scur));
    add(&mut reg, &mut fe, "haproxy_frontend_max_sessions", "Highest value of current sessions.", false, |r| n(r.smax));
    add(&mut reg, &mut fe, "haproxy_frontend_limit_sessions", "Configured session limit (maxconn).", false, |r| o(r.slim));
    add(&mut reg, &mut fe, "haproxy_frontend_sessions", "Total number of sessions.", true, |r| n(r.stot));
    add(&mut reg, &mut fe, "haproxy_frontend_bytes_in", "Bytes received from clients.", true, |r| n(r.bin));
    add(&mut reg, &mut fe, "haproxy_frontend_bytes_out", "Bytes sent to clients.", true, |r| n(r.bout));
    add(&mut reg, &mut fe, "haproxy_frontend_request_errors", "Clients that did not speak PostgreSQL.", true, |r| o(r.ereq));
    add(&mut reg, &mut fe, "haproxy_frontend_status", "Frontend status: 1 when open.", false, |r| Some(f64::from(u8::from(r.status == "OPEN"))));

    add(&mut reg, &mut be, "haproxy_backend_up", "1 when the backend has a usable server, 0 when every server is down.", false, |r| {
        Some(f64::from(u8::from(r.status == "UP")))
    });
    add(&mut reg, &mut be, "haproxy_backend_status", "Backend status: 1 when UP.", false, |r| Some(f64::from(u8::from(r.status == "UP"))));
    add(&mut reg, &mut be, "haproxy_backend_current_sessions", "Number of current sessions on the backend.", false, |r| n(r.scur));
    add(&mut reg, &mut be, "haproxy_backend_max_sessions", "Highest value of current sessions.", false, |r| n(r.smax));
    add(&mut reg, &mut be, "haproxy_backend_sessions", "Total number of sessions.", true, |r| n(r.stot));
    add(&mut reg, &mut be, "haproxy_backend_current_queue", "Sessions waiting for a server slot.", false, |r| o(r.qcur));
    add(&mut reg, &mut be, "haproxy_backend_max_queue", "Highest number of queued sessions.", false, |r| o(r.qmax));
    add(&mut reg, &mut be, "haproxy_backend_bytes_in", "Bytes sent to servers.", true, |r| n(r.bin));
    add(&mut reg, &mut be, "haproxy_backend_bytes_out", "Bytes received from servers.", true, |r| n(r.bout));
    add(&mut reg, &mut be, "haproxy_backend_connection_errors", "Failed connection attempts to servers.", true, |r| o(r.econ));
    add(&mut reg, &mut be, "haproxy_backend_retry_warnings", "Connection attempts retried.", true, |r| o(r.wretr));
    add(&mut reg, &mut be, "haproxy_backend_redispatch_warnings", "Retries sent to another server.", true, |r| o(r.wredis));
    add(&mut reg, &mut be, "haproxy_backend_active_servers", "Usable active servers.", false, |r| o(r.act));
    add(&mut reg, &mut be, "haproxy_backend_backup_servers", "Usable backup servers.", false, |r| o(r.bck));
    add(&mut reg, &mut be, "haproxy_backend_weight", "Total weight of the servers in use.", false, |r| o(r.weight));
    add(&mut reg, &mut be, "haproxy_backend_queue_time_average_seconds", "Average time spent in the queue.", false, |r| r.qtime.map(ms));
    add(&mut reg, &mut be, "haproxy_backend_connect_time_average_seconds", "Average server connect time.", false, |r| r.ctime.map(ms));
    add(
        &mut reg,
        &mut be,
        "haproxy_backend_response_time_average_seconds",
        "In TCP mode pglb reports the average server connect time here (HAProxy reports 0).",
        false,
        |r| r.ctime.map(ms),
    );
    add(&mut reg, &mut be, "haproxy_backend_total_time_average_seconds", "Average session duration.", false, |r| r.ttime.map(ms));
    add(&mut reg, &mut be, "haproxy_backend_client_aborts", "Sessions ended by a client error.", true, |r| o(r.cli_abrt));
    add(&mut reg, &mut be, "haproxy_backend_server_aborts", "Sessions ended by a server error.", true, |r| o(r.srv_abrt));
    add(
        &mut reg,
        &mut be,
        "pglb_split_brain",
        "1 while more than one server of a role-primary backend reports primary (pglb routes to none).",
        false,
        |r| r.split_brain.map(|s| f64::from(u8::from(s))),
    );
    add(
        &mut reg,
        &mut be,
        "pglb_backend_paused",
        "1 while the backend is paused by the runtime API (new clients wait; open sessions go on).",
        false,
        |r| r.paused.map(|s| f64::from(u8::from(s))),
    );
    add(&mut reg, &mut be, "pglb_pg_errors_sent", "Clients pglb answered with a PostgreSQL FATAL (no server, queue, shutdown).", true, |r| {
        o(r.errors_sent)
    });

    add(&mut reg, &mut sv, "haproxy_server_current_sessions", "Number of current sessions on the server.", false, |r| n(r.scur));
    add(&mut reg, &mut sv, "haproxy_server_max_sessions", "Highest value of current sessions.", false, |r| n(r.smax));
    add(&mut reg, &mut sv, "haproxy_server_limit_sessions", "Configured maxconn.", false, |r| o(r.slim));
    add(&mut reg, &mut sv, "haproxy_server_sessions", "Total number of sessions.", true, |r| n(r.stot));
    add(&mut reg, &mut sv, "haproxy_server_bytes_in", "Bytes sent to the server.", true, |r| n(r.bin));
    add(&mut reg, &mut sv, "haproxy_server_bytes_out", "Bytes received from the server.", true, |r| n(r.bout));
    add(&mut reg, &mut sv, "haproxy_server_connection_errors", "Failed connection attempts.", true, |r| o(r.econ));
    add(&mut reg, &mut sv, "haproxy_server_client_aborts", "Sessions ended by a client error.", true, |r| o(r.cli_abrt));
    add(&mut reg, &mut sv, "haproxy_server_server_aborts", "Sessions ended by a server error.", true, |r| o(r.srv_abrt));
    add(&mut reg, &mut sv, "haproxy_server_retry_warnings", "Connection attempts retried.", true, |r| o(r.wretr));
    add(&mut reg, &mut sv, "haproxy_server_check_failures", "Failed health checks.", true, |r| o(r.chkfail));
    add(&mut reg, &mut sv, "haproxy_server_check_up_down", "UP to DOWN transitions.", true, |r| o(r.chkdown));
    add(&mut reg, &mut sv, "haproxy_server_downtime_seconds", "Total time spent DOWN.", true, |r| o(r.downtime));
    add(&mut reg, &mut sv, "haproxy_server_last_change_seconds", "Seconds since the last state change.", false, |r| o(r.lastchg));
    add(&mut reg, &mut sv, "haproxy_server_weight", "Server weight.", false, |r| o(r.weight));
    add(&mut reg, &mut sv, "haproxy_server_check_duration_seconds", "Duration of the last health check.", false, |r| r.check_duration.map(ms));
    add(&mut reg, &mut sv, "haproxy_server_connect_time_average_seconds", "Average connect time.", false, |r| r.ctime.map(ms));
    add(&mut reg, &mut sv, "pglb_server_replication_lag_seconds", "Replay lag reported by the SQL-level check (replicas).", false, |r| r.lag_seconds);
    add(&mut reg, &mut sv, "pglb_server_replication_lag_bytes", "WAL bytes behind the primary (replicas).", false, |r| r.lag_bytes.map(|b| b as f64));
    add(&mut reg, &mut sv, "pglb_server_is_primary", "1 when the SQL-level check says the server is a primary.", false, |r| {
        r.pg_role.map(|p| f64::from(u8::from(p == "primary")))
    });
    add(&mut reg, &mut sv, "pglb_server_streaming", "1 when the replica's WAL receiver is streaming.", false, |r| {
        r.streaming.map(|s| f64::from(u8::from(s)))
    });
    let status = G::default();
    reg.register("haproxy_server_status", sentence("Current server state: 1 for the state it is in."), status.clone());
    let check_status = G::default();
    reg.register("pglb_server_check_status", sentence("Last health check status (HAProxy's check_status), as a label."), check_status.clone());

    for r in rows {
        let (list, labels): (&Vec<Metric>, Labels) = match r.kind {
            Some(Kind::Frontend) => (&fe, vec![("proxy".into(), r.pxname.clone())]),
            Some(Kind::Backend) => (&be, vec![("proxy".into(), r.pxname.clone())]),
            Some(Kind::Server) => (&sv, vec![("proxy".into(), r.pxname.clone()), ("server".into(), r.svname.clone())]),
            None => continue,
        };
        for m in list {
            if let Some(v) = (m.value)(r) {
                match &m.family {
                    Fam::Gauge(g) => {
                        g.get_or_create(&labels).set(v);
                    }
                    Fam::Counter(c) => {
                        c.get_or_create(&labels).inc_by(v);
                    }
                }
            }
        }
        if r.kind == Some(Kind::Server) {
            let current = r.status.split_whitespace().next().unwrap_or("");
            for state in SERVER_STATES {
                let mut l = labels.clone();
                l.push(("state".into(), (*state).into()));
                status.get_or_create(&l).set(f64::from(u8::from(current == *state || (current == "no" && *state == "UP"))));
            }
            if let Some(cs) = &r.check_status {
                let mut l = labels.clone();
                l.push(("status".into(), cs.clone()));
                check_status.get_or_create(&l).set(1.0);
            }
        }
    }

    let cancels = Family::<Labels, Counter<f64, AtomicU64>>::default();
    reg.register(
        "pglb_cancel_requests",
        sentence("CancelRequests handled, by delivery (routed to one server, or broadcast when the key was unknown)."),
        cancels.clone(),
    );
    cancels.get_or_create(&vec![("delivery".into(), "routed".into())]).inc_by(rt.cancel.routed.load(Relaxed) as f64);
    cancels.get_or_create(&vec![("delivery".into(), "broadcast".into())]).inc_by(rt.cancel.broadcast.load(Relaxed) as f64);
    let current = Gauge::<f64, AtomicU64>::default();
    reg.register("haproxy_process_current_connections", sentence("Sessions open now, across frontends."), current.clone());
    current.set(rt.sessions.cur.load(Relaxed) as f64);
    let uptime = Gauge::<f64, AtomicU64>::default();
    reg.register("haproxy_process_uptime_seconds", sentence("Seconds since pglb started."), uptime.clone());
    uptime.set(rt.started.elapsed().map(|d| d.as_secs_f64()).unwrap_or(0.0));
    let stopping = Gauge::<f64, AtomicU64>::default();
    reg.register("haproxy_process_stopping", sentence("1 while pglb drains after SIGTERM."), stopping.clone());
    stopping.set(f64::from(u8::from(rt.stopping.is_cancelled())));

    let mut out = String::new();
    if encode(&mut out, &reg).is_err() {
        out.clear();
    }
    out
}

fn ms(v: u64) -> f64 {
    v as f64 / 1000.0
}
