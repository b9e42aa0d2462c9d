//! Asking each node what it is (one query per node) and showing it.

use std::fmt::Write as _;
use std::time::{Duration, Instant};

use tokio_postgres::{Client, NoTls};

use super::error::{LabError, pg_error_detail};
use super::{Node, NodeStatus, Role};

/// How long a status probe may take. A frozen postmaster accepts the TCP
/// connection (the kernel does) but never answers, so the whole connect +
/// query is bounded, not just the TCP connect.
pub(crate) const PROBE_TIMEOUT: Duration = Duration::from_secs(2);

/// Credentials to reach the nodes over TCP.
#[derive(Debug, Clone)]
pub(crate) struct Creds {
    pub user: String,
    pub password: String,
}

/// Why a node did not take a connection.
#[derive(Debug, thiserror::Error)]
pub(crate) enum Unreachable {
    #[error("no answer within {0:?}")]
    TimedOut(Duration),
    #[error("{}", pg_error_detail(.0))]
    Refused(tokio_postgres::Error),
}

/// Connects to `db` on a node over 127.0.0.1 within `limit`; the connection
/// task is spawned and ends with the client.
pub(crate) async fn connect(creds: &Creds, port: u16, db: &str, limit: Duration) -> Result<Client, Unreachable> {
    let mut config = tokio_postgres::Config::new();
    config.host("127.0.0.1").port(port).user(&creds.user).password(&creds.password).dbname(db).application_name("pglb-lab").connect_timeout(limit);
    let (client, connection) =
        tokio::time::timeout(limit, config.connect(NoTls)).await.map_err(|_| Unreachable::TimedOut(limit))?.map_err(Unreachable::Refused)?;
    tokio::spawn(async move {
        let _ = connection.await;
    });
    Ok(client)
}

/// Polls until the node accepts connections, or fails with the log tail.
pub(crate) async fn wait_ready(creds: &Creds, node: &Node, limit: Duration) -> Result<(), LabError> {
    let deadline = Instant::now() + limit;
    loop {
        let last_error = match connect(creds, node.port, "postgres", Duration::from_secs(1)).await {
            Ok(client) => match client.simple_query("SELECT 1").await {
                Ok(_) => return Ok(()),
                Err(e) => pg_error_detail(&e),
            },
            Err(e) => e.to_string(),
        };
        if Instant::now() >= deadline {
            return Err(LabError::NodeStart {
                node: node.name.clone(),
                detail: format!("not accepting connections after {limit:?}: {last_error}"),
                log: node.log_file.clone(),
                log_tail: super::node::log_tail(node, 20),
            });
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// What one node says about itself.
#[derive(Debug, Clone, Copy)]
struct Probe {
    in_recovery: bool,
    replay_lag_seconds: Option<f64>,
    /// Replay position on a replica, current WAL position on a primary.
    lsn: Option<u64>,
    streaming: bool,
}

/// The one query of a probe. Replay lag is 0 when everything received is
/// replayed (an idle primary would otherwise make lag grow forever); `<=`
/// because after a restart the receive position restarts at the beginning
/// of a WAL segment, below the replay position.
const PROBE_SQL: &str = "\
SELECT pg_is_in_recovery(),
  CASE WHEN NOT pg_is_in_recovery() THEN NULL
       WHEN pg_last_wal_receive_lsn() <= pg_last_wal_replay_lsn() THEN 0::float8
       ELSE extract(epoch FROM now() - pg_last_xact_replay_timestamp())::float8 END,
  (CASE WHEN pg_is_in_recovery() THEN pg_last_wal_replay_lsn()
        ELSE pg_current_wal_lsn() END)::text,
  EXISTS (SELECT 1 FROM pg_stat_wal_receiver WHERE status = 'streaming')";

/// Runs the probe query; `None` when the node does not answer in time.
async fn probe(creds: Creds, port: u16) -> Option<Probe> {
    let work = async {
        let client = connect(&creds, port, "postgres", PROBE_TIMEOUT).await.ok()?;
        let row = client.query_one(PROBE_SQL, &[]).await.ok()?;
        Some(Probe {
            in_recovery: row.try_get(0).ok()?,
            replay_lag_seconds: row.try_get(1).ok()?,
            lsn: row.try_get::<_, Option<String>>(2).ok()?.as_deref().and_then(parse_lsn),
            streaming: row.try_get(3).ok()?,
        })
    };
    tokio::time::timeout(PROBE_TIMEOUT, work).await.ok().flatten()
}

/// Parses an LSN such as `16/B374D848` into a byte position.
pub(crate) fn parse_lsn(text: &str) -> Option<u64> {
    let (hi, lo) = text.split_once('/')?;
    Some((u64::from_str_radix(hi, 16).ok()? << 32) | u64::from_str_radix(lo, 16).ok()?)
}

/// Probes all nodes concurrently. Lag bytes are measured against the lab's
/// primary when it is still a primary, else against the first node that is
/// (e.g. after a promotion with the old primary down).
pub(crate) async fn collect(creds: &Creds, nodes: &[Node]) -> Vec<NodeStatus> {
    let handles: Vec<_> = nodes.iter().map(|n| tokio::spawn(probe(creds.clone(), n.port))).collect();
    let mut probes = Vec::with_capacity(handles.len());
    for handle in handles {
        probes.push(handle.await.ok().flatten());
    }
    let reference = probes.iter().flatten().find(|p| !p.in_recovery).and_then(|p| p.lsn);
    nodes
        .iter()
        .zip(probes)
        .map(|(node, probe)| {
            let mut status = NodeStatus {
                name: node.name.clone(),
                port: node.port,
                running: probe.is_some(),
                role: None,
                replay_lag_seconds: None,
                lag_bytes: None,
                streaming: None,
            };
            if let Some(p) = probe {
                if p.in_recovery {
                    status.role = Some(Role::Replica);
                    status.replay_lag_seconds = p.replay_lag_seconds;
                    status.lag_bytes = reference.zip(p.lsn).map(|(r, l)| r.saturating_sub(l));
                    status.streaming = Some(p.streaming);
                } else {
                    status.role = Some(Role::Primary);
                }
            }
            status
        })
        .collect()
}

/// The human table printed by `pglb lab up/status`.
pub(crate) fn render(nodes: &[Node], status: &[NodeStatus]) -> String {
    let header = ["NODE", "PORT", "ROLE", "REPLAY LAG", "LAG BYTES", "STREAMING", "DATA DIR"];
    let mut rows: Vec<[String; 7]> = vec![header.map(String::from)];
    for s in status {
        let dash = || "-".to_string();
        let data_dir = nodes.iter().find(|n| n.name == s.name).map(|n| n.data_dir.display().to_string()).unwrap_or_else(dash);
        rows.push([
            s.name.clone(),
            s.port.to_string(),
            match (s.running, s.role) {
                (false, _) => "down".into(),
                (true, Some(role)) => role.to_string(),
                (true, None) => "?".into(),
            },
            s.replay_lag_seconds.map_or_else(dash, |l| format!("{l:.1}s")),
            s.lag_bytes.map_or_else(dash, |b| b.to_string()),
            s.streaming.map_or_else(dash, |b| if b { "yes" } else { "no" }.into()),
            data_dir,
        ]);
    }
    let mut widths = [0usize; 7];
    for row in &rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.len());
        }
    }
    let mut out = String::new();
    for row in &rows {
        let mut line = String::new();
        for (i, (cell, w)) in row.iter().zip(widths).enumerate() {
            if i + 1 == row.len() {
                line += cell;
            } else {
                let _ = write!(line, "{cell:<w$}  ");
            }
        }
        out += line.trim_end();
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lsn() {
        assert_eq!(parse_lsn("0/3000060"), Some(0x3000060));
        assert_eq!(parse_lsn("16/B374D848"), Some((0x16 << 32) | 0xB374D848));
        assert_eq!(parse_lsn("nope"), None);
    }
}
