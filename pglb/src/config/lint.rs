//! PostgreSQL-aware checks on an otherwise valid configuration: mistakes
//! HAProxy accepts silently but that hurt a PostgreSQL service.

use super::model::*;
use super::parse::Ctx;
use crate::pg::startup;
use std::time::Duration;

/// Idle timeouts below this cut sessions that connection pools keep open.
const IDLE_WARN_BELOW: Duration = Duration::from_secs(3600);

pub(super) fn check(ctx: &mut Ctx, config: &Config) {
    for be in &config.backends {
        check_startup_packets(ctx, be);
        if be.timeout_connect.is_none() {
            ctx.warn(
                be.line,
                format!("backend '{}' has no 'timeout connect': a connect to a dead server waits for the kernel (about 2 minutes); add 'timeout connect 5s'", be.name),
            );
        }
    }
    for fe in &config.frontends {
        let Some(be) = fe.default_backend.as_deref().and_then(|b| config.backend(b)) else { continue };
        if be.timeout_tunnel.is_some() {
            continue;
        }
        let cutting: Vec<String> = [("client", fe.timeout_client), ("server", be.timeout_server)]
            .into_iter()
            .filter_map(|(what, t)| t.filter(|t| *t < IDLE_WARN_BELOW).map(|t| format!("'timeout {what} {}'", super::units::fmt_duration(t))))
            .collect();
        if !cutting.is_empty() {
            ctx.warn(
                fe.line,
                format!(
                    "{} will close PostgreSQL sessions through '{}' that stay idle (or run one query) that long, and connection pools keep idle sessions open for much longer: add 'timeout tunnel 1h' (or longer) to backend '{}', which replaces client/server timeouts once connected",
                    cutting.join(" and "),
                    fe.name,
                    be.name
                ),
            );
        }
    }
}

/// A `tcp-check send-binary` that is meant as a PostgreSQL StartupMessage
/// must be exactly right, or every server goes DOWN on a check timeout.
fn check_startup_packets(ctx: &mut Ctx, be: &Backend) {
    let CheckSpec::TcpCheck(rules) = &be.check else { return };
    for rule in rules {
        let TcpCheckKind::Send(bytes) = &rule.kind else { continue };
        let Some(d) = startup::diagnose(bytes) else { continue };
        if d.problems.is_empty() {
            ctx.warn(
                rule.line,
                "under HAProxy, which ends checks with a reset, this StartupMessage check leaves a 'could not receive data from client' line in PostgreSQL's log at every check (pglb closes it cleanly); 'option pgsql-check user NAME' checks the same and is quiet under both",
            );
            continue;
        }
        let fix = match &d.corrected {
            Some(c) => format!("write: tcp-check send-binary {}", hex(c)),
            None => "build it as length(4 bytes, itself included) 00030000 user\\0NAME\\0 \\0, or use 'option pgsql-check user NAME'".to_string(),
        };
        ctx.error(rule.line, format!("tcp-check send-binary is a PostgreSQL StartupMessage, but {}; {fix}", d.problems.join("; ")));
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
