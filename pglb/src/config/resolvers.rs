//! `resolvers` sections: DNS servers used to re-resolve server names.

use super::lexer::Line;
use super::model::Resolvers;
use super::parse::{Ctx, RawSection};
use super::units::parse_time;
use std::net::SocketAddr;
use std::time::Duration;

pub(super) fn parse(ctx: &mut Ctx, section: &RawSection) -> Option<Resolvers> {
    let mut r = Resolvers {
        name: section.name.clone()?,
        line: section.line,
        nameservers: Vec::new(),
        parse_resolv_conf: false,
        hold_valid: Duration::from_secs(10),
        timeout_resolve: Duration::from_secs(1),
        timeout_retry: Duration::from_secs(1),
        resolve_retries: 3,
    };
    for line in &section.body {
        apply(ctx, line, &mut r);
    }
    if r.nameservers.is_empty() && !r.parse_resolv_conf {
        ctx.error(section.line, format!("resolvers '{}' has no nameserver: add 'nameserver NAME IP:53' or 'parse-resolv-conf'", r.name));
    }
    Some(r)
}

fn apply(ctx: &mut Ctx, line: &Line, r: &mut Resolvers) {
    let n = line.number;
    let time = |ctx: &mut Ctx, v: Option<&str>| -> Option<Duration> {
        match parse_time(v?) {
            Ok(d) => Some(d),
            Err(e) => {
                ctx.error(n, e);
                None
            }
        }
    };
    match line.keyword() {
        "nameserver" => {
            let Some(addr) = ctx.arg(line, 1, "a name and an address IP:PORT") else { return };
            let addr = addr.strip_prefix("udp@").unwrap_or(addr);
            match addr.parse::<SocketAddr>() {
                Ok(a) => r.nameservers.push(a),
                Err(_) => ctx.error(n, format!("nameserver address '{addr}' must be IP:PORT, e.g. 10.96.0.10:53")),
            }
        }
        "parse-resolv-conf" => r.parse_resolv_conf = true,
        "hold" => {
            let (Some(status), v) = (ctx.arg(line, 0, "a status such as valid"), line.args().get(1).map(String::as_str)) else { return };
            let Some(d) = time(ctx, v) else { return };
            match status {
                "valid" => r.hold_valid = d,
                "nx" | "timeout" | "refused" | "other" | "obsolete" => {
                    ctx.warn(n, format!("'hold {status}' has no effect: pglb keeps the last good address while lookups fail"))
                }
                other => ctx.error(n, format!("unknown hold status '{other}': use valid, nx, timeout, refused, other or obsolete")),
            }
        }
        "timeout" => {
            let (Some(which), v) = (ctx.arg(line, 0, "resolve or retry"), line.args().get(1).map(String::as_str)) else { return };
            if let Some(d) = time(ctx, v) {
                match which {
                    "resolve" => r.timeout_resolve = d,
                    "retry" => r.timeout_retry = d,
                    other => ctx.error(n, format!("unknown resolvers timeout '{other}': use resolve or retry")),
                }
            }
        }
        "resolve_retries" => {
            if let Some(v) = ctx.arg(line, 0, "a number").and_then(|v| ctx.number(n, "resolve_retries", v)) {
                r.resolve_retries = v;
            }
        }
        "accepted_payload_size" => ctx.warn(n, "accepted_payload_size has no effect: pglb sizes DNS answers itself"),
        other => ctx
            .error(n, format!("unknown keyword '{other}' in resolvers section (use nameserver, parse-resolv-conf, hold, timeout, resolve_retries)")),
    }
}
