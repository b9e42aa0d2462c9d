//! `defaults`, `frontend`, `backend` and `listen` keywords. A section's lines
//! are applied to a draft that starts as a copy of the defaults in force, then
//! `finish` validates it into model frontends and backends.

use super::addr;
use super::check::CheckDraft;
use super::keywords::{self, OPTION_NO_EFFECT, OPTION_REJECTED, PROXY_NO_EFFECT, PROXY_REJECTED};
use super::lexer::Line;
use super::model::*;
use super::parse::Ctx;
use super::server::ServerOpts;
use super::units::{parse_time, parse_timeout};
use std::time::Duration;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SectionKind {
    Defaults,
    Frontend,
    Backend,
    Listen,
}

impl SectionKind {
    fn name(self) -> &'static str {
        match self {
            SectionKind::Defaults => "defaults",
            SectionKind::Frontend => "frontend",
            SectionKind::Backend => "backend",
            SectionKind::Listen => "listen",
        }
    }
    fn has_frontend(self) -> bool {
        !matches!(self, SectionKind::Backend)
    }
    fn has_backend(self) -> bool {
        !matches!(self, SectionKind::Frontend)
    }
}

/// Settings of a proxy section while it is being read. `None` = not set
/// here nor in the defaults.
#[derive(Debug, Clone, Default)]
pub(super) struct ProxyDraft {
    mode: Option<(Mode, usize)>,
    balance: Option<Balance>,
    maxconn: Option<u32>,
    retries: Option<u32>,
    redispatch: Option<Option<i32>>,
    timeout_connect: Option<Duration>,
    timeout_client: Option<Duration>,
    timeout_server: Option<Duration>,
    timeout_queue: Option<Duration>,
    timeout_check: Option<Duration>,
    timeout_tunnel: Option<Duration>,
    timeout_client_fin: Option<Duration>,
    timeout_server_fin: Option<Duration>,
    tcplog: bool,
    dontlognull: bool,
    clitcpka: bool,
    srvtcpka: bool,
    clitcpka_params: Keepalive,
    srvtcpka_params: Keepalive,
    /// Line of the first `srvtcpka-*` / `clitcpka-*` keyword, for the warning
    /// when the option itself is off.
    srvtcpka_line: Option<usize>,
    clitcpka_line: Option<usize>,
    allbackups: bool,
    log_health_checks: bool,
    /// `log` lines (inherited from defaults, as in HAProxy), `log-format`.
    logs: ProxyLogs,
    /// Per-section only.
    tcp_rules: super::tcprules::TcpRules,
    acls: super::tcprules::Acls,
    switching: Vec<Switch>,
    check: CheckDraft,
    default_server: ServerOpts,
    stats: StatsSettings,
    stats_line: Option<usize>,
    pub disabled: bool,
    // Per-section only (not inherited from defaults):
    binds: Vec<Bind>,
    /// A bind line had an error (so "no bind line" would only repeat it).
    bind_error: bool,
    default_backend: Option<(String, usize)>,
    /// True when this section (not its defaults) wrote default_backend.
    default_backend_here: bool,
    /// The first unconditional `use_backend` of this section.
    use_backend: Option<(String, usize)>,
    servers: Vec<(String, usize, String, ServerOpts)>,
}

impl ProxyDraft {
    /// Clears what a section never inherits from defaults.
    pub fn begin_section(&mut self) {
        // default_backend and disabled are inherited from defaults, as in HAProxy.
        self.binds.clear();
        self.bind_error = false;
        self.default_backend_here = false;
        self.use_backend = None;
        self.tcp_rules = Default::default();
        self.acls.clear();
        self.switching.clear();
        self.servers.clear();
        self.check.begin_section();
    }

    pub fn apply(&mut self, ctx: &mut Ctx, kind: SectionKind, line: &Line) {
        let kw = line.keyword();
        let n = line.number;
        let allowed = |fe: bool, be: bool, def: bool| match kind {
            SectionKind::Defaults => def,
            SectionKind::Frontend => fe,
            SectionKind::Backend => be,
            SectionKind::Listen => fe || be,
        };
        let wrong_section = |ctx: &mut Ctx, fe: bool, be: bool, def: bool| {
            if allowed(fe, be, def) {
                false
            } else {
                let mut where_ = Vec::new();
                if def {
                    where_.push("defaults");
                }
                if fe {
                    where_.push("frontend");
                }
                if fe || be {
                    where_.push("listen");
                }
                if be {
                    where_.push("backend");
                }
                ctx.error(n, format!("'{kw}' is not allowed in a {} section; it belongs in {}", kind.name(), where_.join(", ")));
                true
            }
        };
        match kw {
            "mode" => {
                if let Some(m) = ctx.arg(line, 0, "tcp or http") {
                    match m {
                        "tcp" => self.mode = Some((Mode::Tcp, n)),
                        "http" => self.mode = Some((Mode::Http, n)),
                        other => ctx.error(n, format!("unknown mode '{other}': pglb proxies 'mode tcp' (and serves stats with 'mode http')")),
                    }
                }
            }
            "bind" => {
                if wrong_section(ctx, true, false, false) {
                    return;
                }
                self.parse_bind(ctx, line);
            }
            // HAProxy evaluates switching rules in order before
            // default_backend; an unconditional rule always matches, so the
            // first one becomes the default and later rules are dead.
            "use_backend" => {
                if wrong_section(ctx, true, false, false) {
                    return;
                }
                let Some(b) = ctx.arg(line, 0, "a backend name") else { return };
                if self.use_backend.is_some() {
                    return;
                }
                let rest = line.args().get(1..).unwrap_or_default();
                match super::tcprules::parse_cond(rest, &self.acls) {
                    Ok(cond) if cond.always() => self.use_backend = Some((b.to_string(), n)),
                    Ok(cond) => self.switching.push(Switch { backend: b.to_string(), cond, line: n }),
                    Err(e) => ctx.error(n, format!("use_backend {b}: {e}")),
                }
            }
            "acl" => {
                if wrong_section(ctx, true, false, false) {
                    return;
                }
                if let Err(e) = super::tcprules::parse_named_acl(line.args(), &mut self.acls) {
                    ctx.error(n, format!("acl: {e}"));
                }
            }
            "default_backend" => {
                if wrong_section(ctx, true, false, true) {
                    return;
                }
                if let Some(b) = ctx.arg(line, 0, "a backend name") {
                    self.default_backend = Some((b.to_string(), n));
                    self.default_backend_here = kind != SectionKind::Defaults;
                }
            }
            "balance" => {
                if wrong_section(ctx, false, true, true) {
                    return;
                }
                self.parse_balance(ctx, line);
            }
            "maxconn" => {
                if wrong_section(ctx, true, false, true) {
                    return;
                }
                match ctx.arg(line, 0, "a number").and_then(|v| ctx.number::<u32>(n, kw, v)) {
                    Some(0) => ctx.error(n, "maxconn 0 would refuse every client: remove the line for no limit, or give a number"),
                    Some(v) => self.maxconn = Some(v),
                    None => {}
                }
            }
            "retries" => {
                if wrong_section(ctx, false, true, true) {
                    return;
                }
                if let Some(v) = ctx.arg(line, 0, "a number").and_then(|v| ctx.number(n, kw, v)) {
                    self.retries = Some(v);
                }
            }
            "timeout" => self.parse_timeout(ctx, kind, line),
            "clitcpka-idle" | "clitcpka-intvl" | "clitcpka-cnt" | "srvtcpka-idle" | "srvtcpka-intvl" | "srvtcpka-cnt" => {
                let client = kw.starts_with("cli");
                if (client && wrong_section(ctx, true, false, true)) || (!client && wrong_section(ctx, false, true, true)) {
                    return;
                }
                self.parse_keepalive(ctx, line, client);
            }
            "option" => self.parse_option(ctx, kind, line, true),
            "no" => {
                if line.args().first().map(String::as_str) == Some("option") {
                    let rest = Line { number: n, words: line.words[1..].to_vec() };
                    self.parse_option(ctx, kind, &rest, false);
                } else if line.args().first().map(String::as_str) == Some("log") {
                    // `no log`: no syslog target (pglb's own log is controlled by RUST_LOG).
                    self.logs.global = false;
                    self.logs.targets.clear();
                } else {
                    ctx.error(n, "'no' must be followed by 'option NAME'");
                }
            }
            "log" => match line.args() {
                [g] if g == "global" => self.logs.global = true,
                args => match super::log::parse_target(args, n) {
                    Ok(t) => self.logs.targets.push(t),
                    Err(e) => ctx.error(n, e),
                },
            },
            "tcp-request" => {
                if wrong_section(ctx, true, false, false) {
                    return;
                }
                if let Err(e) = self.tcp_rules.parse(line.args(), n, &self.acls) {
                    ctx.error(n, e);
                }
            }
            "log-format" => match line.args() {
                [f] => match super::logformat::LogFormat::parse(f) {
                    Ok(parsed) => self.logs.format = Some(parsed),
                    Err(e) => ctx.error(n, format!("failed to parse log-format : {e}")),
                },
                _ => ctx.error(n, "log-format takes one argument: quote the format (log-format \"%ci:%cp [%t] %ft %b/%s\")"),
            },
            "default-server" => {
                if wrong_section(ctx, false, true, true) {
                    return;
                }
                let opts = ServerOpts::parse(ctx, line, 0);
                self.default_server.merge(&opts);
            }
            "server" => {
                if wrong_section(ctx, false, true, false) {
                    return;
                }
                let (Some(name), Some(address)) = (ctx.arg(line, 0, "a name and an address"), ctx.arg(line, 1, "an address HOST:PORT")) else {
                    return;
                };
                // Options first, so their errors are reported for a duplicate too.
                let opts = ServerOpts::parse(ctx, line, 2);
                if let Some((_, first, ..)) = self.servers.iter().find(|(s, ..)| s == name) {
                    ctx.error(n, format!("server '{name}' is already defined at line {first}: give it another name"));
                    return;
                }
                self.servers.push((name.to_string(), n, address.to_string(), opts));
            }
            "tcp-check" | "http-check" => {
                if wrong_section(ctx, false, true, true) {
                    return;
                }
                self.check.parse_rule(ctx, line);
            }
            "stats" => {
                if kind == SectionKind::Backend {
                    ctx.error(n, "pglb serves stats from a frontend or listen section with 'mode http' and 'stats enable'");
                    return;
                }
                self.parse_stats(ctx, line);
            }
            "disabled" => self.disabled = true,
            "enabled" => self.disabled = false,
            _ => {
                if let Some(why) = keywords::lookup(PROXY_NO_EFFECT, kw) {
                    ctx.warn(n, format!("'{kw}' has no effect in pglb: {why}"));
                } else if let Some(why) = keywords::lookup(PROXY_REJECTED, kw) {
                    ctx.error(n, format!("'{kw}' is not supported: {why}"));
                } else {
                    ctx.error(n, format!("unknown keyword '{kw}' in {} section (see docs/config.md for what pglb understands)", kind.name()));
                }
            }
        }
    }

    fn parse_bind(&mut self, ctx: &mut Ctx, line: &Line) {
        let errors_before = ctx.errors.len();
        self.parse_bind_inner(ctx, line);
        self.bind_error |= ctx.errors.len() > errors_before;
    }

    fn parse_bind_inner(&mut self, ctx: &mut Ctx, line: &Line) {
        let n = line.number;
        let Some(addrs) = ctx.arg(line, 0, "an address such as *:5432") else { return };
        let mut name = None;
        let mut backlog = 1024;
        let mut v6only = false;
        let mut tls = TlsWords::default();
        let mut args = line.args()[1..].iter();
        while let Some(opt) = args.next() {
            match opt.as_str() {
                "name" => name = args.next().cloned(),
                "backlog" => match args.next() {
                    Some(v) => {
                        if let Some(v) = ctx.number(n, "backlog", v) {
                            backlog = v;
                        }
                    }
                    None => return ctx.error(n, "bind option 'backlog' needs a number"),
                },
                "v6only" => v6only = true,
                "v4v6" => v6only = false,
                "ssl" => tls.ssl = true,
                "crt" | "ca-file" | "verify" | "alpn" => {
                    let Some(value) = args.next() else { return ctx.error(n, format!("bind option '{opt}' needs a value")) };
                    match opt.as_str() {
                        "crt" if tls.crt.is_some() => {
                            return ctx.error(n, "one 'crt' per bind line: pglb presents one certificate (no SNI-based choice)");
                        }
                        "crt" => tls.crt = Some(value.clone()),
                        "ca-file" => tls.ca_file = Some(value.clone()),
                        "alpn" if value.split(',').any(|p| p == "postgresql") => {}
                        "alpn" => {
                            return ctx.error(n, format!("alpn '{value}': PostgreSQL clients offer 'postgresql'; pglb selects it whenever offered"));
                        }
                        _ => match crate::tls::Verify::parse(value) {
                            Some(v) => tls.verify = Some(v),
                            None => return ctx.error(n, format!("verify '{value}' is unknown: use none, optional or required")),
                        },
                    }
                }
                "crt-list" | "ca-verify-file" | "crl-file" | "ssl-min-ver" | "ssl-max-ver" | "ciphers" | "ciphersuites" | "curves" | "ecdhe"
                | "npn" | "strict-sni" | "no-tls-tickets" | "force-tlsv12" | "force-tlsv13" | "no-sslv3" | "no-tlsv10" | "no-tlsv11" => {
                    ctx.error(n, format!("bind option '{opt}' is not supported: pglb terminates TLS with crt, ca-file and verify (TLS 1.2 and 1.3, Mozilla's intermediate ciphers)"));
                    return;
                }
                "accept-proxy" => {
                    ctx.error(n, "pglb does not accept the PROXY protocol: remove accept-proxy");
                    return;
                }
                "tfo" | "defer-accept" | "transparent" | "interface" | "mss" | "nice" | "process" | "thread" | "level" | "mode" | "user"
                | "group" | "uid" | "gid" | "maxconn" | "id" => {
                    ctx.warn(n, format!("bind option '{opt}' has no effect in pglb"));
                    if !matches!(opt.as_str(), "tfo" | "defer-accept" | "transparent" | "v4v6") {
                        args.next();
                    }
                }
                other => {
                    ctx.error(
                        n,
                        format!("unknown bind option '{other}' (pglb understands name, backlog, v4v6, v6only, ssl, crt, ca-file and verify)"),
                    );
                    return;
                }
            }
        }
        let Ok(tls) = tls.acceptor(ctx, n) else { return };
        for a in addrs.split(',') {
            if let Some(fd) = addr::inherited(a) {
                match fd {
                    Ok((fd, addr)) => self.binds.push(Bind { addr, fd: Some(fd), line: n, name: name.clone(), backlog, v6only, tls: tls.clone() }),
                    Err(e) => ctx.error(n, format!("'bind' : {e}")),
                }
                continue;
            }
            match addr::parse_bind(a) {
                Ok(addr) => self.binds.push(Bind { addr, fd: None, line: n, name: name.clone(), backlog, v6only, tls: tls.clone() }),
                Err(e) => ctx.error(n, e),
            }
        }
    }

    fn parse_balance(&mut self, ctx: &mut Ctx, line: &Line) {
        let n = line.number;
        let Some(algo) = ctx.arg(line, 0, "an algorithm (roundrobin, static-rr, leastconn, first, random, source)") else { return };
        self.balance = Some(match algo {
            "roundrobin" => Balance::RoundRobin,
            "static-rr" => Balance::StaticRr,
            "leastconn" => Balance::LeastConn,
            "first" => Balance::First,
            "source" => Balance::Source,
            a if a == "random" || a.starts_with("random(") => {
                let draws = match a.strip_prefix("random(") {
                    Some(rest) => match rest.strip_suffix(')').and_then(|d| d.parse::<u32>().ok()) {
                        Some(d) if d >= 1 => d,
                        _ => return ctx.error(n, format!("'{a}': write random or random(N) with N >= 1 draws")),
                    },
                    None => 2,
                };
                Balance::Random { draws }
            }
            "uri" | "url_param" | "hdr" | "rdp-cookie" | "hash" => {
                ctx.error(n, format!("balance {algo} needs layer-7 data pglb does not read: use roundrobin, leastconn or source"));
                return;
            }
            other => {
                ctx.error(n, format!("unknown balance algorithm '{other}': use roundrobin, static-rr, leastconn, first, random or source"));
                return;
            }
        });
        if line.args().len() > 1 {
            ctx.warn(n, format!("balance arguments '{}' have no effect in pglb", line.args()[1..].join(" ")));
        }
    }

    /// `clitcpka-*` / `srvtcpka-*`: keepalive timings (seconds by default,
    /// like HAProxy's; whole seconds for the kernel).
    fn parse_keepalive(&mut self, ctx: &mut Ctx, line: &Line, client: bool) {
        let (n, kw) = (line.number, line.keyword());
        let what = if kw.ends_with("-cnt") { "a number of probes" } else { "a time such as 10s" };
        let Some(value) = ctx.arg(line, 0, what) else { return };
        ctx.no_more_args(line, 1);
        let (params, first) =
            if client { (&mut self.clitcpka_params, &mut self.clitcpka_line) } else { (&mut self.srvtcpka_params, &mut self.srvtcpka_line) };
        if kw.ends_with("-cnt") {
            match ctx.number::<u32>(n, kw, value) {
                Some(0) => return ctx.error(n, format!("'{kw} 0' would drop connections without probing: give at least 1")),
                Some(c) if c > 127 => return ctx.error(n, format!("'{kw} {c}': Linux allows at most 127 keepalive probes")),
                Some(c) => params.cnt = Some(c),
                None => return,
            }
        } else {
            // Seconds when no unit is given, as in HAProxy.
            let value = if value.bytes().all(|b| b.is_ascii_digit()) { format!("{value}s") } else { value.to_string() };
            let d = match parse_timeout(&value) {
                Ok(Some(d)) if d > Duration::from_secs(32767) => {
                    return ctx.error(n, format!("'{kw} {value}': Linux allows at most 32767s (about 9 hours)"));
                }
                Ok(Some(d)) if d >= Duration::from_secs(1) && d.subsec_nanos() == 0 => d,
                Ok(_) => {
                    return ctx.error(
                        n,
                        format!("'{kw} {value}': the kernel counts keepalive time in whole seconds; give a whole number of seconds, at least 1s"),
                    );
                }
                Err(e) => return ctx.error(n, e),
            };
            if kw.ends_with("-idle") {
                params.idle = Some(d);
            } else {
                params.intvl = Some(d);
            }
        }
        first.get_or_insert(n);
    }

    fn parse_timeout(&mut self, ctx: &mut Ctx, kind: SectionKind, line: &Line) {
        let n = line.number;
        let (Some(which), Some(value)) = (ctx.arg(line, 0, "a name (connect, client, server, ...)"), ctx.arg(line, 1, "a time such as 5s")) else {
            return;
        };
        ctx.no_more_args(line, 2);
        let value = match parse_timeout(value) {
            Ok(v) => v,
            Err(e) => return ctx.error(n, e),
        };
        let (fe, be) = match which {
            "client" | "client-fin" => (true, false),
            "connect" | "server" | "server-fin" | "queue" | "check" | "tunnel" => (false, true),
            "http-request" | "http-keep-alive" | "tarpit" => {
                ctx.warn(n, format!("'timeout {which}' has no effect: pglb does not proxy HTTP"));
                return;
            }
            other => {
                ctx.error(n, format!("unknown timeout '{other}': use connect, client, server, queue, check, tunnel, client-fin or server-fin"));
                return;
            }
        };
        if (kind == SectionKind::Frontend && !fe) || (kind == SectionKind::Backend && !be) {
            ctx.warn(
                n,
                format!("'timeout {which}' has no effect in a {} section: set it in the {}", kind.name(), if fe { "frontend" } else { "backend" }),
            );
            return;
        }
        let slot = match which {
            "client" => &mut self.timeout_client,
            "client-fin" => &mut self.timeout_client_fin,
            "connect" => &mut self.timeout_connect,
            "server" => &mut self.timeout_server,
            "server-fin" => &mut self.timeout_server_fin,
            "queue" => &mut self.timeout_queue,
            "check" => &mut self.timeout_check,
            _ => &mut self.timeout_tunnel,
        };
        *slot = value;
    }

    fn parse_option(&mut self, ctx: &mut Ctx, kind: SectionKind, line: &Line, on: bool) {
        let n = line.number;
        let Some(name) = ctx.arg(line, 0, "an option name") else { return };
        let backend_only = matches!(name, "redispatch" | "srvtcpka" | "allbackups" | "log-health-checks");
        let frontend_only = matches!(name, "clitcpka" | "tcplog" | "dontlognull");
        if (backend_only && kind == SectionKind::Frontend) || (frontend_only && kind == SectionKind::Backend) {
            let belongs = if backend_only { "backend" } else { "frontend" };
            ctx.warn(n, format!("'option {name}' has no effect in a {} section: set it in the {belongs} (or in defaults)", kind.name()));
            return;
        }
        match name {
            "redispatch" => {
                let interval = match line.args().get(1) {
                    Some(v) => match ctx.number::<i32>(n, "option redispatch", v) {
                        Some(0) => {
                            ctx.error(n, "option redispatch 0 would never redispatch: write 'no option redispatch'");
                            return;
                        }
                        Some(v) => v,
                        None => return,
                    },
                    None => -1,
                };
                self.redispatch = Some(on.then_some(interval));
            }
            "tcplog" => self.tcplog = on,
            "dontlognull" => self.dontlognull = on,
            "clitcpka" => self.clitcpka = on,
            "srvtcpka" => self.srvtcpka = on,
            "tcpka" => {
                self.clitcpka = on;
                self.srvtcpka = on;
            }
            "allbackups" => self.allbackups = on,
            "log-health-checks" => self.log_health_checks = on,
            "tcp-check" | "pgsql-check" | "httpchk" => {
                if kind == SectionKind::Frontend {
                    ctx.error(n, format!("'option {name}' belongs in a backend, listen or defaults section"));
                    return;
                }
                self.check.parse_option(ctx, line, on);
            }
            _ => {
                if let Some(why) = keywords::lookup(OPTION_NO_EFFECT, name) {
                    ctx.warn(n, format!("'option {name}' has no effect in pglb: {why}"));
                } else if let Some(why) = keywords::lookup(OPTION_REJECTED, name) {
                    ctx.error(n, format!("'option {name}' is not supported: {why}"));
                } else {
                    ctx.error(n, format!("unknown option '{name}' (see docs/config.md for the options pglb understands)"));
                }
            }
        }
    }

    fn parse_stats(&mut self, ctx: &mut Ctx, line: &Line) {
        let n = line.number;
        let Some(what) = ctx.arg(line, 0, "a setting (enable, uri, refresh, auth, realm, ...)") else { return };
        self.stats_line.get_or_insert(n);
        match what {
            "enable" => self.stats.enabled = true,
            "uri" => {
                if let Some(u) = ctx.arg(line, 1, "a path such as /stats") {
                    if !u.starts_with('/') {
                        ctx.error(n, format!("stats uri must start with '/': write /{u}"));
                    }
                    self.stats.uri = u.to_string();
                    self.stats.enabled = true;
                }
            }
            "refresh" => {
                if let Some(t) = ctx.arg(line, 1, "a time such as 5s") {
                    match parse_time(t) {
                        Ok(d) => self.stats.refresh = Some(d),
                        Err(e) => ctx.error(n, e),
                    }
                    self.stats.enabled = true;
                }
            }
            "auth" => {
                if let Some(up) = ctx.arg(line, 1, "USER:PASSWORD") {
                    match up.split_once(':') {
                        Some((u, p)) if !u.is_empty() => self.stats.auth.push((u.to_string(), p.to_string())),
                        _ => ctx.error(n, "stats auth needs USER:PASSWORD"),
                    }
                    self.stats.enabled = true;
                }
            }
            "realm" => {
                self.stats.realm = Some(line.args()[1..].join(" "));
            }
            "hide-version" => self.stats.hide_version = true,
            "admin" => {
                // `stats admin if TRUE` is the common form; pglb has no ACLs.
                if line.args().get(1).map(String::as_str) == Some("if") && line.args().get(2).map(String::as_str) == Some("TRUE") {
                    self.stats.admin = true;
                } else {
                    ctx.error(n, "pglb understands only 'stats admin if TRUE' (it has no ACLs)");
                }
            }
            "show-legends" | "show-node" | "show-desc" | "show-modules" | "scope" | "http-request" | "bind-process" => {
                ctx.warn(n, format!("'stats {what}' has no effect in pglb"));
            }
            "socket" | "timeout" | "maxconn" => ctx.error(n, format!("'stats {what}' belongs in the global section")),
            other => {
                ctx.error(n, format!("unknown stats setting '{other}' (pglb understands enable, uri, refresh, auth, realm, hide-version, admin)"))
            }
        }
    }

    /// Validates the section into model frontends/backends.
    pub fn finish(mut self, ctx: &mut Ctx, kind: SectionKind, name: &str, line: usize, config: &mut Config) {
        let mode = self.mode.map(|(m, _)| m).unwrap_or(Mode::Tcp);
        if self.stats.enabled && self.stats.uri.is_empty() {
            // HAProxy's default stats URI.
            self.stats.uri = "/haproxy?stats".to_string();
        }
        if mode == Mode::Http {
            if !self.stats.enabled || !kind.has_frontend() {
                let at = self.mode.map(|(_, l)| l).unwrap_or(line);
                ctx.error(
                    at,
                    format!("'{name}' uses mode http: pglb proxies PostgreSQL over TCP (write 'mode tcp') and uses mode http only for stats listeners with 'stats enable'"),
                );
                return;
            }
            if !self.servers.is_empty() {
                ctx.error(self.servers[0].1, format!("stats listener '{name}' cannot have servers: move them to a 'mode tcp' backend"));
            }
        } else if self.stats.enabled {
            ctx.error(self.stats_line.unwrap_or(line), format!("'{name}': stats need 'mode http' in this section"));
        }
        if kind.has_frontend()
            && mode == Mode::Tcp
            && !self.clitcpka
            && let Some(l) = self.clitcpka_line
        {
            ctx.warn(l, "clitcpka-* timings have no effect without 'option clitcpka' (or 'option tcpka'): add it");
        }
        if kind.has_backend()
            && mode == Mode::Tcp
            && !self.srvtcpka
            && let Some(l) = self.srvtcpka_line
        {
            ctx.warn(l, "srvtcpka-* timings have no effect without 'option srvtcpka' (or 'option tcpka'): add it");
        }
        if kind.has_frontend() {
            if self.binds.is_empty() && !self.bind_error {
                ctx.error(line, format!("{} '{name}' has no bind line: add e.g. 'bind *:5432'", kind.name()));
            }
            let default_backend = match (kind, &self.default_backend) {
                // An unconditional use_backend wins over default_backend, as in HAProxy.
                (_, _) if self.use_backend.is_some() => self.use_backend.as_ref().map(|(b, _)| b.clone()),
                (SectionKind::Listen, Some((_, l))) if self.default_backend_here => {
                    ctx.error(*l, "a listen section is its own backend: remove default_backend or use a frontend section");
                    None
                }
                // A default_backend inherited from defaults does not apply to listen sections.
                (SectionKind::Listen, Some(_)) if mode == Mode::Tcp => Some(name.to_string()),
                (SectionKind::Listen, Some(_)) => None,
                (SectionKind::Listen, None) if mode == Mode::Tcp => Some(name.to_string()),
                (_, Some((b, _))) => Some(b.clone()),
                (_, None) => {
                    if mode == Mode::Tcp {
                        ctx.error(line, format!("frontend '{name}' has no default_backend: add 'default_backend NAME'"));
                    }
                    None
                }
            };
            config.frontends.push(Frontend {
                name: name.into(),
                line,
                mode,
                binds: std::mem::take(&mut self.binds),
                default_backend,
                maxconn: self.maxconn,
                timeout_client: self.timeout_client,
                timeout_client_fin: self.timeout_client_fin,
                log: LogOptions { tcplog: self.tcplog, dontlognull: self.dontlognull },
                logs: self.logs.clone(),
                tcp_rules: std::mem::take(&mut self.tcp_rules),
                switching: std::mem::take(&mut self.switching),
                clitcpka: self.clitcpka,
                clitcpka_params: self.clitcpka_params,
                stats: self.stats.enabled.then(|| self.stats.clone()),
                listen: kind == SectionKind::Listen,
            });
        }
        if kind.has_backend() && mode == Mode::Tcp {
            self.check.warn_unused(ctx);
            let check = self.check.finish(ctx, name, line);
            let role_check = matches!(&check, CheckSpec::Pgsql(p) if matches!(p.role, Some(RoleRequirement::Primary | RoleRequirement::Replica)));
            let servers = self
                .servers
                .iter()
                .filter_map(|(sname, sline, address, opts)| {
                    let mut merged = self.default_server.clone();
                    merged.merge(opts);
                    merged.build(ctx, sname, *sline, address, role_check)
                })
                .collect::<Vec<_>>();
            let sql_check = matches!(&check, CheckSpec::Pgsql(p) if p.is_sql());
            for s in servers.iter().filter(|s| s.check && s.check_tls.is_some() && !sql_check) {
                ctx.warn(
                    s.line,
                    format!(
                        "server '{}': checks stay plaintext: only SQL checks use TLS (check-ssl); give option pgsql-check a SQL option (database, password-env, role...) to check over TLS",
                        s.name
                    ),
                );
            }
            if kind == SectionKind::Backend && servers.is_empty() && self.servers.is_empty() {
                ctx.warn(line, format!("backend '{name}' has no server: every client will get an error"));
            }
            config.backends.push(Backend {
                name: name.into(),
                line,
                balance: self.balance.unwrap_or(Balance::RoundRobin),
                retries: self.retries.unwrap_or(3),
                redispatch: self.redispatch.unwrap_or(None),
                timeout_connect: self.timeout_connect,
                timeout_server: self.timeout_server,
                timeout_server_fin: self.timeout_server_fin,
                timeout_tunnel: self.timeout_tunnel,
                timeout_queue: self.timeout_queue.or(self.timeout_connect),
                timeout_check: self.timeout_check,
                srvtcpka: self.srvtcpka,
                srvtcpka_params: self.srvtcpka_params,
                check,
                log_health_checks: self.log_health_checks,
                logs: self.logs.clone(),
                allbackups: self.allbackups,
                servers,
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::config::{Keepalive, report_str};
    use std::path::Path;
    use std::time::Duration;

    #[test]
    fn setenv_is_kept_in_the_configuration_not_the_process() {
        let text = "global\n    setenv PGLB_CFG_SET v\n    presetenv PGLB_CFG_SET w\n    unsetenv PATH\nlisten pg\n    bind 127.0.0.1:0\n    server a 127.0.0.1:1\n";
        let cfg = report_str(Path::new("e.cfg"), text).config.unwrap();
        assert_eq!(cfg.global.env_var("PGLB_CFG_SET").as_deref(), Some("v"));
        assert_eq!(cfg.global.env_var("PATH"), None, "unset for the configuration");
        assert!(std::env::var_os("PATH").is_some() && std::env::var_os("PGLB_CFG_SET").is_none(), "the process environment is untouched");
    }

    #[test]
    fn passive_health_defaults_follow_haproxy_except_in_role_backends() {
        use crate::config::{Observe, OnError};
        let text = "backend rw\n    option pgsql-check user u password-env PW role primary\n    server a 127.0.0.1:1 check\n    server b 127.0.0.1:2 check observe none\n\
                    backend plain\n    server c 127.0.0.1:3 check observe layer4\n    server d 127.0.0.1:4 check observe layer4 error-limit 3 on-error sudden-death\n    server e 127.0.0.1:5 observe layer4\n";
        let r = report_str(Path::new("o.cfg"), text);
        assert!(r.errors.is_empty(), "{:?}", r.errors);
        let cfg = r.config.unwrap();
        let observe = |b: usize, s: usize| cfg.backends[b].servers[s].observe;
        assert_eq!(observe(0, 0), Observe { layer4: true, error_limit: 1, action: OnError::MarkDown });
        assert!(!observe(0, 1).layer4);
        assert_eq!(observe(1, 0), Observe { layer4: true, error_limit: 10, action: OnError::FailCheck });
        assert_eq!(observe(1, 1), Observe { layer4: true, error_limit: 3, action: OnError::SuddenDeath });
        let warnings: Vec<String> = r.warnings.iter().map(ToString::to_string).collect();
        assert!(warnings.iter().any(|w| w.contains("'observe layer4' has no effect without 'check'")), "{warnings:?}");
        for (bad, says) in [
            ("observe layer7", "observe layer7 judges HTTP responses"),
            ("error-limit 0", "'error-limit 0' is not allowed"),
            ("on-error retry", "on-error 'retry' is unknown"),
        ] {
            let r = report_str(Path::new("o.cfg"), &format!("backend b\n    server a 127.0.0.1:1 check {bad}\n"));
            assert!(r.errors.iter().any(|e| e.to_string().contains(says)), "{bad}: {:?}", r.errors);
        }
    }

    #[test]
    fn overlapping_binds_and_duplicate_servers_are_reported_with_every_error() {
        let text = "frontend a\n    bind 127.0.0.1:7001\n    bind 127.0.0.1:0\n    default_backend b\n\
                    frontend c\n    bind :7001\n    bind 127.0.0.1:0\n    bind 127.0.0.1:7002\n    bind 127.0.0.1:7002\n    default_backend b\n\
                    backend b\n    timeout connect 1s\n    server s1 127.0.0.1:5432\n    server s1 127.0.0.1:5433 chek\n";
        let r = report_str(Path::new("b.cfg"), text);
        let errors: Vec<String> = r.errors.iter().map(ToString::to_string).collect();
        assert!(errors.iter().any(|e| e.starts_with("b.cfg:6: 0.0.0.0:7001 overlaps 127.0.0.1:7001, already bound at line 2")), "{errors:?}");
        assert!(errors.iter().any(|e| e.starts_with("b.cfg:9: 127.0.0.1:7002 overlaps 127.0.0.1:7002, already bound at line 8")), "{errors:?}");
        assert!(
            errors.iter().any(|e| e.starts_with("b.cfg:14:") && e.contains("'chek'")),
            "an unknown option on a duplicate server is reported too: {errors:?}"
        );
        assert!(errors.iter().any(|e| e.starts_with("b.cfg:14: server 's1' is already defined at line 13")), "{errors:?}");
        assert_eq!(errors.len(), 4, "port 0 never collides: {errors:?}");
    }

    #[test]
    fn an_error_names_the_missing_variables_of_its_line() {
        let r = report_str(Path::new("e.cfg"), "listen l\n    bind \"${PGLB_TEST_NEVER_SET}\"\n    server s 127.0.0.1:5432\n");
        let e = r.errors[0].to_string();
        assert!(e.starts_with("e.cfg:2:") && e.contains("PGLB_TEST_NEVER_SET, which is not set in pglb's environment"), "{e}");
    }

    #[test]
    fn keepalive_timings_are_read_in_seconds_and_checked() {
        let text = "defaults\n    srvtcpka-idle 30\n    timeout connect 5s\n\
                    listen pg\n    bind 127.0.0.1:5432\n    option tcpka\n    clitcpka-idle 1m\n    clitcpka-intvl 10s\n    clitcpka-cnt 3\n    \
                    srvtcpka-intvl 5\n    srvtcpka-cnt 2\n    server a 127.0.0.1:5433\n";
        let r = report_str(Path::new("k.cfg"), text);
        assert!(r.errors.is_empty() && r.warnings.is_empty(), "{:?} {:?}", r.errors, r.warnings);
        let c = r.config.unwrap();
        let s = |n| Some(Duration::from_secs(n));
        assert_eq!(c.frontends[0].clitcpka_params, Keepalive { idle: s(60), intvl: s(10), cnt: Some(3) });
        assert_eq!(c.backends[0].srvtcpka_params, Keepalive { idle: s(30), intvl: s(5), cnt: Some(2) });

        // Without the option: a warning naming the fix.
        let r = report_str(Path::new("k.cfg"), "listen pg\n    bind 127.0.0.1:5432\n    srvtcpka-idle 10s\n    server a 127.0.0.1:5433\n");
        assert!(r.warnings.iter().any(|w| w.to_string().contains(":3") && w.to_string().contains("option srvtcpka")), "{:?}", r.warnings);
        // Below the kernel's granularity, zero probes, the wrong section: errors.
        for (line, needle) in [
            ("srvtcpka-idle 500ms", "whole number of seconds"),
            ("srvtcpka-intvl 1500ms", "whole number of seconds"),
            ("srvtcpka-idle 10h", "at most 32767s"),
            ("srvtcpka-cnt 0", "at least 1"),
            ("srvtcpka-cnt 200", "at most 127"),
            ("clitcpka-cnt 2", "not allowed in a backend"),
        ] {
            let text = format!("backend b\n    option srvtcpka\n    {line}\n    server a 127.0.0.1:5433\n");
            let r = report_str(Path::new("k.cfg"), &text);
            assert!(r.errors.iter().any(|e| e.to_string().contains("k.cfg:3") && e.to_string().contains(needle)), "{line}: {:?}", r.errors);
        }
    }

    #[test]
    fn an_unconditional_use_backend_routes_before_default_backend() {
        let text = "defaults\n    mode tcp\n    timeout connect 1s\nfrontend f\n    bind 127.0.0.1:7001\n    default_backend a\n    use_backend b\n    use_backend a\n\
                    frontend g\n    bind 127.0.0.1:7002\n    use_backend a if TRUE\nbackend a\n    server s 127.0.0.1:1\nbackend b\n    server s 127.0.0.1:2\n";
        let c = crate::config::parse_str(std::path::Path::new("t.cfg"), text).unwrap().config;
        assert_eq!(c.frontends[0].default_backend.as_deref(), Some("b"), "the first use_backend wins");
        assert_eq!(c.frontends[1].default_backend.as_deref(), Some("a"));
        let e =
            crate::config::parse_str(std::path::Path::new("t.cfg"), &text.replace("use_backend a if TRUE", "use_backend a if { src 10.0.0.0/8 }"))
                .unwrap_err();
        assert!(e.to_string().contains("has no default_backend"), "a conditional rule needs a default for the rest: {e}");
        let routed = text.replace("use_backend a if TRUE", "use_backend b if { src 10.0.0.0/8 }\n    default_backend a");
        let c = crate::config::parse_str(std::path::Path::new("t.cfg"), &routed).unwrap().config;
        assert_eq!((c.frontends[1].switching.len(), c.frontends[1].default_backend.as_deref()), (1, Some("a")));
    }
}

/// A bind line's TLS words, until they are checked and read.
#[derive(Default)]
struct TlsWords {
    ssl: bool,
    crt: Option<String>,
    ca_file: Option<String>,
    verify: Option<crate::tls::Verify>,
}

impl TlsWords {
    /// The acceptor (`None` without `ssl`); `Err` after reporting an error.
    fn acceptor(self, ctx: &mut Ctx, n: usize) -> Result<Option<std::sync::Arc<crate::tls::Acceptor>>, ()> {
        use crate::tls::{Acceptor, Verify};
        if !self.ssl {
            if self.crt.is_some() || self.ca_file.is_some() || self.verify.is_some() {
                ctx.warn(n, "crt, ca-file and verify have no effect without 'ssl' on the bind line (pglb passes clients' TLS through)");
            }
            return Ok(None);
        }
        let Some(crt) = self.crt else {
            ctx.error(n, "'ssl' needs 'crt FILE': a PEM file with the certificate, its chain and its key (or the key in FILE.key)");
            return Err(());
        };
        let verify = self.verify.unwrap_or(Verify::None);
        if verify != Verify::None && self.ca_file.is_none() {
            ctx.error(
                n,
                format!(
                    "verify {} needs 'ca-file FILE': the CAs that sign clients' certificates",
                    if verify == Verify::Optional { "optional" } else { "required" }
                ),
            );
            return Err(());
        }
        let (crt, ca_file) = (ctx.tls_defaults.crt(&crt), self.ca_file.as_deref().map(|f| ctx.tls_defaults.ca(f)));
        match Acceptor::load(&crt, ca_file.as_deref(), verify) {
            Ok(a) => Ok(Some(std::sync::Arc::new(a))),
            Err(e) => {
                ctx.error(n, format!("bind ... ssl: {e}"));
                Err(())
            }
        }
    }
}
