//! The product's command line: `run`, `check`, `ctl`, `healthd` and
//! HAProxy's spellings (`-f FILE`, `-c`). Each subcommand lives in its own
//! file; [`main`] dispatches and turns errors into an exit code. The `pglb`
//! binary (in the tooling crate, `tools/`) adds `lab`, `demo` and `bench`
//! beside these.

mod check;
mod ctl;
pub mod haproxy;
mod healthd;
pub mod logging;
mod serve;

use clap::{Args, Subcommand, ValueEnum};
use std::path::PathBuf;
use std::process::ExitCode;

/// Options every subcommand takes.
#[derive(Debug, Args)]
pub struct Options {
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
    /// Patroni-style health endpoints (/primary, /replica?lag=10s, ...) for a stock HAProxy.
    Healthd(healthd::HealthdArgs),
    /// Send a command to the runtime API (like `echo CMD | socat stdio SOCKET`).
    Ctl(ctl::CtlArgs),
}

/// Runs a product command, or HAProxy's `-f FILE` / `-c -f FILE` when
/// none is given.
pub fn main(opts: Options, command: Option<Command>) -> ExitCode {
    let file = opts.file.clone();
    let need_file = |what: &str| -> Result<PathBuf, ExitCode> {
        file.clone().ok_or_else(|| {
            eprintln!("pglb {what}: give the configuration file with -f FILE");
            ExitCode::from(2)
        })
    };
    let result = match command {
        Some(Command::Check) => need_file("check").map(|f| check::run(&f)),
        None if opts.check => need_file("-c").map(|f| check::run(&f)),
        Some(Command::Run) => need_file("run").map(|f| serve::run(&f, opts.log_format)),
        None if opts.file.is_some() => need_file("run").map(|f| serve::run(&f, opts.log_format)),
        Some(Command::Ctl(args)) => Ok(ctl::run(args, opts.file.clone())),
        Some(Command::Healthd(args)) => Ok(healthd::run(args, opts.log_format)),
        None => {
            eprintln!("usage: pglb run -f FILE | pglb check -f FILE | pglb lab ... (see pglb --help)");
            Err(ExitCode::from(2))
        }
    };
    result.unwrap_or_else(|code| code)
}
