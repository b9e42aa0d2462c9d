//! Command-line interface. Each subcommand lives in its own file; `main`
//! dispatches and turns errors into an exit code.

mod bench;
mod check;
mod ctl;
mod demo;
mod healthd;
mod lab;
mod logging;
mod serve;

use clap::{Args, Parser, Subcommand, ValueEnum};
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Debug, Parser)]
#[command(name = "pglb", version, about = "A PostgreSQL-aware layer-4 load balancer that reads HAProxy's configuration language")]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,
    /// Configuration file (HAProxy style: `pglb -f haproxy.cfg` runs it).
    #[arg(short = 'f', global = true, value_name = "FILE")]
    pub file: Option<PathBuf>,
    /// Check the configuration and exit (HAProxy's -c).
    #[arg(short = 'c')]
    pub check: bool,
    /// Log format: text (human) or json (one object per line).
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text, env = "PGLB_LOG_FORMAT")]
    pub log_format: LogFormat,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the load balancer with the configuration given by -f.
    Run,
    /// Check the configuration given by -f: exit 0 when valid (warnings are printed).
    Check,
    /// A local PostgreSQL primary + streaming replicas for experiments and tests.
    Lab(lab::LabArgs),
    /// Patroni-style health endpoints (/primary, /replica?lag=10s, ...) for a stock HAProxy.
    Healthd(healthd::HealthdArgs),
    /// Benchmark: pgbench through direct, pglb, HAProxy and PgBouncer in interleaved rounds.
    Bench(bench::BenchArgs),
    /// Send a command to the runtime API (like `echo CMD | socat stdio SOCKET`).
    Ctl(ctl::CtlArgs),
    /// A primary + 2 replicas with pglb in front (read-write, read-only, stats); Ctrl-C removes it all.
    Demo(demo::DemoArgs),
}

#[derive(Debug, Args)]
pub struct FileArg {
    #[arg(short = 'f', value_name = "FILE")]
    pub file: PathBuf,
}

pub fn main(cli: Cli) -> ExitCode {
    let file = cli.file.clone();
    let need_file = |what: &str| -> Result<PathBuf, ExitCode> {
        file.clone().ok_or_else(|| {
            eprintln!("pglb {what}: give the configuration file with -f FILE");
            ExitCode::from(2)
        })
    };
    let result = match cli.command {
        Some(Command::Check) => need_file("check").map(|f| check::run(&f)),
        None if cli.check => need_file("-c").map(|f| check::run(&f)),
        Some(Command::Run) => need_file("run").map(|f| serve::run(&f, cli.log_format)),
        None if cli.file.is_some() => need_file("run").map(|f| serve::run(&f, cli.log_format)),
        Some(Command::Lab(args)) => Ok(lab::run(args, cli.log_format)),
        Some(Command::Demo(args)) => Ok(demo::run(args, cli.log_format)),
        Some(Command::Ctl(args)) => Ok(ctl::run(args, cli.file.clone())),
        Some(Command::Healthd(args)) => Ok(healthd::run(args, cli.log_format)),
        Some(Command::Bench(args)) => Ok(bench::run(args, cli.log_format)),
        None => {
            eprintln!("usage: pglb run -f FILE | pglb check -f FILE | pglb lab ... (see pglb --help)");
            Err(ExitCode::from(2))
        }
    };
    result.unwrap_or_else(|code| code)
}
