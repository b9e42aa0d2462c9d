//! Stopping labs when the process exits.
//!
//! Integration tests keep a lab in a `static`, which is never dropped, and an
//! aborted test never reaches `down`; without this the PostgreSQL servers
//! (which `pg_ctl` detaches from us) would outlive the test run.

use std::path::{Path, PathBuf};
use std::sync::{Mutex, Once};

use super::postmaster;

/// Labs to tear down at exit.
static DIRS: Mutex<Vec<PathBuf>> = Mutex::new(Vec::new());
/// Guards the single `atexit` registration.
static REGISTER: Once = Once::new();

/// At process exit (normal return from `main`, `std::process::exit`, the end
/// of a test binary), stops the nodes of the lab in `dir` immediately and
/// removes `dir`. Nothing happens for a lab already taken `down`. A process
/// killed by a signal runs no exit handlers: use `pglb lab down` then.
pub fn cleanup_at_exit(dir: PathBuf) {
    let dir = dir.canonicalize().unwrap_or(dir);
    REGISTER.call_once(|| {
        // SAFETY: `run_at_exit` is a plain extern "C" fn that never unwinds.
        let rc = unsafe { libc::atexit(run_at_exit) };
        if rc != 0 {
            tracing::warn!("atexit registration failed; labs will not be cleaned up at exit");
        }
    });
    let mut dirs = DIRS.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    if !dirs.contains(&dir) {
        dirs.push(dir);
    }
}

/// The `atexit` handler; must not unwind into C.
extern "C" fn run_at_exit() {
    let _ = std::panic::catch_unwind(|| {
        let dirs = std::mem::take(&mut *DIRS.lock().unwrap_or_else(|p| p.into_inner()));
        for dir in dirs {
            teardown_blocking(&dir);
        }
    });
}

/// Stops every node found under `dir` at once and removes `dir`. Nodes are
/// found by their `postmaster.pid`, so this works even if the state file
/// was never written or is damaged.
pub(crate) fn teardown_blocking(dir: &Path) {
    if let Ok(entries) = std::fs::read_dir(dir) {
        for entry in entries.flatten() {
            let path = entry.path();
            if path.join("postmaster.pid").is_file() {
                postmaster::stop_now_blocking(&path);
            }
        }
    }
    let _ = std::fs::remove_dir_all(dir);
}
