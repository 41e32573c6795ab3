//! SASL authentication frames (kinds `0x30`–`0x3f`, error codes 50–59): how a client
//! without a certificate authenticates on a broker whose client authentication is
//! `optional`, and how any SASL session re-authenticates before it expires.
//!
//! ```text
//! SaslStart      0x30  mechanism string, data u32 + bytes   (first client message)
//! SaslContinue   0x31  data u32 + bytes                     (next client message)
//! SaslStartOk    0xb0  SaslStep                             (answer to SaslStart)
//! SaslContinueOk 0xb1  SaslStep                             (answer to SaslContinue)
//!
//! SaslStep: complete u8 (0 or 1), data u32 + bytes, principal string,
//!           session_lifetime_ms u64
//! ```
//!
//! The mechanism messages inside `data` are those of the SASL mechanisms themselves (RFC
//! 4616 PLAIN, RFC 5802/7677 SCRAM, RFC 7628 OAUTHBEARER), byte for byte; `PROTOCOL.md`
//! §20 describes the exchange. They travel in ordinary frames ([`super::Frame`]) as
//! [`super::Payload::Sasl`]; failures are `Error` frames with the authentication codes 50–55
//! of [`super::ErrorCode`].

use bytes::{BufMut, Bytes, BytesMut};

use super::codec::{put_str16, slice_of, str16_len, Reader};
use super::error::DecodeError;
use super::frame::FrameKind;

/// Largest `data` field of any SASL frame: 64 KiB holds any SCRAM message and any
/// reasonable bearer token, and keeps what an unauthenticated client can make the broker
/// buffer small.
pub const MAX_SASL_DATA: usize = 64 * 1024;

/// An authentication frame, as carried by [`super::Payload::Sasl`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SaslPayload {
    /// `0x30`.
    Start(SaslStart),
    /// `0x31`.
    Continue(SaslContinue),
    /// `0xb0`, the answer to `SaslStart`.
    StartOk(SaslStep),
    /// `0xb1`, the answer to `SaslContinue`.
    ContinueOk(SaslStep),
}

impl SaslPayload {
    /// The frame kind.
    pub fn kind(&self) -> FrameKind {
        match self {
            SaslPayload::Start(_) => FrameKind::SaslStart,
            SaslPayload::Continue(_) => FrameKind::SaslContinue,
            SaslPayload::StartOk(_) => FrameKind::SaslStartOk,
            SaslPayload::ContinueOk(_) => FrameKind::SaslContinueOk,
        }
    }

    /// Exactly the bytes [`SaslPayload::encode_body`] writes.
    pub fn body_len(&self) -> usize {
        match self {
            SaslPayload::Start(m) => m.body_len(),
            SaslPayload::Continue(m) => m.body_len(),
            SaslPayload::StartOk(s) | SaslPayload::ContinueOk(s) => s.body_len(),
        }
    }

    /// Appends the body.
    pub fn encode_body(&self, buf: &mut BytesMut) {
        match self {
            SaslPayload::Start(m) => m.encode_body(buf),
            SaslPayload::Continue(m) => m.encode_body(buf),
            SaslPayload::StartOk(s) | SaslPayload::ContinueOk(s) => s.encode_body(buf),
        }
    }

    /// Decodes the body of an authentication `kind`.
    pub fn decode(kind: FrameKind, body: &Bytes) -> Result<SaslPayload, DecodeError> {
        Ok(match kind {
            FrameKind::SaslStart => SaslPayload::Start(SaslStart::decode_body(body)?),
            FrameKind::SaslContinue => SaslPayload::Continue(SaslContinue::decode_body(body)?),
            FrameKind::SaslStartOk => SaslPayload::StartOk(SaslStep::decode_body(body)?),
            FrameKind::SaslContinueOk => SaslPayload::ContinueOk(SaslStep::decode_body(body)?),
            other => return Err(DecodeError::UnknownFrameKind { kind: other as u8 }),
        })
    }
}

/// `SaslStart` (`0x30`): begins (or, on an authenticated connection, re-begins) an
/// exchange with the mechanism's first client message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SaslStart {
    /// Mechanism name: `PLAIN`, `SCRAM-SHA-256`, `SCRAM-SHA-512` or `OAUTHBEARER`.
    pub mechanism: String,
    /// The mechanism's initial client message (at most [`MAX_SASL_DATA`] bytes).
    pub data: Bytes,
}

/// `SaslContinue` (`0x31`): the next client message of the exchange in progress.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SaslContinue {
    /// The mechanism's next client message (at most [`MAX_SASL_DATA`] bytes).
    pub data: Bytes,
}

/// The body of `SaslStartOk` (`0xb0`) and `SaslContinueOk` (`0xb1`): the broker's next
/// message, and whether the connection is now authenticated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SaslStep {
    /// `false`: the exchange needs another `SaslContinue`; `true`: authenticated.
    pub complete: bool,
    /// The mechanism's server message (SCRAM server-first or server-final); empty when
    /// the mechanism has none (PLAIN, OAUTHBEARER).
    pub data: Bytes,
    /// The authenticated principal; empty while `complete` is false.
    pub principal: String,
    /// Milliseconds until the session expires and the broker closes the connection
    /// unless it re-authenticates; 0 means the session does not expire. Always 0 while
    /// `complete` is false.
    pub session_lifetime_ms: u64,
}

fn put_data(buf: &mut BytesMut, data: &[u8]) {
    buf.put_u32(data.len() as u32);
    buf.put_slice(data);
}

fn read_data(r: &mut Reader<'_>, owner: &Bytes) -> Result<Bytes, DecodeError> {
    let len = r.u32("data_length")?;
    if len as usize > MAX_SASL_DATA {
        return Err(DecodeError::InvalidValue { field: "data_length", value: i64::from(len) });
    }
    let data = r.take(len as usize, "data")?;
    Ok(slice_of(owner, data))
}

impl SaslStart {
    /// Bytes [`SaslStart::encode_body`] writes.
    pub fn body_len(&self) -> usize {
        str16_len(&self.mechanism) + 4 + self.data.len()
    }

    /// Appends the body (after the frame header).
    pub fn encode_body(&self, buf: &mut BytesMut) {
        put_str16(buf, &self.mechanism);
        put_data(buf, &self.data);
    }

    /// Decodes exactly one body.
    pub fn decode_body(body: &Bytes) -> Result<SaslStart, DecodeError> {
        let mut r = Reader::new(body);
        let mechanism = r.str16("mechanism")?;
        let data = read_data(&mut r, body)?;
        r.finish("frame body")?;
        Ok(SaslStart { mechanism, data })
    }
}

impl SaslContinue {
    /// Bytes [`SaslContinue::encode_body`] writes.
    pub fn body_len(&self) -> usize {
        4 + self.data.len()
    }

    /// Appends the body (after the frame header).
    pub fn encode_body(&self, buf: &mut BytesMut) {
        put_data(buf, &self.data);
    }

    /// Decodes exactly one body.
    pub fn decode_body(body: &Bytes) -> Result<SaslContinue, DecodeError> {
        let mut r = Reader::new(body);
        let data = read_data(&mut r, body)?;
        r.finish("frame body")?;
        Ok(SaslContinue { data })
    }
}

impl SaslStep {
    /// A step that needs another client message.
    pub fn challenge(data: impl Into<Bytes>) -> SaslStep {
        SaslStep { complete: false, data: data.into(), principal: String::new(), session_lifetime_ms: 0 }
    }

    /// The final step: authenticated as `principal` for `session_lifetime_ms` (0: no expiry).
    pub fn done(data: impl Into<Bytes>, principal: impl Into<String>, session_lifetime_ms: u64) -> SaslStep {
        SaslStep { complete: true, data: data.into(), principal: principal.into(), session_lifetime_ms }
    }

    /// Bytes [`SaslStep::encode_body`] writes.
    pub fn body_len(&self) -> usize {
        1 + 4 + self.data.len() + str16_len(&self.principal) + 8
    }

    /// Appends the body (after the frame header).
    pub fn encode_body(&self, buf: &mut BytesMut) {
        buf.put_u8(u8::from(self.complete));
        put_data(buf, &self.data);
        put_str16(buf, &self.principal);
        buf.put_u64(self.session_lifetime_ms);
    }

    /// Decodes exactly one body. A `complete` byte other than 0 or 1, or an incomplete
    /// step that carries a principal or a lifetime, is invalid.
    pub fn decode_body(body: &Bytes) -> Result<SaslStep, DecodeError> {
        let mut r = Reader::new(body);
        let complete = match r.u8("complete")? {
            0 => false,
            1 => true,
            v => return Err(DecodeError::InvalidValue { field: "complete", value: i64::from(v) }),
        };
        let data = read_data(&mut r, body)?;
        let principal = r.str16("principal")?;
        let session_lifetime_ms = r.u64("session_lifetime_ms")?;
        r.finish("frame body")?;
        if !complete && !principal.is_empty() {
            return Err(DecodeError::InvalidValue { field: "principal_length", value: principal.len() as i64 });
        }
        if !complete && session_lifetime_ms != 0 {
            return Err(DecodeError::InvalidValue {
                field: "session_lifetime_ms",
                value: i64::try_from(session_lifetime_ms).unwrap_or(i64::MAX),
            });
        }
        Ok(SaslStep { complete, data, principal, session_lifetime_ms })
    }
}

#[cfg(test)]
#[path = "sasl_tests.rs"]
pub(crate) mod tests;
