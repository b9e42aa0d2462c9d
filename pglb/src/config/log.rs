//! `log` lines: HAProxy's syslog targets (configuration.txt, "log").
//!
//! `log ADDR [len N] [format F] [sample R:S] FACILITY [LEVEL [MINLEVEL]]`.

use super::error::Invalid;
use super::model::{LogDest, LogTarget, SyslogFormat};
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;

/// Syslog facilities, by number.
pub const FACILITIES: [&str; 24] = [
    "kern", "user", "mail", "daemon", "auth", "syslog", "lpr", "news", "uucp", "cron", "auth2", "ftp", "ntp", "audit", "alert", "cron2", "local0",
    "local1", "local2", "local3", "local4", "local5", "local6", "local7",
];

/// Severities, by number.
pub const LEVELS: [&str; 8] = ["emerg", "alert", "crit", "err", "warning", "notice", "info", "debug"];

/// Parses the words after `log` (not `global`).
pub fn parse_target(args: &[String], line: usize) -> Result<LogTarget, Invalid> {
    let Some(addr) = args.first() else { return Err("'log' needs a target: an address, /dev/log, stdout or stderr, or 'global'".into()) };
    let dest = parse_dest(addr)?;
    let mut target = LogTarget { dest, maxlen: 1024, format: None, facility: 0, level: 7, minlevel: 0, line };
    let mut rest = &args[1..];
    loop {
        match rest {
            [kw, v, tail @ ..] if kw == "len" => {
                target.maxlen = match v.parse::<usize>() {
                    Ok(n) if (80..=65535).contains(&n) => n,
                    _ => return Err(format!("invalid log length '{v}', must be between 80 and 65535").into()),
                };
                rest = tail;
            }
            [kw, v, tail @ ..] if kw == "format" => {
                target.format = Some(match v.as_str() {
                    "local" => SyslogFormat::Local,
                    "rfc3164" => SyslogFormat::Rfc3164,
                    "rfc5424" => SyslogFormat::Rfc5424,
                    "priority" => SyslogFormat::Priority,
                    "short" => SyslogFormat::Short,
                    "timed" => SyslogFormat::Timed,
                    "iso" => SyslogFormat::Iso,
                    "raw" => SyslogFormat::Raw,
                    other => {
                        return Err(format!("unknown log format '{other}': use rfc3164, rfc5424, local, priority, short, timed, iso or raw").into());
                    }
                });
                rest = tail;
            }
            [kw, ..] if kw == "sample" => {
                return Err("'log ... sample' is not supported: pglb sends every line to each target".into());
            }
            _ => break,
        }
    }
    let Some((facility, levels)) = rest.split_first() else {
        return Err(format!("'log {addr}' needs a facility (e.g. local0, daemon)").into());
    };
    target.facility = FACILITIES.iter().position(|f| f == facility).ok_or_else(|| format!("unknown log facility '{facility}'"))? as u8;
    let level =
        |w: &String| LEVELS.iter().position(|l| l == w).map(|n| n as u8).ok_or_else(|| Invalid::from(format!("unknown optional log level '{w}'")));
    match levels {
        [] => {}
        [max] => target.level = level(max)?,
        [max, min] => {
            target.level = level(max)?;
            target.minlevel = level(min)?;
        }
        [_, _, extra @ ..] => return Err(format!("'log' takes at most a level and a minimum level; remove '{}'", extra.join(" ")).into()),
    }
    Ok(target)
}

fn parse_dest(addr: &str) -> Result<LogDest, Invalid> {
    match addr {
        "stdout" | "fd@1" => return Ok(LogDest::Stdout),
        "stderr" | "fd@2" => return Ok(LogDest::Stderr),
        _ => {}
    }
    if let Some(path) = addr.strip_prefix("unix@").or(addr.starts_with('/').then_some(addr)) {
        return Ok(LogDest::Unix(PathBuf::from(path)));
    }
    let bare = addr.strip_prefix("udp@").or_else(|| addr.strip_prefix("udp4@")).or_else(|| addr.strip_prefix("udp6@")).unwrap_or(addr);
    if let Some(prefix) = bare.split_once('@').map(|(p, _)| p) {
        return Err(
            format!("log target '{addr}': '{prefix}@' is not supported: write IP[:PORT] (UDP), /path (UNIX datagram), stdout or stderr").into()
        );
    }
    if let Ok(sa) = bare.parse::<SocketAddr>() {
        return Ok(LogDest::Udp(sa));
    }
    if let Ok(ip) = bare.trim_start_matches('[').trim_end_matches(']').parse::<IpAddr>() {
        return Ok(LogDest::Udp(SocketAddr::new(ip, 514)));
    }
    if let Some((ip, port)) = bare.rsplit_once(':')
        && let (Ok(ip), Ok(port)) = (ip.parse::<IpAddr>(), port.parse::<u16>())
    {
        return Ok(LogDest::Udp(SocketAddr::new(ip, port)));
    }
    Err(format!("log target '{addr}' is not an IP address, a path, stdout or stderr (pglb does not resolve names here)").into())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: &str) -> Result<LogTarget, Invalid> {
        parse_target(&s.split_whitespace().map(String::from).collect::<Vec<_>>(), 1)
    }

    #[test]
    fn haproxys_log_lines() {
        let a = t("127.0.0.1:1514 len 2048 local0").unwrap();
        assert_eq!((a.dest, a.maxlen, a.facility, a.level, a.format), (LogDest::Udp("127.0.0.1:1514".parse().unwrap()), 2048, 16, 7, None));
        let b = t("10.0.0.1 format rfc5424 daemon notice info").unwrap();
        assert_eq!(
            (b.dest, b.facility, b.level, b.minlevel, b.format),
            (LogDest::Udp("10.0.0.1:514".parse().unwrap()), 3, 5, 6, Some(SyslogFormat::Rfc5424))
        );
        assert_eq!(t("/dev/log local7").unwrap().dest, LogDest::Unix("/dev/log".into()));
        assert_eq!(t("stdout format short local0").unwrap().format, Some(SyslogFormat::Short));
        assert!(t("127.0.0.1 len 10 local0").unwrap_err().message().contains("between 80 and 65535"));
        assert!(t("127.0.0.1 local9").unwrap_err().message().contains("unknown log facility 'local9'"));
        assert!(t("127.0.0.1 format xml local0").unwrap_err().message().contains("unknown log format 'xml'"));
        assert!(t("127.0.0.1").unwrap_err().message().contains("facility"));
        assert!(t("ring@buf local0").unwrap_err().message().contains("'ring@'"));
    }
}
