use super::*;
use proptest::prelude::*;

fn encode(f: &SchemaFrame) -> Vec<u8> {
    let mut b = BytesMut::new();
    f.encode_body(&mut b);
    assert_eq!(b.len(), f.body_len(), "body_len of {f:?}");
    b.to_vec()
}

/// Whole frames (header included) for the frame-level tests in `frame_tests.rs`; the
/// header is written by hand, the body by `encode_body` (whose bytes `byte_vectors` pins).
pub(crate) fn vectors() -> Vec<(crate::protocol::Frame, Vec<u8>)> {
    every_frame()
        .into_iter()
        .enumerate()
        .map(|(i, f)| {
            let body = encode(&f);
            let mut b = ((5 + body.len()) as u32).to_be_bytes().to_vec();
            b.push(f.kind());
            b.extend_from_slice(&(i as u32 + 0x100).to_be_bytes());
            b.extend_from_slice(&body);
            (
                crate::protocol::Frame {
                    correlation_id: i as u32 + 0x100,
                    payload: crate::protocol::Payload::Schema(f),
                },
                b,
            )
        })
        .collect()
}

pub(crate) fn every_frame() -> Vec<SchemaFrame> {
    use SchemaFrame::*;
    let v =
        VersionBody { subject: "s".into(), version: 2, id: 7, schema_type: 2, schema: "syntax".into(), deleted: true };
    vec![
        Register { subject: "orders-value".into(), schema_type: 1, schema: "{}".into() },
        RegisterOk { id: 1, version: 3 },
        Lookup { subject: "s".into(), schema_type: 0, schema: "\"int\"".into(), deleted: true },
        LookupOk(v.clone()),
        GetById { id: 9 },
        ById { id: 9, schema_type: 0, schema: "\"string\"".into() },
        GetVersion { subject: "s".into(), version: -1, deleted: false },
        Version(v),
        ListVersions { subject: "s".into(), deleted: true },
        Versions { versions: vec![1, 2, 5] },
        ListSubjects { deleted: false },
        Subjects { subjects: vec!["a".into(), "bé".into()] },
        Check { subject: "s".into(), version: 0, schema_type: 1, schema: "{}".into() },
        CheckOk { compatible: false, messages: vec!["TYPE_CHANGED at #".into()] },
        Delete { subject: "s".into(), version: 0, permanent: true },
        Deleted { versions: vec![] },
        GetConfig { subject: "".into(), default_to_global: true },
        Config { level: 6 },
        SetConfig { subject: "s".into(), level: None },
        SetConfig { subject: "s".into(), level: Some(0) },
        ConfigSet { previous: Some(1) },
        ConfigSet { previous: None },
        SetTopicPolicy { topic: "orders".into(), policy: 2, validate_payload: true },
        TopicPolicySet { policy: 1, validate_payload: false },
        GetTopicPolicy { topic: "orders".into() },
        TopicPolicy { policy: 0, validate_payload: false },
    ]
}

#[test]
fn byte_vectors() {
    let f = SchemaFrame::Register { subject: "t".into(), schema_type: 1, schema: "{}".into() };
    assert_eq!(f.kind(), 0x20);
    assert_eq!(encode(&f), [0, 1, b't', 1, 0, 0, 0, 2, b'{', b'}']);
    let f = SchemaFrame::RegisterOk { id: 258, version: 1 };
    assert_eq!(f.kind(), 0xa0);
    assert_eq!(encode(&f), [0, 0, 1, 2, 0, 0, 0, 1]);
    let f = SchemaFrame::GetVersion { subject: "t".into(), version: -1, deleted: false };
    assert_eq!(encode(&f), [0, 1, b't', 0xff, 0xff, 0xff, 0xff, 0]);
    let f = SchemaFrame::CheckOk { compatible: true, messages: vec![] };
    assert_eq!(encode(&f), [1, 0, 0, 0, 0]);
    let f = SchemaFrame::SetConfig { subject: String::new(), level: None };
    assert_eq!(encode(&f), [0, 0, 0xff]);
    let f = SchemaFrame::SetTopicPolicy { topic: "t".into(), policy: 2, validate_payload: false };
    assert_eq!((f.kind(), encode(&f)), (0x2a, vec![0, 1, b't', 2, 0]));
}

#[test]
fn every_frame_round_trips_and_is_a_schema_kind() {
    for f in every_frame() {
        let bytes = encode(&f);
        assert_eq!(SchemaFrame::decode(f.kind(), &bytes).unwrap(), f);
        assert!(SchemaFrame::is_schema_kind(f.kind()));
        // Every strict prefix is an error, never a panic.
        for cut in 0..bytes.len() {
            assert!(SchemaFrame::decode(f.kind(), &bytes[..cut]).is_err(), "{f:?} cut at {cut}");
        }
        // Trailing bytes are an error.
        let mut long = bytes.clone();
        long.push(0);
        assert!(matches!(SchemaFrame::decode(f.kind(), &long), Err(DecodeError::TrailingBytes { .. })));
    }
    assert!(!SchemaFrame::is_schema_kind(0x05));
    assert!(!SchemaFrame::is_schema_kind(0x2c));
}

#[test]
fn bad_values_are_refused() {
    let bad = |kind: u8, body: &[u8], field: &str| {
        let e = SchemaFrame::decode(kind, body).unwrap_err();
        assert!(matches!(&e, DecodeError::InvalidValue { field: f, .. } if *f == field), "{e:?}");
    };
    bad(0x20, &[0, 1, b't', 3, 0, 0, 0, 0], "schema_type");
    bad(0x25, &[2], "deleted");
    bad(0x23, &[0, 1, b't', 0xff, 0xff, 0xff, 0xfe, 0], "version");
    bad(0xa8, &[7], "compatibility");
    bad(0x29, &[0, 0, 0x80], "compatibility");
    assert_eq!(SchemaFrame::decode(0x2c, &[]).unwrap_err(), DecodeError::UnknownFrameKind { kind: 0x2c });
    bad(0x2a, &[0, 1, b't', 3, 0], "policy");
    bad(0xab, &[1, 2], "validate_payload");
    // A count larger than the body cannot allocate ahead.
    assert!(matches!(SchemaFrame::decode(0xa4, &[0xff, 0xff, 0xff, 0xff]), Err(DecodeError::UnexpectedEof { .. })));
    assert!(matches!(SchemaFrame::decode(0xa5, &[0, 0, 0, 2, 0, 0]), Err(DecodeError::UnexpectedEof { .. })));
    // Invalid UTF-8 in a schema text.
    assert_eq!(
        SchemaFrame::decode(0x22 | 0x80, &[0, 0, 0, 1, 0, 0, 0, 0, 1, 0xff]).unwrap_err(),
        DecodeError::InvalidUtf8 { field: "schema" }
    );
}

proptest! {
    #[test]
    fn arbitrary_bodies_never_panic(kind in 0x20u8..0xb0, body in proptest::collection::vec(any::<u8>(), 0..64)) {
        if let Ok(f) = SchemaFrame::decode(kind, &body) {
            prop_assert_eq!(encode(&f), body);
        }
    }

    #[test]
    fn registers_round_trip(subject in ".{0,40}", schema in ".{0,200}", t in 0u8..3) {
        let f = SchemaFrame::Register { subject, schema_type: t, schema };
        prop_assert_eq!(SchemaFrame::decode(0x20, &encode(&f)).unwrap(), f);
    }
}
