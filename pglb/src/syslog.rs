//! HAProxy's log lines sent to its log targets (`log` in global and in
//! proxies): UDP and UNIX datagram syslog, or stdout/stderr with an explicit
//! `format`, with HAProxy's headers and severities (src/log.c of HAProxy
//! 2.6). pglb's own structured logs (tracing, stderr) are unaffected.
//!
//! Sending never blocks: a datagram that cannot leave at once is dropped,
//! as HAProxy drops it.

use crate::config::{LogDest, LogTarget, ProxyLogs, SyslogFormat};
use std::io::Write;
use std::sync::OnceLock;

/// Syslog severities, by number.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Severity {
    Emerg = 0,
    Alert = 1,
    Crit = 2,
    Err = 3,
    Warning = 4,
    Notice = 5,
    Info = 6,
    Debug = 7,
}

/// English month abbreviations, as HAProxy's dates write them.
pub(crate) const MONTHS: [&str; 12] = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"];

/// Whether any target would take a message at `severity` (saves
/// formatting the line).
pub fn wanted(logs: &ProxyLogs, severity: Severity) -> bool {
    targets(logs).any(|t| severity as u8 <= t.level)
}

/// A proxy's targets (global's first with `log global`). Targets of
/// stdout/stderr without `format` carry pglb's own logs instead.
fn targets(logs: &ProxyLogs) -> impl Iterator<Item = &LogTarget> {
    logs.targets.iter().filter(|t| !matches!(t.dest, LogDest::Stdout | LogDest::Stderr) || t.format.is_some())
}

/// Sends `msg` at `severity` to every target of `logs` that takes it.
pub fn send(logs: &ProxyLogs, severity: Severity, msg: &str) {
    let now = std::time::SystemTime::now();
    for t in targets(logs) {
        let sev = severity as u8;
        if sev > t.level {
            continue;
        }
        let line = frame(t, logs, sev.max(t.minlevel), msg, now);
        deliver(&t.dest, &line);
    }
}

/// The whole datagram: header and message cut at the target's `len`, then
/// a newline, as HAProxy sends it.
pub fn frame(t: &LogTarget, logs: &ProxyLogs, level: u8, msg: &str, now: std::time::SystemTime) -> Vec<u8> {
    let mut line = header(t.format.unwrap_or(SyslogFormat::Local), t.facility, level, logs, now).into_bytes();
    line.extend_from_slice(msg.trim_end_matches(['\n', '\0']).as_bytes());
    line.truncate(t.maxlen);
    line.push(b'\n');
    line
}

fn header(format: SyslogFormat, facility: u8, level: u8, logs: &ProxyLogs, now: std::time::SystemTime) -> String {
    let pri = u32::from(facility) * 8 + u32::from(level);
    let tag = logs.tag.as_deref().unwrap_or("pglb");
    let pid = std::process::id();
    let t = crate::os::local_time(now);
    let legacy = || format!("{} {:>2} {:02}:{:02}:{:02} ", MONTHS[(t.month - 1) as usize], t.day, t.hour, t.minute, t.second);
    let iso = || {
        let off = t.offset_secs.abs();
        format!(
            "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:06}{}{:02}:{:02}",
            t.year,
            t.month,
            t.day,
            t.hour,
            t.minute,
            t.second,
            t.micros,
            if t.offset_secs < 0 { '-' } else { '+' },
            off / 3600,
            off % 3600 / 60
        )
    };
    match format {
        SyslogFormat::Local => match &logs.hostname {
            Some(host) => format!("<{pri}>{}{host} {tag}[{pid}]: ", legacy()),
            None => format!("<{pri}>{}{tag}[{pid}]: ", legacy()),
        },
        SyslogFormat::Rfc3164 => format!("<{pri}>{}{} {tag}[{pid}]: ", legacy(), logs.hostname.as_deref().unwrap_or("localhost")),
        SyslogFormat::Rfc5424 => format!("<{pri}>1 {} {} {tag} {pid} - - ", iso(), logs.hostname.as_deref().unwrap_or("-")),
        SyslogFormat::Priority => format!("<{pri}>"),
        SyslogFormat::Short => format!("<{level}>"),
        SyslogFormat::Timed => format!("<{level}>{} ", iso()),
        SyslogFormat::Iso => format!("{} ", iso()),
        SyslogFormat::Raw => String::new(),
    }
}

fn deliver(dest: &LogDest, line: &[u8]) {
    static UDP4: OnceLock<Option<std::net::UdpSocket>> = OnceLock::new();
    static UDP6: OnceLock<Option<std::net::UdpSocket>> = OnceLock::new();
    static UNIX: OnceLock<Option<std::os::unix::net::UnixDatagram>> = OnceLock::new();
    let udp = |bind: &str| std::net::UdpSocket::bind(bind).ok().filter(|s| s.set_nonblocking(true).is_ok());
    // Errors (a full buffer, no listener) drop the line, as in HAProxy.
    let _ = match dest {
        LogDest::Udp(addr) if addr.is_ipv4() => UDP4.get_or_init(|| udp("0.0.0.0:0")).as_ref().map(|s| s.send_to(line, addr).map(drop)),
        LogDest::Udp(addr) => UDP6.get_or_init(|| udp("[::]:0")).as_ref().map(|s| s.send_to(line, addr).map(drop)),
        LogDest::Unix(path) => UNIX
            .get_or_init(|| std::os::unix::net::UnixDatagram::unbound().ok().filter(|s| s.set_nonblocking(true).is_ok()))
            .as_ref()
            .map(|s| s.send_to(line, path).map(drop)),
        LogDest::Stdout => Some(console(1, line)),
        LogDest::Stderr => Some(console(2, line)),
    };
}

/// Lines for stdout/stderr go through a bounded queue to a thread of their
/// own: a pipe nobody reads must not stall the session that logs, so a line
/// that finds the queue full is dropped, as a datagram would be.
fn console(fd: u8, line: &[u8]) -> std::io::Result<()> {
    static QUEUE: OnceLock<std::sync::mpsc::SyncSender<(u8, Vec<u8>)>> = OnceLock::new();
    let queue = QUEUE.get_or_init(|| {
        let (tx, rx) = std::sync::mpsc::sync_channel::<(u8, Vec<u8>)>(4096);
        let _ = std::thread::Builder::new().name("pglb-log".into()).spawn(move || {
            for (fd, line) in rx {
                let _ = if fd == 1 { std::io::stdout().lock().write_all(&line) } else { std::io::stderr().lock().write_all(&line) };
            }
        });
        tx
    });
    queue.try_send((fd, line.to_vec())).map_err(|_| std::io::Error::from(std::io::ErrorKind::WouldBlock))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target(format: Option<SyslogFormat>, facility: u8, maxlen: usize) -> LogTarget {
        LogTarget { dest: LogDest::Udp("127.0.0.1:514".parse().unwrap()), maxlen, format, facility, level: 7, minlevel: 0, line: 1 }
    }

    #[test]
    fn headers_are_haproxys() {
        let g = ProxyLogs::default();
        let now = std::time::SystemTime::now();
        let pid = std::process::id();
        let text = |t: &LogTarget, level: u8| String::from_utf8(frame(t, &g, level, "hello", now)).unwrap();
        // local0 notice: PRI 133; "Mmm dd hh:mm:ss " is 16 bytes.
        let local = text(&target(None, 16, 1024), 5);
        assert!(local.starts_with("<133>") && local.ends_with(&format!(" pglb[{pid}]: hello\n")), "{local}");
        assert_eq!(local.len(), "<133>".len() + 16 + format!("pglb[{pid}]: hello\n").len(), "{local}");
        let rfc5424 = text(&target(Some(SyslogFormat::Rfc5424), 17, 1024), 5);
        assert!(rfc5424.starts_with("<141>1 ") && rfc5424.ends_with(&format!(" - pglb {pid} - - hello\n")), "{rfc5424}");
        assert_eq!(text(&target(Some(SyslogFormat::Short), 16, 1024), 5), "<5>hello\n");
        assert_eq!(text(&target(Some(SyslogFormat::Priority), 19, 1024), 5), "<157>hello\n");
        assert_eq!(text(&target(Some(SyslogFormat::Raw), 16, 1024), 5), "hello\n");
        // len cuts the line, header included, before the newline.
        let long = "x".repeat(200);
        assert_eq!(frame(&target(Some(SyslogFormat::Raw), 16, 100), &g, 5, &long, now).len(), 101);
    }
}
