//! The one error type of `pgpilot-auth`. Every way an authentication exchange
//! can fail maps to a variant here; the proxy decides which `ErrorResponse`
//! (SQLSTATE 28P01, 08P01, ...) the peer sees.

/// Why an authentication exchange failed.
///
/// Variants never carry secrets (passwords, keys, proofs). `Protocol` carries
/// a fixed description rather than the offending bytes, so logging an error
/// cannot echo attacker-chosen data.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// The peer proved knowledge of a different password: the SCRAM client
    /// proof did not match the stored key. Maps to SQLSTATE 28P01.
    #[error("password authentication failed")]
    InvalidPassword,
    /// A SCRAM message is malformed, arrives out of order, or violates the
    /// exchange (for example a nonce that does not match). Maps to 08P01.
    #[error("malformed SCRAM message: {0}")]
    Protocol(&'static str),
    /// The client asked for channel binding (`p=<cb-name>` in the GS2 header).
    /// pgpilot offers only `SCRAM-SHA-256` without `-PLUS`, because binding
    /// needs the TLS channel it does not terminate yet.
    #[error("SCRAM channel binding is not supported")]
    UnsupportedChannelBinding,
    /// A stored verifier is not in PostgreSQL's
    /// `SCRAM-SHA-256$<iterations>:<salt>$<StoredKey>:<ServerKey>` format.
    #[error(
        "invalid SCRAM secret: expected SCRAM-SHA-256$<iterations>:<salt>$<StoredKey>:<ServerKey>"
    )]
    InvalidSecret,
    /// The server's signature in server-final-message is wrong: the server
    /// does not hold this role's verifier (possibly an impostor).
    #[error("SCRAM server signature does not match")]
    InvalidServerSignature,
    /// The server ended the exchange with `e=<server-error-value>`
    /// (RFC 5802 §7); the value is the server's own reason.
    #[error("SCRAM server reported an error: {0}")]
    ServerError(String),
}

/// Result alias for this crate.
pub type Result<T> = std::result::Result<T, Error>;
