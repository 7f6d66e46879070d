//! The crate's one error type: I/O on the config file, TOML syntax and
//! unknown keys, and the list of fields that failed validation.
//!
//! Messages never echo a password: URL problems say what is wrong, not what
//! the URL was.

use std::fmt;
use std::path::PathBuf;

/// Why a configuration could not be turned into [`crate::Settings`].
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The config file could not be read (missing, unreadable, not UTF-8).
    #[error("cannot read config file {}", path.display())]
    Io {
        /// The file that was being read.
        path: PathBuf,
        /// What the operating system reported.
        #[source]
        source: std::io::Error,
    },
    /// The text is not valid TOML, a key is unknown, or a value has the wrong
    /// TOML type. Holds toml's own message, which names the key and the line.
    #[error("{0}")]
    Parse(String),
    /// The TOML parsed but one or more values are invalid. Every bad field is
    /// listed, not just the first; `Display` prints one `path: message` line
    /// per field.
    #[error("{}", FieldErrors(.0))]
    Invalid(Vec<FieldError>),
    /// A string given to [`crate::parse_postgres_url`] is not a usable
    /// `postgres://` URL. The URL itself is not repeated (it may hold a
    /// password).
    #[error("invalid PostgreSQL URL: {reason}")]
    Url {
        /// What is wrong with the URL.
        reason: String,
    },
}

/// Result alias for this crate.
pub type Result<T> = std::result::Result<T, Error>;

/// One invalid value, named by its path in the TOML document.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldError {
    /// Dotted path with list indexes, e.g. `pool.max_size`,
    /// `users[1].password`, `upstream.replicas[0]`.
    pub path: String,
    /// What is wrong and, where it helps, what to write instead.
    pub message: String,
}

impl FieldError {
    /// Builds a field error from anything string-like.
    pub fn new(path: impl Into<String>, message: impl Into<String>) -> FieldError {
        FieldError {
            path: path.into(),
            message: message.into(),
        }
    }
}

impl fmt::Display for FieldError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.path, self.message)
    }
}

/// Formats a list of field errors one per line, without a trailing newline.
struct FieldErrors<'a>(&'a [FieldError]);

impl fmt::Display for FieldErrors<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, error) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("\n")?;
            }
            write!(f, "{error}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn invalid_prints_one_line_per_field() {
        let error = Error::Invalid(vec![
            FieldError::new("pool.max_size", "must be at least 1"),
            FieldError::new("users[1].password", "is required"),
        ]);
        assert_eq!(
            error.to_string(),
            "pool.max_size: must be at least 1\nusers[1].password: is required"
        );
    }

    #[test]
    fn io_error_keeps_its_source() {
        let error = Error::Io {
            path: PathBuf::from("/nope.toml"),
            source: std::io::Error::new(std::io::ErrorKind::NotFound, "gone"),
        };
        assert_eq!(error.to_string(), "cannot read config file /nope.toml");
        let source = std::error::Error::source(&error).map(|s| s.to_string());
        assert_eq!(source.as_deref(), Some("gone"));
    }
}
