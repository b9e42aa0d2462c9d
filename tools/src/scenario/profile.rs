//! `scenario profile` (seed 004's profile_query.sh): a query through pglb:
//! which node served it, the client-side durations (connect, and the query
//! on an open connection), the server's execution time, and pglb's share
//! (through pglb minus direct to the same node; medians, so noise shows as
//! a small signed number rather than hiding in a mean).

use super::{Report, ScenarioError, connect, dsn, node_name, servers, start};
use crate::lab::Lab;
use serde_json::json;
use std::time::{Duration, Instant};

const QUERY: &str = "select count(*) from generate_series(1, 10000)";
const CONNECTS: usize = 10;
const QUERIES: usize = 100;

fn median(mut v: Vec<Duration>) -> f64 {
    v.sort();
    v[v.len() / 2].as_secs_f64() * 1000.0
}

fn failed(e: impl ToString) -> ScenarioError {
    ScenarioError::Failed(e.to_string())
}

/// Median connect time and median query round trip against `dsn`.
async fn measure(dsn: &str) -> Result<(f64, f64, i32), ScenarioError> {
    let mut connects = Vec::new();
    for _ in 0..CONNECTS {
        let started = Instant::now();
        let c = connect(dsn).await.map_err(failed)?;
        c.query_one("select 1", &[]).await.map_err(failed)?;
        connects.push(started.elapsed());
    }
    let c = connect(dsn).await.map_err(failed)?;
    let stmt = c.prepare(QUERY).await.map_err(failed)?;
    let mut queries = Vec::new();
    for _ in 0..QUERIES {
        let started = Instant::now();
        c.query_one(&stmt, &[]).await.map_err(failed)?;
        queries.push(started.elapsed());
    }
    let port: i32 = c.query_one("select inet_server_port()", &[]).await.map_err(failed)?.get(0);
    Ok((median(connects), median(queries), port))
}

pub async fn profile(lab: &Lab) -> Result<Report, ScenarioError> {
    // balance first: every connection goes to the same replica, so the
    // direct measurement targets the very server pglb used.
    let cfg = format!(
        "defaults\n    mode tcp\n    timeout connect 2s\n    timeout tunnel 1h\nlisten ro\n    bind 127.0.0.1:0\n    balance first\n{}",
        servers(lab.replicas(), "")
    );
    let running = start(&cfg).await?;
    let port = running.addr("ro").map(|a| a.port()).unwrap_or(0);
    let (connect_through, query_through, served) = measure(&dsn(lab, port, "appdb")).await?;
    let node = lab.nodes().iter().find(|n| i32::from(n.port) == served).ok_or_else(|| failed("unknown node"))?;
    let (connect_direct, query_direct, _) = measure(&dsn(lab, node.port, "appdb")).await?;
    let c = connect(&dsn(lab, port, "appdb")).await.map_err(failed)?;
    let plan = c
        .simple_query(&format!("explain (analyze, format json) {QUERY}"))
        .await
        .map_err(failed)?
        .into_iter()
        .find_map(|m| match m {
            tokio_postgres::SimpleQueryMessage::Row(r) => r.get(0).map(str::to_string),
            _ => None,
        })
        .unwrap_or_default();
    drop(c);
    let exec_ms = serde_json::from_str::<serde_json::Value>(&plan).ok().and_then(|v| v[0]["Execution Time"].as_f64()).unwrap_or(0.0);
    running.shutdown(tokio::time::sleep(Duration::from_secs(2))).await;
    let name = node_name(lab, served);
    let text = format!(
        "query: {QUERY}\nserved by: {name}\n\n\
         {:<44}{:>12}{:>12}{:>14}\n\
         {:<44}{connect_through:>12.3}{connect_direct:>12.3}{:>+14.3}\n\
         {:<44}{query_through:>12.3}{query_direct:>12.3}{:>+14.3}\n\
         server execution time (EXPLAIN ANALYZE):    {exec_ms:.3} ms\n",
        "median, ms",
        "via pglb",
        "direct",
        "pglb's share",
        format!("connect + first query ({CONNECTS} runs)"),
        connect_through - connect_direct,
        format!("query on an open connection ({QUERIES} runs)"),
        query_through - query_direct,
    );
    Ok(Report {
        text,
        json: json!({"scenario": "profile", "node": name, "connect_ms": {"pglb": connect_through, "direct": connect_direct},
            "query_ms": {"pglb": query_through, "direct": query_direct}, "server_execution_ms": exec_ms,
            "pglb_share_ms": {"connect": connect_through - connect_direct, "query": query_through - query_direct}}),
    })
}
