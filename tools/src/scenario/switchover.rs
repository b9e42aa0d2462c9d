//! `scenario switchover --planned|--crash` (seed 004's promise: failover
//! "without returning an error to the client"): the primary goes away and
//! replica1 is promoted while two clients write through the proxy, one
//! opening a new connection for every write (psql in a loop), one keeping
//! a pool of sessions (an application). Reports each client's errors by
//! message, the longest gap between acknowledged writes, acknowledged
//! writes lost, and writes that reached a non-primary.
//!
//! Each run gets a lab of its own (it stops, kills and promotes nodes).
//! `--proxy haproxy` runs the same experiment through Debian's HAProxy with
//! `pglb healthd` answering its checks (the Patroni pattern), with the same
//! timings: seed 004's `inter 1s rise 2 fall 3`, `retries 3`, `option
//! redispatch`.

use super::{Report, ScenarioError, start};
use crate::lab::{Fault, Lab, LabOptions};
use serde_json::json;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::time::Instant;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Proxy {
    Pglb,
    /// Debian's HAProxy over `pglb healthd`.
    Haproxy,
}

#[derive(Debug, Clone, Copy)]
pub struct SwitchoverOptions {
    /// Kill the primary (`-m immediate`'s equivalent, SIGKILL) and promote
    /// replica1 one second later, instead of a clean stop followed at once
    /// by the promotion.
    pub crash: bool,
    pub runs: usize,
    pub proxy: Proxy,
}

/// Sessions of the pooled client.
const POOL: usize = 4;

/// What the clients saw in one run.
#[derive(Debug, Default)]
struct Ledger {
    /// Acknowledged writes: (id, server port, when).
    acks: Vec<(i64, i32, Instant)>,
    /// Failed writes: which client, when the attempt started, whether its
    /// session had been established (it died with its server), the text.
    errors: Vec<Failure>,
}

#[derive(Debug, Clone)]
struct Failure {
    pooled: bool,
    started: Instant,
    established: bool,
    message: String,
}

/// One run's figures.
#[derive(Debug)]
struct Run {
    acks: usize,
    /// Errors of attempts started once the old primary was gone.
    new_client_errors: BTreeMap<String, usize>,
    /// Errors on sessions that may have reached the old primary (they die with it).
    sessions_lost: BTreeMap<String, usize>,
    /// Errors pglb itself produced (messages starting with "pglb:").
    by_proxy: usize,
    /// Longest time without an acknowledged write, over both clients, and
    /// for the connect-per-write client alone.
    gap: Duration,
    lost: usize,
    on_non_primary: usize,
}

pub async fn switchover(base: &Path, o: SwitchoverOptions) -> Result<Report, ScenarioError> {
    let mut runs = Vec::new();
    for i in 0..o.runs.max(1) {
        let dir = tempdir_in(base, i)?;
        let lab = Lab::up(LabOptions { dir: dir.clone(), replicas: 2, port_base: None, ssl: false }).await?;
        let run = one_run(&lab, &dir, o).await;
        let _ = lab.down().await;
        let _ = std::fs::remove_dir_all(&dir);
        runs.push(run?);
    }
    Ok(report(o, &runs))
}

fn tempdir_in(base: &Path, i: usize) -> Result<PathBuf, ScenarioError> {
    // Unix socket paths must stay short: a directory under /tmp, not `base`
    // if that is long.
    let parent = if base.as_os_str().len() < 40 { base.to_path_buf() } else { std::env::temp_dir() };
    std::fs::create_dir_all(&parent).map_err(|e| ScenarioError::Failed(format!("{}: {e}", parent.display())))?;
    let dir = parent.join(format!("switchover-{}-{i}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    Ok(dir)
}

/// The proxy in front of the lab; dropped at the end of the run.
enum Front {
    Pglb {
        running: pglb::run::Running,
    },
    Haproxy {
        child: std::process::Child,
        /// Dropping it stops healthd.
        _healthd: tokio::sync::oneshot::Sender<()>,
    },
}

impl Front {
    async fn stop(self) {
        match self {
            Front::Pglb { running } => running.shutdown(tokio::time::sleep(Duration::from_millis(500))).await,
            Front::Haproxy { mut child, _healthd } => {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map(|a| a.port()).unwrap_or(0)
}

/// Starts the proxy; returns it and the port clients use.
async fn front(lab: &Lab, dir: &Path, proxy: Proxy) -> Result<(Front, u16), ScenarioError> {
    let (user, password) = lab.superuser();
    let pw = super::password_file(lab)?;
    let defaults = "defaults\n    mode tcp\n    timeout connect 5s\n    timeout client 1h\n    timeout server 1h\n    timeout check 2s\n    retries 3\n    option redispatch\n";
    match proxy {
        Proxy::Pglb => {
            let servers: String = lab.nodes().iter().map(|n| format!("    server {} 127.0.0.1:{} check\n", n.name, n.port)).collect();
            let cfg = format!(
                "{defaults}listen rw\n    bind 127.0.0.1:0\n    option pgsql-check user {user} password-file {pw} role primary\n    default-server inter 1s rise 2 fall 3\n{servers}"
            );
            let running = start(&cfg).await?;
            let port = running.addr("rw").map(|a| a.port()).unwrap_or(0);
            let be = running.runtime().backend("rw").cloned().ok_or_else(|| ScenarioError::Failed("no backend".into()))?;
            super::wait_for(Duration::from_secs(10), || !be.usable.load().servers.is_empty())
                .await
                .ok_or_else(|| ScenarioError::Failed("pglb never found the primary".into()))?;
            Ok((Front::Pglb { running }, port))
        }
        Proxy::Haproxy => {
            let mut specs = Vec::new();
            let mut servers = String::new();
            for n in lab.nodes() {
                let health = free_port();
                specs.push(pglb::healthd::NodeSpec {
                    name: n.name.clone(),
                    dsn: format!("host=127.0.0.1 port={} user={user} password={password} dbname=postgres sslmode=disable connect_timeout=2", n.port),
                    listen: std::net::SocketAddr::from(([127, 0, 0, 1], health)),
                });
                servers += &format!("    server {} 127.0.0.1:{} check port {health}\n", n.name, n.port);
            }
            let (tx, rx) = tokio::sync::oneshot::channel::<()>();
            tokio::spawn(pglb::healthd::run(specs, Duration::from_millis(500), async {
                let _ = rx.await;
            }));
            let port = free_port();
            let cfg = format!(
                "global\n    log stdout format raw local0 info\n{defaults}listen rw\n    bind 127.0.0.1:{port}\n    option httpchk GET /primary\n    http-check expect status 200\n\
                 default-server inter 1s rise 2 fall 3 on-marked-down shutdown-sessions\n{servers}"
            );
            let child = super::spawn_haproxy(dir, &cfg)?;
            let front = Front::Haproxy { child, _healthd: tx };
            // HAProxy takes every server as UP until its first check: ready
            // once 10 new connections in a row reach the primary.
            let dsn = client_dsn(lab, port);
            let deadline = Instant::now() + Duration::from_secs(20);
            let mut in_a_row = 0;
            while in_a_row < 10 {
                if Instant::now() > deadline {
                    return Err(ScenarioError::Failed("HAProxy never settled on the primary".into()));
                }
                if reaches_primary(&dsn).await {
                    in_a_row += 1;
                } else {
                    in_a_row = 0;
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
            Ok((front, port))
        }
    }
}

/// A new connection through `dsn` reaches a primary.
async fn reaches_primary(dsn: &str) -> bool {
    match super::connect(dsn).await {
        Ok(c) => c.query_one("select not pg_is_in_recovery()", &[]).await.map(|r| r.get::<_, bool>(0)).unwrap_or(false),
        Err(_) => false,
    }
}

fn client_dsn(lab: &Lab, port: u16) -> String {
    let (user, password) = lab.superuser();
    format!("host=127.0.0.1 port={port} user={user} password={password} dbname=appdb sslmode=disable connect_timeout=10")
}

async fn one_run(lab: &Lab, dir: &Path, o: SwitchoverOptions) -> Result<Run, ScenarioError> {
    let primary = super::connect(&client_dsn(lab, lab.primary().port)).await.map_err(|e| ScenarioError::Failed(describe(&e)))?;
    primary.batch_execute("create table if not exists ledger(id bigint primary key)").await.map_err(|e| ScenarioError::Failed(describe(&e)))?;
    if o.crash {
        // Synchronous replication to replica1: an acknowledged commit is on
        // the node that will be promoted (the lab runs with
        // synchronous_commit off; a crash would lose recent commits).
        // One statement at a time: ALTER SYSTEM refuses an implicit transaction.
        for sql in ["alter system set synchronous_standby_names = 'replica1'", "alter system set synchronous_commit = on", "select pg_reload_conf()"]
        {
            primary.batch_execute(sql).await.map_err(|e| ScenarioError::Failed(describe(&e)))?;
        }
        super::wait_for_async(Duration::from_secs(10), || async {
            primary
                .query_opt("select 1 from pg_stat_replication where application_name = 'replica1' and sync_state = 'sync'", &[])
                .await
                .ok()
                .flatten()
                .is_some()
        })
        .await
        .ok_or_else(|| ScenarioError::Failed("replica1 never became synchronous".into()))?;
    }
    drop(primary);
    let (front, port) = front(lab, dir, o.proxy).await?;
    let dsn = client_dsn(lab, port);
    let ledger = Arc::new(Mutex::new(Ledger::default()));
    let stop = Arc::new(AtomicBool::new(false));
    let next_id = Arc::new(std::sync::atomic::AtomicI64::new(1));
    let mut clients = vec![tokio::spawn(writer(dsn.clone(), false, ledger.clone(), stop.clone(), next_id.clone()))];
    for _ in 0..POOL {
        clients.push(tokio::spawn(writer(dsn.clone(), true, ledger.clone(), stop.clone(), next_id.clone())));
    }
    tokio::time::sleep(Duration::from_secs(1)).await;

    // Once the old primary is gone (killed, or its clean stop finished), a
    // client that arrives cannot have reached it: its errors are the
    // proxy's to avoid. One that started before may have been caught on it
    // mid-session (even mid-authentication): counted as sessions lost.
    let gone = if o.crash {
        lab.fault("primary", Fault::Kill).await?;
        let gone = Instant::now();
        tokio::time::sleep(Duration::from_secs(1)).await;
        gone
    } else {
        lab.fault("primary", Fault::Stop).await?;
        Instant::now()
    };
    lab.fault("replica1", Fault::Promote).await?;
    let new_port = i32::from(lab.node("replica1").map(|n| n.port).unwrap_or(0));
    let resumed = super::wait_for(Duration::from_secs(30), || {
        ledger.lock().unwrap_or_else(|e| e.into_inner()).acks.iter().filter(|a| a.1 == new_port).count() >= 50
    })
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop.store(true, Relaxed);
    for c in clients {
        let _ = c.await;
    }
    front.stop().await;
    if resumed.is_none() {
        return Err(ScenarioError::Failed("writes never resumed on replica1".into()));
    }
    let ledger = std::mem::take(&mut *ledger.lock().unwrap_or_else(|e| e.into_inner()));

    // Every acknowledged write must be on the new primary.
    let check = super::connect(&client_dsn(lab, new_port as u16)).await.map_err(|e| ScenarioError::Failed(e.to_string()))?;
    let present: std::collections::HashSet<i64> =
        check.query("select id from ledger", &[]).await.map_err(|e| ScenarioError::Failed(e.to_string()))?.iter().map(|r| r.get(0)).collect();
    let old_port = i32::from(lab.primary().port);
    let lost = ledger.acks.iter().filter(|a| !present.contains(&a.0)).count();
    let on_non_primary = ledger.acks.iter().filter(|a| a.1 != old_port && a.1 != new_port).count()
        + ledger.errors.iter().filter(|e| e.message.contains("read-only transaction")).count();
    let mut times: Vec<Instant> = ledger.acks.iter().map(|a| a.2).collect();
    times.sort();
    let gap = times.windows(2).map(|w| w[1] - w[0]).max().unwrap_or_default();
    let (mut new_client_errors, mut sessions_lost) = (BTreeMap::new(), BTreeMap::new());
    for f in &ledger.errors {
        let key = format!("{}{}", if f.pooled { "[pool] " } else { "[per-write] " }, normalise(&f.message));
        if f.established || f.started < gone {
            *sessions_lost.entry(key).or_default() += 1;
        } else {
            *new_client_errors.entry(key).or_default() += 1;
        }
    }
    let by_proxy = ledger.errors.iter().filter(|f| f.message.contains("pglb:")).count();
    Ok(Run { acks: ledger.acks.len(), new_client_errors, sessions_lost, by_proxy, gap, lost, on_non_primary })
}

/// An error's text without the parts that differ between occurrences (ports).
fn normalise(message: &str) -> String {
    let re = regex::Regex::new(r"127\.0\.0\.1:\d+").expect("valid");
    re.replace_all(message, "127.0.0.1:PORT").into_owned()
}

/// Writes until `stop`: a new connection per write, or (`pooled`) one
/// session reused until it fails. Every write takes a new id (a failed
/// one's commit status is unknown).
async fn writer(dsn: String, pooled: bool, ledger: Arc<Mutex<Ledger>>, stop: Arc<AtomicBool>, next: Arc<std::sync::atomic::AtomicI64>) {
    let mut session: Option<tokio_postgres::Client> = None;
    while !stop.load(Relaxed) {
        let started = Instant::now();
        let established = session.is_some();
        let client = match session.take() {
            Some(c) => c,
            None => match super::connect(&dsn).await {
                Ok(c) => c,
                Err(e) => {
                    ledger.lock().unwrap_or_else(|e| e.into_inner()).errors.push(Failure {
                        pooled,
                        started,
                        established: false,
                        message: describe(&e),
                    });
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    continue;
                }
            },
        };
        let id = next.fetch_add(1, Relaxed);
        match client.query_one("insert into ledger(id) values ($1) returning inet_server_port()", &[&id]).await {
            Ok(row) => {
                ledger.lock().unwrap_or_else(|e| e.into_inner()).acks.push((id, row.get(0), Instant::now()));
                if pooled {
                    session = Some(client);
                }
            }
            Err(e) => ledger.lock().unwrap_or_else(|e| e.into_inner()).errors.push(Failure {
                pooled,
                started,
                established: pooled && established,
                message: describe(&e),
            }),
        }
        tokio::time::sleep(Duration::from_millis(if pooled { 20 } else { 10 })).await;
    }
}

fn describe(e: &tokio_postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => format!("{}: {}", db.code().code(), db.message()),
        None => e.to_string(),
    }
}

fn report(o: SwitchoverOptions, runs: &[Run]) -> Report {
    let kind = if o.crash { "crash (primary killed, replica1 promoted 1 s later)" } else { "planned (clean stop, replica1 promoted at once)" };
    let proxy = match o.proxy {
        Proxy::Pglb => "pglb",
        Proxy::Haproxy => "HAProxy + pglb healthd",
    };
    let mut text = format!(
        "switchover, {kind}, through {proxy}; seed timings inter 1s rise 2 fall 3, retries 3, option redispatch\n\
         clients: one new connection per write (every 10 ms) and a pool of {POOL} sessions (a write every 20 ms each)\n\n\
         run  writes  new-client errors  sessions lost  by the proxy  longest gap  lost  on a non-primary\n"
    );
    for (i, r) in runs.iter().enumerate() {
        let n: usize = r.new_client_errors.values().sum();
        let s: usize = r.sessions_lost.values().sum();
        text += &format!(
            "{:>3}  {:>6}  {:>17}  {:>13}  {:>12}  {:>10.2}s  {:>4}  {:>16}\n",
            i + 1,
            r.acks,
            n,
            s,
            r.by_proxy,
            r.gap.as_secs_f64(),
            r.lost,
            r.on_non_primary
        );
    }
    let mut messages: BTreeMap<&str, usize> = BTreeMap::new();
    for r in runs {
        for (m, n) in r.new_client_errors.iter().chain(&r.sessions_lost) {
            *messages.entry(m).or_default() += n;
        }
    }
    if !messages.is_empty() {
        text += "\nerrors by message (all runs):\n";
        for (m, n) in &messages {
            text += &format!("  {n:>4}  {m}\n");
        }
    }
    let json = json!({
        "scenario": "switchover",
        "mode": if o.crash { "crash" } else { "planned" },
        "proxy": proxy,
        "runs": runs.iter().map(|r| json!({
            "writes": r.acks,
            "new_client_errors": r.new_client_errors,
            "sessions_lost": r.sessions_lost,
            "errors_by_proxy": r.by_proxy,
            "longest_gap_seconds": (r.gap.as_secs_f64() * 1000.0).round() / 1000.0,
            "lost_acknowledged_writes": r.lost,
            "writes_on_non_primary": r.on_non_primary,
        })).collect::<Vec<_>>(),
    });
    Report { text, json }
}
