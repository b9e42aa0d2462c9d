//! The lab against real PostgreSQL: needs the server binaries
//! (`apt-get install -y postgresql`) and `openssl`.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use crate::common::{lab_dir, poll};
use pglb_tools::lab::{Fault, Lab, LabError, LabOptions, NodeStatus, Role, cleanup_at_exit};
use tokio_postgres::NoTls;

async fn up(replicas: usize, ssl: bool) -> Lab {
    let dir = lab_dir();
    Lab::up(LabOptions { dir, replicas, port_base: None, ssl }).await.unwrap_or_else(|e| panic!("lab up failed: {e}"))
}

async fn client(lab: &Lab, node: &str, db: &str) -> tokio_postgres::Client {
    let node = lab.node(node).expect("node exists");
    let (client, conn) = tokio_postgres::connect(&lab.dsn(node, db), NoTls).await.expect("connect");
    tokio::spawn(conn);
    client
}

fn node_status<'a>(status: &'a [NodeStatus], name: &str) -> &'a NodeStatus {
    status.iter().find(|s| s.name == name).expect("node in status")
}

async fn status_of(lab: &Lab, name: &str) -> NodeStatus {
    node_status(&lab.status().await, name).clone()
}

#[tokio::test]
async fn up_replicates_and_down_cleans() {
    let lab = up(2, false).await;
    let status = lab.status().await;
    assert_eq!(status.len(), 3, "{status:?}");
    assert_eq!(node_status(&status, "primary").role, Some(Role::Primary));
    for name in ["replica1", "replica2"] {
        let s = node_status(&status, name);
        assert!(s.running, "{s:?}");
        assert_eq!(s.role, Some(Role::Replica));
        assert_eq!(s.streaming, Some(true));
    }
    let table = lab.render_table(&status);
    println!("{table}");
    assert!(table.contains("replica2") && table.contains("STREAMING"), "{table}");

    let primary = client(&lab, "primary", "appdb").await;
    primary.batch_execute("CREATE TABLE t (id int); INSERT INTO t VALUES (1)").await.expect("write on primary");
    for name in ["replica1", "replica2"] {
        let replica = client(&lab, name, "appdb").await;
        poll(&format!("table t on {name}"), Duration::from_secs(10), || async {
            let row = replica.query_one("SELECT count(*) FROM t", &[]).await.ok()?;
            (row.get::<_, i64>(0) == 1).then_some(())
        })
        .await;
    }
    let log = std::fs::read_to_string(&lab.primary().log_file).expect("primary log");
    assert!(log.contains("database system is ready"), "{log}");

    let dir = lab.dir().to_path_buf();
    lab.down().await.expect("down");
    let pgrep = std::process::Command::new("pgrep").arg("-f").arg(&dir).output().expect("run pgrep");
    assert!(!pgrep.status.success(), "processes left: {}", String::from_utf8_lossy(&pgrep.stdout));
    assert!(!dir.exists(), "{} still exists", dir.display());
}

#[tokio::test]
async fn faults() {
    let lab = up(2, false).await;

    // Paused replay: WAL arrives but is not applied, so lag grows.
    lab.fault("replica1", Fault::PauseReplay).await.expect("pause");
    let primary = client(&lab, "primary", "appdb").await;
    primary.batch_execute("CREATE TABLE f (x int); INSERT INTO f SELECT generate_series(1, 1000)").await.expect("write on primary");
    poll("replica1 lag > 0", Duration::from_secs(10), || async { (status_of(&lab, "replica1").await.lag_bytes? > 0).then_some(()) }).await;
    lab.fault("replica1", Fault::ResumeReplay).await.expect("resume");
    poll("replica1 lag back to 0", Duration::from_secs(20), || async {
        let s = status_of(&lab, "replica1").await;
        (s.lag_bytes? == 0 && s.replay_lag_seconds? == 0.0).then_some(())
    })
    .await;

    // Crash and restart.
    lab.fault("replica2", Fault::Kill).await.expect("kill");
    let s = status_of(&lab, "replica2").await;
    assert!(!s.running && s.role.is_none(), "{s:?}");
    assert!(lab.fault("replica2", Fault::Stop).await.is_err());
    lab.fault("replica2", Fault::Start).await.expect("start");
    lab.wait_streaming(Duration::from_secs(20)).await.expect("streaming again");
    let s = status_of(&lab, "replica2").await;
    assert!(s.running && s.streaming == Some(true), "{s:?}");

    // A frozen node does not hang status.
    lab.fault("primary", Fault::Freeze).await.expect("freeze");
    let started = Instant::now();
    assert!(!status_of(&lab, "primary").await.running);
    assert!(started.elapsed() < Duration::from_secs(5));
    lab.fault("primary", Fault::Thaw).await.expect("thaw");
    poll("the thawed primary answers", Duration::from_secs(10), || async { status_of(&lab, "primary").await.running.then_some(()) }).await;

    lab.fault("replica1", Fault::Promote).await.expect("promote");
    assert_eq!(status_of(&lab, "replica1").await.role, Some(Role::Primary));

    // The old primary writes after the promotion, then stops: its WAL has
    // left the new timeline, and `rejoin` says so instead of "done".
    client(&lab, "primary", "appdb").await.simple_query("create table diverged(x int)").await.expect("write on the old primary");
    lab.fault("primary", Fault::Stop).await.expect("stop");
    let err = lab.fault("primary", Fault::Rejoin).await.expect_err("a diverged node cannot follow").to_string();
    assert!(err.contains("cannot follow the primary") && err.contains("pg_rewind"), "{err}");

    lab.down().await.expect("down");
}

#[tokio::test]
async fn second_up_is_refused() {
    let lab = up(0, false).await;
    let err = Lab::up(LabOptions { dir: lab.dir().to_path_buf(), replicas: 1, port_base: None, ssl: false }).await.expect_err("second up must fail");
    assert!(matches!(err, LabError::AlreadyRunning(_)), "{err:?}");
    let text = err.to_string();
    assert!(text.starts_with("lab already running in /tmp/"), "{text}");
    assert!(text.contains("use `pglb lab down --dir /tmp/"), "{text}");

    // The lab is untouched and can be reopened from its state file.
    let reopened = Lab::open(lab.dir()).await.expect("open");
    assert_eq!(reopened.nodes(), lab.nodes());
    let status = reopened.status().await;
    assert!(status[0].running && status[0].role == Some(Role::Primary), "{status:?}");
    client(&lab, "primary", "appdb").await.simple_query("SELECT 1").await.expect("query");

    assert!(matches!(lab.fault("nope", Fault::Kill).await, Err(LabError::UnknownNode { .. })));
    assert!("explode".parse::<Fault>().is_err());

    // A killed lab is "stopped", not "running", and `down` still cleans it.
    lab.fault("primary", Fault::Kill).await.expect("kill");
    let again = LabOptions { dir: lab.dir().to_path_buf(), replicas: 0, port_base: None, ssl: false };
    let err = Lab::up(again).await.expect_err("stopped lab");
    assert!(matches!(err, LabError::StoppedLab(_)), "{err:?}");
    let dir = lab.dir().to_path_buf();
    reopened.down().await.expect("down");
    assert!(!dir.exists());
    let err = Lab::open(&dir).await.expect_err("no lab any more");
    assert!(matches!(err, LabError::NoLab { .. }), "{err}");
}

#[tokio::test]
async fn ssl() {
    let lab = up(1, true).await;
    for node in lab.nodes() {
        let out = std::process::Command::new("psql")
            .arg(format!("host=127.0.0.1 port={} user=postgres password=postgres sslmode=require dbname=appdb", node.port))
            .args(["-tAc", "select ssl from pg_stat_ssl where pid=pg_backend_pid()"])
            .output()
            .expect("run psql");
        assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "t", "{}: {}", node.name, String::from_utf8_lossy(&out.stderr));
    }
    lab.down().await.expect("down");
}

/// Run in a child process by `abandoned_lab_is_cleaned_at_exit`: ups a lab
/// in `PGLB_LAB_ABANDON_DIR` and panics without `down`.
#[tokio::test]
#[ignore = "helper, run by abandoned_lab_is_cleaned_at_exit"]
async fn abandoned_lab_helper() {
    let Some(dir) = std::env::var_os("PGLB_LAB_ABANDON_DIR") else {
        return;
    };
    let dir = PathBuf::from(dir);
    cleanup_at_exit(dir.clone());
    let lab = Lab::up(LabOptions { dir, replicas: 0, port_base: None, ssl: false }).await.expect("up");
    lab.fault("primary", Fault::Freeze).await.expect("freeze");
    panic!("abandoning the lab");
}

#[test]
fn abandoned_lab_is_cleaned_at_exit() {
    let dir = tempfile::Builder::new().prefix("pglb-lab-").tempdir_in("/tmp").expect("create tempdir").keep();
    let out = std::process::Command::new(std::env::current_exe().expect("test binary"))
        .args(["--ignored", "--exact", "lab::abandoned_lab_helper"])
        .env("PGLB_LAB_ABANDON_DIR", &dir)
        .output()
        .expect("run helper");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("abandoning the lab"), "{stdout}");
    let pgrep = std::process::Command::new("pgrep").arg("-f").arg(&dir).output().expect("run pgrep");
    assert!(!pgrep.status.success(), "processes left behind");
    assert!(!dir.exists(), "{} still exists", dir.display());
}
