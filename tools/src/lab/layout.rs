//! Where a lab's files and ports go, and checks made before `up` touches
//! anything.

use std::path::Path;

use super::error::LabError;
use super::pg::Pg;
use super::state::NodeEntry;
use super::{MAX_SOCKET_PATH, Node};

/// The node `name` of the lab in `dir`.
pub(crate) fn node_at(dir: &Path, name: String, port: u16) -> Node {
    Node { data_dir: dir.join(&name), log_file: dir.join(format!("{name}.log")), name, port }
}

/// A node from the state file.
pub(crate) fn node_at_entry(dir: &Path, e: NodeEntry) -> Node {
    Node { log_file: dir.join(format!("{}.log", e.name)), name: e.name, port: e.port, data_dir: e.data_dir }
}

/// Refuses directories where the nodes' files already exist, whose socket
/// paths would be too long, or that the postgres account cannot reach.
pub(crate) fn check_dir(pg: &Pg, dir: &Path, names: &[String]) -> Result<(), LabError> {
    let bad = |reason: String| LabError::BadDir { dir: dir.to_path_buf(), reason };
    for name in names {
        for path in [dir.join(name), dir.join(format!("{name}.log"))] {
            if path.exists() {
                return Err(bad(format!("{} already exists; choose an empty directory", path.display())));
            }
        }
        let socket = dir.join(name).join(".s.PGSQL.65535");
        if socket.as_os_str().len() > MAX_SOCKET_PATH {
            return Err(bad(format!(
                "unix socket path {} is longer than {MAX_SOCKET_PATH} bytes; use a shorter directory such as /tmp/pglb-lab",
                socket.display()
            )));
        }
    }
    pg.check_reachable(dir)
}

/// `count` ports: consecutive from `base`, or free ones chosen by the
/// kernel. All listeners are held until every port is chosen so that the
/// ports differ.
pub(crate) fn pick_ports(base: Option<u16>, count: usize) -> Result<Vec<u16>, LabError> {
    if let Some(base) = base {
        return (0..count)
            .map(|i| {
                u16::try_from(i)
                    .ok()
                    .and_then(|i| base.checked_add(i))
                    .filter(|p| *p != 0)
                    .ok_or_else(|| LabError::BadOptions(format!("port base {base} leaves no room for {count} nodes")))
            })
            .collect();
    }
    let listeners = (0..count)
        .map(|_| std::net::TcpListener::bind("127.0.0.1:0"))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| LabError::io("picking free ports on 127.0.0.1", e))?;
    listeners.iter().map(|l| l.local_addr().map(|a| a.port()).map_err(|e| LabError::io("picking free ports on 127.0.0.1", e))).collect()
}

/// Removes a file or directory tree, ignoring one that does not exist.
pub(crate) fn remove_if_exists(path: &Path, tree: bool) -> Result<(), LabError> {
    let result = if tree { std::fs::remove_dir_all(path) } else { std::fs::remove_file(path) };
    match result {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(LabError::io(format!("removing {}", path.display()), e)),
        _ => Ok(()),
    }
}

/// Quotes a conninfo value when it is empty or holds spaces, quotes or
/// backslashes.
pub(crate) fn conninfo_value(value: &str) -> String {
    if !value.is_empty() && !value.contains(|c: char| c.is_whitespace() || c == '\'' || c == '\\') {
        return value.to_string();
    }
    format!("'{}'", value.replace('\\', "\\\\").replace('\'', "\\'"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conninfo_quoting() {
        assert_eq!(conninfo_value("postgres"), "postgres");
        assert_eq!(conninfo_value("a b"), "'a b'");
        assert_eq!(conninfo_value("it's"), "'it\\'s'");
        assert_eq!(conninfo_value(""), "''");
    }

    #[test]
    fn fixed_ports() {
        assert_eq!(pick_ports(Some(6000), 3).ok(), Some(vec![6000, 6001, 6002]));
        assert!(pick_ports(Some(65535), 2).is_err());
        let free = pick_ports(None, 3).unwrap_or_default();
        assert_eq!(free.len(), 3);
        assert!(free[0] != free[1] && free[1] != free[2] && free[0] != free[2]);
    }
}
