//! `scenario failover` (seed 004's test_failover.sh): kill replica1 under
//! continuous client load through pglb; measure detection (kill -> DOWN),
//! the errors new connections saw, and recovery (restart -> UP).

use super::{Report, ScenarioError, connect, dsn, fmt_secs, password_file, secs, servers, start, wait_for};
use crate::lab::{Fault, Lab};
use serde_json::json;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::time::Duration;

#[derive(Debug, Clone, Copy)]
pub struct FailoverOptions {
    pub inter: Duration,
    pub fall: u32,
    pub rise: u32,
}

impl Default for FailoverOptions {
    fn default() -> Self {
        FailoverOptions { inter: Duration::from_millis(500), fall: 2, rise: 2 }
    }
}

pub async fn failover(lab: &Lab, o: FailoverOptions) -> Result<Report, ScenarioError> {
    let password = password_file(lab)?;
    let inter = o.inter.as_millis();
    let cfg = format!(
        "defaults\n    mode tcp\n    timeout connect 1s\n    timeout check 2s\n    timeout tunnel 1h\n    retries 3\n    option redispatch 1\n\
         listen ro\n    bind 127.0.0.1:0\n    balance roundrobin\n    option pgsql-check user {user} password-file {password} role replica\n{}",
        servers(lab.replicas(), &format!("check inter {inter}ms rise {} fall {}", o.rise, o.fall)),
        user = lab.superuser().0,
    );
    let running = start(&cfg).await?;
    let port = running.addr("ro").map(|a| a.port()).unwrap_or(0);
    let be = running.runtime().backend("ro").cloned().ok_or_else(|| ScenarioError::Failed("no backend".into()))?;
    let usable = |name: &str| be.usable.load().servers.iter().any(|&i| &*be.servers[i].cfg.name == name);
    // Every replica UP before the kill: with one still pending, a new
    // connection would have nowhere to go once replica1 dies.
    wait_for(Duration::from_secs(10), || lab.replicas().all(|r| usable(&r.name)))
        .await
        .ok_or_else(|| ScenarioError::Failed("the replicas never all came UP".into()))?;

    // Continuous load: a new connection and a query every 20 ms.
    let (ok, errors, stop) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)), Arc::new(AtomicBool::new(false)));
    let first_error = Arc::new(std::sync::Mutex::new(None::<String>));
    // Connections already talking to replica1 when it dies are lost with it
    // (no layer-4 proxy can move a half-authenticated session); they are
    // counted apart from connections started after the kill.
    let in_flight = Arc::new(AtomicU64::new(0));
    let kill_at = Arc::new(std::sync::Mutex::new(None::<tokio::time::Instant>));
    let load = {
        let (ok, errors, stop, first_error, in_flight, kill_at) =
            (ok.clone(), errors.clone(), stop.clone(), first_error.clone(), in_flight.clone(), kill_at.clone());
        let dsn = dsn(lab, port, "appdb");
        tokio::spawn(async move {
            while !stop.load(Relaxed) {
                let started = tokio::time::Instant::now();
                let result = match connect(&dsn).await {
                    Ok(c) => c.query_one("select 1", &[]).await.map(|_| ()),
                    Err(e) => Err(e),
                };
                match result {
                    Ok(()) => {
                        ok.fetch_add(1, Relaxed);
                    }
                    Err(e) => {
                        let killed = *kill_at.lock().unwrap_or_else(|e| e.into_inner());
                        if killed.is_some_and(|k| started >= k) {
                            first_error.lock().unwrap_or_else(|e| e.into_inner()).get_or_insert(e.to_string());
                            errors.fetch_add(1, Relaxed);
                        } else {
                            in_flight.fetch_add(1, Relaxed);
                        }
                    }
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
    };
    tokio::time::sleep(o.inter).await;
    // Detection counts from the SIGKILL; errors count as "after the kill"
    // only for connections started once every process of replica1 is gone
    // (one started while it was dying may have reached it: in flight).
    let issued = tokio::time::Instant::now();
    lab.fault("replica1", Fault::Kill).await?;
    *kill_at.lock().unwrap_or_else(|e| e.into_inner()) = Some(tokio::time::Instant::now());
    let detection = wait_for(Duration::from_secs(30), || !usable("replica1")).await.map(|_| issued.elapsed());
    tokio::time::sleep(o.inter * 2).await;
    lab.fault("replica1", Fault::Start).await?;
    let recovery = wait_for(Duration::from_secs(60), || usable("replica1")).await;
    stop.store(true, Relaxed);
    let _ = load.await;
    running.shutdown(tokio::time::sleep(std::time::Duration::from_secs(2))).await;
    let (ok, errors, in_flight) = (ok.load(Relaxed), errors.load(Relaxed), in_flight.load(Relaxed));
    let bound = o.inter * o.fall;
    let text = format!(
        "checks: inter {inter}ms, fall {fall}, rise {rise}; load: a new connection + query every 20 ms through pglb\n\
         detection (kill replica1 -> pglb marks it DOWN): {det}  (fall*inter = {b})\n\
         recovery (restart replica1 -> UP):                {rec}\n\
         client load: {ok} queries succeeded, {errors} failed on connections started after the kill{first}, {in_flight} lost in flight on replica1 when it died\n",
        fall = o.fall,
        rise = o.rise,
        det = fmt_secs(detection),
        b = fmt_secs(Some(bound)),
        rec = fmt_secs(recovery),
        first = first_error.lock().unwrap_or_else(|e| e.into_inner()).as_ref().map(|e| format!(" (first: {e})")).unwrap_or_default(),
    );
    Ok(Report {
        text,
        json: json!({"scenario": "failover", "inter_ms": inter, "fall": o.fall, "rise": o.rise, "detection_seconds": secs(detection),
            "recovery_seconds": secs(recovery), "queries_ok": ok, "new_connection_errors": errors, "in_flight_lost": in_flight}),
    })
}
