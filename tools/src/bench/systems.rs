//! The systems compared: direct connections, pglb, HAProxy and PgBouncer,
//! each in front of the lab's primary. pglb and HAProxy read the same
//! configuration text (only the port differs). For the TLS rows each system
//! also has a TLS port: PostgreSQL's own TLS (direct), HAProxy passing the
//! client's TLS through (the same port), and pglb terminating TLS on a second
//! listener (`bind ... ssl crt`, plaintext to the server).

use super::BenchError;
use crate::lab::Lab;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

pub const KINDS: [&str; 4] = ["direct", "pglb", "haproxy", "pgbouncer"];

/// The system that runs `--baseline PATH` (another pglb build).
pub const BASELINE: &str = "pglb-before";

pub struct System {
    pub name: String,
    pub port: u16,
    /// The proxy's process, for CPU and memory readings.
    pub pid: Option<u32>,
    pub version: String,
    /// Where clients connect with TLS; `None`: no TLS rows for this system.
    pub tls_port: Option<u16>,
    child: Option<Child>,
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map(|a| a.port()).unwrap_or(0)
}

/// The configuration both pglb and HAProxy run: seed 000's shape (tcplog,
/// log to stdout, roundrobin), idle timeouts that do not cut pgbench.
pub fn haproxy_language(port: u16, lab: &Lab) -> String {
    format!(
        "global\n    log stdout format raw local0 info\n    maxconn 4000\n\
         defaults\n    mode tcp\n    log global\n    option tcplog\n    timeout connect 5s\n    timeout client 1h\n    timeout server 1h\n    retries 3\n\
         listen pg\n    bind 127.0.0.1:{port}\n    balance roundrobin\n    server primary 127.0.0.1:{}\n",
        lab.primary().port
    )
}

/// pglb's configuration: HAProxy's, plus a listener that terminates TLS
/// with the lab's server certificate.
fn pglb_language(port: u16, tls_port: u16, lab: &Lab) -> String {
    haproxy_language(port, lab)
        + &format!(
            "listen pgtls\n    bind 127.0.0.1:{tls_port} ssl crt {}\n    balance roundrobin\n    server primary 127.0.0.1:{}\n",
            lab.tls_file("server.pem").display(),
            lab.primary().port
        )
}

fn version(cmd: &str, arg: &str) -> String {
    Command::new(cmd).arg(arg).output().map(|o| String::from_utf8_lossy(&o.stdout).lines().next().unwrap_or("").to_string()).unwrap_or_default()
}

/// Polls for up to 5 s until something listens on `port`.
async fn listening(port: u16) -> bool {
    for _ in 0..200 {
        if tokio::net::TcpStream::connect(("127.0.0.1", port)).await.is_ok() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    false
}

impl System {
    /// Starts `kind`; `baseline` is the binary of [`BASELINE`].
    pub async fn start(kind: &str, lab: &Lab, dir: &Path, baseline: Option<&Path>) -> Result<System, BenchError> {
        // stdout (connection logs) is discarded; stderr is kept to explain a failed start.
        let errlog = dir.join(format!("{kind}.stderr"));
        let spawn = |cmd: &mut Command| {
            let err = std::fs::File::create(&errlog).map_err(|e| BenchError::io(format!("create {}", errlog.display()), e))?;
            cmd.stdout(Stdio::null()).stderr(err).spawn().map_err(|e| BenchError::io(format!("start {kind}"), e))
        };
        let port = free_port();
        let mut tls_port = Some(port);
        let (child, version) = match kind {
            "direct" => {
                let port = lab.primary().port;
                return Ok(System { name: kind.into(), port, pid: None, version: "PostgreSQL".into(), tls_port: Some(port), child: None });
            }
            "pglb" | BASELINE => {
                let cfg = dir.join(format!("{kind}.cfg"));
                // The build before may not terminate TLS: no TLS rows for it.
                let text = if kind == BASELINE {
                    tls_port = None;
                    haproxy_language(port, lab)
                } else {
                    let p = free_port();
                    tls_port = Some(p);
                    pglb_language(port, p, lab)
                };
                std::fs::write(&cfg, text).map_err(|e| BenchError::io(format!("write {}", cfg.display()), e))?;
                let exe = match (kind, baseline) {
                    (BASELINE, Some(b)) => b.to_path_buf(),
                    (BASELINE, None) => return Err(BenchError::NoBaseline),
                    _ => std::env::current_exe().map_err(|e| BenchError::io("find pglb's own binary", e))?,
                };
                let version = format!("{} ({})", version(&exe.to_string_lossy(), "--version"), exe.display());
                (spawn(Command::new(&exe).args(["run", "-f"]).arg(&cfg))?, version)
            }
            "haproxy" => {
                let cfg = dir.join("haproxy.cfg");
                std::fs::write(&cfg, haproxy_language(port, lab)).map_err(|e| BenchError::io(format!("write {}", cfg.display()), e))?;
                (spawn(Command::new("haproxy").arg("-db").arg("-f").arg(&cfg))?, version("haproxy", "-v"))
            }
            "pgbouncer" => {
                tls_port = None;
                let (user, password) = lab.superuser();
                let users = dir.join("userlist.txt");
                let log = dir.join("pgbouncer.log");
                let ini = dir.join("pgbouncer.ini");
                std::fs::write(&users, format!("\"{user}\" \"{password}\"\n"))
                    .map_err(|e| BenchError::io(format!("write {}", users.display()), e))?;
                std::fs::write(&log, "").map_err(|e| BenchError::io(format!("write {}", log.display()), e))?;
                std::fs::write(
                    &ini,
                    format!(
                        "[databases]\n* = host=127.0.0.1 port={}\n[pgbouncer]\nlisten_addr = 127.0.0.1\nlisten_port = {port}\nunix_socket_dir =\n\
                         auth_type = scram-sha-256\nauth_file = {}\npool_mode = session\nmax_client_conn = 20000\ndefault_pool_size = 1000\n\
                         logfile = {}\nignore_startup_parameters = extra_float_digits\n",
                        lab.primary().port,
                        users.display(),
                        log.display()
                    ),
                )
                .map_err(|e| BenchError::io(format!("write {}", ini.display()), e))?;
                let mut cmd = Command::new("pgbouncer");
                // PgBouncer refuses to run as root.
                // SAFETY: geteuid has no preconditions.
                if unsafe { libc::geteuid() } == 0 {
                    let _ = Command::new("chown").arg("postgres").arg(&log).status();
                    let _ = Command::new("chmod").arg("0755").arg(dir).status();
                    cmd.arg("-u").arg("postgres");
                }
                (spawn(cmd.arg(&ini))?, version("pgbouncer", "--version"))
            }
            other => return Err(BenchError::UnknownSystem(other.to_string())),
        };
        let pid = Some(child.id());
        let sys = System { name: kind.into(), port, pid, version, tls_port, child: Some(child) };
        if !listening(port).await {
            let why = std::fs::read_to_string(&errlog).unwrap_or_default();
            let log_tail = why.lines().rev().take(5).collect::<Vec<_>>().join(" | ");
            return Err(BenchError::NotStarted { system: kind.to_string(), port, log_tail });
        }
        Ok(sys)
    }

    pub fn stop(mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for System {
    fn drop(&mut self) {
        if let Some(c) = self.child.as_mut() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}
