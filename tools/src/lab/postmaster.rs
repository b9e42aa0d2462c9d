//! Looking at a node's postmaster from the outside, synchronously (the
//! at-exit cleanup runs after the tokio runtime is gone).
//!
//! `pg_ctl` cannot be trusted to tell whether a node runs after a SIGKILL:
//! on machines whose PID 1 does not reap orphans (this one's does not) the
//! killed postmaster stays a zombie, `kill(pid, 0)` still succeeds, and both
//! `pg_ctl stop` (waits forever) and the new postmaster ("lock file already
//! exists") are fooled. So liveness is read from `/proc` and the shared
//! memory segment recorded in `postmaster.pid`.

use std::path::Path;
use std::time::{Duration, Instant};

/// What `postmaster.pid` tells us.
#[derive(Debug, Clone, Copy)]
pub(crate) struct PidFile {
    pub pid: i32,
    /// System V shared memory id (line 7, second number), whose attach count
    /// says whether any process of the old server is still alive.
    pub shm_id: Option<i32>,
}

/// Reads `DATADIR/postmaster.pid`; `None` when absent or unreadable.
pub(crate) fn read_pid_file(data_dir: &Path) -> Option<PidFile> {
    let text = std::fs::read_to_string(data_dir.join("postmaster.pid")).ok()?;
    let mut lines = text.lines();
    let pid = lines.next()?.trim().parse::<i32>().ok().filter(|p| *p > 0)?;
    let shm_id = lines.nth(5).and_then(|line| line.split_whitespace().nth(1)).and_then(|id| id.parse::<i32>().ok());
    Some(PidFile { pid, shm_id })
}

/// True when `pid` is a live (possibly stopped) process named `postgres`.
/// Zombies and dead processes are not alive.
pub(crate) fn is_alive(pid: i32) -> bool {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return false;
    };
    // Format: "pid (comm) state ...", comm may itself hold parentheses.
    let (Some(open), Some(close)) = (stat.find('('), stat.rfind(')')) else {
        return false;
    };
    let comm = &stat[open + 1..close];
    let state = stat[close + 1..].trim_start().chars().next();
    comm == "postgres" && !matches!(state, Some('Z') | Some('X') | None)
}

/// The pid of the node's postmaster when it is running (or frozen).
pub(crate) fn running_pid(data_dir: &Path) -> Option<i32> {
    read_pid_file(data_dir).map(|f| f.pid).filter(|pid| is_alive(*pid))
}

/// Number of processes attached to a System V shared memory segment;
/// `None` when the segment no longer exists.
fn shm_attach_count(shm_id: i32) -> Option<libc::shmatt_t> {
    // SAFETY: shmid_ds is plain data; all-zero is a valid value.
    let mut ds: libc::shmid_ds = unsafe { std::mem::zeroed() };
    // SAFETY: IPC_STAT only writes into `ds`, which outlives the call.
    let rc = unsafe { libc::shmctl(shm_id, libc::IPC_STAT, &mut ds) };
    (rc == 0).then_some(ds.shm_nattch)
}

/// True when nothing of the node's server is left: the postmaster is dead
/// (or a zombie) and no child still holds its shared memory.
pub(crate) fn is_gone(data_dir: &Path) -> bool {
    match read_pid_file(data_dir) {
        None => true,
        Some(f) => !is_alive(f.pid) && f.shm_id.and_then(shm_attach_count).unwrap_or(0) == 0,
    }
}

/// Removes a `postmaster.pid`, socket lock files and the unused shared
/// memory segment left behind by a killed server, so that the next start is not refused.
/// Does nothing while the server or one of its children is alive.
pub(crate) fn remove_stale(data_dir: &Path) -> std::io::Result<()> {
    let Some(f) = read_pid_file(data_dir) else {
        return Ok(());
    };
    if !is_gone(data_dir) {
        return Ok(());
    }
    if let Some(id) = f.shm_id
        && shm_attach_count(id) == Some(0)
    {
        // SAFETY: IPC_RMID takes no buffer; a failure is harmless here.
        unsafe { libc::shmctl(id, libc::IPC_RMID, std::ptr::null_mut()) };
    }
    // The unix socket's lock file names the dead pid too (the socket
    // directory is the data directory in a lab).
    if let Ok(entries) = std::fs::read_dir(data_dir) {
        for entry in entries.flatten() {
            if entry.file_name().to_string_lossy().starts_with(".s.PGSQL.") {
                std::fs::remove_file(entry.path())?;
            }
        }
    }
    match std::fs::remove_file(data_dir.join("postmaster.pid")) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

/// Sends a signal to a process.
pub(crate) fn signal(pid: i32, sig: libc::c_int) -> std::io::Result<()> {
    // SAFETY: kill has no memory-safety preconditions.
    if unsafe { libc::kill(pid, sig) } == 0 { Ok(()) } else { Err(std::io::Error::last_os_error()) }
}

/// Stops a node at once without the tokio runtime: SIGCONT (it may be
/// frozen), SIGQUIT (immediate shutdown), then SIGKILL if it lingers.
/// Used by the at-exit cleanup and when `up` fails half-way.
pub(crate) fn stop_now_blocking(data_dir: &Path) {
    let Some(pid) = running_pid(data_dir) else {
        return;
    };
    let _ = signal(pid, libc::SIGCONT);
    let _ = signal(pid, libc::SIGQUIT);
    if !wait_blocking(|| !is_alive(pid), Duration::from_secs(5)) {
        let _ = signal(pid, libc::SIGKILL);
        wait_blocking(|| !is_alive(pid), Duration::from_secs(5));
    }
    // Children notice the postmaster's death on their own; give them a moment
    // so that the directory can be removed cleanly.
    wait_blocking(|| is_gone(data_dir), Duration::from_secs(5));
}

/// Polls `done` every 20 ms until it holds or `limit` passes.
fn wait_blocking(mut done: impl FnMut() -> bool, limit: Duration) -> bool {
    let deadline = Instant::now() + limit;
    loop {
        if done() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}
