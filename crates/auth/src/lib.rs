//! `pgpilot-auth`: the password authentication methods pgpilot speaks on both
//! sides of the proxy, as sans-IO state machines (peer bytes in, bytes to
//! send out). The proxy's handshake uses the server halves to authenticate
//! clients; its backend connector uses the client halves to log into
//! PostgreSQL. Framing of the surrounding protocol messages is `pgpilot-wire`'s
//! job.
//!
//! - [`scram`]: SCRAM-SHA-256 without channel binding ([`ScramServer`],
//!   [`ScramClient`], stored [`ScramSecret`]).
//! - [`md5`]: PostgreSQL's legacy `md5` method.

mod error;
pub mod md5;
pub mod scram;

pub use crate::md5::{md5_response, md5_stored, md5_verify, random_md5_salt};
pub use error::{Error, Result};
pub use scram::{
    ScramClient, ScramSecret, ScramServer, DEFAULT_ITERATIONS, MAX_ITERATIONS, SCRAM_SHA_256,
};
