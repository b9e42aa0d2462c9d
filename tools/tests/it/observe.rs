//! Operator surfaces: the stats listener (page, CSV, JSON, /metrics,
//! probes, auth) and the runtime API socket, compared with Debian's HAProxy
//! and used with socat as operators do.

use crate::common::*;
use std::collections::BTreeMap;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// A minimal HTTP/1.0 GET: (status, body).
pub async fn http_get(port: u16, path: &str, auth: Option<&str>) -> (u16, String) {
    try_http_get(port, path, auth).await.unwrap_or_else(|| panic!("GET {path} on port {port} failed"))
}

/// Like `http_get`, `None` when the server does not answer.
pub async fn try_http_get(port: u16, path: &str, auth: Option<&str>) -> Option<(u16, String)> {
    let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port)).await.ok()?;
    let auth = auth.map(|a| format!("Authorization: Basic {}\r\n", base64_encode(a))).unwrap_or_default();
    s.write_all(format!("GET {path} HTTP/1.0\r\nHost: localhost\r\n{auth}\r\n").as_bytes()).await.ok()?;
    let mut buf = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut buf)).await.ok()?.ok()?;
    let text = String::from_utf8_lossy(&buf).into_owned();
    let status = text.split_whitespace().nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
    let (head, body) = text.split_once("\r\n\r\n").map(|(h, b)| (h.to_ascii_lowercase(), b.to_string())).unwrap_or_default();
    let body = if head.contains("transfer-encoding: chunked") { dechunk(&body) } else { body };
    Some((status, body))
}

/// Decodes a chunked body (HAProxy answers HTTP/1.0 requests chunked).
fn dechunk(mut s: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = s.split_once("\r\n") {
        let n = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
        if n == 0 {
            break;
        }
        out.push_str(&rest[..n.min(rest.len())]);
        s = rest.get(n + 2..).unwrap_or("");
    }
    out
}

fn base64_encode(s: &str) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(s)
}

/// `echo CMD | socat stdio SOCKET`, as operators type it.
fn socat(socket: &std::path::Path, cmd: &str) -> String {
    let out = std::process::Command::new("sh").arg("-c").arg(format!("echo '{cmd}' | socat stdio {}", socket.display())).output().unwrap();
    assert!(out.status.success(), "socat: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn observed_config(lab: &pglb_tools::lab::Lab, socket: &std::path::Path, user_socket: &std::path::Path, stats_port: u16, dead: u16) -> String {
    format!(
        "global\n    stats socket {} mode 660 level admin\n    stats socket {} mode 600 level user\n\
         defaults\n    mode tcp\n    timeout connect 1s\n    timeout check 1s\n    timeout client 1h\n    timeout server 1h\n\
         listen stats\n    bind 127.0.0.1:{stats_port}\n    mode http\n    stats enable\n    stats uri /stats\n    stats refresh 5s\n    stats auth admin:s3cret\n\
         listen live\n    bind 127.0.0.1:0\n    balance roundrobin\n    option pgsql-check user postgres\n{}\
         listen dead\n    bind 127.0.0.1:0\n    option pgsql-check user postgres\n    server gone 127.0.0.1:{dead} check inter 200ms\n",
        socket.display(),
        user_socket.display(),
        server_lines(lab, "check inter 200ms")
    )
}

/// Parses `/metrics` with the Prometheus project's Python client parsers
/// (text format and OpenMetrics); returns `haproxy_backend_up` by proxy.
fn parse_backend_up(metrics: &str) -> BTreeMap<String, f64> {
    let script = r#"
import sys, json
from prometheus_client.parser import text_string_to_metric_families as prom
from prometheus_client.openmetrics.parser import text_string_to_metric_families as om
text = sys.stdin.read()
ups = {}
for parse in (prom, om):
    for fam in parse(text):
        if parse is om:
            assert fam.documentation and not fam.documentation.endswith(".."), f"help of {fam.name}: {fam.documentation!r}"
        for s in fam.samples:
            if s.name == "haproxy_backend_up":
                ups[s.labels["proxy"]] = s.value
print(json.dumps(ups))
"#;
    let mut child = std::process::Command::new("python3")
        .args(["-c", script])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::io::Write::write_all(child.stdin.as_mut().unwrap(), metrics.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "the Prometheus parsers rejected /metrics: {}\n{metrics}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stats_listener_serves_page_csv_json_metrics_and_probes() {
    let lab = shared_lab().await;
    let dir = tempfile::tempdir().unwrap();
    let stats_port = dead_port();
    let cfg = observed_config(lab, &dir.path().join("admin.sock"), &dir.path().join("user.sock"), stats_port, dead_port());
    let pglb = start(&cfg).await;
    let dead = pglb.runtime().backend("dead").unwrap().clone();
    poll("dead backend DOWN", Duration::from_secs(5), || async { dead.usable.load().servers.is_empty().then_some(()) }).await;
    let live_port = pglb.addr("live").unwrap().port();
    server_port(live_port).await;

    assert_eq!(http_get(stats_port, "/stats", None).await.0, 401, "stats auth is enforced");
    assert_eq!(http_get(stats_port, "/stats", Some("admin:wrong")).await.0, 401);
    assert_eq!(http_get(stats_port, "/metrics", None).await.0, 401, "/metrics is behind stats auth too");
    let auth = Some("admin:s3cret");
    let (status, page) = http_get(stats_port, "/stats", auth).await;
    assert_eq!(status, 200);
    assert!(page.contains("<html") && page.contains("live") && page.contains("replica1"), "{page}");
    assert!(page.contains("http-equiv=\"refresh\""));
    assert!(!http_get(stats_port, "/stats;norefresh", auth).await.1.contains("http-equiv=\"refresh\""));

    // A client that leaves mid-login (no Terminate): a client abort, counted
    // on the server as on the backend, as HAProxy does.
    {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut raw = tokio::net::TcpStream::connect(("127.0.0.1", live_port)).await.unwrap();
        raw.write_all(&pglb::pg::startup_message(&[("user", "postgres"), ("database", "appdb")])).await.unwrap();
        let mut first = [0u8; 1];
        raw.read_exact(&mut first).await.unwrap();
        assert_eq!(first[0], b'R', "the server asks for a password");
    }
    let aborts = |csv: &str, row: &str| -> u64 {
        let header: Vec<&str> = csv.lines().next().unwrap().trim_start_matches("# ").split(',').collect();
        let col = header.iter().position(|h| *h == "cli_abrt").unwrap();
        csv.lines().filter(|l| l.starts_with(row)).map(|l| l.split(',').nth(col).unwrap().parse::<u64>().unwrap_or(0)).sum()
    };
    let csv = poll("the abort counted", Duration::from_secs(5), || async {
        let (_, csv) = http_get(stats_port, "/stats;csv", auth).await;
        (aborts(&csv, "live,BACKEND,") == 1).then_some(csv)
    })
    .await;
    let on_servers = aborts(&csv, "live,") - 1;
    assert_eq!(on_servers, 1, "the server rows count the abort too: {csv}");
    assert_eq!(aborts(&csv, "live,FRONTEND,"), 0, "HAProxy's CSV has cli_abrt for backends and servers only");
    let (_, metrics) = http_get(stats_port, "/metrics", auth).await;
    assert!(metrics.lines().any(|l| l.starts_with("haproxy_server_client_aborts_total{proxy=\"live\"") && l.ends_with(" 1.0")), "{metrics}");

    let (_, csv) = http_get(stats_port, "/stats;csv", auth).await;
    let header = csv.lines().next().unwrap();
    assert!(header.starts_with("# pxname,svname,qcur,qmax,scur,smax,slim,stot,bin,bout,"), "{header}");
    assert!(csv.lines().any(|l| l.starts_with("dead,gone,") && l.contains(",DOWN,")), "{csv}");
    assert!(csv.lines().any(|l| l.starts_with("live,BACKEND,") && l.contains(",UP,")), "{csv}");
    // The seed's exporter scrapes /stats?stats;csv.
    assert_eq!(http_get(stats_port, "/stats?stats;csv", auth).await.1.lines().next(), Some(header));

    let (_, json) = http_get(stats_port, "/stats;json", auth).await;
    let v: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert!(v.as_array().unwrap().len() >= 8);

    let (status, metrics) = http_get(stats_port, "/metrics", auth).await;
    assert_eq!(status, 200);
    let ups = parse_backend_up(&metrics);
    assert_eq!(ups.get("dead"), Some(&0.0), "{ups:?}");
    assert_eq!(ups.get("live"), Some(&1.0), "{ups:?}");
    assert!(metrics.contains("haproxy_server_status{proxy=\"dead\",server=\"gone\",state=\"DOWN\"} 1"), "{metrics}");
    assert!(metrics.contains("haproxy_backend_current_sessions{proxy=\"live\"}"));

    assert_eq!(http_get(stats_port, "/healthz", None).await, (200, "OK\n".to_string()));
    // One empty backend does not make the instance unready (the others
    // still serve); asking about it, or about all, does.
    let (status, body) = http_get(stats_port, "/ready", None).await;
    assert_eq!((status, body.as_str()), (200, "ready; frontend dead -> backend dead has no usable server\n"));
    assert_eq!(http_get(stats_port, "/ready?frontend=live", None).await, (200, "ready\n".to_string()));
    let (status, body) = http_get(stats_port, "/ready?frontend=live,dead", None).await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(body, "not ready: frontend dead -> backend dead has no usable server\n");
    assert_eq!(http_get(stats_port, "/ready?all", None).await.0, 503);
    let (status, body) = http_get(stats_port, "/ready?frontend=nope", None).await;
    assert_eq!((status, body.as_str()), (400, "no mode tcp frontend named 'nope'\n"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runtime_api_works_with_socat_drain_maint_and_levels() {
    let lab = shared_lab().await;
    let dir = tempfile::tempdir().unwrap();
    let (admin, user) = (dir.path().join("admin.sock"), dir.path().join("user.sock"));
    let pglb = start(&observed_config(lab, &admin, &user, 0, dead_port())).await;
    let port = pglb.addr("live").unwrap().port();
    let live = pglb.runtime().backend("live").unwrap().clone();
    poll("live servers UP", Duration::from_secs(10), || async { (live.usable.load().servers.len() == 3).then_some(()) }).await;
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(std::fs::metadata(&admin).unwrap().permissions().mode() & 0o777, 0o660, "socket mode honoured");
    assert_eq!(std::fs::metadata(&user).unwrap().permissions().mode() & 0o777, 0o600);

    let stat = socat(&admin, "show stat");
    assert!(stat.starts_with("# pxname,svname,"), "{stat}");
    assert!(socat(&admin, "show info").contains("Name: pglb"));
    assert!(socat(&admin, "show servers state live").lines().nth(1).unwrap().starts_with("# be_id be_name srv_id"));
    // HAProxy's filter: proxy (name or iid), type mask (4 = servers), server id.
    let servers = socat(&admin, "show stat live 4 -1");
    let rows: Vec<&str> = servers.lines().skip(1).filter(|l| !l.is_empty()).collect();
    assert_eq!(rows.len(), 3, "{servers}");
    assert!(rows.iter().all(|l| l.starts_with("live,") && !l.contains(",BACKEND,") && !l.contains(",FRONTEND,")), "{servers}");
    let iid = rows[0].split(',').nth(27).unwrap().to_string();
    assert_eq!(socat(&admin, &format!("show stat {iid} 2 -1")).lines().skip(1).filter(|l| !l.is_empty()).count(), 1, "the backend row by iid");
    assert_eq!(socat(&admin, "show stat nope -1 -1").trim_end(), "No such proxy.");
    // be_id in `show servers state` is that same proxy id.
    let state = socat(&admin, "show servers state");
    assert!(state.lines().filter(|l| l.contains(" live ")).all(|l| l.starts_with(&format!("{iid} live "))), "{state}");
    assert!(socat(&user, "disable server live/replica1").contains("Permission denied"), "a level user socket refuses changes");
    let two = socat(&admin, "show backend; show info");
    assert!(two.contains("# name") && two.contains("Name: pglb"), "commands separated by ';': {two}");

    // Drain: the open session on replica1 continues, new sessions avoid it.
    let r1 = i32::from(lab.node("replica1").unwrap().port);
    let mut held = None;
    for _ in 0..6 {
        let c = connect(port, "appdb").await.unwrap();
        let p: i32 = c.query_one("select inet_server_port()", &[]).await.unwrap().get(0);
        if p == r1 {
            held = Some(c);
            break;
        }
    }
    let held = held.expect("round robin reached replica1");
    assert_eq!(socat(&admin, "set server live/replica1 state drain").trim(), "");
    for _ in 0..6 {
        assert_ne!(server_port(port).await, r1, "a drained server takes no new session");
    }
    let still: i32 = held.query_one("select inet_server_port()", &[]).await.unwrap().get(0);
    assert_eq!(still, r1, "the existing session continues");
    let stat = socat(&admin, "show stat");
    let header: Vec<&str> = stat.lines().next().unwrap().trim_start_matches("# ").split(',').collect();
    let row: Vec<&str> = stat.lines().find(|l| l.starts_with("live,replica1,")).unwrap().split(',').collect();
    let field = |name: &str| row[header.iter().position(|h| *h == name).unwrap()];
    // As in HAProxy: DRAIN is an effective weight of 0; the user weight stays.
    assert_eq!((field("status"), field("weight"), field("uweight")), ("DRAIN", "0", "1"), "{stat}");

    // Maint: same for sessions, and the checks stop.
    socat(&admin, "disable server live/replica1");
    let be = pglb.runtime().backend("live").unwrap().clone();
    let s = be.server("replica1").unwrap().clone();
    let fails = s.counters.check_failures.load(std::sync::atomic::Ordering::Relaxed);
    assert!(socat(&admin, "show stat").lines().any(|l| l.starts_with("live,replica1,") && l.contains(",MAINT,")));
    for _ in 0..6 {
        assert_ne!(server_port(port).await, r1);
    }
    let _ = fails;
    socat(&admin, "enable server live/replica1");
    poll("replica1 back in rotation", Duration::from_secs(15), || async { (server_port(port).await == r1).then_some(()) }).await;

    // shutdown sessions closes the held session.
    socat(&admin, "shutdown sessions server live/replica1");
    poll("held session closed", Duration::from_secs(5), || async { held.query_one("select 1", &[]).await.is_err().then_some(()) }).await;
    assert!(socat(&admin, "frobnicate").contains("Unknown command"));
    assert!(socat(&admin, "disable server live/nope").contains("No such server."));
}

/// HAProxy's `show stat` header and pglb's, column for column, with the
/// same configuration run by Debian's HAProxy in this test.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn csv_header_matches_debian_haproxy() {
    let lab = shared_lab().await;
    let dir = tempfile::tempdir().unwrap();
    // pglb listens on ports the kernel picks (0): a port probed free can
    // be taken by another test's connection before pglb binds it.
    let hp_stats = dead_port();
    let make = |sock: &std::path::Path, stats: u16, pg: u16| {
        format!(
            "global\n    stats socket {} mode 600 level admin\ndefaults\n    mode tcp\n    timeout connect 1s\n    timeout client 1h\n    timeout server 1h\n\
             listen stats\n    bind 127.0.0.1:{stats}\n    mode http\n    stats enable\n    stats uri /stats\n\
             listen pg\n    bind 127.0.0.1:{pg}\n    server primary 127.0.0.1:{} check\n",
            sock.display(),
            lab.primary().port
        )
    };
    let hp_sock = dir.path().join("haproxy.sock");
    let _haproxy = spawn_haproxy(dir.path(), &make(&hp_sock, hp_stats, dead_port()));
    poll("haproxy socket", Duration::from_secs(10), || async { hp_sock.exists().then_some(()) }).await;
    let pg_sock = dir.path().join("pglb.sock");
    let _pglb = start(&make(&pg_sock, 0, 0)).await;
    let pg_stats = _pglb.addr("stats").expect("the stats listener").port();
    let theirs = socat(&hp_sock, "show stat");
    let ours = socat(&pg_sock, "show stat");
    let (h1, h2) = (theirs.lines().next().unwrap(), ours.lines().next().unwrap());
    let (c1, c2): (Vec<&str>, Vec<&str>) = (h1.split(',').collect(), h2.split(',').collect());
    assert_eq!(c1.len(), c2.len(), "column count");
    for (i, (a, b)) in c1.iter().zip(&c2).enumerate() {
        assert_eq!(a, b, "column {i}");
    }
    let (_, hp_csv) = http_get(hp_stats, "/stats;csv", None).await;
    let (_, pg_csv) = http_get(pg_stats, "/stats;csv", None).await;
    assert_eq!(hp_csv.lines().next(), pg_csv.lines().next(), ";csv headers");
    // Same rows, in the same order, with the same identity columns.
    let ids =
        |csv: &str| csv.lines().skip(1).filter(|l| !l.is_empty()).map(|l| l.split(',').take(2).collect::<Vec<_>>().join(",")).collect::<Vec<_>>();
    assert_eq!(ids(&theirs), ids(&ours));
}
