//! Re-resolution of server names, so an address change (a Kubernetes
//! Service recreated, a DNS failover) takes effect without a restart.
//!
//! A server with `resolvers NAME` asks that section's nameservers (hickory)
//! every `hold valid`; a named server without one uses the system resolver
//! (getaddrinfo: /etc/hosts, /etc/resolv.conf) every 10 s. A name that does
//! not resolve leaves the server unusable (reason "unresolvable") and is
//! retried every `timeout retry` (1 s); a failed lookup keeps the last good
//! address, as HAProxy does.

use crate::config::Resolvers;
use crate::state::check::CheckStatus;
use crate::state::{BackendState, ServerState};
use hickory_resolver::TokioResolver;
use hickory_resolver::config::{NameServerConfig, ResolveHosts, ResolverConfig};
use hickory_resolver::net::runtime::TokioRuntimeProvider;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;

/// Re-resolution interval for names without a `resolvers` section.
pub const DEFAULT_HOLD: Duration = Duration::from_secs(10);
/// Retry delay while a name does not resolve at all (no `resolvers`).
const RETRY_UNRESOLVED: Duration = Duration::from_secs(1);

/// How one server's name is looked up.
enum Lookup {
    System,
    Dns { resolver: Box<TokioResolver>, hold: Duration, retry: Duration },
}

impl Lookup {
    async fn ip(&self, host: &str, port: u16) -> Option<SocketAddr> {
        match self {
            Lookup::System => tokio::net::lookup_host((host, port)).await.ok().and_then(|mut a| a.next()),
            Lookup::Dns { resolver, .. } => resolver.lookup_ip(host).await.ok().and_then(|r| r.iter().next()).map(|ip| SocketAddr::new(ip, port)),
        }
    }

    fn intervals(&self) -> (Duration, Duration) {
        match self {
            Lookup::System => (DEFAULT_HOLD, RETRY_UNRESOLVED),
            Lookup::Dns { hold, retry, .. } => (*hold, *retry),
        }
    }
}

/// A resolver for a `resolvers` section: its nameservers (and resolv.conf's
/// with `parse-resolv-conf`), its timeout and retries, no answer cache (so
/// `hold valid` decides how fresh an address is).
fn dns(section: &Resolvers) -> Result<TokioResolver, hickory_resolver::net::NetError> {
    let mut servers: Vec<NameServerConfig> = section
        .nameservers
        .iter()
        .map(|a| {
            let mut ns = NameServerConfig::udp_and_tcp(a.ip());
            for c in &mut ns.connections {
                c.port = a.port();
            }
            ns
        })
        .collect();
    if section.parse_resolv_conf {
        match hickory_resolver::system_conf::read_system_conf() {
            Ok((cfg, _)) => servers.extend(cfg.name_servers),
            Err(e) => tracing::warn!(resolvers = %section.name, error = %e, "parse-resolv-conf: cannot read /etc/resolv.conf"),
        }
    }
    let mut builder = TokioResolver::builder_with_config(ResolverConfig::from_name_servers(servers), TokioRuntimeProvider::default());
    let opts = builder.options_mut();
    opts.timeout = section.timeout_resolve;
    opts.attempts = section.resolve_retries as usize;
    opts.cache_size = 0;
    opts.use_hosts_file = ResolveHosts::Never;
    builder.build()
}

pub async fn resolve_loop(be: &BackendState, sections: &[Resolvers]) {
    let named: Vec<(&Arc<ServerState>, Lookup)> = be
        .servers
        .iter()
        // Servers with a name, and those that may get one (`set server ... fqdn`).
        .filter(|s| s.cfg.host.parse::<IpAddr>().is_err() || s.cfg.resolvers.is_some())
        .map(|s| {
            let lookup = match s.cfg.resolvers.as_deref().and_then(|n| sections.iter().find(|r| r.name == n)) {
                None => Lookup::System,
                Some(section) => match dns(section) {
                    Ok(resolver) => Lookup::Dns { resolver: Box::new(resolver), hold: section.hold_valid, retry: section.timeout_retry },
                    Err(e) => {
                        tracing::warn!(resolvers = %section.name, error = %e, "cannot build the resolver; using the system resolver");
                        Lookup::System
                    }
                },
            };
            (s, lookup)
        })
        .collect();
    let mut next: Vec<Instant> = vec![Instant::now(); named.len()];
    loop {
        let now = Instant::now();
        for (i, (srv, lookup)) in named.iter().enumerate() {
            if next[i] > now {
                continue;
            }
            let resolved = refresh(be, srv, lookup).await;
            let (hold, retry) = lookup.intervals();
            next[i] = Instant::now() + if resolved { hold } else { retry.min(hold) };
        }
        let wake = next.iter().min().copied().unwrap_or_else(|| Instant::now() + DEFAULT_HOLD);
        tokio::time::sleep_until(wake).await;
    }
}

/// Looks one server up; returns whether it has an address now.
async fn refresh(be: &BackendState, srv: &ServerState, lookup: &Lookup) -> bool {
    let host = srv.host();
    if host.parse::<IpAddr>().is_ok() {
        return true;
    }
    let found = lookup.ip(&host, srv.cfg.port).await;
    let current = srv.addr();
    match (found, current) {
        (Some(new), cur) if Some(new) != cur => {
            tracing::info!(target: "pglb::health", backend = %be.cfg.name, server = %srv.cfg.name, host = %host, old = ?cur, new = %new,
                "Server {}/{} address changed to {new} ({host} resolved)", be.cfg.name, srv.cfg.name);
            be.set_addr(srv, new);
            true
        }
        (Some(_), _) => true,
        (None, None) => {
            let mut info = srv.check.lock().unwrap_or_else(|e| e.into_inner());
            if info.status != CheckStatus::Unresolvable {
                tracing::warn!(target: "pglb::health", backend = %be.cfg.name, server = %srv.cfg.name, host = %host,
                    "Server {}/{} is DOWN, reason: unresolvable ({host} does not resolve)", be.cfg.name, srv.cfg.name);
                info.status = CheckStatus::Unresolvable;
                info.desc = format!("{host} does not resolve");
            }
            false
        }
        (None, Some(_)) => {
            tracing::debug!(server = %srv.cfg.name, "lookup failed; keeping the last address");
            true
        }
    }
}
