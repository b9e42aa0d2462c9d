//! Hot reload: SIGHUP and the runtime API's `reload` apply a new
//! configuration without closing kept listeners; an invalid one changes
//! nothing; unchanged servers keep their state; sessions on removed servers
//! drain up to hard-stop-after.

use crate::common::*;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::time::Duration;

fn config(lab: &pglb_tools::lab::Lab, keep: u16, extra_bind: Option<u16>, servers: &[&str], dead: u16, hard_stop: &str) -> String {
    let lines: String = servers.iter().map(|n| format!("    server {n} 127.0.0.1:{}\n", lab.node(n).unwrap().port)).collect();
    let extra = extra_bind.map(|p| format!("    bind 127.0.0.1:{p}\n")).unwrap_or_default();
    format!(
        "global\n    hard-stop-after {hard_stop}\ndefaults\n    mode tcp\n    timeout connect 1s\n    timeout tunnel 1h\n\
         listen pg\n    bind 127.0.0.1:{keep}\n{extra}    balance roundrobin\n{lines}\
         listen down\n    bind 127.0.0.1:0\n    option pgsql-check user postgres\n    server gone 127.0.0.1:{dead} check inter 100ms\n"
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reload_keeps_listeners_applies_binds_and_keeps_server_state() {
    let lab = shared_lab().await;
    let (keep, extra, dead) = (dead_port(), dead_port(), dead_port());
    let (_d, path) = write_config(&config(lab, keep, Some(extra), &["primary", "replica1"], dead, "10s"));
    init_logs();
    let loaded = pglb::config::load(&path).unwrap();
    let pglb = pglb::run::start(loaded.config).await.unwrap();
    let down = pglb.runtime().backend("down").unwrap().clone();
    poll("'gone' DOWN", Duration::from_secs(5), || async { down.usable.load().servers.is_empty().then_some(()) }).await;

    // Continuous connects to the kept port while reloading: none may be refused.
    let (stop, refused, ok) = (Arc::new(AtomicBool::new(false)), Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let hammer = {
        let (stop, refused, ok) = (stop.clone(), refused.clone(), ok.clone());
        tokio::spawn(async move {
            while !stop.load(Relaxed) {
                match tokio::net::TcpStream::connect(("127.0.0.1", keep)).await {
                    Ok(_) => ok.fetch_add(1, Relaxed),
                    Err(_) => refused.fetch_add(1, Relaxed),
                };
                // Often enough to land inside every reload, without taking a core.
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        })
    };
    // A session on replica1, which the new configuration removes, and one
    // on primary, which it keeps.
    let (mut on_r1, mut on_primary) = (None, None);
    for _ in 0..4 {
        let c = connect(keep, "appdb").await.unwrap();
        let p: i32 = c.query_one("select inet_server_port()", &[]).await.unwrap().get(0);
        if p == i32::from(lab.node("replica1").unwrap().port) {
            on_r1 = Some(c);
        } else {
            on_primary = Some(c);
        }
    }
    let (on_r1, on_primary) = (on_r1.expect("a session on replica1"), on_primary.expect("a session on primary"));

    // 1. An invalid configuration changes nothing.
    std::fs::write(&path, "listen pg\n    bind 127.0.0.1:1\n    balance nonsense\n").unwrap();
    let err = pglb.reload().await.unwrap_err();
    assert!(matches!(err, pglb::run::ReloadError::Config(_)) && !err.is_retryable(), "{err}");
    assert!(err.to_string().contains("unknown balance algorithm"), "{err}");
    assert!(connect(extra, "appdb").await.is_ok(), "the old configuration still serves");

    // 2. A valid one: the extra bind goes, replica2 comes, replica1 goes.
    std::fs::write(&path, config(lab, keep, None, &["primary", "replica2"], dead, "10s")).unwrap();
    let summary = pglb.reload().await.unwrap();
    assert_eq!(summary.generation, 2, "{summary}");
    // The session on the removed server still works (checked at once: it
    // is closed when hard-stop-after, 10 s, runs out; below).
    on_r1.query_one("select 1", &[]).await.expect("draining session still served");
    // The accept loop closes its socket as soon as it runs again.
    poll("the removed bind is closed", Duration::from_secs(10), || async {
        tokio::net::TcpStream::connect(("127.0.0.1", extra)).await.is_err().then_some(())
    })
    .await;
    let mut seen = std::collections::BTreeSet::new();
    for _ in 0..4 {
        seen.insert(server_port(keep).await);
    }
    let want: std::collections::BTreeSet<i32> = ["primary", "replica2"].iter().map(|n| i32::from(lab.node(n).unwrap().port)).collect();
    assert_eq!(seen, want, "new sessions use the new server list");
    // The unchanged DOWN server is still DOWN in the new generation (no UP flash).
    let down2 = pglb.runtime().backend("down").unwrap().clone();
    assert!(down2.usable.load().servers.is_empty(), "unchanged servers keep their health state");
    assert_eq!(pglb.runtime().generation, 2);

    // `shutdown sessions` on the kept server reaches the session it had
    // before the reload, and only that one.
    on_primary.query_one("select 1", &[]).await.expect("the session on the kept server continues");
    let answer = pglb::admin::execute(&pglb.runtime(), pglb::config::Level::Admin, "shutdown sessions server pg/primary");
    assert!(matches!(&answer, pglb::admin::Outcome::Text(t) if t.trim().is_empty()), "{answer:?}");
    poll("the earlier generation's session on primary closed", Duration::from_secs(5), || async {
        on_primary.query_one("select 1", &[]).await.is_err().then_some(())
    })
    .await;
    on_r1.query_one("select 1", &[]).await.expect("a session on another server is not closed");

    // The session on the removed server is closed after hard-stop-after.
    poll("session on the removed server closed", Duration::from_secs(20), || async { on_r1.query_one("select 1", &[]).await.is_err().then_some(()) })
        .await;

    stop.store(true, Relaxed);
    hammer.await.unwrap();
    assert_eq!(refused.load(Relaxed), 0, "a kept listener refused connects during reloads ({} accepted)", ok.load(Relaxed));
    assert!(ok.load(Relaxed) > 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_and_runtime_api_reload_the_binary() {
    let lab = shared_lab().await;
    let (port, extra) = (dead_port(), dead_port());
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("admin.sock");
    let cfg = |extra: Option<u16>| {
        let extra = extra.map(|p| format!("    bind 127.0.0.1:{p}\n")).unwrap_or_default();
        format!(
            "global\n    stats socket {} level admin\nlisten pg\n    bind 127.0.0.1:{port}\n{extra}    timeout connect 1s\n    server primary 127.0.0.1:{}\n",
            sock.display(),
            lab.primary().port
        )
    };
    let path = dir.path().join("pglb.cfg");
    std::fs::write(&path, cfg(None)).unwrap();
    let log = dir.path().join("pglb.log");
    let child = std::process::Command::new(pglb_bin()).args(["run", "-f"]).arg(&path).stderr(std::fs::File::create(&log).unwrap()).spawn().unwrap();
    let logged = |what: &'static str| {
        let log = log.clone();
        async move { std::fs::read_to_string(&log).unwrap_or_default().contains(what).then_some(()) }
    };
    poll("pglb up", Duration::from_secs(10), || async { connect(port, "appdb").await.ok() }).await;

    // SIGHUP with a broken file: refused, still serving.
    std::fs::write(&path, "global\n    frobnicate\n").unwrap();
    // SAFETY: signalling our own child.
    unsafe { libc::kill(child.id() as i32, libc::SIGHUP) };
    poll("the broken reload refused", Duration::from_secs(10), || logged("reload refused, the running configuration stays")).await;
    assert!(connect(port, "appdb").await.is_ok(), "an invalid reload keeps the running configuration");

    // SIGHUP with a new bind.
    std::fs::write(&path, cfg(Some(extra))).unwrap();
    unsafe { libc::kill(child.id() as i32, libc::SIGHUP) };
    poll("the new bind serves", Duration::from_secs(5), || async { connect(extra, "appdb").await.ok() }).await;

    // `pglb ctl reload` removes it again.
    std::fs::write(&path, cfg(None)).unwrap();
    let out = std::process::Command::new(pglb_bin()).args(["ctl", "-S"]).arg(&sock).arg("reload").output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.starts_with("Success=1"), "{stdout}");
    poll("the removed bind is closed", Duration::from_secs(10), || async {
        tokio::net::TcpStream::connect(("127.0.0.1", extra)).await.is_err().then_some(())
    })
    .await;

    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    tokio::task::spawn_blocking(move || child.wait_with_output().unwrap()).await.unwrap();
    let stderr = std::fs::read_to_string(&log).unwrap();
    assert!(stderr.contains("unknown keyword 'frobnicate'"), "{stderr}");
    assert!(stderr.contains("configuration generation 2 loaded"), "{stderr}");
}

/// A reload that changes a runtime API socket's level and fails on another
/// socket leaves the runtime API as it was: new sockets are bound beside
/// their paths and only put in place once every one is bound.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_reload_keeps_the_runtime_api_socket() {
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("admin.sock");
    let text = |level: &str, extra: &str| {
        format!(
            "global\n    stats socket {} level {level}\n{extra}listen pg\n    bind 127.0.0.1:0\n    server a 127.0.0.1:{}\n",
            sock.display(),
            dead_port()
        )
    };
    let path = dir.path().join("pglb.cfg");
    std::fs::write(&path, text("operator", "")).unwrap();
    init_logs();
    let pglb = pglb::run::start(pglb::config::load(&path).unwrap().config).await.unwrap();
    let ask = |cmd: &str| {
        let out = std::process::Command::new(pglb_bin()).args(["ctl", "-S"]).arg(&sock).arg(cmd).output().unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr)
    };
    assert!(ask("help").contains("show info"));
    // The level changes (the socket is rebound) and a second socket cannot be opened.
    std::fs::write(&path, text("admin", "    stats socket /nonexistent/dir/pglb.sock level admin\n")).unwrap();
    let err = pglb.reload().await.unwrap_err();
    assert!(err.to_string().contains("cannot open stats socket /nonexistent/dir/pglb.sock"), "{err}");
    assert!(ask("help").contains("show info"), "the runtime API still answers at its path");
    assert!(ask("pause backend pg").contains("Permission denied"), "still at the old level");
    // A valid change of level takes effect.
    std::fs::write(&path, text("admin", "")).unwrap();
    pglb.reload().await.unwrap();
    assert!(!ask("pause backend pg").contains("Permission denied"), "now admin");
    assert!(pglb.runtime().backend("pg").unwrap().paused.load(Relaxed));
    assert!(std::fs::read_dir(dir.path()).unwrap().all(|e| !e.unwrap().file_name().to_string_lossy().ends_with(".new")), "no temporary socket left");
}
