//! `pglb check -f FILE`: HAProxy's `-c`, with PostgreSQL-aware findings.

use crate::config;
use std::path::Path;
use std::process::ExitCode;

pub fn run(file: &Path) -> ExitCode {
    let report = config::report(file);
    for w in &report.warnings {
        eprintln!("{w}");
    }
    match report.into_result() {
        Ok(loaded) => {
            let c = &loaded.config;
            let servers: usize = c.backends.iter().map(|b| b.servers.len()).sum();
            println!(
                "Configuration file is valid: {} frontend(s), {} backend(s), {} server(s), {} warning(s).",
                c.frontends.len(),
                c.backends.len(),
                servers,
                loaded.warnings.len()
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            let all = e.into_vec();
            for err in &all {
                eprintln!("{err}");
            }
            eprintln!("Configuration file has {} error(s) and is not valid.", all.len());
            ExitCode::from(1)
        }
    }
}
