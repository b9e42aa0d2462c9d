//! The proxy core against real PostgreSQL: the seed-000 configuration,
//! retries and redispatch, cancel routing (plain and TLS), polite refusals,
//! TLS passthrough, pgbench.

use crate::common::*;
use std::collections::BTreeMap;
use std::time::Duration;

const SEED_000: &str = include_str!("../../../examples/seed-000.cfg");

/// The seed's configuration with only its addresses pointed at the lab.
fn seed_for_lab(lab: &pglb_tools::lab::Lab, socket: &std::path::Path) -> String {
    let mut cfg = SEED_000.to_string();
    for (name, node) in [("primary", "primary"), ("secondary", "replica1"), ("tertiary", "replica2")] {
        let port = lab.node(node).unwrap().port;
        cfg = cfg.replace(&format!("postgres-{name}.argo.svc.cluster.local:5432"), &format!("127.0.0.1:{port}"));
    }
    cfg.replace("bind *:5432", "bind 127.0.0.1:0")
        .replace("bind *:8404", "bind 127.0.0.1:0")
        .replace("/var/run/haproxy.sock", socket.to_str().unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seed_000_is_checked_then_balances_10_10_10() {
    let lab = shared_lab().await;
    let dir = tempfile::tempdir().unwrap();
    let cfg = seed_for_lab(lab, &dir.path().join("haproxy.sock"));
    let (_cfgdir, path) = write_config(&cfg);

    // `pglb check` says what is really wrong with the seed's check packet.
    let out = std::process::Command::new(pglb_bin()).args(["check", "-f"]).arg(&path).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("pglb.cfg:31: tcp-check send-binary is a PostgreSQL StartupMessage"), "{stderr}");
    assert!(stderr.contains("length field says 32 bytes while 27 are sent"), "{stderr}");
    assert!(stderr.contains("protocol version is 0.3"), "{stderr}");
    assert!(stderr.contains("timeout tunnel"), "idle-timeout warning missing: {stderr}");
    let fix = stderr.split("write: tcp-check send-binary ").nth(1).unwrap().split_whitespace().next().unwrap().to_string();
    assert_eq!(fix, "00000017000300007573657200706f7374677265730000");

    // With the corrected packet the configuration is valid and balances.
    let corrected = cfg.replace("00000020000000030000757365720000706f737467726573000000", &fix);
    let (_cfgdir2, path2) = write_config(&corrected);
    let out = std::process::Command::new(pglb_bin()).args(["check", "-f"]).arg(&path2).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));

    let pglb = start(&corrected).await;
    let port = pglb.addr("postgres_frontend").unwrap().port();
    let be = pglb.runtime().backend("postgres_backend").unwrap().clone();
    // The 1 s PostgreSQL-protocol checks really run and pass.
    poll("every server UP and checked L7OK", Duration::from_secs(10), || async {
        (be.usable.load().servers.len() == 3 && be.servers.iter().all(|s| s.check.lock().unwrap().status == pglb::state::check::CheckStatus::L7Ok))
            .then_some(())
    })
    .await;
    let mut seen: BTreeMap<i32, usize> = BTreeMap::new();
    for _ in 0..30 {
        *seen.entry(server_port(port).await).or_default() += 1;
    }
    let expected: BTreeMap<i32, usize> = lab.nodes().iter().map(|n| (i32::from(n.port), 10)).collect();
    assert_eq!(seen, expected);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retries_and_redispatch_survive_a_stopped_server() {
    let lab = own_lab(2).await;
    lab.fault("replica2", pglb_tools::lab::Fault::Stop).await.unwrap();
    let cfg = format!(
        "defaults\n    mode tcp\n    timeout connect 2s\n    retries 3\n    option redispatch 1\n\
         listen pg\n    bind 127.0.0.1:0\n    balance roundrobin\n{}",
        server_lines(&lab, "")
    );
    let pglb = start(&cfg).await;
    let port = pglb.addr("pg").unwrap().port();
    let dead = i32::from(lab.node("replica2").unwrap().port);
    let mut served = BTreeMap::new();
    for i in 0..200 {
        let p = connect(port, "appdb").await.unwrap_or_else(|e| panic!("connection {i} failed: {e}"));
        let port: i32 = p.query_one("select inet_server_port()", &[]).await.unwrap().get(0);
        *served.entry(port).or_insert(0) += 1;
    }
    assert!(!served.contains_key(&dead));
    assert_eq!(served.values().sum::<i32>(), 200);
    let be = pglb.runtime().backend("pg").unwrap().clone();
    let redispatched = be.counters.redispatches.load(std::sync::atomic::Ordering::Relaxed);
    assert!(redispatched >= 60, "a third of the connections should have been redispatched, got {redispatched}");
    lab.down().await.unwrap();
}

/// Starts `psql -c 'select pg_sleep(30)'`, waits until the query runs on
/// some server, presses Ctrl-C (SIGINT) and returns psql's output.
async fn psql_ctrl_c(port: u16, sslmode: &str, lab: &pglb_tools::lab::Lab, tag: &str) -> (std::process::Output, i32) {
    ctrl_c(psql_cmd(port, sslmode, &format!("select pg_sleep(30) /* {tag} */")), lab, tag).await
}

/// Runs `psql` (whose query carries `tag`), waits until the query runs on
/// some server of `lab`, presses Ctrl-C and returns psql's output and the
/// server's port.
pub(crate) async fn ctrl_c(mut psql: std::process::Command, lab: &pglb_tools::lab::Lab, tag: &str) -> (std::process::Output, i32) {
    let child = psql.stdout(std::process::Stdio::piped()).stderr(std::process::Stdio::piped()).spawn().unwrap();
    let needle = format!("%{tag}%");
    let on = poll("the query to run", Duration::from_secs(10), || {
        let needle = needle.clone();
        async move {
            for n in lab.nodes() {
                let Ok(c) = connect(n.port, "postgres").await else { continue };
                let q = "select count(*) from pg_stat_activity where state = 'active' and query like $1 and pid <> pg_backend_pid()";
                let count: i64 = c.query_one(q, &[&needle]).await.ok()?.get(0);
                if count > 0 {
                    return Some(i32::from(n.port));
                }
            }
            None
        }
    })
    .await;
    // SAFETY: signalling our own child.
    unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
    let out = tokio::task::spawn_blocking(move || child.wait_with_output().unwrap()).await.unwrap();
    (out, on)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn psql_ctrl_c_cancels_through_round_robin_plain_and_tls() {
    let lab = shared_lab().await;
    let cfg = format!(
        "defaults\n    mode tcp\n    timeout connect 2s\n    timeout tunnel 1h\nlisten pg\n    bind 127.0.0.1:0\n    balance roundrobin\n{}",
        server_lines(lab, "")
    );
    let pglb = start(&cfg).await;
    let port = pglb.addr("pg").unwrap().port();
    let mut servers = std::collections::BTreeSet::new();
    for i in 0..6 {
        let (out, on) = psql_ctrl_c(port, "disable", lab, &format!("plain{i}")).await;
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains("canceling statement due to user request"), "attempt {i}: {stderr}");
        servers.insert(on);
    }
    assert_eq!(servers.len(), 3, "the six queries ran on all three servers");
    assert!(pglb.runtime().cancel.routed.load(std::sync::atomic::Ordering::Relaxed) >= 6);

    // TLS: pglb cannot read BackendKeyData, so the cancel goes to every server.
    let (out, _) = psql_ctrl_c(port, "require", lab, "tls0").await;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("canceling statement due to user request"), "tls: {stderr}");
    assert!(pglb.runtime().cancel.broadcast.load(std::sync::atomic::Ordering::Relaxed) >= 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_passes_through() {
    let lab = shared_lab().await;
    let cfg = format!("listen pg\n    bind 127.0.0.1:0\n    timeout connect 2s\n{}", server_lines(lab, ""));
    let pglb = start(&cfg).await;
    let port = pglb.addr("pg").unwrap().port();
    let out = psql(port, "require", "select ssl from pg_stat_ssl where pid = pg_backend_pid()");
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "t", "{}", String::from_utf8_lossy(&out.stderr));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn psql_prints_pglb_fatal_when_no_server_is_usable() {
    init_logs();
    let dead = dead_port();
    let cfg = format!(
        "listen pg\n    bind 127.0.0.1:0\n    timeout connect 1s\n    option pgsql-check user postgres\n    server a 127.0.0.1:{dead} check inter 100ms fall 1\n\
         listen refused\n    bind 127.0.0.1:0\n    timeout connect 1s\n    retries 1\n    server b 127.0.0.1:{dead}\n"
    );
    let pglb = start(&cfg).await;
    let be = pglb.runtime().backend("pg").unwrap().clone();
    poll("server a DOWN", Duration::from_secs(5), || async { be.usable.load().servers.is_empty().then_some(()) }).await;
    // A plaintext client reads pglb's FATAL, worded so that drivers retry it.
    let out = psql(pglb.addr("pg").unwrap().port(), "disable", "select 1");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("FATAL:  pglb: no server is available in backend \"pg\" (1 server(s), 1 DOWN) after waiting 1s (timeout queue); connection closed, try again"),
        "{stderr}"
    );
    // A client that asked for TLS is never told 'N' ("SSL is not enabled on
    // the server", untrue, and retried by no driver): the connection closes.
    let out = psql(pglb.addr("pg").unwrap().port(), "require", "select 1");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("server closed the connection unexpectedly"), "{stderr}");
    assert!(!stderr.contains("SSL"), "{stderr}");
    // Also when it sent its StartupMessage right behind its SSLRequest.
    let ssl_request = [0, 0, 0, 8, 0x04, 0xd2, 0x16, 0x2f];
    let answer = answer_to(pglb.addr("pg").unwrap().port(), &[&ssl_request[..], &startup_message(0)].concat()).await;
    assert_eq!(answer, b"", "nothing but a close");
    // Retries exhausted on a refused connection.
    let out = psql(pglb.addr("refused").unwrap().port(), "disable", "select 1");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("FATAL:  pglb: could not connect to server refused/b"), "{stderr}");
    assert!(stderr.contains("after 2 attempt(s)"), "{stderr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_clients_are_closed_without_harming_others() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let lab = shared_lab().await;
    let cfg =
        format!("listen pg\n    bind 127.0.0.1:0\n    timeout connect 2s\n    timeout client 2s\n    timeout tunnel 1h\n{}", server_lines(lab, ""));
    let pglb = start(&cfg).await;
    let port = pglb.addr("pg").unwrap().port();
    let held = connect(port, "appdb").await.unwrap();
    for garbage in [&b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"[..], &[0, 0, 0, 9, 0, 9, 9, 9, 0], &[0xff; 64], &[0, 0, 0x27, 0x11, 0, 3, 0, 0]] {
        let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port)).await.unwrap();
        s.write_all(garbage).await.unwrap();
        let mut buf = Vec::new();
        // pglb closes (possibly after a protocol-violation error) within the client timeout.
        tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut buf)).await.expect("closed").ok();
    }
    // Silent client: closed by timeout client, not held for ever.
    let mut silent = tokio::net::TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    let mut buf = [0u8; 1];
    let n = tokio::time::timeout(Duration::from_secs(5), silent.read(&mut buf)).await.expect("silent client closed").unwrap_or(0);
    assert_eq!(n, 0);
    let v: i32 = held.query_one("select 42", &[]).await.unwrap().get(0);
    assert_eq!(v, 42);
    assert!(connect(port, "appdb").await.is_ok());
}

/// What a server answers to `bytes` sent in one write, up to its close.
async fn answer_to(port: u16, bytes: &[u8]) -> Vec<u8> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    s.write_all(bytes).await.unwrap();
    let mut answer = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut answer)).await.unwrap_or_else(|_| panic!("no close after {:?}", bytes)).ok();
    answer
}

/// A SASLInitialResponse naming a mechanism that does not exist: the
/// server can only answer it if it received it.
const BOGUS_AUTH: [u8; 17] = [b'p', 0, 0, 0, 16, b'N', b'O', b'-', b'S', b'U', b'C', b'H', 0, 0xff, 0xff, 0xff, 0xff];

/// A StartupMessage for postgres/appdb, with a `filler`-byte parameter.
fn startup_message(filler: usize) -> Vec<u8> {
    let mut body = b"\0\x03\0\0user\0postgres\0database\0appdb\0".to_vec();
    if filler > 0 {
        body.extend_from_slice(format!("pglb.filler\0{}\0", "x".repeat(filler)).as_bytes());
    }
    body.push(0);
    [&((body.len() + 4) as u32).to_be_bytes()[..], &body].concat()
}

/// pglb reads the first packet with one large read, so it may take in
/// bytes the client sent after it without waiting for an answer. They must
/// reach the server as if pglb were not there. A StartupMessage longer than
/// that first read is completed with a second one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bytes_pipelined_after_the_first_packet_reach_the_server() {
    let lab = shared_lab().await;
    let direct = lab.node("primary").unwrap().port;
    let cfg = format!(
        "listen pg\n    bind 127.0.0.1:0\n    timeout connect 2s\n    timeout client 5s\n    timeout server 5s\n    server p 127.0.0.1:{direct}\n"
    );
    let pglb = start(&cfg).await;
    let port = pglb.addr("pg").unwrap().port();
    for filler in [0, 3000] {
        let bytes = [&startup_message(filler)[..], &BOGUS_AUTH].concat();
        let through = answer_to(port, &bytes).await;
        let straight = answer_to(direct, &bytes).await;
        let text = String::from_utf8_lossy(&through);
        assert!(text.contains("SASL"), "startup of {} bytes: {text}", bytes.len());
        assert_eq!(through, straight, "startup of {} bytes: pglb's client saw another answer than a direct client", bytes.len());
    }
}

/// Runs pgbench and returns (processed, failed) transactions.
fn pgbench(port: u16, clients: u32) -> (u64, u64) {
    let out = std::process::Command::new("pgbench")
        .args(["-n", "-S", "-T", "3", "-c", &clients.to_string(), "-j", "2", "-h", "127.0.0.1", "-p", &port.to_string(), "-U", "postgres", "bench"])
        .env("PGPASSWORD", "postgres")
        .env("PGSSLMODE", "disable")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "pgbench -c {clients}: {text}");
    let num = |key: &str| -> u64 {
        text.lines()
            .find_map(|l| l.strip_prefix(key))
            .and_then(|r| r.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("no '{key}' in {text}"))
    };
    (num("number of transactions actually processed: "), num("number of failed transactions: "))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pgbench_select_only_has_no_failures_at_1_and_64_clients() {
    let lab = shared_lab().await;
    let primary = connect(lab.primary().port, "postgres").await.unwrap();
    primary.batch_execute("drop database if exists bench").await.unwrap();
    primary.batch_execute("create database bench").await.unwrap();
    let init = std::process::Command::new("pgbench")
        .args(["-i", "-s", "1", "-q", "-h", "127.0.0.1", "-p", &lab.primary().port.to_string(), "-U", "postgres", "bench"])
        .env("PGPASSWORD", "postgres")
        .output()
        .unwrap();
    assert!(init.status.success(), "{}", String::from_utf8_lossy(&init.stderr));
    replicas_caught_up(lab).await;
    let cfg =
        format!("listen pg\n    bind 127.0.0.1:0\n    timeout connect 2s\n    timeout tunnel 1h\n    balance leastconn\n{}", server_lines(lab, ""));
    let pglb = start(&cfg).await;
    let port = pglb.addr("pg").unwrap().port();
    for clients in [1, 64] {
        let (done, failed) = tokio::task::spawn_blocking(move || pgbench(port, clients)).await.unwrap();
        assert!(done > 0, "no transaction at {clients} clients");
        assert_eq!(failed, 0, "failed transactions at {clients} clients");
    }
}

/// Waits until `be`'s queue holds `n` sessions.
async fn queue_reaches(be: &pglb::state::BackendState, n: u64, what: &str) {
    poll(what, Duration::from_secs(5), || async { (be.counters.queue_cur.load(std::sync::atomic::Ordering::Relaxed) == n).then_some(()) }).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_maxconn_queues_and_timeout_queue_answers_53300() {
    let lab = shared_lab().await;
    let cfg = format!(
        "listen pg\n    bind 127.0.0.1:0\n    timeout connect 1s\n    timeout queue 700ms\n    timeout tunnel 1h\n    server primary 127.0.0.1:{} maxconn 1\n",
        lab.primary().port
    );
    let pglb = start(&cfg).await;
    let port = pglb.addr("pg").unwrap().port();
    // With the slot held for longer than timeout queue, the client is told why.
    let holder = connect(port, "appdb").await.unwrap();
    let Err(e) = connect(port, "appdb").await else { panic!("the queue must time out") };
    let db = e.as_db_error().expect("a PostgreSQL error");
    assert_eq!(db.code().code(), "53300");
    assert!(db.message().contains("timeout queue"), "{}", db.message());
    drop(holder);
    // Without `timeout queue` (nothing but a free slot ends the wait): a
    // queued client is served when the slot frees; one that leaves while it
    // waits leaves the queue and does not take the slot when it frees.
    let cfg = format!(
        "listen nq\n    bind 127.0.0.1:0\n    timeout connect 1s\n    timeout tunnel 1h\n    server primary 127.0.0.1:{} maxconn 1\n",
        lab.primary().port
    );
    let pglb = start(&cfg).await;
    let port = pglb.addr("nq").unwrap().port();
    let be = pglb.runtime().backend("nq").unwrap().clone();
    let first = connect(port, "appdb").await.unwrap();
    first.query_one("select 1", &[]).await.unwrap();
    let waiter = tokio::spawn(async move { connect(port, "appdb").await.map(|c| c.is_closed()) });
    queue_reaches(&be, 1, "second client queued").await;
    drop(first);
    assert_eq!(waiter.await.unwrap().ok(), Some(false), "served after the slot freed");
    let holder = connect(port, "appdb").await.unwrap();
    let leaver = tokio::spawn(async move { connect(port, "appdb").await });
    queue_reaches(&be, 1, "a client queued").await;
    leaver.abort();
    queue_reaches(&be, 0, "the queue empties when its client leaves").await;
    assert_eq!(be.counters.errors_sent.load(std::sync::atomic::Ordering::Relaxed), 1);
    drop(holder);
    // The slot it would have taken serves the next client.
    assert!(connect(port, "appdb").await.is_ok());
    // A client that sent a request behind its StartupMessage and then
    // half-closed (as `nc -N` does) has not left: it is served in turn.
    let holder = connect(port, "appdb").await.unwrap();
    let one_shot = tokio::spawn(async move {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port)).await.unwrap();
        s.write_all(&[&startup_message(0)[..], &BOGUS_AUTH].concat()).await.unwrap();
        s.shutdown().await.unwrap();
        let mut answer = Vec::new();
        s.read_to_end(&mut answer).await.ok();
        String::from_utf8_lossy(&answer).to_string()
    });
    queue_reaches(&be, 1, "the one-shot client queued").await;
    drop(holder);
    let answer = tokio::time::timeout(Duration::from_secs(10), one_shot).await.expect("answered").unwrap();
    assert!(answer.contains("SASL"), "the server never saw the pipelined request: {answer:?}");
}
