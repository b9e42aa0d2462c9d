//! The SQL-level check (pglb's extension of `option pgsql-check`): log in
//! like an application and ask the server what it is. One query yields the
//! role, the replay lag in seconds and bytes, and the WAL receiver's state.
//!
//! The connection is kept between checks, so a check does not log in each
//! time: it runs its query there and, beside it, HAProxy's start-up check on
//! a new connection (start-up packet, authentication request, EOF: nothing
//! in PostgreSQL's log), which proves that the server still takes new
//! clients. The connection is re-established when lost, and every
//! `FRESH_LOGIN_EVERY` a new login replaces it, proving that logins (the
//! password, `pg_hba.conf`) still work. Over TLS every check logs in.

use crate::config::{PasswordSource, PgsqlCheck, RoleRequirement, SslMode};
use crate::state::check::CheckStatus;
use std::net::SocketAddr;
use std::time::Duration;
use tokio::time::Instant;
use tokio_postgres::Client;

/// How often the kept connection is replaced by a fresh login.
const FRESH_LOGIN_EVERY: Duration = Duration::from_secs(30);

pub use crate::pg::PgInfo;

/// role, lag seconds, current/replay LSN, receive LSN, WAL receiver status.
/// A replica that has replayed everything its receiver received lags 0 s.
/// After a restart the receive position starts again at the beginning of a
/// WAL segment, below the replay position, hence `<=`, not `=`: with `=` an
/// idle cluster's restarted replica looked further behind every second.
/// Otherwise a replica that has replayed no transaction since it started
/// lags at least since its start.
const QUERY: &str = "select pg_is_in_recovery(), \
    case when not pg_is_in_recovery() then 0::float8 \
         when pg_last_wal_receive_lsn() is not null and pg_last_wal_receive_lsn() <= pg_last_wal_replay_lsn() then 0::float8 \
         else extract(epoch from now() - coalesce(pg_last_xact_replay_timestamp(), pg_postmaster_start_time()))::float8 end, \
    (case when pg_is_in_recovery() then pg_last_wal_replay_lsn() else pg_current_wal_lsn() end)::text, \
    pg_last_wal_receive_lsn()::text, \
    (select status from pg_stat_wal_receiver limit 1)";

pub fn parse_lsn(text: &str) -> Option<u64> {
    let (hi, lo) = text.split_once('/')?;
    Some((u64::from_str_radix(hi, 16).ok()? << 32) | u64::from_str_radix(lo, 16).ok()?)
}

pub struct SqlProbe {
    check: PgsqlCheck,
    /// For `password-env`: the configuration's `setenv`s before pglb's environment.
    global: std::sync::Arc<crate::config::Global>,
    /// The kept connection, when it was opened, and to which address.
    client: Option<(Client, Instant, SocketAddr)>,
    /// `check-ssl` (or `ssl`) on the server line: the server's TLS, with its
    /// certificate checks.
    tls: Option<std::sync::Arc<crate::tls::Connector>>,
}

#[derive(Debug, thiserror::Error)]
pub enum SqlError {
    /// No TCP connection (refused, unreachable): HAProxy's L4CON.
    #[error("{0}")]
    Connect(String),
    /// pglb's own file descriptors ran out: HAProxy's SOCKERR (the server's
    /// state stays as it was).
    #[error("cannot open a check connection: {0}")]
    Resource(String),
    #[error("{0}")]
    Login(String),
    #[error("Layer7 timeout")]
    Timeout,
    #[error("query failed: {0}")]
    Query(String),
    #[error("{0}")]
    Password(String),
    /// The kept connection answered, but a new connection failed: the
    /// server takes no new clients (frozen postmaster, fork failures,
    /// shutting down). `status` is the start-up check's (L4CON, L7TOUT...).
    #[error("new connections fail: {desc}")]
    NewConnection { status: CheckStatus, desc: String },
}

/// A password for the check's login, from password-env or password-file.
type Password = String;

impl SqlProbe {
    pub fn new(check: PgsqlCheck, tls: Option<std::sync::Arc<crate::tls::Connector>>, global: std::sync::Arc<crate::config::Global>) -> Self {
        SqlProbe { check, global, client: None, tls }
    }

    /// Whether checks log in over TLS.
    fn tls(&self) -> bool {
        self.tls.is_some() || self.check.sslmode.is_some_and(|m| m != SslMode::Disable)
    }

    fn password(&self) -> Result<Option<Password>, SqlError> {
        match &self.check.password {
            None => Ok(None),
            Some(PasswordSource::Env(var)) => {
                self.global.env_var(var).map(Some).ok_or_else(|| SqlError::Password(format!("environment variable {var} (password-env) is not set")))
            }
            Some(PasswordSource::File(path)) => std::fs::read_to_string(path)
                .map(|p| Some(p.trim_end_matches(['\n', '\r']).to_string()))
                .map_err(|e| SqlError::Password(format!("cannot read password-file {}: {}", path.display(), e.kind()))),
        }
    }

    async fn login(&self, addr: SocketAddr, timeout: Duration) -> Result<Client, SqlError> {
        let mut cfg = tokio_postgres::Config::new();
        cfg.host(addr.ip().to_string())
            .port(addr.port())
            .user(&self.check.user)
            .dbname(self.check.database.as_deref().unwrap_or("postgres"))
            .application_name("pglb-check")
            .connect_timeout(timeout);
        if let Some(p) = self.password()? {
            cfg.password(p);
        }
        let err = |e: tokio_postgres::Error| match std::error::Error::source(&e).and_then(|s| s.downcast_ref::<std::io::Error>()) {
            Some(io) if crate::os::is_resource_exhaustion(io) => SqlError::Resource(io.to_string()),
            _ => match tcp_error(&e) {
                Some(io) => SqlError::Connect(crate::os::describe(io)),
                None => SqlError::Login(login_error(&e)),
            },
        };
        if let Some(tls) = &self.tls {
            cfg.ssl_mode(tokio_postgres::config::SslMode::Require);
            let (client, conn) = cfg.connect(tls.for_checks()).await.map_err(err)?;
            tokio::spawn(conn);
            return Ok(client);
        }
        match self.check.sslmode.unwrap_or(SslMode::Disable) {
            SslMode::Disable => {
                cfg.ssl_mode(tokio_postgres::config::SslMode::Disable);
                let (client, conn) = cfg.connect(tokio_postgres::NoTls).await.map_err(err)?;
                tokio::spawn(conn);
                Ok(client)
            }
            mode => {
                cfg.ssl_mode(if mode == SslMode::Require {
                    tokio_postgres::config::SslMode::Require
                } else {
                    tokio_postgres::config::SslMode::Prefer
                });
                let (client, conn) = cfg.connect(tls_no_verify()?).await.map_err(err)?;
                tokio::spawn(conn);
                Ok(client)
            }
        }
    }

    /// Runs one check: logs in, or reuses the kept connection and proves
    /// with the start-up check that new connections still work. A kept
    /// connection alone would keep answering while the postmaster takes no
    /// new client (frozen, out of processes), and pglb would go on sending
    /// clients there until the next fresh login.
    pub async fn probe(&mut self, addr: SocketAddr, timeout: Duration) -> Result<PgInfo, SqlError> {
        // A new address (DNS change, `set server addr`) needs a new login too.
        // So does every check over TLS: the start-up check below is plaintext,
        // which a `hostssl`-only server would refuse, and log.
        let stale =
            self.tls() || self.client.as_ref().is_none_or(|(c, since, at)| c.is_closed() || since.elapsed() >= FRESH_LOGIN_EVERY || *at != addr);
        if stale {
            self.client = None;
            let fresh = tokio::time::timeout(timeout, self.login(addr, timeout)).await.map_err(|_| SqlError::Timeout)??;
            self.client = Some((fresh, Instant::now(), addr));
        }
        let (client, ..) = self.client.as_ref().expect("just set");
        let query = async {
            match tokio::time::timeout(timeout, read_info(client)).await {
                Err(_) => Err(SqlError::Timeout),
                Ok(Err(e)) => Err(SqlError::Query(login_error(&e))),
                Ok(Ok(info)) => Ok(info),
            }
        };
        // A fresh login has just proved it.
        let accepts = async {
            if stale {
                return Ok(());
            }
            super::probe::takes_new_clients(&self.check, addr, timeout).await.map_err(|(status, desc)| SqlError::NewConnection { status, desc })
        };
        let (info, accepts) = tokio::join!(query, accepts);
        if info.is_err() {
            self.client = None;
        }
        accepts?;
        info
    }
}

/// Asks a server what it is (one query).
pub async fn read_info(client: &Client) -> Result<PgInfo, tokio_postgres::Error> {
    let row = client.query_one(QUERY, &[]).await?;
    let in_recovery: bool = row.get(0);
    let lag_seconds: f64 = row.get(1);
    let lsn = row.get::<_, Option<String>>(2).as_deref().and_then(parse_lsn).unwrap_or(0);
    let received = row.get::<_, Option<String>>(3).as_deref().and_then(parse_lsn);
    let receiver: Option<String> = row.get(4);
    Ok(PgInfo {
        primary: !in_recovery,
        lag_seconds: lag_seconds.max(0.0),
        lag_bytes: received.map(|r| r.saturating_sub(lsn)).unwrap_or(0),
        streaming: receiver.as_deref() == Some("streaming"),
        lsn,
    })
}

/// A TLS connector for `sslmode prefer|require`: like libpq's `require`,
/// it encrypts without verifying the certificate.
pub fn tls_no_verify() -> Result<postgres_openssl::MakeTlsConnector, SqlError> {
    let mut b = openssl::ssl::SslConnector::builder(openssl::ssl::SslMethod::tls()).map_err(|e| SqlError::Login(format!("TLS setup: {e}")))?;
    b.set_verify(openssl::ssl::SslVerifyMode::NONE);
    Ok(postgres_openssl::MakeTlsConnector::new(b.build()))
}

/// The I/O error of a login that never got a TCP connection. The TCP
/// connect is the one step of tokio-postgres's connect that fails with the
/// errors below; once connected, a failure comes as a closed connection or
/// a server error.
fn tcp_error(e: &tokio_postgres::Error) -> Option<&std::io::Error> {
    use std::io::ErrorKind::*;
    let io = std::error::Error::source(e)?.downcast_ref::<std::io::Error>()?;
    matches!(io.kind(), ConnectionRefused | HostUnreachable | NetworkUnreachable | AddrNotAvailable).then_some(io)
}

/// The server's own words for a failed login or query (never the password).
pub fn login_error(e: &tokio_postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => format!("PostgreSQL error: {}: {}", db.severity(), db.message()),
        // "error connecting to server" alone hides the cause (refused, timeout).
        None => match std::error::Error::source(e) {
            Some(cause) => format!("{e}: {cause}"),
            None => format!("{e}"),
        },
    }
}

/// Why a server that answered is not fit for its backend; the text is the
/// check's description in logs and stats.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum Unfit {
    #[error("{desc}, primary required")]
    NotPrimary { desc: String },
    #[error("{desc}, replica required")]
    NotReplica { desc: String },
    #[error("role replica, lag {lag:.1}s > {}", crate::config::units::fmt_duration(*.max))]
    LagTime { lag: f64, max: Duration },
    #[error("role replica, lag {lag} bytes > {max} bytes")]
    LagBytes { lag: u64, max: u64 },
    #[error("{desc}, streaming required")]
    NotStreaming { desc: String },
}

impl Unfit {
    /// The server answered with a role this backend must not route to: a
    /// definitive answer, not a failure to confirm with `fall` more checks
    /// (as a lagging replica's is).
    pub fn is_wrong_role(&self) -> bool {
        matches!(self, Unfit::NotPrimary { .. } | Unfit::NotReplica { .. })
    }
}

/// Judges an answer against the check's requirements; `Ok` carries the
/// description shown in logs and stats ("role replica, lag 0.0s, streaming").
pub fn judge(check: &PgsqlCheck, info: &PgInfo) -> Result<String, Unfit> {
    let role = if info.primary { "primary" } else { "replica" };
    let mut desc = format!("role {role}");
    if !info.primary {
        desc.push_str(&format!(
            ", lag {:.1}s, {} bytes, {}",
            info.lag_seconds,
            info.lag_bytes,
            if info.streaming { "streaming" } else { "not streaming" }
        ));
    }
    match check.role.unwrap_or(RoleRequirement::Any) {
        RoleRequirement::Primary if !info.primary => return Err(Unfit::NotPrimary { desc }),
        RoleRequirement::Replica if info.primary => return Err(Unfit::NotReplica { desc }),
        _ => {}
    }
    if !info.primary {
        if let Some(max) = check.max_lag
            && info.lag_seconds > max.as_secs_f64()
        {
            return Err(Unfit::LagTime { lag: info.lag_seconds, max });
        }
        if let Some(max) = check.max_lag_bytes
            && info.lag_bytes > max
        {
            return Err(Unfit::LagBytes { lag: info.lag_bytes, max });
        }
        if check.require_streaming && !info.streaming {
            return Err(Unfit::NotStreaming { desc });
        }
    }
    Ok(desc)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info(primary: bool, lag: f64, bytes: u64, streaming: bool) -> PgInfo {
        PgInfo { primary, lag_seconds: lag, lag_bytes: bytes, streaming, lsn: 0 }
    }

    #[test]
    fn lsn_parsing() {
        assert_eq!(parse_lsn("0/3000148"), Some(0x3000148));
        assert_eq!(parse_lsn("1/0"), Some(1 << 32));
        assert_eq!(parse_lsn("x"), None);
    }

    #[test]
    fn judging() {
        let replica = PgsqlCheck {
            user: "u".into(),
            role: Some(RoleRequirement::Replica),
            max_lag: Some(Duration::from_secs(10)),
            require_streaming: true,
            ..Default::default()
        };
        assert_eq!(judge(&replica, &info(false, 0.0, 0, true)).unwrap(), "role replica, lag 0.0s, 0 bytes, streaming");
        assert_eq!(judge(&replica, &info(false, 12.4, 0, true)).unwrap_err().to_string(), "role replica, lag 12.4s > 10s");
        assert!(judge(&replica, &info(false, 0.0, 0, false)).unwrap_err().to_string().contains("streaming required"));
        assert!(judge(&replica, &info(true, 0.0, 0, false)).unwrap_err().to_string().contains("replica required"));
        assert!(judge(&replica, &info(true, 0.0, 0, false)).unwrap_err().is_wrong_role());
        assert!(!judge(&replica, &info(false, 12.4, 0, true)).unwrap_err().is_wrong_role());
        let primary = PgsqlCheck { user: "u".into(), role: Some(RoleRequirement::Primary), ..Default::default() };
        assert_eq!(judge(&primary, &info(true, 0.0, 0, false)).unwrap(), "role primary");
        assert!(judge(&primary, &info(false, 0.0, 0, true)).unwrap_err().to_string().contains("primary required"));
        let bytes = PgsqlCheck { user: "u".into(), max_lag_bytes: Some(1024), ..Default::default() };
        assert!(judge(&bytes, &info(false, 0.0, 4096, true)).unwrap_err().to_string().contains("4096 bytes > 1024 bytes"));
    }
}
