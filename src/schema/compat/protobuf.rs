//! Protobuf compatibility, following the differences Confluent's registry treats as
//! breaking (its `Difference.Type` names are used in the messages). Compares an original
//! schema with an update (BACKWARD: old → new; FORWARD: new → old):
//!
//! - `PACKAGE_CHANGED`; `MESSAGE_REMOVED`; `ENUM_REMOVED`; `ENUM_CONST_REMOVED` (a removed
//!   enum value number);
//! - `FIELD_KIND_CHANGED` (scalar ↔ message ↔ enum), `FIELD_SCALAR_KIND_CHANGED` (a scalar
//!   change outside one wire-compatible group: {int32, uint32, int64, uint64, bool},
//!   {sint32, sint64}, {fixed32, sfixed32}, {fixed64, sfixed64}, {string, bytes}),
//!   `FIELD_NAMED_TYPE_CHANGED` (another message or enum type): a field number reused with
//!   another type is one of these;
//! - `FIELD_NUMBER_RESERVED_REUSED`: a field uses a number the original reserved;
//! - `FIELD_LABEL_CHANGED` (singular ↔ repeated, map ↔ not);
//! - `REQUIRED_FIELD_ADDED`, `REQUIRED_FIELD_REMOVED` (proto2);
//! - `ONEOF_FIELD_REMOVED`, `FIELD_MOVED_TO_EXISTING_ONEOF`, `MULTIPLE_FIELDS_MOVED_TO_ONEOF`.
//!
//! Adding or removing an optional field, renaming a field, adding a message or an enum
//! value, and moving one field into a new oneof are compatible.

use std::collections::HashMap;

use prost_reflect::{Cardinality, FieldDescriptor, Kind, MessageDescriptor};

use crate::schema::protobuf::ProtobufSchema;

/// Checks the update against the original; returns the problems found.
pub fn check(original: &ProtobufSchema, update: &ProtobufSchema) -> Vec<String> {
    let mut out = Vec::new();
    let (op, up) = (original.file().package_name(), update.file().package_name());
    if op != up {
        out.push(format!("PACKAGE_CHANGED: package '{op}' became '{up}'"));
    }
    let updated: HashMap<String, MessageDescriptor> =
        update.messages().into_iter().map(|m| (relative(m.full_name(), up), m)).collect();
    for m in original.messages().into_iter().filter(|m| !m.is_map_entry()) {
        let name = relative(m.full_name(), op);
        match updated.get(&name) {
            None => out.push(format!("MESSAGE_REMOVED: message {name} was removed")),
            Some(u) => check_message(&name, &m, u, &mut out),
        }
    }
    let enums = |s: &ProtobufSchema, pkg: &str| -> HashMap<String, prost_reflect::EnumDescriptor> {
        s.file()
            .parent_pool()
            .all_enums()
            .filter(|e| e.parent_file() == *s.file())
            .map(|e| (relative(e.full_name(), pkg), e))
            .collect()
    };
    let (oe, ue) = (enums(original, op), enums(update, up));
    let mut names: Vec<&String> = oe.keys().collect();
    names.sort();
    for name in names {
        match ue.get(name) {
            None => out.push(format!("ENUM_REMOVED: enum {name} was removed")),
            Some(u) => {
                for v in oe[name].values() {
                    if u.get_value(v.number()).is_none() {
                        out.push(format!("ENUM_CONST_REMOVED: {name}.{} = {} was removed", v.name(), v.number()));
                    }
                }
            }
        }
    }
    out
}

fn relative(full: &str, package: &str) -> String {
    if package.is_empty() {
        full.to_owned()
    } else {
        full.strip_prefix(package).and_then(|s| s.strip_prefix('.')).unwrap_or(full).to_owned()
    }
}

fn check_message(name: &str, o: &MessageDescriptor, u: &MessageDescriptor, out: &mut Vec<String>) {
    let real_oneof =
        |f: &FieldDescriptor| f.containing_oneof().filter(|x| !x.is_synthetic()).map(|x| x.name().to_owned());
    let original_oneofs: Vec<String> = o.oneofs().filter(|x| !x.is_synthetic()).map(|x| x.name().to_owned()).collect();
    let mut moved_into: HashMap<String, usize> = HashMap::new();
    for of in o.fields() {
        let at = format!("{name}.{} ({})", of.name(), of.number());
        let Some(uf) = u.get_field(of.number()) else {
            if of.cardinality() == Cardinality::Required {
                out.push(format!("REQUIRED_FIELD_REMOVED: {at} was required and is gone"));
            } else if real_oneof(&of).is_some() {
                out.push(format!("ONEOF_FIELD_REMOVED: {at} was removed from its oneof"));
            }
            continue;
        };
        check_field(&at, &of, &uf, out);
        match (real_oneof(&of), real_oneof(&uf)) {
            (None, Some(new)) if original_oneofs.contains(&new) => {
                out.push(format!("FIELD_MOVED_TO_EXISTING_ONEOF: {at} moved into existing oneof {new}"))
            }
            (None, Some(new)) => *moved_into.entry(new).or_default() += 1,
            (Some(old), Some(new)) if old != new => {
                out.push(format!("FIELD_MOVED_TO_EXISTING_ONEOF: {at} moved from oneof {old} to {new}"))
            }
            (Some(old), None) => out.push(format!("ONEOF_FIELD_REMOVED: {at} left oneof {old}")),
            _ => {}
        }
    }
    for (oneof, n) in moved_into {
        if n > 1 {
            out.push(format!("MULTIPLE_FIELDS_MOVED_TO_ONEOF: {n} fields of {name} moved into new oneof {oneof}"));
        }
    }
    for uf in u.fields() {
        if o.get_field(uf.number()).is_some() {
            continue;
        }
        let at = format!("{name}.{} ({})", uf.name(), uf.number());
        if uf.cardinality() == Cardinality::Required {
            out.push(format!("REQUIRED_FIELD_ADDED: {at} is a new required field"));
        }
        if o.reserved_ranges().any(|r| r.contains(&uf.number())) {
            out.push(format!("FIELD_NUMBER_RESERVED_REUSED: {at} uses a number the original reserved"));
        }
    }
}

/// Scalars that share a wire encoding and so read each other's bytes.
fn scalar_group(k: &Kind) -> Option<u8> {
    Some(match k {
        Kind::Int32 | Kind::Uint32 | Kind::Int64 | Kind::Uint64 | Kind::Bool => 0,
        Kind::Sint32 | Kind::Sint64 => 1,
        Kind::Fixed32 | Kind::Sfixed32 => 2,
        Kind::Fixed64 | Kind::Sfixed64 => 3,
        Kind::String | Kind::Bytes => 4,
        Kind::Float => 5,
        Kind::Double => 6,
        Kind::Message(_) | Kind::Enum(_) => return None,
    })
}

fn kind_name(k: &Kind) -> String {
    match k {
        Kind::Message(m) => format!("message {}", m.full_name()),
        Kind::Enum(e) => format!("enum {}", e.full_name()),
        other => format!("{other:?}").to_lowercase(),
    }
}

fn check_field(at: &str, of: &FieldDescriptor, uf: &FieldDescriptor, out: &mut Vec<String>) {
    let (ok, uk) = (of.kind(), uf.kind());
    if of.is_map() && uf.is_map() {
        // Map entries are generated messages named after the field: compare keys and values.
        if let (Kind::Message(oe), Kind::Message(ue)) = (&ok, &uk) {
            check_field(&format!("{at} key"), &oe.map_entry_key_field(), &ue.map_entry_key_field(), out);
            check_field(&format!("{at} value"), &oe.map_entry_value_field(), &ue.map_entry_value_field(), out);
        }
        return;
    }
    match (&ok, &uk) {
        (Kind::Message(a), Kind::Message(b)) if a.full_name() != b.full_name() => {
            out.push(format!("FIELD_NAMED_TYPE_CHANGED: {at} changed from {} to {}", kind_name(&ok), kind_name(&uk)))
        }
        (Kind::Enum(a), Kind::Enum(b)) if a.full_name() != b.full_name() => {
            out.push(format!("FIELD_NAMED_TYPE_CHANGED: {at} changed from {} to {}", kind_name(&ok), kind_name(&uk)))
        }
        (Kind::Message(_), Kind::Message(_)) | (Kind::Enum(_), Kind::Enum(_)) => {}
        _ => match (scalar_group(&ok), scalar_group(&uk)) {
            (Some(a), Some(b)) if a == b => {}
            (Some(_), Some(_)) => out.push(format!(
                "FIELD_SCALAR_KIND_CHANGED: {at} changed from {} to {}",
                kind_name(&ok),
                kind_name(&uk)
            )),
            _ => out.push(format!("FIELD_KIND_CHANGED: {at} changed from {} to {}", kind_name(&ok), kind_name(&uk))),
        },
    }
    if of.is_list() != uf.is_list() || of.is_map() != uf.is_map() {
        out.push(format!("FIELD_LABEL_CHANGED: {at} changed between singular, repeated and map"));
    }
    match (of.cardinality() == Cardinality::Required, uf.cardinality() == Cardinality::Required) {
        (false, true) => out.push(format!("REQUIRED_FIELD_ADDED: {at} became required")),
        (true, false) => out.push(format!("REQUIRED_FIELD_REMOVED: {at} is no longer required")),
        _ => {}
    }
}
