//! Shared fixtures: one TLS-enabled lab per test binary (tests that break
//! servers start their own), pglb started in-process from config text, and
//! client helpers.

#![allow(dead_code)]

use pglb::run::Running;
use pglb_tools::lab::{Lab, LabOptions, cleanup_at_exit};
use std::future::Future;
use std::path::PathBuf;
use std::process::Output;
use std::time::{Duration, Instant};
use tokio::sync::OnceCell;
use tokio_postgres::NoTls;

static SHARED: OnceCell<Lab> = OnceCell::const_new();

/// A lab directory under /tmp (socket paths must stay short), removed with
/// its servers when the test process exits.
pub fn lab_dir() -> PathBuf {
    let dir = tempfile::Builder::new().prefix("pglb-it-").tempdir_in("/tmp").expect("tempdir").keep();
    cleanup_at_exit(dir.clone());
    dir
}

/// The shared lab: primary + 2 replicas, TLS on. Do not stop its servers.
pub async fn shared_lab() -> &'static Lab {
    SHARED.get_or_init(|| async { Lab::up(LabOptions { dir: lab_dir(), replicas: 2, port_base: None, ssl: true }).await.expect("lab up") }).await
}

/// A lab of its own, for tests that stop, kill or promote servers.
pub async fn own_lab(replicas: usize) -> Lab {
    Lab::up(LabOptions { dir: lab_dir(), replicas, port_base: None, ssl: false }).await.expect("lab up")
}

pub fn init_logs() {
    let _ = tracing_subscriber::fmt().with_env_filter("info").with_test_writer().try_init();
}

/// Starts pglb in this process from configuration text.
pub async fn start(config: &str) -> Running {
    init_logs();
    let loaded = pglb::config::parse_str(std::path::Path::new("test.cfg"), config).unwrap_or_else(|e| panic!("config: {e}\n{config}"));
    pglb::run::start(loaded.config).await.expect("start pglb")
}

/// `server` lines for every node of a lab, named after the nodes.
pub fn server_lines(lab: &Lab, options: &str) -> String {
    lab.nodes().iter().map(|n| format!("    server {} 127.0.0.1:{} {options}\n", n.name, n.port)).collect()
}

/// A free TCP port with nothing listening on it (a "stopped server").
pub fn dead_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

pub fn dsn(port: u16, db: &str) -> String {
    format!("host=127.0.0.1 port={port} user=postgres password=postgres dbname={db} sslmode=disable connect_timeout=10")
}

pub async fn connect(port: u16, db: &str) -> Result<tokio_postgres::Client, tokio_postgres::Error> {
    let (client, conn) = tokio_postgres::connect(&dsn(port, db), NoTls).await?;
    tokio::spawn(conn);
    Ok(client)
}

/// Which server port answered one fresh connection through pglb.
pub async fn server_port(port: u16) -> i32 {
    let c = connect(port, "appdb").await.expect("connect through pglb");
    c.query_one("select inet_server_port()", &[]).await.expect("query").get(0)
}

/// Runs psql through pglb (plain TCP, password from the environment).
pub fn psql(port: u16, sslmode: &str, sql: &str) -> Output {
    psql_cmd(port, sslmode, sql).output().expect("run psql")
}

pub fn psql_cmd(port: u16, sslmode: &str, sql: &str) -> std::process::Command {
    let mut c = std::process::Command::new("psql");
    c.args(["-X", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-h", "127.0.0.1", "-p", &port.to_string(), "-U", "postgres", "-d", "appdb", "-c", sql])
        .env("PGPASSWORD", "postgres")
        .env("PGSSLMODE", sslmode)
        .env("PGCONNECT_TIMEOUT", "10");
    c
}

/// Polls `f` every 20 ms until it returns `Some`, failing after `limit`.
pub async fn poll<T, F, Fut>(what: &str, limit: Duration, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + limit;
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out after {limit:?} waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The pglb binary built for these tests.
pub fn pglb_bin() -> &'static str {
    env!("CARGO_BIN_EXE_pglb")
}

pub fn write_config(text: &str) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("pglb.cfg");
    std::fs::write(&path, text).expect("write config");
    (dir, path)
}

/// Waits until every replica of `lab` has replayed everything the primary
/// has committed so far. The lab runs with `synchronous_commit = off`, so a
/// commit can return before its record is written: the target is the insert
/// position, not `pg_current_wal_lsn()` (the write position), which can be
/// behind the last commit.
pub async fn replicas_caught_up(lab: &pglb_tools::lab::Lab) {
    let primary = connect(lab.primary().port, "postgres").await.unwrap();
    let lsn: String = primary.query_one("select pg_current_wal_insert_lsn()::text", &[]).await.unwrap().get(0);
    for r in lab.replicas() {
        let c = connect(r.port, "postgres").await.unwrap();
        poll("replica caught up", Duration::from_secs(10), || async {
            let ok: bool = c.query_one("select pg_last_wal_replay_lsn() >= $1::text::pg_lsn", &[&lsn]).await.ok()?.get(0);
            ok.then_some(())
        })
        .await;
    }
}

/// Kills a child process when dropped, so a failed assertion leaves no
/// HAProxy or healthd behind.
pub struct KillOnDrop(pub std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Writes `config` to DIR/haproxy.cfg and runs Debian's HAProxy on it in the
/// foreground; it is killed when the guard drops.
pub fn spawn_haproxy(dir: &std::path::Path, config: &str) -> KillOnDrop {
    KillOnDrop(pglb_tools::scenario::spawn_haproxy(dir, config).unwrap_or_else(|e| panic!("{e}")))
}

/// The pglb binary in a child process, for tests that need its own limits,
/// signals, exit code or memory figure. Killed when dropped.
pub struct Pglb {
    pub child: std::process::Child,
    pub port: u16,
    pub dir: tempfile::TempDir,
    pub path: std::path::PathBuf,
}

/// Writes `cfg` (`PORT` replaced by a free port) and runs `pglb run` on it,
/// logging JSON to `DIR/pglb.log`; `nofile` sets both RLIMIT_NOFILE limits.
pub fn spawn_pglb(cfg: &str, nofile: Option<u64>) -> Pglb {
    let port = dead_port();
    let text = cfg.replace("PORT", &port.to_string());
    let (dir, path) = write_config(&text);
    let mut cmd = std::process::Command::new(pglb_bin());
    // Logs go to a file: a pipe nobody reads until the end would fill up and
    // block pglb's logging.
    let log = std::fs::File::create(dir.path().join("pglb.log")).unwrap();
    cmd.args(["run", "--log-format", "json", "-f"]).arg(&path).stdout(std::process::Stdio::null()).stderr(log);
    if let Some(n) = nofile {
        use std::os::unix::process::CommandExt;
        // SAFETY: only setrlimit, async-signal-safe, between fork and exec.
        unsafe {
            cmd.pre_exec(move || {
                let lim = libc::rlimit { rlim_cur: n, rlim_max: n };
                if libc::setrlimit(libc::RLIMIT_NOFILE, &lim) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
    }
    Pglb { child: cmd.spawn().expect("spawn pglb"), port, dir, path }
}

impl Drop for Pglb {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Pglb {
    pub fn signal(&self, sig: i32) {
        // SAFETY: signalling our own child.
        unsafe { libc::kill(self.child.id() as i32, sig) };
    }

    pub fn alive(&mut self) -> bool {
        self.child.try_wait().unwrap().is_none()
    }

    pub fn rss_kib(&self) -> u64 {
        pglb_tools::bench::proc::rss_kib(self.child.id()).expect("pglb's VmRSS")
    }

    /// Waits up to `limit` for it to exit by itself; returns its exit code,
    /// what it logged and how long the wait took.
    pub async fn wait_exit(&mut self, limit: Duration) -> (Option<i32>, String, Duration) {
        let started = Instant::now();
        let deadline = started + limit;
        let status = loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                break status;
            }
            assert!(Instant::now() < deadline, "pglb did not exit within {limit:?}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        (status.code(), std::fs::read_to_string(self.dir.path().join("pglb.log")).unwrap(), started.elapsed())
    }

    /// Stops it (SIGKILL) and returns what it logged.
    pub fn finish(&mut self) -> String {
        let _ = self.child.kill();
        let _ = self.child.wait();
        std::fs::read_to_string(self.dir.path().join("pglb.log")).unwrap()
    }
}
