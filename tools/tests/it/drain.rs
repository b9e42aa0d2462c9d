//! Stopping at transaction boundaries: on shutdown, `/ready` says 503 at
//! once, idle sessions are closed at once, a session inside a transaction
//! or running a query goes on until its transaction ends, new clients are
//! refused after `grace`, and pglb is gone as soon as the last session is.

use crate::common::*;
use std::time::{Duration, Instant};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stopping_closes_idle_sessions_at_once_and_busy_ones_at_their_transaction_end() {
    let lab = shared_lab().await;
    let cfg = format!(
        "global\n    hard-stop-after 30s\n    grace 1s\nlisten pg\n    bind 127.0.0.1:0\n    timeout connect 2s\n    timeout tunnel 1h\n    server primary 127.0.0.1:{}\n\
         listen stats\n    bind 127.0.0.1:0\n    mode http\n    stats enable\n    stats uri /\n",
        lab.primary().port
    );
    let pglb = start(&cfg).await;
    let port = pglb.addr("pg").unwrap().port();
    let stats = pglb.addr("stats").unwrap();
    let admin = connect(lab.primary().port, "appdb").await.unwrap();
    admin.batch_execute("create table if not exists drained(x int)").await.unwrap();

    let mut idle = Vec::new();
    for _ in 0..5 {
        idle.push(connect(port, "appdb").await.unwrap());
    }
    // One session inside a transaction, one running a query.
    let in_tx = connect(port, "appdb").await.unwrap();
    in_tx.batch_execute("begin; insert into drained values (1)").await.unwrap();
    let querying = connect(port, "appdb").await.unwrap();
    let query = tokio::spawn(async move {
        let r = querying.query_one("select pg_sleep(1.5)::text", &[]).await.map(|_| ());
        (r, querying)
    });
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(crate::observe::http_get(stats.port(), "/ready", None).await.0, 200);

    let stop_at = Instant::now();
    let stopped = tokio::spawn(async move {
        pglb.shutdown(std::future::pending()).await;
        Instant::now()
    });
    // Readiness flips at once.
    poll("/ready 503", Duration::from_millis(500), || async {
        (crate::observe::http_get(stats.port(), "/ready", None).await.0 == 503).then_some(())
    })
    .await;
    // Idle sessions are released within a second.
    poll("idle sessions closed", Duration::from_secs(1), || async { idle.iter().all(|c| c.is_closed()).then_some(()) }).await;
    assert!(stop_at.elapsed() < Duration::from_secs(1));
    // During grace a new client is still served; after it, refused.
    let during = connect(port, "appdb").await.expect("served during grace");
    during.query_one("select 1", &[]).await.unwrap();
    poll("new clients refused after grace", Duration::from_secs(3), || async {
        match connect(port, "appdb").await {
            Err(e) => e.as_db_error().map(|d| d.message().to_string()).filter(|m| m.starts_with("pglb: shutting down")),
            Ok(_) => None,
        }
    })
    .await;
    poll("a session opened during grace drained once idle", Duration::from_secs(1), || async { during.is_closed().then_some(()) }).await;

    // The busy ones go on: the transaction commits, the query returns.
    assert!(!in_tx.is_closed(), "a session inside a transaction is not cut");
    in_tx.batch_execute("insert into drained values (2); commit").await.expect("the transaction finishes");
    let (r, querying) = query.await.unwrap();
    r.expect("the running query finishes");
    let last_end = Instant::now();
    poll("busy sessions closed after their transaction", Duration::from_secs(1), || async {
        (in_tx.is_closed() && querying.is_closed()).then_some(())
    })
    .await;
    let gone = stopped.await.unwrap();
    assert!(gone.duration_since(last_end) < Duration::from_secs(1), "pglb stopped {:?} after the last transaction", gone.duration_since(last_end));
    let n: i64 = admin.query_one("select count(*) from drained", &[]).await.unwrap().get(0);
    assert_eq!(n, 2, "the transaction committed whole");
    admin.batch_execute("drop table drained").await.unwrap();
}

/// A rolling restart of two pglb instances behind HAProxy (checking
/// `/ready`) under a pooled client that runs short transactions: for Go's
/// database/sql + lib/pq (Argo's stack) the application sees no error and
/// no transaction is cut; psycopg 3's pool and node-postgres' pool run the
/// same, with what they see printed (docs/operations.md explains it), and
/// no transaction cut for any of them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rolling_restart_cuts_no_transaction_and_go_sees_no_error() {
    init_logs();
    let go = std::process::Command::new("bash")
        .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/go/build.sh"))
        .arg(concat!(env!("CARGO_TARGET_TMPDIR"), "/pooled"))
        .arg("pooled")
        .output()
        .expect("run tests/go/build.sh");
    assert!(go.status.success(), "building the Go client: {}", String::from_utf8_lossy(&go.stderr));
    let clients = [
        ("go", vec![String::from_utf8_lossy(&go.stdout).trim().to_string()]),
        ("psycopg", vec!["python3".to_string(), concat!(env!("CARGO_MANIFEST_DIR"), "/tests/clients/pooled_psycopg.py").to_string()]),
        ("node", vec!["node".to_string(), concat!(env!("CARGO_MANIFEST_DIR"), "/tests/clients/pooled_pg.js").to_string()]),
    ];
    for (name, client) in clients {
        let report =
            pglb_tools::scenario::rolling_restart(&lab_dir(), pglb_tools::scenario::RollingOptions { pglb: pglb_bin().into(), client, pool: 8 })
                .await
                .unwrap_or_else(|e| panic!("{name}: {e}"));
        println!("{}", report.text);
        let result = &report.json["result"];
        assert!(result["committed"].as_u64().unwrap() > 50, "{name}: {}", report.text);
        assert_eq!(result["cut_mid_flight"], 0, "{name}: {}", report.text);
        for ms in report.json["exit_ms"].as_array().unwrap() {
            assert!(ms.as_u64().unwrap() < 3_000, "{name}: an instance took {ms} ms to exit: {}", report.text);
        }
        if name == "go" {
            assert_eq!(result["errors_total"], 0, "{}", report.text);
        }
    }
}
