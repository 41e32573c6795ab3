//! Protobuf: `.proto` text compiled at run time with `protox` (no `protoc`), messages
//! handled with `prost-reflect`; JSON values (proto3's JSON mapping) validated into
//! messages with errors naming path and rule; the Confluent message index of a message.

use prost::Message;
use prost_reflect::{DescriptorPool, DynamicMessage, FileDescriptor, MessageDescriptor};
use serde_json::Value as Json;

use super::error::{pointer_segment, InvalidSchema, ValidationError};
use super::SchemaType;

/// The name the schema text is compiled under (imports of other files are limited to
/// Google's well-known types, which `protox` bundles).
const FILE_NAME: &str = "schema.proto";

/// A compiled `.proto` file.
#[derive(Debug, Clone)]
pub struct ProtobufSchema {
    file: FileDescriptor,
    canonical: String,
}

struct SingleFile(String);

impl protox::file::FileResolver for SingleFile {
    fn open_file(&self, name: &str) -> Result<protox::file::File, protox::Error> {
        if name == FILE_NAME {
            protox::file::File::from_source(name, &self.0)
        } else {
            Err(protox::Error::file_not_found(name))
        }
    }
}

impl ProtobufSchema {
    /// Compiles `.proto` text. It must define at least one message; the first top-level
    /// message is the default (as for Confluent's serializers).
    pub fn parse(text: &str) -> Result<ProtobufSchema, InvalidSchema> {
        let mut resolver = protox::file::ChainFileResolver::new();
        resolver.add(SingleFile(text.to_owned()));
        resolver.add(protox::file::GoogleFileResolver::new());
        let mut compiler = protox::Compiler::with_file_resolver(resolver);
        compiler.include_imports(true).include_source_info(false);
        compiler.open_file(FILE_NAME).map_err(|e| InvalidSchema::new(SchemaType::Protobuf, e.to_string()))?;
        let pool: DescriptorPool = compiler.descriptor_pool();
        let file = pool
            .get_file_by_name(FILE_NAME)
            .ok_or_else(|| InvalidSchema::new(SchemaType::Protobuf, "compiled file missing"))?;
        if file.messages().len() == 0 {
            return Err(InvalidSchema::new(SchemaType::Protobuf, "the schema defines no message"));
        }
        // Without source positions, so layout and comments do not change it.
        let mut proto = file.file_descriptor_proto().clone();
        proto.source_code_info = None;
        let canonical = hex(&proto.encode_to_vec());
        Ok(ProtobufSchema { file, canonical })
    }

    /// The compiled file.
    pub fn file(&self) -> &FileDescriptor {
        &self.file
    }

    /// The encoded file descriptor in hex: the same for texts that differ only in layout
    /// or comments.
    pub fn canonical(&self) -> &str {
        &self.canonical
    }

    /// The default message: the first top-level one.
    pub fn root(&self) -> MessageDescriptor {
        self.file.messages().next().expect("checked at parse")
    }

    /// A message by name: its full name (`pkg.Outer.Inner`) or its name relative to the
    /// package (`Outer.Inner`).
    pub fn message(&self, name: &str) -> Option<MessageDescriptor> {
        let pool = self.file.parent_pool();
        pool.get_message_by_name(name).or_else(|| {
            let pkg = self.file.package_name();
            (!pkg.is_empty()).then(|| pool.get_message_by_name(&format!("{pkg}.{name}"))).flatten()
        })
    }

    /// Every message defined in this file, nested ones included, in definition order.
    pub fn messages(&self) -> Vec<MessageDescriptor> {
        fn walk(m: MessageDescriptor, out: &mut Vec<MessageDescriptor>) {
            out.push(m.clone());
            m.child_messages().for_each(|c| walk(c, out));
        }
        let mut out = Vec::new();
        self.file.messages().for_each(|m| walk(m, &mut out));
        out
    }

    /// Confluent's message index of `message`: its position among the file's top-level
    /// messages, then among each nested level's messages. `[0]` is the first top-level one.
    pub fn message_index(&self, message: &MessageDescriptor) -> Vec<i32> {
        let mut path = Vec::new();
        let mut cur = message.clone();
        loop {
            match cur.parent_message() {
                Some(parent) => {
                    path.push(parent.child_messages().position(|m| m == cur).unwrap_or(0) as i32);
                    cur = parent;
                }
                None => {
                    path.push(self.file.messages().position(|m| m == cur).unwrap_or(0) as i32);
                    break;
                }
            }
        }
        path.reverse();
        path
    }

    /// The message a Confluent message index names.
    pub fn message_at(&self, index: &[i32]) -> Option<MessageDescriptor> {
        let (first, rest) = index.split_first()?;
        let mut cur = self.file.messages().nth(usize::try_from(*first).ok()?)?;
        for i in rest {
            let next = cur.child_messages().nth(usize::try_from(*i).ok()?)?;
            cur = next;
        }
        Some(cur)
    }

    /// Builds a message of type `desc` from JSON (proto3 JSON mapping: field JSON names or
    /// proto names, enum names or numbers, 64-bit integers as numbers or strings). Unknown
    /// fields are refused.
    pub fn from_json(&self, desc: &MessageDescriptor, value: &Json) -> Result<DynamicMessage, ValidationError> {
        let mut track = serde_path_to_error::Track::new();
        let de = serde_path_to_error::Deserializer::new(value, &mut track);
        DynamicMessage::deserialize(desc.clone(), de).map_err(|e| {
            let path = pointer_of(&track.path());
            let msg = e.to_string();
            let rule = if msg.contains("unknown field") || msg.contains("unrecognized field") {
                "unknown_field"
            } else if msg.contains("invalid type") || msg.contains("invalid value") {
                "type"
            } else if msg.contains("out of range") || msg.contains("invalid length") {
                "range"
            } else {
                "protobuf"
            };
            ValidationError::new(path, rule, msg)
        })
    }

    /// Validates a JSON value as message `desc` and encodes it.
    pub fn encode_json(&self, desc: &MessageDescriptor, value: &Json) -> Result<Vec<u8>, ValidationError> {
        Ok(self.from_json(desc, value)?.encode_to_vec())
    }

    /// Decodes message bytes into JSON.
    pub fn decode_to_json(&self, desc: &MessageDescriptor, bytes: &[u8]) -> Result<Json, String> {
        let msg = DynamicMessage::decode(desc.clone(), bytes).map_err(|e| e.to_string())?;
        serde_json::to_value(&msg).map_err(|e| e.to_string())
    }
}

/// serde_path_to_error's path (`items[0].qty`) as a JSON pointer (`/items/0/qty`).
fn pointer_of(path: &serde_path_to_error::Path) -> String {
    use serde_path_to_error::Segment;
    let mut out = String::new();
    for seg in path.iter() {
        match seg {
            Segment::Seq { index } => out.push_str(&format!("/{index}")),
            Segment::Map { key } => out.push_str(&format!("/{}", pointer_segment(key))),
            Segment::Enum { variant } => out.push_str(&format!("/{}", pointer_segment(variant))),
            Segment::Unknown => {}
        }
    }
    out
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    pub(crate) const ORDER: &str = r#"
        syntax = "proto3";
        package shop;
        import "google/protobuf/timestamp.proto";
        message Order {
            int64 id = 1;
            repeated Line lines = 2;
            Status status = 3;
            google.protobuf.Timestamp at = 4;
            message Line { string sku = 1; int32 qty = 2; }
        }
        enum Status { NEW = 0; PAID = 1; }
        message Refund { int64 order_id = 1; message Reason { string text = 1; } }
    "#;

    #[test]
    fn message_indexes_follow_confluent() {
        let s = ProtobufSchema::parse(ORDER).unwrap();
        assert_eq!(s.root().full_name(), "shop.Order");
        let line = s.message("Order.Line").unwrap();
        assert_eq!(s.message_index(&s.root()), vec![0]);
        assert_eq!(s.message_index(&line), vec![0, 0]);
        let reason = s.message("shop.Refund.Reason").unwrap();
        assert_eq!(s.message_index(&reason), vec![1, 0]);
        assert_eq!(s.message_at(&[1, 0]).unwrap(), reason);
        assert!(s.message_at(&[2]).is_none());
        assert!(s.message_at(&[-1]).is_none());
        assert_eq!(s.messages().len(), 4);
    }

    #[test]
    fn json_round_trip_and_errors() {
        let s = ProtobufSchema::parse(ORDER).unwrap();
        let root = s.root();
        let v = json!({"id": "5", "lines": [{"sku": "a", "qty": 2}], "status": "PAID", "at": "2024-01-01T00:00:00Z"});
        let bytes = s.encode_json(&root, &v).unwrap();
        assert_eq!(&bytes[..2], &[0x08, 0x05]);
        let back = s.decode_to_json(&root, &bytes).unwrap();
        assert_eq!(back["lines"][0]["qty"], 2);
        assert_eq!(back["status"], "PAID");
        let e = s.from_json(&root, &json!({"id": 1, "lines": [{"sku": "a", "qty": "x"}]})).unwrap_err();
        assert_eq!(e.path, "/lines/0/qty");
        let e = s.from_json(&root, &json!({"id": 1, "nope": 2})).unwrap_err();
        assert_eq!(e.rule, "unknown_field", "{e}");
        let e = s.from_json(&root, &json!({"status": "LOST"})).unwrap_err();
        assert_eq!(e.path, "/status", "{e}");
    }

    #[test]
    fn invalid_protos_are_refused() {
        for bad in [
            "syntax = \"proto3\"; message {",
            "syntax = \"proto3\"; enum E { A = 0; }",
            "syntax = \"proto3\"; import \"other.proto\"; message M { Other o = 1; }",
            "syntax = \"proto3\"; message M { int32 a = 1; string b = 1; }",
        ] {
            assert!(ProtobufSchema::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn canonical_ignores_comments_and_layout() {
        let a = ProtobufSchema::parse("syntax = \"proto3\"; message M { int32 a = 1; }").unwrap();
        let b = ProtobufSchema::parse("syntax = \"proto3\";\n// c\nmessage M {\n  int32 a = 1;\n}\n").unwrap();
        assert_eq!(a.canonical(), b.canonical());
    }
}
