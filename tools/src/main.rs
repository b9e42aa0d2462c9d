//! The `pglb` command: the product's commands (`run`, `check`, `ctl`,
//! `healthd`, HAProxy's `pglb -f FILE` and `pglb -c -f FILE`) and the
//! tooling's (`lab`, `demo`, `bench`), in one binary. A command line
//! without a subcommand is read as HAProxy's (`pglb::cli::haproxy`).

use clap::{Parser, Subcommand};
use pglb_tools::cli::{bench, demo, lab};
use std::process::ExitCode;

#[derive(Debug, Parser)]
#[command(name = "pglb", version, about = "A PostgreSQL-aware layer-4 load balancer that reads HAProxy's configuration language")]
struct Cli {
    #[command(flatten)]
    options: pglb::cli::Options,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, Subcommand)]
enum Command {
    #[command(flatten)]
    Product(pglb::cli::Command),
    /// A local PostgreSQL primary + streaming replicas for experiments and tests.
    Lab(lab::LabArgs),
    /// A primary + 2 replicas with pglb in front (read-write, read-only, stats); Ctrl-C removes it all.
    Demo(demo::DemoArgs),
    /// Benchmark: pgbench through direct, pglb, HAProxy and PgBouncer in interleaved rounds.
    Bench(bench::BenchArgs),
}

fn main() -> ExitCode {
    // `pglb -f FILE`, `pglb -c -f FILE`, `pglb -vv`, `pglb -cc EXPR`...:
    // HAProxy's own command line, for scripts and harnesses written for it.
    let args: Vec<std::ffi::OsString> = std::env::args_os().skip(1).collect();
    if pglb::cli::haproxy::is_haproxy_style(&args) {
        return pglb::cli::haproxy::main(&args);
    }
    let cli = Cli::parse();
    let format = cli.options.log_format;
    match cli.command {
        Some(Command::Lab(args)) => lab::run(args, format),
        Some(Command::Demo(args)) => demo::run(args, format),
        Some(Command::Bench(args)) => bench::run(args, format),
        Some(Command::Product(command)) => pglb::cli::main(cli.options, Some(command)),
        None => pglb::cli::main(cli.options, None),
    }
}
