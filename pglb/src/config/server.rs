//! Options of `server` and `default-server` lines.

use super::addr;
use super::keywords::{self, SERVER_NO_EFFECT, SERVER_REJECTED};
use super::lexer::Line;
use super::model::{Observe, OnError, OnMarkedDown, OnMarkedUp, Server};
use super::parse::Ctx;
use super::units::{parse_time, parse_timeout};
use crate::tls::Connector;
use std::sync::Arc;
use std::time::Duration;

/// Server options as written; `None` = not given (so default-server and
/// server lines can be merged, the server winning).
#[derive(Debug, Clone, Default)]
pub(super) struct ServerOpts {
    check: Option<bool>,
    inter: Option<Duration>,
    fastinter: Option<Duration>,
    downinter: Option<Duration>,
    rise: Option<u32>,
    fall: Option<u32>,
    weight: Option<u32>,
    backup: Option<bool>,
    maxconn: Option<u32>,
    maxqueue: Option<u32>,
    disabled: Option<bool>,
    port: Option<u16>,
    addr: Option<String>,
    on_marked_down: Option<OnMarkedDown>,
    on_marked_up: Option<OnMarkedUp>,
    resolvers: Option<String>,
    tcp_ut: Option<Duration>,
    observe: Option<bool>,
    error_limit: Option<u32>,
    on_error: Option<OnError>,
    ssl: Option<bool>,
    check_ssl: Option<bool>,
    verify: Option<crate::tls::Verify>,
    ca_file: Option<String>,
    crt: Option<String>,
    sni: Option<String>,
    verifyhost: Option<String>,
}

macro_rules! merge_fields {
    ($self:ident, $other:ident, $($f:ident),*) => {
        $( if $other.$f.is_some() { $self.$f = $other.$f.clone(); } )*
    };
}

impl ServerOpts {
    pub fn merge(&mut self, other: &ServerOpts) {
        merge_fields!(
            self,
            other,
            check,
            inter,
            fastinter,
            downinter,
            rise,
            fall,
            weight,
            backup,
            maxconn,
            maxqueue,
            disabled,
            port,
            addr,
            on_marked_down,
            on_marked_up,
            resolvers,
            tcp_ut,
            observe,
            error_limit,
            on_error,
            ssl,
            check_ssl,
            verify,
            ca_file,
            crt,
            sni,
            verifyhost
        );
    }

    /// Parses options from `line.args()[start..]`.
    pub fn parse(ctx: &mut Ctx, line: &Line, start: usize) -> ServerOpts {
        let n = line.number;
        let mut o = ServerOpts::default();
        let args = &line.args()[start.min(line.args().len())..];
        let mut i = 0;
        while i < args.len() {
            let opt = args[i].as_str();
            let value = args.get(i + 1).map(String::as_str);
            let mut takes_value = true;
            let need = |ctx: &mut Ctx, what: &str| {
                if value.is_none() {
                    ctx.error(n, format!("server option '{opt}' needs {what}"));
                }
                value
            };
            match opt {
                "check" => (o.check, takes_value) = (Some(true), false),
                "no-check" => (o.check, takes_value) = (Some(false), false),
                "backup" => (o.backup, takes_value) = (Some(true), false),
                "no-backup" => (o.backup, takes_value) = (Some(false), false),
                "disabled" => (o.disabled, takes_value) = (Some(true), false),
                "enabled" => (o.disabled, takes_value) = (Some(false), false),
                "ssl" => (o.ssl, takes_value) = (Some(true), false),
                "no-ssl" => (o.ssl, takes_value) = (Some(false), false),
                "check-ssl" => (o.check_ssl, takes_value) = (Some(true), false),
                "no-check-ssl" => (o.check_ssl, takes_value) = (Some(false), false),
                "no-send-proxy" => takes_value = false,
                "verify" => match need(ctx, "none or required") {
                    Some("none") => o.verify = Some(crate::tls::Verify::None),
                    Some("required") => o.verify = Some(crate::tls::Verify::Required),
                    Some(other) => ctx.error(n, format!("verify '{other}' is unknown on a server: use none or required")),
                    None => {}
                },
                "ca-file" => o.ca_file = need(ctx, "a PEM file of CA certificates").map(str::to_string),
                "crt" => o.crt = need(ctx, "a PEM file with a client certificate and its key").map(str::to_string),
                "verifyhost" => o.verifyhost = need(ctx, "a host name").map(str::to_string),
                "sni" => {
                    if let Some(v) = need(ctx, "str(NAME)") {
                        match v.strip_prefix("str(").and_then(|r| r.strip_suffix(')')) {
                            Some(name) if !name.is_empty() => o.sni = Some(name.to_string()),
                            _ => ctx
                                .error(n, format!("sni '{v}': pglb sends a fixed name, written str(NAME) (it has no HTTP request to take one from)")),
                        }
                    }
                }
                "inter" | "fastinter" | "downinter" => {
                    if let Some(v) = need(ctx, "a time such as 1s") {
                        match parse_time(v) {
                            Ok(d) if d.is_zero() => ctx.error(n, format!("'{opt} 0' would check in a busy loop: give a time such as 1s")),
                            Ok(d) => {
                                *match opt {
                                    "inter" => &mut o.inter,
                                    "fastinter" => &mut o.fastinter,
                                    _ => &mut o.downinter,
                                } = Some(d)
                            }
                            Err(e) => ctx.error(n, e),
                        }
                    }
                }
                "rise" | "fall" => {
                    if let Some(v) = need(ctx, "a count such as 2") {
                        match ctx.number::<u32>(n, opt, v) {
                            Some(0) => ctx.error(n, format!("'{opt} 0' is not allowed: the count must be at least 1")),
                            Some(c) => *(if opt == "rise" { &mut o.rise } else { &mut o.fall }) = Some(c),
                            None => {}
                        }
                    }
                }
                "weight" => {
                    if let Some(v) = need(ctx, "a number from 0 to 256") {
                        match ctx.number::<u32>(n, opt, v) {
                            Some(w) if w <= 256 => o.weight = Some(w),
                            Some(w) => ctx.error(n, format!("weight {w} is out of range: use 0 to 256")),
                            None => {}
                        }
                    }
                }
                "maxconn" | "maxqueue" => {
                    if let Some(v) = need(ctx, "a number")
                        && let Some(c) = ctx.number::<u32>(n, opt, v)
                    {
                        // 0 means "no limit" in HAProxy for both.
                        let c = (c > 0).then_some(c);
                        *(if opt == "maxconn" { &mut o.maxconn } else { &mut o.maxqueue }) = c;
                    }
                }
                "port" => {
                    if let Some(v) = need(ctx, "a port number") {
                        match ctx.number::<u16>(n, opt, v) {
                            Some(0) => ctx.error(n, "check port 0 is not a usable port"),
                            Some(p) => o.port = Some(p),
                            None => {}
                        }
                    }
                }
                // An IP, or a host name resolved at each check (HAProxy
                // resolves it once at start; a health service's address in
                // a container network may move).
                "addr" => match need(ctx, "an IP address or a host name") {
                    Some(a) if !a.is_empty() && !a.contains([':', '/', ' ']) || a.parse::<std::net::IpAddr>().is_ok() => o.addr = Some(a.to_string()),
                    Some(a) => ctx.error(n, format!("check addr '{a}' is neither an IP address nor a host name (the port goes in 'port N')")),
                    None => {}
                },
                "on-marked-down" => match need(ctx, "an action") {
                    Some("shutdown-sessions") => o.on_marked_down = Some(OnMarkedDown::ShutdownSessions),
                    Some(other) => ctx.error(n, format!("on-marked-down '{other}' is unknown: pglb supports shutdown-sessions")),
                    None => {}
                },
                "on-marked-up" => match need(ctx, "an action") {
                    Some("shutdown-backup-sessions") => o.on_marked_up = Some(OnMarkedUp::ShutdownBackupSessions),
                    Some(other) => ctx.error(n, format!("on-marked-up '{other}' is unknown: pglb supports shutdown-backup-sessions")),
                    None => {}
                },
                "observe" => match need(ctx, "none or layer4") {
                    Some("layer4") => o.observe = Some(true),
                    Some("none") => o.observe = Some(false),
                    Some("layer7") => ctx.error(n, "observe layer7 judges HTTP responses: pglb proxies PostgreSQL over TCP, use observe layer4"),
                    Some(other) => ctx.error(n, format!("observe '{other}' is unknown: use layer4 or none")),
                    None => {}
                },
                "error-limit" => {
                    if let Some(v) = need(ctx, "a count such as 10") {
                        match ctx.number::<u32>(n, opt, v) {
                            Some(0) => ctx.error(n, "'error-limit 0' is not allowed: the count must be at least 1"),
                            Some(c) => o.error_limit = Some(c),
                            None => {}
                        }
                    }
                }
                "on-error" => {
                    if let Some(a) = need(ctx, "fastinter, fail-check, sudden-death or mark-down") {
                        match [OnError::FastInter, OnError::FailCheck, OnError::SuddenDeath, OnError::MarkDown].into_iter().find(|x| x.name() == a) {
                            Some(action) => o.on_error = Some(action),
                            None => ctx.error(n, format!("on-error '{a}' is unknown: use fastinter, fail-check, sudden-death or mark-down")),
                        }
                    }
                }
                "init-addr" => {
                    if let Some(v) = need(ctx, "methods such as last,libc,none") {
                        for method in v.split(',') {
                            if !matches!(method, "last" | "libc" | "none") && method.parse::<std::net::IpAddr>().is_err() {
                                ctx.error(n, format!("init-addr method '{method}' is unknown: use last, libc, none or an IP address"));
                            }
                        }
                        if !v.split(',').any(|m| m == "none") {
                            // pglb always behaves like `none`: see docs/config.md.
                            ctx.warn(
                                n,
                                "pglb starts even when a server name does not resolve (as with init-addr none): the server stays DOWN until it resolves",
                            );
                        }
                    }
                }
                "resolvers" => o.resolvers = need(ctx, "a resolvers section name").map(str::to_string),
                "resolve-prefer" => match need(ctx, "ipv4 or ipv6") {
                    Some("ipv4" | "ipv6") => ctx.warn(n, "resolve-prefer has no effect: pglb uses the first address the resolver returns"),
                    Some(other) => ctx.error(n, format!("resolve-prefer '{other}' is unknown: use ipv4 or ipv6")),
                    None => {}
                },
                "tcp-ut" => {
                    if let Some(v) = need(ctx, "a time such as 10s") {
                        match parse_timeout(v) {
                            Ok(d) => o.tcp_ut = d,
                            Err(e) => ctx.error(n, e),
                        }
                    }
                }
                _ => {
                    if let Some(why) = keywords::lookup(SERVER_NO_EFFECT, opt) {
                        ctx.warn(n, format!("server option '{opt}' has no effect in pglb: {why}"));
                        takes_value = !matches!(opt, "agent-check" | "check-ssl");
                    } else if let Some(why) = keywords::lookup(SERVER_REJECTED, opt) {
                        ctx.error(n, format!("server option '{opt}' is not supported: {why}"));
                        takes_value = !matches!(opt, "ssl" | "send-proxy" | "send-proxy-v2" | "check-send-proxy");
                    } else {
                        ctx.error(n, format!("unknown server option '{opt}' (see docs/config.md for the server options pglb understands)"));
                        return o;
                    }
                }
            }
            i += if takes_value { 2 } else { 1 };
        }
        o
    }

    /// Builds the server, filling in HAProxy's defaults. In a backend whose
    /// check knows roles (`role_check`), passive health is on unless
    /// written otherwise: `observe layer4 error-limit 1 on-error mark-down`,
    /// so one refused connect or startup takes the server out at once.
    pub fn build(&self, ctx: &mut Ctx, name: &str, line: usize, address: &str, role_check: bool) -> Option<Server> {
        let (host, port) = match addr::split_host_port(address) {
            Ok(hp) => hp,
            Err(e) => {
                ctx.error(line, format!("server '{name}': {e}"));
                return None;
            }
        };
        if host.is_empty() || host == "*" {
            ctx.error(line, format!("server '{name}' needs a host: write HOST:{port}"));
            return None;
        }
        let inter = self.inter.unwrap_or(Duration::from_secs(2));
        if self.observe == Some(true) && !self.check.unwrap_or(false) {
            // HAProxy's documentation: observing needs health checks.
            ctx.warn(line, format!("server '{name}': 'observe layer4' has no effect without 'check' (passive health acts on the server's checks)"));
        }
        let (tls, check_tls) = self.tls(ctx, name, line)?;
        Some(Server {
            name: name.into(),
            line,
            host,
            port,
            check: self.check.unwrap_or(false),
            inter,
            fastinter: self.fastinter.unwrap_or(inter),
            downinter: self.downinter.unwrap_or(inter),
            rise: self.rise.unwrap_or(2),
            fall: self.fall.unwrap_or(3),
            weight: self.weight.unwrap_or(1),
            backup: self.backup.unwrap_or(false),
            maxconn: self.maxconn,
            maxqueue: self.maxqueue,
            disabled: self.disabled.unwrap_or(false),
            check_port: self.port,
            check_addr: self.addr.clone(),
            on_marked_down: self.on_marked_down.unwrap_or_default(),
            on_marked_up: self.on_marked_up.unwrap_or_default(),
            resolvers: self.resolvers.clone(),
            tcp_ut: self.tcp_ut,
            tls,
            check_tls,
            observe: if role_check {
                Observe {
                    layer4: self.observe.unwrap_or(true),
                    error_limit: self.error_limit.unwrap_or(1),
                    action: self.on_error.unwrap_or(OnError::MarkDown),
                }
            } else {
                let d = Observe::default();
                Observe {
                    layer4: self.observe.unwrap_or(d.layer4),
                    error_limit: self.error_limit.unwrap_or(d.error_limit),
                    action: self.on_error.unwrap_or(d.action),
                }
            },
        })
    }
}
impl ServerOpts {
    /// The server's TLS (`ssl`) and its checks' (`check-ssl`, or `ssl`
    /// unless `no-check-ssl`). `verify` defaults to `required`, as HAProxy's
    /// `ssl-server-verify`, and then needs a `ca-file`.
    #[allow(clippy::type_complexity)]
    fn tls(&self, ctx: &mut Ctx, name: &str, line: usize) -> Option<(Option<Arc<Connector>>, Option<Arc<Connector>>)> {
        let ssl = self.ssl.unwrap_or(false);
        // As in HAProxy: checks inherit `ssl` unless they go to another
        // port or address (then `check-ssl` says so).
        let check_ssl = self.check_ssl.unwrap_or(ssl && self.port.is_none() && self.addr.is_none());
        if !ssl && !check_ssl {
            return Some((None, None));
        }
        let verify = self.verify.or(ctx.tls_defaults.server_verify).unwrap_or(crate::tls::Verify::Required);
        if verify == crate::tls::Verify::Required && self.ca_file.is_none() {
            ctx.error(
                line,
                format!(
                    "server '{name}': verify is enabled by default but no CA file specified. If you're running on a LAN where you're certain to trust the server's certificate, please set an explicit 'verify none' statement on the 'server' line, or use 'ssl-server-verify none' in the global section to disable server-side verifications by default"
                ),
            );
            return None;
        }
        let ca_file = self.ca_file.as_deref().map(|f| ctx.tls_defaults.ca(f));
        let crt = self.crt.as_deref().map(|f| ctx.tls_defaults.crt(f));
        match Connector::load(verify, ca_file.as_deref(), crt.as_deref(), self.sni.clone(), self.verifyhost.clone()) {
            Ok(c) => {
                let c = Arc::new(c);
                Some((ssl.then(|| c.clone()), check_ssl.then_some(c)))
            }
            Err(e) => {
                ctx.error(line, format!("server '{name}' ssl: {e}"));
                None
            }
        }
    }
}

/// A server for the runtime API's `add server B/S ADDR [OPTIONS]`: the
/// words of a `server` line, without `default-server` (as HAProxy builds
/// dynamic servers). The error is the first problem found, in the words a
/// configuration check would use.
pub fn dynamic(backend: &super::model::Backend, name: &str, address: &str, options: &[String]) -> Result<Server, super::error::Invalid> {
    let path = std::path::Path::new("runtime API");
    let mut ctx = Ctx::new(path);
    let words: Vec<String> = ["server", name, address].iter().map(|w| w.to_string()).chain(options.iter().cloned()).collect();
    let line = Line { number: 0, words };
    let opts = ServerOpts::parse(&mut ctx, &line, 2);
    let role_check = matches!(&backend.check, super::model::CheckSpec::Pgsql(p) if matches!(p.role, Some(super::model::RoleRequirement::Primary | super::model::RoleRequirement::Replica)));
    let server = opts.build(&mut ctx, name, 0, address, role_check);
    match (server, ctx.errors.first()) {
        (Some(s), None) => Ok(s),
        (_, Some(e)) => Err(match e {
            super::error::ConfigError::At { message, .. } => message.clone().into(),
            other => other.to_string().into(),
        }),
        (None, None) => Err(format!("server '{name}' cannot be built").into()),
    }
}
