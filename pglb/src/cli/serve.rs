//! `pglb run -f FILE`: load, bind, serve until SIGTERM/SIGINT, drain.

use super::{LogFormat, logging};
use crate::config::{self, Config};
use std::path::Path;
use std::process::ExitCode;

/// How to run, beyond the configuration file.
#[derive(Debug, Clone)]
pub struct Options {
    pub format: LogFormat,
    /// Debug-level logs by default (HAProxy's `-d`).
    pub debug: bool,
    /// Refuse to start on a warning HAProxy would give too (`-dW`).
    pub zero_warning: bool,
    /// Over `pidfile` in global (`-p`).
    pub pidfile: Option<std::path::PathBuf>,
}

pub fn run(file: &Path, format: LogFormat) -> ExitCode {
    run_with(file, Options { format, debug: false, zero_warning: false, pidfile: None })
}

pub fn run_with(file: &Path, options: Options) -> ExitCode {
    let format = options.format;
    let loaded = match config::load(file) {
        Ok(l) => l,
        Err(e) => {
            for err in e.into_vec() {
                eprintln!("{err}");
            }
            eprintln!("pglb: the configuration is not valid; nothing started (check it with: pglb check -f {})", file.display());
            return ExitCode::from(1);
        }
    };
    let to_stdout = std::fs::read_to_string(file).map(|t| logs_to_stdout(&t)).unwrap_or(false);
    logging::init_with(format, to_stdout, if options.debug { "debug" } else { "info" });
    for w in &loaded.warnings {
        tracing::warn!(target: "pglb::config", "{w}");
    }
    if options.zero_warning && loaded.warnings.iter().any(|w| !w.advice) {
        eprintln!("[ALERT] config : Some warnings were found and 'zero-warning' is set. Aborting.");
        return ExitCode::from(1);
    }
    let mut config = loaded.config;
    if let Some(p) = options.pidfile {
        config.global.pidfile = Some(p);
    }
    if let Err(e) = prepare_process(&config) {
        eprintln!("pglb: {e}");
        return ExitCode::from(1);
    }
    // This thread runs checks, stats, the runtime API and signals; sessions
    // run on `nbthread` threads of their own (proxy::workers).
    let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("pglb: cannot start the runtime: {e}");
            return ExitCode::from(1);
        }
    };
    let pidfile = config.global.pidfile.clone();
    let code = runtime.block_on(serve(config));
    if let Some(p) = pidfile {
        let _ = std::fs::remove_file(p);
    }
    code
}

/// `log stdout` in the global section sends pglb's logs to stdout.
fn logs_to_stdout(text: &str) -> bool {
    let mut in_global = false;
    for line in text.lines() {
        let words: Vec<&str> = line.split('#').next().unwrap_or("").split_whitespace().collect();
        match words.as_slice() {
            ["global", ..] => in_global = true,
            ["defaults" | "frontend" | "backend" | "listen" | "resolvers", ..] => in_global = false,
            ["log", "stdout", ..] if in_global => return true,
            _ => {}
        }
    }
    false
}

/// Why the process could not be prepared.
#[derive(Debug, thiserror::Error)]
enum PrepareError {
    #[error("ulimit-n {n}: {source}")]
    UlimitN { n: u64, source: std::io::Error },
    #[error("pidfile {}: {source}", .path.display())]
    Pidfile { path: std::path::PathBuf, source: std::io::Error },
}

/// `ulimit-n` and `pidfile`. Without `ulimit-n`, the soft file-descriptor
/// limit is raised to the hard one, as HAProxy sizes its own: each session
/// needs two descriptors and the usual soft limit of 1024 would cap pglb at
/// about 500 sessions.
fn prepare_process(config: &Config) -> Result<(), PrepareError> {
    if let Some(n) = config.global.ulimit_n {
        let lim = libc::rlimit { rlim_cur: n, rlim_max: n };
        // SAFETY: setrlimit with a valid, initialised struct.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &lim) } != 0 {
            return Err(PrepareError::UlimitN { n, source: std::io::Error::last_os_error() });
        }
    } else {
        let mut lim = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
        // SAFETY: getrlimit/setrlimit with a valid struct.
        unsafe {
            if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) == 0 && lim.rlim_cur < lim.rlim_max {
                lim.rlim_cur = lim.rlim_max;
                libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
            }
        }
    }
    if let Some(p) = &config.global.pidfile {
        std::fs::write(p, format!("{}\n", std::process::id())).map_err(|source| PrepareError::Pidfile { path: p.clone(), source })?;
    }
    Ok(())
}

async fn serve(config: Config) -> ExitCode {
    use tokio::signal::unix::{SignalKind, signal};
    let running = match crate::run::start(config).await {
        Ok(r) => r,
        Err(e) => {
            eprintln!("pglb: {e}");
            return ExitCode::from(1);
        }
    };
    let (Ok(mut term), Ok(mut int), Ok(mut hup)) = (signal(SignalKind::terminate()), signal(SignalKind::interrupt()), signal(SignalKind::hangup()))
    else {
        eprintln!("pglb: cannot install signal handlers");
        return ExitCode::from(1);
    };
    loop {
        tokio::select! {
            _ = term.recv() => break,
            _ = int.recv() => break,
            // The outcome (applied or refused) is logged by reload itself.
            _ = hup.recv() => { let _ = running.reload().await; }
        }
    }
    // A second SIGTERM/SIGINT closes the remaining sessions at once.
    let force = async move {
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
        }
    };
    running.shutdown(force).await;
    ExitCode::SUCCESS
}

#[cfg(test)]
mod tests {
    #[test]
    fn log_stdout_only_in_global() {
        assert!(super::logs_to_stdout("global\n    log stdout local0 info\n"));
        assert!(!super::logs_to_stdout("defaults\n    log stdout local0\n"));
    }
}
