//! Address syntaxes of `bind` and `server` lines.

use super::error::Invalid;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

/// Splits `[prefix@]host:port` into host and port. Accepts `[v6]:port`,
/// a bare IPv6 literal whose last colon starts the port (`:::5432`), `*` and
/// an empty host (wildcard). Returns the host as written (may be a name).
pub fn split_host_port(text: &str) -> Result<(String, u16), Invalid> {
    let (host, port) = split_any_port(text)?;
    if port == 0 {
        return Err(format!("'{text}': port 0 is not a usable server port").into());
    }
    Ok((host, port))
}

/// Like `split_host_port`, but port 0 is allowed (a bind on an ephemeral port).
fn split_any_port(text: &str) -> Result<(String, u16), Invalid> {
    let text = strip_family_prefix(text)?;
    if text.starts_with('/') || text.starts_with("unix@") || text.starts_with("abns@") {
        return Err(format!("'{text}' is a UNIX socket: pglb speaks TCP here, write HOST:PORT").into());
    }
    let (host, port) = if let Some(rest) = text.strip_prefix('[') {
        let (host, after) = rest.split_once(']').ok_or_else(|| format!("'{text}': missing ']' after the IPv6 address"))?;
        let port = after.strip_prefix(':').ok_or_else(|| format!("'{text}' has no port: write [{host}]:PORT"))?;
        (host.to_string(), port)
    } else {
        let (host, port) = text.rsplit_once(':').ok_or_else(|| format!("'{text}' has no port: write {text}:PORT (e.g. {text}:5432)"))?;
        (host.to_string(), port)
    };
    if port.is_empty() {
        return Err(format!("'{text}' has no port: write {host}:PORT (e.g. {host}:5432)").into());
    }
    if port.starts_with('+') || port.starts_with('-') || port.contains('-') {
        return Err(format!("'{text}': port offsets and ranges are not supported, write one port number").into());
    }
    let port: u16 = port.parse().map_err(|_| format!("'{text}': '{port}' is not a port number (1-65535)"))?;
    Ok((host, port))
}

fn strip_family_prefix(text: &str) -> Result<&str, Invalid> {
    for prefix in ["ipv4@", "ipv6@", "tcp@", "tcp4@", "tcp6@"] {
        if let Some(rest) = text.strip_prefix(prefix) {
            return Ok(rest);
        }
    }
    if let Some((prefix, _)) = text.split_once('@')
        && !prefix.contains(':')
        && !prefix.contains('[')
    {
        return Err(format!("'{text}': address prefix '{prefix}@' is not supported: write HOST:PORT").into());
    }
    Ok(text)
}

/// `fd@N`: an inherited listening socket (VTest, systemd socket
/// activation): its descriptor and the address it listens on. `None` when
/// `text` is not `fd@...`.
pub fn inherited(text: &str) -> Option<Result<(i32, SocketAddr), Invalid>> {
    let n = text.strip_prefix("fd@")?;
    let Ok(fd) = n.parse::<i32>() else { return Some(Err(format!("file descriptor '{n}' is not a valid integer in '{text}'").into())) };
    Some(
        crate::os::inherited_stream(fd)
            .map(|addr| (fd, addr))
            .map_err(|e| format!("cannot use file descriptor '{fd}' : {}.", crate::os::describe(&e)).into()),
    )
}

/// Parses a bind address. `*`, `0.0.0.0` or empty binds every IPv4 address,
/// `::` every IPv6 (and IPv4, unless `v6only`).
/// Port 0 asks the kernel for a free port (tests, `pglb demo`).
pub fn parse_bind(text: &str) -> Result<SocketAddr, Invalid> {
    let (host, port) = split_any_port(text)?;
    let ip: IpAddr = match host.as_str() {
        "" | "*" => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
        "::" => IpAddr::V6(Ipv6Addr::UNSPECIFIED),
        other => {
            other.parse().map_err(|_| format!("'{text}': bind needs an IP address, not '{other}' (write *:{port} to listen on every address)"))?
        }
    };
    Ok(SocketAddr::new(ip, port))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bind_forms() {
        assert_eq!(parse_bind("*:5432").unwrap(), "0.0.0.0:5432".parse().unwrap());
        assert_eq!(parse_bind(":5432").unwrap(), "0.0.0.0:5432".parse().unwrap());
        assert_eq!(parse_bind("127.0.0.1:1").unwrap(), "127.0.0.1:1".parse().unwrap());
        assert_eq!(parse_bind("[::]:5432").unwrap(), "[::]:5432".parse().unwrap());
        assert_eq!(parse_bind(":::5432").unwrap(), "[::]:5432".parse().unwrap());
        assert_eq!(parse_bind("ipv4@127.0.0.1:7").unwrap(), "127.0.0.1:7".parse().unwrap());
        assert!(parse_bind("localhost:5432").unwrap_err().message().contains("IP address"));
        assert!(parse_bind("/tmp/sock").unwrap_err().message().contains("UNIX"));
        assert!(parse_bind("*:99999").unwrap_err().message().contains("port number"));
        assert!(parse_bind("*").unwrap_err().message().contains("no port"));
    }

    #[test]
    fn server_forms() {
        assert_eq!(split_host_port("db.example:5432").unwrap(), ("db.example".into(), 5432));
        assert_eq!(split_host_port("[::1]:5432").unwrap(), ("::1".into(), 5432));
        assert!(split_host_port("db.example").unwrap_err().message().contains("no port"));
        assert!(split_host_port("db:+1").unwrap_err().message().contains("offsets"));
    }
}
