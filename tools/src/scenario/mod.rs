//! Seed 004's test scripts as commands (`pglb lab scenario lb|failover|lag|profile|switchover|rolling-restart`):
//! each runs pglb in this process in front of a running lab, with a
//! generated configuration, and reports what happened in readable text or
//! JSON. The integration tests run the same functions.

mod failover;
mod lag;
mod lb;
mod profile;
mod rolling;
mod switchover;

pub use failover::{FailoverOptions, failover};
pub use lag::{LagOptions, lag};
pub use lb::lb;
pub use profile::profile;
pub use rolling::{RollingOptions, rolling_restart};
pub use switchover::{Proxy, SwitchoverOptions, switchover};

use crate::lab::Lab;
use pglb::run::Running;
use serde_json::Value;
use std::time::Duration;
use tokio_postgres::NoTls;

/// What a scenario reports: a human text and the same facts as JSON.
#[derive(Debug, Clone)]
pub struct Report {
    pub text: String,
    pub json: Value,
}

#[derive(Debug, thiserror::Error)]
pub enum ScenarioError {
    #[error("lab: {0}")]
    Lab(#[from] crate::lab::LabError),
    #[error("pglb: {0}")]
    Start(String),
    #[error("{0}")]
    Failed(String),
}

/// Writes the lab's password where the generated configurations' checks
/// read it (`password-file`); returns the path.
pub fn password_file(lab: &Lab) -> Result<String, ScenarioError> {
    let path = lab.dir().join("check-password");
    std::fs::write(&path, lab.superuser().1).map_err(|e| ScenarioError::Failed(format!("{}: {e}", path.display())))?;
    Ok(path.display().to_string())
}

/// Starts pglb from configuration text (bound on ephemeral ports).
pub async fn start(text: &str) -> Result<Running, ScenarioError> {
    let loaded = pglb::config::parse_str(std::path::Path::new("scenario.cfg"), text).map_err(|e| ScenarioError::Start(e.to_string()))?;
    pglb::run::start(loaded.config).await.map_err(|e| ScenarioError::Start(e.to_string()))
}

/// Writes `config` to DIR/haproxy.cfg and starts Debian's HAProxy on it in
/// the foreground (the caller kills it).
pub fn spawn_haproxy(dir: &std::path::Path, config: &str) -> Result<std::process::Child, ScenarioError> {
    let path = dir.join("haproxy.cfg");
    std::fs::write(&path, config).map_err(|e| ScenarioError::Failed(format!("{}: {e}", path.display())))?;
    std::process::Command::new("haproxy")
        .arg("-db")
        .arg("-f")
        .arg(&path)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .map_err(|e| ScenarioError::Start(format!("haproxy (apt-get install haproxy): {e}")))
}

/// `server` lines for the given lab nodes.
pub fn servers<'a>(nodes: impl Iterator<Item = &'a crate::lab::Node>, options: &str) -> String {
    nodes.map(|n| format!("    server {} 127.0.0.1:{} {options}\n", n.name, n.port)).collect()
}

/// A key=value DSN through pglb on `port`.
pub fn dsn(lab: &Lab, port: u16, db: &str) -> String {
    let (user, password) = lab.superuser();
    format!("host=127.0.0.1 port={port} user={user} password={password} dbname={db} sslmode=disable connect_timeout=5")
}

pub async fn connect(dsn: &str) -> Result<tokio_postgres::Client, tokio_postgres::Error> {
    let (c, conn) = tokio_postgres::connect(dsn, NoTls).await?;
    tokio::spawn(conn);
    Ok(c)
}

/// The lab node listening on `port`.
pub fn node_name(lab: &Lab, port: i32) -> String {
    lab.nodes().iter().find(|n| i32::from(n.port) == port).map(|n| n.name.clone()).unwrap_or_else(|| format!("port {port}"))
}

/// Polls `cond` every 10 ms until true or `limit`; returns the time taken.
pub async fn wait_for(limit: Duration, mut cond: impl FnMut() -> bool) -> Option<Duration> {
    let started = tokio::time::Instant::now();
    while started.elapsed() < limit {
        if cond() {
            return Some(started.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    None
}

/// Polls the async `cond` every 10 ms until true or `limit`; returns the time taken.
pub async fn wait_for_async<F, Fut>(limit: Duration, mut cond: F) -> Option<Duration>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let started = tokio::time::Instant::now();
    while started.elapsed() < limit {
        if cond().await {
            return Some(started.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    None
}

pub fn secs(d: Option<Duration>) -> Value {
    d.map(|d| Value::from((d.as_secs_f64() * 1000.0).round() / 1000.0)).unwrap_or(Value::Null)
}

pub fn fmt_secs(d: Option<Duration>) -> String {
    d.map(|d| format!("{:.2}s", d.as_secs_f64())).unwrap_or_else(|| "not reached".into())
}
