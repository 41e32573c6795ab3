//! Avro: parsing with `apache-avro`, values given as JSON (Avro's JSON encoding, or the
//! plain JSON a serde type serialises to) converted into Avro datums with errors that name
//! the path and the rule, binary encoding (no container header, as Confluent's wire format
//! carries it) and decoding back to JSON.

use std::collections::HashMap;

use apache_avro::schema::{Name, Schema};
use apache_avro::types::Value as Avro;
use serde_json::Value as Json;

use super::error::{join_pointer, InvalidSchema, ValidationError};
use super::json::canonical;
use super::SchemaType;

pub mod decode;

/// A parsed Avro schema and its named types.
#[derive(Debug)]
pub struct AvroSchema {
    schema: Schema,
    names: HashMap<String, Schema>,
    canonical: String,
}

fn collect_names(schema: &Schema, out: &mut HashMap<String, Schema>) {
    let mut add = |name: &Name, s: &Schema| {
        out.insert(name.fullname(None), s.clone());
    };
    match schema {
        Schema::Record(r) => {
            add(&r.name, schema);
            for f in &r.fields {
                collect_names(&f.schema, out);
            }
        }
        Schema::Enum(e) => add(&e.name, schema),
        Schema::Fixed(f) | Schema::Duration(f) => add(&f.name, schema),
        Schema::Array(a) => collect_names(&a.items, out),
        Schema::Map(m) => collect_names(&m.types, out),
        Schema::Union(u) => u.variants().iter().for_each(|v| collect_names(v, out)),
        _ => {}
    }
}

impl AvroSchema {
    /// Parses a schema's JSON text.
    pub fn parse(text: &str) -> Result<AvroSchema, InvalidSchema> {
        let doc: Json =
            serde_json::from_str(text).map_err(|e| InvalidSchema::new(SchemaType::Avro, format!("not JSON: {e}")))?;
        let schema = Schema::parse(&doc).map_err(|e| InvalidSchema::new(SchemaType::Avro, e.to_string()))?;
        let mut names = HashMap::new();
        collect_names(&schema, &mut names);
        Ok(AvroSchema { schema, names, canonical: canonical(&doc) })
    }

    /// The parsed schema.
    pub fn schema(&self) -> &Schema {
        &self.schema
    }

    /// The schema's JSON with keys sorted and no whitespace (keeps defaults and docs,
    /// unlike Avro's Parsing Canonical Form).
    pub fn canonical(&self) -> &str {
        &self.canonical
    }

    /// Converts a JSON value to an Avro datum, checking it against the schema.
    pub fn from_json(&self, value: &Json) -> Result<Avro, ValidationError> {
        self.convert(&self.schema, value, "")
    }

    /// Validates a JSON value and encodes it as an Avro binary datum.
    pub fn encode_json(&self, value: &Json) -> Result<Vec<u8>, ValidationError> {
        let datum = self.from_json(value)?;
        apache_avro::writer::datum::GenericDatumWriter::builder(&self.schema)
            .build()
            .and_then(|w| w.write_value_to_vec(datum))
            .map_err(|e| ValidationError::new("", "avro", e.to_string()))
    }

    /// Decodes a binary datum written with this schema into JSON (see [`decode`] for the
    /// JSON form and the limits on depth and item counts).
    pub fn decode_to_json(&self, bytes: &[u8]) -> Result<Json, String> {
        decode::decode(&self.schema, &self.names, bytes)
    }

    fn convert(&self, schema: &Schema, v: &Json, path: &str) -> Result<Avro, ValidationError> {
        let mismatch =
            |expected: &str| ValidationError::new(path, "type", format!("expected {expected}, found {}", json_kind(v)));
        let int = |min: i64, max: i64| -> Result<i64, ValidationError> {
            let n = v.as_i64().ok_or_else(|| mismatch("an integer"))?;
            if n < min || n > max {
                return Err(ValidationError::new(path, "range", format!("{n} is outside [{min}, {max}]")));
            }
            Ok(n)
        };
        let logical = |physical: Avro| {
            physical.resolve(schema).map_err(|e| ValidationError::new(path, "logical_type", e.to_string()))
        };
        Ok(match schema {
            Schema::Null => match v {
                Json::Null => Avro::Null,
                _ => return Err(mismatch("null")),
            },
            Schema::Boolean => Avro::Boolean(v.as_bool().ok_or_else(|| mismatch("a boolean"))?),
            Schema::Int => Avro::Int(int(i32::MIN.into(), i32::MAX.into())? as i32),
            Schema::Long => Avro::Long(int(i64::MIN, i64::MAX)?),
            Schema::Float => Avro::Float(v.as_f64().ok_or_else(|| mismatch("a number"))? as f32),
            Schema::Double => Avro::Double(v.as_f64().ok_or_else(|| mismatch("a number"))?),
            Schema::String => Avro::String(v.as_str().ok_or_else(|| mismatch("a string"))?.to_owned()),
            Schema::Bytes => Avro::Bytes(bytes_of(v, path)?),
            Schema::Date | Schema::TimeMillis => logical(Avro::Int(int(i32::MIN.into(), i32::MAX.into())? as i32))?,
            Schema::TimeMicros
            | Schema::TimestampMillis
            | Schema::TimestampMicros
            | Schema::TimestampNanos
            | Schema::LocalTimestampMillis
            | Schema::LocalTimestampMicros
            | Schema::LocalTimestampNanos => logical(Avro::Long(int(i64::MIN, i64::MAX)?))?,
            Schema::Uuid(_) => logical(Avro::String(v.as_str().ok_or_else(|| mismatch("a UUID string"))?.to_owned()))?,
            Schema::Decimal(_) | Schema::BigDecimal => logical(Avro::Bytes(bytes_of(v, path)?))?,
            Schema::Fixed(f) | Schema::Duration(f) => {
                let b = bytes_of(v, path)?;
                if b.len() != f.size {
                    return Err(ValidationError::new(
                        path,
                        "size",
                        format!("fixed {} needs {} bytes, got {}", f.name.fullname(None), f.size, b.len()),
                    ));
                }
                if matches!(schema, Schema::Duration(_)) {
                    logical(Avro::Fixed(f.size, b))?
                } else {
                    Avro::Fixed(f.size, b)
                }
            }
            Schema::Enum(e) => {
                let s = v.as_str().ok_or_else(|| mismatch("an enum symbol (string)"))?;
                match e.symbols.iter().position(|x| x == s) {
                    Some(i) => Avro::Enum(i as u32, s.to_owned()),
                    None => {
                        return Err(ValidationError::new(path, "enum", format!("'{s}' is not one of {:?}", e.symbols)))
                    }
                }
            }
            Schema::Array(a) => {
                let items = v.as_array().ok_or_else(|| mismatch("an array"))?;
                let out = items
                    .iter()
                    .enumerate()
                    .map(|(i, item)| self.convert(&a.items, item, &join_pointer(path, &i.to_string())))
                    .collect::<Result<_, _>>()?;
                Avro::Array(out)
            }
            Schema::Map(m) => {
                let obj = v.as_object().ok_or_else(|| mismatch("an object (map)"))?;
                let mut out = HashMap::with_capacity(obj.len());
                for (k, item) in obj {
                    out.insert(k.clone(), self.convert(&m.types, item, &join_pointer(path, k))?);
                }
                Avro::Map(out)
            }
            Schema::Record(r) => {
                let obj = v.as_object().ok_or_else(|| mismatch(&format!("an object (record {})", r.name)))?;
                if let Some(extra) = obj.keys().find(|k| !r.lookup.contains_key(*k)) {
                    return Err(ValidationError::new(
                        join_pointer(path, extra),
                        "unknown_field",
                        format!("record {} has no field '{extra}'", r.name),
                    ));
                }
                let mut fields = Vec::with_capacity(r.fields.len());
                for f in &r.fields {
                    let fpath = join_pointer(path, &f.name);
                    let value = match (obj.get(&f.name), &f.default) {
                        (Some(x), _) => self.convert(&f.schema, x, &fpath)?,
                        (None, Some(default)) => self.convert_default(&f.schema, default, &fpath)?,
                        (None, None) => {
                            return Err(ValidationError::new(
                                fpath,
                                "required",
                                format!("field '{}' of record {} has no value and no default", f.name, r.name),
                            ))
                        }
                    };
                    fields.push((f.name.clone(), value));
                }
                Avro::Record(fields)
            }
            Schema::Union(u) => self.convert_union(u.variants(), v, path)?,
            Schema::Ref { name } => {
                let target = self.names.get(&name.fullname(None)).ok_or_else(|| {
                    ValidationError::new(path, "type", format!("unknown named type {}", name.fullname(None)))
                })?;
                self.convert(target, v, path)?
            }
        })
    }

    /// A field default: for a union, the default belongs to the first branch.
    fn convert_default(&self, schema: &Schema, default: &Json, path: &str) -> Result<Avro, ValidationError> {
        match schema {
            Schema::Union(u) if !u.variants().is_empty() => {
                Ok(Avro::Union(0, Box::new(self.convert(&u.variants()[0], default, path)?)))
            }
            _ => self.convert(schema, default, path),
        }
    }

    /// A union value: Avro's JSON encoding `{"type name": value}` picks the branch by name;
    /// plain JSON (`null`, or a value as serde writes an `Option`) takes the first branch
    /// that accepts it.
    fn convert_union(&self, variants: &[Schema], v: &Json, path: &str) -> Result<Avro, ValidationError> {
        if let Some(obj) = v.as_object().filter(|o| o.len() == 1) {
            let (k, inner) = obj.iter().next().expect("one entry");
            if let Some(i) = variants.iter().position(|s| branch_name(s).as_deref() == Some(k.as_str())) {
                return Ok(Avro::Union(i as u32, Box::new(self.convert(&variants[i], inner, &join_pointer(path, k))?)));
            }
        }
        let mut reasons = Vec::new();
        for (i, s) in variants.iter().enumerate() {
            match self.convert(s, v, path) {
                Ok(x) => return Ok(Avro::Union(i as u32, Box::new(x))),
                Err(e) => reasons.push(format!("{}: {}", branch_name(s).unwrap_or_default(), e.message)),
            }
        }
        Err(ValidationError::new(path, "union", format!("matches no branch of the union ({})", reasons.join("; "))))
    }
}

/// The name Avro's JSON encoding uses for a union branch.
fn branch_name(s: &Schema) -> Option<String> {
    Some(match s {
        Schema::Null => "null".into(),
        Schema::Boolean => "boolean".into(),
        Schema::Int | Schema::Date | Schema::TimeMillis => "int".into(),
        Schema::Long
        | Schema::TimeMicros
        | Schema::TimestampMillis
        | Schema::TimestampMicros
        | Schema::TimestampNanos
        | Schema::LocalTimestampMillis
        | Schema::LocalTimestampMicros
        | Schema::LocalTimestampNanos => "long".into(),
        Schema::Float => "float".into(),
        Schema::Double => "double".into(),
        Schema::Bytes | Schema::BigDecimal => "bytes".into(),
        Schema::String | Schema::Uuid(_) => "string".into(),
        Schema::Array(_) => "array".into(),
        Schema::Map(_) => "map".into(),
        Schema::Record(r) => r.name.fullname(None),
        Schema::Enum(e) => e.name.fullname(None),
        Schema::Fixed(f) | Schema::Duration(f) => f.name.fullname(None),
        Schema::Ref { name } => name.fullname(None),
        Schema::Union(_) | Schema::Decimal(_) => return None,
    })
}

/// Bytes from JSON: Avro's JSON encoding (a string of code points 0–255) or an array of
/// numbers (what serde writes for `Vec<u8>`).
fn bytes_of(v: &Json, path: &str) -> Result<Vec<u8>, ValidationError> {
    match v {
        Json::String(s) => s
            .chars()
            .map(|c| u8::try_from(u32::from(c)).ok())
            .collect::<Option<Vec<u8>>>()
            .ok_or_else(|| ValidationError::new(path, "type", "bytes as a string must only hold code points 0-255")),
        Json::Array(items) => items
            .iter()
            .map(|x| x.as_u64().and_then(|n| u8::try_from(n).ok()))
            .collect::<Option<Vec<u8>>>()
            .ok_or_else(|| ValidationError::new(path, "type", "bytes as an array must hold numbers 0-255")),
        _ => Err(ValidationError::new(path, "type", format!("expected bytes, found {}", json_kind(v)))),
    }
}

/// "a string", "an object", … for messages.
pub(crate) fn json_kind(v: &Json) -> &'static str {
    match v {
        Json::Null => "null",
        Json::Bool(_) => "a boolean",
        Json::Number(n) if n.is_i64() || n.is_u64() => "an integer",
        Json::Number(_) => "a number",
        Json::String(_) => "a string",
        Json::Array(_) => "an array",
        Json::Object(_) => "an object",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const USER: &str = r#"{"type": "record", "name": "User", "namespace": "com.example", "fields": [
        {"name": "id", "type": "long"},
        {"name": "name", "type": "string"},
        {"name": "email", "type": ["null", "string"], "default": null},
        {"name": "tags", "type": {"type": "array", "items": "string"}, "default": []},
        {"name": "kind", "type": {"type": "enum", "name": "Kind", "symbols": ["A", "B"]}, "default": "A"},
        {"name": "friend", "type": ["null", "User"], "default": null}
    ]}"#;

    #[test]
    fn converts_encodes_and_decodes() {
        let s = AvroSchema::parse(USER).unwrap();
        let v = json!({"id": 7, "name": "ann", "email": "a@x", "friend": {"id": 8, "name": "bob"}});
        let bytes = s.encode_json(&v).unwrap();
        // id 7 → zigzag 14; "ann" → len 6 + bytes; email branch 1 + "a@x"; tags: empty array 0;
        // kind A = 0; friend branch 1 → id 8 → 16, "bob", email branch 0, tags 0, kind 0, friend 0.
        assert_eq!(
            bytes,
            [14, 6, b'a', b'n', b'n', 2, 6, b'a', b'@', b'x', 0, 0, 2, 16, 6, b'b', b'o', b'b', 0, 0, 0, 0]
        );
        let back = s.decode_to_json(&bytes).unwrap();
        assert_eq!(back["name"], "ann");
        assert_eq!(back["friend"]["name"], "bob");
        // Avro's JSON encoding of a union picks the branch by name.
        let wrapped = json!({"id": 7, "name": "ann", "email": {"string": "a@x"}, "friend": {"com.example.User": {"id": 8, "name": "bob"}}});
        assert_eq!(s.encode_json(&wrapped).unwrap(), bytes);
    }

    #[test]
    fn errors_name_path_and_rule() {
        let s = AvroSchema::parse(USER).unwrap();
        let e = s.from_json(&json!({"name": "x"})).unwrap_err();
        assert_eq!((e.path.as_str(), e.rule.as_str()), ("/id", "required"));
        let e = s.from_json(&json!({"id": "x", "name": "x"})).unwrap_err();
        assert_eq!((e.path.as_str(), e.rule.as_str()), ("/id", "type"));
        let e = s.from_json(&json!({"id": 1, "name": "x", "kind": "C"})).unwrap_err();
        assert_eq!((e.path.as_str(), e.rule.as_str()), ("/kind", "enum"));
        let e = s.from_json(&json!({"id": 1, "name": "x", "tags": ["a", 2]})).unwrap_err();
        assert_eq!((e.path.as_str(), e.rule.as_str()), ("/tags/1", "type"));
        let e = s.from_json(&json!({"id": 1, "name": "x", "extra": 2})).unwrap_err();
        assert_eq!((e.path.as_str(), e.rule.as_str()), ("/extra", "unknown_field"));
        let e = s.from_json(&json!({"id": 1, "name": "x", "email": 5})).unwrap_err();
        assert_eq!((e.path.as_str(), e.rule.as_str()), ("/email", "union"));
        let int = AvroSchema::parse(r#""int""#).unwrap();
        assert_eq!(int.from_json(&json!(1u64 << 40)).unwrap_err().rule, "range");
    }

    #[test]
    fn logical_types_and_fixed() {
        let s = AvroSchema::parse(
            r#"{"type": "record", "name": "T", "fields": [
                {"name": "at", "type": {"type": "long", "logicalType": "timestamp-millis"}},
                {"name": "day", "type": {"type": "int", "logicalType": "date"}},
                {"name": "h", "type": {"type": "fixed", "name": "H", "size": 2}}]}"#,
        )
        .unwrap();
        let bytes = s.encode_json(&json!({"at": 1, "day": 2, "h": [1, 2]})).unwrap();
        assert_eq!(bytes, [2, 4, 1, 2]);
        assert_eq!(s.from_json(&json!({"at": 1, "day": 2, "h": [1]})).unwrap_err().rule, "size");
    }

    #[test]
    fn invalid_schemas_are_refused() {
        for bad in [
            "{",
            r#"{"type": "record", "name": "R"}"#,
            r#""strnig""#,
            r#"{"type": "enum", "name": "E", "symbols": ["a", "a"]}"#,
        ] {
            assert!(AvroSchema::parse(bad).is_err(), "{bad}");
        }
    }
}
