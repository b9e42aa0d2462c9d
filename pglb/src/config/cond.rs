//! HAProxy's conditions: `.if`/`.elif` blocks in a configuration and the
//! command line's `-cc EXPR` (configuration.txt section 2.4).
//!
//! A condition is the words of a line joined by spaces, after the usual
//! quoting and `"$VAR"` expansion: terms joined by `&&` (binding tighter)
//! and `||`, negated by `!`, grouped by parentheses. A term is a number
//! (true unless 0), an empty string (false), or a predicate:
//! `defined(NAME)`, `feature(NAME)`, `streq(A,B)`, `strneq(A,B)`,
//! `version_atleast(V)`, `version_before(V)`, `openssl_version_atleast(V)`,
//! `openssl_version_before(V)`, `ssllib_name_startswith(S)`.
//!
//! pglb answers as HAProxy 2.6 would ([`HAPROXY_VERSION`]) with the features
//! in [`FEATURES`]: what HAProxy's regression tests and scripts ask before
//! using something.

/// The HAProxy version whose configuration language pglb implements; what
/// `version_atleast` compares with.
pub const HAPROXY_VERSION: &str = "2.6.0";

/// HAProxy's build features, as `-vv` lists them and `feature(X)` asks.
/// `+` for what pglb has in HAProxy's sense; `-` for what it has not (no
/// HTTP mode, no Lua; `bind ... ssl` terminates PostgreSQL's TLS
/// negotiation, not the raw TLS of HAProxy's SSL tests, hence `-OPENSSL`).
pub const FEATURES: &[&str] = &[
    "+EPOLL",
    "+POLL",
    "+THREAD",
    "+GETADDRINFO",
    "+TPROXY",
    "-OPENSSL",
    "-LUA",
    "-PROMEX",
    "-ZLIB",
    "-SLZ",
    "-QUIC",
    "-PCRE",
    "-PCRE2",
    "-LINUX_SPLICE",
    "-NS",
    "-SYSTEMD",
    "-51DEGREES",
    "-WURFL",
    "-DEVICEATLAS",
];

/// Why a condition could not be evaluated (HAProxy's `-cc` exits 2).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CondError {
    #[error("unparsable conditional expression '{0}'")]
    Unparsable(String),
    #[error("unknown predicate '{0}' (use defined, feature, streq, strneq, version_atleast, version_before)")]
    UnknownPredicate(String),
    #[error("'{0}' takes {1} argument(s)")]
    Arity(String, usize),
}

/// Evaluates `text`; `defined` asks `env` whether a variable is set.
pub fn eval(text: &str, env: &dyn Fn(&str) -> Option<String>) -> Result<bool, CondError> {
    let mut p = Parser { s: text.as_bytes(), i: 0, text, env };
    p.skip_spaces();
    if p.i == p.s.len() {
        return Ok(false);
    }
    let v = p.or()?;
    p.skip_spaces();
    if p.i != p.s.len() {
        return Err(CondError::Unparsable(text.to_string()));
    }
    Ok(v)
}

struct Parser<'a> {
    s: &'a [u8],
    i: usize,
    text: &'a str,
    env: &'a dyn Fn(&str) -> Option<String>,
}

impl Parser<'_> {
    fn skip_spaces(&mut self) {
        while self.i < self.s.len() && (self.s[self.i] == b' ' || self.s[self.i] == b'\t') {
            self.i += 1;
        }
    }

    fn eat(&mut self, token: &str) -> bool {
        self.skip_spaces();
        if self.s[self.i..].starts_with(token.as_bytes()) {
            self.i += token.len();
            true
        } else {
            false
        }
    }

    fn bad(&self) -> CondError {
        CondError::Unparsable(self.text.to_string())
    }

    fn or(&mut self) -> Result<bool, CondError> {
        let mut v = self.and()?;
        while self.eat("||") {
            let rhs = self.and()?;
            v = v || rhs;
        }
        Ok(v)
    }

    fn and(&mut self) -> Result<bool, CondError> {
        let mut v = self.term()?;
        while self.eat("&&") {
            let rhs = self.term()?;
            v = v && rhs;
        }
        Ok(v)
    }

    fn term(&mut self) -> Result<bool, CondError> {
        self.skip_spaces();
        if self.eat("!") {
            return Ok(!self.term()?);
        }
        if self.eat("(") {
            let v = self.or()?;
            if !self.eat(")") {
                return Err(self.bad());
            }
            return Ok(v);
        }
        let start = self.i;
        while self.i < self.s.len() && (self.s[self.i].is_ascii_alphanumeric() || matches!(self.s[self.i], b'_' | b'-' | b'.')) {
            self.i += 1;
        }
        let word = &self.text[start..self.i];
        if word.is_empty() {
            return Err(self.bad());
        }
        if self.i < self.s.len() && self.s[self.i] == b'(' {
            self.i += 1;
            let close = self.text[self.i..].find(')').ok_or_else(|| self.bad())?;
            let inner = &self.text[self.i..self.i + close];
            self.i += close + 1;
            let args: Vec<&str> = if inner.is_empty() { Vec::new() } else { inner.split(',').map(str::trim).collect() };
            return self.predicate(word, &args);
        }
        match word.parse::<i64>() {
            Ok(n) => Ok(n != 0),
            Err(_) => Err(self.bad()),
        }
    }

    fn predicate(&self, name: &str, args: &[&str]) -> Result<bool, CondError> {
        let want = |n: usize| if args.len() == n { Ok(()) } else { Err(CondError::Arity(name.to_string(), n)) };
        match name {
            "defined" => want(1).map(|()| (self.env)(args[0]).is_some()),
            "feature" => want(1).map(|()| FEATURES.iter().any(|f| f.strip_prefix('+') == Some(args[0]))),
            "streq" => want(2).map(|()| args[0] == args[1]),
            "strneq" => want(2).map(|()| args[0] != args[1]),
            "version_atleast" => want(1).map(|()| compare(args[0]).is_none_or(|theirs| version(HAPROXY_VERSION) >= Some(theirs))),
            // (An unparsable version: version_atleast is true, version_before false, as in HAProxy.)
            "version_before" => want(1).map(|()| compare(args[0]).is_some_and(|theirs| version(HAPROXY_VERSION) < Some(theirs))),
            // pglb does not offer HAProxy's OpenSSL features (see FEATURES).
            "openssl_version_atleast" | "openssl_version_before" | "ssllib_name_startswith" => want(1).map(|()| false),
            other => Err(CondError::UnknownPredicate(other.to_string())),
        }
    }
}

/// HAProxy's rule: a version that does not parse makes the comparison true.
fn compare(text: &str) -> Option<[u32; 6]> {
    version(text)
}

/// `a.b.c.d[-devN|-rcN|-preN][-...]` as HAProxy orders versions: missing
/// numbers are 0; a release sorts after its -pre/-rc, which sort after -dev.
fn version(text: &str) -> Option<[u32; 6]> {
    let (numbers, rest) = text.split_once('-').map_or((text, None), |(n, r)| (n, Some(r)));
    let mut out = [0, 0, 0, 0, 3, 0];
    for (i, part) in numbers.split('.').enumerate() {
        if i >= 4 {
            return None;
        }
        out[i] = part.parse().ok()?;
    }
    if let Some(rest) = rest {
        let tag = rest.split('-').next().unwrap_or("");
        let (kind, n) = if let Some(n) = tag.strip_prefix("dev") {
            (1, n)
        } else if let Some(n) = tag.strip_prefix("rc").or_else(|| tag.strip_prefix("pre")) {
            (2, n)
        } else {
            return Some(out);
        };
        out[4] = kind;
        out[5] = if n.is_empty() { 0 } else { n.parse().ok()? };
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(text: &str) -> Result<bool, CondError> {
        eval(text, &|name| (name == "HOME" || name == "TESTVAR").then(|| "1".to_string()))
    }

    #[test]
    fn as_haproxy_2_6_answers() {
        // Measured with HAProxy 2.6.12's -cc (exit 0 true, 1 false, 2 error).
        for t in [
            "version_atleast(2.4)",
            "version_atleast(2.5-dev0)",
            "version_atleast(2.6-dev0)",
            "version_before(3.0)",
            "streq(a,a)",
            "defined(HOME)",
            "1 || 0",
            "!0",
            "(1 && !0) || 0",
            "-1000 && 200",
            "feature(THREAD)",
            "version_atleast(abc)",
            "streq(foo bar,foo bar)",
            "defined(TESTVAR) && streq(1,1)",
        ] {
            assert_eq!(ev(t), Ok(true), "{t}");
        }
        for t in [
            "version_before(abc)",
            "version_atleast(3.0)",
            "feature(NOPE)",
            "feature(OPENSSL)",
            "streq(a,b)",
            "defined(NOPE_X)",
            "1 && 0",
            "",
            "0 || 0",
        ] {
            assert_eq!(ev(t), Ok(false), "{t}");
        }
        for t in ["foo(1)", "version_atleast(2.4", "200rrr", "!(0))", "1 &&"] {
            assert!(ev(t).is_err(), "{t}");
        }
    }

    #[test]
    fn versions_order_like_haproxys() {
        assert!(version("2.5-dev0") < version("2.5"));
        assert!(version("2.5-dev3") < version("2.5-rc1"));
        assert!(version("2.5") < version("2.5.1"));
        assert_eq!(version("2.6"), version("2.6.0"));
    }
}
