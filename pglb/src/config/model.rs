//! The validated configuration: what the rest of pglb reads. Every value here
//! has been checked and has its HAProxy default filled in, so consumers never
//! re-validate. Timeouts are `Option<Duration>`: `None` means "no timeout".

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// The file the configuration came from, for messages and reloads.
    pub file: PathBuf,
    pub global: Global,
    pub frontends: Vec<Frontend>,
    pub backends: Vec<Backend>,
    pub resolvers: Vec<Resolvers>,
}

impl Config {
    pub fn backend(&self, name: &str) -> Option<&Backend> {
        self.backends.iter().find(|b| &*b.name == name)
    }
}

#[derive(Debug, Clone, PartialEq, Default)]
pub struct Global {
    /// Process-wide cap on concurrent client connections (`maxconn`).
    pub maxconn: Option<u32>,
    /// Worker threads for the runtime (`nbthread`); `None` = one per core.
    pub nbthread: Option<usize>,
    /// How long a stopping pglb waits for sessions before closing them;
    /// `None` waits for ever, as HAProxy does without `hard-stop-after`.
    pub hard_stop_after: Option<Duration>,
    /// After SIGTERM, how long new clients are still served (`grace`,
    /// HAProxy's keyword): `/ready` already says 503, and a load balancer
    /// or Kubernetes Service needs a moment to stop sending clients.
    /// Default 0.
    pub grace: Option<Duration>,
    pub stats_sockets: Vec<StatsSocket>,
    /// Idle timeout of runtime API connections (`stats timeout`, default 10s).
    pub stats_timeout: Duration,
    pub pidfile: Option<PathBuf>,
    /// File descriptor limit to raise the process to (`ulimit-n`).
    pub ulimit_n: Option<u64>,
    /// `setenv`/`presetenv`/`unsetenv`, in order: (name, value or `None`
    /// for unset). Parsing never changes the process environment (a refused
    /// reload or `pglb check` must change nothing): readers of variables
    /// (`password-env`) look here first, through [`Global::env_var`].
    pub env: Vec<(String, Option<String>)>,
    /// `log` lines of global: proxies with `log global` send to these.
    pub logs: Vec<LogTarget>,
    /// `log-tag`: the program name in syslog headers (default `pglb`).
    pub log_tag: Option<String>,
    /// `log-send-hostname [NAME]`: the host name in syslog headers.
    pub log_send_hostname: Option<String>,
}

/// Where a `log` line sends HAProxy-format log lines.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LogDest {
    /// `IP[:PORT]` (default port 514), UDP.
    Udp(std::net::SocketAddr),
    /// `/path` or `unix@/path`: a UNIX datagram socket (e.g. /dev/log).
    Unix(PathBuf),
    /// `stdout` / `stderr` (`fd@1` / `fd@2`) with an explicit `format`.
    Stdout,
    Stderr,
}

/// The header of a log line (`format`), as HAProxy writes them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SyslogFormat {
    /// `<PRI>Mmm dd hh:mm:ss TAG[PID]: ` (HAProxy's default, "local").
    Local,
    Rfc3164,
    Rfc5424,
    /// `<PRI>` only.
    Priority,
    /// `<LEVEL>` only.
    Short,
    /// `<LEVEL>ISO-TIME `.
    Timed,
    /// `ISO-TIME `.
    Iso,
    /// The message alone.
    Raw,
}

/// One `log ADDR [len N] [format F] FACILITY [LEVEL [MINLEVEL]]` line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogTarget {
    pub dest: LogDest,
    /// Longest line sent, header included (`len`, default 1024).
    pub maxlen: usize,
    /// `None` when the line gives no `format`: [`SyslogFormat::Local`] for
    /// network and UNIX targets; for `stdout`/`stderr`, pglb's own logs go
    /// there instead (as `log stdout` always meant in pglb).
    pub format: Option<SyslogFormat>,
    /// 0 (kern) .. 23 (local7).
    pub facility: u8,
    /// Messages above this severity (a larger number) are not sent.
    pub level: u8,
    /// Messages are sent with at least this severity number.
    pub minlevel: u8,
    pub line: usize,
}

/// A proxy's logging: `log global` and its own `log` lines.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ProxyLogs {
    /// `log global` was written (global's targets are put first in
    /// `targets` once the file is read).
    pub global: bool,
    pub targets: Vec<LogTarget>,
    /// Global's `log-tag` and `log-send-hostname`, for the headers.
    pub tag: Option<String>,
    pub hostname: Option<String>,
    /// `log-format` (tcp mode): the traffic line's format; `None` is
    /// HAProxy's default for the proxy (tcplog, or "Connect from").
    pub format: Option<super::logformat::LogFormat>,
}

impl Global {
    /// A variable as the configuration sees it: its `setenv`/`unsetenv`
    /// first, then pglb's environment.
    pub fn env_var(&self, name: &str) -> Option<String> {
        match self.env.iter().rev().find(|(n, _)| n == name) {
            Some((_, value)) => value.clone(),
            None => std::env::var(name).ok(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatsSocket {
    /// The UNIX socket path, or the address as written for a TCP one
    /// (it names the socket across reloads).
    pub path: PathBuf,
    /// A TCP runtime API: `ipv4@IP:PORT` / `IP:PORT`, or `fd@N` inherited.
    pub tcp: Option<ApiTcp>,
    /// File mode of the socket (`mode 600`), octal as written.
    pub mode: Option<u32>,
    pub level: Level,
    pub line: usize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ApiTcp {
    Bind(std::net::SocketAddr),
    /// An inherited listening descriptor.
    Fd(i32),
}

/// Runtime API privilege levels, in increasing order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Level {
    User,
    Operator,
    Admin,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Tcp,
    /// Only for stats listeners: pglb does not proxy HTTP.
    Http,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Frontend {
    pub name: std::sync::Arc<str>,
    pub line: usize,
    pub mode: Mode,
    pub binds: Vec<Bind>,
    /// Backend that receives this frontend's sessions (`default_backend`,
    /// or the section itself for `listen`). `None` only for stats listeners.
    pub default_backend: Option<String>,
    pub maxconn: Option<u32>,
    /// Inactivity timeout on the client side (`timeout client`).
    pub timeout_client: Option<Duration>,
    /// Inactivity timeout once the client has half-closed (`timeout client-fin`).
    pub timeout_client_fin: Option<Duration>,
    pub log: LogOptions,
    /// Where this frontend's traffic lines go (HAProxy's syslog targets).
    pub logs: ProxyLogs,
    /// `tcp-request` rules.
    pub tcp_rules: super::tcprules::TcpRules,
    /// `use_backend B if|unless CONDITION`, in order, before
    /// `default_backend` (an unconditional one becomes the default).
    pub switching: Vec<Switch>,
    /// TCP keepalive towards clients (`option clitcpka` / `option tcpka`).
    pub clitcpka: bool,
    /// `clitcpka-idle`, `clitcpka-intvl`, `clitcpka-cnt`.
    pub clitcpka_params: Keepalive,
    pub stats: Option<StatsSettings>,
    /// Declared by a `listen` section (which HAProxy also shows as a backend).
    pub listen: bool,
}

/// TCP keepalive timing; `None` leaves the kernel's default
/// (`net.ipv4.tcp_keepalive_time`, `_intvl`, `_probes`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Keepalive {
    /// Idle time before the first probe (TCP_KEEPIDLE).
    pub idle: Option<Duration>,
    /// Time between probes (TCP_KEEPINTVL).
    pub intvl: Option<Duration>,
    /// Unanswered probes before the connection is dropped (TCP_KEEPCNT).
    pub cnt: Option<u32>,
}

impl Keepalive {
    /// Turns keepalive on for `sock` with these timings. The timings are
    /// best effort, as in HAProxy: a kernel that refuses one leaves its
    /// default, and the connection goes on (the parser already rejects
    /// values Linux does not take).
    pub fn apply(&self, sock: &socket2::Socket) -> std::io::Result<()> {
        sock.set_keepalive(true)?;
        if *self == Keepalive::default() {
            return Ok(());
        }
        let mut k = socket2::TcpKeepalive::new();
        if let Some(d) = self.idle {
            k = k.with_time(d);
        }
        if let Some(d) = self.intvl {
            k = k.with_interval(d);
        }
        if let Some(n) = self.cnt {
            k = k.with_retries(n);
        }
        if let Err(e) = sock.set_tcp_keepalive(&k) {
            tracing::debug!(error = %e, "keepalive timings refused by the kernel; its defaults apply");
        }
        Ok(())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct LogOptions {
    /// `option tcplog`: the full per-connection line (pglb always logs one).
    pub tcplog: bool,
    /// `option dontlognull`: skip connections that sent no data.
    pub dontlognull: bool,
}

/// One conditional `use_backend` rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Switch {
    pub backend: String,
    pub cond: super::tcprules::Cond,
    pub line: usize,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bind {
    /// The address listened on (for `fd@N`, the inherited socket's).
    pub addr: SocketAddr,
    /// `fd@N`: adopt this already listening descriptor instead of binding.
    pub fd: Option<i32>,
    pub line: usize,
    pub name: Option<String>,
    /// Listen backlog (`backlog N`); default 1024.
    pub backlog: u32,
    /// `v6only`: an IPv6 wildcard that does not also accept IPv4.
    pub v6only: bool,
    /// `ssl crt FILE ...`: pglb terminates clients' TLS here (else it
    /// passes TLS through to the server).
    pub tls: Option<std::sync::Arc<crate::tls::Acceptor>>,
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct StatsSettings {
    pub enabled: bool,
    pub uri: String,
    pub refresh: Option<Duration>,
    /// `stats auth USER:PASS` pairs; empty means no authentication.
    pub auth: Vec<(String, String)>,
    pub realm: Option<String>,
    pub hide_version: bool,
    pub admin: bool,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Backend {
    pub name: std::sync::Arc<str>,
    pub line: usize,
    pub balance: Balance,
    /// Connection attempts after the first failure (`retries`, default 3).
    pub retries: u32,
    /// `option redispatch [N]`: `Some(N)` redispatches on every Nth retry
    /// when N > 0, or on the |N|th retry before the last when N < 0
    /// (HAProxy's default -1: on the last retry). `None`: never.
    pub redispatch: Option<i32>,
    pub timeout_connect: Option<Duration>,
    pub timeout_server: Option<Duration>,
    pub timeout_server_fin: Option<Duration>,
    /// Idle timeout for both sides once connected (`timeout tunnel`).
    pub timeout_tunnel: Option<Duration>,
    /// Longest wait for a server slot (`timeout queue`; defaults to `timeout connect`).
    pub timeout_queue: Option<Duration>,
    /// Longest a health check may take after connect (`timeout check`).
    pub timeout_check: Option<Duration>,
    /// TCP keepalive towards servers (`option srvtcpka` / `option tcpka`).
    pub srvtcpka: bool,
    /// `srvtcpka-idle`, `srvtcpka-intvl`, `srvtcpka-cnt`.
    pub srvtcpka_params: Keepalive,
    pub check: CheckSpec,
    /// `option log-health-checks`: log every check result change, not only UP/DOWN.
    pub log_health_checks: bool,
    /// Where this backend's health and state lines go.
    pub logs: ProxyLogs,
    /// `option allbackups`: use every usable backup server, not only the first.
    pub allbackups: bool,
    pub servers: Vec<Server>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Balance {
    RoundRobin,
    StaticRr,
    LeastConn,
    First,
    /// Random with `draws` picks, keeping the least loaded (default 2).
    Random {
        draws: u32,
    },
    /// Hash of the client's address.
    Source,
}

impl Balance {
    pub fn name(&self) -> &'static str {
        match self {
            Balance::RoundRobin => "roundrobin",
            Balance::StaticRr => "static-rr",
            Balance::LeastConn => "leastconn",
            Balance::First => "first",
            Balance::Random { .. } => "random",
            Balance::Source => "source",
        }
    }
}

/// How a backend's servers are health-checked (for servers with `check`).
#[derive(Debug, Clone, PartialEq)]
pub enum CheckSpec {
    /// A TCP connect (HAProxy's default).
    Connect,
    /// `option tcp-check` with its `tcp-check` rules (empty = connect only).
    TcpCheck(Vec<TcpCheckRule>),
    Pgsql(PgsqlCheck),
    Http(HttpCheck),
}

#[derive(Debug, Clone, PartialEq)]
pub struct TcpCheckRule {
    pub line: usize,
    pub kind: TcpCheckKind,
}

#[derive(Debug, Clone, PartialEq)]
pub enum TcpCheckKind {
    Connect {
        port: Option<u16>,
        addr: Option<String>,
    },
    Send(Vec<u8>),
    /// `comment TEXT` is reported with a failure of this rule.
    Expect {
        negate: bool,
        pattern: ExpectPattern,
        min_recv: Option<usize>,
        comment: Option<String>,
    },
    Comment(String),
}

#[derive(Debug, Clone, PartialEq)]
pub enum ExpectPattern {
    String(Vec<u8>),
    Binary(Vec<u8>),
    /// A regular expression over the response (`rstring`).
    Rstring(String),
    /// A regular expression over the hex-encoded response (`rbinary`).
    Rbinary(String),
}

/// `option pgsql-check user NAME [...]`. The extension fields (after `user`)
/// make it a SQL-level check; without them it is HAProxy's startup check.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct PgsqlCheck {
    pub user: String,
    pub database: Option<String>,
    pub password: Option<PasswordSource>,
    pub sslmode: Option<SslMode>,
    pub role: Option<RoleRequirement>,
    pub max_lag: Option<Duration>,
    pub max_lag_bytes: Option<u64>,
    pub require_streaming: bool,
    /// `strict-rise`: a promoted server waits for `rise` checks before it
    /// takes writes, as in HAProxy (pglb otherwise adopts the only proven
    /// primary of a `role primary` backend at its first check).
    pub strict_rise: bool,
}

impl PgsqlCheck {
    /// True when the check must log in and run SQL (any extension option).
    pub fn is_sql(&self) -> bool {
        self.database.is_some()
            || self.password.is_some()
            || self.sslmode.is_some()
            || self.role.is_some()
            || self.max_lag.is_some()
            || self.max_lag_bytes.is_some()
            || self.require_streaming
            || self.strict_rise
    }
}

/// Where a check password comes from: never the configuration text itself,
/// so it cannot leak through `show`, logs or a ConfigMap diff.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PasswordSource {
    Env(String),
    File(PathBuf),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SslMode {
    Disable,
    Prefer,
    Require,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RoleRequirement {
    Primary,
    Replica,
    Any,
}

#[derive(Debug, Clone, PartialEq, Default)]
pub struct HttpCheck {
    pub method: String,
    pub uri: String,
    pub version: String,
    pub expect: Option<HttpExpect>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HttpExpect {
    Status(Vec<u16>),
    String(String),
}

#[derive(Debug, Clone, PartialEq)]
pub struct Server {
    pub name: std::sync::Arc<str>,
    pub line: usize,
    /// Host as written: an IP literal or a DNS name (resolved at run time).
    pub host: String,
    pub port: u16,
    pub check: bool,
    /// Interval between checks while the server is stable (`inter`, 2s).
    pub inter: Duration,
    /// Interval while a state change is in progress (`fastinter`, = inter).
    pub fastinter: Duration,
    /// Interval while the server is DOWN (`downinter`, = inter).
    pub downinter: Duration,
    pub rise: u32,
    pub fall: u32,
    /// 0..=256; 0 means "never selected by load balancing".
    pub weight: u32,
    pub backup: bool,
    pub maxconn: Option<u32>,
    pub maxqueue: Option<u32>,
    /// Starts in maintenance (`disabled`).
    pub disabled: bool,
    pub check_port: Option<u16>,
    pub check_addr: Option<String>,
    pub on_marked_down: OnMarkedDown,
    pub on_marked_up: OnMarkedUp,
    pub resolvers: Option<String>,
    /// TCP_USER_TIMEOUT on server connections (`tcp-ut`).
    pub tcp_ut: Option<Duration>,
    /// Passive health (`observe`, `error-limit`, `on-error`): what sessions
    /// see of the server between checks.
    pub observe: Observe,
    /// `ssl`: pglb encrypts to the server the sessions whose startup it
    /// reads (plaintext clients, and TLS it terminated).
    pub tls: Option<std::sync::Arc<crate::tls::Connector>>,
    /// `check-ssl` (or `ssl` without `no-check-ssl`): SQL checks use this TLS.
    pub check_tls: Option<std::sync::Arc<crate::tls::Connector>>,
}

/// HAProxy's `observe layer4` with `error-limit` and `on-error`: failed
/// connects (and, in pglb, startup refusals) count between checks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Observe {
    /// `observe layer4`; off by default except in `role` backends.
    pub layer4: bool,
    /// Consecutive errors that trigger `action` (`error-limit`, 10; 1 in `role` backends).
    pub error_limit: u32,
    pub action: OnError,
}

impl Default for Observe {
    fn default() -> Self {
        Observe { layer4: false, error_limit: 10, action: OnError::FailCheck }
    }
}

/// `on-error`: what reaching `error-limit` does. Every action also brings
/// the server's next check forward to `fastinter`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnError {
    FastInter,
    /// One simulated failed check (HAProxy's default).
    FailCheck,
    /// Leaves the server one failed check away from DOWN.
    SuddenDeath,
    /// DOWN at once.
    MarkDown,
}

impl OnError {
    pub fn name(self) -> &'static str {
        match self {
            OnError::FastInter => "fastinter",
            OnError::FailCheck => "fail-check",
            OnError::SuddenDeath => "sudden-death",
            OnError::MarkDown => "mark-down",
        }
    }
}

impl Server {
    /// Same settings, wherever the line sits in the file (reloads compare
    /// servers this way, so adding a comment keeps their state).
    pub fn same_settings(&self, other: &Server) -> bool {
        let tls = |a: &Option<std::sync::Arc<crate::tls::Connector>>, b: &Option<std::sync::Arc<crate::tls::Connector>>| match (a, b) {
            (Some(a), Some(b)) => a.same_settings(b),
            (a, b) => a.is_none() && b.is_none(),
        };
        let bare = |s: &Server| Server { line: 0, tls: None, check_tls: None, ..s.clone() };
        bare(self) == bare(other) && tls(&self.tls, &other.tls) && tls(&self.check_tls, &other.check_tls)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum OnMarkedDown {
    #[default]
    Nothing,
    ShutdownSessions,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum OnMarkedUp {
    #[default]
    Nothing,
    ShutdownBackupSessions,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Resolvers {
    pub name: String,
    pub line: usize,
    pub nameservers: Vec<SocketAddr>,
    pub parse_resolv_conf: bool,
    /// How long a valid answer is kept before asking again (`hold valid`, 10s).
    pub hold_valid: Duration,
    pub timeout_resolve: Duration,
    pub timeout_retry: Duration,
    pub resolve_retries: u32,
}
