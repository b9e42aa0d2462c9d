//! The routing snapshot: the servers load balancing may pick now, rebuilt
//! by `BackendState::republish` and published with `ArcSwap`; the hot path
//! only loads it.

use super::ServerState;
use std::sync::Arc;

/// The servers load balancing may pick now: the active ones, or the backup
/// tier when no active server is usable (only the first backup unless
/// `option allbackups`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Usable {
    /// Indexes into the backend's servers, in configuration order.
    pub servers: Vec<usize>,
    /// Smooth weighted round-robin order over `servers` (indexes into the
    /// backend's servers), one entry per unit of weight.
    pub sequence: Vec<usize>,
    /// True when `servers` are backups.
    pub backup: bool,
}

impl Usable {
    /// The usable servers among those `allowed` (the routing rules of the
    /// backend, e.g. only the server that proves to be primary).
    pub fn build(servers: &[Arc<ServerState>], allbackups: bool, allowed: impl Fn(&ServerState) -> bool) -> Usable {
        let usable = |s: &&Arc<ServerState>| s.usable() && allowed(s);
        let active: Vec<usize> = servers.iter().filter(|s| !s.cfg.backup).filter(usable).map(|s| s.index).collect();
        let (chosen, backup) = if !active.is_empty() {
            (active, false)
        } else {
            let mut b: Vec<usize> = servers.iter().filter(|s| s.cfg.backup).filter(usable).map(|s| s.index).collect();
            if !allbackups {
                b.truncate(1);
            }
            (b, true)
        };
        let weights: Vec<u32> = chosen.iter().map(|&i| servers[i].weight()).collect();
        let sequence = smooth_wrr(&weights).into_iter().map(|k| chosen[k]).collect();
        Usable { servers: chosen, sequence, backup }
    }
}

fn gcd(a: u32, b: u32) -> u32 {
    if b == 0 { a } else { gcd(b, a % b) }
}

/// Nginx's smooth weighted round-robin, unrolled into one period: each
/// server appears `weight / gcd` times, spread out rather than in bursts.
fn smooth_wrr(weights: &[u32]) -> Vec<usize> {
    let g = weights.iter().copied().fold(0, gcd).max(1);
    let w: Vec<i64> = weights.iter().map(|&x| i64::from(x / g)).collect();
    let total: i64 = w.iter().sum();
    let mut current = vec![0i64; w.len()];
    let mut out = Vec::with_capacity(total as usize);
    for _ in 0..total {
        for (c, wi) in current.iter_mut().zip(&w) {
            *c += wi;
        }
        let (best, _) = current.iter().enumerate().max_by_key(|(i, c)| (**c, -(*i as i64))).expect("non-empty");
        current[best] -= total;
        out.push(best);
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn smooth_weighted_round_robin_spreads_the_heavier_server() {
        assert_eq!(super::smooth_wrr(&[2, 1]), vec![0, 1, 0]);
        assert_eq!(super::smooth_wrr(&[4, 2]), vec![0, 1, 0], "weights reduce by their gcd");
    }
}
