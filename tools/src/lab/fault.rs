//! Faults that tests and `pglb lab fault` inject into a node.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use super::error::LabError;

/// A fault (or repair) applied to one node.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Fault {
    /// SIGKILL the postmaster: a crash, no shutdown checkpoint.
    Kill,
    /// `pg_ctl stop -m fast`: a clean shutdown.
    Stop,
    /// `pg_ctl start -w`: bring a stopped or killed node back.
    Start,
    /// SIGSTOP the postmaster: new connections hang (existing ones still
    /// work), like a node that is up but unresponsive.
    Freeze,
    /// SIGCONT the postmaster: undo `Freeze`.
    Thaw,
    /// `pg_wal_replay_pause()` on a replica: it keeps receiving WAL but
    /// stops applying it, so its lag grows.
    PauseReplay,
    /// `pg_wal_replay_resume()` on a replica.
    ResumeReplay,
    /// `pg_ctl promote -w`: the replica becomes a primary.
    Promote,
    /// Start a stopped node as a streaming replica of the current primary:
    /// the old primary's way back after a planned switchover (a clean stop,
    /// then `promote` of a replica). After a crash its WAL may have diverged
    /// and it needs `pg_rewind` first, which the lab does not do.
    Rejoin,
}

impl Fault {
    /// Every fault, in the order of the CLI's help.
    pub const ALL: [Fault; 9] =
        [Fault::Kill, Fault::Stop, Fault::Start, Fault::Freeze, Fault::Thaw, Fault::PauseReplay, Fault::ResumeReplay, Fault::Promote, Fault::Rejoin];

    /// The CLI name of the fault.
    pub fn name(self) -> &'static str {
        match self {
            Fault::Kill => "kill",
            Fault::Stop => "stop",
            Fault::Start => "start",
            Fault::Freeze => "freeze",
            Fault::Thaw => "thaw",
            Fault::PauseReplay => "pause-replay",
            Fault::ResumeReplay => "resume-replay",
            Fault::Promote => "promote",
            Fault::Rejoin => "rejoin",
        }
    }
}

impl fmt::Display for Fault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Fault {
    type Err = LabError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Fault::ALL.into_iter().find(|f| f.name() == s).ok_or_else(|| LabError::UnknownFault(s.to_string()))
    }
}

impl super::Lab {
    /// Runs a replay-control function on a replica.
    pub(crate) async fn replay_control(&self, node: &super::Node, function: &str) -> Result<(), LabError> {
        let what = format!("SELECT {function}()");
        let client = super::status::connect(&self.creds(), node.port, "postgres", Duration::from_secs(5)).await.map_err(|e| LabError::Sql {
            node: node.name.clone(),
            what: format!("connecting for {what}"),
            detail: e.to_string(),
        })?;
        client.simple_query(&what).await.map_err(|e| LabError::sql(&node.name, what, &e))?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for f in Fault::ALL {
            assert_eq!(f.name().parse::<Fault>().ok(), Some(f));
        }
        assert!("explode".parse::<Fault>().is_err());
    }
}
