//! Splits HAProxy configuration text into words, line by line.
//!
//! HAProxy's rules (configuration.txt section 2.2): words are separated by
//! spaces or tabs; `#` starts a comment; a backslash escapes the next
//! character; double quotes group words and expand `${VAR}` / `$VAR` from the
//! environment; single quotes group words literally.

use super::error::ConfigError;
use super::error::Invalid;
use std::path::Path;

/// A line's words, quotes removed and variables expanded.
pub type Words = Vec<String>;

/// One non-empty configuration line, already split into words.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Line {
    /// 1-based line number in the file, for error messages.
    pub number: usize,
    pub words: Vec<String>,
}

impl Line {
    /// The keyword (first word), lower-cased comparison is the caller's job:
    /// HAProxy keywords are case-sensitive, so this returns it as written.
    pub fn keyword(&self) -> &str {
        &self.words[0]
    }

    pub fn args(&self) -> &[String] {
        &self.words[1..]
    }
}

/// Variables set or unset by the file so far (`setenv`, `presetenv`,
/// `unsetenv` in `global`), read before pglb's environment when expanding:
/// as in HAProxy, they apply to the lines after them. The process
/// environment itself is never changed.
pub type Overlay = std::collections::HashMap<String, Option<String>>;

/// An open `.if` block.
struct Block {
    /// The lines around the block are kept.
    outer: bool,
    /// A branch was taken already (later `.elif`/`.else` are skipped).
    taken: bool,
    /// Lines of the current branch are kept.
    active: bool,
    /// `.else` was seen.
    in_else: bool,
}

/// Splits `text` into lines of words. `file` is only used in error messages.
///
/// Conditional blocks (`.if COND` / `.elif COND` / `.else` / `.endif`,
/// configuration.txt section 2.4) are resolved here: lines of branches not
/// taken are dropped. `.notice`, `.warning`, `.alert` and `.diag` lines are
/// passed on (the parser reports them).
pub fn tokenize(file: &Path, text: &str) -> Result<Vec<Line>, ConfigError> {
    let mut lines = Vec::new();
    let mut overlay = Overlay::new();
    let mut in_global = false;
    let mut blocks: Vec<Block> = Vec::new();
    for (index, raw) in text.lines().enumerate() {
        let number = index + 1;
        let mut words = split_line_noting(raw, &overlay, &mut Vec::new()).map_err(|msg| ConfigError::at(file, number, msg))?;
        let Some(keyword) = words.first() else { continue };
        let active = blocks.last().is_none_or(|b| b.active);
        let condition = |words: &[String]| {
            let text = words[1..].join(" ");
            super::cond::eval(&text, &|name| lookup(&overlay, name)).map_err(|e| ConfigError::at(file, number, format!("{}: {e}", words[0])))
        };
        match keyword.as_str() {
            ".if" => {
                let taken = active && condition(&words)?;
                blocks.push(Block { outer: active, taken, active: taken, in_else: false });
                continue;
            }
            ".elif" => {
                let holds = match blocks.last() {
                    Some(b) if b.in_else => return Err(ConfigError::at(file, number, "'.elif' after '.else': put it before the '.else'")),
                    Some(b) => b.outer && !b.taken && condition(&words)?,
                    None => return Err(ConfigError::at(file, number, "'.elif' without '.if'")),
                };
                let b = blocks.last_mut().expect("checked above");
                b.active = holds;
                b.taken |= holds;
                continue;
            }
            ".else" => {
                let Some(b) = blocks.last_mut() else { return Err(ConfigError::at(file, number, "'.else' without '.if'")) };
                if b.in_else {
                    return Err(ConfigError::at(file, number, "a second '.else' in the same '.if' block"));
                }
                b.in_else = true;
                b.active = b.outer && !b.taken;
                b.taken = true;
                continue;
            }
            ".endif" => {
                if blocks.pop().is_none() {
                    return Err(ConfigError::at(file, number, "'.endif' without '.if'"));
                }
                continue;
            }
            _ if !active => continue,
            _ => {}
        }
        if let Some(at) = address_word(&words) {
            words[at] = expand_address(&words[at], &overlay);
        }
        let keyword = &words[0];
        if super::parse::is_section(keyword) {
            in_global = keyword == "global";
        } else if in_global {
            match (keyword.as_str(), words.get(1), words.get(2)) {
                ("setenv", Some(name), Some(value)) => {
                    overlay.insert(name.clone(), Some(value.clone()));
                }
                ("presetenv", Some(name), Some(value)) if lookup(&overlay, name).is_none() => {
                    overlay.insert(name.clone(), Some(value.clone()));
                }
                ("unsetenv", ..) => overlay.extend(words[1..].iter().map(|n| (n.clone(), None))),
                _ => {}
            }
        }
        lines.push(Line { number, words });
    }
    if !blocks.is_empty() {
        return Err(ConfigError::file(file, format!("{} '.if' block(s) not closed by '.endif' at the end of the file", blocks.len())));
    }
    Ok(lines)
}

/// The position of the address in a line whose address HAProxy expands
/// variables in even without quotes (its `str2sa_range`): `bind ADDR`,
/// `server NAME ADDR`, `log ADDR`, `stats socket ADDR`,
/// `nameserver NAME ADDR`, `peer NAME ADDR`.
fn address_word(words: &[String]) -> Option<usize> {
    let at = match (words[0].as_str(), words.get(1).map(String::as_str)) {
        ("bind" | "log", _) => 1,
        ("server" | "nameserver" | "peer", _) => 2,
        ("stats", Some("socket")) => 2,
        _ => return None,
    };
    (at < words.len() && words[at].contains('$')).then_some(at)
}

/// HAProxy's address expansion: `$NAME` and `${NAME}` (letters, digits,
/// `_`), an unset variable giving nothing. No default syntax here, as in
/// HAProxy.
fn expand_address(text: &str, overlay: &Overlay) -> String {
    let mut out = String::new();
    let mut rest = text;
    while let Some(at) = rest.find('$') {
        out.push_str(&rest[..at]);
        let after = &rest[at + 1..];
        // The name's characters, then a closing brace if there is one
        // (HAProxy's env_expand: `${P-1}` is P's value followed by `-1}`).
        let braced = after.starts_with('{');
        let from = usize::from(braced);
        let end = after[from..].find(|c: char| !(c.is_ascii_alphanumeric() || c == '_')).map_or(after.len(), |e| e + from);
        let name = &after[from..end];
        let used = if braced && after[end..].starts_with('}') { end + 1 } else { end };
        if name.is_empty() {
            out.push('$');
            rest = after;
            continue;
        }
        out.push_str(&lookup(overlay, name).unwrap_or_default());
        rest = &after[used..];
    }
    out.push_str(rest);
    out
}

fn lookup(overlay: &Overlay, name: &str) -> Option<String> {
    match overlay.get(name) {
        Some(value) => value.clone(),
        None => std::env::var(name).ok(),
    }
}

#[derive(Clone, Copy, PartialEq)]
enum Quote {
    None,
    Single,
    Double,
}

#[cfg(test)]
fn split_line(raw: &str) -> Result<Words, Invalid> {
    split_line_noting(raw, &Overlay::new(), &mut Vec::new())
}

/// Environment variables a line refers to (in double quotes) that are not
/// set: HAProxy expands them to nothing, which makes for puzzling errors,
/// so an error on such a line names them.
pub fn missing_variables(raw: &str) -> Vec<String> {
    let mut unset = Vec::new();
    let _ = split_line_noting(raw, &Overlay::new(), &mut unset);
    unset
}

pub(super) fn split_line_noting(raw: &str, overlay: &Overlay, unset: &mut Vec<String>) -> Result<Words, Invalid> {
    let mut words = Vec::new();
    let mut word = String::new();
    // A word may be an empty quoted string (""), so track "started" apart from content.
    let mut started = false;
    let mut quote = Quote::None;
    let mut chars = raw.chars().peekable();
    while let Some(c) = chars.next() {
        match (quote, c) {
            (Quote::Single, '\'') => quote = Quote::None,
            (Quote::Single, _) => word.push(c),
            (Quote::Double, '"') => quote = Quote::None,
            (_, '\\') => match chars.next() {
                Some(escaped) => {
                    word.push(unescape(escaped));
                    started = true;
                }
                None => return Err("a backslash ends the line; HAProxy has no line continuation, write the whole directive on one line".into()),
            },
            (Quote::Double, '$') => expand_env(&mut chars, &mut word, overlay, unset)?,
            (Quote::None, '#') => break,
            (Quote::None, ' ' | '\t') => {
                if started {
                    words.push(std::mem::take(&mut word));
                    started = false;
                }
            }
            (Quote::None, '\'') => {
                quote = Quote::Single;
                started = true;
            }
            (Quote::None, '"') => {
                quote = Quote::Double;
                started = true;
            }
            (_, _) => {
                word.push(c);
                started = true;
            }
        }
    }
    match quote {
        Quote::None => {}
        Quote::Single => return Err("unterminated single quote: close it with ' before the end of the line".into()),
        Quote::Double => return Err("unterminated double quote: close it with \" before the end of the line".into()),
    }
    if started {
        words.push(word);
    }
    Ok(words)
}

fn unescape(c: char) -> char {
    match c {
        'n' => '\n',
        'r' => '\r',
        't' => '\t',
        other => other,
    }
}

/// Expands `${NAME}`, `${NAME-DEFAULT}` or `$NAME` (inside double quotes
/// only, as HAProxy does). An unset variable expands to nothing (or to
/// DEFAULT), as in HAProxy.
fn expand_env(
    chars: &mut std::iter::Peekable<std::str::Chars<'_>>,
    out: &mut String,
    overlay: &Overlay,
    unset: &mut Vec<String>,
) -> Result<(), Invalid> {
    let mut name = String::new();
    if chars.peek() == Some(&'{') {
        chars.next();
        loop {
            match chars.next() {
                Some('}') => break,
                Some(c) => name.push(c),
                None => return Err("unterminated ${...}: add the closing brace".into()),
            }
        }
        // HAProxy's ${NAME[,]} list syntax: keep the name, drop the separator request.
        if let Some(stripped) = name.strip_suffix("[,]") {
            name = stripped.to_string();
        }
        // ${NAME-DEFAULT}: DEFAULT when NAME is not set (an empty value stays empty).
        if let Some((var, default)) = name.split_once('-') {
            match lookup(overlay, var) {
                Some(value) => out.push_str(&value),
                None => out.push_str(default),
            }
            return Ok(());
        }
    } else {
        while let Some(&c) = chars.peek() {
            if c.is_ascii_alphanumeric() || c == '_' {
                name.push(c);
                chars.next();
            } else {
                break;
            }
        }
        if name.is_empty() {
            out.push('$');
            return Ok(());
        }
    }
    match lookup(overlay, &name) {
        Some(value) => out.push_str(&value),
        None => unset.push(name),
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn words(s: &str) -> Vec<String> {
        split_line(s).unwrap()
    }

    #[test]
    fn names_missing_variables() {
        assert_eq!(
            missing_variables(r#"bind "${PGLB_LEXER_UNSET_A}:${PGLB_LEXER_UNSET_B}" '$NOT_EXPANDED'"#),
            ["PGLB_LEXER_UNSET_A", "PGLB_LEXER_UNSET_B"]
        );
    }

    #[test]
    fn splits_on_blanks_and_drops_comments() {
        assert_eq!(words("  server a 1.2.3.4:5 check # a comment"), ["server", "a", "1.2.3.4:5", "check"]);
        assert_eq!(words("\tmode\ttcp"), ["mode", "tcp"]);
        assert!(words("   # only a comment").is_empty());
    }

    #[test]
    fn defaults_apply_when_unset_only() {
        let overlay: Overlay = [("EMPTY_T".to_string(), Some(String::new())), ("SET_T".to_string(), Some("2s".to_string()))].into();
        let w = split_line_noting(r#"timeout "${UNSET_PGLB_T-5s}" "${EMPTY_T-7s}" "${SET_T-9s}""#, &overlay, &mut Vec::new()).unwrap();
        assert_eq!(w, ["timeout", "5s", "", "2s"]);
    }

    #[test]
    fn addresses_expand_without_quotes() {
        let text =
            "global\n    setenv H 127.0.0.1\n    setenv P 5432\nbackend b\n    server s ${H}:$P check\n    server t ${H}:${P-1}\n    balance ${H}\n";
        let lines = tokenize(Path::new("t.cfg"), text).unwrap();
        assert_eq!(lines[4].words, ["server", "s", "127.0.0.1:5432", "check"]);
        assert_eq!(lines[5].words[2], "127.0.0.1:5432-1}", "no default syntax in addresses, as in HAProxy");
        assert_eq!(lines[6].words, ["balance", "${H}"], "only addresses");
    }

    #[test]
    fn conditional_blocks() {
        let text =
            "global\n.if feature(THREAD)\n    a\n.elif 1\n    b\n.else\n    c\n.endif\n.if 0\n  .if 1\n    d\n  .endif\n.elif !0\n    e\n.endif\n";
        let kept: Vec<String> = tokenize(Path::new("t.cfg"), text).unwrap().into_iter().map(|l| l.words.join(" ")).collect();
        assert_eq!(kept, ["global", "a", "e"]);
        for (bad, why) in
            [(".endif\n", "without"), (".if 1\n", "not closed"), (".if foo(1)\n.endif\n", "foo"), (".if 1\n.else\n.else\n.endif\n", "second")]
        {
            let e = tokenize(Path::new("t.cfg"), bad).unwrap_err().to_string();
            assert!(e.contains(why), "{bad:?}: {e}");
        }
    }

    #[test]
    fn quotes_and_escapes() {
        assert_eq!(words(r#"stats auth "a b":'c d'"#), ["stats", "auth", "a b:c d"]);
        assert_eq!(words(r"tcp-check send hello\ world\#x"), ["tcp-check", "send", "hello world#x"]);
        assert_eq!(words(r#"x """#), ["x", ""]);
        assert_eq!(words(r"x \n"), ["x", "\n"]);
    }

    #[test]
    fn expands_environment_in_double_quotes_only() {
        // PATH is set wherever tests run; nothing here sets a variable.
        let path = std::env::var("PATH").expect("PATH is set");
        assert_eq!(words(r#"a "${PATH}-$PATH" '$PATH'"#), ["a".to_string(), format!("{path}-{path}"), "$PATH".to_string()]);
    }

    #[test]
    fn setenv_applies_to_the_lines_after_it_and_leaves_the_environment_alone() {
        let text = "global\n    setenv PGLB_LEXER_SET a\n    presetenv PGLB_LEXER_SET b\n    presetenv PGLB_LEXER_PRE c\nlisten x\n    bind \"${PGLB_LEXER_SET}${PGLB_LEXER_PRE}\"\n    setenv PGLB_LEXER_OTHER z\n    bind \"${PGLB_LEXER_OTHER}\"\n";
        let lines = tokenize(Path::new("t.cfg"), text).unwrap();
        assert_eq!(lines[5].words, ["bind", "ac"], "setenv applies to later lines; presetenv only when unset");
        assert_eq!(lines[7].words, ["bind", ""], "only global's setenv counts");
        assert!(std::env::var_os("PGLB_LEXER_SET").is_none(), "the process environment is untouched");
    }

    #[test]
    fn unterminated_quote_is_an_error() {
        assert!(split_line("a \"b").unwrap_err().message().contains("double quote"));
        assert!(split_line("a 'b").unwrap_err().message().contains("single quote"));
    }
}
