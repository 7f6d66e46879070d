//! Sans-IO codec for the PostgreSQL v3 wire protocol.
//!
//! Nothing here touches a socket: callers hand in byte buffers and get back
//! framed messages or encoded bytes. The proxy's `handshake`, `session` and
//! `relay` stages sit on top of this crate; `pool` uses it to log into servers.
//!
//! Layout: [`frame`] splits the byte stream into messages (with a length cap),
//! [`startup`] handles the untagged first packet, [`frontend`] and [`backend`]
//! decode and encode the message families each side sends, [`tag`] names the
//! one-byte message types and [`sqlstate`] the error codes pgpilot emits.
//! [`replication`] decodes a logical replication (pgoutput) stream.
//!
//! Protocol reference: <https://www.postgresql.org/docs/current/protocol-message-formats.html>

pub mod backend;
mod cstr;
mod error;
pub mod frame;
pub mod frontend;
pub mod replication;
pub mod sqlstate;
pub mod startup;
pub mod tag;

pub use error::{Error, Result};
pub use frame::{Frame, FrameHeader};

#[cfg(test)]
mod fuzz_tests {
    //! Property tests: no decoder panics on arbitrary bytes.
    use super::*;
    use bytes::BytesMut;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn decoders_never_panic(data in proptest::collection::vec(any::<u8>(), 0..512)) {
            let _ = frontend::Parse::decode(&data);
            let _ = frontend::Bind::decode(&data);
            let _ = frontend::Named::decode(&data);
            let _ = frontend::SaslInitialResponse::decode(&data);
            let _ = frontend::query_text(&data);
            let _ = backend::ErrorFields::decode(&data);
            let _ = backend::Authentication::decode(&data).map(|a| a.sasl_mechanisms());
            let _ = backend::parameter_status_fields(&data);
            let mut buf = BytesMut::from(&data[..]);
            while let Ok(Some(_)) = Frame::split(&mut buf, 4096) {}
            let mut buf = BytesMut::from(&data[..]);
            let _ = startup::Startup::split(&mut buf);
        }
    }
}
