//! The SCRAM server state machine fed arbitrary client messages: no panics,
//! and never a successful authentication.
#![no_main]

use libfuzzer_sys::fuzz_target;
use pgpilot_auth::{ScramSecret, ScramServer};

fuzz_target!(|data: &[u8]| {
    let secret = ScramSecret::from_password("pencil", b"saltsaltsaltsalt", 1);
    let mut server = ScramServer::with_nonce(secret, "servernonce".into());
    let mid = data.len() / 2;
    if server.handle_client_first(&data[..mid]).is_ok() {
        assert!(server.handle_client_final(&data[mid..]).is_err());
    }
});
