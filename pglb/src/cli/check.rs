//! `pglb check -f FILE`: HAProxy's `-c`, with PostgreSQL-aware findings.

use crate::config;
use std::path::Path;
use std::process::ExitCode;

/// Prints warnings and errors together in line order, as they read in the file.
fn print_in_line_order(mut found: Vec<(usize, String)>) {
    found.sort_by_key(|(line, _)| *line);
    for (_, text) in found {
        eprintln!("{text}");
    }
}

/// Reads `file` and prints its warnings and errors in line order: the
/// loaded configuration, or how many errors it has.
fn read_and_report(file: &Path) -> Result<config::Loaded, usize> {
    let report = config::report(file);
    let mut found: Vec<(usize, String)> = report.warnings.iter().map(|w| (w.line, w.to_string())).collect();
    match report.into_result() {
        Ok(loaded) => {
            print_in_line_order(found);
            Ok(loaded)
        }
        Err(e) => {
            let all = e.into_vec();
            found.extend(all.iter().map(|e| (e.line().unwrap_or(0), e.to_string())));
            print_in_line_order(found);
            Err(all.len())
        }
    }
}

pub fn run(file: &Path) -> ExitCode {
    match read_and_report(file) {
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
        Err(errors) => {
            eprintln!("Configuration file has {errors} error(s) and is not valid.");
            ExitCode::from(1)
        }
    }
}

/// HAProxy's `-c` (`-q` quiet, `-dW` zero-warning): HAProxy's lines and exit
/// codes (0 valid, 1 errors or a warning under `-dW`, 2 valid but nothing
/// to listen on), pglb's findings on stderr.
pub fn haproxy_style(file: &Path, quiet: bool, zero_warning: bool) -> ExitCode {
    let Ok(loaded) = read_and_report(file) else {
        eprintln!("[ALERT] config : Fatal errors found in configuration.");
        return ExitCode::from(1);
    };
    if zero_warning && loaded.warnings.iter().any(|w| !w.advice) {
        eprintln!("[ALERT] config : Some warnings were found and 'zero-warning' is set. Aborting.");
        return ExitCode::from(1);
    }
    if !loaded.config.frontends.iter().any(|f| !f.binds.is_empty()) {
        println!("Configuration file has no error but will not start (no listener) => exit(2).");
        return ExitCode::from(2);
    }
    if !quiet {
        if !loaded.warnings.is_empty() {
            println!("Warnings were found.");
        }
        println!("Configuration file is valid");
    }
    ExitCode::SUCCESS
}
