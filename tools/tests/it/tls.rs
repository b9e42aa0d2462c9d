//! TLS that pglb terminates (`bind ... ssl crt FILE`) and begins (`server
//! ... ssl`), against the lab's PostgreSQL TLS (its own CA; the servers'
//! certificate is `DIR/tls/server.pem`): issue #17. Once pglb reads the
//! session, what it does for plaintext sessions works for these too:
//! cancels reach their server, startup parameters route, checks verify.

use crate::common::*;
use openssl::ssl::{SslConnector, SslMethod, SslVerifyMode};
use std::path::Path;
use std::process::Command;
use std::sync::OnceLock;
use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const SSL_REQUEST: [u8; 8] = [0, 0, 0, 8, 0x04, 0xd2, 0x16, 0x2f];
const GSSENC_REQUEST: [u8; 8] = [0, 0, 0, 8, 0x04, 0xd2, 0x16, 0x30];

fn config(bind: &str, body: &str) -> String {
    format!(
        "defaults\n    mode tcp\n    timeout connect 2s\n    timeout client 30s\n    timeout tunnel 1h\n\
         listen pg\n    bind 127.0.0.1:0 {bind}\n    balance roundrobin\n{body}"
    )
}

/// `server` lines for the first `n` nodes.
fn servers(lab: &pglb_tools::lab::Lab, n: usize, options: &str) -> String {
    lab.nodes()[..n].iter().map(|node| format!("    server {} 127.0.0.1:{} {options}\n", node.name, node.port)).collect()
}

/// A tokio-postgres client over TLS through `port`; `ca` verifies pglb's
/// certificate (else none is checked), `alpn` offers `postgresql`.
async fn tls_connect(port: u16, extra: &str, ca: Option<&Path>, alpn: bool) -> Result<tokio_postgres::Client, tokio_postgres::Error> {
    let mut b = SslConnector::builder(SslMethod::tls()).unwrap();
    match ca {
        Some(ca) => b.set_ca_file(ca).unwrap(),
        None => b.set_verify(SslVerifyMode::NONE),
    }
    if alpn {
        postgres_openssl::set_postgresql_alpn(&mut b).unwrap();
    }
    let dsn = format!("host=127.0.0.1 port={port} user=postgres password=postgres dbname=appdb connect_timeout=10 sslmode=require {extra}");
    let (client, conn) = tokio_postgres::connect(&dsn, postgres_openssl::MakeTlsConnector::new(b.build())).await?;
    tokio::spawn(conn);
    Ok(client)
}

/// A raw TLS connection through pglb's SSLRequest (no certificate check).
async fn raw_tls(port: u16) -> tokio_openssl::SslStream<tokio::net::TcpStream> {
    let mut tcp = tokio::net::TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    tcp.write_all(&SSL_REQUEST).await.unwrap();
    let mut answer = [0u8; 1];
    tcp.read_exact(&mut answer).await.unwrap();
    assert_eq!(answer[0], b'S');
    let mut b = SslConnector::builder(SslMethod::tls()).unwrap();
    b.set_verify(SslVerifyMode::NONE);
    let ssl = b.build().configure().unwrap().verify_hostname(false).into_ssl("localhost").unwrap();
    let mut tls = tokio_openssl::SslStream::new(ssl, tcp).unwrap();
    std::pin::Pin::new(&mut tls).connect().await.unwrap();
    tls
}

/// The common name of the certificate pglb presents after an SSLRequest.
async fn presented_cn(port: u16) -> String {
    let tls = raw_tls(port).await;
    let cert = tls.ssl().peer_certificate().unwrap();
    cert.subject_name().entries_by_nid(openssl::nid::Nid::COMMONNAME).next().unwrap().data().to_string().unwrap()
}

fn cancels_bin() -> &'static str {
    static BIN: OnceLock<String> = OnceLock::new();
    BIN.get_or_init(|| {
        let out = Command::new("bash")
            .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/go/build.sh"))
            .arg(concat!(env!("CARGO_TARGET_TMPDIR"), "/cancels"))
            .arg("cancels")
            .output()
            .expect("run tests/go/build.sh");
        assert!(out.status.success(), "building cancels: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    })
}

/// The one line of JSON a client program printed.
fn json_line(out: &std::process::Output) -> serde_json::Value {
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stderr)))
}

/// Checks a driver's report of cancelled queries: every one was honoured
/// (ended with 57014's message well before the query's 10 s), and the runs
/// used both servers.
fn every_cancel_honoured(driver: &str, report: &serde_json::Value) {
    let runs = report["runs"].as_array().unwrap_or_else(|| panic!("{driver}: {report}"));
    let mut ports = std::collections::BTreeSet::new();
    for r in runs {
        let (ms, error) = (r["ms"].as_i64().unwrap(), r["error"].as_str().unwrap());
        assert!(error.contains("canceling statement due to user request") && ms < 5000, "{driver}: a cancel was not honoured: {r}");
        ports.insert(r["port"].as_i64().unwrap());
    }
    assert_eq!(ports.len(), 2, "{driver}: the sessions were on both servers: {report}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn encrypted_cancels_of_lib_pq_and_psycopg_reach_their_server() {
    let lab = shared_lab().await;
    let cfg = config(&format!("ssl crt {}", lab.tls_file("server.pem").display()), &servers(lab, 2, ""));
    let pglb = start(&cfg).await;
    let port = pglb.addr("pg").unwrap().port();
    let cancel = pglb.runtime().cancel.clone();

    // lib/pq sends its CancelRequest over TLS when sslmode asks for TLS.
    let dsn = format!("postgres://postgres:postgres@127.0.0.1:{port}/appdb?sslmode=require&connect_timeout=10");
    let out = tokio::process::Command::new(cancels_bin()).args(["-dsn", &dsn, "-n", "6"]).output().await.unwrap();
    let report = json_line(&out);
    every_cancel_honoured("lib/pq", &report);
    assert_eq!(cancel.routed.load(Relaxed), 6, "each cancel went to its session's server");
    assert_eq!(cancel.broadcast.load(Relaxed), 0);

    // psycopg's cancel_safe() (libpq 17+: PQcancelCreate, encrypted).
    let dsn = format!("host=127.0.0.1 port={port} user=postgres password=postgres dbname=appdb sslmode=require connect_timeout=10");
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/clients/cancel_safe.py");
    let out = tokio::process::Command::new("python3").args([script, &dsn, "6"]).output().await.unwrap();
    let report = json_line(&out);
    assert!(report["libpq"].as_i64().unwrap() >= 170000, "psycopg's libpq must encrypt its cancels (17 or later): {report}");
    every_cancel_honoured("psycopg", &report);
    assert_eq!(cancel.routed.load(Relaxed), 12);
    assert_eq!(cancel.broadcast.load(Relaxed), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn psql_verify_full_through_pglb_and_tls_to_the_servers() {
    let lab = shared_lab().await;
    let ca = lab.tls_file("ca.crt");
    let server_tls = format!("ssl verify required ca-file {} sni str(localhost)", ca.display());
    let cfg = config(&format!("ssl crt {}", lab.tls_file("server.pem").display()), &servers(lab, 3, &server_tls));
    let pglb = start(&cfg).await;
    let port = pglb.addr("pg").unwrap().port();
    let verify_full = |sql: &str| {
        let mut c = psql_cmd(port, "verify-full", sql);
        c.env("PGSSLROOTCERT", &ca);
        c
    };
    // psql checks pglb's certificate against the lab's CA and the address;
    // the server sees pglb's own TLS connection.
    let out = verify_full("select ssl, version from pg_stat_ssl where pid = pg_backend_pid()").output().unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "t|TLSv1.3", "{}", String::from_utf8_lossy(&out.stderr));
    // SCRAM with channel binding, end to end: pglb presents the servers'
    // own certificate, so tls-server-end-point matches on both sides.
    let mut c = verify_full("select 1");
    c.env("PGCHANNELBINDING", "require");
    let out = c.output().unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "1", "{}", String::from_utf8_lossy(&out.stderr));

    // Ctrl-C: psql 15 sends a plaintext CancelRequest, which pglb routes to
    // the one server that runs the query (it read the key inside TLS).
    let before = (pglb.runtime().cancel.routed.load(Relaxed), pglb.runtime().cancel.broadcast.load(Relaxed));
    let (out, _) = crate::proxy::ctrl_c(verify_full("select pg_sleep(30) /* tls-ctrl-c */"), lab, "tls-ctrl-c").await;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("canceling statement due to user request"), "{stderr}");
    assert_eq!(pglb.runtime().cancel.routed.load(Relaxed), before.0 + 1, "routed");
    assert_eq!(pglb.runtime().cancel.broadcast.load(Relaxed), before.1, "not broadcast");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn direct_tls_with_alpn_connects() {
    let lab = shared_lab().await;
    let cfg = config(&format!("ssl crt {}", lab.tls_file("server.pem").display()), &servers(lab, 1, ""));
    let pglb = start(&cfg).await;
    let port = pglb.addr("pg").unwrap().port();
    // PostgreSQL 17's direct TLS: a ClientHello first, ALPN `postgresql`.
    let c = tls_connect(port, "sslnegotiation=direct", Some(&lab.tls_file("ca.crt")), true).await.expect("direct TLS through pglb");
    let one: i32 = c.query_one("select 1", &[]).await.unwrap().get(0);
    assert_eq!(one, 1);
    // The same through an SSLRequest, with and without ALPN.
    tls_connect(port, "", None, true).await.expect("SSLRequest with ALPN");
    tls_connect(port, "", None, false).await.expect("SSLRequest without ALPN");
    // Direct TLS without ALPN is refused, as PostgreSQL 17 refuses it.
    assert!(tls_connect(port, "sslnegotiation=direct", None, false).await.is_err(), "direct TLS without ALPN must be refused");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tls_port_refuses_plaintext_sessions_but_takes_plaintext_cancels() {
    let lab = shared_lab().await;
    let cfg = config(&format!("ssl crt {}", lab.tls_file("server.pem").display()), &servers(lab, 1, ""));
    let pglb = start(&cfg).await;
    let port = pglb.addr("pg").unwrap().port();
    let out = psql(port, "disable", "select 1");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("FATAL:  pglb: this port accepts only TLS connections (bind ... ssl)"), "{stderr}");
    // sslmode=prefer negotiates TLS.
    let out = psql(port, "prefer", "select ssl from pg_stat_ssl where pid = pg_backend_pid()");
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "f", "pglb to the server is plaintext without `ssl` on the server line");
    // GSSENCRequest: 'N', then an SSLRequest: 'S'.
    let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    s.write_all(&GSSENC_REQUEST).await.unwrap();
    let mut a = [0u8; 1];
    s.read_exact(&mut a).await.unwrap();
    assert_eq!(a[0], b'N');
    s.write_all(&SSL_REQUEST).await.unwrap();
    s.read_exact(&mut a).await.unwrap();
    assert_eq!(a[0], b'S');
    // Bytes behind an SSLRequest, before its answer (CVE-2021-23214): closed.
    let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    s.write_all(&[&SSL_REQUEST[..], b"injected"].concat()).await.unwrap();
    let mut rest = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut rest)).await.expect("closed");
    assert!(rest.is_empty(), "{rest:?}");
    // An encryption request inside the TLS it asked for: closed.
    let mut tls = raw_tls(port).await;
    tls.write_all(&SSL_REQUEST).await.unwrap();
    let mut buf = [0u8; 16];
    let read = tokio::time::timeout(Duration::from_secs(5), tls.read(&mut buf)).await.expect("closed, not left waiting");
    assert!(!matches!(read, Ok(n) if n > 0), "{read:?}");
    // A plaintext CancelRequest is delivered (psql 15's Ctrl-C on TLS).
    let before = pglb.runtime().cancel.broadcast.load(Relaxed);
    let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    s.write_all(&[0, 0, 0, 16, 0x04, 0xd2, 0x16, 0x2e, 0, 0, 0, 1, 0, 0, 0, 2]).await.unwrap();
    let _ = s.read_to_end(&mut rest).await;
    poll("the cancel delivered", Duration::from_secs(5), || async { (pglb.runtime().cancel.broadcast.load(Relaxed) > before).then_some(()) }).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn startup_parameters_inside_tls_choose_the_backend() {
    let lab = shared_lab().await;
    let pem = lab.tls_file("server.pem");
    let cfg = format!(
        "defaults\n    mode tcp\n    timeout connect 2s\n    timeout tunnel 1h\n\
         frontend pg\n    bind 127.0.0.1:0 ssl crt {}\n\
         \x20   acl ro_app pgsql.application_name -m end -ro\n\
         \x20   acl ro_up nbsrv(ro) gt 0\n\
         \x20   use_backend ro if ro_app ro_up\n\
         \x20   use_backend ro if {{ pgsql.user report }}\n\
         \x20   default_backend rw\n\
         backend rw\n    server primary 127.0.0.1:{}\n\
         backend ro\n{}",
        pem.display(),
        lab.primary().port,
        lab.replicas().map(|n| format!("    server {} 127.0.0.1:{}\n", n.name, n.port)).collect::<String>()
    );
    let pglb = start(&cfg).await;
    let port = pglb.addr("pg").unwrap().port();
    for (params, replica) in [("application_name=billing-ro", true), ("application_name=billing", false), ("", false)] {
        let c = tls_connect(port, params, None, false).await.unwrap_or_else(|e| panic!("{params}: {e}"));
        let row = c.query_one("select pg_is_in_recovery(), ssl from pg_stat_ssl where pid = pg_backend_pid()", &[]).await.unwrap();
        assert_eq!(row.get::<_, bool>(0), replica, "{params}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn certificates_reload_without_dropping_sessions() {
    let lab = shared_lab().await;
    let dir = tempfile::tempdir().unwrap();
    let crt = dir.path().join("pglb.pem");
    let first = pglb_tools::lab::certs::issue(lab.dir(), "reload-a", "pglb-a", &["localhost", "127.0.0.1"]).unwrap();
    let second = pglb_tools::lab::certs::issue(lab.dir(), "reload-b", "pglb-b", &["localhost", "127.0.0.1"]).unwrap();
    std::fs::copy(&first, &crt).unwrap();
    let path = dir.path().join("pglb.cfg");
    let text = config(&format!("ssl crt {}", crt.display()), &servers(lab, 1, ""));
    std::fs::write(&path, &text).unwrap();
    init_logs();
    let loaded = pglb::config::parse_str(&path, &text).unwrap();
    let pglb = pglb::run::start(loaded.config).await.unwrap();
    let port = pglb.addr("pg").unwrap().port();
    assert_eq!(presented_cn(port).await, "pglb-a");
    let held = tls_connect(port, "", Some(&lab.tls_file("ca.crt")), false).await.unwrap();

    // A renewed certificate at the same path: the reload reads it.
    std::fs::copy(&second, &crt).unwrap();
    pglb.reload().await.expect("reload with the renewed certificate");
    assert_eq!(presented_cn(port).await, "pglb-b");
    let one: i32 = held.query_one("select 1", &[]).await.expect("the session from before the reload").get(0);
    assert_eq!(one, 1);

    // A broken file: the reload fails, the last good certificate stays.
    std::fs::write(&crt, "not a certificate\n").unwrap();
    let Err(err) = pglb.reload().await else { panic!("a broken certificate must fail the reload") };
    assert!(err.to_string().contains("no PEM certificate"), "{err}");
    assert_eq!(presented_cn(port).await, "pglb-b");
    held.query_one("select 1", &[]).await.expect("still served");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_certificates_are_checked_by_sessions_and_checks() {
    let lab = shared_lab().await;
    let ca = lab.tls_file("ca.crt");
    let node = lab.primary();
    let cfg = format!(
        "global\n    setenv CHECK_PASSWORD postgres\n\
         defaults\n    mode tcp\n    timeout connect 2s\n    timeout tunnel 1h\n    retries 1\n\
         listen good\n    bind 127.0.0.1:0\n    option pgsql-check user postgres password-env CHECK_PASSWORD\n\
         \x20   server s 127.0.0.1:{port} check inter 200ms ssl verify required ca-file {ca} verifyhost localhost\n\
         listen wrong_name\n    bind 127.0.0.1:0\n    option pgsql-check user postgres password-env CHECK_PASSWORD\n\
         \x20   server s 127.0.0.1:{port} check inter 200ms fall 1 ssl verify required ca-file {ca} verifyhost db.example\n\
         listen no_check\n    bind 127.0.0.1:0\n\
         \x20   server s 127.0.0.1:{port} ssl verify required ca-file {ca} verifyhost db.example\n",
        port = node.port,
        ca = ca.display()
    );
    let pglb = start(&cfg).await;
    let rt = pglb.runtime();
    let (good, wrong) = (rt.backend("good").unwrap().clone(), rt.backend("wrong_name").unwrap().clone());
    poll("the TLS check passes", Duration::from_secs(10), || async { (good.servers[0].health() == pglb::state::Health::Up).then_some(()) }).await;
    let out = psql(pglb.addr("good").unwrap().port(), "disable", "select ssl from pg_stat_ssl where pid = pg_backend_pid()");
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "t", "{}", String::from_utf8_lossy(&out.stderr));
    poll("the check fails on the name", Duration::from_secs(10), || async {
        let desc = wrong.servers[0].check.lock().unwrap().desc.clone();
        (wrong.servers[0].health() == pglb::state::Health::Down && desc.contains("certificate verify failed")).then_some(())
    })
    .await;
    // A session sees the verdict in pglb's FATAL.
    let started = Instant::now();
    let out = psql(pglb.addr("no_check").unwrap().port(), "disable", "select 1");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("certificate verify failed"), "{stderr}");
    assert!(started.elapsed() < Duration::from_secs(10));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn channel_binding_fails_clearly_when_pglb_shows_another_certificate() {
    let lab = shared_lab().await;
    let own = pglb_tools::lab::certs::issue(lab.dir(), "pglb", "pglb", &["localhost", "127.0.0.1"]).unwrap();
    let ca = lab.tls_file("ca.crt");
    let server_tls = format!("ssl verify required ca-file {}", ca.display());
    let cfg = format!(
        "defaults\n    mode tcp\n    timeout connect 2s\n    timeout tunnel 1h\n\
         listen plain_servers\n    bind 127.0.0.1:0 ssl crt {own}\n    server s 127.0.0.1:{port}\n\
         listen tls_servers\n    bind 127.0.0.1:0 ssl crt {own}\n    server s 127.0.0.1:{port} {server_tls}\n",
        own = own.display(),
        port = lab.primary().port
    );
    let pglb = start(&cfg).await;
    let run = |frontend: &str, channel_binding: &str| {
        let mut c = psql_cmd(pglb.addr(frontend).unwrap().port(), "require", "select 1");
        c.env("PGCHANNELBINDING", channel_binding);
        let started = Instant::now();
        let out = c.output().unwrap();
        assert!(started.elapsed() < Duration::from_secs(5), "no hang");
        (String::from_utf8_lossy(&out.stdout).trim().to_string(), String::from_utf8_lossy(&out.stderr).to_string())
    };
    // Plaintext to the server: PostgreSQL offers no channel binding; libpq
    // says so when it requires it, and connects by default.
    let (_, err) = run("plain_servers", "require");
    assert!(err.contains("channel binding"), "{err}");
    assert_eq!(run("plain_servers", "prefer").0, "1");
    // TLS to the server with another certificate than pglb's: the server
    // refuses the binding (what channel binding is for); without it, fine.
    let (_, err) = run("tls_servers", "prefer");
    assert!(err.contains("SCRAM channel binding check failed"), "{err}");
    assert_eq!(run("tls_servers", "disable").0, "1");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn terminated_sessions_drain_at_their_transaction_end() {
    let lab = shared_lab().await;
    let cfg = format!(
        "global\n    hard-stop-after 30s\n{}",
        config(&format!("ssl crt {}", lab.tls_file("server.pem").display()), &servers(lab, 1, "ssl verify none"))
    );
    let pglb = start(&cfg).await;
    let port = pglb.addr("pg").unwrap().port();
    let admin = connect(lab.primary().port, "appdb").await.unwrap();
    admin.batch_execute("create table if not exists tls_drained(x int)").await.unwrap();
    let idle = tls_connect(port, "", None, false).await.unwrap();
    let in_tx = tls_connect(port, "", None, false).await.unwrap();
    in_tx.batch_execute("begin; insert into tls_drained values (1)").await.unwrap();
    let stopped = tokio::spawn(async move { pglb.shutdown(std::future::pending()).await });
    // pglb reads the terminated session's messages: the idle one is closed
    // at once, the one inside a transaction only after its commit.
    poll("the idle TLS session closed", Duration::from_secs(2), || async { idle.is_closed().then_some(()) }).await;
    assert!(!in_tx.is_closed(), "a TLS session inside a transaction is not cut");
    in_tx.batch_execute("insert into tls_drained values (2); commit").await.expect("the transaction finishes");
    poll("the busy TLS session closed after its commit", Duration::from_secs(2), || async { in_tx.is_closed().then_some(()) }).await;
    tokio::time::timeout(Duration::from_secs(5), stopped).await.expect("pglb stops once the sessions are gone").unwrap();
    let n: i64 = admin.query_one("select count(*) from tls_drained", &[]).await.unwrap().get(0);
    assert_eq!(n, 2, "the transaction committed whole");
    admin.batch_execute("drop table tls_drained").await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn argo_retries_a_refusal_inside_terminated_tls() {
    let lab = shared_lab().await;
    let cfg = format!(
        "defaults\n    mode tcp\n    timeout connect 1s\n    retries 0\n\
         listen pg\n    bind 127.0.0.1:0 ssl crt {}\n    server gone 127.0.0.1:{}\n",
        lab.tls_file("server.pem").display(),
        dead_port()
    );
    let pglb = start(&cfg).await;
    // lib/pq with sslmode=require reads pglb's FATAL inside TLS, worded so
    // that Argo's reconnect rule retries it.
    let seen = crate::argo::argo_connects(pglb.addr("pg").unwrap().port(), "require").await;
    assert!(!seen.ok);
    assert!(seen.error.contains("pglb: could not connect to server pg/gone"), "{}", seen.error);
    assert!(seen.retryable, "{}", seen.error);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn haproxys_tls_globals_set_paths_and_the_verify_default() {
    // (`crt server.crt` finds its key in server.key, as HAProxy does.)
    let lab = shared_lab().await;
    let tls_dir = lab.tls_file("");
    let cfg = format!(
        "global\n    ca-base {dir}\n    crt-base {dir}\n    ssl-server-verify none\n\
         defaults\n    mode tcp\n    timeout connect 2s\n\
         listen pg\n    bind 127.0.0.1:0 ssl crt server.pem\n    server s 127.0.0.1:{port} ssl\n\
         listen verified\n    bind 127.0.0.1:0 ssl crt server.crt\n    server s 127.0.0.1:{port} ssl verify required ca-file ca.crt verifyhost localhost\n",
        dir = tls_dir.display(),
        port = lab.primary().port
    );
    let pglb = start(&cfg).await;
    for frontend in ["pg", "verified"] {
        let out = psql(pglb.addr(frontend).unwrap().port(), "require", "select ssl from pg_stat_ssl where pid = pg_backend_pid()");
        assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "t", "{frontend}: {}", String::from_utf8_lossy(&out.stderr));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_queued_tls_client_that_leaves_frees_its_place() {
    let lab = shared_lab().await;
    let cfg = format!(
        "defaults\n    mode tcp\n    timeout connect 2s\n    timeout queue 30s\n    timeout tunnel 1h\n\
         listen pg\n    bind 127.0.0.1:0 ssl crt {}\n    server s 127.0.0.1:{} maxconn 1\n",
        lab.tls_file("server.pem").display(),
        lab.primary().port
    );
    let pglb = start(&cfg).await;
    let port = pglb.addr("pg").unwrap().port();
    let _holder = tls_connect(port, "", None, false).await.unwrap();
    let be = pglb.runtime().backend("pg").unwrap().clone();
    // A second client sends its startup inside TLS, waits in the queue,
    // then leaves as libpq does: close_notify, then FIN.
    let mut tls = raw_tls(port).await;
    let startup = pglb::pg::startup_message(&[("user", "postgres"), ("database", "appdb")]);
    tls.write_all(&startup).await.unwrap();
    poll("the second client queued", Duration::from_secs(3), || async { (be.counters.queue_cur.load(Relaxed) == 1).then_some(()) }).await;
    tls.shutdown().await.unwrap();
    // What it sent last is ciphertext (its close_notify), but its close is
    // seen: its place is freed long before `timeout queue`.
    poll("the queue empty again", Duration::from_secs(3), || async { (be.counters.queue_cur.load(Relaxed) == 0).then_some(()) }).await;
}
