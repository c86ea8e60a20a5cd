//! The crate's one error type, and the small helper that turns a byte span into the
//! `file:line:column` every manifest error starts with.
//!
//! A user fixing a manifest needs the spot, not just the reason, so every error about content
//! carries its position; only failing to read the file at all has none.

use std::io;
use std::ops::Range;
use std::path::{Path, PathBuf};

/// Why a manifest could not be read, parsed or resolved.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The manifest file could not be read (missing, unreadable, not UTF-8).
    #[error("cannot read manifest `{}`", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    /// A TOML manifest or job is malformed or means something impossible.
    #[error("{}:{line}:{column}: {message}", file.display())]
    Toml {
        file: PathBuf,
        /// 1-based line.
        line: usize,
        /// 1-based column, in characters.
        column: usize,
        message: String,
    },
    /// A job file could not be read (missing, unreadable, not UTF-8).
    #[error("cannot read job `{}`", path.display())]
    ReadJob {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    /// A JSON job (or ZeroCloud system map) is malformed or means something impossible.
    #[error("{}:{line}:{column}: {message}", file.display())]
    Json {
        file: PathBuf,
        /// 1-based line.
        line: usize,
        /// 1-based column, in characters.
        column: usize,
        message: String,
    },
    /// A legacy ZeroVM manifest is malformed or uses something zvm does not support.
    #[error("{}:{line}: {message}", file.display())]
    Legacy {
        file: PathBuf,
        /// 1-based line.
        line: usize,
        message: String,
    },
}

impl Error {
    /// The same error, said of a JSON document: positions count the same way in both, but
    /// the variant tells the reader which syntax the file was read as.
    pub(crate) fn into_json(self) -> Error {
        match self {
            Error::Toml {
                file,
                line,
                column,
                message,
            } => Error::Json {
                file,
                line,
                column,
                message,
            },
            other => other,
        }
    }

    /// The same positioned error with `prefix` before its message (`group `map`: `).
    pub(crate) fn prefixed(self, prefix: &str) -> Error {
        match self {
            Error::Toml {
                file,
                line,
                column,
                message,
            } => Error::Toml {
                file,
                line,
                column,
                message: format!("{prefix}{message}"),
            },
            other => other,
        }
    }
}

/// A document's text and name, to place errors. Named for TOML, where it started; JSON jobs
/// use it too, since a byte offset becomes a line and column the same way in both.
#[derive(Clone, Copy)]
pub(crate) struct TomlText<'a> {
    pub file: &'a Path,
    pub text: &'a str,
}

impl TomlText<'_> {
    /// 1-based line and character column of byte offset `at`.
    pub fn position(&self, at: usize) -> (usize, usize) {
        let at = at.min(self.text.len());
        // A span may in theory end inside a multi-byte character; step back to a boundary.
        let at = (0..=at)
            .rev()
            .find(|i| self.text.is_char_boundary(*i))
            .unwrap_or(0);
        let before = &self.text[..at];
        let line_start = before.rfind('\n').map_or(0, |i| i + 1);
        let line = before.matches('\n').count() + 1;
        let column = before[line_start..].chars().count() + 1;
        (line, column)
    }

    /// 1-based line of byte offset `at`.
    pub fn line(&self, at: usize) -> usize {
        self.position(at).0
    }

    /// An error at the start of `span`.
    pub fn error(&self, span: Range<usize>, message: impl Into<String>) -> Error {
        let (line, column) = self.position(span.start);
        Error::Toml {
            file: self.file.to_path_buf(),
            line,
            column,
            message: message.into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positions() {
        let t = TomlText {
            file: Path::new("m.toml"),
            text: "a = 1\nbé = 2\n",
        };
        assert_eq!(t.position(0), (1, 1));
        assert_eq!(t.position(4), (1, 5));
        assert_eq!(t.position(6), (2, 1));
        // `é` is two bytes but one column.
        assert_eq!(t.position(9), (2, 3));
        assert_eq!(t.position(100), (3, 1));
        assert_eq!(t.error(6..7, "boom").to_string(), "m.toml:2:1: boom");
    }
}
