//! Tests for `sasl.rs`: byte vectors written by hand from `PROTOCOL.md` §19, round trips
//! and bad input.

use super::*;
use proptest::prelude::*;

/// Parses a hex string; whitespace and `|` are ignored.
fn hex(s: &str) -> Vec<u8> {
    let digits: Vec<u8> = s.bytes().filter(|b| b.is_ascii_hexdigit()).collect();
    assert_eq!(digits.len() % 2, 0, "odd number of hex digits in {s:?}");
    digits.chunks(2).map(|p| u8::from_str_radix(std::str::from_utf8(p).unwrap(), 16).unwrap()).collect()
}

/// A whole frame (length prefix, kind, correlation id, body) as PROTOCOL.md §4 lays it out.
fn framed(kind: u8, correlation_id: u32, body_len: usize, encode: impl FnOnce(&mut BytesMut)) -> Vec<u8> {
    let mut buf = BytesMut::new();
    buf.put_u32((5 + body_len) as u32);
    buf.put_u8(kind);
    buf.put_u32(correlation_id);
    encode(&mut buf);
    assert_eq!(buf.len(), 9 + body_len, "body_len disagrees with the bytes written");
    buf.to_vec()
}

/// One byte vector per authentication kind, as whole frames (for `frame_tests.rs`).
pub(crate) fn vectors() -> Vec<(crate::protocol::Frame, Vec<u8>)> {
    use crate::protocol::{Frame, Payload};
    let f = |correlation_id, p| Frame { correlation_id, payload: Payload::Sasl(p) };
    vec![
        (
            f(7, SaslPayload::Start(SaslStart { mechanism: "PLAIN".into(), data: Bytes::from_static(b"\0u\0p") })),
            hex("00000014 | 30 | 00000007 | 0005 504c41494e | 00000004 | 00750070"),
        ),
        (
            f(8, SaslPayload::Continue(SaslContinue { data: Bytes::from_static(b"abc") })),
            hex("0000000c | 31 | 00000008 | 00000003 | 616263"),
        ),
        (
            f(7, SaslPayload::StartOk(SaslStep::challenge(Bytes::from_static(b"s")))),
            hex("00000015 | b0 | 00000007 | 00 | 00000001 73 | 0000 | 0000000000000000"),
        ),
        (
            f(8, SaslPayload::ContinueOk(SaslStep::done(Bytes::new(), "alice", 3_600_000))),
            hex("00000019 | b1 | 00000008 | 01 | 00000000 | 0005 616c696365 | 000000000036ee80"),
        ),
    ]
}

fn body_of(frame: &[u8]) -> Bytes {
    Bytes::copy_from_slice(&frame[9..])
}

#[test]
fn sasl_start_vector() {
    let m = SaslStart { mechanism: "PLAIN".into(), data: Bytes::from_static(b"\0u\0p") };
    let want = hex("00000014 | 30 | 00000007 | 0005 504c41494e | 00000004 | 00750070");
    let got = framed(0x30, 7, m.body_len(), |b| m.encode_body(b));
    assert_eq!(got, want);
    assert_eq!(SaslStart::decode_body(&body_of(&want)).unwrap(), m);
}

#[test]
fn sasl_continue_vector() {
    let m = SaslContinue { data: Bytes::from_static(b"abc") };
    let want = hex("0000000c | 31 | 00000008 | 00000003 | 616263");
    assert_eq!(framed(0x31, 8, m.body_len(), |b| m.encode_body(b)), want);
    assert_eq!(SaslContinue::decode_body(&body_of(&want)).unwrap(), m);
}

#[test]
fn sasl_step_vectors() {
    let challenge = SaslStep::challenge(Bytes::from_static(b"s"));
    let want = hex("00000015 | b0 | 00000007 | 00 | 00000001 73 | 0000 | 0000000000000000");
    assert_eq!(framed(0xb0, 7, challenge.body_len(), |b| challenge.encode_body(b)), want);
    assert_eq!(SaslStep::decode_body(&body_of(&want)).unwrap(), challenge);

    let done = SaslStep::done(Bytes::new(), "alice", 3_600_000);
    let want = hex("00000019 | b1 | 00000008 | 01 | 00000000 | 0005 616c696365 | 000000000036ee80");
    assert_eq!(framed(0xb1, 8, done.body_len(), |b| done.encode_body(b)), want);
    assert_eq!(SaslStep::decode_body(&body_of(&want)).unwrap(), done);
}

/// The worked example of PROTOCOL.md §19.6: RFC 7677's SCRAM-SHA-256 exchange, framed.
#[test]
fn protocol_md_worked_example() {
    let first =
        SaslStart { mechanism: "SCRAM-SHA-256".into(), data: Bytes::from_static(b"n,,n=user,r=rOprNGfwEbeRWgbNEkqO") };
    let want = hex("00000038 30 00000002 000d 5343 52414d2d 5348412d 323536 00000020 \
         6e2c2c6e 3d757365 722c723d 724f7072 4e476677 45626552 5767624e 456b714f");
    assert_eq!(framed(0x30, 2, first.body_len(), |b| first.encode_body(b)), want);

    let server_first: &[u8] = b"r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096";
    let step = SaslStep::challenge(Bytes::from_static(server_first));
    let got = framed(0xb0, 2, step.body_len(), |b| step.encode_body(b));
    assert_eq!(&got[..14], &hex("0000006a b0 00000002 00 00000056")[..]);
    assert_eq!(&got[14..14 + 86], server_first);
    assert_eq!(&got[100..], &hex("0000 0000000000000000")[..]);

    let client_final: &[u8] =
        b"c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=";
    let cont = SaslContinue { data: Bytes::from_static(client_final) };
    let got = framed(0x31, 3, cont.body_len(), |b| cont.encode_body(b));
    assert_eq!(&got[..13], &hex("00000073 31 00000003 0000006a")[..]);
    assert_eq!(&got[13..], client_final);

    let server_final: &[u8] = b"v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4=";
    let done = SaslStep::done(Bytes::from_static(server_final), "user", 0);
    let got = framed(0xb1, 3, done.body_len(), |b| done.encode_body(b));
    assert_eq!(&got[..14], &hex("00000046 b1 00000003 01 0000002e")[..]);
    assert_eq!(&got[14..60], server_final);
    assert_eq!(&got[60..], &hex("0004 75736572 0000000000000000")[..]);
}

#[test]
fn truncated_bodies_are_rejected() {
    let m = SaslStart { mechanism: "SCRAM-SHA-512".into(), data: Bytes::from_static(b"n,,n=a,r=xyz") };
    let mut buf = BytesMut::new();
    m.encode_body(&mut buf);
    for cut in 0..buf.len() {
        let body = Bytes::copy_from_slice(&buf[..cut]);
        assert!(
            matches!(SaslStart::decode_body(&body), Err(DecodeError::UnexpectedEof { .. })),
            "cut at {cut} must be an unexpected end"
        );
    }
    let s = SaslStep::done(Bytes::from_static(b"v=x"), "p", 5);
    let mut buf = BytesMut::new();
    s.encode_body(&mut buf);
    for cut in 0..buf.len() {
        assert!(SaslStep::decode_body(&Bytes::copy_from_slice(&buf[..cut])).is_err(), "cut at {cut}");
    }
    assert!(SaslContinue::decode_body(&Bytes::from_static(&[0, 0, 0, 2, b'a'])).is_err());
}

#[test]
fn trailing_bytes_are_rejected() {
    let mut body = hex("0005 504c41494e | 00000000").to_vec();
    body.push(0);
    assert!(matches!(SaslStart::decode_body(&Bytes::from(body)), Err(DecodeError::TrailingBytes { extra: 1, .. })));
    assert!(matches!(
        SaslContinue::decode_body(&Bytes::from(hex("00000001 61 62"))),
        Err(DecodeError::TrailingBytes { extra: 1, .. })
    ));
    assert!(matches!(
        SaslStep::decode_body(&Bytes::from(hex("01 00000000 0000 0000000000000000 ff"))),
        Err(DecodeError::TrailingBytes { extra: 1, .. })
    ));
}

#[test]
fn oversized_data_is_rejected_before_reading_it() {
    // The length alone decides: the 64 KiB + 1 bytes need not be present.
    let body = Bytes::from(hex("00010001"));
    assert_eq!(
        SaslContinue::decode_body(&body),
        Err(DecodeError::InvalidValue { field: "data_length", value: 65_537 })
    );
    let exactly = SaslContinue { data: Bytes::from(vec![7u8; MAX_SASL_DATA]) };
    let mut buf = BytesMut::new();
    exactly.encode_body(&mut buf);
    assert_eq!(SaslContinue::decode_body(&buf.freeze()).unwrap(), exactly);
}

#[test]
fn invalid_step_values_are_rejected() {
    for v in [2u8, 0x80, 0xff] {
        let mut body = hex("00 00000000 0000 0000000000000000");
        body[0] = v;
        assert_eq!(
            SaslStep::decode_body(&Bytes::from(body)),
            Err(DecodeError::InvalidValue { field: "complete", value: i64::from(v) })
        );
    }
    // An incomplete step names no principal and no lifetime.
    assert!(SaslStep::decode_body(&Bytes::from(hex("00 00000000 0001 61 0000000000000000"))).is_err());
    assert!(SaslStep::decode_body(&Bytes::from(hex("00 00000000 0000 0000000000000001"))).is_err());
    // A principal that is not UTF-8.
    assert_eq!(
        SaslStep::decode_body(&Bytes::from(hex("01 00000000 0001 ff 0000000000000000"))),
        Err(DecodeError::InvalidUtf8 { field: "principal" })
    );
    assert_eq!(
        SaslStart::decode_body(&Bytes::from(hex("0002 c328 00000000"))),
        Err(DecodeError::InvalidUtf8 { field: "mechanism" })
    );
}

proptest! {
    #[test]
    fn start_round_trip(mechanism in "[A-Z0-9_-]{0,20}", data in proptest::collection::vec(any::<u8>(), 0..512)) {
        let m = SaslStart { mechanism, data: Bytes::from(data) };
        let mut buf = BytesMut::new();
        m.encode_body(&mut buf);
        prop_assert_eq!(buf.len(), m.body_len());
        prop_assert_eq!(SaslStart::decode_body(&buf.freeze()).unwrap(), m);
    }

    #[test]
    fn continue_round_trip(data in proptest::collection::vec(any::<u8>(), 0..512)) {
        let m = SaslContinue { data: Bytes::from(data) };
        let mut buf = BytesMut::new();
        m.encode_body(&mut buf);
        prop_assert_eq!(buf.len(), m.body_len());
        prop_assert_eq!(SaslContinue::decode_body(&buf.freeze()).unwrap(), m);
    }

    #[test]
    fn step_round_trip(
        complete in any::<bool>(),
        data in proptest::collection::vec(any::<u8>(), 0..256),
        principal in ".{0,32}",
        lifetime in any::<u64>(),
    ) {
        let s = if complete {
            SaslStep::done(Bytes::from(data), principal, lifetime)
        } else {
            SaslStep::challenge(Bytes::from(data))
        };
        let mut buf = BytesMut::new();
        s.encode_body(&mut buf);
        prop_assert_eq!(buf.len(), s.body_len());
        prop_assert_eq!(SaslStep::decode_body(&buf.freeze()).unwrap(), s);
    }

    /// Arbitrary bytes never panic a decoder.
    #[test]
    fn garbage_never_panics(body in proptest::collection::vec(any::<u8>(), 0..64)) {
        let body = Bytes::from(body);
        let _ = SaslStart::decode_body(&body);
        let _ = SaslContinue::decode_body(&body);
        let _ = SaslStep::decode_body(&body);
    }
}

/// Through `Frame`: the same bytes as the hand-framed vectors, and back.
#[test]
fn sasl_frames_travel_as_payload_sasl() {
    use crate::protocol::{Frame, Payload, MAX_FRAME_SIZE};
    let cases = [
        (7, SaslPayload::Start(SaslStart { mechanism: "PLAIN".into(), data: Bytes::from_static(b"\0u\0p") })),
        (8, SaslPayload::Continue(SaslContinue { data: Bytes::from_static(b"abc") })),
        (7, SaslPayload::StartOk(SaslStep::challenge(Bytes::from_static(b"s")))),
        (8, SaslPayload::ContinueOk(SaslStep::done(Bytes::new(), "alice", 3_600_000))),
    ];
    for (corr, p) in cases {
        let f = Frame { correlation_id: corr, payload: Payload::Sasl(p.clone()) };
        let mut buf = BytesMut::new();
        f.encode(&mut buf);
        assert_eq!(buf.len(), f.encoded_len());
        let by_hand = framed(p.kind() as u8, corr, p.body_len(), |b| p.encode_body(b));
        assert_eq!(&buf[..], &by_hand[..]);
        assert_eq!(Frame::decode(&mut buf, MAX_FRAME_SIZE).unwrap(), Some(f));
        assert!(p.kind().is_sasl() && !p.kind().is_cluster());
    }
    // The unassigned kinds of the range are unknown.
    for kind in [0x32u8, 0x3f, 0xb2, 0xbf] {
        let mut buf = BytesMut::from(&framed(kind, 1, 0, |_| {})[..]);
        let e = Frame::decode(&mut buf, MAX_FRAME_SIZE).unwrap_err();
        assert_eq!(e.error, DecodeError::UnknownFrameKind { kind });
    }
}
