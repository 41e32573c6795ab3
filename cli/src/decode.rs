//! `qwire consume`'s view of a record's schema: the id it carries (the `qwire.schema_id`
//! header, or Confluent's wire format), and with `--decode` its value as JSON (Avro and
//! Protobuf decoded with the schema fetched from the registry, once per id).

use std::collections::HashMap;
use std::sync::Arc;

use qwire::client::Client;
use qwire::protocol::StoredRecord;
use qwire::schema::policy::record_schema_id;
use qwire::schema::wire::get_message_index;
use qwire::schema::ParsedSchema;

/// What `consume` shows of a record's schema.
#[derive(Debug, Default)]
pub(crate) struct SchemaView {
    /// The schema id, when the record carries one.
    pub(crate) id: Option<u32>,
    /// With `--decode`: the value as JSON, or why it could not be decoded.
    pub(crate) decoded: Option<Result<serde_json::Value, String>>,
}

/// Schemas fetched so far, by id (`None`: the registry does not know it).
#[derive(Default)]
pub(crate) struct Decoder {
    schemas: HashMap<u32, Option<Arc<ParsedSchema>>>,
}

impl Decoder {
    /// The schema id of `r` and, with `decode`, its value decoded.
    pub(crate) async fn view(&mut self, client: &mut Client, r: &StoredRecord, decode: bool) -> SchemaView {
        let Some(found) = record_schema_id(&r.headers, r.value.as_deref()) else { return SchemaView::default() };
        let mut view = SchemaView { id: Some(found.id), decoded: None };
        if !decode {
            return view;
        }
        if let std::collections::hash_map::Entry::Vacant(slot) = self.schemas.entry(found.id) {
            let parsed = match client.schema_by_id(found.id).await {
                Ok((t, text)) => ParsedSchema::parse(t, &text).ok().map(Arc::new),
                Err(_) => None,
            };
            slot.insert(parsed);
        }
        let Some(parsed) = self.schemas[&found.id].clone() else {
            view.decoded = Some(Err(format!("schema {} is not in the registry (or not readable)", found.id)));
            return view;
        };
        let (index, payload) = match (&*parsed, found.confluent) {
            (ParsedSchema::Protobuf(_), true) => match get_message_index(found.payload) {
                Ok((index, used)) => (index, &found.payload[used..]),
                Err(e) => {
                    view.decoded = Some(Err(e.to_string()));
                    return view;
                }
            },
            _ => (Vec::new(), found.payload),
        };
        view.decoded = Some(parsed.decode_to_json(payload, &index));
        view
    }
}
