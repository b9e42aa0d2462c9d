//! HAProxy's own command line (management.txt section 3), for scripts,
//! service files and test harnesses written for `haproxy`: `-f FILE`,
//! `-c`, `-cc EXPR`, `-v`/`-vv`, `-d*`, `-db`, `-q`, `-p PIDFILE`, `-C DIR`
//! and the options without effect in pglb. The `pglb` binary takes this
//! path when its arguments name no subcommand.

use super::{LogFormat, check, serve};
use crate::config::cond;
use std::ffi::OsString;
use std::path::PathBuf;
use std::process::ExitCode;

/// What the command line asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    Run,
    /// `-c`: check the configuration.
    Check,
    /// `-cc EXPR`: evaluate a condition (exit 0 true, 1 false, 2 error).
    Condition(String),
    /// `-v` (`false`) or `-vv` (`true`).
    Version {
        build: bool,
    },
}

/// A parsed HAProxy-style command line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Invocation {
    pub action: Action,
    pub file: Option<PathBuf>,
    /// `-q`: no "Configuration file is valid" line.
    pub quiet: bool,
    /// `-dW`: a warning stops the check or the start.
    pub zero_warning: bool,
    /// `-d`: debug output (pglb: debug-level logs).
    pub debug: bool,
    /// `-p FILE`: the pidfile, over `pidfile` in global.
    pub pidfile: Option<PathBuf>,
    /// `-C DIR`: change to DIR before reading the configuration.
    pub chdir: Option<PathBuf>,
    pub log_format: LogFormat,
}

/// A command line pglb refuses, with the reason and what to do instead.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UsageError {
    #[error("'{0}' needs an argument")]
    MissingValue(String),
    #[error("unknown option '{0}'; pglb takes HAProxy's -f FILE, -c, -cc EXPR, -v, -vv, -d*, -db, -q, -p FILE, -C DIR (see pglb --help)")]
    Unknown(String),
    #[error("{option}: {why}")]
    Unsupported { option: String, why: &'static str },
    #[error("-f is given twice: pglb reads one configuration file")]
    TwoFiles,
    #[error("'{0}' is not a log format: use text or json")]
    LogFormat(String),
}

/// Subcommands of the `pglb` binary: an argument list naming one is not a
/// HAProxy command line.
const SUBCOMMANDS: &[&str] = &["run", "check", "healthd", "ctl", "lab", "demo", "bench", "help"];

/// Options that take a value (the next argument).
const WITH_VALUE: &[&str] = &["-f", "-p", "-cc", "-m", "-N", "-n", "-L", "-C", "-S", "-x", "--log-format"];

/// Whether `args` (without the program name) is a HAProxy command line:
/// options only, no subcommand, and not just `--help`/`--version`.
pub fn is_haproxy_style(args: &[OsString]) -> bool {
    let Some(first) = args.first().and_then(|a| a.to_str()) else { return false };
    if !first.starts_with('-') || matches!(first, "-h" | "--help" | "--version" | "-V") && args.len() == 1 {
        return false;
    }
    let mut i = 0;
    while i < args.len() {
        let Some(a) = args[i].to_str() else { return false };
        if matches!(a, "-h" | "--help" | "--version") {
            return false;
        }
        if WITH_VALUE.contains(&a) {
            i += 2;
            continue;
        }
        if a == "-sf" || a == "-st" {
            // Followed by pids: refused later, with its reason.
            return true;
        }
        if !a.starts_with('-') {
            return !SUBCOMMANDS.contains(&a);
        }
        i += 1;
    }
    true
}

/// Parses a HAProxy command line (without the program name).
pub fn parse(args: &[OsString]) -> Result<Invocation, UsageError> {
    let mut inv = Invocation {
        action: Action::Run,
        file: None,
        quiet: false,
        zero_warning: false,
        debug: false,
        pidfile: None,
        chdir: None,
        log_format: std::env::var("PGLB_LOG_FORMAT").ok().filter(|v| v == "json").map_or(LogFormat::Text, |_| LogFormat::Json),
    };
    let mut args = args.iter().map(|a| a.to_string_lossy().into_owned());
    let unsupported = |option: &str, why: &'static str| UsageError::Unsupported { option: option.to_string(), why };
    while let Some(a) = args.next() {
        let mut value = |name: &str| args.next().ok_or_else(|| UsageError::MissingValue(name.to_string()));
        match a.as_str() {
            "-f" => {
                if inv.file.replace(PathBuf::from(value("-f")?)).is_some() {
                    return Err(UsageError::TwoFiles);
                }
            }
            "-c" => inv.action = Action::Check,
            "-cc" => inv.action = Action::Condition(value("-cc")?),
            "-v" => inv.action = Action::Version { build: false },
            "-vv" => inv.action = Action::Version { build: true },
            "-q" => inv.quiet = true,
            "-V" => {}
            "-d" => inv.debug = true,
            "-dW" => inv.zero_warning = true,
            // -db (foreground: pglb always is), and HAProxy's debugging knobs
            // (-dM, -dI, -dr, -dV...): no effect in pglb.
            d if d.starts_with("-d") => {}
            "-p" => inv.pidfile = Some(PathBuf::from(value("-p")?)),
            "-C" => inv.chdir = Some(PathBuf::from(value("-C")?)),
            // Memory limit, default maxconn, maxconn per proxy, local peer name.
            "-m" | "-N" | "-n" | "-L" => {
                value(&a)?;
            }
            "--log-format" => {
                inv.log_format = match value("--log-format")?.as_str() {
                    "text" => LogFormat::Text,
                    "json" => LogFormat::Json,
                    other => return Err(UsageError::LogFormat(other.to_string())),
                }
            }
            "-D" => return Err(unsupported("-D", "pglb stays in the foreground: run it under systemd, Kubernetes or a supervisor")),
            "-W" | "-Ws" => {
                return Err(unsupported(&a, "pglb is one process (no master-worker): reload it with SIGHUP or 'reload' on the runtime API"));
            }
            "-S" => return Err(unsupported("-S", "there is no master CLI: pglb is one process; use 'stats socket' in global")),
            "-x" => return Err(unsupported("-x", "pglb keeps its sockets across reloads itself (SIGHUP): no socket transfer is needed")),
            "-sf" | "-st" => return Err(unsupported(&a, "pglb reloads in place on SIGHUP, keeping its sessions: no second process takes over")),
            other => return Err(UsageError::Unknown(other.to_string())),
        }
    }
    Ok(inv)
}

/// Runs a HAProxy command line; the exit code is HAProxy's.
pub fn main(args: &[OsString]) -> ExitCode {
    let inv = match parse(args) {
        Ok(inv) => inv,
        Err(e) => {
            eprintln!("pglb: {e}");
            return ExitCode::from(1);
        }
    };
    if let Some(dir) = &inv.chdir
        && let Err(e) = std::env::set_current_dir(dir)
    {
        eprintln!("[ALERT] config : Cannot change to directory {}: {e}", dir.display());
        return ExitCode::from(1);
    }
    match &inv.action {
        Action::Version { build } => {
            print!("{}", version_text(*build));
            ExitCode::SUCCESS
        }
        Action::Condition(expr) => condition(expr),
        Action::Check | Action::Run => {
            let Some(file) = inv.file.clone() else {
                eprintln!("pglb: no configuration file: give it with -f FILE");
                return ExitCode::from(1);
            };
            if inv.action == Action::Check {
                check::haproxy_style(&file, inv.quiet, inv.zero_warning)
            } else {
                serve::run_with(
                    &file,
                    serve::Options { format: inv.log_format, debug: inv.debug, zero_warning: inv.zero_warning, pidfile: inv.pidfile },
                )
            }
        }
    }
}

/// `-cc EXPR`: the words of EXPR (quoted and expanded as a configuration
/// line's) joined by spaces, evaluated.
fn condition(expr: &str) -> ExitCode {
    let words = match crate::config::words_of(expr) {
        Ok(w) => w,
        Err(e) => {
            eprintln!("[ALERT] config : Failed to parse the condition: {e}");
            return ExitCode::from(2);
        }
    };
    match cond::eval(&words.join(" "), &|name| std::env::var(name).ok()) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(1),
        Err(e) => {
            eprintln!("[ALERT] config : Failed to evaluate condition: {e}");
            ExitCode::from(2)
        }
    }
}

/// `-v` (the first lines) and `-vv` (with the build details HAProxy's
/// scripts read: `TARGET`, `Feature list`, `Available services`). The
/// version field (third word of the first line) is the HAProxy version
/// whose language pglb implements, marked as pglb's.
pub fn version_text(build: bool) -> String {
    let pkg = env!("CARGO_PKG_VERSION");
    let mut out = format!(
        "HAProxy version {}-pglb-{pkg} - pglb {pkg}, a PostgreSQL-aware load balancer with HAProxy {}'s configuration language, not HAProxy\n\
         Status: pglb implements HAProxy's mode tcp, checks, stats and runtime API; see its docs/config.md\n",
        cond::HAPROXY_VERSION,
        &cond::HAPROXY_VERSION[..3],
    );
    out.push_str(&format!("Running on: {}\n", uname()));
    if build {
        out.push_str("Build options :\n  TARGET  = linux-glibc\n  CPU     = generic\n  CC      = rustc\n\n");
        out.push_str(&format!("Feature list : {}\n\n", cond::FEATURES.join(" ")));
        out.push_str("Available polling systems :\n      epoll : pref=300,  test result OK\nTotal: 1 (1 usable), will use epoll.\n\n");
        out.push_str("Available services : none\n\nAvailable filters : none\n");
    }
    out
}

fn uname() -> String {
    // SAFETY: uname fills a zeroed struct it is given; the fields are NUL-terminated.
    let mut u: libc::utsname = unsafe { std::mem::zeroed() };
    if unsafe { libc::uname(&mut u) } != 0 {
        return "unknown".into();
    }
    let field = |f: &[libc::c_char]| {
        let bytes: Vec<u8> = f.iter().take_while(|c| **c != 0).map(|c| *c as u8).collect();
        String::from_utf8_lossy(&bytes).into_owned()
    };
    format!("{} {} {} {}", field(&u.sysname), field(&u.release), field(&u.version), field(&u.machine))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(s: &str) -> Vec<OsString> {
        s.split_whitespace().map(OsString::from).collect()
    }

    #[test]
    fn tells_haproxy_command_lines_from_subcommands() {
        for yes in ["-f x.cfg", "-d -f x.cfg", "-dM -dI -dW -c -f x", "-cc feature(THREAD)", "-vv", "-v", "-db -f x", "-q -c -f x"] {
            assert!(is_haproxy_style(&args(yes)), "{yes}");
        }
        for no in ["run -f x", "-f x run", "--log-format json run -f x", "lab up", "--help", "--version", "-V", "", "check -f x"] {
            assert!(!is_haproxy_style(&args(no)), "{no}");
        }
    }

    #[test]
    fn parses_haproxys_options() {
        let inv = parse(&args("-d -dM -dW -db -q -p /run/p.pid -f x.cfg -c -N 100 -L peer1")).unwrap();
        assert_eq!(inv.action, Action::Check);
        assert!(inv.debug && inv.zero_warning && inv.quiet);
        assert_eq!(inv.pidfile, Some("/run/p.pid".into()));
        assert_eq!(parse(&args("-cc 1")).unwrap().action, Action::Condition("1".into()));
        assert!(matches!(parse(&args("-W -f x")), Err(UsageError::Unsupported { .. })));
        assert!(matches!(parse(&args("-z")), Err(UsageError::Unknown(_))));
        assert!(matches!(parse(&args("-f")), Err(UsageError::MissingValue(_))));
        assert_eq!(parse(&args("-f a -f b")), Err(UsageError::TwoFiles));
    }

    #[test]
    fn the_version_line_parses_as_haproxys_scripts_read_it() {
        let text = version_text(true);
        let first = text.lines().next().unwrap();
        // scripts/run-regtests.sh: sed 's/.* [:=] //' then cut -d" " -f3.
        assert!(!first.contains(" : ") && !first.contains(" = "), "{first}");
        assert_eq!(first.split(' ').nth(2), Some("2.6.0-pglb-0.1.0").filter(|_| env!("CARGO_PKG_VERSION") == "0.1.0"));
        assert!(text.contains("\n  TARGET  = linux-glibc\n"));
        assert!(text.lines().any(|l| l.starts_with("Feature list : ") && l.contains("+THREAD") && l.contains("-OPENSSL")));
    }
}
