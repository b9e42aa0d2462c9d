//! Finding the PostgreSQL binaries and running them as the right account.
//!
//! PostgreSQL refuses to run as root, so when we are root every PostgreSQL
//! program (and openssl, so that the key it writes has the right owner) runs
//! as the `postgres` account, and the files it must write are chowned to it.

use std::ffi::CString;
use std::path::{Path, PathBuf};
use std::process::Stdio;

use tokio::process::Command;

use super::error::LabError;

/// The uid/gid that PostgreSQL runs as when we are root.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Account {
    pub uid: u32,
    pub gid: u32,
}

/// Where the binaries are and who runs them.
#[derive(Debug, Clone)]
pub(crate) struct Pg {
    bindir: PathBuf,
    /// `Some` when we are root and must switch to the `postgres` account.
    account: Option<Account>,
}

impl Pg {
    /// Finds the binaries and, when root, the `postgres` account.
    pub(crate) async fn discover() -> Result<Pg, LabError> {
        let bindir = find_bindir().await.ok_or(LabError::PostgresNotFound)?;
        // SAFETY: geteuid has no preconditions and cannot fail.
        let account = if unsafe { libc::geteuid() } == 0 { Some(lookup_account("postgres").ok_or(LabError::NoPostgresAccount)?) } else { None };
        tracing::debug!(bindir = %bindir.display(), ?account, "found PostgreSQL");
        Ok(Pg { bindir, account })
    }

    /// A command for a PostgreSQL program from the bin directory.
    pub(crate) fn pg_command(&self, program: &str) -> Command {
        self.command(self.bindir.join(program))
    }

    /// A command for any program (looked up in `PATH`), run as the
    /// PostgreSQL account, with a clean `PG*` environment so that a user's
    /// `PGHOST`/`PGPORT`... cannot redirect our commands to another server.
    pub(crate) fn command(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut cmd = Command::new(program);
        for (key, _) in std::env::vars_os() {
            if key.to_string_lossy().starts_with("PG") {
                cmd.env_remove(key);
            }
        }
        // Stable, untranslated messages for error reports; "/" is always
        // readable, unlike root's cwd for the postgres account.
        cmd.env("LC_ALL", "C").current_dir("/");
        if let Some(account) = self.account {
            cmd.uid(account.uid).gid(account.gid);
        }
        cmd.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped()).kill_on_drop(false);
        cmd
    }

    /// Runs a command to completion; on failure the error holds its output.
    pub(crate) async fn run(&self, mut cmd: Command, what: &str) -> Result<String, LabError> {
        // Not `?cmd`: its Debug output would include PGPASSWORD.
        let std_cmd = cmd.as_std();
        tracing::debug!(program = ?std_cmd.get_program(), args = ?std_cmd.get_args().collect::<Vec<_>>(), "running");
        let out =
            cmd.output().await.map_err(|e| LabError::Command { what: what.to_string(), detail: format!("could not start the program: {e}") })?;
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        if out.status.success() {
            return Ok(stdout);
        }
        let stderr = String::from_utf8_lossy(&out.stderr);
        Err(LabError::Command {
            what: what.to_string(),
            detail: format!("{}\n{}{}", out.status, stdout.trim_end(), stderr.trim_end()).trim_end().to_string(),
        })
    }

    /// Gives a file or directory to the PostgreSQL account (no-op when not root).
    pub(crate) fn chown(&self, path: &Path) -> Result<(), LabError> {
        if let Some(account) = self.account {
            std::os::unix::fs::chown(path, Some(account.uid), Some(account.gid)).map_err(|e| LabError::io(format!("chown {}", path.display()), e))?;
        }
        Ok(())
    }

    /// Checks that the PostgreSQL account can reach `dir`: every ancestor
    /// must be searchable by it (a tempdir under /root is not).
    pub(crate) fn check_reachable(&self, dir: &Path) -> Result<(), LabError> {
        use std::os::unix::fs::MetadataExt;
        let Some(account) = self.account else {
            return Ok(());
        };
        for ancestor in dir.ancestors().skip(1) {
            let Ok(meta) = std::fs::metadata(ancestor) else {
                continue;
            };
            let mode = meta.mode();
            let ok = mode & 0o001 != 0 || (meta.uid() == account.uid && mode & 0o100 != 0) || (meta.gid() == account.gid && mode & 0o010 != 0);
            if !ok {
                return Err(LabError::BadDir {
                    dir: dir.to_path_buf(),
                    reason: format!("the postgres account cannot enter {}; use a directory under /tmp", ancestor.display()),
                });
            }
        }
        Ok(())
    }
}

/// `pg_config --bindir` when it holds `initdb` (on Debian /usr/bin/pg_config
/// may come from libpq-dev without the server), else the highest
/// `/usr/lib/postgresql/N/bin` with `initdb`.
async fn find_bindir() -> Option<PathBuf> {
    let from_pg_config = Command::new("pg_config")
        .arg("--bindir")
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .output()
        .await
        .ok()
        .filter(|out| out.status.success())
        .map(|out| PathBuf::from(String::from_utf8_lossy(&out.stdout).trim()));
    if let Some(dir) = from_pg_config.filter(|d| d.join("initdb").is_file()) {
        return Some(dir);
    }
    let mut best: Option<(Vec<u32>, PathBuf)> = None;
    for entry in std::fs::read_dir("/usr/lib/postgresql").ok()?.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(version) = name.split('.').map(|part| part.parse::<u32>().ok()).collect::<Option<Vec<u32>>>() else {
            continue;
        };
        let bin = entry.path().join("bin");
        if bin.join("initdb").is_file() && best.as_ref().is_none_or(|(v, _)| version > *v) {
            best = Some((version, bin));
        }
    }
    best.map(|(_, bin)| bin)
}

/// Looks up a user's uid and primary gid with the re-entrant `getpwnam_r`.
fn lookup_account(name: &str) -> Option<Account> {
    let cname = CString::new(name).ok()?;
    let mut buf = vec![0 as libc::c_char; 16 * 1024];
    // SAFETY: an all-zero passwd (null pointers, zero ids) is a valid value;
    // getpwnam_r only writes into it.
    let mut pwd: libc::passwd = unsafe { std::mem::zeroed() };
    let mut result: *mut libc::passwd = std::ptr::null_mut();
    // SAFETY: every pointer is valid for the duration of the call and `buf`'s
    // length is passed along with it.
    let rc = unsafe { libc::getpwnam_r(cname.as_ptr(), &mut pwd, buf.as_mut_ptr(), buf.len(), &mut result) };
    if rc != 0 || result.is_null() {
        return None;
    }
    Some(Account { uid: pwd.pw_uid, gid: pwd.pw_gid })
}
