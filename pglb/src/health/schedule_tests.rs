//! The check scheduler with a scripted prober, under tokio's paused time:
//! rise/fall, promotion, split brain, passive health and the held-client
//! interval, checked in milliseconds of real time.

use super::{Probed, Prober, check_loop};
use crate::state::check::CheckStatus;
use crate::state::{BackendState, Health, Runtime, ServerState};
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::time::Instant;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Node {
    Primary,
    Replica,
    Gone,
}

/// Answers as its node is scripted to be; counts the checks.
#[derive(Clone)]
struct Scripted {
    node: Arc<Mutex<Node>>,
    checks: Arc<AtomicUsize>,
}

impl Scripted {
    fn new(node: Node) -> Self {
        Scripted { node: Arc::new(Mutex::new(node)), checks: Arc::default() }
    }

    fn set(&self, node: Node) {
        *self.node.lock().unwrap() = node;
    }
}

impl Prober for Scripted {
    fn probe<'a>(&'a mut self, _: &'a BackendState, _: &'a ServerState) -> std::pin::Pin<Box<dyn Future<Output = Probed> + Send + 'a>> {
        Box::pin(async move {
            self.checks.fetch_add(1, Relaxed);
            let started = Instant::now();
            match *self.node.lock().unwrap() {
                Node::Primary => Probed {
                    ok: true,
                    status: CheckStatus::L7Ok,
                    desc: "role primary".into(),
                    duration: Duration::ZERO,
                    started,
                    primary: Some(true),
                    wrong_role: false,
                },
                Node::Replica => Probed {
                    ok: false,
                    status: CheckStatus::L7Sts,
                    desc: "role replica, primary required".into(),
                    duration: Duration::ZERO,
                    started,
                    primary: Some(false),
                    wrong_role: true,
                },
                Node::Gone => Probed::failed(CheckStatus::L4Con, "Connection refused".into(), started),
            }
        })
    }
}

/// A `role primary` backend over the scripted nodes, their check tasks running.
fn backend(options: &str, nodes: &[&Scripted]) -> Arc<BackendState> {
    let servers: String = (0..nodes.len()).map(|i| format!("    server s{i} 127.0.0.1:{} check inter 1s rise 2 fall 3\n", 5000 + i)).collect();
    let text = format!("backend rw\n    option pgsql-check user u password-env PGLB_UNUSED role primary {options}\n{servers}");
    let cfg = crate::config::parse_str(std::path::Path::new("t.cfg"), &text).unwrap().config;
    let rt = Runtime::new(Arc::new(cfg));
    let be = rt.backends[0].clone();
    for (srv, prober) in be.servers.iter().zip(nodes) {
        let (be, srv, prober) = (be.clone(), srv.clone(), (*prober).clone());
        tokio::spawn(async move { check_loop(&be, &srv, prober).await });
    }
    be
}

/// Every server has been checked once (its role is known).
fn all_checked(be: &BackendState) -> bool {
    be.servers.iter().all(|s| s.check.lock().unwrap().status.has_result())
}

fn routed(be: &BackendState) -> Vec<usize> {
    be.usable.load().servers.clone()
}

/// Advances paused time in 10 ms steps until `cond`, failing after `limit`;
/// returns the time taken. `watch` is checked at every step.
async fn until(limit: Duration, mut cond: impl FnMut() -> bool, mut watch: impl FnMut()) -> Duration {
    let started = Instant::now();
    while !cond() {
        watch();
        assert!(started.elapsed() < limit, "not within {limit:?}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    started.elapsed()
}

#[tokio::test(start_paused = true)]
async fn a_stopped_primary_and_a_promotion_are_no_split_brain_and_the_promoted_node_needs_no_rise() {
    let (a, b) = (Scripted::new(Node::Primary), Scripted::new(Node::Replica));
    let be = backend("", &[&a, &b]);
    until(Duration::from_secs(3), || routed(&be) == [0] && all_checked(&be), || {}).await;
    assert_eq!(be.servers[1].health(), Health::Down, "a replica is DOWN at once in a role primary backend");
    // The primary stops; replica s1 is promoted at the same moment.
    a.set(Node::Gone);
    b.set(Node::Primary);
    let mut split = false;
    let took = until(Duration::from_secs(3), || routed(&be) == [1], || split |= be.split_brain.load(Relaxed)).await;
    assert!(!split, "the stopped primary's last answer made a split brain");
    // One check interval at most (the checks are 1 s apart), not rise 2 more.
    assert!(took <= Duration::from_millis(1100), "took {took:?}");
    assert_eq!(be.servers[1].health(), Health::Up);
}

#[tokio::test(start_paused = true)]
async fn strict_rise_waits_for_rise_checks() {
    let (a, b) = (Scripted::new(Node::Primary), Scripted::new(Node::Replica));
    let be = backend("strict-rise", &[&a, &b]);
    until(Duration::from_secs(3), || routed(&be) == [0] && all_checked(&be), || {}).await;
    a.set(Node::Gone);
    b.set(Node::Primary);
    let took = until(Duration::from_secs(5), || routed(&be) == [1], || {}).await;
    assert!(took > Duration::from_millis(1100), "rise 2 means two passing checks: {took:?}");
}

#[tokio::test(start_paused = true)]
async fn two_primaries_confirmed_after_each_other_are_a_split_brain() {
    let (a, b) = (Scripted::new(Node::Primary), Scripted::new(Node::Replica));
    let be = backend("", &[&a, &b]);
    until(Duration::from_secs(3), || routed(&be) == [0] && all_checked(&be), || {}).await;
    b.set(Node::Primary);
    until(Duration::from_secs(3), || be.split_brain.load(Relaxed), || {}).await;
    assert!(routed(&be).is_empty(), "no writes while two servers are primary");
    // The old one steps down: the other takes the writes.
    a.set(Node::Replica);
    until(Duration::from_secs(3), || routed(&be) == [1], || {}).await;
    assert!(!be.split_brain.load(Relaxed));
}

#[tokio::test(start_paused = true)]
async fn a_passive_mark_down_leaves_routing_at_once_and_the_check_status_says_why() {
    let a = Scripted::new(Node::Primary);
    let be = backend("", &[&a]);
    until(Duration::from_secs(3), || routed(&be) == [0] && all_checked(&be), || {}).await;
    a.set(Node::Gone);
    let srv = &be.servers[0];
    assert!(srv.passive_error(&be, "L4 unsuccessful connection: Connection refused"), "role backends mark down at the first error");
    assert!(routed(&be).is_empty(), "out of routing before the check task runs");
    until(Duration::from_millis(100), || srv.health() == Health::Down, || {}).await;
    let info = srv.check.lock().unwrap().clone();
    assert_eq!(info.status, CheckStatus::Hana);
    assert_eq!(info.desc, "Detected 1 consecutive errors, last one was: L4 unsuccessful connection: Connection refused");
    // Back as the only primary: taken at its first passing check.
    a.set(Node::Primary);
    until(Duration::from_secs(2), || routed(&be) == [0], || {}).await;
}

#[tokio::test(start_paused = true)]
async fn while_clients_wait_the_servers_are_checked_every_500ms() {
    let a = Scripted::new(Node::Gone);
    let be = backend("", &[&a]);
    tokio::time::sleep(Duration::from_secs(3)).await;
    let before = a.checks.load(Relaxed);
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(a.checks.load(Relaxed) - before <= 2, "DOWN: every downinter (1 s)");
    // A client starts waiting: a check at once, then every 500 ms.
    be.holding.fetch_add(1, Relaxed);
    be.servers[0].request_check();
    let before = a.checks.load(Relaxed);
    tokio::time::sleep(Duration::from_millis(2_050)).await;
    let n = a.checks.load(Relaxed) - before;
    assert!((4..=6).contains(&n), "{n} checks in 2 s while a client waits");
}
