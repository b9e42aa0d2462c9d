//! Log set-up: `tracing` to stderr (or stdout with the global `log stdout`),
//! as text or JSON. `RUST_LOG` filters (default `info`).

use super::LogFormat;
use tracing_subscriber::EnvFilter;

pub fn init(format: LogFormat, to_stdout: bool) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_target(true);
    let result = match (format, to_stdout) {
        (LogFormat::Json, true) => builder.json().flatten_event(true).with_current_span(false).with_writer(std::io::stdout).try_init(),
        (LogFormat::Json, false) => builder.json().flatten_event(true).with_current_span(false).with_writer(std::io::stderr).try_init(),
        (LogFormat::Text, true) => builder.with_writer(std::io::stdout).try_init(),
        (LogFormat::Text, false) => builder.with_writer(std::io::stderr).try_init(),
    };
    let _ = result;
}
