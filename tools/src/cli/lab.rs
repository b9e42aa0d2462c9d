//! `pglb lab up|status|fault|down`: a local primary + replicas whose state
//! lives in a directory, so separate commands cooperate.

use crate::lab::{Fault, Lab, LabError, LabOptions};
use crate::scenario;
use clap::{Args, Subcommand};
use pglb::cli::{LogFormat, logging};
use std::path::PathBuf;
use std::process::ExitCode;

/// Default lab directory: short, because PostgreSQL's sockets live in it.
const DEFAULT_DIR: &str = "/tmp/pglb-lab";

#[derive(Debug, Args)]
pub struct LabArgs {
    #[command(subcommand)]
    pub command: LabCommand,
}

#[derive(Debug, Subcommand)]
pub enum LabCommand {
    /// Create and start a primary and N streaming replicas.
    Up {
        #[arg(long, default_value = DEFAULT_DIR)]
        dir: PathBuf,
        #[arg(long, default_value_t = 2)]
        replicas: usize,
        /// Port of the primary; replicas take the next ones. Default: free ports.
        #[arg(long)]
        port_base: Option<u16>,
        /// Serve TLS on every node, with a certificate for localhost and
        /// 127.0.0.1 signed by the lab's own CA (DIR/tls/ca.crt; DIR/tls/server.pem
        /// is the same certificate with its key, for `bind ... ssl crt`).
        #[arg(long)]
        ssl: bool,
    },
    /// Role, replay lag and streaming state of each node.
    Status {
        #[arg(long, default_value = DEFAULT_DIR)]
        dir: PathBuf,
        #[arg(long)]
        json: bool,
    },
    /// Inject a fault: kill, stop, start, freeze, thaw, pause-replay, resume-replay, promote, rejoin.
    Fault {
        #[arg(long, default_value = DEFAULT_DIR)]
        dir: PathBuf,
        fault: Fault,
        /// primary, replica1, replica2, ...
        node: String,
    },
    /// Run one of seed 004's experiments with pglb in front of the lab.
    Scenario {
        #[arg(long, default_value = DEFAULT_DIR)]
        dir: PathBuf,
        /// lb, failover, lag, profile, switchover or rolling-restart (these
        /// two build labs of their own, under --dir).
        #[arg(value_parser = ["lb", "failover", "lag", "profile", "switchover", "rolling-restart"])]
        name: String,
        /// Queries for `lb`.
        #[arg(long, default_value_t = 20)]
        queries: usize,
        /// Check interval for `failover` and `lag`.
        #[arg(long, default_value = "500ms", value_parser = parse_duration)]
        inter: std::time::Duration,
        /// max-lag for `lag`.
        #[arg(long, default_value = "2s", value_parser = parse_duration)]
        max_lag: std::time::Duration,
        /// `switchover`: a clean stop of the primary, then replica1 promoted at once (the default).
        #[arg(long, conflicts_with = "crash")]
        planned: bool,
        /// `switchover`: the primary killed, replica1 promoted 1 s later.
        #[arg(long)]
        crash: bool,
        /// `switchover`: how many runs (each on a lab of its own).
        #[arg(long, default_value_t = 5)]
        runs: usize,
        /// `switchover`: pglb, or haproxy (Debian's, with pglb healthd answering its checks).
        #[arg(long, default_value = "pglb", value_parser = ["pglb", "haproxy"])]
        proxy: String,
        /// `rolling-restart`: the pooled client's command line (it gets
        /// `--dsn URL --pool N --duration S` appended and prints one JSON
        /// line), e.g. `--client 'python3 tools/tests/clients/pooled_psycopg.py'`.
        #[arg(long)]
        client: Option<String>,
        /// `rolling-restart`: the client's pool size.
        #[arg(long, default_value_t = 8)]
        pool: usize,
        #[arg(long)]
        json: bool,
    },
    /// Stop every node and remove what `up` created.
    Down {
        #[arg(long, default_value = DEFAULT_DIR)]
        dir: PathBuf,
    },
}

pub fn run(args: LabArgs, format: LogFormat) -> ExitCode {
    logging::init_with(format, false, "warn,pglb::health=info");
    let rt = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("pglb lab: {e}");
            return ExitCode::from(1);
        }
    };
    let result = rt.block_on(async {
        match args.command {
            LabCommand::Up { dir, replicas, port_base, ssl } => {
                let lab = Lab::up(LabOptions { dir, replicas, port_base, ssl }).await?;
                let status = lab.status().await;
                print!("{}", lab.render_table(&status));
                println!("\nconnect: psql \"{}\"", lab.dsn(lab.primary(), "appdb"));
                println!("stop:    pglb lab down --dir {}", lab.dir().display());
            }
            LabCommand::Status { dir, json } => {
                let lab = Lab::open(&dir).await?;
                let status = lab.status().await;
                if json {
                    let nodes: Vec<serde_json::Value> = status
                        .iter()
                        .map(|s| {
                            serde_json::json!({
                                "node": s.name, "port": s.port, "running": s.running,
                                "role": s.role.map(|r| r.to_string()),
                                "replay_lag_seconds": s.replay_lag_seconds, "lag_bytes": s.lag_bytes, "streaming": s.streaming,
                            })
                        })
                        .collect();
                    println!("{}", serde_json::Value::Array(nodes));
                } else {
                    print!("{}", lab.render_table(&status));
                }
            }
            LabCommand::Fault { dir, fault, node } => {
                let lab = Lab::open(&dir).await?;
                lab.fault(&node, fault).await?;
                println!("{fault} {node}: done");
            }
            LabCommand::Scenario { dir, name, queries, inter, max_lag, planned: _, crash, runs, proxy, client, pool, json } => {
                let report = match name.as_str() {
                    "rolling-restart" => {
                        let client: Vec<String> = client.as_deref().unwrap_or_default().split_whitespace().map(str::to_string).collect();
                        let pglb = std::env::current_exe().map_err(|e| Failure::Scenario(scenario::ScenarioError::Start(e.to_string())))?;
                        scenario::rolling_restart(&dir, scenario::RollingOptions { pglb, client, pool }).await
                    }
                    "switchover" => {
                        let proxy = if proxy == "haproxy" { scenario::Proxy::Haproxy } else { scenario::Proxy::Pglb };
                        scenario::switchover(&dir, scenario::SwitchoverOptions { crash, runs, proxy }).await
                    }
                    _ => on_lab(&dir, &name, queries, inter, max_lag).await?,
                };
                match report {
                    Ok(r) if json => println!("{}", r.json),
                    Ok(r) => print!("{}", r.text),
                    Err(e) => return Err(Failure::Scenario(e)),
                }
            }
            LabCommand::Down { dir } => {
                let lab = Lab::open(&dir).await?;
                lab.down().await?;
                println!("lab in {} stopped and removed", dir.display());
            }
        }
        Ok::<_, Failure>(())
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("pglb lab: {e}");
            ExitCode::from(1)
        }
    }
}

/// The scenarios that run on the lab in `dir` (switchover makes its own).
async fn on_lab(
    dir: &std::path::Path,
    name: &str,
    queries: usize,
    inter: std::time::Duration,
    max_lag: std::time::Duration,
) -> Result<Result<scenario::Report, scenario::ScenarioError>, Failure> {
    let lab = Lab::open(dir).await?;
    Ok(match name {
        "lb" => scenario::lb(&lab, queries).await,
        "failover" => scenario::failover(&lab, scenario::FailoverOptions { inter, ..Default::default() }).await,
        "lag" => scenario::lag(&lab, scenario::LagOptions { max_lag, inter }).await,
        _ => scenario::profile(&lab).await,
    })
}

#[derive(Debug, thiserror::Error)]
enum Failure {
    #[error("{0}")]
    Lab(#[from] LabError),
    #[error("scenario: {0}")]
    Scenario(scenario::ScenarioError),
}

fn parse_duration(s: &str) -> Result<std::time::Duration, pglb::config::Invalid> {
    pglb::config::units::parse_time(s)
}
