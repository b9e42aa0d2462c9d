//! `pglb demo` in a real terminal (tmux): psql through both ports, the stats
//! URL, the runtime API socket, and Ctrl-C leaving no process and no data directory behind.

use crate::common::*;
use crate::observe::try_http_get;
use std::time::Duration;

fn tmux(args: &[&str]) -> std::process::Output {
    std::process::Command::new("tmux").args(args).output().expect("tmux (apt-get install tmux)")
}

/// A `pglb demo` running in a tmux session, ready for clients.
struct Demo {
    session: String,
    log: std::path::PathBuf,
    lab_dir: String,
    rw: u16,
    ro: u16,
    stats: u16,
    tls: u16,
    _dir: tempfile::TempDir,
}

impl Demo {
    /// With `tee`, the demo's output also stays on the terminal (which goes
    /// away with the session); otherwise it goes to the log file only.
    async fn start(name: &str, replicas: usize, tee: bool) -> Demo {
        // The ports are free when chosen; another test's connection can take
        // one before the demo binds it. The demo then says so and exits, and
        // it is started again on other ports, as the lab does for its own.
        for _ in 0..3 {
            if let Some(demo) = Demo::try_start(name, replicas, tee).await {
                return demo;
            }
        }
        panic!("the demo could not bind its ports in 3 attempts");
    }

    /// `None` when a port was taken meanwhile (the demo has exited).
    async fn try_start(name: &str, replicas: usize, tee: bool) -> Option<Demo> {
        let (rw, ro, stats, tls) = (dead_port(), dead_port(), dead_port(), dead_port());
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("demo.log");
        let session = format!("pglb-{name}-{}", std::process::id());
        let demo = format!("{} demo --rw-port {rw} --ro-port {ro} --tls-port {tls} --stats-port {stats} --replicas {replicas}", pglb_bin());
        let cmd = if tee { format!("{demo} 2>&1 | tee {}", log.display()) } else { format!("{demo} > {} 2>&1", log.display()) };
        assert!(tmux(&["new-session", "-d", "-s", &session, "-x", "200", "-y", "50", &cmd]).status.success());
        let read = || std::fs::read_to_string(&log).unwrap_or_default();
        let ready = poll("the demo to be ready", Duration::from_secs(60), || async {
            let text = read();
            if text.contains("Ctrl-C stops pglb") {
                Some(true)
            } else if text.contains("choose other ports") {
                Some(false)
            } else {
                None
            }
        })
        .await;
        if !ready {
            poll("the failed demo to exit", Duration::from_secs(30), || async {
                (!tmux(&["has-session", "-t", &session]).status.success()).then_some(())
            })
            .await;
            return None;
        }
        let lab_dir = read()
            .lines()
            .find_map(|l| l.strip_prefix(&format!("starting a primary and {replicas} replicas in ")).map(|l| l.trim_end_matches(" ...").to_string()))
            .expect("lab dir");
        assert!(std::path::Path::new(&lab_dir).exists());
        Some(Demo { session, log, lab_dir, rw, ro, stats, tls, _dir: dir })
    }

    fn read(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn demo_serves_both_ports_and_ctrl_c_cleans_up() {
    let demo = Demo::start("demo-test", 2, false).await;
    let (rw, ro, stats, session, lab_dir) = (demo.rw, demo.ro, demo.stats, demo.session.as_str(), demo.lab_dir.as_str());
    let text = demo.read();
    let read = || demo.read();

    // Writes: the primary; reads: a replica (once the checks have run).
    let out = psql(rw, "prefer", "select pg_is_in_recovery()");
    let rw_answer = String::from_utf8_lossy(&out.stdout).trim().to_string();
    let rw_answer = if rw_answer == "f" {
        rw_answer
    } else {
        poll("rw port serves the primary", Duration::from_secs(10), || async {
            (String::from_utf8_lossy(&psql(rw, "prefer", "select pg_is_in_recovery()").stdout).trim() == "f").then(|| "f".to_string())
        })
        .await
    };
    assert_eq!(rw_answer, "f");
    poll("ro port serves a replica", Duration::from_secs(10), || async {
        (String::from_utf8_lossy(&psql(ro, "prefer", "select pg_is_in_recovery()").stdout).trim() == "t").then_some(())
    })
    .await;
    // The TLS port, with the lab's CA, as the demo prints it.
    let ca = std::path::Path::new(&lab_dir).join("tls/ca.crt");
    assert!(text.contains(&format!("sslmode=verify-full sslrootcert={}", ca.display())), "{text}");
    let mut c = psql_cmd(demo.tls, "verify-full", "select pg_is_in_recovery()");
    c.env("PGSSLROOTCERT", &ca);
    let out = c.output().unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "f", "{}", String::from_utf8_lossy(&out.stderr));
    let (status, page) = try_http_get(stats, "/stats", None).await.expect("stats URL answers");
    assert_eq!(status, 200);
    assert!(page.contains("replica2"));
    // The runtime API socket the demo prints, as socat would use it.
    let sock = std::path::Path::new(&lab_dir).join("admin.sock");
    assert!(text.contains(&format!("socat stdio {}", sock.display())), "{text}");
    let mut api = std::os::unix::net::UnixStream::connect(&sock).expect("runtime API socket");
    std::io::Write::write_all(&mut api, b"show servers state\n").unwrap();
    let mut state = String::new();
    std::io::Read::read_to_string(&mut api, &mut state).unwrap();
    assert!(state.contains(" ro ") && state.contains(" replica2 "), "{state}");

    assert!(tmux(&["send-keys", "-t", session, "C-c", ""]).status.success());
    poll("the demo to exit", Duration::from_secs(30), || async { (!tmux(&["has-session", "-t", session]).status.success()).then_some(()) }).await;
    assert!(read().contains("lab removed"), "{}", read());
    assert!(!std::path::Path::new(&lab_dir).exists(), "data directory left behind");
    let pgrep = std::process::Command::new("pgrep").arg("-f").arg(lab_dir).output().unwrap();
    assert!(!pgrep.status.success(), "processes left behind: {}", String::from_utf8_lossy(&pgrep.stdout));
}

/// Closing the terminal (SIGHUP, here `tmux kill-session`) removes the lab
/// too: the default action of SIGHUP would leave PostgreSQL running.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_closed_terminal_removes_the_lab() {
    let demo = Demo::start("demo-hup", 1, true).await;
    assert!(tmux(&["kill-session", "-t", &demo.session]).status.success());
    poll("the lab removed", Duration::from_secs(30), || async {
        let gone = !std::path::Path::new(&demo.lab_dir).exists();
        let pgrep = std::process::Command::new("pgrep").arg("-f").arg(&demo.lab_dir).output().unwrap();
        (gone && !pgrep.status.success()).then_some(())
    })
    .await;
}
