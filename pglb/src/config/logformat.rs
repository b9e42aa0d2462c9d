//! `log-format` in tcp mode: HAProxy's custom log format (configuration.txt
//! section 8.2.4), with the variables a tcp-mode session has.

use super::error::Invalid;

/// HAProxy's `option tcplog` format.
pub const TCPLOG: &str = "%ci:%cp [%t] %ft %b/%s %Tw/%Tc/%Tt %B %ts %ac/%fc/%bc/%sc/%rc %sq/%bq";

/// A variable of a tcp-mode log line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Var {
    ClientIp,
    ClientPort,
    FrontendIp,
    FrontendPort,
    /// `%f`
    Frontend,
    /// `%ft`: the frontend name with `~` for TLS (pglb: as `%f`).
    FrontendTransport,
    Backend,
    Server,
    BackendSourceIp,
    BackendSourcePort,
    ServerIp,
    ServerPort,
    /// `%t`: the accept date, `dd/Mon/yyyy:HH:MM:SS.mmm`.
    AcceptDate,
    /// `%Th`, `%Ti`: handshake and idle times (0 in tcp mode).
    Zero,
    Tw,
    Tc,
    Tt,
    /// `%B`: bytes sent to the client.
    BytesToClient,
    /// `%U`: bytes received from the client.
    BytesFromClient,
    /// `%ts`: the termination state.
    Termination,
    /// `%tsc`: the termination state and HTTP's two cookie letters (`--`).
    TerminationCookie,
    ActConn,
    FeConn,
    BeConn,
    SrvConn,
    Retries,
    SrvQueue,
    BackendQueue,
    Pid,
    /// `%ST`: the status code, 0 in tcp mode.
    Status,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Token {
    Text(String),
    Var(Var),
}

/// A parsed `log-format`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogFormat(pub Vec<Token>);

impl LogFormat {
    pub fn parse(text: &str) -> Result<LogFormat, Invalid> {
        let mut tokens = Vec::new();
        let mut literal = String::new();
        let mut chars = text.chars().peekable();
        let mut quoted = false;
        while let Some(c) = chars.next() {
            if c != '%' {
                literal.push(c);
                continue;
            }
            match chars.peek() {
                Some('%') => {
                    chars.next();
                    literal.push('%');
                    continue;
                }
                Some('{') => {
                    // Flags: +Q quotes the value; the others have no effect.
                    chars.next();
                    let mut flags = String::new();
                    for f in chars.by_ref() {
                        if f == '}' {
                            break;
                        }
                        flags.push(f);
                    }
                    quoted = flags.split(',').any(|f| f == "+Q");
                }
                Some('[') => return Err("sample fetches (%[...]) are not supported by pglb".into()),
                _ => {}
            }
            let mut name = String::new();
            while let Some(&n) = chars.peek() {
                if n.is_ascii_alphanumeric() {
                    name.push(n);
                    chars.next();
                } else {
                    break;
                }
            }
            if quoted {
                literal.push('"');
            }
            if !literal.is_empty() {
                tokens.push(Token::Text(std::mem::take(&mut literal)));
            }
            tokens.push(Token::Var(var(&name)?));
            if std::mem::take(&mut quoted) {
                literal.push('"');
            }
        }
        if !literal.is_empty() {
            tokens.push(Token::Text(literal));
        }
        Ok(LogFormat(tokens))
    }
}

fn var(name: &str) -> Result<Var, Invalid> {
    use Var::*;
    Ok(match name {
        "ci" => ClientIp,
        "cp" => ClientPort,
        "fi" => FrontendIp,
        "fp" => FrontendPort,
        "f" => Frontend,
        "ft" => FrontendTransport,
        "b" => Backend,
        "s" => Server,
        "bi" => BackendSourceIp,
        "bp" => BackendSourcePort,
        "si" => ServerIp,
        "sp" => ServerPort,
        "t" => AcceptDate,
        "Th" | "Ti" => Zero,
        "Tw" => Tw,
        "Tc" => Tc,
        "Tt" => Tt,
        "B" => BytesToClient,
        "U" => BytesFromClient,
        "ts" => Termination,
        "tsc" => TerminationCookie,
        "ac" => ActConn,
        "fc" => FeConn,
        "bc" => BeConn,
        "sc" => SrvConn,
        "rc" => Retries,
        "sq" => SrvQueue,
        "bq" => BackendQueue,
        "pid" => Pid,
        "ST" => Status,
        "Ta" | "Tr" | "Tq" | "TR" | "r" | "HM" | "HP" | "HQ" | "HU" | "HV" | "CC" | "CS" | "hr" | "hrl" | "hs" | "hsl" => {
            return Err(format!("format variable '{name}' is reserved for HTTP mode").into());
        }
        "ID" => return Err("%ID (unique-id) is not supported by pglb".into()),
        "" => return Err("a '%' without a variable name (write %% for a percent sign)".into()),
        other => return Err(format!("no such format variable '{other}' in tcp mode").into()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_tcplog_and_refuses_http_variables() {
        let f = LogFormat::parse(TCPLOG).unwrap();
        assert_eq!(f.0[0], Token::Var(Var::ClientIp));
        assert_eq!(f.0[1], Token::Text(":".into()));
        assert!(f.0.contains(&Token::Var(Var::BackendQueue)));
        assert_eq!(
            LogFormat::parse("%{+Q}ci 100%%").unwrap().0,
            [Token::Text("\"".into()), Token::Var(Var::ClientIp), Token::Text("\" 100%".into())]
        );
        assert!(LogFormat::parse("%Ta").unwrap_err().message().contains("reserved for HTTP mode"));
        assert!(LogFormat::parse("%zz").unwrap_err().message().contains("no such format variable 'zz'"));
    }
}
