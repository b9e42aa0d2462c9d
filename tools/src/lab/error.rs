//! Errors of the lab. Every message says what went wrong *and* what the
//! user can do about it, because the CLI prints them verbatim.

use std::path::PathBuf;
use std::time::Duration;

/// Everything that can go wrong while running a lab.
#[derive(Debug, thiserror::Error)]
pub enum LabError {
    /// No PostgreSQL server binaries were found on this machine.
    #[error(
        "PostgreSQL server binaries (initdb, pg_ctl, postgres) not found via `pg_config --bindir` \
         or in /usr/lib/postgresql/*/bin; install with `apt-get install -y postgresql`"
    )]
    PostgresNotFound,

    /// `up` was asked to start a lab where one is already running.
    #[error("lab already running in {}; use `pglb lab down --dir {}` first", .0.display(), .0.display())]
    AlreadyRunning(PathBuf),

    /// `up` found a lab whose nodes are all stopped.
    #[error(
        "a stopped lab exists in {}; remove it with `pglb lab down --dir {}` or restart its nodes \
         with `pglb lab fault --dir {} NODE start`",
        .0.display(), .0.display(), .0.display()
    )]
    StoppedLab(PathBuf),

    /// `open` found no state file.
    #[error("no lab in {} (missing {}); start one with `pglb lab up --dir {}`", .dir.display(), .state.display(), .dir.display())]
    NoLab { dir: PathBuf, state: PathBuf },

    /// The state file exists but cannot be understood.
    #[error("lab state file {} is damaged ({reason}); stop the nodes by hand with `pg_ctl stop -D DATADIR` and remove the directory", .path.display())]
    BadState { path: PathBuf, reason: String },

    /// The directory cannot host a lab (path too long, not reachable, not empty...).
    #[error("cannot use {} as lab directory: {reason}", .dir.display())]
    BadDir { dir: PathBuf, reason: String },

    /// PostgreSQL refuses to run as root and there is no account to switch to.
    #[error(
        "running as root but there is no `postgres` account to run PostgreSQL as; \
         create it with `adduser --system --group postgres` or run as a normal user"
    )]
    NoPostgresAccount,

    /// `LabOptions` that cannot work.
    #[error("invalid lab options: {0}")]
    BadOptions(String),

    /// A node name that is not part of the lab.
    #[error("no node named `{name}` in this lab; known nodes: {known}")]
    UnknownNode { name: String, known: String },

    /// A fault name that `Fault::from_str` does not know.
    #[error("unknown fault `{0}`; use one of kill, stop, start, freeze, thaw, pause-replay, resume-replay, promote")]
    UnknownFault(String),

    /// The node is not in the state the operation needs (e.g. `stop` on a stopped node).
    #[error("node {node} {problem}")]
    NodeState { node: String, problem: String },

    /// A filesystem operation failed.
    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },

    /// An external command (initdb, pg_ctl, pg_basebackup, openssl...) failed.
    #[error("{what} failed: {detail}")]
    Command { what: String, detail: String },

    /// PostgreSQL did not start; the tail of its log usually says why.
    #[error("PostgreSQL node {node} did not start ({detail}); last lines of {}:\n{log_tail}", .log.display())]
    NodeStart { node: String, detail: String, log: PathBuf, log_tail: String },

    /// A SQL statement or connection to a node failed.
    #[error("node {node}: {what} failed: {detail}")]
    Sql { node: String, what: String, detail: String },

    /// Something did not happen in time.
    #[error("timed out after {:.0?} waiting for {what}; look at the node logs in the lab directory", .after)]
    Timeout { what: String, after: Duration },
}

impl LabError {
    /// Wraps an `io::Error` with a description of what was being done.
    pub(crate) fn io(what: impl Into<String>, source: std::io::Error) -> Self {
        LabError::Io { what: what.into(), source }
    }

    /// A node could not listen because its port was taken meanwhile.
    pub(crate) fn port_taken(&self) -> bool {
        matches!(self, LabError::NodeStart { log_tail, .. } if log_tail.contains("could not bind") && log_tail.contains("Address already in use"))
    }

    /// Wraps a tokio-postgres error; its `Display` alone says only "db error",
    /// so the server's message is extracted.
    pub(crate) fn sql(node: &str, what: impl Into<String>, err: &tokio_postgres::Error) -> Self {
        LabError::Sql { node: node.to_string(), what: what.into(), detail: pg_error_detail(err) }
    }
}

/// The most useful text of a tokio-postgres error: the server message when
/// there is one, else the error and its source chain.
pub(crate) fn pg_error_detail(err: &tokio_postgres::Error) -> String {
    if let Some(db) = err.as_db_error() {
        return format!("{}: {}", db.severity(), db.message());
    }
    let mut text = err.to_string();
    let mut source = std::error::Error::source(err);
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::LabError;

    #[test]
    fn a_port_taken_meanwhile_is_told_apart() {
        let start = |tail: &str| LabError::NodeStart {
            node: "primary".into(),
            detail: "pg_ctl start failed".into(),
            log: "x.log".into(),
            log_tail: tail.into(),
        };
        // PostgreSQL 15's words (seen in CI when another test's connection took the port).
        let taken =
            "LOG:  could not bind IPv4 address \"127.0.0.1\": Address already in use\nHINT:  Is another postmaster already running on port 44375?";
        assert!(start(taken).port_taken());
        assert!(!start("FATAL:  data directory \"/x\" has invalid permissions").port_taken());
        assert!(!LabError::Command { what: "initdb".into(), detail: "Address already in use".into() }.port_taken());
    }
}
