//! `scenario lag` (seed 004's test_lag.sh): pause replay on replica1 while
//! the primary writes; time until pglb marks it DOWN by lag; resume; time
//! until it is UP again.

use super::{Report, ScenarioError, connect, fmt_secs, password_file, secs, servers, start, wait_for};
use crate::lab::{Fault, Lab};
use serde_json::json;
use std::time::Duration;

#[derive(Debug, Clone, Copy)]
pub struct LagOptions {
    pub max_lag: Duration,
    pub inter: Duration,
}

impl Default for LagOptions {
    fn default() -> Self {
        LagOptions { max_lag: Duration::from_secs(2), inter: Duration::from_millis(500) }
    }
}

pub async fn lag(lab: &Lab, o: LagOptions) -> Result<Report, ScenarioError> {
    let password = password_file(lab)?;
    let (max_lag, inter) = (o.max_lag.as_millis(), o.inter.as_millis());
    let cfg = format!(
        "defaults\n    mode tcp\n    timeout connect 1s\n    timeout check 2s\n    timeout tunnel 1h\n\
         listen ro\n    bind 127.0.0.1:0\n    option pgsql-check user {user} password-file {password} role replica max-lag {max_lag}ms\n{}",
        servers(lab.replicas(), &format!("check inter {inter}ms rise 2 fall 2")),
        user = lab.superuser().0,
    );
    let running = start(&cfg).await?;
    let be = running.runtime().backend("ro").cloned().ok_or_else(|| ScenarioError::Failed("no backend".into()))?;
    let usable = |name: &str| be.usable.load().servers.iter().any(|&i| &*be.servers[i].cfg.name == name);
    wait_for(Duration::from_secs(10), || usable("replica1")).await.ok_or_else(|| ScenarioError::Failed("replica1 never came UP".into()))?;

    let primary = connect(&lab.dsn(lab.primary(), "appdb")).await.map_err(|e| ScenarioError::Failed(e.to_string()))?;
    primary
        .batch_execute("create table if not exists pglb_lag_scenario(at timestamptz default now())")
        .await
        .map_err(|e| ScenarioError::Failed(e.to_string()))?;
    lab.fault("replica1", Fault::PauseReplay).await?;
    let writer = tokio::spawn(async move {
        loop {
            let _ = primary.execute("insert into pglb_lag_scenario default values", &[]).await;
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    });
    let down = wait_for(Duration::from_secs(60), || !usable("replica1")).await;
    let reason = be.server("replica1").map(|s| s.check.lock().unwrap_or_else(|e| e.into_inner()).desc.clone()).unwrap_or_default();
    lab.fault("replica1", Fault::ResumeReplay).await?;
    let up = wait_for(Duration::from_secs(60), || usable("replica1")).await;
    writer.abort();
    running.shutdown(tokio::time::sleep(std::time::Duration::from_secs(2))).await;
    let text = format!(
        "max-lag {max_lag}ms, checks every {inter}ms (fall 2, rise 2); replay paused on replica1 while the primary writes\n\
         pause -> DOWN by lag: {}  (reason: {reason})\n\
         resume -> UP:         {}\n",
        fmt_secs(down),
        fmt_secs(up)
    );
    Ok(Report {
        text,
        json: json!({"scenario": "lag", "max_lag_ms": max_lag, "inter_ms": inter, "down_seconds": secs(down), "up_seconds": secs(up), "reason": reason}),
    })
}
