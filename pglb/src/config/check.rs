//! Health-check settings: `option tcp-check|pgsql-check|httpchk`,
//! `tcp-check` rules and `http-check` lines.

use super::error::Invalid;
use super::lexer::Line;
use super::model::*;
use super::parse::Ctx;
use super::units::{parse_size, parse_time};
use std::path::PathBuf;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
enum Kind {
    #[default]
    Connect,
    TcpCheck,
    Pgsql,
    Http,
}

#[derive(Debug, Clone, Default)]
pub(super) struct CheckDraft {
    kind: Kind,
    kind_line: usize,
    pgsql: PgsqlCheck,
    http: HttpCheck,
    rules: Vec<TcpCheckRule>,
    /// First http-check line, to warn when there is no `option httpchk`.
    http_line: Option<usize>,
    /// True once this section wrote its own tcp-check rules: they then
    /// replace the ones inherited from defaults instead of adding to them.
    own_rules: bool,
}

impl CheckDraft {
    pub fn begin_section(&mut self) {
        self.own_rules = false;
    }

    pub fn parse_option(&mut self, ctx: &mut Ctx, line: &Line, on: bool) {
        let n = line.number;
        let name = line.args()[0].as_str();
        if !on {
            self.kind = Kind::Connect;
            return;
        }
        self.kind_line = n;
        match name {
            "tcp-check" => self.kind = Kind::TcpCheck,
            "httpchk" => {
                self.kind = Kind::Http;
                let a = &line.args()[1..];
                let (method, uri, version) = match a.len() {
                    0 => ("OPTIONS", "/", "HTTP/1.0"),
                    1 => ("OPTIONS", a[0].as_str(), "HTTP/1.0"),
                    2 => (a[0].as_str(), a[1].as_str(), "HTTP/1.0"),
                    _ => (a[0].as_str(), a[1].as_str(), a[2].as_str()),
                };
                self.http.method = method.to_string();
                self.http.uri = uri.to_string();
                self.http.version = version.to_string();
            }
            _ => {
                self.kind = Kind::Pgsql;
                self.pgsql = parse_pgsql(ctx, line).unwrap_or_default();
            }
        }
    }

    pub fn parse_rule(&mut self, ctx: &mut Ctx, line: &Line) {
        let n = line.number;
        if line.keyword() == "http-check" {
            return self.parse_http_check(ctx, line);
        }
        let Some(action) = ctx.arg(line, 0, "an action (connect, send, send-binary, expect, comment)") else { return };
        if !self.own_rules {
            self.rules.clear();
            self.own_rules = true;
        }
        let args = &line.args()[1..];
        let kind = match action {
            "connect" => {
                let mut port = None;
                let mut addr = None;
                let mut it = args.iter();
                while let Some(opt) = it.next() {
                    match opt.as_str() {
                        "port" => port = it.next().and_then(|p| ctx.number::<u16>(n, "tcp-check connect port", p)),
                        "addr" => match it.next() {
                            Some(a) if a.parse::<std::net::IpAddr>().is_ok() => addr = Some(a.clone()),
                            _ => ctx.error(n, "tcp-check connect addr needs an IP address"),
                        },
                        "default" | "linger" => {}
                        "comment" => {
                            it.next();
                        }
                        "ssl" | "send-proxy" | "sni" | "alpn" | "proto" | "via-socks4" => {
                            ctx.error(n, format!("tcp-check connect option '{opt}' is not supported by pglb"));
                        }
                        other => ctx.error(n, format!("unknown tcp-check connect option '{other}' (pglb understands port and addr)")),
                    }
                }
                TcpCheckKind::Connect { port, addr }
            }
            "send-lf" | "send-binary-lf" => {
                return ctx.error(n, format!("tcp-check {action} uses log-format expressions, which pglb does not have: use send or send-binary"));
            }
            "send" => match args.first() {
                Some(data) => TcpCheckKind::Send(data.as_bytes().to_vec()),
                None => return ctx.error(n, "tcp-check send needs the data to send"),
            },
            "send-binary" => match args.first().map(|h| decode_hex(h)) {
                Some(Ok(bytes)) => TcpCheckKind::Send(bytes),
                Some(Err(e)) => return ctx.error(n, format!("tcp-check send-binary: {e}")),
                None => return ctx.error(n, "tcp-check send-binary needs hex data such as 0000000800000000"),
            },
            "expect" => match parse_expect(ctx, n, args) {
                Some(k) => k,
                None => return,
            },
            "comment" => TcpCheckKind::Comment(args.join(" ")),
            "set-var" | "unset-var" | "set-var-fmt" => {
                ctx.warn(n, format!("tcp-check {action} has no effect: pglb has no variables"));
                return;
            }
            other => return ctx.error(n, format!("unknown tcp-check action '{other}': use connect, send, send-binary, expect or comment")),
        };
        self.rules.push(TcpCheckRule { line: n, kind });
    }

    fn parse_http_check(&mut self, ctx: &mut Ctx, line: &Line) {
        let n = line.number;
        self.http_line.get_or_insert(n);
        let Some(action) = ctx.arg(line, 0, "an action (expect, send)") else { return };
        let args = &line.args()[1..];
        match action {
            "expect" => {
                let (negate, args) = match args.first().map(String::as_str) {
                    Some("!") => (true, &args[1..]),
                    _ => (false, args),
                };
                if negate {
                    return ctx.error(n, "http-check expect ! is not supported: expect the healthy answer instead");
                }
                match (args.first().map(String::as_str), args.get(1)) {
                    (Some("status"), Some(codes)) => {
                        let mut list = Vec::new();
                        for c in codes.split(',') {
                            match ctx.number::<u16>(n, "http-check expect status", c) {
                                Some(code) => list.push(code),
                                None => return,
                            }
                        }
                        self.http.expect = Some(HttpExpect::Status(list));
                    }
                    (Some("string"), Some(s)) => self.http.expect = Some(HttpExpect::String(s.clone())),
                    (Some(kind @ ("rstatus" | "rstring" | "hdr" | "fhdr")), _) => {
                        ctx.error(n, format!("http-check expect {kind} is not supported: use status N or string TEXT"))
                    }
                    _ => ctx.error(n, "http-check expect needs 'status CODE' or 'string TEXT'"),
                }
            }
            "send" => {
                let mut it = args.iter();
                while let Some(opt) = it.next() {
                    match opt.as_str() {
                        "meth" => self.http.method = it.next().cloned().unwrap_or_default(),
                        "uri" => self.http.uri = it.next().cloned().unwrap_or_default(),
                        "ver" => self.http.version = it.next().cloned().unwrap_or_default(),
                        "hdr" | "body" => {
                            ctx.warn(n, format!("http-check send {opt} has no effect: pglb sends a minimal request"));
                            it.next();
                            if opt == "hdr" {
                                it.next();
                            }
                        }
                        other => ctx.error(n, format!("unknown http-check send option '{other}' (pglb understands meth, uri, ver)")),
                    }
                }
            }
            "disable-on-404" | "send-state" => ctx.warn(n, format!("http-check {action} has no effect in pglb")),
            "connect" | "comment" => {}
            other => ctx.error(n, format!("unknown http-check action '{other}': use expect or send")),
        }
    }

    pub fn finish(&self, ctx: &mut Ctx, backend: &str, line: usize) -> CheckSpec {
        match self.kind {
            Kind::Connect => {
                if !self.rules.is_empty() {
                    ctx.warn(
                        self.rules[0].line,
                        format!("backend '{backend}' has tcp-check rules but no 'option tcp-check': pglb runs them; add 'option tcp-check' so HAProxy would too"),
                    );
                    return CheckSpec::TcpCheck(self.rules.clone());
                }
                CheckSpec::Connect
            }
            Kind::TcpCheck => CheckSpec::TcpCheck(self.rules.clone()),
            Kind::Pgsql => {
                if self.pgsql.user.is_empty() {
                    ctx.error(self.kind_line.max(line), "option pgsql-check needs a user: write 'option pgsql-check user NAME'");
                }
                CheckSpec::Pgsql(self.pgsql.clone())
            }
            Kind::Http => CheckSpec::Http(self.http.clone()),
        }
    }

    /// Warns about http-check rules that will not be used.
    pub fn warn_unused(&self, ctx: &mut Ctx) {
        if self.kind != Kind::Http
            && let Some(line) = self.http_line
        {
            ctx.warn(line, "http-check rules have no effect without 'option httpchk'");
        }
    }
}

fn parse_expect(ctx: &mut Ctx, n: usize, args: &[String]) -> Option<TcpCheckKind> {
    let mut i = 0;
    let mut min_recv = None;
    let mut negate = false;
    let mut comment = None;
    // Options may precede the pattern: min-recv N, error-status, ok-status, tout-status, on-success, on-error, comment.
    loop {
        match args.get(i).map(String::as_str) {
            Some("min-recv") => {
                min_recv = args.get(i + 1).and_then(|v| ctx.number::<usize>(n, "min-recv", v));
                i += 2;
            }
            Some("comment") => {
                comment = args.get(i + 1).cloned();
                i += 2;
            }
            Some(opt @ ("ok-status" | "error-status" | "tout-status" | "on-success" | "on-error" | "status-code")) => {
                ctx.warn(n, format!("tcp-check expect option '{opt}' has no effect in pglb"));
                i += 2;
            }
            Some("!") => {
                negate = true;
                i += 1;
            }
            _ => break,
        }
    }
    let (Some(kind), Some(value)) = (args.get(i), args.get(i + 1)) else {
        ctx.error(n, "tcp-check expect needs a matcher and a pattern, e.g. 'tcp-check expect binary 52'");
        return None;
    };
    // HAProxy's spelling of a negated matcher in one word: `!string`, `!rstring`...
    let kind = match kind.strip_prefix('!') {
        Some(plain) => {
            negate = true;
            plain
        }
        None => kind.as_str(),
    };
    let pattern = match kind {
        "string" => ExpectPattern::String(value.as_bytes().to_vec()),
        "binary" => match decode_hex(value) {
            Ok(b) => ExpectPattern::Binary(b),
            Err(e) => {
                ctx.error(n, format!("tcp-check expect binary: {e}"));
                return None;
            }
        },
        "rstring" | "rbinary" => {
            if let Err(e) = regex::Regex::new(value) {
                ctx.error(n, format!("tcp-check expect {kind}: invalid regular expression: {e}"));
                return None;
            }
            if kind == "rstring" { ExpectPattern::Rstring(value.clone()) } else { ExpectPattern::Rbinary(value.clone()) }
        }
        other => {
            ctx.error(n, format!("tcp-check expect '{other}' is not supported: use string, binary, rstring or rbinary"));
            return None;
        }
    };
    // ... and follow it (HAProxy's reg-tests write `... "^error" comment "negative check"`).
    let mut rest = args[i + 2..].iter();
    while let Some(opt) = rest.next() {
        match opt.as_str() {
            "comment" => comment = rest.next().cloned(),
            "min-recv" => min_recv = rest.next().and_then(|v| ctx.number::<usize>(n, "min-recv", v)),
            "ok-status" | "error-status" | "tout-status" | "on-success" | "on-error" | "status-code" => {
                ctx.warn(n, format!("tcp-check expect option '{opt}' has no effect in pglb"));
                rest.next();
            }
            other => {
                ctx.error(n, format!("unknown tcp-check expect option '{other}' after the pattern (quote a pattern with spaces)"));
                return None;
            }
        }
    }
    Some(TcpCheckKind::Expect { negate, pattern, min_recv, comment })
}

pub fn decode_hex(text: &str) -> Result<Vec<u8>, Invalid> {
    if !text.is_ascii() {
        return Err(format!("'{text}' is not hex: use the digits 0-9 and a-f").into());
    }
    if !text.len().is_multiple_of(2) {
        return Err(format!("'{text}' has an odd number of hex digits: each byte needs two").into());
    }
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&text[i..i + 2], 16).map_err(|_| Invalid(format!("'{}' is not a hex byte", &text[i..i + 2]))))
        .collect()
}

/// `option pgsql-check user NAME [database DB] [password-env VAR | password-file PATH]
/// [sslmode M] [role R] [max-lag T] [max-lag-bytes S] [require-streaming] [strict-rise]`.
fn parse_pgsql(ctx: &mut Ctx, line: &Line) -> Option<PgsqlCheck> {
    let n = line.number;
    let mut check = PgsqlCheck::default();
    let mut it = line.args()[1..].iter();
    while let Some(opt) = it.next() {
        let mut value = |ctx: &mut Ctx, what: &str| {
            let v = it.next().cloned();
            if v.is_none() {
                ctx.error(n, format!("option pgsql-check {opt} needs {what}"));
            }
            v
        };
        match opt.as_str() {
            "user" => check.user = value(ctx, "a role name")?,
            "database" => check.database = Some(value(ctx, "a database name")?),
            "password" => {
                ctx.error(
                    n,
                    "a password written in the configuration would leak through ConfigMaps and logs: use password-env VAR or password-file PATH",
                );
                return None;
            }
            "password-env" => check.password = Some(PasswordSource::Env(value(ctx, "an environment variable name")?)),
            "password-file" => check.password = Some(PasswordSource::File(PathBuf::from(value(ctx, "a file path")?))),
            "sslmode" => {
                check.sslmode = Some(match value(ctx, "disable, prefer or require")?.as_str() {
                    "disable" => SslMode::Disable,
                    "prefer" => SslMode::Prefer,
                    "require" => SslMode::Require,
                    other => {
                        ctx.error(n, format!("sslmode '{other}' is not supported: use disable, prefer or require"));
                        return None;
                    }
                })
            }
            "role" => {
                check.role = Some(match value(ctx, "primary, replica or any")?.as_str() {
                    "primary" | "master" | "read-write" => RoleRequirement::Primary,
                    "replica" | "standby" | "read-only" => RoleRequirement::Replica,
                    "any" => RoleRequirement::Any,
                    other => {
                        ctx.error(n, format!("role '{other}' is unknown: use primary, replica or any"));
                        return None;
                    }
                })
            }
            "max-lag" => match parse_time(&value(ctx, "a time such as 10s")?) {
                Ok(d) => check.max_lag = Some(d),
                Err(e) => {
                    ctx.error(n, e);
                    return None;
                }
            },
            "max-lag-bytes" => match parse_size(&value(ctx, "a size such as 16MB")?) {
                Ok(s) => check.max_lag_bytes = Some(s),
                Err(e) => {
                    ctx.error(n, e);
                    return None;
                }
            },
            "require-streaming" => check.require_streaming = true,
            "strict-rise" => check.strict_rise = true,
            other => {
                ctx.error(
                    n,
                    format!("unknown pgsql-check option '{other}' (use user, database, password-env, password-file, sslmode, role, max-lag, max-lag-bytes, require-streaming, strict-rise)"),
                );
                return None;
            }
        }
    }
    if check.password.is_some() && check.database.is_none() {
        check.database = Some("postgres".to_string());
    }
    Some(check)
}
