//! Keywords pglb accepts without giving them an effect, or rejects, with the
//! reason shown to the operator. Implemented keywords are handled by the
//! parsers in `global.rs`, `proxy.rs` and `server.rs`; `docs/config.md` lists
//! all three kinds (a unit test keeps it complete).

/// Global keywords accepted with a warning, and why they have no effect.
pub const GLOBAL_NO_EFFECT: &[(&str, &str)] = &[
    ("daemon", "pglb stays in the foreground; let systemd or Kubernetes supervise it"),
    ("master-worker", "pglb is a single process"),
    ("thread-groups", "pglb's session threads (nbthread) form one group"),
    ("user", "start pglb as the account it should run as"),
    ("group", "start pglb with the group it should run as"),
    ("uid", "start pglb as the account it should run as"),
    ("gid", "start pglb with the group it should run as"),
    ("chroot", "run pglb in a container or under systemd's RootDirectory= instead"),
    ("cpu-map", "the tokio runtime schedules its threads itself"),
    ("node", "pglb reports the host name"),
    ("description", "shown by HAProxy's stats page only"),
    ("ssl-default-bind-ciphers", "pglb's TLS uses Mozilla's intermediate profile (TLS 1.2 and 1.3)"),
    ("ssl-default-bind-options", "pglb's TLS uses Mozilla's intermediate profile (TLS 1.2 and 1.3)"),
    ("ssl-default-server-ciphers", "pglb's TLS to servers uses OpenSSL's default ciphers, TLS 1.2 or later"),
    ("ssl-default-server-options", "pglb's TLS to servers uses OpenSSL's default ciphers, TLS 1.2 or later"),
    ("server-state-file", "pglb does not save server state to a file"),
    ("server-state-base", "pglb does not save server state to a file"),
    ("insecure-fork-wanted", "pglb never forks"),
    ("set-dumpable", "pglb does not change its dumpable flag"),
    ("quiet", "pglb's log level is set with RUST_LOG"),
    ("busy-polling", "the tokio runtime polls with epoll"),
    ("max-spread-checks", "pglb spreads checks over their interval already"),
    ("spread-checks", "pglb spreads checks over their interval already"),
    ("localpeer", "pglb has no peers section support"),
    ("expose-experimental-directives", "pglb has no experimental directives"),
    ("h1-case-adjust", "pglb does not proxy HTTP"),
];

/// Global keyword prefixes accepted with a warning (HAProxy tuning knobs).
pub const GLOBAL_PREFIX_NO_EFFECT: &[(&str, &str)] = &[
    ("tune.", "HAProxy's buffer and scheduler tuning does not apply to pglb"),
    ("ssl-", "pglb's TLS uses Mozilla's intermediate profile; certificates and checks are set on bind and server lines"),
];

/// Global keywords rejected, with what to write instead.
pub const GLOBAL_REJECTED: &[(&str, &str)] = &[
    ("nbproc", "nbproc was removed in HAProxy 2.5 and pglb is one process: use nbthread"),
    ("lua-load", "pglb has no Lua interpreter: remove it"),
    ("external-check", "pglb runs no external check commands: use option pgsql-check"),
];

/// Proxy keywords accepted with a warning: (keyword, reason).
pub const PROXY_NO_EFFECT: &[(&str, &str)] = &[
    ("description", "shown by HAProxy's stats page only"),
    ("id", "pglb numbers proxies in configuration order"),
    ("hash-type", "pglb's source balancing always uses a map of the usable servers"),
    ("fullconn", "pglb has no dynamic maxconn (minconn); set server maxconn"),
    ("log-tag", "pglb uses the global log-tag for every proxy"),
    ("monitor-uri", "pglb has no monitor URI"),
    ("bind-process", "pglb is one process"),
    ("cookie", "cookies are HTTP; pglb proxies PostgreSQL over TCP"),
    ("persist", "pglb has no persistence beyond balance source"),
    ("source", "pglb lets the kernel choose the source address"),
    ("email-alert", "pglb sends no mail; alert on its Prometheus metrics"),
    ("load-server-state-from-file", "pglb does not save server state to a file"),
    ("errorfile", "error files are HTTP; pglb answers PostgreSQL clients in their protocol"),
    ("compression", "compression is HTTP; pglb proxies PostgreSQL over TCP"),
    ("http-reuse", "pglb does not proxy HTTP"),
    ("unique-id-format", "pglb does not proxy HTTP"),
    ("capture", "pglb does not proxy HTTP"),
];

/// `option` names accepted with a warning.
pub const OPTION_NO_EFFECT: &[(&str, &str)] = &[
    ("httplog", "pglb does not proxy HTTP; its connection log is option tcplog's"),
    ("http-server-close", "pglb does not proxy HTTP"),
    ("http-keep-alive", "pglb does not proxy HTTP"),
    ("httpclose", "pglb does not proxy HTTP"),
    ("forwardfor", "pglb does not proxy HTTP; PostgreSQL sees pglb's address"),
    ("abortonclose", "pglb always drops a queued session whose client has left"),
    ("splice-auto", "pglb chooses its relay method itself"),
    ("splice-request", "pglb chooses its relay method itself"),
    ("splice-response", "pglb chooses its relay method itself"),
    ("tcp-smart-accept", "pglb always reads the client's first packet before connecting"),
    ("tcp-smart-connect", "pglb sends the client's first packet as soon as it connects"),
    ("log-separate-errors", "pglb logs errors at warn level already"),
    ("logasap", "pglb logs a connection when it closes"),
    ("nolinger", "pglb closes sockets normally"),
    ("socket-stats", "pglb keeps statistics per frontend, backend and server"),
    ("independent-streams", "pglb refreshes timeouts on traffic in either direction"),
    ("contstats", "pglb updates byte counters as data flows"),
    ("dontlog-normal", "pglb logs every connection; filter with RUST_LOG"),
];

/// Proxy keywords rejected, with what to write instead.
pub const PROXY_REJECTED: &[(&str, &str)] = &[
    ("use-server", "pglb routes by balance algorithm only: remove use-server"),
    ("tcp-response", "pglb has no tcp-response rules: remove them"),
    ("http-request", "pglb does not proxy HTTP: remove http-request rules"),
    ("http-response", "pglb does not proxy HTTP: remove http-response rules"),
    ("http-after-response", "pglb does not proxy HTTP: remove http-after-response rules"),
    ("stick-table", "pglb has no stick tables: use balance source for client affinity"),
    ("stick", "pglb has no stick tables: use balance source for client affinity"),
    ("dispatch", "use a server line instead of dispatch"),
    ("redirect", "pglb does not proxy HTTP: remove redirect"),
    ("contimeout", "the old contimeout keyword is gone: write timeout connect"),
    ("clitimeout", "the old clitimeout keyword is gone: write timeout client"),
    ("srvtimeout", "the old srvtimeout keyword is gone: write timeout server"),
    ("reqadd", "pglb does not proxy HTTP: remove it"),
    ("rspadd", "pglb does not proxy HTTP: remove it"),
];

/// `option` names rejected: health checks for other protocols.
pub const OPTION_REJECTED: &[(&str, &str)] = &[
    ("ssl-hello-chk", "pglb checks PostgreSQL: use option pgsql-check user NAME"),
    ("mysql-check", "pglb checks PostgreSQL: use option pgsql-check user NAME"),
    ("redis-check", "pglb checks PostgreSQL: use option pgsql-check user NAME"),
    ("smtpchk", "pglb checks PostgreSQL: use option pgsql-check user NAME"),
    ("ldap-check", "pglb checks PostgreSQL: use option pgsql-check user NAME"),
    ("spop-check", "pglb checks PostgreSQL: use option pgsql-check user NAME"),
    ("external-check", "pglb runs no external check commands: use option pgsql-check user NAME"),
    ("transparent", "pglb does not do transparent proxying: list servers explicitly"),
    ("http_proxy", "pglb does not proxy HTTP"),
];

/// Server/default-server options accepted with a warning.
pub const SERVER_NO_EFFECT: &[(&str, &str)] = &[
    ("id", "pglb numbers servers in configuration order"),
    ("cookie", "cookies are HTTP; pglb proxies PostgreSQL over TCP"),
    ("slowstart", "pglb gives a recovered server its full weight at once"),
    ("minconn", "pglb has no dynamic maxconn: set maxconn"),
    ("agent-check", "pglb has no agent checks: use option pgsql-check or option httpchk"),
    ("agent-port", "pglb has no agent checks"),
    ("agent-inter", "pglb has no agent checks"),
    ("agent-addr", "pglb has no agent checks"),
    ("agent-send", "pglb has no agent checks"),
    ("check-proto", "pglb's checks speak TCP"),
    ("pool-max-conn", "pglb does not pool server connections"),
    ("pool-purge-delay", "pglb does not pool server connections"),
    ("pool-low-conn", "pglb does not pool server connections"),
    ("max-reuse", "pglb does not pool server connections"),
    ("source", "pglb lets the kernel choose the source address"),
    ("namespace", "pglb connects from its own network namespace"),
    ("resolve-opts", "pglb's resolver has no options"),
    ("resolve-net", "pglb's resolver has no options"),
    ("alpn", "pglb offers servers no ALPN: PostgreSQL needs none after an SSLRequest"),
];

/// Server options rejected, with what to write instead.
pub const SERVER_REJECTED: &[(&str, &str)] = &[
    ("send-proxy", "PostgreSQL does not understand the PROXY protocol: remove send-proxy"),
    ("send-proxy-v2", "PostgreSQL does not understand the PROXY protocol: remove send-proxy-v2"),
    ("check-send-proxy", "PostgreSQL does not understand the PROXY protocol: remove check-send-proxy"),
    ("track", "pglb checks every server itself: replace track with check"),
    ("redir", "pglb does not proxy HTTP: remove redir"),
];

/// Sections pglb skips with a warning.
pub const SECTION_NO_EFFECT: &[(&str, &str)] = &[
    ("peers", "pglb has no stick tables to share"),
    ("mailers", "pglb sends no mail; alert on its Prometheus metrics"),
    ("ring", "pglb writes logs to stderr or stdout"),
    ("cache", "pglb does not proxy HTTP"),
    ("http-errors", "pglb does not proxy HTTP"),
    ("program", "run other programs under your supervisor"),
];

/// Sections pglb rejects.
pub const SECTION_REJECTED: &[(&str, &str)] = &[
    ("userlist", "pglb has no userlists: use stats auth USER:PASS"),
    ("fcgi-app", "pglb does not proxy HTTP"),
    ("crt-store", "pglb reads certificates from crt FILE on bind and server lines"),
];

pub fn lookup<'a>(table: &'a [(&str, &str)], keyword: &str) -> Option<&'a str> {
    table.iter().find(|(k, _)| *k == keyword).map(|(_, why)| *why)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// docs/config.md must name every keyword pglb knows about.
    #[test]
    fn docs_list_every_keyword() {
        let doc = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/config.md")).expect("docs/config.md");
        let tables = [
            GLOBAL_NO_EFFECT,
            GLOBAL_PREFIX_NO_EFFECT,
            GLOBAL_REJECTED,
            PROXY_NO_EFFECT,
            OPTION_NO_EFFECT,
            PROXY_REJECTED,
            OPTION_REJECTED,
            SERVER_NO_EFFECT,
            SERVER_REJECTED,
            SECTION_NO_EFFECT,
            SECTION_REJECTED,
        ];
        let mut missing = Vec::new();
        for table in tables {
            for (kw, _) in table {
                if !doc.contains(&format!("`{kw}")) {
                    missing.push(*kw);
                }
            }
        }
        for kw in super::super::IMPLEMENTED {
            if !doc.contains(&format!("`{kw}")) {
                missing.push(kw);
            }
        }
        assert!(missing.is_empty(), "docs/config.md does not mention: {missing:?}");
    }
}
