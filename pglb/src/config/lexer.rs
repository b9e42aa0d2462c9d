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
type Words = Vec<String>;

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

/// Splits `text` into lines of words. `file` is only used in error messages.
pub fn tokenize(file: &Path, text: &str) -> Result<Vec<Line>, ConfigError> {
    let mut lines = Vec::new();
    let mut overlay = Overlay::new();
    let mut in_global = false;
    for (index, raw) in text.lines().enumerate() {
        let number = index + 1;
        let words = split_line_noting(raw, &overlay, &mut Vec::new()).map_err(|msg| ConfigError::at(file, number, msg))?;
        let Some(keyword) = words.first() else { continue };
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
    Ok(lines)
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

fn split_line_noting(raw: &str, overlay: &Overlay, unset: &mut Vec<String>) -> Result<Words, Invalid> {
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

/// Expands `${NAME}` or `$NAME` (inside double quotes only, as HAProxy does).
/// An unset variable expands to nothing, as in HAProxy.
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
