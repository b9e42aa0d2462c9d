//! Health checks against real servers: kill/restart, replay lag, failover,
//! split brain, the startup check's log hygiene, the SQL-level check.

use crate::common::*;
use pglb::state::BackendState;
use pglb_tools::lab::Fault;
use std::sync::Arc;
use std::time::{Duration, Instant};

fn usable_names(be: &BackendState) -> Vec<String> {
    be.usable.load().servers.iter().map(|&i| be.servers[i].cfg.name.to_string()).collect()
}

fn check_desc(be: &BackendState, server: &str) -> String {
    let s = be.server(server).unwrap();
    let c = s.check.lock().unwrap();
    format!("{} {}", c.status, c.desc)
}

/// Slack on the detection bounds below. They tell a configured `inter` and
/// `fall` from the defaults (inter 2s, fall 3: 4 s or more to go DOWN),
/// they do not measure speed (the failover scenario does): a 2-core machine
/// running several clusters can stall a check by a second.
const MARGIN: Duration = Duration::from_secs(2);

/// Waits until `cond` holds for the backend; returns how long it took.
async fn until(be: &Arc<BackendState>, what: &str, limit: Duration, cond: impl Fn(&BackendState) -> bool) -> Duration {
    let started = Instant::now();
    poll(what, limit, || async { cond(be).then_some(()) }).await;
    started.elapsed()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_replica_goes_down_and_comes_back_up() {
    let lab = own_lab(2).await;
    // inter 500ms, fall 2, rise 2: DOWN within fall*inter + inter = 1.5s, UP within rise*inter + inter = 1.5s.
    let cfg = format!(
        "backend ro\n    timeout connect 1s\n    timeout check 1s\n    option pgsql-check user postgres\n{}listen dummy\n    bind 127.0.0.1:0\n    server x 127.0.0.1:1\nfrontend f\n    bind 127.0.0.1:0\n    default_backend ro\n",
        server_lines(&lab, "check inter 500ms rise 2 fall 2")
    );
    let pglb = start(&cfg).await;
    let be = pglb.runtime().backend("ro").unwrap().clone();
    // UP, not only checked: a server starts UP at health `rise`, so one slow
    // first check would leave it DOWN with a later L7OK.
    until(&be, "all UP and checked", Duration::from_secs(10), |b| {
        usable_names(b).len() == 3 && b.servers.iter().all(|s| s.check.lock().unwrap().status == pglb::state::check::CheckStatus::L7Ok)
    })
    .await;
    lab.fault("replica1", Fault::Kill).await.unwrap();
    let down = until(&be, "replica1 DOWN", Duration::from_secs(10), |b| !usable_names(b).contains(&"replica1".to_string())).await;
    assert!(down <= Duration::from_millis(1500) + MARGIN, "DOWN after {down:?}, bound 1.5s (+{MARGIN:?})");
    let failed = pglb::state::counters::Counters::get(&be.server("replica1").unwrap().counters.check_failures);
    assert!(failed >= 2, "DOWN after {failed} failed check(s): fall 2 needs two");
    assert!(check_desc(&be, "replica1").starts_with("L4CON"), "{}", check_desc(&be, "replica1"));
    lab.fault("replica1", Fault::Start).await.unwrap();
    let up = until(&be, "replica1 UP", Duration::from_secs(10), |b| usable_names(b).contains(&"replica1".to_string())).await;
    assert!(up <= Duration::from_millis(1500) + MARGIN, "UP after {up:?}, bound 1.5s (+{MARGIN:?})");
    lab.down().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lagging_replica_goes_down_by_lag_and_back_up() {
    let lab = own_lab(1).await;
    // SAFETY: test-local variable name.
    unsafe { std::env::set_var("PGLB_TEST_LAG_PW", "postgres") };
    let replica = lab.node("replica1").unwrap();
    let cfg = format!(
        "listen ro\n    bind 127.0.0.1:0\n    timeout connect 1s\n    timeout check 2s\n    option pgsql-check user postgres password-env PGLB_TEST_LAG_PW role replica max-lag 1s require-streaming\n    server replica1 127.0.0.1:{} check inter 300ms rise 2 fall 2\n",
        replica.port
    );
    let pglb = start(&cfg).await;
    let be = pglb.runtime().backend("ro").unwrap().clone();
    until(&be, "replica UP", Duration::from_secs(10), |b| {
        usable_names(b) == ["replica1"] && check_desc(b, "replica1").starts_with("L7OK role replica")
    })
    .await;
    lab.fault("replica1", Fault::PauseReplay).await.unwrap();
    let primary = connect(lab.primary().port, "appdb").await.unwrap();
    primary.batch_execute("create table if not exists lag_t(x int) with (autovacuum_enabled = off)").await.unwrap();
    let writer = tokio::spawn(async move {
        for i in 0..200 {
            let _ = primary.execute("insert into lag_t values ($1)", &[&i]).await;
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    });
    // max-lag 1s + fall*inter 0.6s, plus a margin for the noisy machine.
    let down = until(&be, "DOWN by lag", Duration::from_secs(10), |b| usable_names(b).is_empty()).await;
    let desc = check_desc(&be, "replica1");
    assert!(desc.contains("lag") && desc.contains("> 1s"), "{desc}");
    assert!(down <= Duration::from_millis(1600 + 500) + MARGIN, "DOWN after {down:?}");
    lab.fault("replica1", Fault::ResumeReplay).await.unwrap();
    until(&be, "UP again", Duration::from_secs(10), |b| !usable_names(b).is_empty()).await;
    writer.abort();

    // A replica restarted while the primary is idle is not behind. After a
    // restart its receive position is the start of a WAL segment, below its
    // replay position, until the primary writes again; the check's lag must
    // be 0 then (it read 'receive = replay', and grew past max-lag).
    // Observed around the check's own query; the primary writes a little on
    // its own now and then, hence the attempts.
    let restarted_and_idle = || async {
        lab.fault("replica1", Fault::Stop).await.unwrap();
        lab.fault("replica1", Fault::Start).await.unwrap();
        let c = poll("the restarted replica answers", Duration::from_secs(10), || async { connect(replica.port, "postgres").await.ok() }).await;
        let behind = async || {
            let row = c.query_one("select pg_last_wal_receive_lsn() < pg_last_wal_replay_lsn()", &[]).await.unwrap();
            row.get::<_, Option<bool>>(0) == Some(true)
        };
        for _ in 0..20 {
            if behind().await {
                let info = pglb::health::sql::read_info(&c).await.unwrap();
                let node = lab.status().await.into_iter().find(|n| n.name == "replica1").unwrap();
                if behind().await {
                    return Some((info, node));
                }
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        None
    };
    let mut seen = None;
    for _ in 0..3 {
        seen = restarted_and_idle().await;
        if seen.is_some() {
            break;
        }
    }
    let (info, node) = seen.expect("a restarted replica with its receive position below its replay position");
    assert_eq!(info.lag_seconds, 0.0, "the check's lag for a restarted, caught-up replica: {info:?}");
    assert_eq!(node.replay_lag_seconds, Some(0.0), "pglb lab status for it: {node:?}");
    until(&be, "UP after the restarts", Duration::from_secs(10), |b| usable_names(b) == ["replica1"]).await;
    lab.down().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn role_primary_follows_failover_and_refuses_split_brain() {
    let lab = own_lab(2).await;
    // SAFETY: test-local variable name.
    unsafe { std::env::set_var("PGLB_TEST_FO_PW", "postgres") };
    let cfg = format!(
        "listen rw\n    bind 127.0.0.1:0\n    timeout connect 1s\n    timeout check 2s\n    option pgsql-check user postgres password-env PGLB_TEST_FO_PW role primary\n{}",
        server_lines(&lab, "check inter 300ms rise 2 fall 2")
    );
    let pglb = start(&cfg).await;
    let port = pglb.addr("rw").unwrap().port();
    let be = pglb.runtime().backend("rw").unwrap().clone();
    until(&be, "only the primary UP", Duration::from_secs(5), |b| usable_names(b) == ["primary"]).await;
    let c = connect(port, "appdb").await.unwrap();
    c.batch_execute("create table fo(x int); insert into fo values (1)").await.unwrap();
    drop(c);
    replicas_caught_up(&lab).await;

    // Split brain: replica1 promoted while the old primary still runs.
    lab.fault("replica1", Fault::Promote).await.unwrap();
    until(&be, "split brain detected", Duration::from_secs(5), |b| b.split_brain.load(std::sync::atomic::Ordering::Relaxed)).await;
    let Err(err) = connect(port, "appdb").await else { panic!("no write may go through during a split brain") };
    let msg = err.as_db_error().map(|e| e.message().to_string()).unwrap_or_default();
    assert!(msg.contains("split brain"), "{err}");

    // The old primary stops: the promoted node alone takes the writes.
    lab.fault("primary", Fault::Stop).await.unwrap();
    let took = until(&be, "replica1 alone UP", Duration::from_secs(10), |b| usable_names(b) == ["replica1"]).await;
    assert!(took <= Duration::from_millis(600 + 600 + 500) + MARGIN, "failover took {took:?}, bound fall*inter + rise*inter");
    let stopped = check_desc(&be, "primary");
    assert!(stopped.starts_with("L4CON Connection refused"), "a stopped server is a layer-4 failure: {stopped}");
    let c = connect(port, "appdb").await.unwrap();
    c.batch_execute("insert into fo values (2)").await.unwrap();
    let port_served: i32 = c.query_one("select inet_server_port()", &[]).await.unwrap().get(0);
    assert_eq!(port_served, i32::from(lab.node("replica1").unwrap().port));
    let n: i64 = c.query_one("select count(*) from fo", &[]).await.unwrap().get(0);
    assert_eq!(n, 2, "the write before the failover replicated, the one after landed on the new primary");
    lab.down().await.unwrap();
}

/// Lines of a node's log that mention `needle`.
fn log_lines(path: &std::path::Path, needle: &str) -> usize {
    std::fs::read_to_string(path).unwrap_or_default().lines().filter(|l| l.contains(needle)).count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn startup_check_is_up_for_scram_down_for_rejected_and_leaves_no_log_lines() {
    let lab = shared_lab().await;
    let primary = lab.primary();
    let admin = connect(primary.port, "postgres").await.unwrap();
    admin
        .batch_execute(
            "do $$ begin if not exists (select from pg_roles where rolname = 'checker') then create role checker login password 'checker-secret'; end if; end $$",
        )
        .await
        .unwrap();
    // pg_hba rejects role 'refused' (prepended, so it wins).
    let hba = primary.data_dir.join("pg_hba.conf");
    let text = std::fs::read_to_string(&hba).unwrap();
    if !text.contains("refused") {
        std::fs::write(&hba, format!("host all refused 127.0.0.1/32 reject\n{text}")).unwrap();
        admin.batch_execute("select pg_reload_conf()").await.unwrap();
    }
    let cfg = format!(
        "backend ok\n    timeout connect 1s\n    timeout check 1s\n    option pgsql-check user checker\n    server primary 127.0.0.1:{p} check inter 100ms\n\
         backend rejected\n    timeout connect 1s\n    timeout check 1s\n    option pgsql-check user refused\n    server primary 127.0.0.1:{p} check inter 100ms\n\
         frontend f\n    bind 127.0.0.1:0\n    default_backend ok\n",
        p = primary.port
    );
    let before = log_lines(&primary.log_file, "checker@");
    let pglb = start(&cfg).await;
    let ok = pglb.runtime().backend("ok").unwrap().clone();
    let rejected = pglb.runtime().backend("rejected").unwrap().clone();
    until(&rejected, "rejected DOWN", Duration::from_secs(5), |b| usable_names(b).is_empty()).await;
    let desc = check_desc(&rejected, "primary");
    assert!(desc.contains("pg_hba.conf rejects connection"), "the server's FATAL text is the reason: {desc}");
    // About 20 checks of the SCRAM role: all UP, and not one log line about them.
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(usable_names(&ok), ["primary"]);
    assert!(check_desc(&ok, "primary").starts_with("L7OK"));
    // Every line PostgreSQL writes for a session carries 'user@db' (the lab's
    // log_line_prefix), so this covers 'could not receive data' lines too.
    assert_eq!(log_lines(&primary.log_file, "checker@"), before, "PostgreSQL logged something about the checks");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sql_check_logs_in_with_scram_from_env_and_never_shows_the_password() {
    let lab = shared_lab().await;
    let admin = connect(lab.primary().port, "postgres").await.unwrap();
    admin
        .batch_execute(
            "do $$ begin if not exists (select from pg_roles where rolname = 'monitor') then create role monitor login password 'S3cret-pw-42' in role pg_monitor; end if; end $$",
        )
        .await
        .unwrap();
    replicas_caught_up(lab).await;
    let port = dead_port();
    let stats = dead_port();
    // Both checks get 'timeout check 3s': without it the timeout is inter (200ms),
    // and a debug build's SCRAM proof (4096 HMAC rounds) on a busy machine can take
    // longer, so ghost would go DOWN on 'Layer7 timeout' instead of the login error.
    let cfg = format!(
        "listen stats\n    bind 127.0.0.1:{stats}\n    mode http\n    stats enable\n    stats uri /stats\n\
         listen pg\n    bind 127.0.0.1:{port}\n    timeout connect 1s\n    timeout check 3s\n    option pgsql-check user monitor password-env MON_PW role any\n{}\
         listen ghost\n    bind 127.0.0.1:0\n    timeout connect 1s\n    timeout check 3s\n    option pgsql-check user ghost password-env MON_PW\n    server primary 127.0.0.1:{} check inter 200ms\n",
        server_lines(lab, "check inter 200ms"),
        lab.primary().port
    );
    let (dir, path) = write_config(&cfg);
    // To a file, not a pipe: debug logs fill a 64 KiB pipe nobody reads in seconds.
    let log = dir.path().join("pglb.log");
    let mut child = std::process::Command::new(pglb_bin())
        .args(["run", "-f"])
        .arg(&path)
        .env("MON_PW", "S3cret-pw-42")
        .env("RUST_LOG", "debug")
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    poll("pglb up", Duration::from_secs(10), || async { connect(port, "appdb").await.ok() }).await;
    poll("ghost/primary DOWN", Duration::from_secs(15), || async {
        let (_, csv) = crate::observe::http_get(stats, "/stats;csv", None).await;
        csv.lines().any(|l| l.starts_with("ghost,primary,") && l.contains(",DOWN,")).then_some(())
    })
    .await;
    // Nor in the stats surfaces.
    for path in ["/stats", "/stats;csv", "/stats;json", "/metrics"] {
        let (code, body) = crate::observe::http_get(stats, path, None).await;
        assert_eq!(code, 200, "{path}");
        assert!(!body.contains("S3cret-pw-42"), "the password leaked into {path}");
    }
    // SAFETY: signalling our own child.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    tokio::task::spawn_blocking(move || child.wait().unwrap()).await.unwrap();
    let stderr = std::fs::read_to_string(&log).unwrap();
    assert!(stderr.contains("Server ghost/primary is DOWN"), "{stderr}");
    assert!(stderr.contains("role \"ghost\" does not exist") || stderr.contains("password authentication failed for user \"ghost\""), "{stderr}");
    assert!(!stderr.contains("Server pg/"), "a monitor server went down: {stderr}");
    assert!(!stderr.contains("S3cret-pw-42"), "the password leaked into the logs");
    assert!(!stderr.contains('\x1b'), "colour escapes in logs that go to a pipe: {stderr}");
}

/// A check port the test controls: checks pass while it listens.
struct CheckPort {
    port: u16,
    listener: Option<std::net::TcpListener>,
}

impl CheckPort {
    fn new() -> Self {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        CheckPort { port: l.local_addr().unwrap().port(), listener: Some(l) }
    }
    fn close(&mut self) {
        self.listener = None;
    }
    fn open(&mut self) {
        self.listener = Some(std::net::TcpListener::bind(("127.0.0.1", self.port)).unwrap());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_marked_down_and_up_close_the_affected_sessions() {
    let lab = shared_lab().await;
    // `addr localhost`: a check address given by name, as seed 004's health
    // service is, resolved at each check.
    let mut active = CheckPort::new();
    let cfg = format!(
        "listen pg\n    bind 127.0.0.1:0\n    timeout connect 1s\n    timeout check 1s\n\
         \x20   server main 127.0.0.1:{p} check port {c} addr localhost inter 100ms rise 1 fall 1 on-marked-down shutdown-sessions on-marked-up shutdown-backup-sessions\n\
         \x20   server spare 127.0.0.1:{r} backup\n",
        p = lab.primary().port,
        c = active.port,
        r = lab.node("replica1").unwrap().port
    );
    let pglb = start(&cfg).await;
    let port = pglb.addr("pg").unwrap().port();
    let be = pglb.runtime().backend("pg").unwrap().clone();
    until(&be, "main checked UP", Duration::from_secs(5), |b| check_desc(b, "main").starts_with("L4OK")).await;
    let on_main = connect(port, "appdb").await.unwrap();
    on_main.query_one("select 1", &[]).await.unwrap();

    // main goes DOWN: its session is closed, new sessions go to the backup.
    active.close();
    poll("session on main closed", Duration::from_secs(5), || async { on_main.query_one("select 1", &[]).await.is_err().then_some(()) }).await;
    let on_spare = connect(port, "appdb").await.unwrap();
    let p: i32 = on_spare.query_one("select inet_server_port()", &[]).await.unwrap().get(0);
    assert_eq!(p, i32::from(lab.node("replica1").unwrap().port));

    // main comes back: the backup's sessions are closed so clients return to main.
    active.open();
    poll("backup session closed", Duration::from_secs(5), || async { on_spare.query_one("select 1", &[]).await.is_err().then_some(()) }).await;
    let back: i32 = connect(port, "appdb").await.unwrap().query_one("select inet_server_port()", &[]).await.unwrap().get(0);
    assert_eq!(back, i32::from(lab.primary().port));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_server_stays_up_and_its_fatal_reaches_the_client() {
    let lab = own_lab(0).await;
    let admin = connect(lab.primary().port, "postgres").await.unwrap();
    admin.batch_execute("alter system set max_connections = 8").await.unwrap();
    drop(admin);
    lab.fault("primary", Fault::Stop).await.unwrap();
    lab.fault("primary", Fault::Start).await.unwrap();
    let cfg = format!(
        "listen pg\n    bind 127.0.0.1:0\n    timeout connect 1s\n    timeout check 5s\n    retries 0\n    option pgsql-check user postgres\n    server primary 127.0.0.1:{} check inter 200ms fall 1\n",
        lab.primary().port
    );
    let pglb = start(&cfg).await;
    let port = pglb.addr("pg").unwrap().port();
    let be = pglb.runtime().backend("pg").unwrap().clone();
    until(&be, "UP", Duration::from_secs(10), |b| usable_names(b) == ["primary"] && check_desc(b, "primary").starts_with("L7OK")).await;
    // Fill every connection slot.
    let mut held = Vec::new();
    loop {
        match connect(lab.primary().port, "postgres").await {
            Ok(c) => held.push(c),
            Err(e) => {
                assert_eq!(e.as_db_error().map(|d| d.code().code()), Some("53300"), "{e}");
                break;
            }
        }
        assert!(held.len() < 50, "max_connections was not applied");
    }
    // A slot freed meanwhile (a check's own backend exiting) is taken
    // again until a check finds the server full.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while !check_desc(&be, "primary").contains("full") {
        assert!(std::time::Instant::now() < deadline, "the check never saw the server full: {}", check_desc(&be, "primary"));
        if let Ok(c) = connect(lab.primary().port, "postgres").await {
            held.push(c);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(usable_names(&be), ["primary"], "a full server is not DOWN");
    // The client gets PostgreSQL's own FATAL through pglb.
    let Err(e) = connect(port, "appdb").await else { panic!("the server is full") };
    let db = e.as_db_error().expect("the server's error, relayed");
    assert_eq!(db.code().code(), "53300");
    assert!(db.message().contains("too many clients"), "{}", db.message());
    drop(held);
    poll("served again once slots free", Duration::from_secs(5), || async { connect(port, "appdb").await.ok() }).await;
    lab.down().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frozen_postmaster_is_detected_by_timeout_check_and_avoided() {
    let lab = own_lab(1).await;
    // fall 2, inter 300ms, timeout check 500ms: a black-holed server (TCP
    // still accepted by the kernel, no answer) is DOWN within about 1.6s.
    // The SQL-level check keeps its connection, whose backend a frozen
    // postmaster does not stop: it must notice that new connections fail.
    // SAFETY: test-local variable name.
    unsafe { std::env::set_var("PGLB_TEST_FROZEN_PW", "postgres") };
    let cfg = format!(
        "listen pg\n    bind 127.0.0.1:0\n    timeout connect 1s\n    timeout check 500ms\n    option pgsql-check user postgres\n{}\
         backend sql\n    timeout connect 1s\n    timeout check 500ms\n    option pgsql-check user postgres password-env PGLB_TEST_FROZEN_PW role replica\n\
         \x20   server replica1 127.0.0.1:{} check inter 300ms rise 2 fall 2\n",
        server_lines(&lab, "check inter 300ms rise 2 fall 2"),
        lab.node("replica1").unwrap().port
    );
    let pglb = start(&cfg).await;
    let port = pglb.addr("pg").unwrap().port();
    let be = pglb.runtime().backend("pg").unwrap().clone();
    let sql = pglb.runtime().backend("sql").unwrap().clone();
    until(&be, "both UP", Duration::from_secs(10), |b| {
        usable_names(b).len() == 2 && b.servers.iter().all(|s| s.check.lock().unwrap().status == pglb::state::check::CheckStatus::L7Ok)
    })
    .await;
    until(&sql, "the SQL check UP", Duration::from_secs(10), |b| usable_names(b) == ["replica1"]).await;
    lab.fault("replica1", Fault::Freeze).await.unwrap();
    let took = until(&be, "frozen replica DOWN", Duration::from_secs(10), |b| usable_names(b) == ["primary"]).await;
    assert!(took <= Duration::from_millis(2 * 300 + 2 * 500 + 500) + MARGIN, "detection took {took:?}");
    assert!(check_desc(&be, "replica1").starts_with("L7TOUT"), "{}", check_desc(&be, "replica1"));
    until(&sql, "frozen replica DOWN for the SQL check", Duration::from_secs(10), |b| usable_names(b).is_empty()).await;
    let desc = check_desc(&sql, "replica1");
    assert!(desc.starts_with("L7TOUT new connections fail: Layer7 timeout"), "{desc}");
    // Every new session now goes to the live server, none hangs on the frozen one.
    for _ in 0..4 {
        let p = tokio::time::timeout(Duration::from_secs(5), server_port(port)).await.expect("no session hangs");
        assert_eq!(p, i32::from(lab.primary().port));
    }
    lab.fault("replica1", Fault::Thaw).await.unwrap();
    until(&be, "thawed replica UP", Duration::from_secs(10), |b| usable_names(b).len() == 2).await;
    until(&sql, "thawed replica UP for the SQL check", Duration::from_secs(10), |b| usable_names(b) == ["replica1"]).await;
    lab.down().await.unwrap();
}

/// `setenv` in `global` feeds `password-env` without touching pglb's
/// process environment (a refused reload or `pglb check` must change
/// nothing).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn password_env_reads_the_configurations_setenv() {
    let lab = shared_lab().await;
    let cfg = format!(
        "global\n    setenv PGLB_TEST_SETENV_PW postgres\nlisten pg\n    bind 127.0.0.1:0\n    timeout connect 1s\n    timeout check 3s\n\
         option pgsql-check user postgres password-env PGLB_TEST_SETENV_PW role any\n    server primary 127.0.0.1:{} check inter 200ms\n",
        lab.primary().port
    );
    let pglb = start(&cfg).await;
    let be = pglb.runtime().backend("pg").unwrap().clone();
    poll("the SQL check logs in", Duration::from_secs(10), || async { check_desc(&be, "primary").starts_with("L7OK").then_some(()) }).await;
    assert!(std::env::var_os("PGLB_TEST_SETENV_PW").is_none(), "the process environment is untouched");
}
