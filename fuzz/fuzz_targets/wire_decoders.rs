//! Every wire decoder on arbitrary bytes: none may panic, and framing must
//! never consume more than it was given.
#![no_main]

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use pgpilot_wire::replication::{LogicalMessage, ReplicationMessage, StandbyStatusUpdate};
use pgpilot_wire::{backend, frontend, startup, Frame};

fuzz_target!(|data: &[u8]| {
    let _ = frontend::Parse::decode(data);
    let _ = frontend::Bind::decode(data);
    let _ = frontend::Named::decode(data);
    let _ = frontend::Execute::decode(data);
    let _ = ReplicationMessage::decode(data).map(|m| format!("{m:?}"));
    let _ = LogicalMessage::decode(data).map(|m| format!("{m:?}"));
    let _ = StandbyStatusUpdate::decode(data);
    let _ = frontend::SaslInitialResponse::decode(data);
    let _ = frontend::query_text(data);
    let _ = frontend::password(data);
    let _ = backend::ErrorFields::decode(data);
    let _ = backend::Authentication::decode(data).map(|a| (a.sasl_mechanisms(), a.md5_salt()));
    let _ = backend::parameter_status_fields(data);
    let _ = backend::backend_key_data_fields(data);
    let _ = backend::TransactionStatus::decode(data);
    let mut buf = BytesMut::from(data);
    let mut taken = 0;
    while let Ok(Some(f)) = Frame::split(&mut buf, 1 << 16) {
        taken += f.raw.len();
    }
    assert!(taken + buf.len() == data.len());
    let mut buf = BytesMut::from(data);
    while let Ok(Some(_)) = startup::Startup::split(&mut buf) {}
});
