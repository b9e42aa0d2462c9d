//! `pglb healthd`: Patroni-style health endpoints for a stock HAProxy.

use super::{LogFormat, logging};
use clap::Args;
use std::process::ExitCode;

#[derive(Debug, Args)]
pub struct HealthdArgs {
    /// A node to watch: NAME=DSN (libpq key=value or postgres:// URL). Repeat per node.
    #[arg(long = "node", value_name = "NAME=DSN")]
    pub node: Vec<String>,
    /// Where a node's endpoints listen: NAME=IP:PORT (or just IP:PORT with --dsn). Repeat per node.
    #[arg(long = "listen", value_name = "NAME=ADDR")]
    pub listen: Vec<String>,
    /// One node only: its DSN (use with a single --listen ADDR).
    #[arg(long, value_name = "DSN")]
    pub dsn: Option<String>,
    /// How often each node is asked.
    #[arg(long, default_value = "1s", value_parser = parse_interval)]
    pub interval: std::time::Duration,
}

fn parse_interval(s: &str) -> Result<std::time::Duration, crate::config::Invalid> {
    match crate::config::units::parse_time(s)? {
        d if d.is_zero() => Err("the interval must be above 0".into()),
        d => Ok(d),
    }
}

pub fn run(args: HealthdArgs, format: LogFormat) -> ExitCode {
    logging::init(format, false);
    let specs = match crate::healthd::nodes(&args.node, &args.listen, args.dsn.as_deref()) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("pglb healthd: {e}");
            return ExitCode::from(2);
        }
    };
    let rt = match tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("pglb healthd: {e}");
            return ExitCode::from(1);
        }
    };
    let result = rt.block_on(crate::healthd::run(specs, args.interval, async {
        use tokio::signal::unix::{SignalKind, signal};
        if let (Ok(mut t), Ok(mut i)) = (signal(SignalKind::terminate()), signal(SignalKind::interrupt())) {
            tokio::select! {
                _ = t.recv() => {}
                _ = i.recv() => {}
            }
        }
    }));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("pglb healthd: {e}");
            ExitCode::from(if e.is_usage() { 2 } else { 1 })
        }
    }
}
