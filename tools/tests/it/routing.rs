//! One port, several backends: `use_backend B if ...` on the
//! StartupMessage's parameters (issue #17's routing, for plaintext
//! sessions), each row of the table one client.

use crate::common::*;
use crate::conformance::fake_server;
use std::process::Command;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// The read-write backend's server answers AuthenticationOk, the
/// read-only one a cleartext-password request: the client sees which.
const RW: &[u8] = b"R\x00\x00\x00\x08\x00\x00\x00\x00";
const RO: &[u8] = b"R\x00\x00\x00\x08\x00\x00\x00\x03";

async fn answer(port: u16, packet: &[u8]) -> Vec<u8> {
    let mut c = tokio::net::TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    c.write_all(packet).await.unwrap();
    let mut a = vec![0u8; 9];
    match tokio::time::timeout(Duration::from_secs(5), c.read_exact(&mut a)).await {
        Ok(Ok(_)) => a,
        _ => Vec::new(),
    }
}

#[tokio::test]
async fn startup_parameters_choose_the_backend() {
    let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let rw = fake_server(RW, seen.clone()).await;
    let ro = fake_server(RO, seen).await;
    let port = dead_port();
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("api.sock");
    let cfg = format!(
        "global\n    stats socket {}\ndefaults\n    mode tcp\n    timeout client 5s\n    timeout server 5s\n    timeout connect 1s\n\
         frontend pg\n    bind 127.0.0.1:{port}\n\
         \x20   acl ro_user pgsql.user app_ro\n\
         \x20   acl ro_app pgsql.application_name -m end -ro\n\
         \x20   acl analytics pgsql.database analytics\n\
         \x20   acl ro_opt pgsql.param(options) -m sub default_transaction_read_only=on\n\
         \x20   acl ro_up nbsrv(ro) gt 0\n\
         \x20   use_backend ro if ro_user ro_up\n\
         \x20   use_backend ro if ro_app ro_up\n\
         \x20   use_backend ro if analytics\n\
         \x20   use_backend ro if ro_opt\n\
         \x20   use_backend gone if {{ pgsql.user fallback }} {{ nbsrv(gone) gt 0 }}\n\
         \x20   use_backend ro if {{ pgsql.user fallback }}\n\
         \x20   default_backend rw\n\
         backend rw\n    server s 127.0.0.1:{rw}\nbackend ro\n    server s 127.0.0.1:{ro}\n\
         backend gone\n    server s 127.0.0.1:{} check inter 100ms fall 1\n",
        sock.display(),
        dead_port()
    );
    let (_dir, path) = write_config(&cfg);
    let _pglb = KillOnDrop(Command::new(pglb_bin()).args(["run", "-f"]).arg(&path).stderr(std::process::Stdio::null()).spawn().unwrap());
    poll("pglb listening", Duration::from_secs(10), || async { tokio::net::TcpStream::connect(("127.0.0.1", port)).await.ok().map(drop) }).await;
    // Until its first check `nbsrv(gone)` counts the dead server; the
    // fallback row needs it DOWN (srv_op_state 0).
    poll("the dead server marked DOWN", Duration::from_secs(5), || async {
        use std::io::{Read, Write};
        let mut s = std::os::unix::net::UnixStream::connect(&sock).ok()?;
        s.write_all(b"show servers state gone\n").ok()?;
        let mut out = String::new();
        s.read_to_string(&mut out).ok()?;
        out.lines().any(|l| l.split(' ').nth(3) == Some("s") && l.split(' ').nth(5) == Some("0")).then_some(())
    })
    .await;
    let startup = |params: &[(&str, &str)]| pglb::pg::startup_message(params);
    let table: Vec<(&str, Vec<u8>, &[u8])> = vec![
        ("user app_ro", startup(&[("user", "app_ro")]), RO),
        ("application_name ending in -ro", startup(&[("user", "app"), ("application_name", "report-ro")]), RO),
        ("database analytics", startup(&[("user", "app"), ("database", "analytics")]), RO),
        ("options -c default_transaction_read_only=on", startup(&[("user", "app"), ("options", "-c default_transaction_read_only=on")]), RO),
        ("anything else", startup(&[("user", "app"), ("application_name", "web")]), RW),
        ("a backend without usable server is passed over", startup(&[("user", "fallback")]), RO),
        // A client that asks for TLS first: pglb cannot read what it sends
        // next, so default_backend has it.
        ("SSLRequest", b"\x00\x00\x00\x08\x04\xd2\x16\x2f".to_vec(), RW),
    ];
    for (what, packet, want) in table {
        assert_eq!(answer(port, &packet).await, want, "{what}");
    }
}
