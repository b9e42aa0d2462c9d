//! Re-resolution of server names, so an address change (a Kubernetes
//! Service recreated, a DNS failover) takes effect without a restart. A name
//! that does not resolve leaves the server unusable (reason "unresolvable")
//! and pglb keeps trying; a failed lookup keeps the last good address.

use crate::state::BackendState;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

/// How often names are re-resolved when no `resolvers` section says
/// otherwise (HAProxy's `hold valid` default).
pub const DEFAULT_HOLD: Duration = Duration::from_secs(10);

/// Retry delay while a name does not resolve at all.
const RETRY_UNRESOLVED: Duration = Duration::from_secs(1);

pub async fn resolve_loop(be: &BackendState, hold: Duration) {
    loop {
        let mut unresolved = false;
        for srv in be.servers.iter().filter(|s| s.cfg.host.parse::<IpAddr>().is_err()) {
            let name = format!("{}:{}", srv.cfg.host, srv.cfg.port);
            let found = tokio::net::lookup_host(name.as_str()).await.ok().and_then(|mut a| a.next());
            let current = srv.addr.load().as_deref().copied();
            match (found, current) {
                (Some(new), cur) if Some(new) != cur => {
                    tracing::info!(target: "pglb::health", backend = %be.cfg.name, server = %srv.cfg.name, host = %srv.cfg.host, old = ?cur, new = %new,
                        "Server {}/{} address changed to {new}", be.cfg.name, srv.cfg.name);
                    srv.addr.store(Some(Arc::new(new)));
                    be.republish();
                }
                (Some(_), _) => {}
                (None, None) => {
                    unresolved = true;
                    let mut info = srv.check.lock().unwrap_or_else(|e| e.into_inner());
                    if info.status != "unresolvable" {
                        tracing::warn!(target: "pglb::health", backend = %be.cfg.name, server = %srv.cfg.name, host = %srv.cfg.host,
                            "Server {}/{} is DOWN, reason: unresolvable ({} does not resolve)", be.cfg.name, srv.cfg.name, srv.cfg.host);
                        info.status = "unresolvable".into();
                        info.desc = format!("{} does not resolve", srv.cfg.host);
                    }
                }
                (None, Some(_)) => tracing::debug!(server = %srv.cfg.name, "lookup failed; keeping the last address"),
            }
        }
        tokio::time::sleep(if unresolved { RETRY_UNRESOLVED.min(hold) } else { hold }).await;
    }
}
