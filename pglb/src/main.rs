//! The `pglb` command: parse arguments, set up logging, hand over to the
//! library. HAProxy's own spellings work too: `pglb -f FILE` runs and
//! `pglb -c -f FILE` checks.

use clap::Parser;
use pglb::cli::{self, Cli};
use std::process::ExitCode;

fn main() -> ExitCode {
    let args = Cli::parse();
    cli::main(args)
}
