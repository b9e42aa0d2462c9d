//! Runtime API commands, HAProxy's names and answers. `user` and
//! `operator` levels may look (and operators may clear counters); only
//! `admin` may change servers.

use crate::config::Level;
use crate::state::{Admin, BackendState, Runtime, ServerState};
use crate::stats::{self, csv, json};
use std::fmt::Write;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;

#[derive(Debug)]
pub enum Outcome {
    Text(String),
    /// Toggle interactive mode.
    Prompt,
    Quit,
}

const HELP: &str = "The following commands are valid at this level:
  help                                    : this message
  prompt                                  : toggle interactive mode with prompt
  quit                                    : disconnect
  show info                               : report information about the running process
  show stat [{<iid>|<proxy>} <type> <sid>] [typed|json] : report counters for each proxy and server (CSV)
  show servers state [<backend>]          : dump volatile server information
  show backend                            : list backends
  clear counters                          : clear max statistics counters (operator; 'all': admin)
  disable server <bk>/<srv>               : put a server in maintenance (admin)
  enable server <bk>/<srv>                : take a server out of maintenance (admin)
  set server <bk>/<srv> state ready|drain|maint : change a server's admin state (admin)
  set server <bk>/<srv> fqdn <name>        : resolve the server by this name (servers with resolvers; admin)
  set server <bk>/<srv> addr <ip> [port <p>]    : change a server's address (admin)
  set server <bk>/<srv> weight <w>[%]     : change a server's weight (admin)
  set weight <bk>/<srv> <w>[%]            : change a server's weight (admin)
  add server <bk>/<srv> <addr> [opts]     : add a server, in maintenance, until the next reload (admin)
  del server <bk>/<srv>                   : remove a server in maintenance without sessions (admin)
  shutdown sessions server <bk>/<srv>     : close every session on a server (admin)
  drain sessions server <bk>/<srv>        : close every session on a server at its next transaction boundary (admin)
  pause backend <bk>                      : new clients of a backend wait; open sessions go on (admin)
  resume backend <bk>                     : release the clients a paused backend holds (admin)
  disable health <bk>/<srv>               : stop health checks on a server (admin)
  enable health <bk>/<srv>                : resume health checks on a server (admin)
  reload                                  : re-read the configuration file; the running one stays if it is invalid (admin)
";

fn text(s: impl Into<String>) -> Outcome {
    Outcome::Text(s.into())
}

pub fn execute(rt: &Runtime, level: Level, line: &str) -> Outcome {
    let words: Vec<&str> = line.split_whitespace().collect();
    let need = |min: Level| level >= min;
    match words.as_slice() {
        ["help"] => text(HELP),
        ["prompt"] => Outcome::Prompt,
        ["quit"] | ["exit"] => Outcome::Quit,
        ["show", "info", ..] => text(show_info(rt)),
        ["show", "stat", rest @ ..] => {
            let (rows, rest) = match filter_stat(stats::snapshot(rt), rest) {
                Ok(r) => r,
                Err(e) => return text(e.to_string()),
            };
            if rest.contains(&"json") {
                text(json::render(&rows))
            } else if rest.contains(&"typed") {
                text(typed(&rows))
            } else {
                text(csv::render(&rows))
            }
        }
        ["show", "servers", "state", rest @ ..] => match rest.first() {
            Some(name) => match rt.backend(name) {
                Some(b) => text(servers_state(rt, std::slice::from_ref(b))),
                None => text("Can't find backend.\n"),
            },
            None => text(servers_state(rt, &rt.backends)),
        },
        ["show", "backend"] => {
            let mut s = String::from("# name\n");
            for b in &rt.backends {
                let _ = writeln!(s, "{}", b.cfg.name);
            }
            text(s)
        }
        // HAProxy: `clear counters all` (every counter) needs admin; pglb
        // clears maxima only, but keeps the level an operator expects.
        ["clear", "counters", "all"] if !need(Level::Admin) => text("Permission denied\n"),
        ["clear", "counters", ..] if need(Level::Operator) => {
            for b in &rt.backends {
                b.counters.max.store(b.counters.cur.load(Relaxed), Relaxed);
                b.counters.queue_max.store(b.counters.queue_cur.load(Relaxed), Relaxed);
                for s in &b.servers {
                    s.counters.max.store(s.counters.cur.load(Relaxed), Relaxed);
                }
            }
            for f in &rt.frontends {
                f.counters.max.store(f.counters.cur.load(Relaxed), Relaxed);
            }
            text("")
        }
        [verb, ..] if is_change(verb, &words) && !need(Level::Admin) => text("Permission denied\n"),
        ["disable", "server", target] => with_server(rt, target, |be, s| set_admin(be, s, Admin::Maint)),
        ["enable", "server", target] => with_server(rt, target, |be, s| set_admin(be, s, Admin::Ready)),
        ["set", "server", target, "state", state] => {
            let admin = match *state {
                "ready" => Admin::Ready,
                "drain" => Admin::Drain,
                "maint" => Admin::Maint,
                _ => return text("'set server <srv> state' expects 'ready', 'drain' and 'maint'.\n"),
            };
            with_server(rt, target, |be, s| set_admin(be, s, admin))
        }
        ["set", "server", target, "addr", ip, rest @ ..] => {
            let Ok(ip) = ip.parse::<std::net::IpAddr>() else { return text(format!("Invalid addr '{ip}': an IP address is expected.\n")) };
            let port = match rest {
                [] => None,
                ["port", p] => match p.parse::<u16>() {
                    Ok(p) if p > 0 => Some(p),
                    _ => return text(format!("Invalid port '{p}'.\n")),
                },
                _ => return text("usage: set server <bk>/<srv> addr <ip> [port <port>]\n"),
            };
            with_server(rt, target, |be, s| {
                let old = s.addr();
                let new = std::net::SocketAddr::new(ip, port.or(old.map(|a| a.port())).unwrap_or(s.cfg.port));
                be.set_addr(s, new);
                tracing::warn!(target: "pglb::admin", backend = %be.cfg.name, server = %s.cfg.name, ?old, %new, "runtime API: server address changed");
                format!("IP changed from '{}' to '{new}' by 'stats socket command'\n", old.map(|a| a.to_string()).unwrap_or_else(|| "(none)".into()))
            })
        }
        ["set", "server", target, "fqdn", name] => with_server(rt, target, |be, s| {
            if s.cfg.resolvers.is_none() {
                // HAProxy's words, placeholders included.
                return "set server <b>/<s> fqdn failed because no resolution is configured.\n".to_string();
            }
            let old = s.set_fqdn(name);
            let old = if old.parse::<std::net::IpAddr>().is_ok() { "(null)".to_string() } else { old };
            tracing::warn!(target: "pglb::admin", backend = %be.cfg.name, server = %s.cfg.name, %old, new = name, "runtime API: server name changed");
            format!("{}/{} changed its FQDN from {old} to {name} by 'stats socket command'\n", be.cfg.name, s.cfg.name)
        }),
        ["set", "server", target, "weight", w] | ["set", "weight", target, w] => with_server(rt, target, |be, s| set_weight(be, s, w)),
        ["shutdown", "sessions", "server", target] => with_server(rt, target, |be, s| {
            s.kill_sessions();
            tracing::warn!(target: "pglb::admin", backend = %be.cfg.name, server = %s.cfg.name, "runtime API: sessions shut down");
            String::new()
        }),
        ["drain", "sessions", "server", target] => with_server(rt, target, |be, s| {
            s.drain_sessions();
            tracing::warn!(target: "pglb::admin", backend = %be.cfg.name, server = %s.cfg.name, "runtime API: sessions drained at their transaction boundaries");
            String::new()
        }),
        ["pause", "backend", name] | ["resume", "backend", name] => {
            let pause = words[0] == "pause";
            let Some(be) = rt.backend(name) else { return text("No such backend.\n") };
            if be.set_paused(pause) {
                let held = crate::state::counters::Counters::get(&be.counters.queue_cur);
                tracing::warn!(target: "pglb::admin", backend = %be.cfg.name, paused = pause, held,
                    "runtime API: backend {} {}", be.cfg.name, if pause { "paused: new clients wait" } else { "resumed" });
            }
            text("")
        }
        ["disable", "health", target] | ["enable", "health", target] => {
            let enable = words[0] == "enable";
            with_server(rt, target, |be, s| {
                if !s.cfg.check {
                    return format!("Health checks are not configured on this server, cannot {}.\n", if enable { "enable" } else { "disable" });
                }
                s.set_checks_enabled(enable);
                tracing::warn!(target: "pglb::admin", backend = %be.cfg.name, server = %s.cfg.name, enable, "runtime API: health checks toggled");
                String::new()
            })
        }
        [] => text(""),
        _ => text(format!("Unknown command: '{line}'. Type 'help' for the list of commands.\n")),
    }
}

fn is_change(verb: &str, words: &[&str]) -> bool {
    matches!(verb, "disable" | "enable" | "shutdown" | "drain" | "pause" | "resume")
        || (verb == "set" && matches!(words.get(1), Some(&"server" | &"weight")))
}

fn with_server(rt: &Runtime, target: &str, f: impl FnOnce(&BackendState, &ServerState) -> String) -> Outcome {
    let Some((b, s)) = target.split_once('/') else { return text("Require 'backend/server'.\n") };
    let Some(be) = rt.backend(b) else { return text("No such backend.\n") };
    let Some(srv) = be.server(s) else { return text("No such server.\n") };
    text(f(be, srv))
}

fn set_admin(be: &BackendState, s: &ServerState, admin: Admin) -> String {
    crate::health::maintenance::set_admin(be, s, admin, "runtime API");
    String::new()
}

fn set_weight(be: &BackendState, s: &ServerState, w: &str) -> String {
    let weight = match w.strip_suffix('%') {
        Some(p) => match p.parse::<u32>() {
            Ok(p) => s.cfg.weight * p / 100,
            Err(_) => return "Invalid weight.\n".into(),
        },
        None => match w.parse::<u32>() {
            Ok(v) => v,
            Err(_) => return "Invalid weight.\n".into(),
        },
    };
    if weight > 256 {
        return "Weight is out of range (0-256).\n".into();
    }
    be.set_weight(s, weight);
    String::new()
}

fn show_info(rt: &Runtime) -> String {
    let uptime = rt.started.elapsed().map(|d| d.as_secs()).unwrap_or(0);
    let threads = crate::proxy::workers::Workers::count(rt.config.global.nbthread);
    let fields: Vec<(&str, String)> = vec![
        ("Name", "pglb".into()),
        ("Version", env!("CARGO_PKG_VERSION").into()),
        ("Nbthread", threads.to_string()),
        ("Nbproc", "1".into()),
        ("Process_num", "1".into()),
        ("Pid", std::process::id().to_string()),
        ("Uptime", format!("{}d {}h{:02}m{:02}s", uptime / 86400, uptime / 3600 % 24, uptime / 60 % 60, uptime % 60)),
        ("Uptime_sec", uptime.to_string()),
        ("Maxconn", rt.config.global.maxconn.map(|m| m.to_string()).unwrap_or_else(|| "0".into())),
        ("CurrConns", rt.sessions.cur.load(Relaxed).to_string()),
        ("CumConns", rt.sessions.total.load(Relaxed).to_string()),
        ("Stopping", u8::from(rt.stopping.is_cancelled()).to_string()),
        ("Listeners", rt.frontends.iter().map(|f| f.cfg.binds.len()).sum::<usize>().to_string()),
        ("node", crate::stats::http::hostname()),
        ("CancelRouted", rt.cancel.routed.load(Relaxed).to_string()),
        ("CancelBroadcast", rt.cancel.broadcast.load(Relaxed).to_string()),
    ];
    let mut s = String::new();
    for (k, v) in fields {
        let _ = writeln!(s, "{k}: {v}");
    }
    s
}

/// Why a `show stat` filter is refused (the runtime API's answer).
#[derive(Debug, thiserror::Error)]
enum StatFilterError {
    #[error("Usage: show stat [{{<iid>|<proxy>}} <type> <sid>] [typed|json]\n")]
    Usage,
    #[error("'{word}' is not a {what}: use a number, or -1 for all.\n")]
    NotANumber { word: String, what: &'static str },
    #[error("No such proxy.\n")]
    NoSuchProxy,
}

/// HAProxy's `show stat [{<iid>|<proxy>} <type> <sid>]` filter: a proxy by
/// id or name (-1 all), a type mask (1 frontends, 2 backends, 4 servers,
/// -1 all) and a server id (-1 all). Returns the rows and the words left
/// (`typed`, `json`).
fn filter_stat<'a>(rows: Vec<stats::Row>, rest: &'a [&'a str]) -> Result<(Vec<stats::Row>, &'a [&'a str]), StatFilterError> {
    let [proxy, kind, sid, tail @ ..] = rest else {
        return match rest.first() {
            Some(w) if !matches!(*w, "typed" | "json") => Err(StatFilterError::Usage),
            _ => Ok((rows, rest)),
        };
    };
    let number = |w: &str, what: &'static str| w.parse::<i64>().map_err(|_| StatFilterError::NotANumber { word: w.to_string(), what });
    let (kind, sid) = (number(kind, "type mask")?, number(sid, "server id")?);
    let by_id = proxy.parse::<i64>().ok();
    if by_id.is_none() && !rows.iter().any(|r| r.pxname == *proxy) {
        return Err(StatFilterError::NoSuchProxy);
    }
    let keep = |r: &stats::Row| {
        let proxy_ok = match by_id {
            Some(-1) => true,
            Some(id) => r.iid as i64 == id,
            None => r.pxname == *proxy,
        };
        let bit = match r.kind {
            Some(stats::Kind::Frontend) => 1,
            Some(stats::Kind::Backend) => 2,
            Some(stats::Kind::Server) | None => 4,
        };
        let kind_ok = kind == -1 || kind & bit != 0;
        let sid_ok = sid == -1 || r.kind != Some(stats::Kind::Server) || r.sid as i64 == sid;
        proxy_ok && kind_ok && sid_ok
    };
    Ok((rows.into_iter().filter(keep).collect(), tail))
}

/// HAProxy's `show servers state` (format version 1); `be_id` is the
/// proxy's id, as `iid` in `show stat`.
fn servers_state(rt: &Runtime, backends: &[Arc<BackendState>]) -> String {
    let ids = stats::proxy_ids(rt);
    let mut s = String::from(
        "1\n# be_id be_name srv_id srv_name srv_addr srv_op_state srv_admin_state srv_uweight srv_iweight srv_time_since_last_change srv_check_status srv_check_result srv_check_health srv_check_state srv_agent_state bk_f_forced_id srv_f_forced_id srv_fqdn srv_port srvrecord srv_use_ssl srv_check_port srv_check_addr srv_agent_addr srv_agent_port\n",
    );
    for be in backends {
        for srv in &be.servers {
            let addr = srv.addr();
            // srv_op_state: 0 = stopped (DOWN), 2 = running (UP).
            // (A server in maintenance is stopped, whatever its checks say.)
            let op = if srv.health() == crate::state::Health::Up && srv.admin() != Admin::Maint { 2 } else { 0 };
            // srv_admin_state bits: 0x01 forced maintenance, 0x08 forced drain.
            let admin = match srv.admin() {
                Admin::Ready => 0,
                Admin::Maint => 1,
                Admin::Drain => 8,
            };
            let check = srv.check.lock().unwrap_or_else(|e| e.into_inner()).clone();
            let host = srv.host();
            let fqdn = if host.parse::<std::net::IpAddr>().is_ok() { "-".to_string() } else { host };
            let _ = writeln!(
                s,
                "{} {} {} {} {} {op} {admin} {w} {iw} {since} {status} {result} {health} {state} 0 0 0 {fqdn} {port} - 0 {cport} {caddr} - 0",
                ids.iter().find(|(name, _)| *name == &*be.cfg.name).map_or(0, |(_, iid)| *iid),
                be.cfg.name,
                srv.index + 1,
                srv.cfg.name,
                addr.map(|a| a.ip().to_string()).unwrap_or_else(|| "-".into()),
                w = srv.weight(),
                iw = srv.cfg.weight,
                since = crate::state::unix_now().saturating_sub(srv.last_change.load(Relaxed)),
                // HAProxy's numbers (srv_check_status, srv_check_result).
                status = check.status.number(),
                result = check.status.result_number(),
                // HAProxy's counter starts at rise for a server without checks.
                health = if srv.cfg.check { srv.check_health.load(Relaxed) } else { srv.cfg.rise },
                // HAProxy's bits: 0x2 configured, 0x4 enabled, 0x8 paused (maintenance).
                state = match (srv.cfg.check, srv.checks_enabled(), srv.admin()) {
                    (false, ..) => 0,
                    (true, _, Admin::Maint) => 14,
                    (true, true, _) => 6,
                    (true, false, _) => 2,
                },
                port = addr.map(|a| a.port()).unwrap_or(srv.cfg.port),
                cport = srv.cfg.check_port.unwrap_or(0),
                caddr = srv.cfg.check_addr.as_deref().unwrap_or("-"),
            );
        }
    }
    s.push('\n');
    s
}

/// `show stat typed`: one `TYPE.IID.SID.POS.NAME.PROC:TAGS:TYPE:VALUE` per field.
fn typed(rows: &[stats::Row]) -> String {
    let mut s = String::new();
    for row in rows {
        let t = match row.kind {
            Some(stats::Kind::Frontend) => 'F',
            Some(stats::Kind::Backend) => 'B',
            _ => 'S',
        };
        for (pos, col) in csv::COLUMNS.iter().enumerate().filter(|(_, c)| **c != "-") {
            let v = csv::field(row, col);
            if v.is_empty() {
                continue;
            }
            let (tags, ty) = if pos < 2 {
                ("KNS", "str")
            } else if v.parse::<u64>().is_ok() {
                ("MGP", "u64")
            } else if v.parse::<i64>().is_ok() {
                ("MGP", "s64")
            } else {
                ("MOP", "str")
            };
            let _ = writeln!(s, "{t}.{}.{}.{pos}.{col}.1:{tags}:{ty}:{v}", row.iid, row.sid);
        }
    }
    s.push('\n');
    s
}
