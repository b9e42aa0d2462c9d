//! One health check against one server: TCP connect, `tcp-check` rules,
//! PostgreSQL's startup exchange (`option pgsql-check`), or HTTP
//! (`option httpchk`, for Patroni-style health endpoints).
//!
//! Every probe closes its connection gracefully (FIN, never RST), and the
//! PostgreSQL probe closes at a point where the server logs nothing.

use crate::config::{CheckSpec, ExpectPattern, HttpCheck, HttpExpect, PgsqlCheck, TcpCheckKind, TcpCheckRule};
use crate::state::check::CheckStatus;
use std::net::SocketAddr;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Instant;

/// Largest response a check reads.
const MAX_RESPONSE: usize = 16 * 1024;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckResult {
    pub ok: bool,
    /// HAProxy's check status: L4OK, L4CON, L4TOUT, L6RSP, L7OK, L7RSP, L7STS, L7TOUT.
    pub status: CheckStatus,
    pub desc: String,
    pub duration: Duration,
}

/// Where and how long to check.
#[derive(Debug, Clone, Copy)]
pub struct Target {
    pub addr: SocketAddr,
    pub connect_timeout: Duration,
    /// For reading answers once connected (`timeout check`, else inter).
    pub read_timeout: Duration,
}

pub async fn run(spec: &CheckSpec, target: Target) -> CheckResult {
    let started = Instant::now();
    let (ok, status, desc) = match spec {
        CheckSpec::Connect => match connect(target.addr, target.connect_timeout).await {
            Ok(s) => {
                close(s).await;
                // HAProxy gives no info beside "Layer4 check passed".
                (true, CheckStatus::L4Ok, String::new())
            }
            Err(f) => f,
        },
        CheckSpec::TcpCheck(rules) => tcp_check(rules, target).await,
        CheckSpec::Pgsql(p) => pgsql(p, target).await,
        CheckSpec::Http(h) => http(h, target).await,
    };
    CheckResult { ok, status, desc, duration: started.elapsed() }
}

type Outcome = (bool, CheckStatus, String);

async fn connect(addr: SocketAddr, timeout: Duration) -> Result<TcpStream, Outcome> {
    match tokio::time::timeout(timeout, TcpStream::connect(addr)).await {
        Ok(Ok(s)) => {
            let _ = s.set_nodelay(true);
            Ok(s)
        }
        // pglb's own descriptors ran out: says nothing about the server.
        Ok(Err(e)) if crate::os::is_resource_exhaustion(&e) => Err((false, CheckStatus::SockErr, format!("cannot open a check connection: {e}"))),
        Ok(Err(e)) => Err((false, CheckStatus::L4Con, crate::os::describe(&e))),
        Err(_) => Err((false, CheckStatus::L4Tout, String::new())),
    }
}

/// Closes with a FIN (shutdown) rather than a reset, so servers do not log
/// "connection reset by peer" at every check.
async fn close(mut s: TcpStream) {
    let _ = s.shutdown().await;
}

/// Reads until `done(buffer)` says so, EOF, the size cap or the timeout.
async fn read_until(s: &mut TcpStream, buf: &mut Vec<u8>, timeout: Duration, done: impl Fn(&[u8]) -> bool) -> Result<(), &'static str> {
    let deadline = Instant::now() + timeout;
    let mut chunk = [0u8; 4096];
    while !done(buf) {
        if buf.len() >= MAX_RESPONSE {
            return Ok(());
        }
        match tokio::time::timeout_at(deadline, s.read(&mut chunk)).await {
            Err(_) => return Err("timeout"),
            Ok(Ok(0)) => return Err("eof"),
            Ok(Ok(n)) => buf.extend_from_slice(&chunk[..n]),
            Ok(Err(_)) => return Err("error"),
        }
    }
    Ok(())
}

fn matches(pattern: &ExpectPattern, data: &[u8]) -> bool {
    let contains = |needle: &[u8]| needle.is_empty() || data.windows(needle.len()).any(|w| w == needle);
    match pattern {
        ExpectPattern::String(s) | ExpectPattern::Binary(s) => contains(s),
        ExpectPattern::Rstring(r) => regex::bytes::Regex::new(r).map(|re| re.is_match(data)).unwrap_or(false),
        ExpectPattern::Rbinary(r) => {
            let hex: String = data.iter().map(|b| format!("{b:02X}")).collect();
            regex::RegexBuilder::new(r).case_insensitive(true).build().map(|re| re.is_match(&hex)).unwrap_or(false)
        }
    }
}

async fn tcp_check(rules: &[TcpCheckRule], target: Target) -> Outcome {
    let mut stream: Option<TcpStream> = None;
    let starts_with_connect = matches!(rules.first().map(|r| &r.kind), Some(TcpCheckKind::Connect { .. }));
    if !starts_with_connect {
        match connect(target.addr, target.connect_timeout).await {
            Ok(s) => stream = Some(s),
            Err((ok, CheckStatus::L4Con, desc)) => return (ok, CheckStatus::L4Con, format!("{desc} at initial connection step of tcp-check")),
            Err(f) => return f,
        }
    }
    let mut buf = Vec::new();
    // HAProxy counts every rule as a step, comments and connects included.
    let mut comment: Option<&str> = None;
    for (step, rule) in rules.iter().enumerate() {
        let step = step + 1;
        match &rule.kind {
            TcpCheckKind::Comment(text) => {
                comment = Some(text);
                continue;
            }
            TcpCheckKind::Connect { port, addr } => {
                if let Some(old) = stream.take() {
                    close(old).await;
                }
                let ip = addr.as_deref().and_then(|a| a.parse().ok()).unwrap_or(target.addr.ip());
                let to = SocketAddr::new(ip, port.unwrap_or(target.addr.port()));
                match connect(to, target.connect_timeout).await {
                    Ok(s) => stream = Some(s),
                    Err((ok, status, desc)) => {
                        let what = port.map_or("connect".to_string(), |p| format!("connect port {p}"));
                        return (ok, status, format!("{desc} at step {step} of tcp-check ({what})"));
                    }
                }
                buf.clear();
            }
            TcpCheckKind::Send(data) => {
                let Some(s) = stream.as_mut() else { return (false, CheckStatus::L7Rsp, format!("step {step}: send without a connection")) };
                if let Err(e) = s.write_all(data).await {
                    return (false, CheckStatus::L4Con, format!("{} at step {step} of tcp-check (send)", crate::os::describe(&e)));
                }
                // The next expect judges the answer to this send.
                buf.clear();
            }
            TcpCheckKind::Expect { negate, pattern, min_recv, comment: own } => {
                let comment = own.as_deref().or(comment);
                let Some(s) = stream.as_mut() else { return (false, CheckStatus::L7Rsp, format!("step {step}: expect without a connection")) };
                let negate = *negate;
                // HAProxy's rule: without min-recv, a rule that does not match yet
                // waits for more data (a later byte could match); with it, the
                // first min-recv bytes decide.
                let decided = |b: &[u8]| match min_recv {
                    Some(min) if negate => b.len() >= *min,
                    Some(min) => b.len() >= *min && matches(pattern, b),
                    None => matches(pattern, b),
                };
                let r = read_until(s, &mut buf, target.read_timeout, decided).await;
                let found = matches(pattern, &buf);
                let timed_out = r == Err("timeout");
                // A negated rule still waiting when time runs out has not
                // passed either (HAProxy: a timeout).
                if found == negate || (negate && timed_out) {
                    let outcome = if timed_out && !found {
                        let c = comment.map(|c| format!(" comment: '{c}'")).unwrap_or_default();
                        (
                            false,
                            CheckStatus::L7Tout,
                            format!(
                                " at step {step} of tcp-check (expect {}{} '{}'){c}",
                                if negate { "!" } else { "" },
                                kind(pattern),
                                shown(pattern)
                            ),
                        )
                    } else {
                        let c = comment.map(|c| format!(" comment: {c}")).unwrap_or_default();
                        let what = if negate { "matched unwanted content" } else { "did not match content" };
                        (false, CheckStatus::L7Rsp, format!("TCPCHK {what} {} at step {step}{c}", described(pattern)))
                    };
                    if let Some(s) = stream.take() {
                        close(s).await;
                    }
                    return outcome;
                }
            }
        }
        comment = None;
    }
    if let Some(s) = stream.take() {
        close(s).await;
    }
    // HAProxy's infos: `(tcp-check)` when the rules did something.
    match rules.last().map(|r| &r.kind) {
        Some(TcpCheckKind::Expect { .. }) => (true, CheckStatus::L7Ok, "(tcp-check)".to_string()),
        Some(TcpCheckKind::Connect { .. }) => (true, CheckStatus::L4Ok, "(tcp-check)".to_string()),
        _ if rules.iter().any(|r| matches!(r.kind, TcpCheckKind::Expect { .. })) => (true, CheckStatus::L7Ok, "(tcp-check)".to_string()),
        _ => (true, CheckStatus::L4Ok, String::new()),
    }
}

/// The matcher's name, as in the configuration.
fn kind(p: &ExpectPattern) -> &'static str {
    match p {
        ExpectPattern::String(_) => "string",
        ExpectPattern::Binary(_) => "binary",
        ExpectPattern::Rstring(_) => "rstring",
        ExpectPattern::Rbinary(_) => "rbinary",
    }
}

/// The pattern as written.
fn shown(p: &ExpectPattern) -> String {
    match p {
        ExpectPattern::String(s) => String::from_utf8_lossy(s).into_owned(),
        ExpectPattern::Binary(b) => b.iter().map(|x| format!("{x:02X}")).collect(),
        ExpectPattern::Rstring(r) | ExpectPattern::Rbinary(r) => r.clone(),
    }
}

/// HAProxy's words for a pattern in a mismatch: `'hello'`, `(regex)`,
/// `(binary)`, `(binary regex)`.
fn described(p: &ExpectPattern) -> String {
    match p {
        ExpectPattern::String(s) => format!("'{}'", String::from_utf8_lossy(s)),
        ExpectPattern::Binary(_) => "(binary)".into(),
        ExpectPattern::Rstring(_) => "(regex)".into(),
        ExpectPattern::Rbinary(_) => "(binary regex)".into(),
    }
}

/// HAProxy's `option pgsql-check user NAME`: send a StartupMessage; any
/// authentication request ('R') means the server accepts connections;
/// an ErrorResponse ('E') is DOWN with the server's own message.
async fn pgsql(check: &PgsqlCheck, target: Target) -> Outcome {
    let mut s = match connect(target.addr, target.connect_timeout).await {
        Ok(s) => s,
        Err(f) => return f,
    };
    // HAProxy's check sends the user alone (23 bytes for "postgres"); the
    // SQL-level check's start-up probe names its database and itself.
    let mut params = vec![("user", check.user.as_str())];
    if let Some(db) = &check.database {
        params.push(("database", db));
    }
    if check.is_sql() {
        params.push(("application_name", "pglb-check"));
    }
    let startup = crate::pg::startup_message(&params);
    if let Err(e) = s.write_all(&startup).await {
        return (false, CheckStatus::L4Con, crate::os::describe(&e));
    }
    let mut buf = Vec::new();
    // Read one whole message.
    // (Anything but 'R' or 'E' is judged on its first byte, as HAProxy does.)
    let whole = |b: &[u8]| match b.first() {
        Some(b'R' | b'E') => b.len() >= 5 && b.len() > u32::from_be_bytes([b[1], b[2], b[3], b[4]]) as usize,
        Some(_) => true,
        None => false,
    };
    let r = read_until(&mut s, &mut buf, target.read_timeout, whole).await;
    let outcome = match (buf.first(), r) {
        (Some(b'R'), _) if buf.len() >= 9 => {
            let auth = u32::from_be_bytes([buf[5], buf[6], buf[7], buf[8]]);
            if auth == 0 {
                // Trust: the session is established. Wait for ReadyForQuery
                // and say goodbye properly so PostgreSQL logs nothing.
                let ready = |b: &[u8]| contains_message(b, b'Z');
                if read_until(&mut s, &mut buf, target.read_timeout, ready).await.is_ok() {
                    let _ = s.write_all(&crate::pg::TERMINATE).await;
                }
            }
            // Otherwise PostgreSQL is waiting for a password: closing now
            // (EOF) is what it treats as "never mind", without logging.
            (true, CheckStatus::L7Ok, "PostgreSQL server is ok".to_string())
        }
        // A full server (max_connections, SQLSTATE 53300) is alive: marking
        // it DOWN would push its load onto the others and cascade.
        (Some(b'E'), _) if error_code(&buf).as_deref() == Some("53300") => {
            (true, CheckStatus::L7Ok, format!("PostgreSQL is up but full: {}", error_message(&buf)))
        }
        // As HAProxy: an ErrorResponse is L7RSP with its first field (the
        // severity) as info; pglb adds the server's message when there is one.
        (Some(b'E'), _) => (false, CheckStatus::L7Rsp, error_info(&buf)),
        (_, Err("timeout")) => (false, CheckStatus::L7Tout, String::new()),
        (None, _) => (false, CheckStatus::L7Rsp, "the server closed without answering the startup packet".to_string()),
        // Anything else is HAProxy's L7STS "PostgreSQL unknown error".
        (Some(_), _) => (false, CheckStatus::L7Sts, "PostgreSQL unknown error".to_string()),
    };
    close(s).await;
    outcome
}

/// The start-up check on a new connection, for callers that keep a session
/// open (the SQL-level check, healthd): a frozen postmaster, or one out of
/// processes, takes no new client although old sessions still answer.
/// On failure, the check's status (L4CON, L7TOUT...) and reason.
pub(crate) async fn takes_new_clients(check: &PgsqlCheck, addr: SocketAddr, limit: Duration) -> Result<(), (CheckStatus, String)> {
    match pgsql(check, Target { addr, connect_timeout: limit, read_timeout: limit }).await {
        (true, ..) => Ok(()),
        // (HAProxy's infos can be empty: the status's description then.)
        (false, status, desc) if desc.is_empty() => Err((status, status.description().to_string())),
        (false, status, desc) => Err((status, desc)),
    }
}

/// True when `b` holds a complete message of type `ty` at a message boundary.
fn contains_message(b: &[u8], ty: u8) -> bool {
    let mut i = 0;
    while i + 5 <= b.len() {
        let len = u32::from_be_bytes([b[i + 1], b[i + 2], b[i + 3], b[i + 4]]) as usize;
        if b[i] == ty && i + 1 + len <= b.len() {
            return true;
        }
        i += 1 + len;
    }
    false
}

/// HAProxy's info for an ErrorResponse (the first field's value, usually the
/// severity: `FATAL`), followed by `: MESSAGE` when the server sent one.
fn error_info(msg: &[u8]) -> String {
    let first = msg.get(6..).and_then(|b| b.split(|c| *c == 0).next()).map(|f| String::from_utf8_lossy(f).into_owned()).unwrap_or_default();
    let body = msg.get(5..).unwrap_or_default();
    match body.split(|b| *b == 0).find(|f| f.first() == Some(&b'M')) {
        Some(m) => format!("{first}: {}", String::from_utf8_lossy(&m[1..])),
        None => first,
    }
}

/// The SQLSTATE ('C' field) of an ErrorResponse.
pub fn error_code(msg: &[u8]) -> Option<String> {
    msg.get(5..)?.split(|b| *b == 0).find(|f| f.first() == Some(&b'C')).map(|f| String::from_utf8_lossy(&f[1..]).into_owned())
}

/// The 'M' field of an ErrorResponse.
pub fn error_message(msg: &[u8]) -> String {
    let body = msg.get(5..).unwrap_or_default();
    let mut fields = body.split(|b| *b == 0);
    let mut severity = String::new();
    let mut text = String::new();
    for f in fields.by_ref() {
        match f.first() {
            Some(b'S') => severity = String::from_utf8_lossy(&f[1..]).into_owned(),
            Some(b'M') => text = String::from_utf8_lossy(&f[1..]).into_owned(),
            None => break,
            _ => {}
        }
    }
    if severity.is_empty() { text } else { format!("{severity}: {text}") }
}

async fn http(check: &HttpCheck, target: Target) -> Outcome {
    let mut s = match connect(target.addr, target.connect_timeout).await {
        Ok(s) => s,
        Err(f) => return f,
    };
    let version = if check.version.is_empty() { "HTTP/1.0" } else { &check.version };
    let req = format!("{} {} {}\r\nHost: {}\r\nUser-Agent: pglb-check\r\nConnection: close\r\n\r\n", check.method, check.uri, version, target.addr);
    if let Err(e) = s.write_all(req.as_bytes()).await {
        return (false, CheckStatus::L4Con, crate::os::describe(&e));
    }
    let mut buf = Vec::new();
    // Read the whole response (the server closes), so `expect string`
    // sees the body and the server never gets a reset.
    let r = read_until(&mut s, &mut buf, target.read_timeout, |_| false).await;
    close(s).await;
    if r == Err("timeout") && buf.is_empty() {
        return (false, CheckStatus::L7Tout, "Layer7 timeout".to_string());
    }
    let text = String::from_utf8_lossy(&buf);
    let code: Option<u16> = text.lines().next().and_then(|l| l.split_whitespace().nth(1)).and_then(|c| c.parse().ok());
    let Some(code) = code else { return (false, CheckStatus::L7Rsp, "not an HTTP response".to_string()) };
    let body = text.split_once("\r\n\r\n").map(|(_, b)| b).unwrap_or("");
    match &check.expect {
        Some(HttpExpect::String(s)) if body.contains(s.as_str()) => (true, CheckStatus::L7Ok, format!("HTTP status {code}, body matches")),
        Some(HttpExpect::String(_)) => (false, CheckStatus::L7Rsp, format!("HTTP status {code}, body does not contain the expected string")),
        Some(HttpExpect::Status(codes)) if codes.contains(&code) => (true, CheckStatus::L7Ok, format!("HTTP status {code}")),
        Some(HttpExpect::Status(_)) => (false, CheckStatus::L7Sts, format!("HTTP status {code}")),
        None if (200..400).contains(&code) => (true, CheckStatus::L7Ok, format!("HTTP status {code}")),
        None => (false, CheckStatus::L7Sts, format!("HTTP status {code}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_message_reads_the_fields() {
        let m = crate::pg::fatal("28000", "no pg_hba.conf entry", None, None);
        assert_eq!(error_message(&m), "FATAL: no pg_hba.conf entry");
        assert_eq!(error_code(&m).as_deref(), Some("28000"));
    }

    #[test]
    fn patterns() {
        assert!(matches(&ExpectPattern::Binary(vec![0x52]), b"R\0\0"));
        assert!(!matches(&ExpectPattern::String(b"OK".to_vec()), b"no"));
        assert!(matches(&ExpectPattern::Rstring("^R".into()), b"R..."));
        assert!(matches(&ExpectPattern::Rbinary("^52".into()), b"R..."));
    }
}
