//! Server selection: HAProxy's algorithms over an immutable snapshot of the
//! usable servers. The hot path loads the snapshot and takes a slot with one
//! atomic; nothing here locks.

use crate::config::Balance;
use crate::state::BackendState;
use std::net::IpAddr;
use std::sync::atomic::Ordering::Relaxed;

/// Outcome of one selection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pick {
    /// A slot was taken on this server (index into the backend's servers).
    Server(usize),
    /// Usable servers exist but all are at maxconn: queue and try again.
    Full,
    /// No usable server.
    None,
}

/// Picks a server and takes a slot on it. `avoid` is the server that just
/// failed (HAProxy avoids it when redispatching) unless it is the only one.
pub fn pick(backend: &BackendState, client: IpAddr, avoid: Option<usize>) -> Pick {
    let usable = backend.usable.load();
    if usable.servers.is_empty() {
        return Pick::None;
    }
    let servers = &backend.servers;
    let avoid = avoid.filter(|_| usable.servers.len() > 1);
    let take = |i: usize| Some(i).filter(|&i| Some(i) != avoid && servers[i].try_acquire());
    let chosen = match backend.cfg.balance {
        Balance::RoundRobin | Balance::StaticRr => {
            let n = usable.sequence.len();
            let start = backend.rr.fetch_add(1, Relaxed);
            (0..n).find_map(|k| take(usable.sequence[(start + k) % n]))
        }
        Balance::LeastConn => {
            let start = backend.rr.fetch_add(1, Relaxed);
            let n = usable.servers.len();
            let mut order: Vec<usize> = (0..n).map(|k| usable.servers[(start + k) % n]).collect();
            // Fewest sessions per unit of weight first; rotation breaks ties.
            order.sort_by_key(|&i| {
                let s = &servers[i];
                (s.counters.cur.load(Relaxed) * 256) / u64::from(s.weight().max(1))
            });
            order.into_iter().find_map(take)
        }
        Balance::First => usable.servers.iter().copied().find_map(take),
        Balance::Random { draws } => {
            let best = (0..draws)
                .map(|_| usable.sequence[fastrand::usize(..usable.sequence.len())])
                .filter(|&i| Some(i) != avoid && servers[i].has_room())
                .min_by_key(|&i| servers[i].counters.cur.load(Relaxed));
            best.and_then(take).or_else(|| usable.servers.iter().copied().find_map(take))
        }
        Balance::Source => {
            let n = usable.sequence.len();
            let start = (hash_ip(client) % n as u64) as usize;
            (0..n).find_map(|k| take(usable.sequence[(start + k) % n]))
        }
    };
    // Usable servers exist, so no slot means they are all at maxconn.
    chosen.map_or(Pick::Full, Pick::Server)
}

/// FNV-1a over the address bytes: stable across restarts, so a client keeps
/// its server while the usable set does not change.
fn hash_ip(ip: IpAddr) -> u64 {
    let bytes: Vec<u8> = match ip {
        IpAddr::V4(v4) => v4.octets().to_vec(),
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map(|v4| v4.octets().to_vec()).unwrap_or_else(|| v6.octets().to_vec()),
    };
    bytes.iter().fold(0xcbf29ce484222325u64, |h, b| (h ^ u64::from(*b)).wrapping_mul(0x100000001b3))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Backend, CheckSpec, OnMarkedDown, OnMarkedUp, Server};
    use crate::state::Health;
    use std::time::Duration;

    fn server(name: &str, weight: u32, backup: bool, maxconn: Option<u32>) -> Server {
        Server {
            name: name.into(),
            line: 1,
            host: "127.0.0.1".into(),
            port: 1,
            check: false,
            inter: Duration::from_secs(2),
            fastinter: Duration::from_secs(2),
            downinter: Duration::from_secs(2),
            rise: 2,
            fall: 3,
            weight,
            backup,
            maxconn,
            maxqueue: None,
            disabled: false,
            check_port: None,
            check_addr: None,
            on_marked_down: OnMarkedDown::Nothing,
            on_marked_up: OnMarkedUp::Nothing,
            resolvers: None,
            tcp_ut: None,
            observe: Default::default(),
            tls: None,
            check_tls: None,
        }
    }

    fn backend(balance: Balance, servers: Vec<Server>) -> BackendState {
        BackendState::new(Backend {
            name: "b".into(),
            line: 1,
            balance,
            retries: 3,
            redispatch: None,
            timeout_connect: None,
            timeout_server: None,
            timeout_server_fin: None,
            timeout_tunnel: None,
            timeout_queue: None,
            timeout_check: None,
            srvtcpka: false,
            srvtcpka_params: Default::default(),
            check: CheckSpec::Connect,
            log_health_checks: false,
            logs: Default::default(),
            allbackups: false,
            servers,
        })
    }

    fn ip() -> IpAddr {
        "10.0.0.1".parse().unwrap()
    }

    fn release(b: &BackendState, i: usize) {
        b.servers[i].counters.cur.fetch_sub(1, Relaxed);
    }

    fn counts(b: &BackendState, n: usize) -> Vec<usize> {
        let mut c = vec![0; b.servers.len()];
        for _ in 0..n {
            match pick(b, ip(), None) {
                Pick::Server(i) => {
                    c[i] += 1;
                    release(b, i);
                }
                other => panic!("{other:?}"),
            }
        }
        c
    }

    #[test]
    fn roundrobin_is_even_and_weighted() {
        let b = backend(Balance::RoundRobin, vec![server("a", 1, false, None), server("b", 1, false, None), server("c", 1, false, None)]);
        assert_eq!(counts(&b, 30), vec![10, 10, 10]);
        let b = backend(Balance::RoundRobin, vec![server("a", 3, false, None), server("b", 1, false, None)]);
        assert_eq!(counts(&b, 40), vec![30, 10]);
    }

    #[test]
    fn backups_only_when_no_active_server() {
        let b = backend(Balance::RoundRobin, vec![server("a", 1, false, None), server("bk1", 1, true, None), server("bk2", 1, true, None)]);
        assert_eq!(counts(&b, 4), vec![4, 0, 0]);
        b.servers[0].set_health(Health::Down);
        b.republish();
        // Only the first backup serves, as in HAProxy without allbackups.
        assert_eq!(counts(&b, 4), vec![0, 4, 0]);
        b.servers[0].set_health(Health::Down);
        b.servers[1].set_health(Health::Down);
        b.servers[2].set_health(Health::Down);
        b.republish();
        assert_eq!(pick(&b, ip(), None), Pick::None);
    }

    #[test]
    fn maxconn_full_means_queue() {
        let b = backend(Balance::RoundRobin, vec![server("a", 1, false, Some(1))]);
        assert_eq!(pick(&b, ip(), None), Pick::Server(0));
        assert_eq!(pick(&b, ip(), None), Pick::Full);
        release(&b, 0);
        assert_eq!(pick(&b, ip(), None), Pick::Server(0));
    }

    #[test]
    fn leastconn_prefers_the_idle_server() {
        let b = backend(Balance::LeastConn, vec![server("a", 1, false, None), server("b", 1, false, None)]);
        assert_eq!(pick(&b, ip(), None), Pick::Server(0));
        assert_eq!(pick(&b, ip(), None), Pick::Server(1));
        release(&b, 1);
        assert_eq!(pick(&b, ip(), None), Pick::Server(1));
    }

    #[test]
    fn first_fills_servers_in_order() {
        let b = backend(Balance::First, vec![server("a", 1, false, Some(2)), server("b", 1, false, Some(2))]);
        let picks: Vec<Pick> = (0..5).map(|_| pick(&b, ip(), None)).collect();
        assert_eq!(picks, vec![Pick::Server(0), Pick::Server(0), Pick::Server(1), Pick::Server(1), Pick::Full]);
    }

    #[test]
    fn source_is_sticky_and_avoid_is_honoured() {
        let b = backend(Balance::Source, vec![server("a", 1, false, None), server("b", 1, false, None), server("c", 1, false, None)]);
        let Pick::Server(first) = pick(&b, ip(), None) else { panic!() };
        for _ in 0..5 {
            assert_eq!(pick(&b, ip(), None), Pick::Server(first));
        }
        let Pick::Server(other) = pick(&b, ip(), Some(first)) else { panic!() };
        assert_ne!(other, first);
    }

    #[test]
    fn random_spreads() {
        let b = backend(Balance::Random { draws: 2 }, vec![server("a", 1, false, None), server("b", 1, false, None)]);
        let c = counts(&b, 200);
        assert!(c[0] > 20 && c[1] > 20, "{c:?}");
    }
}
