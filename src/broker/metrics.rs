//! Broker counters: what was accepted, refused, appended and why things failed.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

pub use super::telemetry::Detail;

macro_rules! counters {
    ($($(#[$doc:meta])* $name:ident),* $(,)?) => {
        /// Live counters, updated with relaxed atomics, and the labelled counters and
        /// latency histograms of [`Detail`].
        #[derive(Debug, Default)]
        pub struct BrokerMetrics {
            $($(#[$doc])* pub $name: AtomicU64,)*
            /// Produce requests by acks level and error code, latency histograms.
            pub detail: Detail,
        }

        /// A point-in-time copy of [`BrokerMetrics`].
        #[derive(Debug, Default, Clone, Copy, PartialEq, Eq, serde::Serialize)]
        pub struct MetricsSnapshot { $($(#[$doc])* pub $name: u64,)* }

        impl BrokerMetrics {
            /// Copies every counter.
            pub fn snapshot(&self) -> MetricsSnapshot {
                MetricsSnapshot { $($name: self.$name.load(Relaxed),)* }
            }
        }
    };
}

counters! {
    /// Connections whose TLS handshake completed.
    connections_accepted,
    /// Connections refused because of the connection limit.
    connections_refused,
    /// Handshakes that failed (certificate refused, wrong ALPN).
    handshake_failures,
    /// Handshakes dropped because they did not complete within `handshake_timeout_ms`.
    handshake_timeouts,
    /// Connections refused because `max_handshakes` handshakes were in progress.
    handshakes_refused,
    /// QUIC Retry packets sent (address validation under load).
    handshakes_retried,
    /// Connections currently open.
    connections_open,
    /// Streams opened by clients.
    streams_opened,
    /// Frames that could not be decoded (garbage, bad lengths, unknown kinds).
    bad_frames,
    /// Produce requests received.
    produce_requests,
    /// Produce requests answered with an error.
    produce_errors,
    /// Batches appended to a log.
    batches_appended,
    /// Records appended to a log.
    records_appended,
    /// Batch bytes appended to a log.
    bytes_appended,
    /// Retried batches answered from the dedup state.
    duplicates,
    /// Batches refused for a bad CRC or structure.
    corrupt_batches,
    /// Requests refused by the ACL.
    authorization_failures,
    /// Fetch requests served.
    fetch_requests,
    /// Group-commit rounds that fsync'd (each covers every batch appended before it).
    fsyncs,
    /// Group-commit rounds whose fsync failed (the partition then refuses writes until
    /// it has cut its log back to the durable end).
    fsync_failures,
    /// Offsets cut by in-place recovery after a failure (never acknowledged as durable,
    /// never served to a consumer).
    offsets_cut,
    /// Segment rolls (their fsync is made by the next group-commit round).
    segment_rolls,
    /// Idempotent producers whose dedup state was forgotten after
    /// `producer_id_expiration_ms` without an append.
    producers_expired,
    /// Gauge: bytes of responses charged to the response budgets and not yet handed to
    /// QUIC, over all connections.
    response_bytes_queued,
    /// The highest value `response_bytes_queued` has reached.
    response_bytes_queued_peak,
    /// Responses that had to wait for room in a response budget.
    response_budget_waits,
    /// Streams reset because their client took no response bytes for
    /// `response_stall_timeout_secs`.
    streams_stalled,
    /// Gauge: bytes of large request frames (over 64 KiB) the broker holds, over all
    /// connections: reserved from a connection's `max_buffered_bytes_per_connection` when
    /// the frame's header arrives, released when its request is done (a produce after its
    /// append).
    request_bytes_held,
    /// The highest value `request_bytes_held` has reached.
    request_bytes_held_peak,
    /// Gauge: requests read and not yet answered (acks=all answers waiting for their
    /// group commit included).
    requests_in_flight,
    /// Gauge: streams being served.
    streams_open,
    /// Gauge: bytes reserved for large frames being received, over all connections.
    frame_bytes_reserved,
    /// Batch bytes served by fetches.
    fetch_bytes,
    /// Certificate-less connections that authenticated with SASL (first time).
    sasl_authentications,
    /// Successful re-authentications of SASL sessions.
    sasl_reauthentications,
    /// Failed SASL credential checks (`AUTHENTICATION_FAILED`): wrong password, unknown
    /// user, bad proof, bad or expired token, a refused re-authentication.
    sasl_failures,
    /// SASL attempts refused unchecked because their source address failed too often.
    sasl_throttled,
    /// Requests refused `AUTHENTICATION_REQUIRED` (sent before authenticating).
    sasl_unauthenticated_requests,
    /// Certificate-less connections closed for not authenticating in time.
    sasl_deadline_closes,
    /// Certificate-less connections closed at once because `max_unauthenticated` (or
    /// `max_unauthenticated_per_source`) connections had not authenticated yet.
    sasl_unauthenticated_refused,
    /// Connections closed because their SASL session expired without re-authentication.
    sasl_sessions_expired,
    /// Records stored on a `warn` topic although they carry no schema id registered under
    /// the topic's subject (or, with payload validation, do not match their schema).
    schema_policy_warnings,
    /// Batches refused by an `enforce` topic's schema policy.
    schema_policy_refusals,
    /// Schema registry requests served (frames; the REST API is counted by the admin
    /// listener).
    schema_requests,
}

/// Adds `n` to a counter.
pub(crate) fn add(c: &AtomicU64, n: u64) {
    c.fetch_add(n, Relaxed);
}

/// Adds one to a counter.
pub(crate) fn inc(c: &AtomicU64) {
    c.fetch_add(1, Relaxed);
}

/// Subtracts one from a gauge.
pub(crate) fn dec(c: &AtomicU64) {
    c.fetch_sub(1, Relaxed);
}
