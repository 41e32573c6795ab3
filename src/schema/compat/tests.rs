//! Each rule with a compatible / incompatible pair, and every schema type under every
//! compatibility level.

use super::*;
use crate::schema::SchemaType;

fn parse(t: SchemaType, s: &str) -> ParsedSchema {
    ParsedSchema::parse(t, s).unwrap_or_else(|e| panic!("{e}: {s}"))
}

/// BACKWARD problems of `new` after `old`.
fn backward(t: SchemaType, old: &str, new: &str) -> Vec<String> {
    let (o, n) = (parse(t, old), parse(t, new));
    check(Compatibility::Backward, &n, &[(1, &o)])
}

/// Asserts a rule: `bad` after `old` is refused with `rule` named; `good` after `old` passes.
#[track_caller]
fn pair(t: SchemaType, rule: &str, old: &str, good: &str, bad: &str) {
    let ok = backward(t, old, good);
    assert!(ok.is_empty(), "{rule}: compatible case refused: {ok:?}");
    let errs = backward(t, old, bad);
    assert!(errs.iter().any(|e| e.contains(rule)), "{rule}: incompatible case gave {errs:?}");
}

#[test]
fn json_schema_rules() {
    use SchemaType::Json as J;
    let obj = |props: &str, extra: &str| format!(r#"{{"type": "object", "properties": {{{props}}}{extra}}}"#);
    let closed = r#", "additionalProperties": false"#;
    pair(J, "TYPE_CHANGED", r#"{"type": "integer"}"#, r#"{"type": "number"}"#, r#"{"type": "string"}"#);
    pair(
        J,
        "TYPE_NARROWED",
        r#"{"type": ["string", "null"]}"#,
        r#"{"type": ["null", "string", "integer"]}"#,
        r#"{"type": "string"}"#,
    );
    pair(
        J,
        "REQUIRED_ATTRIBUTE_ADDED",
        &obj(r#""a": {"type": "string"}, "b": {"type": "string"}"#, closed),
        &obj(
            r#""a": {"type": "string"}, "b": {"type": "string", "default": "x"}"#,
            &format!(r#"{closed}, "required": ["b"]"#),
        ),
        &obj(r#""a": {"type": "string"}, "b": {"type": "string"}"#, &format!(r#"{closed}, "required": ["b"]"#)),
    );
    pair(
        J,
        "PROPERTY_ADDED_TO_OPEN_CONTENT_MODEL",
        &obj(r#""a": {"type": "string"}"#, ""),
        &obj(r#""a": {"type": "string"}, "b": {}"#, ""),
        &obj(r#""a": {"type": "string"}, "b": {"type": "string"}"#, ""),
    );
    // Adding an optional property to a closed model is compatible.
    assert!(backward(
        J,
        &obj(r#""a": {"type": "string"}"#, closed),
        &obj(r#""a": {"type": "string"}, "b": {"type": "string"}"#, closed)
    )
    .is_empty());
    pair(
        J,
        "PROPERTY_REMOVED_FROM_CLOSED_CONTENT_MODEL",
        &obj(r#""a": {"type": "string"}, "b": {"type": "string"}"#, closed),
        &obj(r#""a": {"type": "string"}, "b": {"type": "string"}"#, ""),
        &obj(r#""a": {"type": "string"}"#, closed),
    );
    // Removing a property from an open model is compatible.
    assert!(backward(
        J,
        &obj(r#""a": {"type": "string"}, "b": {"type": "string"}"#, ""),
        &obj(r#""a": {"type": "string"}"#, "")
    )
    .is_empty());
    pair(
        J,
        "ADDITIONAL_PROPERTIES_REMOVED",
        &obj(r#""a": {}"#, ""),
        &obj(r#""a": {}"#, ""),
        &obj(r#""a": {}"#, closed),
    );
    pair(
        J,
        "ADDITIONAL_PROPERTIES_NARROWED",
        &obj("", r#", "additionalProperties": {"type": ["string", "integer"]}"#),
        &obj("", r#", "additionalProperties": {"type": ["string", "integer", "null"]}"#),
        &obj("", r#", "additionalProperties": {"type": "string"}"#),
    );
    pair(J, "ENUM_ARRAY_NARROWED", r#"{"enum": ["a", "b"]}"#, r#"{"enum": ["a", "b", "c"]}"#, r#"{"enum": ["a"]}"#);
    pair(
        J,
        "ENUM_ARRAY_ADDED",
        r#"{"type": "string"}"#,
        r#"{"type": "string"}"#,
        r#"{"type": "string", "enum": ["a"]}"#,
    );
    pair(J, "CONST_CHANGED", r#"{"const": 1}"#, r#"{"enum": [1, 2]}"#, r#"{"const": 2}"#);
    pair(
        J,
        "MAX_LENGTH_ADDED",
        r#"{"type": "string"}"#,
        r#"{"type": "string", "minLength": 0}"#,
        r#"{"type": "string", "maxLength": 4}"#,
    );
    pair(
        J,
        "MAX_LENGTH_DECREASED",
        r#"{"type": "string", "maxLength": 4}"#,
        r#"{"type": "string", "maxLength": 5}"#,
        r#"{"type": "string", "maxLength": 3}"#,
    );
    pair(
        J,
        "MIN_LENGTH_INCREASED",
        r#"{"type": "string", "minLength": 2}"#,
        r#"{"type": "string", "minLength": 1}"#,
        r#"{"type": "string", "minLength": 3}"#,
    );
    pair(
        J,
        "PATTERN_CHANGED",
        r#"{"type": "string", "pattern": "^a"}"#,
        r#"{"type": "string"}"#,
        r#"{"type": "string", "pattern": "^c"}"#,
    );
    pair(
        J,
        "PATTERN_ADDED",
        r#"{"type": "string"}"#,
        r#"{"type": "string"}"#,
        r#"{"type": "string", "pattern": "^a"}"#,
    );
    pair(
        J,
        "MAXIMUM_DECREASED",
        r#"{"type": "number", "maximum": 10}"#,
        r#"{"type": "number", "maximum": 11}"#,
        r#"{"type": "number", "maximum": 9}"#,
    );
    pair(
        J,
        "MINIMUM_INCREASED",
        r#"{"type": "number", "minimum": 10}"#,
        r#"{"type": "number"}"#,
        r#"{"type": "number", "minimum": 11}"#,
    );
    pair(
        J,
        "EXCLUSIVE_MAXIMUM_ADDED",
        r#"{"type": "number"}"#,
        r#"{"type": "number"}"#,
        r#"{"type": "number", "exclusiveMaximum": 3}"#,
    );
    pair(
        J,
        "MULTIPLE_OF_CHANGED",
        r#"{"type": "integer", "multipleOf": 4}"#,
        r#"{"type": "integer", "multipleOf": 2}"#,
        r#"{"type": "integer", "multipleOf": 3}"#,
    );
    pair(
        J,
        "MAX_ITEMS_DECREASED",
        r#"{"type": "array", "maxItems": 3}"#,
        r#"{"type": "array", "maxItems": 4}"#,
        r#"{"type": "array", "maxItems": 2}"#,
    );
    pair(
        J,
        "MIN_ITEMS_INCREASED",
        r#"{"type": "array", "minItems": 1}"#,
        r#"{"type": "array"}"#,
        r#"{"type": "array", "minItems": 2}"#,
    );
    pair(
        J,
        "UNIQUE_ITEMS_ADDED",
        r#"{"type": "array"}"#,
        r#"{"type": "array", "uniqueItems": false}"#,
        r#"{"type": "array", "uniqueItems": true}"#,
    );
    pair(
        J,
        "TYPE_CHANGED at #/items",
        r#"{"type": "array", "items": {"type": "string"}}"#,
        r#"{"type": "array", "items": {"type": ["string", "null"]}}"#,
        r#"{"type": "array", "items": {"type": "integer"}}"#,
    );
    pair(
        J,
        "SUM_TYPE_NARROWED",
        r#"{"anyOf": [{"type": "string"}, {"type": "integer"}]}"#,
        r#"{"anyOf": [{"type": "string"}, {"type": "number"}, {"type": "null"}]}"#,
        r#"{"anyOf": [{"type": "string"}]}"#,
    );
    pair(
        J,
        "PRODUCT_TYPE_EXTENDED",
        r#"{"allOf": [{"type": "object"}, {"required": ["a"]}]}"#,
        r#"{"allOf": [{"type": "object"}]}"#,
        r#"{"allOf": [{"type": "object"}, {"required": ["a"]}, {"required": ["b"]}]}"#,
    );
    pair(J, "NOT_TYPE_EXTENDED", r#"{"not": {"type": "null"}}"#, r#"{}"#, r#"{"not": {"type": "string"}}"#);
    pair(
        J,
        "TYPE_CHANGED at #/properties/addr/properties/zip",
        r##"{"type": "object", "properties": {"addr": {"$ref": "#/definitions/A"}}, "definitions": {"A": {"type": "object", "properties": {"zip": {"type": "string"}}}}}"##,
        r##"{"type": "object", "properties": {"addr": {"$ref": "#/definitions/B"}}, "definitions": {"B": {"type": "object", "properties": {"zip": {"type": "string"}}}}}"##,
        r##"{"type": "object", "properties": {"addr": {"$ref": "#/definitions/A"}}, "definitions": {"A": {"type": "object", "properties": {"zip": {"type": "integer"}}}}}"##,
    );
    pair(
        J,
        "TYPE_CHANGED at #/items/1",
        r#"{"$schema": "https://json-schema.org/draft/2020-12/schema", "type": "array", "prefixItems": [{"type": "string"}, {"type": "integer"}]}"#,
        r#"{"$schema": "https://json-schema.org/draft/2020-12/schema", "type": "array", "prefixItems": [{"type": "string"}, {"type": "number"}]}"#,
        r#"{"$schema": "https://json-schema.org/draft/2020-12/schema", "type": "array", "prefixItems": [{"type": "string"}, {"type": "boolean"}]}"#,
    );
    pair(
        J,
        "DEPENDENCY_ADDED",
        r#"{"type": "object", "dependencies": {"a": ["b"]}}"#,
        r#"{"type": "object"}"#,
        r#"{"type": "object", "dependencies": {"a": ["b", "c"]}}"#,
    );
    // A recursive schema terminates.
    let tree = r##"{"type": "object", "properties": {"kids": {"type": "array", "items": {"$ref": "#"}}}}"##;
    assert!(backward(J, tree, tree).is_empty());
}

#[test]
fn protobuf_rules() {
    use SchemaType::Protobuf as P;
    let m =
        |body: &str| format!("syntax = \"proto3\"; package p; message M {{ {body} }} message Other {{ int32 z = 1; }}");
    pair(P, "FIELD_SCALAR_KIND_CHANGED", &m("int32 a = 1;"), &m("int64 a = 1;"), &m("string a = 1;"));
    pair(P, "FIELD_SCALAR_KIND_CHANGED", &m("sint32 a = 1;"), &m("sint64 a = 1;"), &m("int32 a = 1;"));
    pair(P, "FIELD_KIND_CHANGED", &m("int32 a = 1;"), &m("int32 renamed = 1;"), &m("Other a = 1;"));
    pair(P, "FIELD_NAMED_TYPE_CHANGED", &m("Other a = 1;"), &m("Other a = 1; string b = 2;"), &m("M a = 1;"));
    // A field number reused with another type after the field was removed.
    pair(
        P,
        "FIELD_NUMBER_RESERVED_REUSED",
        &m("int32 a = 1; reserved 2;"),
        &m("int32 a = 1; string b = 3;"),
        &m("int32 a = 1; string b = 2;"),
    );
    pair(P, "FIELD_LABEL_CHANGED", &m("int32 a = 1;"), &m("int32 a = 1;"), &m("repeated int32 a = 1;"));
    pair(
        P,
        "FIELD_SCALAR_KIND_CHANGED",
        &m("map<string, int32> a = 1;"),
        &m("map<string, int32> renamed = 1;"),
        &m("map<string, string> a = 1;"),
    );
    let e = |vals: &str| format!("syntax = \"proto3\"; package p; enum E {{ {vals} }} message M {{ E e = 1; }}");
    pair(P, "ENUM_CONST_REMOVED", &e("A = 0; B = 1;"), &e("A = 0; B = 1; C = 2;"), &e("A = 0;"));
    pair(
        P,
        "MESSAGE_REMOVED",
        "syntax = \"proto3\"; message M { int32 a = 1; } message N { int32 b = 1; }",
        "syntax = \"proto3\"; message M { int32 a = 1; } message N { int32 b = 1; } message O { }",
        "syntax = \"proto3\"; message M { int32 a = 1; }",
    );
    pair(
        P,
        "PACKAGE_CHANGED",
        "syntax = \"proto3\"; package a; message M { int32 a = 1; }",
        "syntax = \"proto3\"; package a; message M { int32 a = 1; }",
        "syntax = \"proto3\"; package b; message M { int32 a = 1; }",
    );
    let p2 = |body: &str| format!("syntax = \"proto2\"; message M {{ {body} }}");
    pair(
        P,
        "REQUIRED_FIELD_ADDED",
        &p2("optional int32 a = 1;"),
        &p2("optional int32 a = 1; optional int32 b = 2;"),
        &p2("optional int32 a = 1; required int32 b = 2;"),
    );
    pair(
        P,
        "REQUIRED_FIELD_REMOVED",
        &p2("required int32 a = 1; optional int32 b = 2;"),
        &p2("required int32 a = 1;"),
        &p2("optional int32 b = 2;"),
    );
    pair(
        P,
        "ONEOF_FIELD_REMOVED",
        &m("oneof o { int32 a = 1; string b = 2; }"),
        &m("oneof o { int32 a = 1; string b = 2; bool c = 3; }"),
        &m("oneof o { int32 a = 1; }"),
    );
    pair(
        P,
        "FIELD_MOVED_TO_EXISTING_ONEOF",
        &m("int32 a = 1; oneof o { string b = 2; }"),
        &m("oneof n { int32 a = 1; } oneof o { string b = 2; }"),
        &m("oneof o { int32 a = 1; string b = 2; }"),
    );
    pair(
        P,
        "MULTIPLE_FIELDS_MOVED_TO_ONEOF",
        &m("int32 a = 1; string b = 2;"),
        &m("oneof o { int32 a = 1; } string b = 2;"),
        &m("oneof o { int32 a = 1; string b = 2; }"),
    );
    // Removing an optional field is compatible; so is adding one.
    assert!(backward(P, &m("int32 a = 1; string b = 2;"), &m("int32 a = 1;")).is_empty());
    assert!(backward(P, &m("int32 a = 1;"), &m("int32 a = 1; string b = 2;")).is_empty());
}

#[test]
fn avro_rules_come_from_apache_avro() {
    use SchemaType::Avro as A;
    let r = |fields: &str| format!(r#"{{"type": "record", "name": "R", "fields": [{fields}]}}"#);
    pair(
        A,
        "READER_INCOMPATIBLE",
        &r(r#"{"name": "a", "type": "int"}"#),
        &r(r#"{"name": "a", "type": "long"}, {"name": "b", "type": "string", "default": ""}"#),
        &r(r#"{"name": "a", "type": "int"}, {"name": "b", "type": "string"}"#),
    );
    pair(
        A,
        "READER_INCOMPATIBLE",
        &r(r#"{"name": "a", "type": "long"}"#),
        &r(r#"{"name": "a", "type": "double"}"#),
        &r(r#"{"name": "a", "type": "int"}"#),
    );
}

/// For one type: a base schema; a change only BACKWARD allows, one only FORWARD allows, one
/// both allow; and a chain of three where the third is compatible with the second (in both
/// directions) but not with the first.
struct Matrix {
    t: SchemaType,
    base: &'static str,
    backward_only: &'static str,
    forward_only: &'static str,
    full: &'static str,
    chain: [&'static str; 3],
}

fn run_matrix(m: &Matrix) {
    let p = |s: &str| parse(m.t, s);
    let base = p(m.base);
    let ok = |level: Compatibility, new: &str| check(level, &p(new), &[(1, &base)]).is_empty();
    use Compatibility::*;
    for level in Compatibility::ALL {
        let (b, f) = (level.checks_backward(), level.checks_forward());
        assert_eq!(ok(level, m.backward_only), !f, "{:?} {level}: backward-only change", m.t);
        assert_eq!(ok(level, m.forward_only), !b, "{:?} {level}: forward-only change", m.t);
        assert!(ok(level, m.full), "{:?} {level}: fully compatible change", m.t);
    }
    // Transitive levels check every earlier version; the others only the latest.
    let [a, b, c] = m.chain.map(p);
    let up = [(1, &a), (2, &b)];
    let down = [(1, &c), (2, &b)];
    for (level, transitive) in [(None, false), (Backward, false), (Forward, false), (Full, false)].into_iter().chain([
        (BackwardTransitive, true),
        (ForwardTransitive, true),
        (FullTransitive, true),
    ]) {
        let (prev, new) = if level == Forward || level == ForwardTransitive { (&down, &a) } else { (&up, &c) };
        let errs = check(level, new, prev);
        assert_eq!(errs.is_empty(), !transitive, "{:?} {level}: chain gave {errs:?}", m.t);
        if transitive {
            assert!(errs.iter().all(|e| e.contains("version 1")), "{errs:?}");
        }
    }
}

#[test]
fn every_type_under_every_level() {
    run_matrix(&Matrix {
        t: SchemaType::Json,
        base: r#"{"type": "object", "properties": {"a": {"type": "string"}}, "required": ["a"]}"#,
        backward_only: r#"{"type": "object", "properties": {"a": {"type": ["string", "null"]}}, "required": ["a"]}"#,
        forward_only: r#"{"type": "object", "properties": {"a": {"type": "string", "maxLength": 8}}, "required": ["a"]}"#,
        full: r#"{"type": "object", "properties": {"a": {"type": "string"}, "note": {}}, "required": ["a"]}"#,
        chain: [
            r#"{"type": "object", "properties": {"x": {"type": "string"}, "y": {"type": "integer"}}, "additionalProperties": false}"#,
            r#"{"type": "object", "properties": {"x": {"type": "string"}, "y": {"type": "integer", "default": 0}}, "required": ["y"], "additionalProperties": false}"#,
            r#"{"type": "object", "properties": {"x": {"type": "string"}, "y": {"type": "integer"}}, "required": ["y"], "additionalProperties": false}"#,
        ],
    });
    run_matrix(&Matrix {
        t: SchemaType::Avro,
        base: r#"{"type": "record", "name": "R", "fields": [{"name": "x", "type": "string"}, {"name": "y", "type": "int"}]}"#,
        backward_only: r#"{"type": "record", "name": "R", "fields": [{"name": "x", "type": "string"}]}"#,
        forward_only: r#"{"type": "record", "name": "R", "fields": [{"name": "x", "type": "string"}, {"name": "y", "type": "int"}, {"name": "z", "type": "int"}]}"#,
        full: r#"{"type": "record", "name": "R", "fields": [{"name": "x", "type": "string"}, {"name": "y", "type": "int"}, {"name": "z", "type": "int", "default": 0}]}"#,
        chain: [
            r#"{"type": "record", "name": "R", "fields": [{"name": "x", "type": "string"}]}"#,
            r#"{"type": "record", "name": "R", "fields": [{"name": "x", "type": "string"}, {"name": "y", "type": "int", "default": 0}]}"#,
            r#"{"type": "record", "name": "R", "fields": [{"name": "x", "type": "string"}, {"name": "y", "type": "int"}]}"#,
        ],
    });
    run_matrix(&Matrix {
        t: SchemaType::Protobuf,
        base: "syntax = \"proto3\"; enum E { A = 0; B = 1; } message M { E e = 1; }",
        backward_only: "syntax = \"proto3\"; enum E { A = 0; B = 1; C = 2; } message M { E e = 1; }",
        forward_only: "syntax = \"proto3\"; enum E { A = 0; } message M { E e = 1; }",
        full: "syntax = \"proto3\"; enum E { A = 0; B = 1; } message M { E e = 1; string note = 2; }",
        chain: [
            "syntax = \"proto3\"; message M { string x = 1; int32 y = 2; }",
            "syntax = \"proto3\"; message M { string x = 1; }",
            "syntax = \"proto3\"; message M { string x = 1; string y = 2; }",
        ],
    });
}

#[test]
fn a_changed_schema_type_is_incompatible() {
    let avro = parse(SchemaType::Avro, r#""string""#);
    let json = parse(SchemaType::Json, r#"{"type": "string"}"#);
    let errs = check(Compatibility::Backward, &json, &[(1, &avro)]);
    assert!(errs[0].contains("SCHEMA_TYPE_CHANGED"), "{errs:?}");
    assert!(check(Compatibility::None, &json, &[(1, &avro)]).is_empty());
}

/// Review finding: a chain of definitions whose every `anyOf` offers two references to the
/// next made the checker try 2^N branch pairs (about 3 KB of schema ran for hours while the
/// registry's lock was held). One check now shares a budget across its branches and such a
/// pair of schemas is refused as too complex, quickly.
#[test]
fn a_crafted_chain_of_alternatives_is_refused_as_too_complex_not_checked_for_hours() {
    let n = 40;
    let mut defs: Vec<String> = (0..n)
        .map(|i| {
            format!(
                r##""d{i}": {{"anyOf": [{{"$ref": "#/definitions/d{j}"}}, {{"$ref": "#/definitions/d{j}"}}]}}"##,
                j = i + 1
            )
        })
        .collect();
    defs.push(format!(r#""d{n}": {{"type": "string"}}"#));
    let new = format!(r##"{{"definitions": {{{}}}, "$ref": "#/definitions/d0"}}"##, defs.join(", "));
    let started = std::time::Instant::now();
    let errs = backward(SchemaType::Json, r#"{"type": "object"}"#, &new);
    assert!(errs.iter().any(|e| e.contains("TOO_COMPLEX")), "{errs:?}");
    // Not a timing assertion on the machine's speed: the exponential version needs about
    // 2^41 comparisons; the budget allows 100 000.
    assert!(started.elapsed() < std::time::Duration::from_secs(60), "took {:?}", started.elapsed());
}
