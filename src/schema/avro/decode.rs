//! Avro's binary encoding decoded straight into JSON, without `apache-avro`'s decoder: that
//! one recurses once per nested value with large frames (a 15-deep datum overflowed a
//! 2 MiB thread's stack), so a recursive schema and a datum of repeated union branches
//! could abort the broker. Here every nested value costs one small frame, nesting is capped
//! at [`MAX_DECODE_DEPTH`] and the item count at [`MAX_EMPTY_ITEMS`] beyond the input size.
//!
//! The JSON form is `apache-avro`'s (`serde_json::Value::try_from(avro::Value)`): a union is
//! its branch's value, an enum its symbol, bytes, fixed, duration and decimals arrays of
//! byte values, logical numbers their number, a UUID its hyphenated string; floats that JSON
//! cannot hold (NaN, infinities) are an error.

use std::collections::HashMap;

use apache_avro::schema::{InnerDecimalSchema, Schema, UuidSchema};
use serde_json::{Map, Number, Value as Json};

/// How deeply values may nest in a decoded datum (records, arrays, maps, unions). Deeper
/// data — only a recursive schema allows it — is refused, as serde_json refuses JSON
/// nested deeper than 128.
pub const MAX_DECODE_DEPTH: usize = 128;

/// How many array or map items a datum may hold beyond one per byte of its encoding: items
/// of an empty type (null, an empty record) take no bytes, so a block count alone could ask
/// for billions.
pub const MAX_EMPTY_ITEMS: usize = 64 * 1024;

/// Decodes one datum of `schema` (named types in `names`, by full name) that must fill
/// `bytes` exactly.
pub fn decode(schema: &Schema, names: &HashMap<String, Schema>, bytes: &[u8]) -> Result<Json, String> {
    let mut d = Decoder { names, input: bytes, items_left: MAX_EMPTY_ITEMS + bytes.len() };
    let v = d.value(schema, 0)?;
    if !d.input.is_empty() {
        return Err(format!("{} bytes left after the Avro datum", d.input.len()));
    }
    Ok(v)
}

struct Decoder<'a> {
    names: &'a HashMap<String, Schema>,
    input: &'a [u8],
    items_left: usize,
}

impl<'a> Decoder<'a> {
    /// A zig-zag varint.
    fn long(&mut self) -> Result<i64, String> {
        let mut n: u64 = 0;
        for i in 0..10 {
            let (&b, rest) = self.input.split_first().ok_or("the datum ends inside a number")?;
            self.input = rest;
            n |= u64::from(b & 0x7f) << (7 * i);
            if b & 0x80 == 0 {
                return Ok((n >> 1) as i64 ^ -((n & 1) as i64));
            }
        }
        Err("a number is longer than 10 bytes".into())
    }

    fn int(&mut self) -> Result<i64, String> {
        let n = self.long()?;
        i32::try_from(n).map(i64::from).map_err(|_| format!("{n} does not fit an int"))
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], String> {
        if n > self.input.len() {
            return Err(format!("the datum ends {} bytes short", n - self.input.len()));
        }
        let (head, rest) = self.input.split_at(n);
        self.input = rest;
        Ok(head)
    }

    fn bytes(&mut self) -> Result<&'a [u8], String> {
        let n = self.long()?;
        let n = usize::try_from(n).map_err(|_| format!("a negative length {n}"))?;
        self.take(n)
    }

    fn string(&mut self) -> Result<String, String> {
        let b = self.bytes()?;
        String::from_utf8(b.to_vec()).map_err(|e| format!("a string is not UTF-8: {e}"))
    }

    /// Array and map blocks: a count (negative: followed by the block's byte size), until 0.
    fn blocks(&mut self, mut item: impl FnMut(&mut Self) -> Result<(), String>) -> Result<(), String> {
        loop {
            let count = self.long()?;
            if count == 0 {
                return Ok(());
            }
            if count < 0 {
                self.long()?;
            }
            for _ in 0..count.unsigned_abs() {
                self.items_left = self.items_left.checked_sub(1).ok_or("the datum holds too many items")?;
                item(self)?;
            }
        }
    }

    fn float(v: f64) -> Result<Json, String> {
        Number::from_f64(v).map(Json::Number).ok_or_else(|| format!("{v} has no JSON form"))
    }

    fn value(&mut self, schema: &Schema, depth: usize) -> Result<Json, String> {
        if depth > MAX_DECODE_DEPTH {
            return Err(format!("values nest deeper than {MAX_DECODE_DEPTH} levels"));
        }
        let byte_array = |b: &[u8]| Json::Array(b.iter().map(|&x| Json::from(x)).collect());
        Ok(match schema {
            Schema::Null => Json::Null,
            Schema::Boolean => match self.take(1)?[0] {
                0 => Json::Bool(false),
                1 => Json::Bool(true),
                b => return Err(format!("{b} is not a boolean")),
            },
            Schema::Int | Schema::Date | Schema::TimeMillis => Json::from(self.int()?),
            Schema::Long
            | Schema::TimeMicros
            | Schema::TimestampMillis
            | Schema::TimestampMicros
            | Schema::TimestampNanos
            | Schema::LocalTimestampMillis
            | Schema::LocalTimestampMicros
            | Schema::LocalTimestampNanos => Json::from(self.long()?),
            Schema::Float => {
                let b = self.take(4)?;
                Self::float(f32::from_le_bytes(b.try_into().expect("4 bytes")).into())?
            }
            Schema::Double => Self::float(f64::from_le_bytes(self.take(8)?.try_into().expect("8 bytes")))?,
            Schema::String => Json::String(self.string()?),
            Schema::Bytes | Schema::BigDecimal => byte_array(self.bytes()?),
            Schema::Fixed(f) | Schema::Duration(f) => byte_array(self.take(f.size)?),
            Schema::Decimal(d) => match &d.inner {
                InnerDecimalSchema::Bytes => byte_array(self.bytes()?),
                InnerDecimalSchema::Fixed(f) => byte_array(self.take(f.size)?),
            },
            Schema::Uuid(UuidSchema::String) => Json::String(self.string()?),
            Schema::Uuid(UuidSchema::Bytes) => uuid(self.bytes()?)?,
            Schema::Uuid(UuidSchema::Fixed(f)) => uuid(self.take(f.size)?)?,
            Schema::Enum(e) => {
                let i = self.int()?;
                let symbol = usize::try_from(i).ok().and_then(|i| e.symbols.get(i));
                Json::String(symbol.ok_or_else(|| format!("enum {} has no symbol {i}", e.name))?.clone())
            }
            Schema::Union(u) => {
                let i = self.long()?;
                let branch = usize::try_from(i).ok().and_then(|i| u.variants().get(i));
                self.value(branch.ok_or_else(|| format!("union branch {i} does not exist"))?, depth + 1)?
            }
            Schema::Array(a) => {
                let mut items = Vec::new();
                self.blocks(|d| {
                    items.push(d.value(&a.items, depth + 1)?);
                    Ok(())
                })?;
                Json::Array(items)
            }
            Schema::Map(m) => {
                let mut entries = Map::new();
                self.blocks(|d| {
                    let key = d.string()?;
                    let v = d.value(&m.types, depth + 1)?;
                    entries.insert(key, v);
                    Ok(())
                })?;
                Json::Object(entries)
            }
            Schema::Record(r) => {
                let mut fields = Map::new();
                for f in &r.fields {
                    let v = self.value(&f.schema, depth + 1)?;
                    fields.insert(f.name.clone(), v);
                }
                Json::Object(fields)
            }
            Schema::Ref { name } => {
                let s = self.names.get(&name.fullname(None)).ok_or_else(|| format!("unknown type {name}"))?;
                self.value(s, depth)?
            }
        })
    }
}

/// 16 bytes as a hyphenated lower-case UUID.
fn uuid(b: &[u8]) -> Result<Json, String> {
    if b.len() != 16 {
        return Err(format!("a UUID needs 16 bytes, got {}", b.len()));
    }
    let hex: String = b.iter().map(|x| format!("{x:02x}")).collect();
    Ok(Json::String(format!("{}-{}-{}-{}-{}", &hex[..8], &hex[8..12], &hex[12..16], &hex[16..20], &hex[20..])))
}

#[cfg(test)]
mod tests {
    use super::super::AvroSchema;
    use serde_json::json;

    /// The same JSON as `apache-avro`'s decoder and its JSON conversion, type by type.
    #[test]
    fn decodes_every_type_as_apache_avro_does() {
        let schema = r#"{"type": "record", "name": "All", "fields": [
            {"name": "n", "type": "null"}, {"name": "b", "type": "boolean"},
            {"name": "i", "type": "int"}, {"name": "l", "type": "long"},
            {"name": "f", "type": "float"}, {"name": "d", "type": "double"},
            {"name": "s", "type": "string"}, {"name": "by", "type": "bytes"},
            {"name": "fx", "type": {"type": "fixed", "name": "F4", "size": 4}},
            {"name": "e", "type": {"type": "enum", "name": "E", "symbols": ["X", "Y", "Z"]}},
            {"name": "a", "type": {"type": "array", "items": "long"}},
            {"name": "m", "type": {"type": "map", "values": ["null", "string"]}},
            {"name": "u", "type": ["null", "double", "F4"]},
            {"name": "date", "type": {"type": "int", "logicalType": "date"}},
            {"name": "ts", "type": {"type": "long", "logicalType": "timestamp-micros"}},
            {"name": "id", "type": {"type": "string", "logicalType": "uuid"}}
        ]}"#;
        let s = AvroSchema::parse(schema).unwrap();
        let v = json!({"n": null, "b": true, "i": -5, "l": 1_i64 << 40, "f": 1.5, "d": -2.25, "s": "héllo",
            "by": [0, 255, 7], "fx": [1, 2, 3, 4], "e": "Z", "a": [1, -1, 300], "m": {"k": "v", "z": null},
            "u": 0.5, "date": 19000, "ts": 1_700_000_000_000_000_i64,
            "id": "67e55044-10b1-426f-9247-bb680e5fe0c8"});
        let bytes = s.encode_json(&v).unwrap();
        let ours = s.decode_to_json(&bytes).unwrap();
        let reader = apache_avro::reader::datum::GenericDatumReader::builder(s.schema()).build().unwrap();
        let theirs = serde_json::Value::try_from(reader.read_value(&mut &bytes[..]).unwrap()).unwrap();
        assert_eq!(ours, theirs);
        assert_eq!(ours["e"], "Z");
        assert_eq!(ours["u"], 0.5);
    }

    /// Review finding: a recursive schema let each payload byte add a level of recursion to
    /// the decoder; ~100 KB of `0x02` (union branch 1, again and again) overflowed the
    /// broker's worker stack and aborted the process (`apache-avro`'s decoder overflowed
    /// a 2 MiB stack at 15 levels). Now refused past 128 levels; 100 levels decode.
    #[test]
    fn a_deep_datum_of_a_recursive_schema_is_refused_not_a_stack_overflow() {
        let s = AvroSchema::parse(r#"{"type":"record","name":"N","fields":[{"name":"next","type":["null","N"]}]}"#)
            .unwrap();
        let e = s.decode_to_json(&vec![2u8; 100_000]).unwrap_err();
        assert!(e.contains("nest deeper than 128"), "{e}");
        let mut ok = vec![2u8; 60];
        ok.push(0);
        let mut v = &s.decode_to_json(&ok).unwrap();
        for _ in 0..60 {
            v = &v["next"];
        }
        assert_eq!(v, &json!({"next": null}));
    }

    /// An array of nulls takes no bytes per item: a block count of 2^62 was a loop that
    /// never ended. Counts beyond the input's size are refused.
    #[test]
    fn a_huge_block_count_of_empty_items_is_refused() {
        let s = AvroSchema::parse(r#"{"type":"array","items":"null"}"#).unwrap();
        // zigzag(2^61) = 2^62 as a varint, then the end block.
        let mut bytes = Vec::new();
        let mut n: u64 = 1 << 62;
        while n >= 0x80 {
            bytes.push((n as u8) | 0x80);
            n >>= 7;
        }
        bytes.push(n as u8);
        bytes.push(0);
        assert!(s.decode_to_json(&bytes).unwrap_err().contains("too many items"));
        assert_eq!(s.decode_to_json(&[6, 0]).unwrap(), json!([null, null, null]));
    }

    #[test]
    fn truncated_or_trailing_bytes_are_errors() {
        let s = AvroSchema::parse(r#"{"type":"record","name":"R","fields":[{"name":"s","type":"string"}]}"#).unwrap();
        assert!(s.decode_to_json(&[6, b'a']).unwrap_err().contains("short"));
        assert!(s.decode_to_json(&[2, b'a', 9]).unwrap_err().contains("1 bytes left"));
        assert!(s.decode_to_json(&[0xff; 11]).unwrap_err().contains("longer than 10"));
    }
}
