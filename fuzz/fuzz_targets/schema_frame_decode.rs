//! Fuzzes the schema registry frame decoder: no input may panic, and whatever decodes
//! re-encodes to the same bytes.
#![no_main]

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use qwire::protocol::schema::SchemaFrame;

fuzz_target!(|data: &[u8]| {
    let Some((&kind, body)) = data.split_first() else { return };
    if let Ok(frame) = SchemaFrame::decode(kind, body) {
        let mut out = BytesMut::new();
        frame.encode_body(&mut out);
        assert_eq!(&out[..], body);
        assert_eq!(out.len(), frame.body_len());
    }
});
