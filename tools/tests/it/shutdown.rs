//! The pglb binary: SIGTERM drains, hard-stop-after bounds the drain, and
//! every connection leaves one structured log line.

use crate::common::*;
use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_drains_open_transactions_and_refuses_new_clients() {
    let lab = shared_lab().await;
    let cfg = format!(
        "global\n    hard-stop-after 20s\nlisten pg\n    bind 127.0.0.1:PORT\n    timeout connect 2s\n    server primary 127.0.0.1:{}\n",
        lab.primary().port
    );
    let mut pglb = spawn_pglb(&cfg, None);
    let port = pglb.port;
    let client = poll("pglb listening", Duration::from_secs(10), || async { connect(port, "appdb").await.ok() }).await;
    client.batch_execute("create table if not exists drain_t(x int); begin; insert into drain_t values (1)").await.unwrap();
    pglb.signal(libc::SIGTERM);
    // New clients are told in PostgreSQL's words.
    let err = poll("57P01 refusal", Duration::from_secs(5), || async { connect(port, "appdb").await.err() }).await;
    let db = err.as_db_error().expect("a PostgreSQL error, not a closed socket");
    assert_eq!(db.code().code(), "57P01");
    assert!(db.message().contains("pglb: shutting down"), "{}", db.message());
    // The open transaction finishes.
    client.batch_execute("insert into drain_t values (2); commit").await.unwrap();
    drop(client);
    let (code, stderr, _) = pglb.wait_exit(Duration::from_secs(15)).await;
    assert_eq!(code, Some(0), "{stderr}");
    // One JSON line per connection, with HAProxy's tcplog fields and the startup packet's.
    let lines: Vec<serde_json::Value> = stderr.lines().filter_map(|l| serde_json::from_str(l).ok()).collect();
    let conns: Vec<&serde_json::Value> = lines.iter().filter(|v| v["message"] == "connection closed").collect();
    let served = conns.iter().find(|v| v["termination_state"] == "--").unwrap_or_else(|| panic!("{stderr}"));
    for field in [
        "client_ip",
        "client_port",
        "frontend",
        "backend",
        "server",
        "tw",
        "tc",
        "tt",
        "bytes_in",
        "bytes_out",
        "retries",
        "user",
        "database",
        "timestamp",
    ] {
        assert!(served.get(field).is_some(), "missing {field} in {served}");
    }
    assert_eq!(served["server"], "primary");
    assert_eq!(served["user"], "postgres");
    assert_eq!(served["database"], "appdb");
    assert!(conns.iter().any(|v| v["termination_state"] == "PC"), "the refused client is logged: {stderr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hard_stop_after_bounds_the_drain() {
    let lab = shared_lab().await;
    let cfg = format!(
        "global\n    hard-stop-after 1s\nlisten pg\n    bind 127.0.0.1:PORT\n    timeout connect 2s\n    server primary 127.0.0.1:{}\n",
        lab.primary().port
    );
    let mut pglb = spawn_pglb(&cfg, None);
    let port = pglb.port;
    let client = poll("pglb listening", Duration::from_secs(10), || async { connect(port, "appdb").await.ok() }).await;
    // Inside a transaction that never ends: an idle session would be
    // closed at once, this one only by hard-stop-after.
    client.batch_execute("begin").await.unwrap();
    pglb.signal(libc::SIGTERM);
    let (code, stderr, took) = pglb.wait_exit(Duration::from_secs(10)).await;
    assert_eq!(code, Some(0), "{stderr}");
    assert!(took < Duration::from_secs(8), "drain took {took:?}");
    assert!(stderr.contains("hard stop"), "{stderr}");
    assert!(
        stderr.contains("\"termination_state\":\"KD\"") && stderr.contains("closed at hard stop"),
        "the killed session's line says why: {stderr}"
    );
    assert!(client.query_one("select 1", &[]).await.is_err(), "the session was closed");
}
