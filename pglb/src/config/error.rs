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

/// Something accepted but worth telling the operator: a keyword with no
/// effect in pglb, or a setting that will surprise PostgreSQL users.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Warning {
    pub file: PathBuf,
    pub line: usize,
    pub message: String,
}

impl fmt::Display for Warning {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}: warning: {}", self.file.display(), self.line, self.message)
    }
}
