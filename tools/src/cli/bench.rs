//! `pglb bench`: the benchmark against direct, HAProxy and PgBouncer.

use crate::bench::{self, BenchOptions};
use clap::Args;
use pglb::cli::{LogFormat, logging};
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Debug, Args)]
pub struct BenchArgs {
    /// Interleaved rounds (median, min and max are reported).
    #[arg(long, default_value_t = 3)]
    pub rounds: usize,
    /// Seconds per pgbench run.
    #[arg(long, default_value_t = 5)]
    pub duration: u64,
    /// Idle client connections held for the memory figure.
    #[arg(long, default_value_t = 500)]
    pub idle: usize,
    #[arg(long, default_value_t = 10)]
    pub scale: u32,
    /// Markdown file whose `<!-- bench:start -->`..`<!-- bench:end -->` part receives the table.
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Also write the full JSON here.
    #[arg(long)]
    pub json: Option<PathBuf>,
    /// Systems to leave out (direct, pglb, haproxy, pgbouncer).
    #[arg(long)]
    pub skip: Vec<String>,
    /// Run only the workloads whose name contains this text (repeatable),
    /// e.g. `--only '-c 16'`; for a quick comparison while working.
    #[arg(long, allow_hyphen_values = true)]
    pub only: Vec<String>,
    /// Another pglb binary (e.g. the build before a change) measured as the
    /// system "pglb-before" in the same interleaved rounds, with a
    /// "pglb / before" ratio: a change on the relay path shows its effect
    /// in one run.
    #[arg(long)]
    pub baseline: Option<PathBuf>,
}

pub fn run(args: BenchArgs, format: LogFormat) -> ExitCode {
    logging::init_with(format, false, "warn");
    let rt = match tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("pglb bench: {e}");
            return ExitCode::from(1);
        }
    };
    let opts = BenchOptions {
        rounds: args.rounds.max(1),
        duration: std::time::Duration::from_secs(args.duration.max(1)),
        idle: args.idle,
        scale: args.scale.max(1),
        dir: std::env::temp_dir().join(format!("pglb-bench-{}", std::process::id())),
        skip: args.skip,
        only: args.only,
        baseline: args.baseline,
    };
    let report = match rt.block_on(bench::run(opts)) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("pglb bench: {e}");
            return ExitCode::from(1);
        }
    };
    let table = bench::render_markdown(&report);
    println!("{table}");
    if let Some(p) = args.json
        && let Err(e) = std::fs::write(&p, format!("{report:#}\n"))
    {
        eprintln!("pglb bench: {}: {e}", p.display());
    }
    if let Some(p) = args.out {
        let text = std::fs::read_to_string(&p).unwrap_or_default();
        let (start, end) = ("<!-- bench:start -->", "<!-- bench:end -->");
        let updated = match (text.find(start), text.find(end)) {
            (Some(a), Some(b)) if a < b => format!("{}{start}\n{table}{}", &text[..a], &text[b..]),
            _ => format!("{text}\n{start}\n{table}{end}\n"),
        };
        if let Err(e) = std::fs::write(&p, updated) {
            eprintln!("pglb bench: {}: {e}", p.display());
            return ExitCode::from(1);
        }
    }
    ExitCode::SUCCESS
}
