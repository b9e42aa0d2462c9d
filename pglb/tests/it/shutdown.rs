//! The pglb binary: SIGTERM drains, hard-stop-after bounds the drain, and
//! every connection leaves one structured log line.

use crate::common::*;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

fn spawn_pglb(cfg: &str) -> (Child, u16, tempfile::TempDir) {
    let port = dead_port();
    let text = cfg.replace("PORT", &port.to_string());
    let (dir, path) = write_config(&text);
    let child = Command::new(pglb_bin())
        .args(["run", "--log-format", "json", "-f"])
        .arg(&path)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    (child, port, dir)
}

fn sigterm(child: &Child) {
    // SAFETY: signalling our own child.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
}

/// Waits for the child to exit; returns its exit code, stderr and how long it took.
async fn wait_exit(child: Child, limit: Duration) -> (Option<i32>, String, Duration) {
    let started = Instant::now();
    let out =
        tokio::time::timeout(limit, tokio::task::spawn_blocking(move || child.wait_with_output().unwrap())).await.expect("pglb exited").unwrap();
    (out.status.code(), String::from_utf8_lossy(&out.stderr).into_owned(), started.elapsed())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_drains_open_transactions_and_refuses_new_clients() {
    let lab = shared_lab().await;
    let cfg = format!(
        "global\n    hard-stop-after 20s\nlisten pg\n    bind 127.0.0.1:PORT\n    timeout connect 2s\n    server primary 127.0.0.1:{}\n",
        lab.primary().port
    );
    let (child, port, _dir) = spawn_pglb(&cfg);
    let client = poll("pglb listening", Duration::from_secs(10), || async { connect(port, "appdb").await.ok() }).await;
    client.batch_execute("create table if not exists drain_t(x int); begin; insert into drain_t values (1)").await.unwrap();
    sigterm(&child);
    // New clients are told in PostgreSQL's words.
    let err = poll("57P01 refusal", Duration::from_secs(5), || async { connect(port, "appdb").await.err() }).await;
    let db = err.as_db_error().expect("a PostgreSQL error, not a closed socket");
    assert_eq!(db.code().code(), "57P01");
    assert!(db.message().contains("pglb is shutting down"), "{}", db.message());
    // The open transaction finishes.
    client.batch_execute("insert into drain_t values (2); commit").await.unwrap();
    drop(client);
    let (code, stderr, _) = wait_exit(child, Duration::from_secs(15)).await;
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
    let (child, port, _dir) = spawn_pglb(&cfg);
    let client = poll("pglb listening", Duration::from_secs(10), || async { connect(port, "appdb").await.ok() }).await;
    sigterm(&child);
    let (code, stderr, took) = wait_exit(child, Duration::from_secs(10)).await;
    assert_eq!(code, Some(0), "{stderr}");
    assert!(took < Duration::from_secs(8), "drain took {took:?}");
    assert!(stderr.contains("hard stop"), "{stderr}");
    assert!(client.query_one("select 1", &[]).await.is_err(), "the idle session was closed");
}
