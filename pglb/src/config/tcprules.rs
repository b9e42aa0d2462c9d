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
    /// `tcp-request connection` and `tcp-request session`: at accept.
    pub connection: Vec<TcpRule>,
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
}

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
        self.connection.is_empty() && self.content.is_empty()
    }

    /// At accept: the first rule whose condition holds decides; none: accept.
    pub fn on_connection(&self, peer: SocketAddr, local: Option<SocketAddr>) -> Verdict {
        verdict(&self.connection, &Sample { peer, local, data: None })
    }

    /// On the first packet (its bytes as received).
    pub fn on_content(&self, peer: SocketAddr, local: Option<SocketAddr>, data: &[u8]) -> Verdict {
        verdict(&self.content, &Sample { peer, local, data: Some(data) })
    }

    /// Parses the words after `tcp-request`.
    pub fn parse(&mut self, args: &[String], line: usize) -> Result<(), Invalid> {
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
                let cond = parse_cond(rest)?;
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

struct Sample<'a> {
    peer: SocketAddr,
    local: Option<SocketAddr>,
    data: Option<&'a [u8]>,
}

fn verdict(rules: &[TcpRule], s: &Sample) -> Verdict {
    for r in rules {
        if holds(&r.cond, s) {
            return if r.accept { Verdict::Accept } else { Verdict::Reject(r.line) };
        }
    }
    Verdict::Accept
}

fn holds(cond: &Cond, s: &Sample) -> bool {
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
            let end = if *length == 0 { d.len() } else { offset + length };
            let Some(sample) = d.get(*offset..end) else { return false };
            patterns.iter().any(|p| match p {
                BytesTest::Exact(b) => sample == b.as_slice(),
                BytesTest::Contains(b) => sample.windows(b.len().max(1)).any(|w| w == b.as_slice()),
                BytesTest::Begins(b) => sample.starts_with(b),
            })
        }
        Test::Src(nets) => nets.iter().any(|(net, bits)| in_network(s.peer.ip(), *net, *bits)),
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

fn parse_cond(words: &[String]) -> Result<Cond, Invalid> {
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
            other => {
                return Err(format!("'{other}': pglb has no named ACLs; write the test inline as an anonymous ACL, e.g. {{ src 10.0.0.0/8 }}").into());
            }
        }
    }
    if terms.is_empty() {
        return Err(format!("'{kw}' needs a condition").into());
    }
    Ok(Cond { unless, terms })
}

fn parse_acl(words: &[String]) -> Result<Test, Invalid> {
    let Some((fetch, rest)) = words.split_first() else { return Err("an empty ACL '{ }'".into()) };
    let (method, values) = match rest {
        [m, method, values @ ..] if m == "-m" => (Some(method.as_str()), values),
        values => (None, values),
    };
    if values.is_empty() {
        return Err(format!("ACL '{fetch}' needs a value to compare with").into());
    }
    let ints = |values: &[String]| -> Result<Vec<IntTest>, Invalid> {
        let mut out = Vec::new();
        let mut it = values.iter();
        while let Some(v) = it.next() {
            let op = v.as_str();
            let (ctor, n): (fn(u64) -> IntTest, &str) = match op {
                "eq" => (IntTest::Eq, it.next().map(String::as_str).unwrap_or("")),
                "ge" => (IntTest::Ge, it.next().map(String::as_str).unwrap_or("")),
                "gt" => (IntTest::Gt, it.next().map(String::as_str).unwrap_or("")),
                "le" => (IntTest::Le, it.next().map(String::as_str).unwrap_or("")),
                "lt" => (IntTest::Lt, it.next().map(String::as_str).unwrap_or("")),
                n => (IntTest::Eq, n),
            };
            out.push(ctor(n.parse().map_err(|_| Invalid::from(format!("'{n}' is not an integer")))?));
        }
        Ok(out)
    };
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
        ("req.len" | "req_len", None | Some("int")) => Ok(Test::ReqLen(ints(values)?)),
        ("dst_port", None | Some("int")) => Ok(Test::DstPort(ints(values)?)),
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

#[cfg(test)]
mod tests {
    use super::*;

    fn rules(lines: &[&str]) -> TcpRules {
        let mut r = TcpRules::default();
        for (i, l) in lines.iter().enumerate() {
            r.parse(&l.split_whitespace().map(String::from).collect::<Vec<_>>(), i + 1).unwrap();
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
        assert_eq!(r.on_content(peer, None, startup), Verdict::Accept);
        assert_eq!(r.on_content(peer, None, b"\x00\x00\x00\x08\x04\xd2\x16\x2f"), Verdict::Reject(3));
        let by_src = rules(&["connection reject if !{ src 10.0.0.0/8 127.0.0.1 }"]);
        assert_eq!(by_src.on_connection(peer, None), Verdict::Accept);
        assert_eq!(by_src.on_connection("192.168.1.1:1".parse().unwrap(), None), Verdict::Reject(1));
        let mut bad = TcpRules::default();
        for (line, why) in [
            ("content set-var(txn.x) int(1)", "not supported"),
            ("connection accept if { req.len eq 1 }", "content rules only"),
            ("content accept if TRUE || FALSE", "ANDs"),
            ("content accept if is_local", "named ACLs"),
        ] {
            let e = bad.parse(&line.split_whitespace().map(String::from).collect::<Vec<_>>(), 1).unwrap_err();
            assert!(e.message().contains(why), "{line}: {e}");
        }
    }
}
