//! HAProxy conformance (issue #16): what HAProxy's own regression tests and
//! scripts expect of the program they start, compared with Debian's
//! HAProxy 2.6 side by side where the machine has it.

use crate::common::*;
use std::path::Path;
use std::process::{Command, Output};
use std::time::Duration;

fn run(program: &str, args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(program);
    cmd.args(args);
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().unwrap_or_else(|e| panic!("{program}: {e}"))
}

fn has_haproxy() -> bool {
    Command::new("haproxy").arg("-v").output().is_ok_and(|o| o.status.success())
}

/// Runs `program -c ARGS -f FILE` and returns (exit code, stdout).
fn check(program: &str, extra: &[&str], file: &Path, env: &[(&str, &str)]) -> (Option<i32>, String) {
    let mut args: Vec<&str> = extra.to_vec();
    args.extend(["-c", "-f", file.to_str().unwrap()]);
    let out = run(program, &args, env);
    (out.status.code(), String::from_utf8_lossy(&out.stdout).into_owned())
}

#[test]
fn haproxys_command_line_is_understood() {
    // -vv: the lines HAProxy's run-regtests.sh reads.
    let out = run(pglb_bin(), &["-vv"], &[]);
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    let first = text.lines().next().unwrap();
    assert!(first.starts_with("HAProxy version ") && first.contains("pglb") && !first.contains(" : ") && !first.contains(" = "), "{first}");
    assert!(text.lines().any(|l| l.trim_start().starts_with("TARGET") && l.ends_with("= linux-glibc")));
    assert!(text.lines().any(|l| l.starts_with("Feature list : ")));

    // -cc: the same exit codes as HAProxy (0 true, 1 false, 2 error).
    let table: &[(&str, i32)] = &[
        ("version_atleast(2.4)", 0),
        ("version_atleast(2.5-dev0)", 0),
        ("version_before(3.0)", 0),
        ("version_atleast(3.0)", 1),
        (r#"streq("foo bar",'foo bar')"#, 0),
        ("streq(a,b)", 1),
        ("defined(PGLB_CONF_SET) && streq(\"$PGLB_CONF_SET\",\"1\")", 0),
        ("defined(PGLB_CONF_NOT_SET)", 1),
        ("feature(THREAD)", 0),
        ("feature(NOPE)", 1),
        ("1 && 0", 1),
        ("(1 && !0) || 0", 0),
        ("''", 1),
        ("foo(1)", 2),
        ("version_atleast(2.4", 2),
    ];
    let env = [("PGLB_CONF_SET", "1")];
    for (expr, want) in table {
        assert_eq!(run(pglb_bin(), &["-cc", expr], &env).status.code(), Some(*want), "pglb -cc {expr}");
        if has_haproxy() {
            assert_eq!(run("haproxy", &["-cc", expr], &env).status.code(), Some(*want), "haproxy -cc {expr}");
        }
    }

    // -c: HAProxy's lines and exit codes, -q and -dW.
    let dir = tempfile::tempdir().unwrap();
    let write = |name: &str, text: &str| {
        let p = dir.path().join(name);
        std::fs::write(&p, text).unwrap();
        p
    };
    let base = "defaults\n    mode tcp\n    timeout connect 5s\n    timeout client 1h\n    timeout server 1h\n";
    let valid = write("valid.cfg", &format!("{base}listen l\n    bind 127.0.0.1:15432\n    server s 127.0.0.1:1\n"));
    let invalid = write("invalid.cfg", &format!("{base}listen l\n    bind 127.0.0.1:15432\n    frobnicate\n"));
    let unbound = write("unbound.cfg", &format!("{base}backend b\n    server s 127.0.0.1:1\n"));
    let warned = write("warned.cfg", &format!("{base}listen l\n    bind 127.0.0.1:15432\n    server s 127.0.0.1:1\n.warning \"careful\"\n"));
    let cases: &[(&[&str], &Path, i32, &str)] = &[
        (&[], &valid, 0, "Configuration file is valid\n"),
        (&["-q"], &valid, 0, ""),
        (&[], &invalid, 1, ""),
        (&[], &unbound, 2, "Configuration file has no error but will not start (no listener) => exit(2).\n"),
        (&[], &warned, 0, "Warnings were found.\nConfiguration file is valid\n"),
        (&["-dW"], &warned, 1, ""),
        (&["-d", "-dM", "-db"], &valid, 0, "Configuration file is valid\n"),
    ];
    for (extra, file, code, stdout) in cases {
        let (got, out) = check(pglb_bin(), extra, file, &[]);
        assert_eq!((got, out.as_str()), (Some(*code), *stdout), "pglb {extra:?} -c {}", file.display());
        if has_haproxy() {
            let (got, out) = check("haproxy", extra, file, &[]);
            assert_eq!((got, out.as_str()), (Some(*code), *stdout), "haproxy {extra:?} -c {}", file.display());
        }
    }
    // pglb's own advice (here: client/server timeouts that cut idle
    // PostgreSQL sessions) is not a HAProxy warning: -dW still passes.
    let advised = write(
        "advised.cfg",
        "defaults\n    mode tcp\n    timeout connect 5s\n    timeout client 30s\n    timeout server 30s\nlisten l\n    bind 127.0.0.1:15432\n    server s 127.0.0.1:1\n",
    );
    let (got, _) = check(pglb_bin(), &["-dW"], &advised, &[]);
    assert_eq!(got, Some(0));

    // What pglb cannot do is refused with the reason, exit 1.
    for opt in ["-W", "-D", "-sf"] {
        let out = run(pglb_bin(), &[opt, "-f", valid.to_str().unwrap()], &[]);
        assert_eq!(out.status.code(), Some(1), "{opt}");
        assert!(String::from_utf8_lossy(&out.stderr).contains(opt), "{opt}: {}", String::from_utf8_lossy(&out.stderr));
    }
    let out = run(pglb_bin(), &["-Z", "-f", valid.to_str().unwrap()], &[]);
    assert_eq!(out.status.code(), Some(1));
}

#[tokio::test]
async fn haproxy_style_start_with_environment_in_addresses_and_conditions() {
    // What vtest writes: -d, "${NAME-default}", unquoted ${VAR} in a server
    // address, an .if block; -p writes the pidfile.
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("admin.sock");
    let pidfile = dir.path().join("pglb.pid");
    let port = dead_port();
    let text = format!(
        "global\n\
         .if feature(THREAD)\n    thread-groups 1\n.endif\n\
         .if version_atleast(9.0)\n    frobnicate\n.else\n    stats socket {} level admin\n.endif\n\
         defaults\n    mode tcp\n    timeout connect \"${{PGLB_CONF_UNSET-5s}}\"\n    timeout client 1h\n    timeout server 1h\n\
         listen l\n    bind \"127.0.0.1:${{PGLB_CONF_FE_PORT}}\"\n    server s1 ${{PGLB_CONF_HOST}}:$PGLB_CONF_PORT\n",
        sock.display()
    );
    let cfg = dir.path().join("pglb.cfg");
    std::fs::write(&cfg, &text).unwrap();
    let env = [("PGLB_CONF_FE_PORT", port.to_string()), ("PGLB_CONF_HOST", "127.0.0.2".to_string()), ("PGLB_CONF_PORT", "6543".to_string())];
    let mut cmd = Command::new(pglb_bin());
    cmd.args(["-d", "-dM", "-db", "-p"]).arg(&pidfile).arg("-f").arg(&cfg).stdout(std::process::Stdio::null()).stderr(std::process::Stdio::null());
    for (k, v) in &env {
        cmd.env(k, v);
    }
    let child = cmd.spawn().unwrap();
    let _guard = KillOnDrop(child);
    poll("the runtime API", Duration::from_secs(10), || async { sock.exists().then_some(()) }).await;
    let state = String::from_utf8(
        Command::new("sh").arg("-c").arg(format!("echo 'show servers state' | socat stdio {}", sock.display())).output().unwrap().stdout,
    )
    .unwrap();
    let row = state.lines().find(|l| l.contains(" s1 ")).unwrap_or_else(|| panic!("{state}"));
    assert!(row.contains(" 127.0.0.2 ") && row.contains(" 6543 "), "the address came from the environment: {row}");
    assert!(std::net::TcpStream::connect(("127.0.0.1", port)).is_ok(), "the bind came from the environment");
    let pid: u32 = std::fs::read_to_string(&pidfile).unwrap().trim().parse().unwrap();
    assert_eq!(pid, _guard.0.id(), "-p wrote the pidfile");

    if has_haproxy() {
        // HAProxy reads the same file (the .if blocks included) as valid.
        let mut cmd = Command::new("haproxy");
        cmd.arg("-c").arg("-f").arg(&cfg);
        for (k, v) in &env {
            cmd.env(k, v);
        }
        let out = cmd.output().unwrap();
        assert!(out.status.success(), "haproxy -c: {}", String::from_utf8_lossy(&out.stderr));
    }
}

/// A fake server for health checks: records the first bytes of each
/// connection and answers `reply`.
async fn fake_server(reply: &'static [u8], seen: std::sync::Arc<std::sync::Mutex<Vec<Vec<u8>>>>) -> u16 {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = l.local_addr().unwrap().port();
    tokio::spawn(async move {
        loop {
            let Ok((mut s, _)) = l.accept().await else { return };
            let seen = seen.clone();
            tokio::spawn(async move {
                let mut buf = vec![0u8; 256];
                let mut got = Vec::new();
                while got.len() < 23 {
                    match tokio::time::timeout(Duration::from_secs(2), s.read(&mut buf)).await {
                        Ok(Ok(n)) if n > 0 => got.extend_from_slice(&buf[..n]),
                        _ => break,
                    }
                }
                seen.lock().unwrap().push(got);
                let _ = s.write_all(reply).await;
                let _ = s.read(&mut buf).await;
            });
        }
    });
    port
}

/// The health-check lines of HAProxy's pgsql-check regression test
/// (reg-tests/checks/pgsql-check.vtc): the same four answers, the same
/// StartupMessage, the same words, from pglb and from HAProxy.
#[tokio::test]
async fn pgsql_check_lines_and_startup_bytes_are_haproxys() {
    let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let ok = fake_server(b"R\x00\x00\x00\x08\x00\x00\x00\x00", seen.clone()).await;
    let fatal = fake_server(b"E\x00\x00\x00\x0bSFATAL\x00\x00", seen.clone()).await;
    let garbage = fake_server(b"Not a PostgreSQL response", seen.clone()).await;
    let refused = dead_port();
    let backends: String = [("be1", ok), ("be2", fatal), ("be3", garbage), ("be4", refused)]
        .iter()
        .map(|(b, p)| format!("backend {b}\n    option log-health-checks\n    option pgsql-check user postgres\n    server srv 127.0.0.1:{p} check inter 200ms rise 1 fall 1\n"))
        .collect();
    let cfg = format!(
        "defaults\n    mode tcp\n    timeout client 1h\n    timeout server 1h\n    timeout connect 1s\nlisten l\n    bind 127.0.0.1:{}\n    server s 127.0.0.1:{ok}\n{backends}",
        dead_port()
    );
    let expected = [
        "Health check for server be1/srv succeeded, reason: Layer7 check passed, code: 0, info: \"PostgreSQL server is ok\", check duration: ",
        "Health check for server be2/srv failed, reason: Layer7 invalid response, info: \"FATAL\", check duration: ",
        "Health check for server be3/srv failed, reason: Layer7 wrong status, code: 0, info: \"PostgreSQL unknown error\", check duration: ",
        "Health check for server be4/srv failed, reason: Layer4 connection problem, info: \"Connection refused\", check duration: ",
    ];
    let tails = ["ms, status: 1/1 UP.", "ms, status: 0/1 DOWN.", "ms, status: 0/1 DOWN.", "ms, status: 0/1 DOWN."];
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("c.cfg");
    std::fs::write(&path, &cfg).unwrap();

    let mut runs = vec![("pglb", Command::new(pglb_bin()))];
    if has_haproxy() {
        runs.push(("haproxy", Command::new("haproxy")));
    }
    for (name, mut cmd) in runs {
        seen.lock().unwrap().clear();
        let log = dir.path().join(format!("{name}.log"));
        cmd.arg("-db").arg("-f").arg(&path).stdout(std::process::Stdio::null()).stderr(std::fs::File::create(&log).unwrap());
        let _guard = KillOnDrop(cmd.spawn().unwrap());
        let text = poll(&format!("{name}'s four health-check lines"), Duration::from_secs(10), || async {
            let text = std::fs::read_to_string(&log).unwrap_or_default();
            expected.iter().all(|e| text.contains(e)).then_some(text)
        })
        .await;
        for (e, tail) in expected.iter().zip(tails) {
            let line = text.lines().find(|l| l.contains(e)).unwrap();
            let rest = &line[line.find(e).unwrap() + e.len()..];
            let digits = rest.find(|c: char| !c.is_ascii_digit()).unwrap();
            assert!(digits > 0 && rest[digits..].starts_with(tail), "{name}: {line}");
        }
        // HAProxy's StartupMessage for `user postgres`, 23 bytes.
        let want = b"\x00\x00\x00\x17\x00\x03\x00\x00user\x00postgres\x00\x00".to_vec();
        assert!(seen.lock().unwrap().iter().all(|got| *got == want), "{name} sent {:?}", seen.lock().unwrap());
    }
}
