//! HAProxy's configuration language, as pglb understands it.
//!
//! Text flows one way: `lexer` (words and line numbers) -> `parse` (sections)
//! -> `global`/`proxy`/`server`/`check`/`resolvers` (keywords) -> `model`
//! (validated, defaults filled in) -> `lint` (PostgreSQL-aware warnings).

mod addr;
mod check;
pub mod cond;
mod error;
mod global;
pub mod keywords;
mod lexer;
mod lint;
pub mod log;
pub mod logformat;
pub mod model;
mod parse;
mod proxy;
mod resolvers;
mod server;
pub mod tcprules;
pub mod units;

pub use check::decode_hex;
pub use error::{ConfigError, Invalid, Warning};
pub use model::*;
pub use parse::{Loaded, Report};
pub use server::dynamic as dynamic_server;

use std::path::Path;

/// Reads and validates a configuration file.
pub fn load(path: &Path) -> Result<Loaded, ConfigError> {
    report(path).into_result()
}

/// Reads a configuration file and reports every error and warning.
pub fn report(path: &Path) -> Report {
    match std::fs::read_to_string(path) {
        Ok(text) => report_str(path, &text),
        Err(e) => Report { config: None, errors: vec![ConfigError::file(path, format!("cannot read the configuration: {e}"))], warnings: Vec::new() },
    }
}

/// The words of one line, quoted and expanded as in a configuration file
/// (`-cc EXPR` takes its condition this way).
pub fn words_of(text: &str) -> Result<lexer::Words, Invalid> {
    lexer::split_line_noting(text, &lexer::Overlay::new(), &mut Vec::new())
}

/// Validates configuration text; `path` is used in messages only.
pub fn parse_str(path: &Path, text: &str) -> Result<Loaded, ConfigError> {
    report_str(path, text).into_result()
}

pub fn report_str(path: &Path, text: &str) -> Report {
    let mut report = match lexer::tokenize(path, text) {
        Ok(lines) => parse::parse_lines(path, lines),
        Err(e) => Report { config: None, errors: vec![e], warnings: Vec::new() },
    };
    for error in report.errors.iter_mut().flat_map(|e| match e {
        ConfigError::Many(all) => all.iter_mut().collect::<Vec<_>>(),
        one => vec![one],
    }) {
        if let ConfigError::At { line, message, .. } = error
            && let Some(raw) = text.lines().nth(*line - 1)
        {
            let unset = lexer::missing_variables(raw);
            if !unset.is_empty() {
                let (names, verb) = (unset.join(", "), if unset.len() == 1 { "is" } else { "are" });
                message.push_str(&format!(
                    " (this line uses {names}, which {verb} not set in pglb's environment: HAProxy's rule expands an unset variable to nothing)"
                ));
            }
        }
    }
    report
}

/// Keywords with an effect in pglb, for the documentation test.
pub const IMPLEMENTED: &[&str] = &[
    "global",
    "defaults",
    "frontend",
    "backend",
    "listen",
    "resolvers",
    "maxconn",
    "nbthread",
    "hard-stop-after",
    "ca-base",
    "crt-base",
    "ssl-server-verify",
    "pidfile",
    "ulimit-n",
    "log",
    "stats socket",
    "stats timeout",
    "setenv",
    "presetenv",
    "unsetenv",
    "mode",
    "bind",
    "default_backend",
    "use_backend",
    "acl",
    "balance",
    "retries",
    "timeout connect",
    "timeout client",
    "timeout server",
    "timeout queue",
    "timeout check",
    "timeout tunnel",
    "timeout client-fin",
    "timeout server-fin",
    "option redispatch",
    "option tcplog",
    "option dontlognull",
    "option clitcpka",
    "option srvtcpka",
    "option tcpka",
    "clitcpka-cnt",
    "clitcpka-idle",
    "clitcpka-intvl",
    "srvtcpka-cnt",
    "srvtcpka-idle",
    "srvtcpka-intvl",
    "option allbackups",
    "option log-health-checks",
    "option tcp-check",
    "option pgsql-check",
    "option httpchk",
    "tcp-check connect",
    "tcp-check send",
    "tcp-check send-binary",
    "tcp-check expect",
    "tcp-check comment",
    "http-check expect",
    "http-check send",
    "default-server",
    "server",
    "disabled",
    "enabled",
    "stats enable",
    "stats uri",
    "stats refresh",
    "stats auth",
    "stats realm",
    "stats hide-version",
    "stats admin",
    "check",
    "no-check",
    "inter",
    "fastinter",
    "downinter",
    "rise",
    "fall",
    "weight",
    "backup",
    "maxqueue",
    "port",
    "addr",
    "on-marked-down",
    "on-marked-up",
    "init-addr",
    "resolvers",
    "resolve-prefer",
    "tcp-ut",
    "no-ssl",
    "ssl",
    "check-ssl",
    "no-check-ssl",
    "verify",
    "ca-file",
    "crt",
    "sni",
    "verifyhost",
    "nameserver",
    "parse-resolv-conf",
    "hold",
    "timeout resolve",
    "timeout retry",
    "resolve_retries",
];
