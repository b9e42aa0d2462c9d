//! One watched node: a poller that keeps a connection and asks the SQL
//! check's query every interval, and an HTTP listener that answers from the
//! last result (so a burst of HAProxy checks costs PostgreSQL nothing).

use super::answer;
use crate::health::sql::{self, PgInfo};
use http_body_util::Full;
use hyper::body::Bytes;
use hyper::{Method, Response};
use hyper_util::rt::{TokioIo, TokioTimer};
use std::sync::{Arc, Mutex};
use std::time::Duration;

#[derive(Debug, Clone, Default)]
pub struct NodeState {
    pub name: String,
    /// The last answer; `None` when the node could not be asked.
    pub info: Option<PgInfo>,
    pub error: Option<String>,
}

impl NodeState {
    pub fn describe(&self) -> String {
        match (&self.info, &self.error) {
            (Some(i), _) if i.primary => format!("{} is primary", self.name),
            (Some(i), _) => format!(
                "{} is replica, lag {:.1}s, {} bytes, {}",
                self.name,
                i.lag_seconds,
                i.lag_bytes,
                if i.streaming { "streaming" } else { "not streaming" }
            ),
            (None, Some(e)) => format!("{} is not reachable: {e}", self.name),
            (None, None) => format!("{} not checked yet", self.name),
        }
    }

    pub fn json(&self) -> String {
        let v = serde_json::json!({
            "node": self.name,
            "state": if self.info.is_some() { "running" } else { "unreachable" },
            "role": self.info.map(|i| if i.primary { "primary" } else { "replica" }),
            "replication_lag_seconds": self.info.filter(|i| !i.primary).map(|i| i.lag_seconds),
            "replication_lag_bytes": self.info.filter(|i| !i.primary).map(|i| i.lag_bytes),
            "streaming": self.info.filter(|i| !i.primary).map(|i| i.streaming),
            "error": self.error.as_deref().map(|e| e.replace("OK", "Ok")),
        });
        format!("{v}\n")
    }
}

/// Every node's last state; primaries' positions give replicas' byte lag.
#[derive(Debug, Default)]
pub struct Shared {
    nodes: Mutex<Vec<NodeState>>,
}

impl Shared {
    pub fn add(&self, name: &str) {
        self.nodes.lock().unwrap_or_else(|e| e.into_inner()).push(NodeState { name: name.into(), ..Default::default() });
    }

    pub fn get(&self, i: usize) -> NodeState {
        self.nodes.lock().unwrap_or_else(|e| e.into_inner())[i].clone()
    }

    /// The other watched nodes that report being primary now.
    pub fn other_primaries(&self, i: usize) -> Vec<String> {
        let nodes = self.nodes.lock().unwrap_or_else(|e| e.into_inner());
        nodes.iter().enumerate().filter(|(j, n)| *j != i && n.info.is_some_and(|p| p.primary)).map(|(_, n)| n.name.clone()).collect()
    }

    fn set(&self, i: usize, info: Option<PgInfo>, error: Option<String>) -> (NodeState, NodeState) {
        let mut nodes = self.nodes.lock().unwrap_or_else(|e| e.into_inner());
        let primary_lsn = nodes.iter().enumerate().filter(|(j, _)| *j != i).filter_map(|(_, n)| n.info).filter(|p| p.primary).map(|p| p.lsn).max();
        let info = info.map(|mut p| {
            if let (false, Some(lsn)) = (p.primary, primary_lsn) {
                p.lag_bytes = lsn.saturating_sub(p.lsn);
            }
            p
        });
        let before = nodes[i].clone();
        nodes[i].info = info;
        nodes[i].error = error;
        (before, nodes[i].clone())
    }
}

pub async fn poll(shared: Arc<Shared>, i: usize, name: String, mut config: tokio_postgres::Config, interval: Duration) {
    config.connect_timeout(interval.max(Duration::from_secs(1)));
    if config.get_application_name().is_none() {
        config.application_name("pglb-healthd");
    }
    let limit = interval.max(Duration::from_secs(1));
    let mut client: Option<tokio_postgres::Client> = None;
    loop {
        let fresh = client.as_ref().is_none_or(|c| c.is_closed());
        if fresh {
            client = connect(&config).await.map_err(|e| record(&shared, i, &name, None, Some(e.to_string()))).ok();
        }
        if let Some(c) = &client {
            // Beside the query on the kept session, a start-up exchange on a
            // new connection: a frozen postmaster (or one out of processes)
            // takes no new client although the kept session still answers.
            let (answer, accepts) = tokio::join!(tokio::time::timeout(limit, sql::read_info(c)), async {
                if fresh { Ok(()) } else { accepts_new_clients(&config, limit).await }
            });
            match (answer, accepts) {
                (Ok(Ok(info)), Ok(())) => record(&shared, i, &name, Some(info), None),
                (Ok(Ok(_)), Err(why)) => record(&shared, i, &name, None, Some(format!("new connections fail: {why}"))),
                (Ok(Err(e)), _) => {
                    record(&shared, i, &name, None, Some(sql::login_error(&e)));
                    client = None;
                }
                (Err(_), _) => {
                    record(&shared, i, &name, None, Some("timeout".into()));
                    client = None;
                }
            }
        }
        // Unless the DSN says `sslmode=disable`, every poll logs in afresh
        // (which proves new clients are taken) instead of the start-up check:
        // that is plaintext, which a `hostssl`-only server would refuse, and log.
        if config.get_ssl_mode() != tokio_postgres::config::SslMode::Disable {
            client = None;
        }
        tokio::time::sleep(interval).await;
    }
}

/// Why a node is not answering as it should; the text is what `/status`
/// and the 503 bodies show.
#[derive(Debug, thiserror::Error)]
enum NodeError {
    #[error("{host} does not resolve")]
    Unresolved { host: String },
    /// The start-up exchange failed: HAProxy's check description.
    #[error("{0}")]
    StartupCheck(String),
    /// Logging in failed: the server's words, or the driver's.
    #[error("{0}")]
    Login(String),
    #[error("{0}")]
    Tls(#[from] sql::SqlError),
}

/// HAProxy's start-up check against the DSN's first TCP host: start-up
/// packet, authentication request, EOF (PostgreSQL logs nothing).
async fn accepts_new_clients(config: &tokio_postgres::Config, limit: Duration) -> Result<(), NodeError> {
    use tokio_postgres::config::Host;
    let Some(Host::Tcp(host)) = config.get_hosts().first() else { return Ok(()) };
    let port = config.get_ports().first().copied().unwrap_or(5432);
    let addr = match tokio::net::lookup_host((host.as_str(), port)).await.map(|mut a| a.next()) {
        Ok(Some(a)) => a,
        _ => return Err(NodeError::Unresolved { host: host.clone() }),
    };
    let check = crate::config::PgsqlCheck {
        user: config.get_user().unwrap_or("postgres").to_string(),
        database: config.get_dbname().map(str::to_string),
        ..Default::default()
    };
    crate::health::probe::takes_new_clients(&check, addr, limit).await.map_err(|(_, desc)| NodeError::StartupCheck(desc))
}

async fn connect(config: &tokio_postgres::Config) -> Result<tokio_postgres::Client, NodeError> {
    let tls = config.get_ssl_mode() != tokio_postgres::config::SslMode::Disable;
    if tls {
        let connector = sql::tls_no_verify()?;
        let (c, conn) = config.connect(connector).await.map_err(|e| NodeError::Login(sql::login_error(&e)))?;
        tokio::spawn(conn);
        Ok(c)
    } else {
        let (c, conn) = config.connect(tokio_postgres::NoTls).await.map_err(|e| NodeError::Login(sql::login_error(&e)))?;
        tokio::spawn(conn);
        Ok(c)
    }
}

/// Stores a result and logs the decision when it changes (debug otherwise),
/// like the seed's `docker logs -f healthcheck`.
fn record(shared: &Shared, i: usize, name: &str, info: Option<PgInfo>, error: Option<String>) {
    let (before, after) = shared.set(i, info, error);
    let role = |s: &NodeState| s.info.map(|p| p.primary);
    let changed = role(&before) != role(&after)
        || before.info.map(|p| p.streaming) != after.info.map(|p| p.streaming)
        || before.error.is_some() != after.error.is_some();
    let lag = after.info.filter(|p| !p.primary);
    if changed {
        tracing::info!(target: "pglb::healthd", node = name, lag_seconds = lag.map(|p| p.lag_seconds), lag_bytes = lag.map(|p| p.lag_bytes),
            streaming = lag.map(|p| p.streaming), error = after.error.as_deref(), "{}", after.describe());
        let others = shared.other_primaries(i);
        if role(&after) == Some(true) && !others.is_empty() {
            tracing::warn!(target: "pglb::healthd", node = name, also_primary = others.join(","),
                "split brain: {name} and {} report being primary; /primary answers 503 on each until only one does", others.join(", "));
        }
    } else {
        tracing::debug!(target: "pglb::healthd", node = name, lag_seconds = lag.map(|p| p.lag_seconds), lag_bytes = lag.map(|p| p.lag_bytes), "{}", after.describe());
    }
}

pub async fn serve(shared: Arc<Shared>, i: usize, listener: tokio::net::TcpListener) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        };
        let shared = shared.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                let shared = shared.clone();
                async move {
                    let (code, body) = if matches!(*req.method(), Method::GET | Method::HEAD | Method::OPTIONS) {
                        let target = req.uri().path_and_query().map(|p| p.as_str()).unwrap_or("/");
                        answer(target, &shared.get(i), &shared.other_primaries(i))
                    } else {
                        (405, "only GET, HEAD and OPTIONS\n".to_string())
                    };
                    let mut r = Response::new(Full::new(Bytes::from(body)));
                    *r.status_mut() = hyper::StatusCode::from_u16(code).unwrap_or(hyper::StatusCode::INTERNAL_SERVER_ERROR);
                    let ct = if code != 405 && target_is_status(&req) { "application/json" } else { "text/plain; charset=utf-8" };
                    if let Ok(v) = ct.parse() {
                        r.headers_mut().insert(hyper::header::CONTENT_TYPE, v);
                    }
                    Ok::<_, std::convert::Infallible>(r)
                }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(Duration::from_secs(10))
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

fn target_is_status(req: &hyper::Request<hyper::body::Incoming>) -> bool {
    matches!(req.uri().path(), "/status" | "/")
}
