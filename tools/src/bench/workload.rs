//! The workloads: pgbench select-only at 1, 16 and 64 clients (simple and
//! prepared protocol), connect-per-transaction, a large result, and the
//! memory an idle client connection costs the proxy.

use super::proc;
use super::systems::System;
use super::{BenchError, BenchOptions, Sample};
use crate::lab::{Fault, Lab};
use std::process::Command;
use std::time::Duration;

/// The large-result query: 1,000 rows of 1,000 bytes (about 1 MB per transaction).
const LARGE_SQL: &str = "select repeat('x', 1000) from generate_series(1, 1000);\n";
/// Bytes on the wire per large-result transaction (DataRow: 1+4+2+4+1000 per row).
const LARGE_BYTES: f64 = 1000.0 * 1011.0;

#[derive(Debug, Clone, Copy)]
pub enum Workload {
    Select {
        clients: u32,
        prepared: bool,
    },
    Connect,
    Large,
    Idle,
    /// pgbench with `sslmode=require` on the system's TLS port: `connect`
    /// opens a connection (and a TLS handshake) per transaction.
    Tls {
        connect: bool,
    },
}

impl Workload {
    pub fn all() -> Vec<Workload> {
        let mut v = Vec::new();
        for prepared in [false, true] {
            for clients in [1, 16, 64] {
                v.push(Workload::Select { clients, prepared });
            }
        }
        v.extend([Workload::Connect, Workload::Large, Workload::Idle, Workload::Tls { connect: false }, Workload::Tls { connect: true }]);
        v
    }

    pub fn name(&self) -> String {
        match self {
            Workload::Select { clients, prepared } => format!("-S -c {clients} -M {}", if *prepared { "prepared" } else { "simple" }),
            Workload::Connect => "-S -C -c 8".into(),
            Workload::Large => "large result -c 4".into(),
            Workload::Idle => "idle client connection".into(),
            Workload::Tls { connect: false } => "TLS -S -c 16 -M prepared".into(),
            Workload::Tls { connect: true } => "TLS -S -C -c 8".into(),
        }
    }

    pub async fn run(&self, lab: &Lab, sys: &System, opts: &BenchOptions, round: usize) -> Result<Vec<Sample>, BenchError> {
        let sample = |workload: String, value: f64, cpu: Option<f64>| Sample { workload, system: sys.name.clone(), round, value, cpu_per_1k: cpu };
        match *self {
            Workload::Select { clients, prepared } => {
                let mode = if prepared { "prepared" } else { "simple" };
                let r = pgbench(sys, sys.port, "disable", opts, &["-S", "-c", &clients.to_string(), "-M", mode]).await?;
                Ok(vec![sample(self.name(), r.tps, r.cpu_per_1k)])
            }
            Workload::Connect => {
                let r = pgbench(sys, sys.port, "disable", opts, &["-S", "-C", "-c", "8"]).await?;
                Ok(vec![sample(self.name(), r.tps, r.cpu_per_1k), sample("connect time (ms), -C -c 8".into(), r.connect_ms.unwrap_or(0.0), None)])
            }
            Workload::Large => {
                let script = opts.dir.join("bench").join("large.sql");
                std::fs::write(&script, LARGE_SQL).map_err(|e| BenchError::io(format!("write {}", script.display()), e))?;
                let r = pgbench(sys, sys.port, "disable", opts, &["-c", "4", "-f", &script.display().to_string()]).await?;
                Ok(vec![sample(self.name(), r.tps * LARGE_BYTES / 1e6, r.cpu_per_1k)])
            }
            Workload::Idle => match sys.pid {
                None => Ok(Vec::new()),
                Some(pid) => Ok(vec![sample(self.name(), idle_cost(lab, sys, pid, opts.idle).await?, None)]),
            },
            Workload::Tls { connect } => {
                let Some(port) = sys.tls_port else { return Ok(Vec::new()) };
                let args: &[&str] = if connect { &["-S", "-C", "-c", "8"] } else { &["-S", "-c", "16", "-M", "prepared"] };
                let r = pgbench(sys, port, "require", opts, args).await?;
                Ok(vec![sample(self.name(), r.tps, r.cpu_per_1k)])
            }
        }
    }
}

pub struct Run {
    pub tps: f64,
    pub connect_ms: Option<f64>,
    pub cpu_per_1k: Option<f64>,
}

/// pgbench against `port` (the system's, or its TLS port) with `sslmode`.
async fn pgbench(sys: &System, port: u16, sslmode: &str, opts: &BenchOptions, args: &[&str]) -> Result<Run, BenchError> {
    let cpu_before = sys.pid.and_then(proc::cpu_seconds);
    let clients: u32 = args.iter().position(|a| *a == "-c").and_then(|i| args.get(i + 1)).and_then(|c| c.parse().ok()).unwrap_or(1);
    let mut cmd = Command::new("pgbench");
    cmd.args([
        "-n",
        "-T",
        &opts.duration.as_secs().max(1).to_string(),
        "-j",
        &clients.min(2).to_string(),
        "-h",
        "127.0.0.1",
        "-p",
        &port.to_string(),
        "-U",
        "postgres",
    ])
    .args(args)
    .arg("bench")
    .env("PGPASSWORD", "postgres")
    .env("PGSSLMODE", sslmode);
    let out = tokio::task::spawn_blocking(move || cmd.output())
        .await
        .map_err(|e| BenchError::io("run pgbench", std::io::Error::other(e)))?
        .map_err(|e| BenchError::io("run pgbench", e))?;
    let text = String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    if !out.status.success() {
        return Err(BenchError::Pgbench(text));
    }
    let find = |key: &str| {
        text.lines().find_map(|l| l.trim().strip_prefix(key)).and_then(|r| r.split_whitespace().next()).and_then(|v| v.parse::<f64>().ok())
    };
    let tps = find("tps = ").ok_or_else(|| BenchError::NoTps(text.clone()))?;
    let done = find("number of transactions actually processed: ").unwrap_or(0.0);
    let failed = find("number of failed transactions: ").unwrap_or(0.0);
    if failed > 0.0 {
        return Err(BenchError::FailedTransactions(failed));
    }
    let cpu = match (cpu_before, sys.pid.and_then(proc::cpu_seconds)) {
        (Some(a), Some(b)) if done > 0.0 => Some((b - a) / (done / 1000.0)),
        _ => None,
    };
    Ok(Run { tps, connect_ms: find("average connection time = "), cpu_per_1k: cpu })
}

/// KiB of proxy memory per idle, authenticated client connection: the RSS
/// growth from the 10th percentile of `n` connections to all of them, so
/// that one-time costs (a thread's first buffers, allocator arenas) are not
/// counted as per-connection ones.
async fn idle_cost(lab: &Lab, sys: &System, pid: u32, n: usize) -> Result<f64, BenchError> {
    let (user, password) = lab.superuser();
    let dsn = format!("host=127.0.0.1 port={} user={user} password={password} dbname=bench sslmode=disable", sys.port);
    let warm = (n / 10).max(1);
    let mut held = Vec::with_capacity(n);
    let mut before = 0;
    for i in 0..n.max(warm + 1) {
        if i == warm {
            tokio::time::sleep(Duration::from_millis(200)).await;
            before = proc::rss_kib(pid).ok_or(BenchError::NoRss(pid))?;
        }
        let (c, conn) = tokio_postgres::connect(&dsn, tokio_postgres::NoTls).await.map_err(|e| BenchError::sql("idle client login", &e))?;
        tokio::spawn(conn);
        c.simple_query("select 1").await.map_err(|e| BenchError::sql("idle client query", &e))?;
        held.push(c);
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let after = proc::rss_kib(pid).ok_or(BenchError::NoRss(pid))?;
    let counted = held.len() - warm;
    drop(held);
    // The next measurement needs the server sessions gone, not just ours.
    let admin = lab.dsn(lab.primary(), "postgres");
    if let Ok((c, conn)) = tokio_postgres::connect(&admin, tokio_postgres::NoTls).await {
        tokio::spawn(conn);
        for _ in 0..200 {
            let left: i64 = match c.query_one("select count(*) from pg_stat_activity where datname = 'bench'", &[]).await {
                Ok(r) => r.get(0),
                Err(_) => break,
            };
            if left == 0 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    Ok(after.saturating_sub(before) as f64 / counted as f64)
}

/// Creates the pgbench tables and raises max_connections for the idle test.
pub async fn prepare(lab: &Lab, opts: &BenchOptions) -> Result<(), BenchError> {
    let primary = lab.primary();
    let (c, conn) = tokio_postgres::connect(&lab.dsn(primary, "postgres"), tokio_postgres::NoTls)
        .await
        .map_err(|e| BenchError::sql("connect to the primary", &e))?;
    tokio::spawn(conn);
    let _ = c.batch_execute("drop database if exists bench").await;
    c.batch_execute("create database bench").await.map_err(|e| BenchError::sql("create database bench", &e))?;
    let max = (opts.idle + 300).max(300);
    c.batch_execute(&format!("alter system set max_connections = {max}")).await.map_err(|e| BenchError::sql("raise max_connections", &e))?;
    drop(c);
    lab.fault("primary", Fault::Stop).await?;
    lab.fault("primary", Fault::Start).await?;
    let out = Command::new("pgbench")
        .args(["-i", "-q", "-s", &opts.scale.to_string(), "-h", "127.0.0.1", "-p", &primary.port.to_string(), "-U", "postgres", "bench"])
        .env("PGPASSWORD", "postgres")
        .output()
        .map_err(|e| BenchError::io("run pgbench -i", e))?;
    if !out.status.success() {
        return Err(BenchError::Pgbench(format!("pgbench -i: {}", String::from_utf8_lossy(&out.stderr))));
    }
    Ok(())
}
