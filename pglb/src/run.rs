//! Starting, reloading and stopping a pglb instance.
//!
//! Listening sockets outlive configurations: a reload (SIGHUP, or `reload`
//! on the runtime API) validates the new file, binds only the new
//! addresses, swaps the runtime that accept loops read, closes removed
//! binds, and retires the old generation's checks. Sessions keep the
//! generation they started in; sessions on servers the new configuration
//! removed or changed are closed after `hard-stop-after` (if set). An
//! invalid configuration changes nothing.

use crate::config::{self, Config, Level, Mode};
use crate::health;
use crate::proxy::listener;
use crate::proxy::workers::Workers;
use crate::state::{BindKey, Runtime};
use arc_swap::ArcSwap;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// A reload that took effect: what changed, logged and answered to `reload`.
#[derive(Debug, Clone)]
pub struct Reloaded {
    pub generation: u64,
    pub file: PathBuf,
    pub frontends: usize,
    pub backends: usize,
    /// The binds opened (`FRONTEND ADDR`) and closed (also stats sockets).
    pub added: Vec<String>,
    pub removed: Vec<String>,
}

impl std::fmt::Display for Reloaded {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "configuration generation {} loaded from {}: {} frontend(s), {} backend(s); binds added: [{}], removed: [{}]",
            self.generation,
            self.file.display(),
            self.frontends,
            self.backends,
            self.added.join(", "),
            self.removed.join(", ")
        )
    }
}

/// Why a reload was refused; the running configuration stays in every case.
#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    #[error("reload refused, the running configuration stays:\n{0}")]
    Config(config::ConfigError),
    #[error("reload refused: frontend '{frontend}' cannot listen on {addr}: {source}")]
    Listen { frontend: String, addr: SocketAddr, source: std::io::Error },
    #[error("reload refused: cannot open stats socket {}: {source}", .path.display())]
    StatsSocket { path: PathBuf, source: std::io::Error },
}

impl ReloadError {
    fn io(&self) -> Option<&std::io::Error> {
        match self {
            ReloadError::Config(_) => None,
            ReloadError::Listen { source, .. } | ReloadError::StatsSocket { source, .. } => Some(source),
        }
    }

    /// pglb ran out of descriptors or memory while binding.
    pub fn is_resource_exhaustion(&self) -> bool {
        self.io().is_some_and(crate::os::is_resource_exhaustion)
    }

    /// The same file may load later without an edit: an address still in
    /// use (an old process lingering) or a resource shortage. A refused
    /// configuration needs the file fixed.
    pub fn is_retryable(&self) -> bool {
        self.is_resource_exhaustion() || self.io().is_some_and(|e| e.kind() == std::io::ErrorKind::AddrInUse)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("{file}:{line}: frontend '{frontend}' cannot listen on {addr}: {source}")]
    Bind { file: String, line: usize, frontend: String, addr: SocketAddr, source: std::io::Error },
    #[error("cannot start the session threads: {0}")]
    Threads(std::io::Error),
    #[error("{file}:{line}: cannot open stats socket {path}: {source}")]
    Socket { file: String, line: usize, path: String, source: std::io::Error },
}

/// A runtime API socket's identity: path, level and file mode.
type SocketKey = (PathBuf, Level, Option<u32>);

/// A bound TCP listener and what closes it.
struct Bound {
    local: SocketAddr,
    frontend: String,
    stop: CancellationToken,
}

/// What every listener, the runtime API and the signal handlers share.
pub struct Control {
    current: ArcSwap<Runtime>,
    binds: Mutex<HashMap<BindKey, Bound>>,
    /// Runtime API sockets by (path, level, mode).
    sockets: Mutex<HashMap<SocketKey, CancellationToken>>,
    /// Every configuration generation with sessions left (a hard stop closes them all).
    generations: Mutex<Vec<std::sync::Weak<Runtime>>>,
    /// Closes every listener at exit.
    closed: CancellationToken,
    sessions: TaskTracker,
    background: TaskTracker,
    /// One reload at a time.
    reloading: tokio::sync::Mutex<()>,
    /// The threads that accept and run client sessions.
    workers: Workers,
}

impl Control {
    /// The configuration generation new sessions use.
    pub fn runtime(&self) -> Arc<Runtime> {
        self.current.load_full()
    }

    pub fn sessions(&self) -> &TaskTracker {
        &self.sessions
    }

    /// The threads sessions run on.
    pub fn workers(&self) -> &Workers {
        &self.workers
    }

    /// Re-reads the configuration file and applies it; on any error the
    /// running configuration is untouched and the error is returned.
    pub async fn reload_file(self: &Arc<Self>) -> Result<Reloaded, ReloadError> {
        let _one = self.reloading.lock().await;
        let old = self.runtime();
        let file = old.config.file.clone();
        let report = config::report(&file);
        let loaded = match report.into_result() {
            Ok(l) => l,
            Err(e) => {
                let refused = ReloadError::Config(config::ConfigError::Many(e.into_vec()));
                tracing::error!(target: "pglb::reload", file = %file.display(), "{refused}");
                return Err(refused);
            }
        };
        for w in &loaded.warnings {
            tracing::warn!(target: "pglb::config", "{w}");
        }
        self.install(loaded.config, old).await
    }

    /// Applies `config` as the next generation (a reload's second half;
    /// the runtime API's `add server`/`del server` call it with the running
    /// configuration changed). Held under the reload lock by the caller or
    /// taken here.
    pub async fn apply(self: &Arc<Self>, edit: impl FnOnce(&mut Config)) -> Result<Reloaded, ReloadError> {
        let _one = self.reloading.lock().await;
        let old = self.runtime();
        let mut config = (*old.config).clone();
        edit(&mut config);
        self.install(config, old).await
    }

    async fn install(self: &Arc<Self>, mut config: Config, old: Arc<Runtime>) -> Result<Reloaded, ReloadError> {
        let file = config.file.clone();
        if config.global.nbthread != old.config.global.nbthread {
            // The session threads are started once; keep reporting the real count.
            tracing::warn!(target: "pglb::reload", "nbthread changed: the new thread count takes effect at the next restart");
            config.global.nbthread = old.config.global.nbthread;
        }
        let new = Runtime::next(Arc::new(config), Some(&old));
        // Bind what is new before changing anything, so a busy port fails the whole reload.
        let wanted = wanted_binds(&new.config);
        let (fresh_tcp, fresh_unix) = {
            let binds = self.binds.lock().unwrap_or_else(|e| e.into_inner());
            let sockets = self.sockets.lock().unwrap_or_else(|e| e.into_inner());
            let tcp: Vec<_> = wanted.iter().filter(|(k, ..)| !binds.contains_key(k)).cloned().collect();
            let unix: Vec<_> =
                new.config.global.stats_sockets.iter().filter(|s| !sockets.contains_key(&(s.path.clone(), s.level, s.mode))).cloned().collect();
            (tcp, unix)
        };
        let mut opened_tcp = Vec::new();
        for (key, fe, bind) in fresh_tcp {
            match listener::bind(&bind) {
                Ok(l) => opened_tcp.push((key, fe, l)),
                Err(source) => return Err(ReloadError::Listen { frontend: fe, addr: bind.addr, source }),
            }
        }
        // Sockets whose path stays but whose level/mode changes are rebound:
        // all bound beside their paths first, then put in place, then the
        // old ones closed, so a refused reload leaves the runtime API as it was.
        let mut pending_unix = Vec::new();
        for s in fresh_unix {
            match crate::admin::bind_beside(&s) {
                Ok(p) => pending_unix.push((s, p)),
                Err(source) => return Err(ReloadError::StatsSocket { path: s.path.clone(), source }),
            }
        }
        let mut opened_unix = Vec::new();
        for (s, p) in pending_unix {
            match p.put_in_place() {
                Ok(l) => opened_unix.push((s, l)),
                Err(e) => tracing::error!(target: "pglb::reload", path = %s.path.display(), error = %e, "stats socket could not be put in place"),
            }
        }
        for (s, _) in &opened_unix {
            self.close_socket_path(&s.path);
        }
        self.current.store(new.clone());
        {
            let mut generations = self.generations.lock().unwrap_or_else(|e| e.into_inner());
            generations.retain(|g| g.strong_count() > 0);
            generations.push(Arc::downgrade(&new));
        }
        let mut added = Vec::new();
        for (key, fe, l) in opened_tcp {
            added.push(format!("{fe} {}", l.local_addr().map(|a| a.to_string()).unwrap_or_default()));
            self.serve_tcp(key, fe, l);
        }
        for (s, l) in opened_unix {
            self.serve_unix(&s, l);
        }
        let removed = self.close_unwanted(&wanted, &new.config);
        health::start(&new, &self.background);
        old.retired.cancel();
        self.drain_removed_servers(&old, &new);
        let summary = Reloaded { generation: new.generation, file, frontends: new.frontends.len(), backends: new.backends.len(), added, removed };
        tracing::warn!(target: "pglb::reload", "{summary}");
        Ok(summary)
    }

    fn close_socket_path(&self, path: &std::path::Path) {
        let mut sockets = self.sockets.lock().unwrap_or_else(|e| e.into_inner());
        sockets.retain(|(p, ..), stop| {
            if p == path {
                stop.cancel();
            }
            p != path
        });
    }

    /// Closes listeners and sockets the new configuration no longer has.
    fn close_unwanted(&self, wanted: &[(BindKey, String, config::Bind)], cfg: &Config) -> Vec<String> {
        let mut removed = Vec::new();
        let mut binds = self.binds.lock().unwrap_or_else(|e| e.into_inner());
        binds.retain(|k, b| {
            let keep = wanted.iter().any(|(w, ..)| w == k);
            if !keep {
                b.stop.cancel();
                removed.push(format!("{} {}", b.frontend, b.local));
            }
            keep
        });
        let mut sockets = self.sockets.lock().unwrap_or_else(|e| e.into_inner());
        sockets.retain(|(p, l, m), stop| {
            let keep = cfg.global.stats_sockets.iter().any(|s| &s.path == p && s.level == *l && s.mode == *m);
            if !keep {
                stop.cancel();
                removed.push(format!("stats socket {}", p.display()));
            }
            keep
        });
        removed
    }

    /// Asks every session of every generation to close at its next
    /// transaction boundary.
    fn drain_sessions(&self) {
        for g in self.generations.lock().unwrap_or_else(|e| e.into_inner()).iter().filter_map(|g| g.upgrade()) {
            for s in g.backends.iter().flat_map(|b| b.servers.iter()) {
                s.drain_sessions();
            }
        }
    }

    /// Sessions on servers that are gone or changed drain up to
    /// `hard-stop-after`, then are closed.
    fn drain_removed_servers(&self, old: &Arc<Runtime>, new: &Arc<Runtime>) {
        let Some(limit) = new.config.global.hard_stop_after else { return };
        let leaving: Vec<_> = old.backends.iter().flat_map(|b| b.servers.iter()).filter(|s| !s.carried.load(Relaxed)).cloned().collect();
        if leaving.is_empty() {
            return;
        }
        let closed = self.closed.clone();
        self.background.spawn(async move {
            tokio::select! {
                _ = tokio::time::sleep(limit) => {
                    for s in leaving {
                        s.kill_sessions();
                    }
                }
                _ = closed.cancelled() => {}
            }
        });
    }

    fn serve_tcp(self: &Arc<Self>, key: BindKey, frontend: String, l: TcpListener) {
        let local = l.local_addr().unwrap_or(key.addr);
        let stop = self.closed.child_token();
        let mode = self.runtime().frontend_for(&key).map(|f| f.cfg.mode).unwrap_or(Mode::Tcp);
        tracing::info!(frontend = %frontend, addr = %local, "listening");
        if mode == Mode::Http {
            self.background.spawn(crate::stats::http::serve(self.clone(), key.clone(), l, stop.clone()));
        } else {
            self.background.spawn(listener::accept_loop(self.clone(), key.clone(), l, stop.clone()));
        }
        self.binds.lock().unwrap_or_else(|e| e.into_inner()).insert(key, Bound { local, frontend, stop });
    }

    fn serve_unix(self: &Arc<Self>, s: &config::StatsSocket, l: crate::admin::Listener) {
        let stop = self.closed.child_token();
        self.background.spawn(crate::admin::serve(self.clone(), l, s.level, stop.clone()));
        self.sockets.lock().unwrap_or_else(|e| e.into_inner()).insert((s.path.clone(), s.level, s.mode), stop);
    }
}

impl listener::Host for Control {
    fn runtime(&self) -> Arc<Runtime> {
        Control::runtime(self)
    }

    fn workers(&self) -> &Workers {
        Control::workers(self)
    }

    fn sessions(&self) -> &TaskTracker {
        Control::sessions(self)
    }
}

impl crate::stats::http::Source for Control {
    fn runtime(&self) -> Arc<Runtime> {
        Control::runtime(self)
    }
}

impl crate::admin::Host for Control {
    fn runtime(&self) -> Arc<Runtime> {
        Control::runtime(self)
    }

    type Reloaded = Reloaded;
    type ReloadError = ReloadError;

    fn reload(self: &Arc<Self>) -> impl std::future::Future<Output = Result<Reloaded, ReloadError>> + Send {
        self.reload_file()
    }

    fn apply(self: &Arc<Self>, edit: Box<dyn FnOnce(&mut Config) + Send>) -> impl std::future::Future<Output = Result<Reloaded, ReloadError>> + Send {
        Control::apply(self, edit)
    }
}

/// Every (key, frontend name, bind) a configuration listens on.
fn wanted_binds(cfg: &Config) -> Vec<(BindKey, String, config::Bind)> {
    cfg.frontends.iter().flat_map(|f| f.binds.iter().map(move |b| (BindKey::of(f, b), f.name.to_string(), b.clone()))).collect()
}

/// A running instance. Dropping it stops the session threads (and so
/// every session); [`Running::shutdown`] is the graceful way.
pub struct Running {
    pub control: Arc<Control>,
}

impl Drop for Running {
    fn drop(&mut self) {
        self.control.closed.cancel();
        self.control.workers.stop();
    }
}

impl Running {
    /// The configuration generation new sessions use.
    pub fn runtime(&self) -> Arc<Runtime> {
        self.control.runtime()
    }

    /// The first address a frontend listens on (port 0 becomes the real port).
    pub fn addr(&self, frontend: &str) -> Option<SocketAddr> {
        let binds = self.control.binds.lock().unwrap_or_else(|e| e.into_inner());
        let rt = self.runtime();
        let fe = rt.frontends.iter().find(|f| *f.cfg.name == *frontend)?;
        fe.cfg.binds.iter().find_map(|b| binds.get(&BindKey::of(&fe.cfg, b)).map(|x| x.local))
    }

    pub async fn reload(&self) -> Result<Reloaded, ReloadError> {
        self.control.reload_file().await
    }

    /// Stops gracefully. At once: `/ready` answers 503, idle sessions are
    /// closed, busy ones close at their next transaction boundary. For
    /// `grace`, new clients are still served (a load balancer needs a
    /// moment to notice); then they are refused (PostgreSQL FATAL 57P01),
    /// and the sessions they opened meanwhile are drained too. pglb returns
    /// as soon as no session is left, or when `hard-stop-after` (counted
    /// from the start) or `force` closes what is left.
    pub async fn shutdown(self, force: impl std::future::Future<Output = ()>) {
        let c = &self.control;
        let rt = c.runtime();
        let started = tokio::time::Instant::now();
        rt.soft_stop.cancel();
        let open = rt.sessions.cur.load(Relaxed);
        let grace = rt.config.global.grace.unwrap_or_default();
        tracing::info!(open_sessions = open, grace = %crate::config::units::fmt_duration(grace), hard_stop_after = %rt.config.global.hard_stop_after.map_or("none".into(), crate::config::units::fmt_duration), "pglb is stopping: idle sessions close now, busy ones at their next transaction boundary");
        c.drain_sessions();
        let mut force = std::pin::pin!(force);
        let forced = tokio::select! {
            _ = tokio::time::sleep(grace) => false,
            _ = force.as_mut() => true,
        };
        rt.stopping.cancel();
        c.drain_sessions();
        c.sessions.close();
        let drained = async {
            match rt.config.global.hard_stop_after {
                Some(limit) => tokio::time::timeout_at(started + limit, c.sessions.wait()).await.is_ok(),
                None => {
                    c.sessions.wait().await;
                    true
                }
            }
        };
        let clean = !forced
            && tokio::select! {
                d = drained => d,
                _ = force => false,
            };
        let left = rt.sessions.cur.load(Relaxed);
        if !clean && left > 0 {
            tracing::warn!(closing_sessions = left, "hard stop: closing the remaining sessions");
        }
        for g in c.generations.lock().unwrap_or_else(|e| e.into_inner()).iter().filter_map(|g| g.upgrade()) {
            g.hard_stop.cancel();
            for s in g.backends.iter().flat_map(|b| b.servers.iter()) {
                s.kill_sessions();
            }
        }
        rt.retired.cancel();
        // Closed sessions finish promptly once the switches are thrown.
        let _ = tokio::time::timeout(Duration::from_secs(5), c.sessions.wait()).await;
        c.closed.cancel();
        c.background.close();
        tracing::info!("pglb stopped");
    }
}

/// Binds every listener and starts serving.
pub async fn start(config: Config) -> Result<Running, StartError> {
    let workers = Workers::start(Workers::count(config.global.nbthread)).map_err(StartError::Threads)?;
    let rt = Runtime::new(Arc::new(config));
    let cfg = rt.config.clone();
    let control = Arc::new(Control {
        current: ArcSwap::new(rt.clone()),
        binds: Mutex::default(),
        sockets: Mutex::default(),
        generations: Mutex::new(vec![Arc::downgrade(&rt)]),
        closed: CancellationToken::new(),
        sessions: TaskTracker::new(),
        background: TaskTracker::new(),
        reloading: tokio::sync::Mutex::new(()),
        workers,
    });
    let file = cfg.file.display().to_string();
    let mut tcp = Vec::new();
    for (key, fe, b) in wanted_binds(&cfg) {
        let l =
            listener::bind(&b).map_err(|source| StartError::Bind { file: file.clone(), line: b.line, frontend: fe.clone(), addr: b.addr, source })?;
        tcp.push((key, fe, l));
    }
    let mut unix = Vec::new();
    for s in &cfg.global.stats_sockets {
        let l = crate::admin::bind(s).map_err(|source| StartError::Socket {
            file: file.clone(),
            line: s.line,
            path: s.path.display().to_string(),
            source,
        })?;
        unix.push((s.clone(), l));
    }
    for (key, fe, l) in tcp {
        control.serve_tcp(key, fe, l);
    }
    for (s, l) in unix {
        control.serve_unix(&s, l);
    }
    health::start(&rt, &control.background);
    Ok(Running { control })
}
