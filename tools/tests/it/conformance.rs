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

/// HAProxy's pgsql-check StartupMessage (`user postgres`, 23 bytes).
const STARTUP: &[u8] = b"\x00\x00\x00\x17\x00\x03\x00\x00user\x00postgres\x00\x00";

/// A client that sends [`STARTUP`] to `port` and waits for the answer or
/// the close (up to 8 s).
fn one_client(port: u16) {
    use std::io::{Read, Write};
    if let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", port)) {
        let _ = s.write_all(STARTUP);
        let _ = s.set_read_timeout(Some(Duration::from_secs(8)));
        let _ = s.read(&mut [0u8; 512]);
    }
}

/// pglb, and Debian's HAProxy when the machine has it.
fn programs() -> Vec<&'static str> {
    if has_haproxy() { vec!["pglb", "haproxy"] } else { vec!["pglb"] }
}

fn has_haproxy() -> bool {
    Command::new("haproxy").arg("-v").output().is_ok_and(|o| o.status.success())
}

/// `pglb` or `haproxy` in the foreground on `path` (HAProxy's `-db -f`), quiet.
fn run_db(program: &str, path: &Path) -> std::process::Child {
    Command::new(if program == "pglb" { pglb_bin() } else { "haproxy" })
        .arg("-db")
        .arg("-f")
        .arg(path)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("{program}: {e}"))
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
pub(crate) async fn fake_server(reply: &'static [u8], seen: std::sync::Arc<std::sync::Mutex<Vec<Vec<u8>>>>) -> u16 {
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
        let want = STARTUP.to_vec();
        assert!(seen.lock().unwrap().iter().all(|got| *got == want), "{name} sent {:?}", seen.lock().unwrap());
    }
}

/// Collects the datagrams a UDP syslog receiver gets.
fn syslog_receiver() -> (u16, std::sync::Arc<std::sync::Mutex<Vec<String>>>) {
    let sock = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let port = sock.local_addr().unwrap().port();
    let got = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let sink = got.clone();
    std::thread::spawn(move || {
        let mut buf = [0u8; 65536];
        while let Ok(n) = sock.recv(&mut buf) {
            sink.lock().unwrap().push(String::from_utf8_lossy(&buf[..n]).into_owned());
        }
    });
    (port, got)
}

/// Splits `<PRI>Mmm dd hh:mm:ss TAG[PID]: MSG\n` into (PRI, PID, MSG).
fn local_header(datagram: &str) -> Option<(u32, u32, String)> {
    let rest = datagram.strip_prefix('<')?;
    let (pri, rest) = rest.split_once('>')?;
    let after_time = rest.get(16..)?;
    let (tag_pid, msg) = after_time.split_once("]: ")?;
    let pid = tag_pid.rsplit_once('[')?.1.parse().ok()?;
    Some((pri.parse().ok()?, pid, msg.strip_suffix('\n')?.to_string()))
}

/// Item 4: health and state lines to a UDP syslog target, with HAProxy's
/// header, severities and words; traffic lines with `option tcplog`;
/// `log-format`; a UNIX datagram target in rfc5424.
#[tokio::test]
async fn syslog_lines_are_haproxys() {
    let dir = tempfile::tempdir().unwrap();
    let unix_path = dir.path().join("log.sock");
    let unix = std::os::unix::net::UnixDatagram::bind(&unix_path).unwrap();
    unix.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let runs = programs();
    let mut per_program = Vec::new();
    let custom_re = regex::Regex::new(r#"^fe2\|be\|0\|\d+\|[A-Za-z-]{2}\|"127\.0\.0\.1"\|%$"#).unwrap();
    let re = regex::Regex::new(r"^127\.0\.0\.1:\d+ \[\d\d/[A-Z][a-z]{2}/\d{4}:\d\d:\d\d:\d\d\.\d{3}\] fe be/\S+ -?\d+/-?\d+/\d+ \d+ [A-Za-z-]{2} \d+/\d+/\d+/\d+/\+?\d+ \d+/\d+$").unwrap();
    for program in runs {
        let (port, got) = syslog_receiver();
        let fe_port = dead_port();
        let fe2_port = dead_port();
        let cfg = format!(
            "global\n    log 127.0.0.1:{port} local0\n    log {} format rfc5424 local1 notice\n\
             defaults\n    mode tcp\n    timeout client 1h\n    timeout server 1h\n    timeout connect 1s\n\
             frontend fe\n    bind 127.0.0.1:{fe_port}\n    log global\n    option tcplog\n    default_backend be\n\
             frontend fe2\n    bind 127.0.0.1:{fe2_port}\n    log global\n    log-format \"%ft|%b|%ST|%U|%ts|%{{+Q}}ci|%%\"\n    default_backend be\n\
             backend be\n    log global\n    option log-health-checks\n    server s1 127.0.0.1:{} check inter 100ms rise 1 fall 1\n",
            unix_path.display(),
            dead_port()
        );
        let path = dir.path().join(format!("{program}.cfg"));
        std::fs::write(&path, &cfg).unwrap();
        let child = run_db(program, &path);
        let pid = child.id();
        let _guard = KillOnDrop(child);
        let lines = poll(&format!("{program}'s no-server line"), Duration::from_secs(10), || async {
            let all = got.lock().unwrap().clone();
            all.iter().any(|l| l.contains("has no server available")).then_some(all)
        })
        .await;
        let parsed: Vec<(u32, u32, String)> = lines.iter().map(|l| local_header(l).unwrap_or_else(|| panic!("{program}: {l:?}"))).collect();
        assert!(parsed.iter().all(|(_, p, _)| *p == pid), "{program}: the PID in the header is the process's: {lines:?}");
        let find = |start: &str| {
            parsed.iter().find(|(_, _, m)| m.starts_with(start)).unwrap_or_else(|| panic!("{program}: no '{start}' in {lines:?}")).clone()
        };
        let (pri, _, check) = find("Health check for server be/s1 failed");
        assert_eq!(pri, 16 * 8 + 5, "local0.notice");
        assert!(
            check.starts_with(
                "Health check for server be/s1 failed, reason: Layer4 connection problem, info: \"Connection refused\", check duration: "
            ),
            "{check}"
        );
        assert!(check.ends_with("ms, status: 0/1 DOWN."), "{check}");
        let (pri, _, down) = find("Server be/s1 is DOWN");
        assert_eq!(pri, 16 * 8 + 1, "local0.alert");
        assert_eq!(down, "Server be/s1 is DOWN. 0 active and 0 backup servers left. 0 sessions active, 0 requeued, 0 remaining in queue.");
        let (pri, _, none) = find("backend be has no server available!");
        assert_eq!((pri, none.as_str()), (16 * 8, "backend be has no server available!"), "local0.emerg");
        // rfc5424 to the UNIX socket, notice and above only.
        let mut buf = [0u8; 4096];
        let n = unix.recv(&mut buf).unwrap();
        let d = String::from_utf8_lossy(&buf[..n]).into_owned();
        assert!(d.starts_with("<14") && d.contains(&format!(" {pid} - - ")) && d.ends_with('\n'), "{program}: {d}");
        while unix.recv(&mut buf).is_ok() {
            unix.set_read_timeout(Some(Duration::from_millis(200))).unwrap();
        }
        unix.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        // A traffic line (option tcplog), at info: the client sends a startup and the server is down.
        got.lock().unwrap().clear();
        one_client(fe_port);
        let traffic = poll(&format!("{program}'s traffic line"), Duration::from_secs(10), || async {
            got.lock().unwrap().iter().filter_map(|l| local_header(l)).find(|(_, _, m)| m.contains(" fe be/")).clone()
        })
        .await;
        // log-format: the same client through fe2.
        one_client(fe2_port);
        let custom = poll(&format!("{program}'s log-format line"), Duration::from_secs(10), || async {
            got.lock().unwrap().iter().filter_map(|l| local_header(l)).find(|(_, _, m)| m.starts_with("fe2|")).clone()
        })
        .await;
        assert!(custom_re.is_match(&custom.2), "{program}: {}", custom.2);
        assert_eq!(traffic.0, 16 * 8 + 6, "local0.info");
        assert!(re.is_match(&traffic.2), "{program}: {}", traffic.2);
        per_program.push((program, traffic.2));
    }
    eprintln!("{per_program:#?}");
}

/// Item 2: `bind "fd@${NAME}"` and `stats socket fd@N` adopt listening
/// sockets the parent opened (VTest's way, and systemd's idea): the
/// frontend relays, and the runtime API answers over the inherited TCP
/// socket. HAProxy is run the same way.
#[tokio::test]
async fn inherited_listening_sockets_are_adopted() {
    use std::io::{Read, Write};
    use std::os::fd::AsRawFd;
    let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let server = fake_server(b"R\x00\x00\x00\x08\x00\x00\x00\x00", seen).await;
    for program in programs() {
        let fe = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let cli = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let (fe_addr, cli_addr) = (fe.local_addr().unwrap(), cli.local_addr().unwrap());
        let (fe_fd, cli_fd) = (fe.as_raw_fd(), cli.as_raw_fd());
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.cfg");
        std::fs::write(
            &path,
            format!(
                "global\n    stats socket \"fd@${{cli}}\" level admin\ndefaults\n    mode tcp\n    timeout client 1h\n    timeout server 1h\n    timeout connect 1s\n\
                 listen l\n    bind \"fd@${{fe1}}\"\n    server s 127.0.0.1:{server}\n"
            ),
        )
        .unwrap();
        let mut cmd = Command::new(if program == "pglb" { pglb_bin() } else { "haproxy" });
        cmd.arg("-db").arg("-f").arg(&path).env("fe1", "10").env("cli", "11").stdout(std::process::Stdio::null()).stderr(std::process::Stdio::null());
        {
            use std::os::unix::process::CommandExt;
            // SAFETY: only fcntl and dup2, async-signal-safe, between fork
            // and exec; copies above 200 first, so that neither target
            // overwrites the other's source; dup2 clears close-on-exec.
            unsafe {
                cmd.pre_exec(move || {
                    let (a, b) = (libc::fcntl(fe_fd, libc::F_DUPFD, 200), libc::fcntl(cli_fd, libc::F_DUPFD, 200));
                    if a < 0 || b < 0 || libc::dup2(a, 10) < 0 || libc::dup2(b, 11) < 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                    Ok(())
                });
            }
        }
        let _guard = KillOnDrop(cmd.spawn().unwrap());
        // The runtime API over the inherited TCP socket.
        let csv = poll(&format!("{program}'s runtime API on fd 11"), Duration::from_secs(10), || async {
            let mut s = std::net::TcpStream::connect(cli_addr).ok()?;
            s.write_all(b"show stat\n").ok()?;
            s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
            let mut out = String::new();
            s.read_to_string(&mut out).ok()?;
            out.contains("l,s,").then_some(out)
        })
        .await;
        assert!(csv.starts_with("# pxname,svname,"), "{program}: {csv}");
        // The frontend on the inherited socket relays to the server.
        // (Async: the fake server runs on this test's runtime.)
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut c = tokio::net::TcpStream::connect(fe_addr).await.unwrap();
        c.write_all(STARTUP).await.unwrap();
        let mut answer = [0u8; 9];
        tokio::time::timeout(Duration::from_secs(5), c.read_exact(&mut answer)).await.unwrap_or_else(|_| panic!("{program}: no answer")).unwrap();
        assert_eq!(&answer, b"R\x00\x00\x00\x08\x00\x00\x00\x00", "{program}");
        drop((fe, cli));
    }
    // A descriptor that is not open is refused with HAProxy's words.
    let (_d, bad) = write_config("listen l\n    bind fd@999\n    timeout connect 1s\n    server s 127.0.0.1:1\n");
    let out = Command::new(pglb_bin()).args(["-c", "-f"]).arg(&bad).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("'bind' : cannot use file descriptor '999' : Bad file descriptor."),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// One HTTP/1.0 exchange; the whole answer (head and body).
fn http(port: u16, request: &str) -> String {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s.write_all(request.as_bytes()).unwrap();
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    out
}

fn runtime_api(sock: &Path, cmd: &str) -> String {
    use std::io::{Read, Write};
    let mut s = std::os::unix::net::UnixStream::connect(sock).unwrap();
    s.write_all(format!("{cmd}\n").as_bytes()).unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    out
}

/// Item 6: the stats page's `scope=` and POST actions, `set server fqdn`,
/// and the numbers of `show servers state`, from pglb and from HAProxy.
#[tokio::test]
async fn stats_page_actions_scope_and_runtime_numbers_are_haproxys() {
    for program in programs() {
        let dir = tempfile::tempdir().unwrap();
        let sock = dir.path().join("api.sock");
        let stats = dead_port();
        let cfg = format!(
            "global\n    stats socket {} level admin\nresolvers dns\n    nameserver ns1 127.0.0.1:{}\n    accepted_payload_size 8192\n\
             defaults\n    mode tcp\n    timeout client 1h\n    timeout server 1h\n    timeout connect 1s\n\
             listen stats\n    bind 127.0.0.1:{stats}\n    mode http\n    stats enable\n    stats uri /stats\n    stats admin if TRUE\n\
             backend Pg_Main\n    server s1 127.0.0.1:{} resolvers dns\n    server s2 127.0.0.1:{}\nbackend other\n    server o1 127.0.0.1:{}\n",
            sock.display(),
            dead_port(),
            dead_port(),
            dead_port(),
            dead_port()
        );
        let path = dir.path().join("c.cfg");
        std::fs::write(&path, &cfg).unwrap();
        let child = run_db(program, &path);
        let _guard = KillOnDrop(child);
        poll(&format!("{program}'s stats page"), Duration::from_secs(10), || async {
            std::net::TcpStream::connect(("127.0.0.1", stats)).ok().map(drop)
        })
        .await;
        // scope: a case-insensitive part of the proxy name.
        let csv = http(stats, "GET /stats;csv;scope=pg_m HTTP/1.0\r\n\r\n");
        let body = csv.split_once("\r\n\r\n").map_or("", |(_, b)| b);
        let proxies: std::collections::BTreeSet<&str> =
            body.lines().filter(|l| l.contains(',')).filter_map(|l| l.split(',').next()).filter(|p| !p.starts_with('#')).collect();
        assert_eq!(proxies.into_iter().collect::<Vec<_>>(), ["Pg_Main"], "{program}: {csv}");
        // A POST action: s2 into maintenance; the answer is a 303 to ;st=DONE.
        let body = "s=s2&action=maint&b=Pg_Main";
        let answer = http(
            stats,
            &format!("POST /stats HTTP/1.0\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\n\r\n{body}", body.len()),
        );
        assert!(answer.starts_with("HTTP/1.1 303") || answer.starts_with("HTTP/1.0 303"), "{program}: {answer}");
        assert!(answer.to_ascii_lowercase().contains("location: /stats;st=done"), "{program}: {answer}");
        let body = "s=nope&action=maint&b=Pg_Main";
        let answer = http(stats, &format!("POST /stats HTTP/1.0\r\nContent-Length: {}\r\n\r\n{body}", body.len()));
        assert!(answer.to_ascii_lowercase().contains("location: /stats;st=errp"), "{program}: {answer}");
        // show servers state: s2 in maintenance (op 0, admin 1); no checks:
        // status 1 (INI), result 0, health = rise (2), check state 0.
        let state = runtime_api(&sock, "show servers state Pg_Main");
        let row = |name: &str| -> Vec<String> {
            state
                .lines()
                .find(|l| l.split(' ').nth(3) == Some(name))
                .unwrap_or_else(|| panic!("{program}: {state}"))
                .split(' ')
                .map(String::from)
                .collect()
        };
        let s2 = row("s2");
        assert_eq!((s2[5].as_str(), s2[6].as_str()), ("0", "1"), "{program}: op and admin state: {s2:?}");
        let s1 = row("s1");
        assert_eq!(s1[10..14], ["1", "0", "2", "0"], "{program}: {s1:?}");
        // A command without output still answers its empty line (VTest waits for it).
        assert_eq!(runtime_api(&sock, "set server Pg_Main/s2 state maint"), "\n", "{program}");
        // set server fqdn: refused without resolvers, taken with them.
        assert_eq!(
            runtime_api(&sock, "set server Pg_Main/s2 fqdn db.example"),
            "set server <b>/<s> fqdn failed because no resolution is configured.\n\n",
            "{program}"
        );
        assert_eq!(
            runtime_api(&sock, "set server Pg_Main/s1 fqdn db.example"),
            "Pg_Main/s1 changed its FQDN from (null) to db.example by 'stats socket command'\n\n",
            "{program}"
        );
        let s1 = runtime_api(&sock, "show servers state Pg_Main");
        assert!(s1.lines().any(|l| l.contains(" s1 ") && l.contains(" db.example ")), "{program}: {s1}");
    }
}

/// A server that sends `data` to each connection and closes it `hold` later.
async fn talker(data: &'static [u8], hold: Duration) -> u16 {
    use tokio::io::AsyncWriteExt;
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = l.local_addr().unwrap().port();
    tokio::spawn(async move {
        loop {
            let Ok((mut s, _)) = l.accept().await else { return };
            tokio::spawn(async move {
                let _ = s.write_all(data).await;
                tokio::time::sleep(hold).await;
            });
        }
    });
    port
}

/// The health-check lines of `log`, one per backend named in `backends`
/// (the first of each), durations written `Nms`.
fn check_lines(log: &str, backends: &[&str]) -> Option<Vec<String>> {
    let re = regex::Regex::new(r"Health check for server (\S+)/\S+ .*?, status: \d+/\d+ (?:UP|DOWN)\.").unwrap();
    let duration = regex::Regex::new(r"check duration: \d+ms").unwrap();
    backends
        .iter()
        .map(|b| re.captures_iter(log).find(|c| &c[1] == *b).map(|c| duration.replace_all(&c[0], "check duration: Nms").into_owned()))
        .collect()
}

/// Items 5 and 7: tcp-check's infos, steps, comments and wait semantics
/// (reg-tests/checks/tcp-check_min-recv.vtc and the multiple-ports test),
/// line for line against HAProxy's.
#[tokio::test]
async fn tcp_check_lines_and_min_recv_are_haproxys() {
    let hello = talker(b"hello", Duration::from_millis(300)).await;
    let goodbye = talker(b"goodbye", Duration::from_millis(50)).await;
    let valid = talker(b"valid", Duration::from_millis(1500)).await;
    let backends = [
        ("b_ok", format!("    tcp-check expect string hello\n    server s 127.0.0.1:{hello} check inter 300ms rise 1 fall 1\n")),
        (
            "b_expect",
            format!("    tcp-check connect\n    tcp-check expect string hello\n    server s 127.0.0.1:{goodbye} check inter 300ms rise 1 fall 1\n"),
        ),
        (
            "b_neg",
            format!(
                "    tcp-check connect\n    tcp-check expect min-recv 3 !string goodbye\n    server s 127.0.0.1:{goodbye} check inter 300ms rise 1 fall 1\n"
            ),
        ),
        (
            "b_ports",
            format!(
                "    tcp-check connect port {hello}\n    tcp-check connect port {}\n    server s 127.0.0.1:{hello} check inter 300ms rise 1 fall 1\n",
                dead_port()
            ),
        ),
        ("b_refused", format!("    tcp-check expect string hello\n    server s 127.0.0.1:{} check inter 300ms rise 1 fall 1\n", dead_port())),
        (
            "be1",
            format!(
                "    timeout check 1ms\n    timeout server 1ms\n    tcp-check connect\n    tcp-check expect !rstring \"^error\" comment \"negative check\"\n    tcp-check expect string \"valid\" comment \"positive check\"\n    server srv1 127.0.0.1:{valid} check inter 300ms rise 1 fall 1\n"
            ),
        ),
        (
            "be2",
            format!(
                "    tcp-check connect\n    tcp-check expect min-recv 5 !rstring \"^error\" comment \"negative check\"\n    tcp-check expect string \"valid\" comment \"positive check\"\n    server srv1 127.0.0.1:{valid} check inter 300ms rise 1 fall 1\n"
            ),
        ),
    ];
    let mut cfg =
        String::from("defaults\n    mode tcp\n    timeout client 5s\n    timeout server 5s\n    timeout connect 1s\n    timeout check 1s\n");
    cfg.push_str(&format!("listen l\n    bind 127.0.0.1:{}\n    server s 127.0.0.1:{hello}\n", dead_port()));
    for (name, body) in &backends {
        cfg.push_str(&format!("backend {name}\n    option log-health-checks\n    option tcp-check\n{body}"));
    }
    let names: Vec<&str> = backends.iter().map(|(n, _)| *n).collect();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("c.cfg");
    std::fs::write(&path, &cfg).unwrap();
    let mut results = Vec::new();
    for program in programs() {
        let log = dir.path().join(format!("{program}.log"));
        let child = Command::new(if program == "pglb" { pglb_bin() } else { "haproxy" })
            .arg("-db")
            .arg("-f")
            .arg(&path)
            .env("NO_COLOR", "1")
            .stdout(std::process::Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        let _guard = KillOnDrop(child);
        let lines = poll(&format!("{program}'s check lines"), Duration::from_secs(10), || async {
            check_lines(&std::fs::read_to_string(&log).unwrap_or_default(), &names)
        })
        .await;
        results.push((program, lines));
    }
    let want = [
        "Health check for server b_ok/s succeeded, reason: Layer7 check passed, code: 0, info: \"(tcp-check)\", check duration: Nms, status: 1/1 UP.",
        "Health check for server b_expect/s failed, reason: Layer7 invalid response, info: \"TCPCHK did not match content 'hello' at step 2\", check duration: Nms, status: 0/1 DOWN.",
        "Health check for server b_neg/s failed, reason: Layer7 invalid response, info: \"TCPCHK matched unwanted content 'goodbye' at step 2\", check duration: Nms, status: 0/1 DOWN.",
        "Health check for server b_ports/s failed, reason: Layer4 connection problem, info: \"Connection refused at step 2 of tcp-check (connect port PORT)\", check duration: Nms, status: 0/1 DOWN.",
        "Health check for server b_refused/s failed, reason: Layer4 connection problem, info: \"Connection refused at initial connection step of tcp-check\", check duration: Nms, status: 0/1 DOWN.",
    ];
    let port = regex::Regex::new(r"connect port \d+").unwrap();
    for (program, lines) in &results {
        for (got, want) in lines.iter().zip(want) {
            assert_eq!(port.replace(got, "connect port PORT"), want, "{program}");
        }
        // tcp-check_min-recv.vtc: without min-recv the negated regex waits and times out at step 2;
        // with min-recv 5 the five bytes decide, and the check passes.
        assert!(
            lines[5].starts_with("Health check for server be1/srv1 failed, reason: Layer7 timeout") && lines[5].contains("at step 2 of tcp-check"),
            "{program}: {}",
            lines[5]
        );
        assert!(lines[6].starts_with("Health check for server be2/srv1 succeeded"), "{program}: {}", lines[6]);
    }
}

/// Item 7: `tcp-request content` rules as pgsql-check.vtc's listener writes
/// them: only HAProxy's 23-byte StartupMessage passes.
#[tokio::test]
async fn tcp_request_rules_filter_the_first_packet() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let server = fake_server(b"R\x00\x00\x00\x08\x00\x00\x00\x00", seen.clone()).await;
    let port = dead_port();
    let cfg = format!(
        "defaults\n    mode tcp\n    timeout client 5s\n    timeout server 5s\n    timeout connect 1s\n\
         listen pgsql1\n    bind 127.0.0.1:{port}\n    tcp-request inspect-delay 100ms\n\
         \x20   tcp-request content accept if {{ req.len eq 23 }} {{ req.payload(0,23) -m bin \"00000017000300007573657200706f7374677265730000\" }}\n\
         \x20   tcp-request content reject\n    server srv 127.0.0.1:{server}\n"
    );
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("c.cfg");
    std::fs::write(&path, &cfg).unwrap();
    for program in programs() {
        let child = run_db(program, &path);
        let _guard = KillOnDrop(child);
        poll(&format!("{program} listening"), Duration::from_secs(10), || async {
            tokio::net::TcpStream::connect(("127.0.0.1", port)).await.ok().map(drop)
        })
        .await;
        let exchange = |packet: &'static [u8]| async move {
            let mut c = tokio::net::TcpStream::connect(("127.0.0.1", port)).await.unwrap();
            c.write_all(packet).await.unwrap();
            let mut answer = Vec::new();
            let _ = tokio::time::timeout(Duration::from_secs(3), c.read_to_end(&mut answer)).await;
            answer
        };
        let ok = exchange(STARTUP).await;
        assert!(ok.starts_with(b"R\x00\x00\x00\x08"), "{program}: the StartupMessage passes: {ok:?}");
        let other = exchange(b"\x00\x00\x00\x15\x00\x03\x00\x00user\x00nobody\x00\x00").await;
        assert!(other.is_empty(), "{program}: another packet is rejected (closed): {other:?}");
    }
}

/// Item 6: HAProxy's dynamic servers (reg-tests/server/cli_add_server.vtc
/// and cli_delete_dynamic_server.vtc, their tcp-mode part): the same
/// answers from pglb and HAProxy, and the new server serves once enabled.
#[tokio::test]
async fn add_and_del_server_answer_as_haproxy() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let server = fake_server(b"R\x00\x00\x00\x08\x00\x00\x00\x00", seen).await;
    for program in programs() {
        let dir = tempfile::tempdir().unwrap();
        let sock = dir.path().join("api.sock");
        let port = dead_port();
        let cfg = format!(
            "global\n    stats socket {} level admin\ndefaults\n    mode tcp\n    timeout client 5s\n    timeout server 5s\n    timeout connect 1s\n\
             frontend fe\n    bind 127.0.0.1:{port}\n    use_backend test\n    default_backend other\nbackend test\n    balance roundrobin\nbackend other\n    balance static-rr\n",
            sock.display()
        );
        let path = dir.path().join("c.cfg");
        std::fs::write(&path, &cfg).unwrap();
        let child = run_db(program, &path);
        let _guard = KillOnDrop(child);
        poll(&format!("{program}'s runtime API"), Duration::from_secs(10), || async { sock.exists().then_some(()) }).await;
        let addr = format!("127.0.0.1:{server}");
        for (cmd, want) in [
            (format!("add server foo/s1 {addr}"), "No such backend."),
            ("add server test/s1".to_string(), "'server' expects <name> and <addr>[:<port>] as arguments."),
            (format!("add server other/s1 {addr}"), "Backend must use a dynamic load balancing to support dynamic servers."),
            (format!("add server test/s1 {addr}"), "New server registered."),
            (format!("add server test/s1 {addr}"), "Already exists a server with the same name in backend."),
            ("del server test/nope".to_string(), "No such server."),
        ] {
            let got = runtime_api(&sock, &cmd);
            assert!(got.starts_with(want), "{program}: {cmd}: {got:?}");
        }
        // A new server starts in maintenance (admin 1, op 0); enabled, it
        // serves (and the unconditional use_backend routes before default_backend).
        let state = runtime_api(&sock, "show servers state test");
        let row: Vec<&str> = state.lines().find(|l| l.contains(" s1 ")).unwrap_or_else(|| panic!("{program}: {state}")).split(' ').collect();
        assert_eq!((row[5], row[6]), ("0", "1"), "{program}: {row:?}");
        runtime_api(&sock, "enable server test/s1");
        let answer = poll(&format!("{program} serving through s1"), Duration::from_secs(5), || async {
            let mut c = tokio::net::TcpStream::connect(("127.0.0.1", port)).await.ok()?;
            c.write_all(STARTUP).await.ok()?;
            let mut a = [0u8; 9];
            tokio::time::timeout(Duration::from_secs(1), c.read_exact(&mut a)).await.ok()?.ok()?;
            Some(a)
        })
        .await;
        assert_eq!(&answer, b"R\x00\x00\x00\x08\x00\x00\x00\x00");
        let got = runtime_api(&sock, "del server test/s1");
        assert!(got.starts_with("Only servers in maintenance mode can be deleted."), "{program}: {got:?}");
        runtime_api(&sock, "disable server test/s1");
        let got = poll(&format!("{program} deleting s1"), Duration::from_secs(5), || async {
            let got = runtime_api(&sock, "del server test/s1");
            got.starts_with("Server deleted.").then_some(got)
        })
        .await;
        assert!(got.starts_with("Server deleted."));
        assert!(!runtime_api(&sock, "show servers state test").contains(" s1 "), "{program}");
    }
}
