//! `tcp-request` rules (configuration.txt 4.2, "tcp-request"): the
//! tcp-mode subset pglb applies. `tcp-request connection|session accept|reject`
//! at accept, `tcp-request content accept|reject` on the client's first
//! packet (which pglb always reads whole, so `inspect-delay` only bounds
//! what HAProxy would wait), each with an optional condition: anonymous
//! ACLs (`{ FETCH [-m METHOD] VALUE... }`, `!` to negate) joined by AND,
//! after `if` or `unless`, or `TRUE`/`FALSE`.

use super::error::Invalid;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct TcpRules {
    pub inspect_delay: Option<Duration>,
    /// `tcp-request connection`: at accept.
    pub connection: Vec<TcpRule>,
    /// `tcp-request session`: at accept, after the connection rules.
    pub session: Vec<TcpRule>,
    /// `tcp-request content`: on the first packet.
    pub content: Vec<TcpRule>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TcpRule {
    pub accept: bool,
    pub cond: Cond,
    pub line: usize,
}

/// `if A B` (all hold) or `unless A B` (not all hold); no condition holds.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Cond {
    pub unless: bool,
    pub terms: Vec<Term>,
}

impl Cond {
    /// Holds whatever the connection: none, `if TRUE`, `unless FALSE`.
    pub fn always(&self) -> bool {
        let constant = |t: &Term| match t.test {
            Test::Const(c) => Some(c != t.negate),
            _ => None,
        };
        if self.terms.is_empty() {
            true
        } else if self.unless {
            // Holds unless every term holds: always, if one never does.
            self.terms.iter().any(|t| constant(t) == Some(false))
        } else {
            self.terms.iter().all(|t| constant(t) == Some(true))
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Term {
    pub negate: bool,
    pub test: Test,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Test {
    Const(bool),
    /// `req.len` against integer tests (any matches).
    ReqLen(Vec<IntTest>),
    DstPort(Vec<IntTest>),
    /// `req.payload(OFFSET,LENGTH)` (LENGTH 0: to the end) against patterns.
    Payload {
        offset: usize,
        length: usize,
        patterns: Vec<BytesTest>,
    },
    /// `src` against addresses or networks.
    Src(Vec<(IpAddr, u8)>),
    /// A StartupMessage parameter (`pgsql.user`, `pgsql.database`,
    /// `pgsql.application_name`, `pgsql.param(NAME)`) against strings.
    Startup {
        param: String,
        patterns: Vec<StrTest>,
    },
    /// `nbsrv(BACKEND)`: its usable servers, against integer tests.
    NbSrv {
        backend: String,
        tests: Vec<IntTest>,
    },
    /// A named ACL: any of its lines.
    Any(Vec<Test>),
}

/// A string test (`-m str|beg|end|sub|reg`).
#[derive(Debug, Clone)]
pub enum StrTest {
    Exact(String),
    Begins(String),
    Ends(String),
    Contains(String),
    Regex(regex::Regex),
}

impl PartialEq for StrTest {
    fn eq(&self, other: &Self) -> bool {
        match (self, other) {
            (StrTest::Exact(a), StrTest::Exact(b))
            | (StrTest::Begins(a), StrTest::Begins(b))
            | (StrTest::Ends(a), StrTest::Ends(b))
            | (StrTest::Contains(a), StrTest::Contains(b)) => a == b,
            (StrTest::Regex(a), StrTest::Regex(b)) => a.as_str() == b.as_str(),
            _ => false,
        }
    }
}

impl Eq for StrTest {}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IntTest {
    Eq(u64),
    Ge(u64),
    Gt(u64),
    Le(u64),
    Lt(u64),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BytesTest {
    Exact(Vec<u8>),
    Contains(Vec<u8>),
    Begins(Vec<u8>),
}

/// What the rules say of a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Accept,
    /// Rejected by the rule at this line.
    Reject(usize),
}

impl TcpRules {
    pub fn is_empty(&self) -> bool {
        self.connection.is_empty() && self.session.is_empty() && self.content.is_empty()
    }

    /// At accept: the first rule whose condition holds decides; none: accept.
    /// The connection rules, then (if they accept) the session rules.
    pub fn on_connection(&self, peer: SocketAddr, local: Option<SocketAddr>, nbsrv: &dyn Fn(&str) -> usize) -> Verdict {
        let sample = Sample { peer, local, data: None, nbsrv };
        match verdict(&self.connection, &sample) {
            Verdict::Accept => verdict(&self.session, &sample),
            reject => reject,
        }
    }

    /// On the first packet (its bytes as received).
    pub fn on_content(&self, peer: SocketAddr, local: Option<SocketAddr>, data: &[u8], nbsrv: &dyn Fn(&str) -> usize) -> Verdict {
        verdict(&self.content, &Sample { peer, local, data: Some(data), nbsrv })
    }

    /// Parses the words after `tcp-request`.
    pub fn parse(&mut self, args: &[String], line: usize, acls: &Acls) -> Result<(), Invalid> {
        match args {
            [kw, t] if kw == "inspect-delay" => {
                self.inspect_delay = super::units::parse_timeout(t)?;
                Ok(())
            }
            [stage, action, rest @ ..] if matches!(stage.as_str(), "connection" | "session" | "content") => {
                let accept = match action.as_str() {
                    "accept" => true,
                    "reject" => false,
                    other => {
                        return Err(format!(
                            "'tcp-request {stage} {other}' is not supported: pglb applies accept and reject (with if/unless and anonymous ACLs)"
                        )
                        .into());
                    }
                };
                let cond = parse_cond(rest, acls)?;
                if stage != "content" && cond.terms.iter().any(|t| matches!(t.test, Test::ReqLen(_) | Test::Payload { .. })) {
                    return Err(format!("'tcp-request {stage}': req.len and req.payload are known on content rules only").into());
                }
                let rule = TcpRule { accept, cond, line };
                if stage == "content" {
                    self.content.push(rule)
                } else {
                    self.connection.push(rule)
                }
                Ok(())
            }
            _ => Err("'tcp-request' takes inspect-delay TIME, or connection|session|content accept|reject [if|unless CONDITION]".into()),
        }
    }
}

/// What a condition is evaluated on.
pub struct Sample<'a> {
    pub peer: SocketAddr,
    pub local: Option<SocketAddr>,
    /// The client's first packet, once read.
    pub data: Option<&'a [u8]>,
    /// Usable servers of a backend, by name (`nbsrv`).
    pub nbsrv: &'a dyn Fn(&str) -> usize,
}

/// Named ACLs of a section (`acl NAME FETCH [-m METHOD] VALUE...`); lines
/// with the same name are alternatives, as in HAProxy.
pub type Acls = std::collections::HashMap<String, Vec<Test>>;

/// Parses an `acl NAME ...` line into `acls`.
pub fn parse_named_acl(args: &[String], acls: &mut Acls) -> Result<(), Invalid> {
    let Some((name, rest)) = args.split_first() else { return Err("'acl' needs a name and a test".into()) };
    let test = parse_acl(rest)?;
    acls.entry(name.clone()).or_default().push(test);
    Ok(())
}

fn verdict(rules: &[TcpRule], s: &Sample) -> Verdict {
    for r in rules {
        if holds(&r.cond, s) {
            return if r.accept { Verdict::Accept } else { Verdict::Reject(r.line) };
        }
    }
    Verdict::Accept
}

/// Whether `cond` holds for `s` (no condition holds).
pub fn holds(cond: &Cond, s: &Sample) -> bool {
    let all = cond.terms.iter().all(|t| test(&t.test, s) != t.negate);
    all != cond.unless
}

fn test(t: &Test, s: &Sample) -> bool {
    let int = |v: u64, tests: &[IntTest]| {
        tests.iter().any(|t| match *t {
            IntTest::Eq(n) => v == n,
            IntTest::Ge(n) => v >= n,
            IntTest::Gt(n) => v > n,
            IntTest::Le(n) => v <= n,
            IntTest::Lt(n) => v < n,
        })
    };
    match t {
        Test::Const(b) => *b,
        Test::ReqLen(tests) => s.data.is_some_and(|d| int(d.len() as u64, tests)),
        Test::DstPort(tests) => s.local.is_some_and(|l| int(u64::from(l.port()), tests)),
        Test::Payload { offset, length, patterns } => {
            let Some(d) = s.data else { return false };
            let end = if *length == 0 { d.len() } else { offset.saturating_add(*length) };
            let Some(sample) = d.get(*offset..end) else { return false };
            patterns.iter().any(|p| match p {
                BytesTest::Exact(b) => sample == b.as_slice(),
                BytesTest::Contains(b) => sample.windows(b.len().max(1)).any(|w| w == b.as_slice()),
                BytesTest::Begins(b) => sample.starts_with(b),
            })
        }
        Test::Src(nets) => nets.iter().any(|(net, bits)| in_network(s.peer.ip(), *net, *bits)),
        Test::Startup { param, patterns } => {
            let Some(value) = s.data.and_then(|d| crate::pg::startup::param(d, param)) else { return false };
            patterns.iter().any(|p| match p {
                StrTest::Exact(x) => value == *x,
                StrTest::Begins(x) => value.starts_with(x.as_str()),
                StrTest::Ends(x) => value.ends_with(x.as_str()),
                StrTest::Contains(x) => value.contains(x.as_str()),
                StrTest::Regex(r) => r.is_match(&value),
            })
        }
        Test::NbSrv { backend, tests } => int((s.nbsrv)(backend) as u64, tests),
        Test::Any(tests) => tests.iter().any(|t| test(t, s)),
    }
}

fn in_network(ip: IpAddr, net: IpAddr, bits: u8) -> bool {
    let ip = match (ip, net) {
        (IpAddr::V6(v6), IpAddr::V4(_)) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(ip),
        _ => ip,
    };
    match (ip, net) {
        (IpAddr::V4(a), IpAddr::V4(b)) => {
            bits == 0 || u32::from(a) >> (32 - u32::from(bits.min(32))) == u32::from(b) >> (32 - u32::from(bits.min(32)))
        }
        (IpAddr::V6(a), IpAddr::V6(b)) => {
            bits == 0 || u128::from(a) >> (128 - u32::from(bits.min(128))) == u128::from(b) >> (128 - u32::from(bits.min(128)))
        }
        _ => false,
    }
}

/// Parses `if|unless TERMS...` (empty: no condition).
pub fn parse_cond(words: &[String], acls: &Acls) -> Result<Cond, Invalid> {
    let Some((kw, rest)) = words.split_first() else { return Ok(Cond::default()) };
    let unless = match kw.as_str() {
        "if" => false,
        "unless" => true,
        other => return Err(format!("expected 'if' or 'unless' before a condition, not '{other}'").into()),
    };
    let mut terms = Vec::new();
    let mut i = 0;
    while i < rest.len() {
        let mut negate = false;
        let mut w = rest[i].as_str();
        if w == "!" {
            negate = true;
            i += 1;
            w = rest.get(i).map(String::as_str).unwrap_or("");
        } else if let Some(after) = w.strip_prefix('!') {
            // `!{` and `!TRUE` written as one word.
            negate = true;
            w = after;
        }
        match w {
            "TRUE" | "FALSE" => {
                terms.push(Term { negate, test: Test::Const(w == "TRUE") });
                i += 1;
            }
            "{" => {
                let close = rest[i..].iter().position(|x| x == "}").ok_or("an anonymous ACL '{' needs its closing '}'")? + i;
                terms.push(Term { negate, test: parse_acl(&rest[i + 1..close])? });
                i = close + 1;
            }
            "||" | "or" => return Err("pglb's conditions are ANDs of anonymous ACLs: write one rule per alternative instead of '||'".into()),
            "" => return Err("'!' needs an ACL after it".into()),
            name => match acls.get(name) {
                Some(tests) => {
                    terms.push(Term { negate, test: Test::Any(tests.clone()) });
                    i += 1;
                }
                None => return Err(format!("no ACL named '{name}' before this line: declare it with 'acl {name} FETCH VALUE' first").into()),
            },
        }
    }
    if terms.is_empty() {
        return Err(format!("'{kw}' needs a condition").into());
    }
    Ok(Cond { unless, terms })
}

fn parse_acl(words: &[String]) -> Result<Test, Invalid> {
    if let Some(test) = parse_pgsql_acl(words)? {
        return Ok(test);
    }
    let Some((fetch, rest)) = words.split_first() else { return Err("an empty ACL '{ }'".into()) };
    let (method, values) = match rest {
        [m, method, values @ ..] if m == "-m" => (Some(method.as_str()), values),
        values => (None, values),
    };
    if values.is_empty() {
        return Err(format!("ACL '{fetch}' needs a value to compare with").into());
    }
    if let Some(args) = fetch.strip_prefix("req.payload(").and_then(|a| a.strip_suffix(')')) {
        let (o, l) = args.split_once(',').ok_or("req.payload takes (OFFSET,LENGTH)")?;
        let (offset, length) = (
            o.trim().parse().map_err(|_| "req.payload: OFFSET must be a number")?,
            l.trim().parse().map_err(|_| "req.payload: LENGTH must be a number")?,
        );
        let patterns = values
            .iter()
            .map(|v| {
                Ok(match method.unwrap_or("bin") {
                    "bin" => BytesTest::Exact(super::decode_hex(v)?),
                    "str" => BytesTest::Exact(v.as_bytes().to_vec()),
                    "sub" => BytesTest::Contains(v.as_bytes().to_vec()),
                    "beg" => BytesTest::Begins(v.as_bytes().to_vec()),
                    other => return Err(Invalid::from(format!("-m {other} is not supported on req.payload: use bin, str, sub or beg"))),
                })
            })
            .collect::<Result<Vec<_>, Invalid>>()?;
        return Ok(Test::Payload { offset, length, patterns });
    }
    match (fetch.as_str(), method) {
        ("req.len" | "req_len", None | Some("int")) => Ok(Test::ReqLen(int_tests(values)?)),
        ("dst_port", None | Some("int")) => Ok(Test::DstPort(int_tests(values)?)),
        ("src", None | Some("ip")) => values
            .iter()
            .map(|v| {
                let (ip, bits) = v.split_once('/').map_or((v.as_str(), None), |(a, b)| (a, Some(b)));
                let ip: IpAddr = ip.parse().map_err(|_| Invalid::from(format!("'{v}' is not an IP address or network")))?;
                let max = if ip.is_ipv4() { 32 } else { 128 };
                let bits = match bits {
                    None => max,
                    Some(b) => b.parse::<u8>().ok().filter(|b| *b <= max).ok_or_else(|| Invalid::from(format!("'{v}': bad prefix length")))?,
                };
                Ok((ip, bits))
            })
            .collect::<Result<Vec<_>, Invalid>>()
            .map(Test::Src),
        (f, Some(m)) if matches!(f, "req.len" | "req_len" | "dst_port" | "src") => Err(format!("-m {m} is not supported on {f}").into()),
        (other, _) => {
            Err(format!("fetch '{other}' is not supported in pglb's ACLs: use req.len, req.payload(OFFSET,LENGTH), src or dst_port").into())
        }
    }
}

/// pglb's fetches: the StartupMessage's parameters and `nbsrv(BACKEND)`.
fn parse_pgsql_acl(words: &[String]) -> Result<Option<Test>, Invalid> {
    let Some((fetch, rest)) = words.split_first() else { return Ok(None) };
    let (method, values) = match rest {
        [m, method, values @ ..] if m == "-m" => (Some(method.as_str()), values),
        values => (None, values),
    };
    let param = match fetch.as_str() {
        "pgsql.user" => "user".to_string(),
        "pgsql.database" => "database".to_string(),
        "pgsql.application_name" => "application_name".to_string(),
        f => match f.strip_prefix("pgsql.param(").and_then(|p| p.strip_suffix(')')) {
            Some(name) if !name.is_empty() => name.to_string(),
            Some(_) => return Err("pgsql.param(NAME) needs a parameter name".into()),
            None => {
                if let Some(backend) = f.strip_prefix("nbsrv(").and_then(|p| p.strip_suffix(')')) {
                    let tests = int_tests(values)?;
                    return Ok(Some(Test::NbSrv { backend: backend.to_string(), tests }));
                }
                return Ok(None);
            }
        },
    };
    if values.is_empty() {
        return Err(format!("ACL '{fetch}' needs a value to compare with").into());
    }
    let patterns = values
        .iter()
        .map(|v| {
            Ok(match method.unwrap_or("str") {
                "str" => StrTest::Exact(v.clone()),
                "beg" => StrTest::Begins(v.clone()),
                "end" => StrTest::Ends(v.clone()),
                "sub" => StrTest::Contains(v.clone()),
                "reg" => StrTest::Regex(regex::Regex::new(v).map_err(|e| Invalid::from(format!("-m reg '{v}': {e}")))?),
                other => return Err(Invalid::from(format!("-m {other} is not supported on {fetch}: use str, beg, end, sub or reg"))),
            })
        })
        .collect::<Result<Vec<_>, Invalid>>()?;
    Ok(Some(Test::Startup { param, patterns }))
}

fn int_tests(values: &[String]) -> Result<Vec<IntTest>, Invalid> {
    let mut out = Vec::new();
    let mut it = values.iter();
    while let Some(v) = it.next() {
        let (ctor, n): (fn(u64) -> IntTest, &str) = match v.as_str() {
            "eq" => (IntTest::Eq, it.next().map(String::as_str).unwrap_or("")),
            "ge" => (IntTest::Ge, it.next().map(String::as_str).unwrap_or("")),
            "gt" => (IntTest::Gt, it.next().map(String::as_str).unwrap_or("")),
            "le" => (IntTest::Le, it.next().map(String::as_str).unwrap_or("")),
            "lt" => (IntTest::Lt, it.next().map(String::as_str).unwrap_or("")),
            n => (IntTest::Eq, n),
        };
        out.push(ctor(n.parse().map_err(|_| Invalid::from(format!("'{n}' is not an integer")))?));
    }
    if out.is_empty() {
        return Err("an integer test needs a value".into());
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rules(lines: &[&str]) -> TcpRules {
        let mut r = TcpRules::default();
        for (i, l) in lines.iter().enumerate() {
            r.parse(&l.split_whitespace().map(String::from).collect::<Vec<_>>(), i + 1, &Acls::new()).unwrap();
        }
        r
    }

    #[test]
    fn haproxys_pgsql_check_listener() {
        // reg-tests/checks/pgsql-check.vtc's listener: only the 23-byte StartupMessage passes.
        let r = rules(&[
            "inspect-delay 100ms",
            "content accept if { req.len eq 23 } { req.payload(0,23) -m bin 00000017000300007573657200706f7374677265730000 }",
            "content reject",
        ]);
        let peer: SocketAddr = "10.1.2.3:5000".parse().unwrap();
        let startup = b"\x00\x00\x00\x17\x00\x03\x00\x00user\x00postgres\x00\x00";
        assert_eq!(r.on_content(peer, None, startup, &|_| 0), Verdict::Accept);
        assert_eq!(r.on_content(peer, None, b"\x00\x00\x00\x08\x04\xd2\x16\x2f", &|_| 0), Verdict::Reject(3));
        let by_src = rules(&["connection reject if !{ src 10.0.0.0/8 127.0.0.1 }"]);
        assert_eq!(by_src.on_connection(peer, None, &|_| 0), Verdict::Accept);
        assert_eq!(by_src.on_connection("192.168.1.1:1".parse().unwrap(), None, &|_| 0), Verdict::Reject(1));
        let mut acls = Acls::new();
        for l in ["ro pgsql.user app_ro", "ro pgsql.application_name -m end -ro", "up nbsrv(replicas) gt 0"] {
            parse_named_acl(&l.split_whitespace().map(String::from).collect::<Vec<_>>(), &mut acls).unwrap();
        }
        let cond = parse_cond(&["if", "ro", "up"].map(String::from), &acls).unwrap();
        let startup = |user: &str, app: &str| crate::pg::startup_message(&[("user", user), ("application_name", app)]);
        for (user, app, usable, want) in
            [("app_ro", "x", 1, true), ("app", "report-ro", 2, true), ("app", "report", 1, false), ("app_ro", "x", 0, false)]
        {
            let data = startup(user, app);
            let nbsrv = move |b: &str| if b == "replicas" { usable } else { 0 };
            assert_eq!(holds(&cond, &Sample { peer, local: None, data: Some(&data), nbsrv: &nbsrv }), want, "{user} {app} {usable}");
        }
        let mut bad = TcpRules::default();
        for (line, why) in [
            ("content set-var(txn.x) int(1)", "not supported"),
            ("connection accept if { req.len eq 1 }", "content rules only"),
            ("content accept if TRUE || FALSE", "ANDs"),
            ("content accept if is_local", "no ACL named 'is_local'"),
        ] {
            let e = bad.parse(&line.split_whitespace().map(String::from).collect::<Vec<_>>(), 1, &Acls::new()).unwrap_err();
            assert!(e.message().contains(why), "{line}: {e}");
        }
    }
}
