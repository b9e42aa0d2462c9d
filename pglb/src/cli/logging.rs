//! Log set-up: `tracing` to stderr (or stdout with the global `log stdout`),
//! as text or JSON. `RUST_LOG` filters (default `info`). Text is coloured only
//! when it goes to a terminal and `NO_COLOR` is unset, so files, pipes and
//! journald get plain lines.

use super::LogFormat;
use std::io::IsTerminal;
use tracing_subscriber::EnvFilter;

pub fn init(format: LogFormat, to_stdout: bool) {
    init_with(format, to_stdout, "info")
}

/// Like `init`, with another default filter (used where connection lines would drown the output).
pub fn init_with(format: LogFormat, to_stdout: bool, default_filter: &str) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default_filter));
    let colour = std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty())
        && if to_stdout { std::io::stdout().is_terminal() } else { std::io::stderr().is_terminal() };
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_target(true).with_ansi(colour);
    let result = match (format, to_stdout) {
        (LogFormat::Json, true) => builder.json().flatten_event(true).with_current_span(false).with_writer(std::io::stdout).try_init(),
        (LogFormat::Json, false) => builder.json().flatten_event(true).with_current_span(false).with_writer(std::io::stderr).try_init(),
        (LogFormat::Text, true) => builder.with_writer(std::io::stdout).try_init(),
        (LogFormat::Text, false) => builder.with_writer(std::io::stderr).try_init(),
    };
    let _ = result;
}
