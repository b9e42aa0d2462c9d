//! Configuration errors and warnings: always `FILE:LINE: message`, where the
//! message says what to write instead.

use std::fmt;
use std::path::{Path, PathBuf};

/// A problem that stops the configuration from loading.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    #[error("{}:{line}: {message}", file.display())]
    At { file: PathBuf, line: usize, message: String },
    #[error("{}: {message}", file.display())]
    File { file: PathBuf, message: String },
    /// Several errors, reported together so one `pglb check` run shows them all.
    #[error("{}", join(.0))]
    Many(Vec<ConfigError>),
}

fn join(errors: &[ConfigError]) -> String {
    errors.iter().map(ToString::to_string).collect::<Vec<_>>().join("\n")
}

impl ConfigError {
    pub fn at(file: &Path, line: usize, message: impl Into<String>) -> Self {
        ConfigError::At { file: file.to_path_buf(), line, message: message.into() }
    }

    pub fn file(file: &Path, message: impl Into<String>) -> Self {
        ConfigError::File { file: file.to_path_buf(), message: message.into() }
    }

    /// The line this error points at, if any (the first one for `Many`).
    pub fn line(&self) -> Option<usize> {
        match self {
            ConfigError::At { line, .. } => Some(*line),
            ConfigError::File { .. } => None,
            ConfigError::Many(all) => all.first().and_then(ConfigError::line),
        }
    }

    /// Flattens into the individual errors.
    pub fn into_vec(self) -> Vec<ConfigError> {
        match self {
            ConfigError::Many(all) => all.into_iter().flat_map(ConfigError::into_vec).collect(),
            one => vec![one],
        }
    }
}

/// A value that cannot be used (a time, a size, an address, hex bytes, a
/// quoted word), found by a value parser before it knows the file and line:
/// the message says what was wrong and what to write instead. The caller
/// places it ([`ConfigError::at`]), or the command line prints it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct Invalid(pub String);

impl Invalid {
    pub fn new(message: impl Into<String>) -> Self {
        Invalid(message.into())
    }

    /// The message, for assertions and for callers that add context.
    pub fn message(&self) -> &str {
        &self.0
    }
}

impl From<String> for Invalid {
    fn from(message: String) -> Self {
        Invalid(message)
    }
}

impl From<&str> for Invalid {
    fn from(message: &str) -> Self {
        Invalid(message.to_string())
    }
}

impl From<Invalid> for String {
    fn from(e: Invalid) -> String {
        e.0
    }
}

/// Something accepted but worth telling the operator: a keyword with no
/// effect in pglb, or a setting that will surprise PostgreSQL users.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Warning {
    pub file: PathBuf,
    pub line: usize,
    pub message: String,
    /// pglb's own advice (a keyword without effect here, a setting that
    /// hurts PostgreSQL clients), which HAProxy would not give: `-dW`
    /// (zero-warning) does not count it, so configurations HAProxy accepts
    /// under `-dW` still start.
    pub advice: bool,
}

impl fmt::Display for Warning {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}: warning: {}", self.file.display(), self.line, self.message)
    }
}
