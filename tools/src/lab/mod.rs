//! A throw-away local PostgreSQL cluster: one primary and N streaming
//! replicas on 127.0.0.1, for the integration tests and `pglb lab`.
//!
//! The servers are real PostgreSQL processes started with `pg_ctl`, so they
//! outlive the process that started them: `Lab::open` finds them again from
//! the state file in the lab directory, and `Lab::down` (or
//! [`cleanup_at_exit`]) removes them.
//!
//! Layout of a lab directory `DIR`:
//! - `DIR/lab.state`: what `up` created (see `state.rs`);
//! - `DIR/NODE/`: data directory of node `NODE`, which is also the
//!   directory of its unix socket;
//! - `DIR/NODE.log`: the node's server log.

pub mod certs;
mod cleanup;
mod error;
mod fault;
mod layout;
mod node;
mod pg;
mod postmaster;
mod state;
mod status;

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

pub use cleanup::cleanup_at_exit;
pub use error::LabError;
pub use fault::Fault;

use layout::{check_dir, conninfo_value, node_at, node_at_entry, pick_ports, remove_if_exists};
use pg::Pg;
use state::{NodeEntry, State};
use status::Creds;

/// Name of the superuser created by `up`.
const SUPERUSER: &str = "postgres";
/// Its password: a lab listens on loopback only and lives minutes.
const PASSWORD: &str = "postgres";
/// Database created by `up` for the applications under test.
const APP_DB: &str = "appdb";
/// Lab creations tried when a chosen port is taken before PostgreSQL binds it.
const PORT_ATTEMPTS: u32 = 3;
/// Longest unix socket path the kernel accepts (sun_path is 108 bytes).
const MAX_SOCKET_PATH: usize = 107;

/// What `Lab::up` should build.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LabOptions {
    /// Lab directory; created if missing. Keep it short (unix sockets live
    /// in it), e.g. a tempdir under /tmp.
    pub dir: PathBuf,
    /// Number of streaming replicas besides the primary.
    pub replicas: usize,
    /// First port (the primary; replicas follow); `None` picks free ports.
    pub port_base: Option<u16>,
    /// Serve TLS with a self-signed certificate on every node.
    pub ssl: bool,
}

/// One PostgreSQL server of the lab.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Node {
    /// `primary`, `replica1`, `replica2`, ...
    pub name: String,
    /// TCP port on 127.0.0.1.
    pub port: u16,
    /// Data directory (also holds the unix socket).
    pub data_dir: PathBuf,
    /// Server log, `DIR/NAME.log`.
    pub log_file: PathBuf,
}

/// What a running node says it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Role {
    /// Accepts writes (`pg_is_in_recovery()` is false).
    Primary,
    /// In recovery: a hot standby.
    Replica,
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Role::Primary => "primary",
            Role::Replica => "replica",
        })
    }
}

/// One node's state as seen by `Lab::status`.
#[derive(Debug, Clone, PartialEq)]
pub struct NodeStatus {
    pub name: String,
    pub port: u16,
    /// Answered a query within 2 s (a frozen node counts as not running).
    pub running: bool,
    /// `None` when not running.
    pub role: Option<Role>,
    /// Replicas only: 0 when all received WAL is replayed, else the age of
    /// the last replayed transaction.
    pub replay_lag_seconds: Option<f64>,
    /// Replicas only: bytes of WAL the replica has not replayed yet,
    /// measured against the current primary's `pg_current_wal_lsn()`.
    pub lag_bytes: Option<u64>,
    /// Replicas only: the WAL receiver is streaming.
    pub streaming: Option<bool>,
}

/// A running (or at least existing) lab.
#[derive(Debug)]
pub struct Lab {
    dir: PathBuf,
    /// Primary first, then replicas in order.
    nodes: Vec<Node>,
    superuser: String,
    password: String,
    ssl: bool,
    pg: Pg,
}

impl Lab {
    /// Creates and starts a primary and `opts.replicas` streaming replicas,
    /// returning once every node accepts connections and every replica
    /// streams. On failure everything created is removed again.
    pub async fn up(opts: LabOptions) -> Result<Lab, LabError> {
        // Free ports are chosen by the kernel and released before PostgreSQL
        // binds them; another program can take one in between (a client's
        // outgoing connection gets its port from the same range). Then the
        // lab, already removed again, is made anew on other ports.
        let mut attempts = 1;
        loop {
            match Lab::up_once(&opts).await {
                Err(e) if opts.port_base.is_none() && e.port_taken() && attempts < PORT_ATTEMPTS => {
                    tracing::info!(attempt = attempts, "a lab port was taken before PostgreSQL bound it; choosing other ports");
                    attempts += 1;
                }
                result => return result,
            }
        }
    }

    async fn up_once(opts: &LabOptions) -> Result<Lab, LabError> {
        let pg = Pg::discover().await?;
        std::fs::create_dir_all(&opts.dir).map_err(|e| LabError::io(format!("creating {}", opts.dir.display()), e))?;
        let dir = opts.dir.canonicalize().map_err(|e| LabError::io(format!("resolving {}", opts.dir.display()), e))?;
        if let Some(state) = State::read(&dir)? {
            let running = state.nodes.iter().any(|n| postmaster::running_pid(&n.data_dir).is_some());
            return Err(if running { LabError::AlreadyRunning(dir) } else { LabError::StoppedLab(dir) });
        }
        let names: Vec<String> = std::iter::once("primary".to_string()).chain((1..=opts.replicas).map(|i| format!("replica{i}"))).collect();
        check_dir(&pg, &dir, &names)?;
        let ports = pick_ports(opts.port_base, names.len())?;
        let nodes = names.into_iter().zip(ports).map(|(name, port)| node_at(&dir, name, port)).collect();
        pg.chown(&dir)?;
        let lab = Lab { dir, nodes, superuser: SUPERUSER.into(), password: PASSWORD.into(), ssl: opts.ssl, pg };
        // Written first so that `down` can clean up an interrupted `up`.
        lab.state().write(&lab.dir)?;
        match lab.build().await {
            Ok(()) => Ok(lab),
            Err(e) => {
                tracing::debug!(error = %e, "lab up failed, removing what was created");
                lab.remove_after_failure().await;
                Err(e)
            }
        }
    }

    /// The lab described by `DIR/lab.state`, whether its nodes run or not.
    pub async fn open(dir: &Path) -> Result<Lab, LabError> {
        let no_lab = || LabError::NoLab { dir: dir.to_path_buf(), state: dir.join(state::STATE_FILE) };
        let dir = dir.canonicalize().map_err(|_| no_lab())?;
        let state = State::read(&dir)?.ok_or_else(no_lab)?;
        let pg = Pg::discover().await?;
        let nodes = state.nodes.into_iter().map(|e| node_at_entry(&dir, e)).collect();
        Ok(Lab { dir, nodes, superuser: state.superuser, password: state.password, ssl: state.ssl, pg })
    }

    /// Stops every node (fast, falling back to immediate and SIGKILL) and
    /// removes everything `up` created, including the lab directory when
    /// nothing else is left in it. On failure nothing is removed, so
    /// `down` can be retried.
    pub async fn down(self) -> Result<(), LabError> {
        // Replicas first: a primary's fast shutdown waits for its walsenders.
        for node in self.nodes.iter().rev() {
            node::stop_any_way(&self.pg, node).await?;
        }
        self.remove_files()
    }

    /// All nodes, primary first.
    pub fn nodes(&self) -> &[Node] {
        &self.nodes
    }

    /// The node called `name`.
    pub fn node(&self, name: &str) -> Option<&Node> {
        self.nodes.iter().find(|n| n.name == name)
    }

    /// The lab directory (canonical path).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The node created as primary (still this node after a promotion).
    pub fn primary(&self) -> &Node {
        &self.nodes[0]
    }

    /// The nodes created as replicas.
    pub fn replicas(&self) -> impl Iterator<Item = &Node> {
        self.nodes.iter().skip(1)
    }

    /// Whether the nodes serve TLS.
    pub fn ssl(&self) -> bool {
        self.ssl
    }

    /// A file of the lab's TLS (see `certs`): `ca.crt`, `server.pem`
    /// (certificate and key), `server.crt`, `server.key`.
    pub fn tls_file(&self, name: &str) -> PathBuf {
        self.dir.join(certs::TLS_DIR).join(name)
    }

    /// A key=value connection string (libpq / tokio-postgres) for `db` on
    /// `node` over TCP with the superuser's password.
    pub fn dsn(&self, node: &Node, db: &str) -> String {
        format!(
            "host=127.0.0.1 port={} user={} password={} dbname={}",
            node.port,
            conninfo_value(&self.superuser),
            conninfo_value(&self.password),
            conninfo_value(db)
        )
    }

    /// Superuser name and password.
    pub fn superuser(&self) -> (&str, &str) {
        (&self.superuser, &self.password)
    }

    /// Asks every node what it is; never fails, a node that does not answer
    /// within 2 s is reported as not running.
    pub async fn status(&self) -> Vec<NodeStatus> {
        status::collect(&self.creds(), &self.nodes).await
    }

    /// Applies a fault to the node called `node`.
    pub async fn fault(&self, node: &str, fault: Fault) -> Result<(), LabError> {
        let n = self.node(node).ok_or_else(|| LabError::UnknownNode {
            name: node.to_string(),
            known: self.nodes.iter().map(|n| n.name.as_str()).collect::<Vec<_>>().join(", "),
        })?;
        tracing::debug!(node, %fault, "injecting fault");
        match fault {
            Fault::Kill => node::kill(n).await,
            Fault::Stop => node::stop(&self.pg, n, "fast").await,
            Fault::Start => {
                node::start(&self.pg, n).await?;
                status::wait_ready(&self.creds(), n, Duration::from_secs(30)).await
            }
            Fault::Freeze => node::signal_postmaster(n, libc::SIGSTOP),
            Fault::Thaw => node::signal_postmaster(n, libc::SIGCONT),
            Fault::PauseReplay => self.replay_control(n, "pg_wal_replay_pause").await,
            Fault::ResumeReplay => self.replay_control(n, "pg_wal_replay_resume").await,
            Fault::Promote => node::promote(&self.pg, n).await,
            Fault::Rejoin => {
                let status = self.status().await;
                let primary = status
                    .iter()
                    .find(|s| s.running && s.role == Some(Role::Primary) && s.name != n.name)
                    .and_then(|s| self.node(&s.name))
                    .ok_or_else(|| LabError::NodeState { node: n.name.clone(), problem: "has no running primary to follow".into() })?;
                let log_start = std::fs::metadata(&n.log_file).map_or(0, |m| m.len());
                node::rejoin(&self.pg, n, primary, &self.superuser, &self.password).await?;
                status::wait_ready(&self.creds(), n, Duration::from_secs(30)).await?;
                self.wait_following(n, log_start).await
            }
        }
    }

    /// After `rejoin`: waits until the node streams from the primary. A node
    /// whose WAL went past the point where the new primary's timeline
    /// forked (it was killed, or stopped after the promotion) runs but never
    /// streams; say so instead of "done".
    async fn wait_following(&self, n: &Node, log_start: u64) -> Result<(), LabError> {
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            let streaming = self.status().await.into_iter().any(|s| s.name == n.name && s.streaming == Some(true));
            if streaming {
                return Ok(());
            }
            let log = std::fs::read(&n.log_file).unwrap_or_default();
            let new = String::from_utf8_lossy(log.get(log_start as usize..).unwrap_or_default());
            let diverged = new.lines().find(|l| l.contains("forked off current database system timeline") || l.contains("is not a child of"));
            if diverged.is_some() || Instant::now() >= deadline {
                let why = diverged.map_or_else(|| "it does not stream after 15 s".to_string(), |l| format!("its log says: {}", l.trim()));
                return Err(LabError::NodeState {
                    node: n.name.clone(),
                    problem: format!(
                        "runs as a replica but cannot follow the primary ({why}); its WAL diverged from the new timeline: it needed a clean `stop` before the promotion, or pg_rewind, or `lab down` and `up` again"
                    ),
                });
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Waits until every running replica streams from its primary.
    pub async fn wait_streaming(&self, timeout: Duration) -> Result<(), LabError> {
        let deadline = Instant::now() + timeout;
        loop {
            let lagging: Vec<String> = self
                .status()
                .await
                .into_iter()
                .filter(|s| s.running && s.role == Some(Role::Replica) && s.streaming != Some(true))
                .map(|s| s.name)
                .collect();
            if lagging.is_empty() {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(LabError::Timeout { what: format!("{} to stream from the primary", lagging.join(", ")), after: timeout });
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// A table of node, port, role, lag, streaming and data directory.
    pub fn render_table(&self, status: &[NodeStatus]) -> String {
        status::render(&self.nodes, status)
    }

    /// Credentials for our own connections.
    fn creds(&self) -> Creds {
        Creds { user: self.superuser.clone(), password: self.password.clone() }
    }

    /// What the state file records.
    fn state(&self) -> State {
        State {
            superuser: self.superuser.clone(),
            password: self.password.clone(),
            ssl: self.ssl,
            nodes: self.nodes.iter().map(|n| NodeEntry { name: n.name.clone(), port: n.port, data_dir: n.data_dir.clone() }).collect(),
        }
    }

    /// The work of `up` once the directory is prepared.
    async fn build(&self) -> Result<(), LabError> {
        let creds = self.creds();
        let ready = Duration::from_secs(30);
        let primary = self.primary();
        node::init_primary(&self.pg, &self.dir, primary, &self.superuser, &self.password, self.ssl).await?;
        node::start(&self.pg, primary).await?;
        status::wait_ready(&creds, primary, ready).await?;
        let client = status::connect(&creds, primary.port, "postgres", ready).await.map_err(|e| LabError::Sql {
            node: primary.name.clone(),
            what: "connecting".into(),
            detail: e.to_string(),
        })?;
        let create = format!("CREATE DATABASE {APP_DB}");
        client.simple_query(&create).await.map_err(|e| LabError::sql(&primary.name, create, &e))?;
        for replica in self.replicas() {
            node::base_backup(&self.pg, primary, replica, &self.superuser, &self.password).await?;
            node::start(&self.pg, replica).await?;
        }
        for replica in self.replicas() {
            status::wait_ready(&creds, replica, ready).await?;
        }
        self.wait_streaming(ready).await
    }

    /// Best-effort removal after a failed `up`: immediate stop, then files.
    async fn remove_after_failure(&self) {
        let dirs: Vec<PathBuf> = self.nodes.iter().map(|n| n.data_dir.clone()).collect();
        let _ = tokio::task::spawn_blocking(move || {
            for d in &dirs {
                postmaster::stop_now_blocking(d);
            }
        })
        .await;
        if let Err(e) = self.remove_files() {
            tracing::warn!(error = %e, "could not remove the failed lab's files");
        }
    }

    /// Removes the data directories, logs and state file, then the lab
    /// directory if that left it empty (it may be a user's directory).
    fn remove_files(&self) -> Result<(), LabError> {
        for n in &self.nodes {
            remove_if_exists(&n.data_dir, true)?;
            remove_if_exists(&n.log_file, false)?;
        }
        // `.pwfile` and the temporary state file exist only if `up` was interrupted.
        remove_if_exists(&self.dir.join(node::PWFILE), false)?;
        remove_if_exists(&self.dir.join(format!("{}.tmp", state::STATE_FILE)), false)?;
        remove_if_exists(&self.dir.join(state::STATE_FILE), false)?;
        remove_if_exists(&self.dir.join(certs::TLS_DIR), true)?;
        let _ = std::fs::remove_dir(&self.dir);
        Ok(())
    }
}
