//! The typed producer: `producer.typed::<T>()` for a serde type that names its topic, key
//! field, schema and format ([`SchemaRecord`], usually derived). The schema is registered
//! (or found) once, when the typed producer is made; every value is validated and encoded
//! before it is queued, so an invalid value fails at once — naming the path and the rule —
//! and nothing is sent.
//!
//! ```no_run
//! # async fn f(producer: qwire::producer::Producer) -> Result<(), Box<dyn std::error::Error>> {
//! use qwire::schema::SchemaRecord;
//!
//! #[derive(serde::Serialize, SchemaRecord)]
//! #[qwire(topic = "orders", key = "id", format = "avro", schema = r#"{"type": "record", "name": "Order",
//!     "fields": [{"name": "id", "type": "string"}, {"name": "qty", "type": "int"}]}"#)]
//! struct Order { id: String, qty: i32 }
//!
//! let orders = producer.typed::<Order>().await?;
//! orders.send(&Order { id: "o-1".into(), qty: 2 }).await?;        // waits for the ack
//! let ack = orders.send_nowait(&Order { id: "o-2".into(), qty: 1 }).await?; // queued
//! ack.await?;                                                       // this record's ack only
//! # Ok(()) }
//! ```

use std::marker::PhantomData;
use std::sync::Arc;

use super::delivery::Delivery;
use super::error::ProduceError;
use super::record::{ProducerRecord, RecordMetadata};
use super::schema::schema_error;
use super::{DeliveryFuture, Producer};
use crate::schema::typed::{EncodedValue, SchemaBinding};
use crate::schema::SchemaRecord;

/// Sends values of `T` to `T::TOPIC`, validated and tagged with their schema id.
pub struct TypedProducer<T: SchemaRecord> {
    producer: Producer,
    binding: Arc<SchemaBinding>,
    _values: PhantomData<fn(&T)>,
}

impl<T: SchemaRecord> Clone for TypedProducer<T> {
    fn clone(&self) -> Self {
        TypedProducer { producer: self.producer.clone(), binding: self.binding.clone(), _values: PhantomData }
    }
}

impl<T: SchemaRecord> std::fmt::Debug for TypedProducer<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TypedProducer").field("topic", &T::TOPIC).field("schema_id", &self.binding.id()).finish()
    }
}

impl Producer {
    /// A typed producer for `T`: resolves `T`'s schema once (registers its text under its
    /// subject, or finds the subject's latest version) and checks the format matches.
    pub async fn typed<T: SchemaRecord>(&self) -> Result<TypedProducer<T>, ProduceError> {
        let cache = self.inner.schemas.cache().await?;
        let binding = cache.for_record::<T>().await.map_err(|e| {
            self.inner.schemas.after(&e);
            schema_error(e)
        })?;
        Ok(TypedProducer { producer: self.clone(), binding, _values: PhantomData })
    }

    /// Fetches a subject's latest schema now (later records naming it are validated
    /// without waiting, also by `try_send`); returns its id.
    pub async fn resolve_schema(&self, subject: &str) -> Result<u32, ProduceError> {
        let cache = self.inner.schemas.cache().await?;
        let binding = cache.latest(subject, None).await.map_err(|e| {
            self.inner.schemas.after(&e);
            schema_error(e)
        })?;
        Ok(binding.id())
    }
}

impl<T: SchemaRecord> TypedProducer<T> {
    /// The schema id values are tagged with.
    pub fn schema_id(&self) -> u32 {
        self.binding.id()
    }

    /// The record for `value`: validated, encoded, keyed, tagged.
    pub fn record(&self, value: &T) -> Result<ProducerRecord, ProduceError> {
        let EncodedValue { value: bytes, header } = self.binding.encode(value).map_err(|e| schema_error(e.into()))?;
        let mut record = ProducerRecord::new(T::TOPIC, bytes);
        record.key = value.key();
        record.headers.extend(header);
        Ok(record)
    }

    /// Sends `value` and waits for its acknowledgement.
    pub async fn send(&self, value: &T) -> Result<RecordMetadata, ProduceError> {
        self.send_nowait(value).await?.await
    }

    /// Queues `value` (waiting up to `max_block` for metadata and buffer memory) and
    /// returns a future of this record's acknowledgement only — not a flush of the
    /// producer: other records keep their own linger and batching.
    pub async fn send_nowait(&self, value: &T) -> Result<DeliveryFuture, ProduceError> {
        let record = self.record(value)?;
        let (tx, rx) = tokio::sync::oneshot::channel();
        // Already validated and tagged: skip the record-level schema step.
        self.producer.enqueue_raw(record, Delivery::future(tx)).await.map_err(|(e, d)| {
            d.disarm();
            ProduceError::from(e)
        })?;
        Ok(DeliveryFuture { rx })
    }

    /// Blocking [`TypedProducer::send`] for code outside async contexts (panics inside one).
    pub fn send_blocking(&self, value: &T) -> Result<RecordMetadata, ProduceError> {
        self.producer.inner.runtime.block_on(self.send(value))
    }
}
