//! Schema evolution: whether a new schema may follow earlier ones under a compatibility
//! level.
//!
//! Everything reduces to one question, "can data written with schema W be read with
//! schema R?" ([`can_read`]): BACKWARD asks it with the old schema writing and the new one
//! reading, FORWARD the other way round, FULL both; the transitive levels ask it of every
//! earlier version, the others of the latest only.
//!
//! - Avro: `apache-avro`'s `SchemaCompatibility::can_read` (the Avro specification's
//!   schema-resolution rules).
//! - JSON Schema: [`json`], rules written here after Confluent's.
//! - Protobuf: [`protobuf`], rules written here after Confluent's.

pub mod json;
pub mod protobuf;

#[cfg(test)]
mod tests;

use super::parsed::ParsedSchema;
use super::Compatibility;

/// Problems that keep data written with `writer` from being read with `reader`; empty
/// when it can be.
pub fn can_read(writer: &ParsedSchema, reader: &ParsedSchema) -> Vec<String> {
    match (writer, reader) {
        (ParsedSchema::Avro(w), ParsedSchema::Avro(r)) => {
            match apache_avro::schema_compatibility::SchemaCompatibility::can_read(w.schema(), r.schema()) {
                Ok(_) => Vec::new(),
                Err(e) => {
                    let mut msg = e.to_string();
                    let mut src = std::error::Error::source(&e);
                    while let Some(s) = src {
                        msg.push_str(": ");
                        msg.push_str(&s.to_string());
                        src = s.source();
                    }
                    vec![format!("READER_INCOMPATIBLE: {msg}")]
                }
            }
        }
        (ParsedSchema::Json(w), ParsedSchema::Json(r)) => json::check(w.document(), r.document()),
        (ParsedSchema::Protobuf(w), ParsedSchema::Protobuf(r)) => protobuf::check(w, r),
        _ => vec![format!(
            "SCHEMA_TYPE_CHANGED: a {} schema cannot read {} data",
            reader.schema_type(),
            writer.schema_type()
        )],
    }
}

/// Checks `new` against the earlier versions of a subject under `level`. `previous` holds
/// `(version, schema)` of the versions that count (not deleted), oldest first. Returns one
/// message per problem, naming the version it concerns; empty when compatible.
pub fn check(level: Compatibility, new: &ParsedSchema, previous: &[(u32, &ParsedSchema)]) -> Vec<String> {
    if level == Compatibility::None || previous.is_empty() {
        return Vec::new();
    }
    let against = if level.is_transitive() { previous } else { &previous[previous.len() - 1..] };
    let mut out = Vec::new();
    for (version, old) in against {
        if level.checks_backward() {
            for m in can_read(old, new) {
                out.push(format!("{m} (new schema reading data written with version {version}; {level})"));
            }
        }
        if level.checks_forward() {
            for m in can_read(new, old) {
                out.push(format!("{m} (version {version} reading data written with the new schema; {level})"));
            }
        }
    }
    out
}
