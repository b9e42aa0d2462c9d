//! Creating, starting and stopping one node with the PostgreSQL programs.

use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::Path;
use std::time::{Duration, Instant};

use super::Node;
use super::error::LabError;
use super::pg::Pg;
use super::postmaster;

/// Settings shared by every node. Durability is traded for speed (a lab
/// is thrown away), logs go to stderr which `pg_ctl -l` sends to
/// `DIR/NODE.log` so tests can read them.
const COMMON_SETTINGS: &str = "\
listen_addresses = '127.0.0.1'
wal_level = replica
max_wal_senders = 10
wal_keep_size = '256MB'
hot_standby = on
hot_standby_feedback = on
wal_retrieve_retry_interval = '1s'
fsync = off
synchronous_commit = off
full_page_writes = off
logging_collector = off
log_destination = 'stderr'
log_line_prefix = '%m [%p] %q%u@%d '
";

/// The client authentication of every node: trust over the node's own unix
/// socket (only the account running PostgreSQL can reach it), passwords over
/// TCP, replication allowed for the superuser.
const PG_HBA: &str = "\
# written by pglb lab
local all all trust
host all all 127.0.0.1/32 scram-sha-256
host replication all 127.0.0.1/32 scram-sha-256
";

/// initdb's password file in the lab directory, removed right after initdb.
pub(crate) const PWFILE: &str = ".pwfile";

/// Quotes a value for postgresql.conf.
fn conf_quote(value: &str) -> String {
    format!("'{}'", value.replace('\'', "''"))
}

/// Settings that differ per node; appended last so they override what a
/// replica copied from the primary's postgresql.conf.
fn node_settings(node: &Node) -> String {
    format!(
        "\n# pglb lab: node {name}\nport = {port}\nunix_socket_directories = {sock}\ncluster_name = {name_q}\n",
        name = node.name,
        port = node.port,
        sock = conf_quote(&node.data_dir.to_string_lossy()),
        name_q = conf_quote(&node.name),
    )
}

/// Appends text to a file.
fn append(path: &Path, text: &str) -> Result<(), LabError> {
    use std::io::Write;
    let what = || format!("writing {}", path.display());
    let mut f = std::fs::OpenOptions::new().append(true).open(path).map_err(|e| LabError::io(what(), e))?;
    f.write_all(text.as_bytes()).map_err(|e| LabError::io(what(), e))
}

/// Creates an empty data directory with the mode initdb/pg_basebackup want.
fn make_data_dir(pg: &Pg, dir: &Path) -> Result<(), LabError> {
    std::fs::DirBuilder::new().mode(0o700).create(dir).map_err(|e| LabError::io(format!("creating {}", dir.display()), e))?;
    pg.chown(dir)
}

/// initdb + configuration of the primary; creates a self-signed certificate
/// first when `ssl` so that base backups carry it to the replicas.
pub(crate) async fn init_primary(pg: &Pg, lab_dir: &Path, node: &Node, superuser: &str, password: &str, ssl: bool) -> Result<(), LabError> {
    make_data_dir(pg, &node.data_dir)?;
    let pwfile = lab_dir.join(PWFILE);
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&pwfile)
        .and_then(|mut f| std::io::Write::write_all(&mut f, format!("{password}\n").as_bytes()))
        .map_err(|e| LabError::io(format!("writing {}", pwfile.display()), e))?;
    pg.chown(&pwfile)?;
    let mut cmd = pg.pg_command("initdb");
    cmd.arg("-D")
        .arg(&node.data_dir)
        .args(["-U", superuser, "--auth-local=trust", "--auth-host=scram-sha-256"])
        .args(["-E", "UTF8", "--locale=C", "--no-sync", "--no-instructions"])
        .arg(format!("--pwfile={}", pwfile.display()));
    let result = pg.run(cmd, "initdb of the primary").await;
    let _ = std::fs::remove_file(&pwfile);
    result?;

    let mut settings = String::from("\n# pglb lab\n");
    settings += COMMON_SETTINGS;
    if ssl {
        make_certificate(pg, lab_dir, &node.data_dir)?;
        settings += "ssl = on\nssl_cert_file = 'server.crt'\nssl_key_file = 'server.key'\n";
    }
    settings += &node_settings(node);
    append(&node.data_dir.join("postgresql.conf"), &settings)?;
    let hba = node.data_dir.join("pg_hba.conf");
    std::fs::write(&hba, PG_HBA).map_err(|e| LabError::io(format!("writing {}", hba.display()), e))
}

/// The lab's server certificate (signed by its CA, see `certs`) in the
/// data directory. The key must be 0600 and owned by the server's account
/// or PostgreSQL refuses to start.
fn make_certificate(pg: &Pg, lab_dir: &Path, data_dir: &Path) -> Result<(), LabError> {
    super::certs::make(lab_dir)?;
    for name in ["server.crt", "server.key"] {
        let (from, to) = (lab_dir.join(super::certs::TLS_DIR).join(name), data_dir.join(name));
        std::fs::copy(&from, &to).map_err(|e| LabError::io(format!("copying {} to {}", from.display(), to.display()), e))?;
        std::fs::set_permissions(&to, std::fs::Permissions::from_mode(0o600)).map_err(|e| LabError::io(format!("chmod {}", to.display()), e))?;
        pg.chown(&to)?;
    }
    Ok(())
}

/// Clones the primary into a new replica with `pg_basebackup -R` (which
/// writes `standby.signal` and `primary_conninfo`, password included).
pub(crate) async fn base_backup(pg: &Pg, primary: &Node, replica: &Node, superuser: &str, password: &str) -> Result<(), LabError> {
    make_data_dir(pg, &replica.data_dir)?;
    let mut cmd = pg.pg_command("pg_basebackup");
    cmd.args(["-h", "127.0.0.1", "-p", &primary.port.to_string(), "-U", superuser])
        .arg("-D")
        .arg(&replica.data_dir)
        // -c fast: without it the backup waits for a spread checkpoint (~90 s).
        .args(["-R", "-X", "stream", "-c", "fast", "--no-sync"])
        .env("PGPASSWORD", password);
    pg.run(cmd, &format!("pg_basebackup of {}", replica.name)).await?;
    // The primary's socket lock files come along with the copy; they are
    // meaningless in the replica's directory.
    if let Ok(entries) = std::fs::read_dir(&replica.data_dir) {
        for entry in entries.flatten() {
            if entry.file_name().to_string_lossy().starts_with(".s.PGSQL.") {
                let _ = std::fs::remove_file(entry.path());
            }
        }
    }
    append(&replica.data_dir.join("postgresql.conf"), &node_settings(replica))
}

/// Last `lines` lines of a node's log, for error messages.
pub(crate) fn log_tail(node: &Node, lines: usize) -> String {
    match std::fs::read_to_string(&node.log_file) {
        Ok(text) => {
            let all: Vec<&str> = text.lines().collect();
            all[all.len().saturating_sub(lines)..].join("\n")
        }
        Err(e) => format!("(cannot read the log: {e})"),
    }
}

/// `pg_ctl start -w`, after clearing what a killed server left behind.
pub(crate) async fn start(pg: &Pg, node: &Node) -> Result<(), LabError> {
    if postmaster::running_pid(&node.data_dir).is_some() {
        return Err(LabError::NodeState { node: node.name.clone(), problem: "is already running; stop it first".into() });
    }
    // A killed server's children may still be exiting.
    wait_gone(node, Duration::from_secs(10)).await?;
    postmaster::remove_stale(&node.data_dir).map_err(|e| LabError::io(format!("removing stale postmaster.pid of {}", node.name), e))?;
    let mut cmd = pg.pg_command("pg_ctl");
    cmd.args(["start", "-w", "-t", "60", "-D"]).arg(&node.data_dir).arg("-l").arg(&node.log_file);
    match pg.run(cmd, "pg_ctl start").await {
        Ok(_) => Ok(()),
        Err(e) => {
            Err(LabError::NodeStart { node: node.name.clone(), detail: e.to_string(), log: node.log_file.clone(), log_tail: log_tail(node, 20) })
        }
    }
}

/// `pg_ctl stop -m MODE -w`. A frozen postmaster is thawed first, or it
/// would never see the request.
pub(crate) async fn stop(pg: &Pg, node: &Node, mode: &str) -> Result<(), LabError> {
    let Some(pid) = postmaster::running_pid(&node.data_dir) else {
        return Err(LabError::NodeState { node: node.name.clone(), problem: "is not running".into() });
    };
    let _ = postmaster::signal(pid, libc::SIGCONT);
    let mut cmd = pg.pg_command("pg_ctl");
    cmd.args(["stop", "-w", "-t", "30", "-m", mode, "-D"]).arg(&node.data_dir);
    pg.run(cmd, &format!("pg_ctl stop -m {mode} of {}", node.name)).await?;
    Ok(())
}

/// Stops a node by any means: fast, then immediate, then SIGKILL.
/// Used by `down`, which must succeed even on a misbehaving node.
pub(crate) async fn stop_any_way(pg: &Pg, node: &Node) -> Result<(), LabError> {
    if postmaster::running_pid(&node.data_dir).is_none() {
        return Ok(());
    }
    if let Err(e) = stop(pg, node, "fast").await {
        tracing::warn!(node = %node.name, error = %e, "fast stop failed, trying immediate");
        if let Err(e) = stop(pg, node, "immediate").await {
            tracing::warn!(node = %node.name, error = %e, "immediate stop failed, killing");
            kill(node).await?;
        }
    }
    Ok(())
}

/// SIGKILL to the postmaster, then wait until it and its children are gone
/// so that a following `start` works and `status` sees it down.
pub(crate) async fn kill(node: &Node) -> Result<(), LabError> {
    let pid =
        postmaster::running_pid(&node.data_dir).ok_or_else(|| LabError::NodeState { node: node.name.clone(), problem: "is not running".into() })?;
    postmaster::signal(pid, libc::SIGKILL).map_err(|e| LabError::io(format!("SIGKILL to {} (pid {pid})", node.name), e))?;
    wait_gone(node, Duration::from_secs(15)).await
}

/// Waits until no process of the node's server is left.
async fn wait_gone(node: &Node, limit: Duration) -> Result<(), LabError> {
    let deadline = Instant::now() + limit;
    while !postmaster::is_gone(&node.data_dir) {
        if Instant::now() >= deadline {
            return Err(LabError::Timeout { what: format!("the processes of {} to exit", node.name), after: limit });
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok(())
}

/// `pg_ctl promote -w`: the replica leaves recovery and accepts writes.
pub(crate) async fn promote(pg: &Pg, node: &Node) -> Result<(), LabError> {
    let mut cmd = pg.pg_command("pg_ctl");
    cmd.args(["promote", "-w", "-t", "30", "-D"]).arg(&node.data_dir);
    pg.run(cmd, &format!("pg_ctl promote of {}", node.name)).await.map(|_| ())
}

/// Starts a stopped node as a standby of `primary`: `standby.signal` and a
/// `primary_conninfo` appended to `postgresql.auto.conf` (the last setting
/// wins), the way `pg_basebackup -R` set up the replicas.
pub(crate) async fn rejoin(pg: &Pg, node: &Node, primary: &Node, superuser: &str, password: &str) -> Result<(), LabError> {
    if postmaster::running_pid(&node.data_dir).is_some() {
        return Err(LabError::NodeState { node: node.name.clone(), problem: "is running; stop it first (a clean stop: `stop`, not `kill`)".into() });
    }
    let signal = node.data_dir.join("standby.signal");
    std::fs::write(&signal, "").map_err(|e| LabError::io(format!("writing {}", signal.display()), e))?;
    pg.chown(&signal)?;
    let conninfo = format!(
        "host=127.0.0.1 port={} user={} password={} application_name={}",
        primary.port,
        super::conninfo_value(superuser),
        super::conninfo_value(password),
        super::conninfo_value(&node.name)
    );
    append(&node.data_dir.join("postgresql.auto.conf"), &format!("primary_conninfo = {}\n", conf_quote(&conninfo)))?;
    start(pg, node).await
}

/// Sends SIGSTOP/SIGCONT to the postmaster (freeze/thaw).
pub(crate) fn signal_postmaster(node: &Node, sig: libc::c_int) -> Result<(), LabError> {
    let pid =
        postmaster::running_pid(&node.data_dir).ok_or_else(|| LabError::NodeState { node: node.name.clone(), problem: "is not running".into() })?;
    postmaster::signal(pid, sig).map_err(|e| LabError::io(format!("signal {sig} to {} (pid {pid})", node.name), e))
}
