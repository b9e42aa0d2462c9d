//! Seamless failover: a stopped primary's old answer is not a split brain,
//! refused startups and connects are replayed on another server, clients
//! wait for a usable server instead of being refused, and an operator can
//! pause a backend around a switchover.

use crate::common::*;
use pglb::config::Level;
use pglb_tools::lab::Fault;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering::Relaxed};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// A server that answers every StartupMessage with a FATAL `code`, as a
/// PostgreSQL server that is shutting down does; returns its port and how
/// many startups it refused.
async fn refusing_server(code: &'static str, message: &'static str) -> (u16, Arc<AtomicUsize>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let refused = Arc::new(AtomicUsize::new(0));
    let count = refused.clone();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            let count = count.clone();
            tokio::spawn(async move {
                let mut len = [0u8; 4];
                if s.read_exact(&mut len).await.is_err() {
                    return;
                }
                let mut body = vec![0u8; (u32::from_be_bytes(len) as usize).saturating_sub(4)];
                if s.read_exact(&mut body).await.is_ok() {
                    count.fetch_add(1, Relaxed);
                    let _ = s.write_all(&pglb::pg::fatal(code, message, None, None)).await;
                }
            });
        }
    });
    (port, refused)
}

/// Forwards `port` to `to` once started: a server that "comes up".
async fn forward(listener: tokio::net::TcpListener, to: u16) {
    while let Ok((mut c, _)) = listener.accept().await {
        tokio::spawn(async move {
            if let Ok(mut s) = tokio::net::TcpStream::connect(("127.0.0.1", to)).await {
                let _ = tokio::io::copy_bidirectional(&mut c, &mut s).await;
            }
        });
    }
}

fn qcur(be: &pglb::state::BackendState) -> u64 {
    pglb::state::counters::Counters::get(&be.counters.queue_cur)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_clean_stop_then_promotion_is_no_split_brain_and_no_client_error() {
    let lab = own_lab(2).await;
    // SAFETY: test-local variable name.
    unsafe { std::env::set_var("PGLB_TEST_SW_PW", "postgres") };
    // Seed 004's timings.
    let cfg = format!(
        "defaults\n    timeout connect 5s\n    timeout check 2s\n    retries 3\n    option redispatch\n\
         listen rw\n    bind 127.0.0.1:0\n    option pgsql-check user postgres password-env PGLB_TEST_SW_PW role primary\n{}",
        server_lines(&lab, "check inter 1s rise 2 fall 3")
    );
    let pglb = start(&cfg).await;
    let port = pglb.addr("rw").unwrap().port();
    let be = pglb.runtime().backend("rw").unwrap().clone();
    poll("the primary UP", Duration::from_secs(10), || async { (be.usable.load().servers == [0]).then_some(()) }).await;
    connect(port, "appdb").await.unwrap().batch_execute("create table sw(x int)").await.unwrap();
    replicas_caught_up(&lab).await;

    // Watch for a split brain, however brief, and write through pglb with a
    // new connection per write, as psql in a loop does.
    let stop = Arc::new(AtomicBool::new(false));
    let split_seen = {
        let (be, stop) = (be.clone(), stop.clone());
        tokio::spawn(async move {
            let mut seen = false;
            while !stop.load(Relaxed) {
                seen |= be.split_brain.load(Relaxed);
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
            seen
        })
    };
    // When the old primary was gone (its clean stop returned): a write
    // started before may have been caught on it (its session dies with it,
    // as without pglb); one started after must not fail.
    let gone_at = Arc::new(std::sync::Mutex::new(None::<Instant>));
    let writer = {
        let (stop, gone_at) = (stop.clone(), gone_at.clone());
        tokio::spawn(async move {
            let (mut acks, mut errors, mut in_flight, mut last, mut gap) = (0u32, Vec::new(), Vec::new(), Instant::now(), Duration::ZERO);
            let mut i = 0;
            while !stop.load(Relaxed) {
                i += 1;
                let started = Instant::now();
                let r = async { connect(port, "appdb").await?.execute("insert into sw values ($1)", &[&i]).await }.await;
                match r {
                    Ok(_) => {
                        acks += 1;
                        gap = gap.max(last.elapsed());
                        last = Instant::now();
                    }
                    Err(e) => {
                        let text = e.as_db_error().map(|d| d.message().to_string()).unwrap_or_else(|| e.to_string());
                        let caught = gone_at.lock().unwrap().is_none_or(|gone| started < gone);
                        if caught { in_flight.push(text) } else { errors.push(text) }
                    }
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            (acks, errors, in_flight, gap)
        })
    };
    tokio::time::sleep(Duration::from_millis(500)).await;
    lab.fault("primary", Fault::Stop).await.unwrap();
    *gone_at.lock().unwrap() = Some(Instant::now());
    lab.fault("replica1", Fault::Promote).await.unwrap();
    poll("replica1 takes the writes", Duration::from_secs(10), || async { (be.usable.load().servers == [1]).then_some(()) }).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop.store(true, Relaxed);
    let (acks, errors, in_flight, gap) = writer.await.unwrap();
    let split = split_seen.await.unwrap();
    assert!(!split, "a stopped primary's last answer was taken for a second primary");
    assert!(errors.is_empty(), "errors of writes started once the old primary was gone: {errors:?}");
    // Caught on the stopping primary: its own FATAL (57P01), or a bare close
    // when the server's reset overtook it; never pglb's.
    assert!(in_flight.iter().all(|e| e.contains("terminating connection") || e.contains("connection closed")), "{in_flight:?}");
    assert!(in_flight.len() <= 3, "{in_flight:?}");
    assert!(acks > 10, "{acks} writes");
    assert!(gap < Duration::from_secs(4), "writes stopped for {gap:?}");
    let c = connect(port, "appdb").await.unwrap();
    let served: i32 = c.query_one("select inet_server_port()", &[]).await.unwrap().get(0);
    assert_eq!(served, i32::from(lab.node("replica1").unwrap().port));
    println!("switchover: {acks} writes, longest gap {gap:?}, caught in flight {in_flight:?}");
    lab.down().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_startup_refused_as_shutting_down_is_replayed_on_another_server() {
    let lab = shared_lab().await;
    let (refusing, refused) = refusing_server("57P03", "the database system is shutting down").await;
    let cfg = format!(
        "listen pg\n    bind 127.0.0.1:0\n    balance first\n    timeout connect 2s\n    retries 3\n\
         server stopping 127.0.0.1:{refusing}\n    server primary 127.0.0.1:{}\n",
        lab.primary().port
    );
    let pglb = start(&cfg).await;
    let port = pglb.addr("pg").unwrap().port();
    let started = Instant::now();
    let c = connect(port, "appdb").await.expect("the client never sees the refusal");
    let served: i32 = c.query_one("select inet_server_port()", &[]).await.unwrap().get(0);
    assert_eq!(served, i32::from(lab.primary().port));
    assert_eq!(refused.load(Relaxed), 1, "the startup went to the refusing server first");
    assert!(started.elapsed() < Duration::from_secs(1), "a replay needs no turn-around: {:?}", started.elapsed());
    // psql too, with its default sslmode=prefer (the lab's servers do TLS:
    // the replayed SSLRequest is answered by the second server).
    let out = psql(port, "disable", "select 1");
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "1", "{}", String::from_utf8_lossy(&out.stderr));
    let rt = pglb.runtime();
    let stopping = &rt.backend("pg").unwrap().servers[0];
    assert_eq!(pglb::state::counters::Counters::get(&stopping.counters.conn_errors), 2);

    // With nowhere else to go, the client reads the server's own words once
    // `retries` are used up.
    let cfg = format!("listen pg\n    bind 127.0.0.1:0\n    timeout connect 2s\n    retries 1\n    server stopping 127.0.0.1:{refusing}\n");
    let alone = start(&cfg).await;
    let Err(e) = connect(alone.addr("pg").unwrap().port(), "appdb").await else { panic!("nowhere to go") };
    let db = e.as_db_error().expect("the server's FATAL");
    assert_eq!((db.code().code(), db.message()), ("57P03", "the database system is shutting down"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_connect_is_replayed_and_marks_the_server_down_at_once() {
    let lab = shared_lab().await;
    let dead = dead_port();
    // Server `gone` passes its checks (they go to the primary's port) but
    // refuses connections: only passive health can see it.
    let cfg = format!(
        "listen pg\n    bind 127.0.0.1:0\n    balance first\n    timeout connect 2s\n    retries 3\n    option pgsql-check user postgres\n\
         server gone 127.0.0.1:{dead} check port {p} inter 30s observe layer4 error-limit 1 on-error mark-down\n    server primary 127.0.0.1:{p} check inter 30s\n",
        p = lab.primary().port
    );
    let pglb = start(&cfg).await;
    let port = pglb.addr("pg").unwrap().port();
    let be = pglb.runtime().backend("pg").unwrap().clone();
    let started = Instant::now();
    let c = connect(port, "appdb").await.expect("the client never sees the refused connect");
    let served: i32 = c.query_one("select inet_server_port()", &[]).await.unwrap().get(0);
    assert_eq!(served, i32::from(lab.primary().port));
    assert!(started.elapsed() < Duration::from_secs(1), "no turn-around on a server marked down: {:?}", started.elapsed());
    poll("gone DOWN", Duration::from_secs(2), || async { (be.servers[0].health() == pglb::state::Health::Down).then_some(()) }).await;
    let info = be.servers[0].check.lock().unwrap().clone();
    assert_eq!(info.status, pglb::state::check::CheckStatus::Hana, "{info:?}");
    assert_eq!(info.desc, "Detected 1 consecutive errors, last one was: L4 unsuccessful connection: Connection refused");
    assert_eq!(be.usable.load().servers, [1]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_wait_for_a_server_that_comes_up_and_get_the_fatal_when_the_hold_expires() {
    let lab = shared_lab().await;
    let reserved = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let later = reserved.local_addr().unwrap().port();
    drop(reserved);
    let cfg = format!(
        "listen pg\n    bind 127.0.0.1:0\n    timeout connect 1s\n    timeout queue 20s\n    option pgsql-check user postgres\n    server later 127.0.0.1:{later} check inter 5s fall 1 rise 1\n\
         listen short\n    bind 127.0.0.1:0\n    timeout connect 1s\n    timeout queue 700ms\n    option pgsql-check user postgres\n    server never 127.0.0.1:{} check inter 100ms fall 1\n",
        dead_port()
    );
    let pglb = start(&cfg).await;
    let rt = pglb.runtime();
    let (be, short) = (rt.backend("pg").unwrap().clone(), rt.backend("short").unwrap().clone());
    poll("both DOWN", Duration::from_secs(10), || async {
        (be.usable.load().servers.is_empty() && short.usable.load().servers.is_empty()).then_some(())
    })
    .await;

    // Held: the client waits, counted in qcur.
    let port = pglb.addr("pg").unwrap().port();
    let client = tokio::spawn(async move {
        let started = Instant::now();
        let c = connect(port, "appdb").await?;
        c.query_one("select 1", &[]).await?;
        Ok::<_, tokio_postgres::Error>(started.elapsed())
    });
    poll("the client held", Duration::from_secs(5), || async { (qcur(&be) == 1).then_some(()) }).await;
    let csv = pglb::admin::execute(&rt, Level::Admin, "show stat");
    let pglb::admin::Outcome::Text(csv) = csv else { panic!() };
    let row = csv.lines().find(|l| l.starts_with("pg,BACKEND,")).unwrap();
    assert!(row.starts_with("pg,BACKEND,1,"), "qcur on the stats: {row}");
    // The server comes up: the check that sees it (asked for at once while
    // clients wait, then every 500 ms, not every `inter 5s`) releases it.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let up_at = Instant::now();
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", later)).await.unwrap();
    tokio::spawn(forward(listener, lab.primary().port));
    let waited = client.await.unwrap().expect("released once the server is up");
    assert!(up_at.elapsed() < Duration::from_secs(2), "released {:?} after the server came up", up_at.elapsed());
    assert!(waited >= Duration::from_millis(300), "{waited:?}");
    assert_eq!(qcur(&be), 0);

    // Nothing comes up: the FATAL, once `timeout queue` has passed.
    let started = Instant::now();
    let Err(e) = connect(pglb.addr("short").unwrap().port(), "appdb").await else { panic!("no server") };
    let db = e.as_db_error().expect("pglb's FATAL");
    assert_eq!(db.code().code(), "08006");
    assert_eq!(
        db.message(),
        "pglb: no server is available in backend \"short\" (1 server(s), 1 DOWN) after waiting 700ms (timeout queue); connection closed, try again"
    );
    assert!(started.elapsed() >= Duration::from_millis(700), "{:?}", started.elapsed());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pause_holds_new_clients_and_resume_releases_them_while_open_sessions_go_on() {
    let lab = shared_lab().await;
    let cfg = format!(
        "global\n    stats socket {}/pglb.sock level admin\nlisten pg\n    bind 127.0.0.1:0\n    timeout connect 1s\n    timeout queue 30s\n    server primary 127.0.0.1:{}\n\
         listen stats\n    bind 127.0.0.1:0\n    mode http\n    stats enable\n    stats uri /\n",
        lab_dir().display(),
        lab.primary().port
    );
    let pglb = start(&cfg).await;
    let rt = pglb.runtime();
    let be = rt.backend("pg").unwrap().clone();
    let port = pglb.addr("pg").unwrap().port();
    let open = connect(port, "appdb").await.unwrap();
    let socket = rt.config.global.stats_sockets[0].path.clone();
    let ctl = |cmd: &str| {
        let out = std::process::Command::new(pglb_bin()).args(["ctl", "-S"]).arg(&socket).args(cmd.split(' ')).output().unwrap();
        assert!(out.status.success(), "{cmd}: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    ctl("pause backend pg");
    let held = tokio::spawn(async move { connect(port, "appdb").await.map(|c| (c, Instant::now())) });
    poll("the new client held", Duration::from_secs(5), || async { (qcur(&be) == 1).then_some(()) }).await;
    open.query_one("select 1", &[]).await.expect("an open session goes on while paused");
    let stat = ctl("show stat -1 2 -1");
    assert!(stat.contains("PAUSED"), "{stat}");
    let stats = pglb.addr("stats").unwrap();
    let metrics = crate::observe::http_get(stats.port(), "/metrics", None).await.1;
    assert!(metrics.contains("pglb_backend_paused{proxy=\"pg\"} 1"), "{metrics}");
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(!held.is_finished());
    let resumed = Instant::now();
    ctl("resume backend pg");
    let (c, at) = held.await.unwrap().expect("released by resume");
    assert!(at.duration_since(resumed) < Duration::from_secs(1));
    c.query_one("select 1", &[]).await.unwrap();
    assert!(crate::observe::http_get(stats.port(), "/metrics", None).await.1.contains("pglb_backend_paused{proxy=\"pg\"} 0"));
    // Levels: only admin may pause.
    let pglb::admin::Outcome::Text(denied) = pglb::admin::execute(&rt, Level::Operator, "pause backend pg") else { panic!() };
    assert_eq!(denied, "Permission denied\n");
    let pglb::admin::Outcome::Text(unknown) = pglb::admin::execute(&rt, Level::Admin, "pause backend nope") else { panic!() };
    assert_eq!(unknown, "No such backend.\n");
}
