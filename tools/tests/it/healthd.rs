//! `pglb healthd` behind Debian's HAProxy: the seed-004 architecture with
//! the health service in Rust. HAProxy's own `show stat` is the witness.

use crate::common::*;
use crate::observe::{http_get, try_http_get};
use pglb_tools::lab::Fault;
use std::time::Duration;

fn haproxy_status(socket: &std::path::Path, server: &str) -> String {
    let out = std::process::Command::new("sh").arg("-c").arg(format!("echo 'show stat' | socat stdio {}", socket.display())).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    text.lines().find(|l| l.starts_with(&format!("ro,{server},"))).and_then(|l| l.split(',').nth(17)).unwrap_or("").to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stock_haproxy_with_healthd_marks_a_lagging_replica_down() {
    let lab = own_lab(2).await;
    let ports: Vec<u16> = (0..3).map(|_| dead_port()).collect();
    let mut args = vec!["healthd".to_string(), "--interval".into(), "200ms".into()];
    for (node, port) in lab.nodes().iter().zip(&ports) {
        // replica1 with sslmode=disable: a kept session plus a start-up check
        // per poll; the others log in at every poll.
        let tls = if node.name == "replica1" { " sslmode=disable" } else { "" };
        args.push("--node".into());
        args.push(format!("{}={}{tls}", node.name, lab.dsn(node, "appdb")));
        args.push("--listen".into());
        args.push(format!("{}=127.0.0.1:{port}", node.name));
    }
    let log_dir = tempfile::tempdir().unwrap();
    let log = log_dir.path().join("healthd.log");
    let _healthd = KillOnDrop(std::process::Command::new(pglb_bin()).args(&args).stderr(std::fs::File::create(&log).unwrap()).spawn().unwrap());
    let (p_primary, p_r1, p_r2) = (ports[0], ports[1], ports[2]);
    for port in [p_primary, p_r1, p_r2] {
        poll("healthd has checked every node", Duration::from_secs(10), || async {
            (try_http_get(port, "/health", None).await?.0 == 200).then_some(())
        })
        .await;
    }
    // The endpoints themselves.
    let (code, body) = http_get(p_primary, "/primary", None).await;
    assert_eq!(code, 200, "{body}");
    assert!(body.starts_with("OK: primary is primary"), "{body}");
    let (code, body) = http_get(p_primary, "/replica", None).await;
    assert_eq!(code, 503);
    assert!(!body.contains("OK"), "{body}");
    assert_eq!(http_get(p_r2, "/replica?lag=10s", None).await.0, 200);
    let (_, status) = http_get(p_r2, "/status", None).await;
    let v: serde_json::Value = serde_json::from_str(&status).unwrap();
    assert_eq!(v["role"], "replica");
    assert_eq!(v["streaming"], true);

    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("haproxy.sock");
    let cfg = format!(
        "global\n    stats socket {}\ndefaults\n    mode tcp\n    timeout connect 1s\n    timeout client 1h\n    timeout server 1h\n    timeout check 1s\n\
         listen ro\n    bind 127.0.0.1:{}\n    balance roundrobin\n    option httpchk GET /replica?lag=1s\n    http-check expect string OK\n    default-server inter 300ms fall 2 rise 2\n\
         \x20   server replica1 127.0.0.1:{} check port {p_r1} addr 127.0.0.1\n    server replica2 127.0.0.1:{} check port {p_r2} addr 127.0.0.1\n",
        socket.display(),
        dead_port(),
        lab.node("replica1").unwrap().port,
        lab.node("replica2").unwrap().port,
    );
    let _haproxy = spawn_haproxy(dir.path(), &cfg);
    poll("HAProxy sees both replicas UP", Duration::from_secs(10), || async {
        (haproxy_status(&socket, "replica1") == "UP" && haproxy_status(&socket, "replica2") == "UP").then_some(())
    })
    .await;

    lab.fault("replica1", Fault::PauseReplay).await.unwrap();
    let primary = connect(lab.primary().port, "appdb").await.unwrap();
    primary.batch_execute("create table if not exists hd_t(x int)").await.unwrap();
    let writer = tokio::spawn(async move {
        for i in 0..300 {
            let _ = primary.execute("insert into hd_t values ($1)", &[&i]).await;
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    });
    poll("HAProxy marks the lagging replica DOWN", Duration::from_secs(15), || async {
        (haproxy_status(&socket, "replica1") == "DOWN").then_some(())
    })
    .await;
    // "UP 1/2" (one slow answer) is still UP in HAProxy's terms.
    let replica2 = haproxy_status(&socket, "replica2");
    assert!(replica2.starts_with("UP"), "the healthy replica stays UP: {replica2}");
    lab.fault("replica1", Fault::ResumeReplay).await.unwrap();
    poll("replica1 UP again", Duration::from_secs(15), || async { (haproxy_status(&socket, "replica1") == "UP").then_some(()) }).await;
    writer.abort();

    // A frozen postmaster takes no new client, though healthd's kept
    // session on replica1 still answers: /replica must say so.
    lab.fault("replica1", Fault::Freeze).await.unwrap();
    let (_, body) = poll("frozen replica1 refused", Duration::from_secs(10), || async {
        try_http_get(p_r1, "/replica", None).await.filter(|(code, _)| *code == 503)
    })
    .await;
    assert!(body.contains("new connections fail"), "{body}");
    lab.fault("replica1", Fault::Thaw).await.unwrap();
    poll("thawed replica1 OK", Duration::from_secs(10), || async { try_http_get(p_r1, "/replica", None).await.filter(|(code, _)| *code == 200) })
        .await;

    // Split brain: replica2 promoted while the primary runs. Neither is the
    // primary for healthd, so HAProxy would send writes to neither.
    lab.fault("replica2", Fault::Promote).await.unwrap();
    for port in [p_primary, p_r2] {
        let (code, body) = poll("both /primary refuse", Duration::from_secs(10), || async {
            let (code, body) = try_http_get(port, "/primary", None).await?;
            (code == 503).then_some((code, body))
        })
        .await;
        assert!(body.contains("split brain") && !body.contains("OK"), "{code} {body}");
        assert_eq!(try_http_get(port, "/", None).await.map(|r| r.0), Some(503), "Patroni's / is /primary");
    }
    let logged = std::fs::read_to_string(&log).unwrap();
    assert!(logged.contains("split brain: replica2 and primary report being primary"), "{logged}");
    lab.down().await.unwrap();
}
