//! `scenario lb` (seed 004's test_lb.sh): N queries through pglb, each on a
//! new connection, over the replicas in round robin; which node served each
//! and the distribution.

use super::{Report, ScenarioError, connect, dsn, node_name, servers, start};
use crate::lab::Lab;
use serde_json::json;
use std::collections::BTreeMap;

pub async fn lb(lab: &Lab, queries: usize) -> Result<Report, ScenarioError> {
    let cfg = format!(
        "defaults\n    mode tcp\n    timeout connect 2s\n    timeout tunnel 1h\n    retries 3\n    option redispatch 1\n\
         listen ro\n    bind 127.0.0.1:0\n    balance roundrobin\n{}",
        servers(lab.replicas(), "")
    );
    let running = start(&cfg).await?;
    let port = running.addr("ro").map(|a| a.port()).unwrap_or(0);
    let mut served = Vec::with_capacity(queries);
    let mut by_node: BTreeMap<String, usize> = BTreeMap::new();
    for i in 0..queries {
        let c = connect(&dsn(lab, port, "appdb")).await.map_err(|e| ScenarioError::Failed(format!("query {}: {e}", i + 1)))?;
        let row = c.query_one("select inet_server_port(), pg_is_in_recovery()", &[]).await.map_err(|e| ScenarioError::Failed(e.to_string()))?;
        let name = node_name(lab, row.get(0));
        *by_node.entry(name.clone()).or_default() += 1;
        served.push(name);
    }
    running.shutdown(tokio::time::sleep(std::time::Duration::from_secs(2))).await;
    let mut text = String::new();
    for (i, n) in served.iter().enumerate() {
        text.push_str(&format!("query {:>3}: {n}\n", i + 1));
    }
    text.push_str(&format!("\ndistribution over {queries} queries (balance roundrobin over the replicas):\n"));
    for (n, c) in &by_node {
        text.push_str(&format!("  {n:<10} {c:>4}  {:>5.1}%\n", *c as f64 * 100.0 / queries.max(1) as f64));
    }
    Ok(Report { text, json: json!({"scenario": "lb", "queries": queries, "served": served, "by_node": by_node}) })
}
