//! `pglb ctl [-S SOCKET] COMMAND...`: the runtime API without socat. On a
//! terminal, `show stat` and `show servers state` are printed as aligned
//! tables; piped, the output is exactly what the socket sent.

use clap::Args;
use std::io::{IsTerminal, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

#[derive(Debug, Args)]
pub struct CtlArgs {
    /// Runtime API socket. Default: $PGLB_SOCKET, else the first `stats
    /// socket` of the configuration given with -f, else /var/run/pglb.sock.
    #[arg(short = 'S', long = "socket", env = "PGLB_SOCKET")]
    pub socket: Option<PathBuf>,
    /// Print the raw answer even on a terminal.
    #[arg(long)]
    pub raw: bool,
    /// The command, as for socat (e.g. `show stat`, `disable server pg/replica1`,
    /// `show stat rw 4 -1`). Options may also follow it.
    #[arg(required = true, allow_negative_numbers = true)]
    pub command: Vec<String>,
}

pub fn run(args: CtlArgs, config: Option<PathBuf>) -> ExitCode {
    let socket = args
        .socket
        .or_else(|| config.and_then(|f| crate::config::load(&f).ok()).and_then(|l| l.config.global.stats_sockets.first().map(|s| s.path.clone())))
        .unwrap_or_else(|| PathBuf::from("/var/run/pglb.sock"));
    let command = args.command.join(" ");
    let answer = match ask(&socket, &command) {
        Ok(a) => a,
        Err(e) => {
            eprintln!("pglb ctl: {}: {e}", socket.display());
            return ExitCode::from(1);
        }
    };
    let table = !args.raw && std::io::stdout().is_terminal();
    let out = if table && command.starts_with("show stat") && !command.contains("json") && !command.contains("typed") {
        stat_table(&answer)
    } else if table && command.starts_with("show servers state") {
        align(answer.lines().skip(1).map(|l| l.trim_start_matches("# ").split(' ').map(str::to_string).collect()).collect())
    } else {
        answer.clone()
    };
    let _ = std::io::stdout().write_all(out.as_bytes());
    let failed = [
        "Unknown command",
        "Permission denied",
        "No such",
        "Require ",
        "Invalid",
        "Can't find",
        "Weight is out of range",
        "'set server",
        "usage:",
        "Health checks are not configured",
        "Success=0",
    ]
    .iter()
    .any(|p| answer.starts_with(p));
    if failed { ExitCode::from(1) } else { ExitCode::SUCCESS }
}

/// The runtime API's answer to a command line, as text.
pub type Answer = String;

/// Sends one command line and reads the answer until the server closes.
pub fn ask(socket: &std::path::Path, command: &str) -> std::io::Result<Answer> {
    let mut s = UnixStream::connect(socket)?;
    s.set_read_timeout(Some(Duration::from_secs(30)))?;
    s.write_all(command.as_bytes())?;
    s.write_all(b"\n")?;
    let mut answer = String::new();
    s.read_to_string(&mut answer)?;
    Ok(answer)
}

/// The columns an operator reads first, from HAProxy's CSV.
const STAT_COLUMNS: &[&str] =
    &["pxname", "svname", "status", "scur", "smax", "stot", "bin", "bout", "econ", "wretr", "wredis", "check_status", "last_chk", "addr"];

fn stat_table(csv: &str) -> String {
    let mut lines = csv.lines();
    let Some(header) = lines.next() else { return String::new() };
    let names: Vec<&str> = header.trim_start_matches("# ").split(',').collect();
    let idx: Vec<usize> = STAT_COLUMNS.iter().filter_map(|c| names.iter().position(|n| n == c)).collect();
    let mut rows = vec![STAT_COLUMNS.iter().map(|c| c.to_string()).collect::<Vec<_>>()];
    for l in lines.filter(|l| !l.is_empty()) {
        let f: Vec<&str> = l.split(',').collect();
        rows.push(idx.iter().map(|&i| f.get(i).copied().unwrap_or("").to_string()).collect());
    }
    align(rows)
}

fn align(rows: Vec<Vec<String>>) -> String {
    let cols = rows.iter().map(Vec::len).max().unwrap_or(0);
    let widths: Vec<usize> = (0..cols).map(|c| rows.iter().filter_map(|r| r.get(c)).map(|s| s.chars().count()).max().unwrap_or(0)).collect();
    let mut out = String::new();
    for r in rows.iter().filter(|r| r.iter().any(|c| !c.is_empty())) {
        let line: Vec<String> = r.iter().enumerate().map(|(i, c)| format!("{c:<w$}", w = widths[i])).collect();
        out.push_str(line.join("  ").trim_end());
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::CtlArgs;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        ctl: CtlArgs,
    }

    #[test]
    fn options_may_follow_the_command_and_negative_numbers_are_words() {
        let cli = Cli::try_parse_from(["ctl", "-S", "/s", "show", "stat", "rw", "4", "-1", "--raw"]).unwrap();
        assert_eq!(cli.ctl.command, ["show", "stat", "rw", "4", "-1"]);
        assert!(cli.ctl.raw);
    }
}
