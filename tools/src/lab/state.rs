//! The lab's state file, `DIR/lab.state`: what `up` created, so that a later
//! process (`pglb lab status/fault/down`) can find the nodes again.
//!
//! A plain `key=value` file rather than JSON keeps the lab free of a
//! serialization dependency and readable with `cat`:
//!
//! ```text
//! version=1
//! superuser=postgres
//! password=postgres
//! ssl=false
//! node=primary 40001 /tmp/lab/primary
//! node=replica1 40002 /tmp/lab/replica1
//! ```

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use super::error::LabError;

/// Name of the state file inside the lab directory.
pub(crate) const STATE_FILE: &str = "lab.state";

/// One node as recorded in the state file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct NodeEntry {
    pub name: String,
    pub port: u16,
    pub data_dir: PathBuf,
}

/// The whole state file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct State {
    pub superuser: String,
    pub password: String,
    pub ssl: bool,
    /// Primary first, then the replicas in order.
    pub nodes: Vec<NodeEntry>,
}

/// What is wrong with a state file.
#[derive(Debug, PartialEq, thiserror::Error)]
enum Damage {
    #[error("line {0} has no `=`")]
    NoEquals(usize),
    #[error("unsupported version {0}")]
    Version(String),
    #[error("bad node line {0}")]
    BadNode(usize),
    #[error("no {0}")]
    Missing(&'static str),
}

impl State {
    /// Serializes the state.
    fn render(&self) -> String {
        let mut out = String::from("# pglb lab state, written by `pglb lab up`\nversion=1\n");
        out += &format!("superuser={}\npassword={}\nssl={}\n", self.superuser, self.password, self.ssl);
        for n in &self.nodes {
            out += &format!("node={} {} {}\n", n.name, n.port, n.data_dir.display());
        }
        out
    }

    /// Parses the state file.
    fn parse(text: &str) -> Result<State, Damage> {
        let (mut superuser, mut password, mut ssl) = (None, None, false);
        let mut nodes = Vec::new();
        for (no, line) in text.lines().enumerate() {
            let line = line.trim_end();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let (key, value) = line.split_once('=').ok_or(Damage::NoEquals(no + 1))?;
            match key {
                "version" if value == "1" => {}
                "version" => return Err(Damage::Version(value.to_string())),
                "superuser" => superuser = Some(value.to_string()),
                "password" => password = Some(value.to_string()),
                "ssl" => ssl = value == "true",
                "node" => nodes.push(parse_node(value).ok_or(Damage::BadNode(no + 1))?),
                _ => {} // Unknown keys from newer versions are ignored.
            }
        }
        if nodes.is_empty() {
            return Err(Damage::Missing("nodes"));
        }
        Ok(State { superuser: superuser.ok_or(Damage::Missing("superuser"))?, password: password.ok_or(Damage::Missing("password"))?, ssl, nodes })
    }

    /// Writes the state file (mode 0600: it holds the superuser password).
    pub(crate) fn write(&self, dir: &Path) -> Result<(), LabError> {
        let path = dir.join(STATE_FILE);
        let tmp = dir.join(format!("{STATE_FILE}.tmp"));
        let what = || format!("writing lab state {}", path.display());
        let mut file =
            std::fs::OpenOptions::new().write(true).create(true).truncate(true).mode(0o600).open(&tmp).map_err(|e| LabError::io(what(), e))?;
        file.write_all(self.render().as_bytes()).map_err(|e| LabError::io(what(), e))?;
        drop(file);
        // Rename so that a reader never sees a half-written file.
        std::fs::rename(&tmp, &path).map_err(|e| LabError::io(what(), e))
    }

    /// Reads `DIR/lab.state`; `Ok(None)` when there is none.
    pub(crate) fn read(dir: &Path) -> Result<Option<State>, LabError> {
        let path = dir.join(STATE_FILE);
        let text = match std::fs::read_to_string(&path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(LabError::io(format!("reading {}", path.display()), e)),
        };
        State::parse(&text).map(Some).map_err(|damage| LabError::BadState { path, reason: damage.to_string() })
    }
}

/// `NAME PORT DATADIR` (the data dir may contain spaces).
fn parse_node(value: &str) -> Option<NodeEntry> {
    let mut parts = value.splitn(3, ' ');
    let name = parts.next()?.to_string();
    let port = parts.next()?.parse().ok()?;
    let data_dir = PathBuf::from(parts.next()?);
    Some(NodeEntry { name, port, data_dir })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        let state = State {
            superuser: "postgres".into(),
            password: "pw".into(),
            ssl: true,
            nodes: vec![
                NodeEntry { name: "primary".into(), port: 5432, data_dir: "/tmp/a b/primary".into() },
                NodeEntry { name: "replica1".into(), port: 5433, data_dir: "/tmp/a b/replica1".into() },
            ],
        };
        assert_eq!(State::parse(&state.render()), Ok(state));
    }

    #[test]
    fn rejects_garbage() {
        assert!(State::parse("hello").is_err());
        assert!(State::parse("version=2\n").is_err());
        assert!(State::parse("superuser=a\npassword=b\n").is_err());
    }
}
