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

pub fn run(file: &Path) -> ExitCode {
    let report = config::report(file);
    let mut found: Vec<(usize, String)> = report.warnings.iter().map(|w| (w.line, w.to_string())).collect();
    match report.into_result() {
        Ok(loaded) => {
            print_in_line_order(found);
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
            found.extend(all.iter().map(|e| (e.line().unwrap_or(0), e.to_string())));
            print_in_line_order(found);
            eprintln!("Configuration file has {} error(s) and is not valid.", all.len());
            ExitCode::from(1)
        }
    }
}

/// HAProxy's `-c` (`-q` quiet, `-dW` zero-warning): HAProxy's lines and exit
/// codes (0 valid, 1 errors or a warning under `-dW`, 2 valid but nothing
/// to listen on), pglb's findings on stderr.
pub fn haproxy_style(file: &Path, quiet: bool, zero_warning: bool) -> ExitCode {
    let report = config::report(file);
    let mut found: Vec<(usize, String)> = report.warnings.iter().map(|w| (w.line, w.to_string())).collect();
    let warned = report.warnings.iter().any(|w| !w.advice);
    match report.into_result() {
        Ok(loaded) => {
            print_in_line_order(found);
            if zero_warning && warned {
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
        Err(e) => {
            let all = e.into_vec();
            found.extend(all.iter().map(|e| (e.line().unwrap_or(0), e.to_string())));
            print_in_line_order(found);
            eprintln!("[ALERT] config : Fatal errors found in configuration.");
            ExitCode::from(1)
        }
    }
}
