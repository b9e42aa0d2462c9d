//! Every refusal pglb can produce, as Argo Workflows sees it: a small Go
//! program on lib/pq (Argo's driver, from Debian's package) applies Argo's
//! reconnect rule (`util/sqldb/session.go`: io.EOF, ECONNRESET, ... or an
//! error text containing "connection closed", "connection refused", ...;
//! no SQLSTATE counts) to what it gets from pglb, in plaintext and with
//! `sslmode=require`. A refusal Argo does not retry fails its workflow
//! controller at once.

use crate::common::*;
use std::sync::OnceLock;
use std::time::Duration;

/// The argoretry binary, built once per test run (offline: Debian's Go and lib/pq).
fn argoretry() -> &'static str {
    static BIN: OnceLock<String> = OnceLock::new();
    BIN.get_or_init(|| {
        let out = std::process::Command::new("bash")
            .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/go/build.sh"))
            .arg(concat!(env!("CARGO_TARGET_TMPDIR"), "/argoretry"))
            .output()
            .expect("run tests/go/build.sh");
        assert!(out.status.success(), "building argoretry: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    })
}

#[derive(Debug)]
pub(crate) struct Seen {
    pub(crate) ok: bool,
    pub(crate) error: String,
    pub(crate) retryable: bool,
}

/// What lib/pq returns connecting through `port`, and Argo's verdict on it.
pub(crate) async fn argo_connects(port: u16, sslmode: &str) -> Seen {
    let dsn = format!("postgres://postgres:postgres@127.0.0.1:{port}/appdb?sslmode={sslmode}&connect_timeout=20");
    let bin = argoretry();
    let out = tokio::process::Command::new(bin).args(["-dsn", &dsn, "-timeout", "30s"]).output().await.expect("run argoretry");
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stdout)));
    Seen { ok: v["ok"].as_bool().unwrap(), error: v["error"].as_str().unwrap().to_string(), retryable: v["retryable"].as_bool().unwrap() }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_refusal_is_one_argo_retries_with_and_without_tls() {
    let lab = shared_lab().await;
    let primary = lab.primary().port;
    let cfg = format!(
        "listen nosrv\n    bind 127.0.0.1:0\n    timeout connect 1s\n    timeout queue 300ms\n    option pgsql-check user postgres\n    server gone 127.0.0.1:{} check inter 100ms fall 1\n\
         listen full\n    bind 127.0.0.1:0\n    timeout connect 1s\n    timeout queue 60s\n    server primary 127.0.0.1:{primary} maxconn 1 maxqueue 1\n\
         listen slow\n    bind 127.0.0.1:0\n    timeout connect 1s\n    timeout queue 300ms\n    server primary 127.0.0.1:{primary} maxconn 1\n\
         listen refused\n    bind 127.0.0.1:0\n    timeout connect 1s\n    retries 1\n    server gone 127.0.0.1:{}\n\
         listen stopping\n    bind 127.0.0.1:0\n    server primary 127.0.0.1:{primary}\n",
        dead_port(),
        dead_port()
    );
    let pglb = start(&cfg).await;
    let port = |name: &str| pglb.addr(name).unwrap().port();
    let rt = pglb.runtime();
    let nosrv = rt.backend("nosrv").unwrap().clone();
    poll("gone DOWN", Duration::from_secs(5), || async { nosrv.usable.load().servers.is_empty().then_some(()) }).await;
    let mut table = Vec::new();

    // The queue: one session holds the only slot, one client waits.
    let full = port("full");
    let holder = connect(full, "appdb").await.unwrap();
    let waiter = tokio::spawn(async move { connect(full, "appdb").await.map(drop) });
    let be = rt.backend("full").unwrap().clone();
    poll("one client queued", Duration::from_secs(5), || async { (pglb::state::counters::Counters::get(&be.counters.queue_cur) == 1).then_some(()) })
        .await;
    let slow_holder = connect(port("slow"), "appdb").await.unwrap();
    for sslmode in ["disable", "require"] {
        table.push(("no server, the wait expired", sslmode, argo_connects(port("nosrv"), sslmode).await));
        table.push(("queue full", sslmode, argo_connects(full, sslmode).await));
        table.push(("no free slot within timeout queue", sslmode, argo_connects(port("slow"), sslmode).await));
        table.push(("every connect attempt failed", sslmode, argo_connects(port("refused"), sslmode).await));
    }
    drop(slow_holder);
    drop(holder);
    waiter.await.unwrap().unwrap();

    // Out of file descriptors: a pglb of its own under a small limit, its
    // descriptors taken by clients that never send their first packet.
    let cfg = format!("listen pg\n    bind 127.0.0.1:PORT\n    timeout client 60s\n    server primary 127.0.0.1:{primary}\n");
    let mut small = spawn_pglb(&cfg, Some(48));
    let small_port = small.port;
    poll("pglb listening", Duration::from_secs(10), || async { connect(small_port, "appdb").await.ok() }).await;
    // Exactly enough idle clients to use every descriptor: a refusal reads
    // its client's first packet for up to 1 s, so a surplus of idle clients
    // would keep the refusing descriptor busy. Topped up before each try
    // (pglb's own use of descriptors moves a little).
    let fds = format!("/proc/{}/fd", small.child.id());
    let mut idle = Vec::new();
    for sslmode in ["disable", "require"] {
        let mut seen = None;
        for _ in 0..5 {
            while std::fs::read_dir(&fds).map(|d| d.count()).unwrap_or(0) < 48 {
                idle.push(tokio::net::TcpStream::connect(("127.0.0.1", small_port)).await.unwrap());
                tokio::time::sleep(Duration::from_millis(5)).await;
                assert!(idle.len() < 100, "pglb never used its 48 descriptors");
            }
            let s = argo_connects(small_port, sslmode).await;
            if !s.ok {
                seen = Some(s);
                break;
            }
        }
        let seen = seen.expect("refused once every descriptor is in use");
        if sslmode == "disable" {
            assert!(seen.error.contains("out of file descriptors"), "{seen:?}");
        }
        table.push(("out of file descriptors", sslmode, seen));
    }
    drop(idle);
    assert!(small.alive());

    // Shutting down: new clients are refused while sessions finish.
    rt.stopping.cancel();
    for sslmode in ["disable", "require"] {
        table.push(("shutting down", sslmode, argo_connects(port("stopping"), sslmode).await));
    }

    let mut text = String::from("| refusal | sslmode | lib/pq error | Argo retries? |\n|---|---|---|---|\n");
    for (what, sslmode, seen) in &table {
        text += &format!("| {what} | {sslmode} | `{}` | {} |\n", seen.error, if seen.retryable { "yes" } else { "**no**" });
    }
    println!("{text}");
    for (what, sslmode, seen) in &table {
        assert!(!seen.ok, "{what} ({sslmode}) was not refused");
        assert!(seen.retryable, "Argo would not retry {what} ({sslmode}): {}\n{text}", seen.error);
        assert!(!seen.error.contains("SSL is not enabled"), "{what} ({sslmode}): {}", seen.error);
    }
}
