//! The per-connection log line, emitted once when a connection closes, with
//! the fields of HAProxy's tcplog plus what PostgreSQL's startup packet
//! told (user, database, application_name). Target `pglb::conn`, so
//! `RUST_LOG=pglb::conn=off` silences it; JSON with `--log-format json`.

use std::net::SocketAddr;
use std::time::Duration;

/// Who or what ended a session: the first letter of HAProxy's termination
/// state (an upper-case letter for an event, lower case for a timeout).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Cause {
    /// `-`: a normal end.
    #[default]
    Normal,
    /// `C`: the client closed or failed.
    Client,
    /// `c`: the client's timeout.
    ClientTimeout,
    /// `S`: the server refused, closed or failed.
    Server,
    /// `s`: the server's timeout (or `timeout queue`, `timeout connect`).
    ServerTimeout,
    /// `P`: pglb refused (not PostgreSQL, queue full, stopping).
    Proxy,
    /// `R`: a resource ran out (file descriptors).
    Resource,
    /// `K`: closed by pglb (runtime API, `on-marked-down`, hard stop).
    Killed,
}

/// Where the session was when it ended: the second letter.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Phase {
    /// `-`: ended normally.
    #[default]
    None,
    /// `R`: reading the client's first packet.
    Request,
    /// `Q`: waiting in the queue (for a slot or a usable server).
    Queue,
    /// `C`: connecting to a server (and its startup exchange).
    Connect,
    /// `D`: relaying data.
    Data,
}

/// HAProxy's two-letter termination state (`--`, `CD`, `sQ`, ...).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Termination {
    pub cause: Cause,
    pub phase: Phase,
}

impl Termination {
    pub const NORMAL: Termination = Termination { cause: Cause::Normal, phase: Phase::None };

    pub const fn new(cause: Cause, phase: Phase) -> Termination {
        Termination { cause, phase }
    }

    /// HAProxy's code, e.g. `"sQ"`.
    pub fn code(self) -> &'static str {
        use Cause::*;
        use Phase::*;
        match (self.cause, self.phase) {
            (Normal, _) => "--",
            (Client, Request) => "CR",
            (Client, Queue) => "CQ",
            (Client, Connect) => "CC",
            (Client, Data) | (Client, None) => "CD",
            (ClientTimeout, Request) => "cR",
            (ClientTimeout, _) => "cD",
            (Server, Connect) | (Server, Request) => "SC",
            (Server, Queue) => "SQ",
            (Server, Data) | (Server, None) => "SD",
            (ServerTimeout, Queue) => "sQ",
            (ServerTimeout, Connect) | (ServerTimeout, Request) => "sC",
            (ServerTimeout, Data) | (ServerTimeout, None) => "sD",
            (Proxy, Request) => "PR",
            (Proxy, Queue) => "PQ",
            (Proxy, Connect) | (Proxy, None) => "PC",
            (Proxy, Data) => "PD",
            (Resource, Connect) => "RC",
            (Resource, _) => "RR",
            (Killed, _) => "KD",
        }
    }

    /// An end that needs no operator's attention (logged at info): a normal
    /// end, or a client that went away during the session.
    pub fn is_quiet(self) -> bool {
        matches!(self.cause, Cause::Normal) || (matches!(self.cause, Cause::Client | Cause::ClientTimeout) && self.phase == Phase::Data)
    }
}

#[derive(Debug, Default)]
pub struct ConnLog {
    pub client: Option<SocketAddr>,
    pub frontend: std::sync::Arc<str>,
    pub backend: std::sync::Arc<str>,
    pub server: std::sync::Arc<str>,
    /// Time waiting in the queue (HAProxy's Tw).
    pub queue_ms: Option<u32>,
    /// Time to connect to the server (Tc).
    pub connect_ms: Option<u32>,
    /// Total session time (Tt).
    pub total_ms: u64,
    pub bytes_in: u64,
    pub bytes_out: u64,
    pub retries: u32,
    pub redispatched: bool,
    /// HAProxy's termination state.
    pub termination: Termination,
    pub user: Option<Box<str>>,
    pub database: Option<Box<str>>,
    pub application_name: Option<Box<str>>,
    /// "plain", "tls", "gssenc", or "cancel" for CancelRequests.
    pub transport: &'static str,
    /// Why pglb refused or ended the session, when it did.
    pub reason: Option<Box<str>>,
    /// Nothing to log (`option dontlognull` and a client that sent nothing).
    pub silent: bool,
}

impl ConnLog {
    pub fn emit(&self) {
        if self.silent {
            return;
        }
        // -1 = the phase was not reached (HAProxy's convention); i64 so JSON gets numbers.
        let fmt_ms = |v: Option<u32>| v.map(i64::from).unwrap_or(-1);
        let ip = self.client.map(|c| c.ip().to_string()).unwrap_or_default();
        let port = self.client.map(|c| c.port()).unwrap_or(0);
        let (tw, tc, tt) = (fmt_ms(self.queue_ms), fmt_ms(self.connect_ms), self.total_ms);
        let user = self.user.as_deref().unwrap_or("");
        let db = self.database.as_deref().unwrap_or("");
        let app = self.application_name.as_deref().unwrap_or("");
        let reason = self.reason.as_deref().unwrap_or("");
        // The same fields at info (normal ends) or warn (anything pglb or a server cut short).
        macro_rules! line {
            ($level:ident) => {
                tracing::$level!(target: "pglb::conn", client_ip = ip.as_str(), client_port = port, frontend = &*self.frontend,
                    backend = &*self.backend, server = &*self.server, tw, tc, tt, bytes_in = self.bytes_in, bytes_out = self.bytes_out,
                    retries = self.retries, redispatched = self.redispatched, termination_state = self.termination.code(), transport = self.transport,
                    user, database = db, application_name = app, reason, "connection closed")
            };
        }
        if self.termination.is_quiet() {
            line!(info);
        } else {
            line!(warn);
        }
    }
}

/// What a traffic line shows besides the session's own record: HAProxy's
/// `%ac %fc %bc %sc` (sessions open in the process, the frontend, the
/// backend, the server) and `%sq %bq` (queued), read when the session ends.
#[derive(Debug, Clone, Copy, Default)]
pub struct Load {
    pub act: u64,
    pub fe: u64,
    pub be: u64,
    pub srv: u64,
    pub srv_queue: u64,
    pub be_queue: u64,
}

impl ConnLog {
    /// The session's line for the frontend's log targets (`option tcplog`
    /// or `log-format`), at HAProxy's severity (info), as HAProxy renders
    /// it; `local` gives the frontend address the client reached (asked
    /// only when a line is sent: it costs a system call).
    pub fn send_traffic(&self, logs: &crate::config::ProxyLogs, tcplog: bool, local: impl FnOnce() -> Option<SocketAddr>, load: Load) {
        use crate::syslog::{Severity, send, wanted};
        if self.silent || !wanted(logs, Severity::Info) {
            return;
        }
        let parsed;
        let format = match (&logs.format, tcplog) {
            (Some(f), _) => f,
            (None, true) => {
                parsed = crate::config::logformat::LogFormat::parse(crate::config::logformat::TCPLOG).expect("tcplog parses");
                &parsed
            }
            (None, false) => return,
        };
        send(logs, Severity::Info, &self.render(format, local(), load));
    }

    /// Renders a `log-format`. Values pglb does not keep per session
    /// (the server connection's addresses) are `-`.
    pub fn render(&self, format: &crate::config::logformat::LogFormat, local: Option<SocketAddr>, load: Load) -> String {
        use crate::config::logformat::{Token, Var};
        let mut out = String::new();
        let ms = |v: Option<u32>| v.map_or("-1".to_string(), |v| v.to_string());
        for token in &format.0 {
            let Token::Var(v) = token else {
                if let Token::Text(t) = token {
                    out.push_str(t);
                }
                continue;
            };
            let text = match v {
                Var::ClientIp => self.client.map_or("-".into(), |c| c.ip().to_string()),
                Var::ClientPort => self.client.map_or("-".into(), |c| c.port().to_string()),
                Var::FrontendIp => local.map_or("-".into(), |a| a.ip().to_string()),
                Var::FrontendPort => local.map_or("-".into(), |a| a.port().to_string()),
                Var::Frontend | Var::FrontendTransport => self.frontend.to_string(),
                Var::Backend => {
                    if self.backend.is_empty() {
                        self.frontend.to_string()
                    } else {
                        self.backend.to_string()
                    }
                }
                Var::Server => {
                    if self.server.is_empty() {
                        "<NOSRV>".into()
                    } else {
                        self.server.to_string()
                    }
                }
                Var::BackendSourceIp | Var::BackendSourcePort | Var::ServerIp | Var::ServerPort => "-".into(),
                Var::AcceptDate => accept_date(self.total_ms),
                Var::Zero | Var::Status => "0".into(),
                Var::Tw => ms(self.queue_ms),
                Var::Tc => ms(self.connect_ms),
                Var::Tt => self.total_ms.to_string(),
                Var::BytesToClient => self.bytes_out.to_string(),
                Var::BytesFromClient => self.bytes_in.to_string(),
                Var::Termination => self.termination.code().to_string(),
                Var::TerminationCookie => format!("{}--", self.termination.code()),
                Var::ActConn => load.act.to_string(),
                Var::FeConn => load.fe.to_string(),
                Var::BeConn => load.be.to_string(),
                Var::SrvConn => load.srv.to_string(),
                Var::Retries => format!("{}{}", if self.redispatched { "+" } else { "" }, self.retries),
                Var::SrvQueue => load.srv_queue.to_string(),
                Var::BackendQueue => load.be_queue.to_string(),
                Var::Pid => std::process::id().to_string(),
            };
            out.push_str(&text);
        }
        out
    }
}

/// HAProxy's `%t`: the accept date, `dd/Mon/yyyy:HH:MM:SS.mmm`, local time
/// (`total_ms` ago).
fn accept_date(total_ms: u64) -> String {
    let at = std::time::SystemTime::now() - Duration::from_millis(total_ms);
    let t = crate::os::local_time(at);
    format!(
        "{:02}/{}/{:04}:{:02}:{:02}:{:02}.{:03}",
        t.day,
        crate::syslog::MONTHS[(t.month - 1) as usize],
        t.year,
        t.hour,
        t.minute,
        t.second,
        t.micros / 1000
    )
}

/// Whole milliseconds (u64: 584 million years; a u128 would add 16
/// bytes of alignment to every session's future).
pub fn ms(d: Duration) -> u64 {
    d.as_millis().try_into().unwrap_or(u64::MAX)
}

/// [`ms`] for the queue and connect times, 4 bytes each in every session's
/// log record instead of 8: `timeout connect` bounds one, `timeout queue`
/// (or `timeout connect`) usually the other; a wait past 49 days reads
/// as 4294967295.
pub fn ms32(d: Duration) -> u32 {
    d.as_millis().try_into().unwrap_or(u32::MAX)
}

#[cfg(test)]
mod tests {
    use super::{Cause::*, Phase::*, Termination};

    #[test]
    fn termination_codes_are_haproxys() {
        let codes: Vec<&str> = [
            (Normal, None),
            (Client, Request),
            (Client, Queue),
            (Client, Data),
            (ClientTimeout, Request),
            (ClientTimeout, Data),
            (Server, Connect),
            (Server, Data),
            (ServerTimeout, Queue),
            (ServerTimeout, Connect),
            (ServerTimeout, Data),
            (Proxy, Request),
            (Proxy, Queue),
            (Proxy, Connect),
            (Resource, Request),
            (Resource, Connect),
            (Killed, Data),
        ]
        .into_iter()
        .map(|(c, p)| Termination::new(c, p).code())
        .collect();
        assert_eq!(codes, ["--", "CR", "CQ", "CD", "cR", "cD", "SC", "SD", "sQ", "sC", "sD", "PR", "PQ", "PC", "RR", "RC", "KD"]);
        assert!(Termination::new(Client, Data).is_quiet() && !Termination::new(Server, Data).is_quiet());
    }
}
