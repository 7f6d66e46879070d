//! The codec's one error type. "Need more bytes" is never an error: decoders
//! return `Ok(None)` for that.

/// Why a byte sequence is not a valid protocol message.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum Error {
    /// A length field exceeds the configured cap; the connection must close
    /// because the stream can no longer be framed.
    #[error("message of {len} bytes exceeds the limit of {max} bytes")]
    MessageTooLarge { len: usize, max: usize },
    /// A length field is smaller than the header it must include.
    #[error("invalid message length {len}")]
    InvalidLength { len: i64 },
    /// The body does not match the layout its tag promises.
    #[error("malformed {message} message: {reason}")]
    Malformed {
        message: &'static str,
        reason: &'static str,
    },
}

/// Result alias for this crate.
pub type Result<T> = std::result::Result<T, Error>;

impl Error {
    pub(crate) fn malformed(message: &'static str, reason: &'static str) -> Error {
        Error::Malformed { message, reason }
    }
}
