//! `scenario rolling-restart` (issue: rolling restarts no application
//! notices): two pglb instances behind Debian's HAProxy, which checks
//! their `/ready` as a Kubernetes Service would; a pooled client (an
//! external program: Go database/sql + lib/pq, psycopg 3's pool,
//! node-postgres' pool) runs short transactions through HAProxy while each
//! instance in turn gets SIGTERM, exits, and is started again. Reports what
//! the application saw (errors, transactions cut mid-flight) and how long
//! each instance took to exit.

use super::{Report, ScenarioError};
use crate::lab::{Lab, LabOptions};
use serde_json::{Value, json};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;
use tokio::time::Instant;

#[derive(Debug, Clone)]
pub struct RollingOptions {
    /// The pglb binary to run the two instances with.
    pub pglb: PathBuf,
    /// The client's command line; `--dsn URL --pool N --duration SECONDS`
    /// is appended. It prints one JSON line with `committed`, `errors`
    /// (message: count), `cut_mid_flight` and `errors_total`.
    pub client: Vec<String>,
    pub pool: usize,
}

/// One pglb instance and its ports.
struct Instance {
    child: Child,
    cfg: PathBuf,
    log: PathBuf,
    port: u16,
    stats: u16,
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map(|a| a.port()).unwrap_or(0)
}

fn failed(e: impl std::fmt::Display) -> ScenarioError {
    ScenarioError::Failed(e.to_string())
}

impl Instance {
    fn start(pglb: &Path, dir: &Path, name: &str, server: u16) -> Result<Instance, ScenarioError> {
        let (port, stats) = (free_port(), free_port());
        let cfg = dir.join(format!("{name}.cfg"));
        std::fs::write(
            &cfg,
            format!(
                "global\n    hard-stop-after 20s\n    grace 1s\ndefaults\n    mode tcp\n    timeout connect 2s\n    timeout tunnel 1h\n\
                 listen pg\n    bind 127.0.0.1:{port}\n    server primary 127.0.0.1:{server}\n\
                 listen stats\n    bind 127.0.0.1:{stats}\n    mode http\n    stats enable\n    stats uri /\n"
            ),
        )
        .map_err(failed)?;
        let log = dir.join(format!("{name}.log"));
        let child = spawn(pglb, &cfg, &log)?;
        Ok(Instance { child, cfg, log, port, stats })
    }

    fn restart(&mut self, pglb: &Path) -> Result<(), ScenarioError> {
        self.child = spawn(pglb, &self.cfg, &self.log)?;
        Ok(())
    }

    /// SIGTERM, then the time until the process is gone.
    async fn stop(&mut self) -> Result<Duration, ScenarioError> {
        let started = Instant::now();
        // SAFETY: signalling our own child.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        loop {
            if self.child.try_wait().map_err(failed)?.is_some() {
                return Ok(started.elapsed());
            }
            if started.elapsed() > Duration::from_secs(30) {
                let _ = self.child.kill();
                return Err(failed("pglb did not exit within 30 s of SIGTERM"));
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    async fn ready(&self) -> bool {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let Ok(mut s) = tokio::net::TcpStream::connect(("127.0.0.1", self.stats)).await else { return false };
        if s.write_all(b"GET /ready HTTP/1.0\r\n\r\n").await.is_err() {
            return false;
        }
        let mut out = Vec::new();
        let _ = s.read_to_end(&mut out).await;
        out.starts_with(b"HTTP/1.1 200") || out.starts_with(b"HTTP/1.0 200")
    }
}

impl Drop for Instance {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn spawn(pglb: &Path, cfg: &Path, log: &Path) -> Result<Child, ScenarioError> {
    let out = std::fs::OpenOptions::new().create(true).append(true).open(log).map_err(failed)?;
    Command::new(pglb)
        .args(["run", "--log-format", "json", "-f"])
        .arg(cfg)
        .stdout(Stdio::null())
        .stderr(out)
        .spawn()
        .map_err(|e| ScenarioError::Start(format!("{}: {e}", pglb.display())))
}

pub async fn rolling_restart(base: &Path, o: RollingOptions) -> Result<Report, ScenarioError> {
    let dir = base.join(format!("rolling-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).map_err(failed)?;
    let lab = Lab::up(LabOptions { dir: dir.join("lab"), replicas: 0, port_base: None, ssl: false }).await?;
    let result = run(&lab, &dir, &o).await;
    let _ = lab.down().await;
    if result.is_ok() {
        let _ = std::fs::remove_dir_all(&dir);
    }
    result
}

async fn run(lab: &Lab, dir: &Path, o: &RollingOptions) -> Result<Report, ScenarioError> {
    let server = lab.primary().port;
    let mut instances = [Instance::start(&o.pglb, dir, "pglb1", server)?, Instance::start(&o.pglb, dir, "pglb2", server)?];
    for i in &instances {
        super::wait_for_async(Duration::from_secs(10), || i.ready()).await.ok_or_else(|| failed("a pglb instance never became ready"))?;
    }
    // The stand-in for the Service: HAProxy sends clients to the instances
    // whose /ready answers 200.
    let front = free_port();
    let config = format!(
        "defaults\n    mode tcp\n    timeout connect 2s\n    timeout client 1h\n    timeout server 1h\n\
         listen pg\n    bind 127.0.0.1:{front}\n    balance roundrobin\n    option httpchk GET /ready\n    http-check expect status 200\n\
         default-server inter 300ms fall 1 rise 2\n    server pglb1 127.0.0.1:{} check port {}\n    server pglb2 127.0.0.1:{} check port {}\n",
        instances[0].port, instances[0].stats, instances[1].port, instances[1].stats
    );
    let mut haproxy = HaproxyChild(super::spawn_haproxy(dir, &config)?);
    let (user, password) = lab.superuser();
    let dsn = format!("postgres://{user}:{password}@127.0.0.1:{front}/appdb?sslmode=disable&connect_timeout=10");
    super::wait_for_async(Duration::from_secs(10), || async {
        let Ok(c) = super::connect(&format!("host=127.0.0.1 port={front} user={user} password={password} dbname=appdb sslmode=disable")).await else {
            return false;
        };
        c.query_one("select 1", &[]).await.is_ok()
    })
    .await
    .ok_or_else(|| failed("HAProxy never took clients"))?;
    tokio::time::sleep(Duration::from_millis(800)).await;

    // The client runs for the whole restart, and a little more.
    let duration = 14u64;
    let (program, args) = o.client.split_first().ok_or_else(|| failed("no client command"))?;
    let client = tokio::process::Command::new(program)
        .args(args)
        .args(["--dsn", &dsn, "--pool", &o.pool.to_string(), "--duration", &duration.to_string()])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| ScenarioError::Start(format!("client {program}: {e}")))?;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let mut exits = Vec::new();
    for inst in instances.iter_mut() {
        exits.push(inst.stop().await?);
        inst.restart(&o.pglb)?;
        super::wait_for_async(Duration::from_secs(10), || inst.ready()).await.ok_or_else(|| failed("a restarted instance never became ready"))?;
        // HAProxy's rise (2 checks 300 ms apart) before the next one goes.
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
    let out = client.wait_with_output().await.map_err(failed)?;
    let _ = haproxy.0.kill();
    let line = String::from_utf8_lossy(&out.stdout);
    let seen: Value = line.lines().rev().find_map(|l| serde_json::from_str(l).ok()).ok_or_else(|| {
        failed(format!("the client printed no JSON (exit {:?}): {} {}", out.status.code(), line, String::from_utf8_lossy(&out.stderr)))
    })?;
    let exit_ms: Vec<u64> = exits.iter().map(|d| d.as_millis() as u64).collect();
    let text = format!(
        "rolling restart of 2 pglb instances behind HAProxy (checking /ready); client: {} with a pool of {}, short transactions for {duration} s\n\
         transactions committed: {}\n\
         errors seen by the application: {} {}\n\
         transactions cut mid-flight: {}\n\
         time from SIGTERM to exit: {}\n",
        o.client.join(" "),
        o.pool,
        seen["committed"],
        seen["errors_total"],
        if seen["errors"].as_object().is_some_and(|e| !e.is_empty()) { seen["errors"].to_string() } else { String::new() },
        seen["cut_mid_flight"],
        exit_ms.iter().map(|m| format!("{m} ms")).collect::<Vec<_>>().join(", "),
    );
    Ok(Report {
        text,
        json: json!({"scenario": "rolling-restart", "client": o.client.join(" "), "pool": o.pool, "result": seen, "exit_ms": exit_ms}),
    })
}

struct HaproxyChild(Child);

impl Drop for HaproxyChild {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
