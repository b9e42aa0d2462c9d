//! `pglb healthd`: seed 004's health-check service, for people who keep a
//! stock HAProxy. It watches PostgreSQL nodes with the same SQL check as
//! pglb's built-in one and answers Patroni's REST endpoints, one listen
//! address per node, so HAProxy can point each server at its own:
//! `server replica1 10.0.0.2:5432 check port 8009 addr healthd-host`.
//!
//! 200 with a body containing `OK` when the condition holds, 503 with a
//! body that never contains `OK` otherwise (HAProxy's `http-check expect
//! string OK` matches anywhere in the body).

mod node;

use node::{NodeState, Shared};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

/// Parsed `--node`/`--listen` pairs.
#[derive(Debug, Clone)]
pub struct NodeSpec {
    pub name: String,
    pub dsn: String,
    pub listen: SocketAddr,
}

/// Why healthd cannot start. [`HealthdError::is_usage`] tells a mistake on
/// the command line (exit 2, as clap's own errors) from one of the machine.
#[derive(Debug, thiserror::Error)]
pub enum HealthdError {
    #[error("with --dsn, give exactly one --listen ADDR (and no --node)")]
    DsnNeedsOneListen,
    #[error("give --node NAME=DSN and --listen NAME=ADDR for each node (or --dsn DSN --listen ADDR)")]
    NoNode,
    #[error("--node {0}: expected NAME=DSN")]
    BadNode(String),
    #[error("node {0} has no --listen {0}=ADDR")]
    NoListen(String),
    #[error("--listen {0} names no --node")]
    ListenWithoutNode(String),
    #[error("--listen {0}: expected IP:PORT such as 0.0.0.0:8008")]
    BadListen(String),
    #[error("--node {node}: invalid DSN: {source}")]
    BadDsn { node: String, source: tokio_postgres::Error },
    #[error("--listen {node}={addr}: {source}")]
    Listen { node: String, addr: SocketAddr, source: std::io::Error },
}

impl HealthdError {
    /// A mistake in the arguments, not a failure of the machine.
    pub fn is_usage(&self) -> bool {
        !matches!(self, HealthdError::Listen { .. })
    }
}

/// Builds the node list from `--node NAME=DSN`, `--listen NAME=ADDR`, or the
/// single-node `--dsn DSN --listen ADDR`.
pub fn nodes(node: &[String], listen: &[String], dsn: Option<&str>) -> Result<Vec<NodeSpec>, HealthdError> {
    if let Some(dsn) = dsn {
        if !node.is_empty() || listen.len() != 1 || listen[0].contains('=') {
            return Err(HealthdError::DsnNeedsOneListen);
        }
        let listen = listen[0].parse().map_err(|_| HealthdError::BadListen(listen[0].clone()))?;
        return Ok(vec![NodeSpec { name: "node".into(), dsn: dsn.to_string(), listen }]);
    }
    if node.is_empty() {
        return Err(HealthdError::NoNode);
    }
    let mut specs = Vec::new();
    for n in node {
        let (name, dsn) = n.split_once('=').ok_or_else(|| HealthdError::BadNode(n.clone()))?;
        let addr = listen
            .iter()
            .filter_map(|l| l.split_once('='))
            .find(|(ln, _)| *ln == name)
            .map(|(_, a)| a)
            .ok_or_else(|| HealthdError::NoListen(name.to_string()))?;
        let listen = addr.parse().map_err(|_| HealthdError::BadListen(format!("{name}={addr}")))?;
        specs.push(NodeSpec { name: name.to_string(), dsn: dsn.to_string(), listen });
    }
    for l in listen {
        let name = l.split_once('=').map(|(n, _)| n).unwrap_or(l);
        if !specs.iter().any(|s| s.name == name) {
            return Err(HealthdError::ListenWithoutNode(l.clone()));
        }
    }
    Ok(specs)
}

/// Runs until `stop` resolves.
pub async fn run(specs: Vec<NodeSpec>, interval: Duration, stop: impl std::future::Future<Output = ()>) -> Result<(), HealthdError> {
    let shared = Arc::new(Shared::default());
    let mut listeners = Vec::new();
    for (i, spec) in specs.iter().enumerate() {
        let config: tokio_postgres::Config = spec.dsn.parse().map_err(|source| HealthdError::BadDsn { node: spec.name.clone(), source })?;
        let l = tokio::net::TcpListener::bind(spec.listen).await.map_err(|source| HealthdError::Listen {
            node: spec.name.clone(),
            addr: spec.listen,
            source,
        })?;
        tracing::info!(node = %spec.name, listen = %l.local_addr().map(|a| a.to_string()).unwrap_or_default(), "healthd serving");
        shared.add(&spec.name);
        listeners.push((i, spec.name.clone(), config, l));
    }
    let mut tasks = tokio::task::JoinSet::new();
    for (i, name, config, l) in listeners {
        let sh = shared.clone();
        let n = name.clone();
        tasks.spawn(async move { node::poll(sh, i, n, config, interval).await });
        let sh = shared.clone();
        tasks.spawn(async move { node::serve(sh, i, l).await });
    }
    stop.await;
    tasks.shutdown().await;
    Ok(())
}

/// The answer to one endpoint: (HTTP status, body). `other_primaries`:
/// the other watched nodes that report being primary. While there are any,
/// no node is the primary (split brain): like Patroni, which answers
/// `/primary` only on the one node holding the leader lock, healthd will
/// not tell HAProxy to send writes to two servers.
pub fn answer(path_and_query: &str, state: &NodeState, other_primaries: &[String]) -> (u16, String) {
    let (path, query) = path_and_query.split_once('?').unwrap_or((path_and_query, ""));
    let lag = query.split('&').find_map(|kv| kv.strip_prefix("lag=")).map(parse_lag);
    let lag = match lag.transpose() {
        Ok(l) => l,
        Err(e) => return (400, format!("bad request: {}\n", e.message().replace("OK", "Ok"))),
    };
    let primary = state.info.is_some_and(|i| i.primary);
    let split = primary && !other_primaries.is_empty();
    let desc = if split {
        format!("{}; split brain: {} also report(s) being primary, so none is", state.describe(), other_primaries.join(", "))
    } else {
        state.describe()
    };
    let ok = match path.trim_end_matches('/') {
        "/primary" | "/read-write" | "/master" | "/leader" => primary && !split,
        // Patroni's `/` (what `option httpchk` asks by default) is `/primary`.
        "" => return (if primary && !split { 200 } else { 503 }, state.json()),
        "/replica" | "/async" | "/asynchronous" => state.info.is_some_and(|i| !i.primary && within(&i, lag)),
        "/read-only" => state.info.is_some_and(|i| i.primary || within(&i, lag)),
        "/health" | "/readiness" => state.info.is_some(),
        "/liveness" => true,
        "/status" => return (if state.info.is_some() { 200 } else { 503 }, state.json()),
        _ => {
            return (
                404,
                "not found: use / or /primary, /replica, /async, /read-only, /health, /liveness, /readiness or /status (no /sync: healthd does not follow synchronous replication)\n"
                    .into(),
            );
        }
    };
    if ok {
        (200, format!("OK: {desc}\n"))
    } else {
        // HAProxy's `expect string OK` matches anywhere: keep it out of 503s.
        (503, format!("UNAVAILABLE: {}\n", desc.replace("OK", "Ok")))
    }
}

/// A replica's lag within `?lag=`: a time (`10s`, `500ms`) bounds the replay
/// lag in seconds; a size (`16MB`, `1024`: bytes, as in Patroni) bounds bytes.
fn within(info: &crate::health::sql::PgInfo, lag: Option<Lag>) -> bool {
    match lag {
        None => true,
        Some(Lag::Time(d)) => info.lag_seconds <= d.as_secs_f64(),
        Some(Lag::Bytes(b)) => info.lag_bytes <= b,
    }
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Lag {
    Time(Duration),
    Bytes(u64),
}

fn parse_lag(text: &str) -> Result<Lag, crate::config::Invalid> {
    let unit = text.trim_start_matches(|c: char| c.is_ascii_digit());
    match unit {
        "us" | "ms" | "s" | "m" | "h" | "d" => crate::config::units::parse_time(text).map(Lag::Time),
        _ => crate::config::units::parse_size(text).map(Lag::Bytes),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::health::sql::PgInfo;

    fn state(primary: bool, lag: f64, bytes: u64) -> NodeState {
        NodeState { info: Some(PgInfo { primary, lag_seconds: lag, lag_bytes: bytes, streaming: true, lsn: 0 }), error: None, name: "n".into() }
    }

    #[test]
    fn endpoints() {
        let replica = state(false, 2.0, 100);
        let none: &[String] = &[];
        let answer = |p: &str, s: &NodeState| super::answer(p, s, none);
        assert_eq!(answer("/replica", &replica).0, 200);
        assert_eq!(answer("/replica?lag=10s", &replica).0, 200);
        assert_eq!(answer("/replica?lag=1s", &replica).0, 503);
        assert_eq!(answer("/replica?lag=50", &replica).0, 503);
        assert_eq!(answer("/replica?lag=1MB", &replica).0, 200);
        assert_eq!(answer("/primary", &replica).0, 503);
        assert_eq!(answer("/read-only", &replica).0, 200);
        let primary = state(true, 0.0, 0);
        assert_eq!(answer("/master", &primary).0, 200);
        assert_eq!(answer("/replica", &primary).0, 503);
        let down = NodeState { info: None, error: Some("connection refused: OK?".into()), name: "n".into() };
        for p in ["/primary", "/replica", "/read-only", "/health", "/readiness", "/status"] {
            let (code, body) = answer(p, &down);
            assert_eq!(code, 503, "{p}");
            assert!(!body.contains("OK"), "{p}: {body}");
        }
        assert_eq!(answer("/liveness", &down).0, 200);
        assert!(answer("/replica", &replica).1.contains("OK"));
        assert_eq!(answer("/nope", &replica).0, 404);
        assert_eq!(answer("/replica?lag=xyz", &replica).0, 400);
        // Patroni's `/` is `/primary`; `/async` is a replica.
        assert_eq!((answer("/", &primary).0, answer("/", &replica).0), (200, 503));
        assert_eq!(answer("/async?lag=10s", &replica).0, 200);
        assert_eq!(answer("/status", &replica).0, 200);
        assert!(!answer("/replica?lag=OK", &replica).1.contains("OK"), "a 400 must not echo OK");
    }

    #[test]
    fn two_primaries_make_neither_the_primary() {
        let primary = state(true, 0.0, 0);
        let others = ["old".to_string()];
        for p in ["/primary", "/leader", "/"] {
            let (code, body) = answer(p, &primary, &others);
            assert_eq!(code, 503, "{p}");
            assert!(!body.contains("OK") && (p == "/" || body.contains("split brain: old also")), "{p}: {body}");
        }
        assert_eq!(answer("/read-only", &primary, &others).0, 200, "either still serves reads");
        assert_eq!(answer("/replica", &state(false, 0.0, 0), &others).0, 200, "a replica is unaffected");
    }

    #[test]
    fn node_arguments() {
        let n = nodes(&["r1=host=a".into(), "r2=host=b".into()], &["r1=127.0.0.1:1".into(), "r2=127.0.0.1:2".into()], None).unwrap();
        assert_eq!(n.len(), 2);
        assert_eq!(n[1].dsn, "host=b");
        assert!(nodes(&["r1=host=a".into()], &[], None).unwrap_err().to_string().contains("no --listen r1="));
        assert_eq!(nodes(&[], &["127.0.0.1:1".into()], Some("host=a")).unwrap()[0].name, "node");
    }
}
