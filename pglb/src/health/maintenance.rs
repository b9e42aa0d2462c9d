//! The operator's state changes (runtime API `set server ... state`,
//! `disable/enable server`, the stats page's actions), with HAProxy's log
//! lines and severities: going DOWN for maintenance is an alert, leaving
//! it a notice.

use crate::state::{Admin, BackendState, Health, ServerState};
use crate::syslog::{Severity, send};

/// Sets a server's admin state; `false` when it already was.
pub fn set_admin(be: &BackendState, s: &ServerState, admin: Admin, by: &str) -> bool {
    let before = s.admin();
    if !s.set_admin(admin) {
        return false;
    }
    be.republish();
    let usable = be.usable.load();
    let (active, backup) = super::up_counts(be);
    let none_usable = usable.servers.is_empty();
    let sessions = crate::state::counters::Counters::get(&s.counters.cur);
    let queued = crate::state::counters::Counters::get(&be.counters.queue_cur);
    let (b, n) = (&be.cfg.name, &s.cfg.name);
    let (severity, line) = match (before, admin) {
        (_, Admin::Maint) if s.health() == Health::Up => (
            Severity::Alert,
            format!(
                "Server {b}/{n} is going DOWN for maintenance. {active} active and {backup} backup servers left. {sessions} sessions active, 0 requeued, {queued} remaining in queue."
            ),
        ),
        (_, Admin::Maint) => (Severity::Notice, format!("Server {b}/{n} was DOWN and now enters maintenance.")),
        (Admin::Maint, next) => {
            let word = if s.health() == Health::Up { "UP" } else { "DOWN" };
            let admin = if next == Admin::Drain { "DRAIN" } else { "READY" };
            (Severity::Notice, format!("Server {b}/{n} is {word}/{admin} (leaving forced maintenance)."))
        }
        (_, Admin::Drain) => (
            Severity::Notice,
            format!(
                "Server {b}/{n} enters drain state. {active} active and {backup} backup servers online. 0 sessions requeued, {queued} total in queue."
            ),
        ),
        (_, Admin::Ready) => {
            (Severity::Notice, format!("Server {b}/{n} is {} (leaving forced drain).", if s.health() == Health::Up { "UP" } else { "DOWN" }))
        }
    };
    tracing::warn!(target: "pglb::admin", backend = %b, server = %n, state = ?admin, by, "{line}");
    send(&be.cfg.logs, severity, &line);
    if none_usable && admin == Admin::Maint {
        send(&be.cfg.logs, Severity::Emerg, &format!("backend {b} has no server available!"));
    }
    true
}
