//! Starting and stopping a pglb instance: bind every listener, start the
//! health checks and name resolution, run until told to stop, then drain.

use crate::config::{Config, Mode};
use crate::health;
use crate::proxy::listener;
use crate::state::Runtime;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::task::TaskTracker;

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("{file}:{line}: frontend '{frontend}' cannot listen on {addr}: {source}")]
    Bind { file: String, line: usize, frontend: String, addr: SocketAddr, source: std::io::Error },
    #[error("{file}:{line}: cannot open stats socket {path}: {source}")]
    Socket { file: String, line: usize, path: String, source: std::io::Error },
}

/// A running instance.
pub struct Running {
    pub runtime: Arc<Runtime>,
    /// Bound addresses per frontend (port 0 in the config becomes the real port).
    pub addrs: Vec<(String, SocketAddr)>,
    sessions: TaskTracker,
    background: TaskTracker,
}

impl Running {
    /// The first address a frontend listens on.
    pub fn addr(&self, frontend: &str) -> Option<SocketAddr> {
        self.addrs.iter().find(|(f, _)| f == frontend).map(|(_, a)| *a)
    }

    /// Stops accepting sessions (new clients get a PostgreSQL FATAL
    /// 57P01), waits for open sessions up to `hard-stop-after`, then closes
    /// what is left. A second call to `force` ends the wait early.
    pub async fn shutdown(self, force: impl std::future::Future<Output = ()>) {
        let rt = &self.runtime;
        rt.stopping.cancel();
        let open = rt.sessions.cur.load(std::sync::atomic::Ordering::Relaxed);
        tracing::info!(open_sessions = open, hard_stop_after = ?rt.config.global.hard_stop_after, "pglb is stopping: waiting for sessions to finish");
        self.sessions.close();
        let drained = async {
            match rt.config.global.hard_stop_after {
                Some(limit) => tokio::time::timeout(limit, self.sessions.wait()).await.is_ok(),
                None => {
                    self.sessions.wait().await;
                    true
                }
            }
        };
        let clean = tokio::select! {
            d = drained => d,
            _ = force => false,
        };
        let left = rt.sessions.cur.load(std::sync::atomic::Ordering::Relaxed);
        if !clean && left > 0 {
            tracing::warn!(closing_sessions = left, "hard stop: closing the remaining sessions");
        }
        rt.hard_stop.cancel();
        // Closed sessions finish promptly once hard_stop fires.
        let _ = tokio::time::timeout(Duration::from_secs(5), self.sessions.wait()).await;
        self.background.close();
        tracing::info!("pglb stopped");
    }
}

/// Binds every listener and starts serving.
pub async fn start(config: Config) -> Result<Running, StartError> {
    let config = Arc::new(config);
    let rt = Runtime::new(config.clone());
    let sessions = TaskTracker::new();
    let background = TaskTracker::new();
    let mut addrs = Vec::new();
    let mut listeners = Vec::new();
    for fe in &rt.frontends {
        for b in &fe.cfg.binds {
            let l = listener::bind(b).map_err(|source| StartError::Bind {
                file: config.file.display().to_string(),
                line: b.line,
                frontend: fe.cfg.name.clone(),
                addr: b.addr,
                source,
            })?;
            let local = l.local_addr().unwrap_or(b.addr);
            addrs.push((fe.cfg.name.clone(), local));
            listeners.push((fe.clone(), l));
        }
    }
    let mut sockets = Vec::new();
    for s in &config.global.stats_sockets {
        let l = crate::admin::bind(s).map_err(|source| StartError::Socket {
            file: config.file.display().to_string(),
            line: s.line,
            path: s.path.display().to_string(),
            source,
        })?;
        sockets.push((l, s.level));
    }
    for (l, level) in sockets {
        background.spawn(crate::admin::serve(rt.clone(), l, level));
    }
    for (fe, l) in listeners {
        tracing::info!(frontend = %fe.cfg.name, addr = %l.local_addr().map(|a| a.to_string()).unwrap_or_default(), "listening");
        if fe.cfg.mode == Mode::Http {
            background.spawn(crate::stats::http::serve(rt.clone(), fe, l));
        } else {
            background.spawn(listener::accept_loop(rt.clone(), fe, l, sessions.clone()));
        }
    }
    health::start(&rt, &background);
    Ok(Running { runtime: rt, addrs, sessions, background })
}
