//! The runtime API on `stats socket PATH [mode M] [level L]`: HAProxy's line
//! protocol, so `echo "show stat" | socat stdio /var/run/haproxy.sock`
//! works as it does against HAProxy.
//!
//! One line per connection, commands separated by `;`, answers followed by
//! an empty line; `prompt` switches to interactive mode (a `> ` prompt,
//! the connection stays open until `quit` or `stats timeout` idle).

mod commands;

pub use commands::{Outcome, execute};

use crate::config::{ApiTcp, Level, StatsSocket};
use std::os::unix::fs::PermissionsExt;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::UnixListener;
use tokio_util::sync::CancellationToken;

/// Longest command line accepted: a runtime API line is short.
const MAX_LINE: usize = 64 * 1024;

/// Binds the socket file (replacing a stale one) with the configured mode,
/// or the TCP socket (bound, or adopted from `fd@N`).
pub fn bind(socket: &StatsSocket) -> std::io::Result<Listener> {
    let pending = bind_beside(socket)?;
    pending.put_in_place()
}

fn bind_tcp(tcp: ApiTcp) -> std::io::Result<Listener> {
    let std = match tcp {
        // SO_REUSEPORT too: a reload that changes the level binds the new
        // socket while the old one still listens.
        ApiTcp::Bind(addr) => {
            let s = socket2::Socket::new(socket2::Domain::for_address(addr), socket2::Type::STREAM, Some(socket2::Protocol::TCP))?;
            s.set_reuse_address(true)?;
            s.set_reuse_port(true)?;
            s.bind(&addr.into())?;
            s.listen(64)?;
            std::net::TcpListener::from(s)
        }
        // An inherited socket (`fd@N`): a duplicate of its own per generation.
        ApiTcp::Fd(fd) => std::net::TcpListener::from(crate::os::dup_inherited(fd)?),
    };
    std.set_nonblocking(true)?;
    Ok(Listener::Tcp(tokio::net::TcpListener::from_std(std)?))
}

/// A runtime API socket bound beside its path, not yet in place: a reload
/// binds every new socket first, and only when all are bound renames them
/// over their paths, so a refused reload leaves the running sockets as they
/// were (an old socket at the same path serves until the rename).
pub struct PendingSocket {
    /// Taken by `put_in_place`.
    listener: Option<Listener>,
    /// Where it is bound now (`None`: already at its path).
    temporary: Option<std::path::PathBuf>,
    path: std::path::PathBuf,
}

impl PendingSocket {
    /// Renames it over its path (atomic: a client finds the old or the new
    /// socket, never none).
    pub fn put_in_place(mut self) -> std::io::Result<Listener> {
        if let Some(tmp) = self.temporary.take()
            && let Err(e) = std::fs::rename(&tmp, &self.path)
        {
            let _ = std::fs::remove_file(&tmp);
            return Err(e);
        }
        self.listener.take().ok_or_else(|| std::io::Error::other("socket already put in place"))
    }
}

impl Drop for PendingSocket {
    fn drop(&mut self) {
        if let Some(tmp) = &self.temporary {
            let _ = std::fs::remove_file(tmp);
        }
    }
}

/// Binds `socket` at a temporary name in its directory, with its mode.
/// A path too long for a temporary name beside it is bound in place (the
/// file there is replaced at once).
pub fn bind_beside(socket: &StatsSocket) -> std::io::Result<PendingSocket> {
    if let Some(tcp) = socket.tcp {
        return Ok(PendingSocket { listener: Some(bind_tcp(tcp)?), temporary: None, path: socket.path.clone() });
    }
    let name = socket.path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let tmp = socket.path.with_file_name(format!(".{name}.{}.new", std::process::id()));
    let _ = std::fs::remove_file(&tmp);
    let (listener, temporary, at) = match UnixListener::bind(&tmp) {
        Ok(l) => (l, Some(tmp.clone()), tmp),
        Err(e) if e.kind() == std::io::ErrorKind::InvalidInput => {
            match std::fs::remove_file(&socket.path) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(e),
            }
            (UnixListener::bind(&socket.path)?, None, socket.path.clone())
        }
        Err(e) => return Err(e),
    };
    let pending = PendingSocket { listener: Some(Listener::Unix(listener)), temporary, path: socket.path.clone() };
    // HAProxy's default is whatever the umask gives; pglb defaults to 0600
    // so an unconfigured socket is never world-writable.
    let mode = socket.mode.unwrap_or(0o600);
    std::fs::set_permissions(&at, std::fs::Permissions::from_mode(mode))?;
    Ok(pending)
}

/// What the runtime API needs of the instance that runs it.
pub trait Host: Send + Sync + 'static {
    /// The configuration generation commands act on.
    fn runtime(&self) -> Arc<crate::state::Runtime>;
    /// What a reload that took effect reports.
    type Reloaded: std::fmt::Display + Send;
    /// Why a reload was refused (the running configuration stays).
    type ReloadError: std::fmt::Display + Send;
    /// Re-reads the configuration file (`reload`).
    fn reload(self: &Arc<Self>) -> impl std::future::Future<Output = Result<Self::Reloaded, Self::ReloadError>> + Send;
    /// Applies the running configuration changed by `edit` as the next
    /// generation (`add server`, `del server`).
    fn apply(
        self: &Arc<Self>,
        edit: Box<dyn FnOnce(&mut crate::config::Config) + Send>,
    ) -> impl std::future::Future<Output = Result<Self::Reloaded, Self::ReloadError>> + Send;
}

/// Where the runtime API listens: a UNIX socket path, or a TCP socket
/// (`stats socket ipv4@IP:PORT`, or one inherited as `fd@N`, as VTest and
/// systemd hand them over).
pub enum Listener {
    Unix(UnixListener),
    Tcp(tokio::net::TcpListener),
}

pub async fn serve<H: Host>(control: Arc<H>, listener: Listener, level: Level, stop: CancellationToken) {
    loop {
        let accepted = tokio::select! {
            r = async {
                match &listener {
                    Listener::Unix(l) => l.accept().await.map(|(s, _)| Box::new(s) as Box<dyn Stream>),
                    Listener::Tcp(l) => l.accept().await.map(|(s, _)| Box::new(s) as Box<dyn Stream>),
                }
            } => r,
            _ = stop.cancelled() => return,
        };
        match accepted {
            Ok(stream) => {
                let control = control.clone();
                tokio::spawn(async move { session(control, stream, level).await });
            }
            Err(e) => {
                tracing::debug!(error = %e, "runtime API accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

/// A runtime API connection, whatever the socket.
trait Stream: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send {}
impl<T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send> Stream for T {}

async fn session<H: Host>(control: Arc<H>, stream: Box<dyn Stream>, level: Level) {
    let idle = control.runtime().config.global.stats_timeout;
    let (read, mut write) = tokio::io::split(stream);
    let mut lines = BufReader::new(read);
    let mut interactive = false;
    let mut line = Vec::new();
    loop {
        line.clear();
        let n = match tokio::time::timeout(idle, read_line(&mut lines, &mut line)).await {
            Ok(Ok(n)) => n,
            _ => return,
        };
        if n == 0 {
            return;
        }
        let text = String::from_utf8_lossy(&line);
        let mut out = String::new();
        let mut quit = !interactive;
        let mut asked_quit = false;
        for cmd in text.split(';').map(str::trim).filter(|c| !c.is_empty()) {
            if cmd == "reload" {
                if level < Level::Admin {
                    out.push_str("Permission denied\n");
                    continue;
                }
                match control.reload().await {
                    Ok(summary) => out.push_str(&format!("Success=1\n{summary}\n")),
                    Err(e) => out.push_str(&format!("Success=0\n{e}\n")),
                }
                continue;
            }
            if let Some(answer) = dynamic_servers(&control, level, cmd).await {
                out.push_str(&answer);
                continue;
            }
            match execute(&control.runtime(), level, cmd) {
                Outcome::Text(t) => out.push_str(&t),
                Outcome::Prompt => {
                    interactive = !interactive;
                    quit = !interactive;
                }
                Outcome::Quit => {
                    quit = true;
                    asked_quit = true;
                    break;
                }
            }
        }
        // Every answer ends with an empty line, an empty answer too (HAProxy
        // sends "\n"); `quit` alone gets nothing.
        let silent_quit = asked_quit && out.is_empty();
        if !(out.ends_with("\n\n") || silent_quit) {
            out.push('\n');
        }
        if interactive && !quit {
            out.push_str("> ");
        }
        if write.write_all(out.as_bytes()).await.is_err() || quit {
            let _ = write.shutdown().await;
            return;
        }
    }
}

/// `add server B/S ADDR [OPTIONS]` and `del server B/S` (HAProxy's dynamic
/// servers, with its answers): a new configuration generation with the
/// server added or removed, as a reload makes one; the others keep their
/// state and sessions. A new server starts in maintenance (`enable server`
/// puts it in service). Like HAProxy's, dynamic servers last until the
/// next reload of the file. `None` for other commands.
async fn dynamic_servers<H: Host>(control: &Arc<H>, level: Level, cmd: &str) -> Option<String> {
    let words: Vec<&str> = cmd.split_whitespace().collect();
    let (add, target, rest) = match words.as_slice() {
        ["add", "server", target, rest @ ..] => (true, *target, rest),
        ["del", "server", target] => (false, *target, &[][..]),
        ["add" | "del", "server", ..] => return Some("'server' expects <name> and <addr>[:<port>] as arguments.\n".into()),
        _ => return None,
    };
    if level < Level::Admin {
        return Some("Permission denied\n".into());
    }
    let Some((b, s)) = target.split_once('/') else { return Some("Require 'backend/server'.\n".into()) };
    let rt = control.runtime();
    let Some(be) = rt.backend(b) else { return Some("No such backend.\n".into()) };
    let (b, s) = (b.to_string(), s.to_string());
    if add {
        let Some((address, options)) = rest.split_first() else { return Some("'server' expects <name> and <addr>[:<port>] as arguments.\n".into()) };
        if matches!(be.cfg.balance, crate::config::Balance::StaticRr | crate::config::Balance::Source) {
            return Some("Backend must use a dynamic load balancing to support dynamic servers.\n".into());
        }
        if be.server(&s).is_some() {
            return Some("Already exists a server with the same name in backend.\n".into());
        }
        let options: Vec<String> = options.iter().map(|o| o.to_string()).collect();
        let mut server = match crate::config::dynamic_server(&be.cfg, &s, address, &options) {
            Ok(server) => server,
            Err(e) => return Some(format!("{e}\n")),
        };
        server.disabled = true;
        let edit = Box::new(move |c: &mut crate::config::Config| {
            if let Some(be) = c.backends.iter_mut().find(|x| *x.name == *b) {
                be.servers.push(server);
            }
        });
        Some(match control.apply(edit).await {
            Ok(_) => "New server registered.\n".into(),
            Err(e) => format!("{e}\n"),
        })
    } else {
        let Some(srv) = be.server(&s) else { return Some("No such server.\n".into()) };
        if srv.admin() != crate::state::Admin::Maint {
            return Some("Only servers in maintenance mode can be deleted.\n".into());
        }
        if crate::state::counters::Counters::get(&srv.counters.cur) > 0 {
            return Some("Server still has connections attached to it, cannot remove it.\n".into());
        }
        let edit = Box::new(move |c: &mut crate::config::Config| {
            if let Some(be) = c.backends.iter_mut().find(|x| *x.name == *b) {
                be.servers.retain(|x| *x.name != *s);
            }
        });
        Some(match control.apply(edit).await {
            Ok(_) => "Server deleted.\n".into(),
            Err(e) => format!("{e}\n"),
        })
    }
}

/// Reads one line, refusing lines longer than `MAX_LINE`.
async fn read_line<R: tokio::io::AsyncRead + Unpin>(r: &mut BufReader<R>, buf: &mut Vec<u8>) -> std::io::Result<usize> {
    let n = (&mut *r).take(MAX_LINE as u64).read_until(b'\n', buf).await?;
    if n == MAX_LINE && !buf.ends_with(b"\n") {
        return Err(std::io::Error::new(std::io::ErrorKind::InvalidData, "line too long"));
    }
    Ok(n)
}

use tokio::io::AsyncReadExt as _;
