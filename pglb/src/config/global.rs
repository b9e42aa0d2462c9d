//! The `global` section.

use super::keywords::{self, GLOBAL_NO_EFFECT, GLOBAL_PREFIX_NO_EFFECT, GLOBAL_REJECTED};
use super::lexer::Line;
use super::model::{ApiTcp, Global, Level, StatsSocket};
use super::parse::Ctx;
use super::units::{parse_time, parse_timeout};
use std::path::PathBuf;

pub(super) fn parse(ctx: &mut Ctx, lines: &[Line], global: &mut Global) {
    for line in lines {
        let n = line.number;
        let kw = line.keyword();
        match kw {
            "maxconn" => match ctx.arg(line, 0, "a number").and_then(|v| ctx.number::<u32>(n, kw, v)) {
                Some(0) => ctx.error(n, "maxconn 0 would refuse every client: remove the line for no limit, or give a number"),
                Some(v) => global.maxconn = Some(v),
                None => {}
            },
            "nbthread" => {
                if let Some(v) = ctx.arg(line, 0, "a number of threads").and_then(|v| ctx.number::<usize>(n, kw, v)) {
                    if v == 0 {
                        ctx.error(n, "nbthread must be at least 1");
                    } else {
                        global.nbthread = Some(v);
                    }
                }
            }
            "ca-base" | "crt-base" => {
                if let Some(dir) = ctx.arg(line, 0, "a directory") {
                    let dir = Some(PathBuf::from(dir));
                    if kw == "ca-base" {
                        ctx.tls_defaults.ca_base = dir;
                    } else {
                        ctx.tls_defaults.crt_base = dir;
                    }
                }
            }
            "ssl-server-verify" => match ctx.arg(line, 0, "none or required") {
                Some("none") => ctx.tls_defaults.server_verify = Some(crate::tls::Verify::None),
                Some("required") => ctx.tls_defaults.server_verify = Some(crate::tls::Verify::Required),
                Some(other) => ctx.error(n, format!("ssl-server-verify '{other}' is unknown: use none or required")),
                None => {}
            },
            "hard-stop-after" => {
                if let Some(v) = ctx.arg(line, 0, "a time such as 30s") {
                    match parse_timeout(v) {
                        Ok(d) => global.hard_stop_after = d,
                        Err(e) => ctx.error(n, e),
                    }
                }
            }
            "grace" => {
                if let Some(v) = ctx.arg(line, 0, "a time such as 2s") {
                    match parse_timeout(v) {
                        Ok(d) => global.grace = d,
                        Err(e) => ctx.error(n, e),
                    }
                }
            }
            "pidfile" => global.pidfile = ctx.arg(line, 0, "a path").map(PathBuf::from),
            "ulimit-n" => {
                if let Some(v) = ctx.arg(line, 0, "a number").and_then(|v| ctx.number(n, kw, v)) {
                    global.ulimit_n = Some(v);
                }
            }
            "log" => match super::log::parse_target(line.args(), n) {
                Ok(t) => global.logs.push(t),
                Err(e) => ctx.error(n, e),
            },
            "log-tag" => global.log_tag = ctx.arg(line, 0, "a tag").map(str::to_string),
            // Without a name: the machine's host name, as in HAProxy.
            "log-send-hostname" => global.log_send_hostname = Some(line.args().first().cloned().unwrap_or_else(crate::os::hostname)),
            "stats" => parse_stats(ctx, line, global),
            "presetenv" | "setenv" => {
                if let (Some(name), Some(value)) = (ctx.arg(line, 0, "a variable name"), ctx.arg(line, 1, "a value"))
                    && (kw == "setenv" || global.env_var(name).is_none())
                {
                    global.env.push((name.to_string(), Some(value.to_string())));
                }
            }
            "unsetenv" => {
                for name in line.args() {
                    global.env.push((name.clone(), None));
                }
            }
            _ => {
                if let Some(why) = keywords::lookup(GLOBAL_NO_EFFECT, kw) {
                    ctx.warn(n, format!("'{kw}' has no effect in pglb: {why}"));
                } else if let Some(why) = keywords::lookup(GLOBAL_REJECTED, kw) {
                    ctx.error(n, format!("'{kw}' is not supported: {why}"));
                } else if let Some((_, why)) = GLOBAL_PREFIX_NO_EFFECT.iter().find(|(p, _)| kw.starts_with(p)) {
                    ctx.warn(n, format!("'{kw}' has no effect in pglb: {why}"));
                } else {
                    ctx.error(n, format!("unknown keyword '{kw}' in global section (see docs/config.md for what pglb understands)"));
                }
            }
        }
    }
}

fn parse_stats(ctx: &mut Ctx, line: &Line, global: &mut Global) {
    let n = line.number;
    let Some(what) = ctx.arg(line, 0, "socket, timeout or maxconn") else { return };
    match what {
        "socket" => {
            let Some(path) = ctx.arg(line, 1, "a socket path") else { return };
            let tcp = if let Some(fd) = super::addr::inherited(path) {
                match fd {
                    Ok((fd, _)) => Some(ApiTcp::Fd(fd)),
                    Err(e) => return ctx.error(n, format!("stats socket : {e}")),
                }
            } else if let Some(unix) = path.strip_prefix("unix@") {
                return parse_stats(ctx, &Line { number: n, words: [&line.words[..2], &[unix.to_string()], &line.words[3..]].concat() }, global);
            } else if path.starts_with('/') {
                None
            } else {
                let bare = ["ipv4@", "ipv6@", "tcp@", "tcp4@", "tcp6@"].iter().find_map(|p| path.strip_prefix(p)).unwrap_or(path);
                match bare.parse::<std::net::SocketAddr>() {
                    Ok(a) => Some(ApiTcp::Bind(a)),
                    Err(_) => {
                        ctx.error(n, format!("stats socket '{path}': write a UNIX socket path such as /var/run/pglb.sock, IP:PORT for TCP, or fd@N"));
                        return;
                    }
                }
            };
            let mut socket = StatsSocket { path: PathBuf::from(path), tcp, mode: None, level: Level::User, line: n };
            let mut it = line.args()[2..].iter();
            while let Some(opt) = it.next() {
                match opt.as_str() {
                    "mode" => match it.next().map(|m| u32::from_str_radix(m, 8)) {
                        Some(Ok(m)) if m <= 0o777 => socket.mode = Some(m),
                        _ => ctx.error(n, "stats socket mode needs an octal file mode such as 600"),
                    },
                    "level" => match it.next().map(String::as_str) {
                        Some("user") => socket.level = Level::User,
                        Some("operator") => socket.level = Level::Operator,
                        Some("admin") => socket.level = Level::Admin,
                        _ => ctx.error(n, "stats socket level must be user, operator or admin"),
                    },
                    "expose-fd" | "user" | "group" | "uid" | "gid" | "process" | "name" | "severity-output" => {
                        ctx.warn(n, format!("stats socket option '{opt}' has no effect in pglb"));
                        it.next();
                    }
                    other => ctx.error(n, format!("unknown stats socket option '{other}' (pglb understands mode and level)")),
                }
            }
            global.stats_sockets.push(socket);
        }
        "timeout" => {
            if let Some(v) = ctx.arg(line, 1, "a time such as 2m") {
                match parse_time(v) {
                    Ok(d) => global.stats_timeout = d,
                    Err(e) => ctx.error(n, e),
                }
            }
        }
        "maxconn" | "bind-process" => ctx.warn(n, format!("'stats {what}' has no effect in pglb")),
        other => ctx.error(n, format!("unknown global stats setting '{other}': use socket or timeout")),
    }
}
