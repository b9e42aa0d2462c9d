//! `pglb bench`: pgbench through direct connections, pglb, Debian's HAProxy
//! and PgBouncer (session mode) against the same lab, in interleaved rounds
//! (A B C D A B C D ...), so a noisy machine hurts every system alike.
//! Reports medians with min and max, and ratios against the anchors
//! measured in the same run. Benchmarks measure; nothing here passes or fails.

pub mod proc;
mod report;
mod systems;
mod workload;

pub use report::render_markdown;

use crate::lab::{Lab, LabOptions};
use serde_json::{Value, json};
use std::path::PathBuf;
use std::time::Duration;
use systems::System;
use workload::Workload;

#[derive(Debug, Clone)]
pub struct BenchOptions {
    pub rounds: usize,
    pub duration: Duration,
    /// Idle client connections held for the memory measurement.
    pub idle: usize,
    /// pgbench scale.
    pub scale: u32,
    /// Where the lab lives (removed at the end).
    pub dir: PathBuf,
    /// Systems to skip (e.g. when haproxy or pgbouncer is not installed).
    pub skip: Vec<String>,
    /// When not empty, only the workloads whose name contains one of these.
    pub only: Vec<String>,
    /// Another pglb binary, measured as "pglb-before".
    pub baseline: Option<PathBuf>,
}

/// One measured run.
#[derive(Debug, Clone)]
pub struct Sample {
    pub workload: String,
    pub system: String,
    pub round: usize,
    /// The workload's main figure (TPS, MB/s, ms, KB per connection).
    pub value: f64,
    /// Proxy CPU seconds per 1,000 transactions (proxies only).
    pub cpu_per_1k: Option<f64>,
}

#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    #[error("lab: {0}")]
    Lab(#[from] crate::lab::LabError),
    #[error("{what}: {source}")]
    Io { what: String, source: std::io::Error },
    #[error("unknown system {0}")]
    UnknownSystem(String),
    #[error("pglb-before needs --baseline PATH")]
    NoBaseline,
    #[error("{system} did not start (nothing listens on port {port}): {log_tail}")]
    NotStarted { system: String, port: u16, log_tail: String },
    #[error("{what}: {detail}")]
    Sql { what: String, detail: String },
    /// pgbench exited with an error; its output.
    #[error("pgbench failed: {0}")]
    Pgbench(String),
    #[error("no tps in pgbench's output: {0}")]
    NoTps(String),
    #[error("{0} failed transactions")]
    FailedTransactions(f64),
    #[error("no RSS for process {0}")]
    NoRss(u32),
}

impl BenchError {
    pub(crate) fn io(what: impl Into<String>, source: std::io::Error) -> Self {
        BenchError::Io { what: what.into(), source }
    }

    pub(crate) fn sql(what: impl Into<String>, e: &tokio_postgres::Error) -> Self {
        BenchError::Sql { what: what.into(), detail: pglb::health::sql::login_error(e) }
    }
}

pub async fn run(opts: BenchOptions) -> Result<Value, BenchError> {
    crate::lab::cleanup_at_exit(opts.dir.clone());
    eprintln!("bench: starting a primary + 2 replicas in {} ...", opts.dir.display());
    // TLS on: the TLS rows need it; the other rows connect with sslmode=disable.
    let lab = Lab::up(LabOptions { dir: opts.dir.clone(), replicas: 2, port_base: None, ssl: true }).await?;
    let result = measure(&lab, &opts).await;
    let _ = lab.down().await;
    result
}

async fn measure(lab: &Lab, opts: &BenchOptions) -> Result<Value, BenchError> {
    workload::prepare(lab, opts).await?;
    let dir = opts.dir.join("bench");
    std::fs::create_dir_all(&dir).map_err(|e| BenchError::io(format!("create {}", dir.display()), e))?;
    let mut systems = Vec::new();
    let baseline = opts.baseline.as_deref();
    for kind in systems::KINDS.iter().copied().chain(baseline.map(|_| systems::BASELINE)) {
        if opts.skip.iter().any(|s| s == kind) {
            continue;
        }
        systems.push(System::start(kind, lab, &dir, baseline).await?);
    }
    let versions: Vec<Value> = systems.iter().map(|s| json!({"system": s.name, "version": s.version})).collect();
    let mut samples = Vec::new();
    let mut failures = Vec::new();
    for w in Workload::all().into_iter().filter(|w| opts.only.is_empty() || opts.only.iter().any(|o| w.name().contains(o.as_str()))) {
        for round in 1..=opts.rounds {
            for s in &systems {
                eprintln!("bench: {} / {} / round {round}", w.name(), s.name);
                // Memory is measured on a fresh process each round: an
                // allocator reuses what the previous round freed, which would
                // make every round after the first read close to zero.
                let fresh = match w {
                    Workload::Idle if s.pid.is_some() => Some(System::start(&s.name, lab, &dir, baseline).await?),
                    _ => None,
                };
                let target = fresh.as_ref().unwrap_or(s);
                // A failed run is reported, not fatal: the other figures still count.
                let result = w.run(lab, target, opts, round).await;
                if let Some(f) = fresh {
                    f.stop();
                }
                match result {
                    Ok(sample) => samples.extend(sample),
                    Err(e) => {
                        eprintln!("bench: {} through {} failed: {e}", w.name(), s.name);
                        failures.push(json!({"workload": w.name(), "system": s.name, "round": round, "error": e.to_string()}));
                    }
                }
            }
        }
    }
    for s in systems {
        s.stop();
    }
    let mut report = report::summarize(&samples, opts, versions);
    report["failures"] = Value::Array(failures);
    Ok(report)
}
