//! `qwire schema`, `qwire topics --schema-validation` and `qwire consume` with schema ids
//! and `--decode`, run as a user would against a real broker.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use bytes::Bytes;
use common::*;
use qwire::protocol::{Acks, BatchBuilder, Compression, ErrorCode, Header, ProducerStamp, Record};
use qwire::schema::typed::SchemaBinding;
use qwire::schema::{IdPlacement, ParsedSchema, SchemaType};
use serde_json::{json, Value};

fn run(b: &TestBroker, client: &str, args: &[&str]) -> Output {
    let addr = b.addr().to_string();
    let certs = b.certs.path().to_str().unwrap().to_owned();
    let mut c = Command::new(env!("CARGO_BIN_EXE_qwire"));
    c.args(args).args(["-s", &addr, "--certs", &certs, "--client", client]).env("RUST_LOG", "error");
    c.stdin(Stdio::null()).output().expect("spawn qwire")
}

#[track_caller]
fn ok(o: Output) -> String {
    let out = String::from_utf8(o.stdout.clone()).unwrap();
    assert!(
        o.status.success(),
        "exit {:?}\nstdout:\n{out}\nstderr:\n{}",
        o.status.code(),
        String::from_utf8_lossy(&o.stderr)
    );
    out
}

#[track_caller]
fn fails(o: Output, code: i32, needle: &str) -> String {
    let err = String::from_utf8(o.stderr.clone()).unwrap();
    assert_eq!(o.status.code(), Some(code), "stdout:\n{}\nstderr:\n{err}", String::from_utf8_lossy(&o.stdout));
    assert!(err.contains(needle), "stderr should mention {needle:?}: {err}");
    err
}

fn file(dir: &Path, name: &str, text: &str) -> String {
    let p: PathBuf = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p.to_str().unwrap().to_owned()
}

const ORDER: &str = r#"{"type": "object", "properties": {"id": {"type": "integer"}, "qty": {"type": "integer", "minimum": 1}}, "required": ["id"]}"#;
const ORDER_V2: &str = r#"{"type": "object", "properties": {"id": {"type": "integer"}, "qty": {"type": ["integer", "null"]}}, "required": ["id"]}"#;
const ORDER_BAD: &str = r#"{"type": "object", "properties": {"id": {"type": "string"}}, "required": ["id"]}"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn schema_commands_in_text_and_json() {
    let b = TestBroker::start().await;
    let dir = tempfile::tempdir().unwrap();
    let (v1, v2, bad) = (
        file(dir.path(), "v1.json", ORDER),
        file(dir.path(), "v2.json", ORDER_V2),
        file(dir.path(), "bad.json", ORDER_BAD),
    );
    assert_eq!(
        ok(run(&b, "alice", &["schema", "register", "orders-value", "--type", "json_schema", "--file", &v1])),
        "1\n"
    );
    let out = ok(run(
        &b,
        "alice",
        &["schema", "register", "orders-value", "--type", "json_schema", "--file", &v2, "--format", "json"],
    ));
    assert_eq!(serde_json::from_str::<Value>(&out).unwrap(), json!({"id": 2, "version": 2}));
    fails(
        run(&b, "alice", &["schema", "register", "orders-value", "--type", "json_schema", "--file", &bad]),
        8,
        "INCOMPATIBLE_SCHEMA",
    );
    let junk = file(dir.path(), "junk.avsc", "{not avro");
    fails(run(&b, "alice", &["schema", "register", "x-value", "--type", "avro", "--file", &junk]), 8, "INVALID_SCHEMA");
    fails(
        run(&b, "alice", &["schema", "register", "x-value", "--type", "xml", "--file", &junk]),
        2,
        "unknown schema type",
    );

    let out = ok(run(&b, "alice", &["schema", "get", "orders-value"]));
    assert_eq!(out.lines().next().unwrap(), "subject=orders-value version=2 id=2 type=json");
    assert_eq!(out.lines().nth(1).unwrap(), ORDER_V2);
    let out = ok(run(&b, "alice", &["schema", "get", "orders-value", "--version", "1", "--format", "json"]));
    let v: Value = serde_json::from_str(&out).unwrap();
    assert_eq!((v["version"].clone(), v["id"].clone(), v["schemaType"].clone()), (json!(1), json!(1), json!("JSON")));
    assert_eq!(ok(run(&b, "alice", &["schema", "get", "--id", "2"])).lines().nth(1).unwrap(), ORDER_V2);
    fails(run(&b, "alice", &["schema", "get", "nope"]), 1, "SCHEMA_SUBJECT_NOT_FOUND");
    assert_eq!(ok(run(&b, "alice", &["schema", "versions", "orders-value"])), "1\n2\n");
    assert_eq!(ok(run(&b, "alice", &["schema", "list", "--format", "json"])), "[\"orders-value\"]\n");

    let o = run(&b, "alice", &["schema", "check", "orders-value", "--type", "json_schema", "--file", &bad]);
    let text = String::from_utf8(o.stdout.clone()).unwrap();
    assert!(text.starts_with("incompatible\n") && text.contains("TYPE_CHANGED"), "{text}");
    fails(o, 1, "not compatible");
    assert_eq!(
        ok(run(&b, "alice", &["schema", "check", "orders-value", "--type", "json_schema", "--file", &v2])),
        "compatible\n"
    );

    assert_eq!(ok(run(&b, "alice", &["schema", "config"])), "BACKWARD\n");
    assert_eq!(
        ok(run(&b, "alice", &["schema", "config", "orders-value", "--compatibility", "full_transitive"])),
        "FULL_TRANSITIVE\n"
    );
    let out = ok(run(&b, "alice", &["schema", "config", "orders-value", "--format", "json"]));
    assert_eq!(serde_json::from_str::<Value>(&out).unwrap(), json!({"compatibilityLevel": "FULL_TRANSITIVE"}));
    fails(run(&b, "alice", &["schema", "config", "--compatibility", "sideways"]), 2, "invalid compatibility level");

    fails(run(&b, "alice", &["schema", "delete", "orders-value", "--permanent"]), 8, "SCHEMA_DELETE_REFUSED");
    assert_eq!(
        ok(run(&b, "alice", &["schema", "delete", "orders-value", "--version", "1"])),
        "deleted orders-value version(s) 1\n"
    );
    assert_eq!(ok(run(&b, "alice", &["schema", "delete", "orders-value"])), "deleted orders-value version(s) 2\n");
    let out = ok(run(&b, "alice", &["schema", "delete", "orders-value", "--permanent", "--format", "json"]));
    assert_eq!(out, "[1,2]\n");
    assert_eq!(ok(run(&b, "alice", &["schema", "list"])), "");
}

/// Records with the given values; `header` puts the id in the `qwire.schema_id` header.
fn batch(values: &[(Bytes, Option<u32>)]) -> Bytes {
    let mut b = BatchBuilder::new();
    for (i, (v, header)) in values.iter().enumerate() {
        let headers = header
            .map(|id| {
                vec![Header { key: "qwire.schema_id".into(), value: Some(Bytes::copy_from_slice(&id.to_be_bytes())) }]
            })
            .unwrap_or_default();
        b.push(&Record { timestamp: 1_700_000_000_000 + i as i64, key: None, value: Some(v.clone()), headers });
    }
    b.seal(Compression::None, None, ProducerStamp::NONE)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn topic_validation_flags_and_consume_with_decode() {
    let b = TestBroker::start().await;
    let out = ok(run(&b, "alice", &["topics", "create", "users", "--schema-validation", "enforce"]));
    assert!(out.contains("schema validation: enforce"), "{out}");
    let out = ok(run(&b, "alice", &["topics", "alter", "users", "--schema-validation", "warn", "--validate-payload"]));
    assert!(out.contains("schema validation: warn (with payload validation)"), "{out}");
    fails(run(&b, "alice", &["topics", "alter", "ghost", "--schema-validation", "warn"]), 6, "does not exist");
    fails(run(&b, "alice", &["topics", "alter", "users", "--schema-validation", "strict"]), 2, "none, warn, enforce");

    // Avro (Confluent wire format) and Protobuf (header) records, then consume them decoded.
    let mut c = b.client("alice").await;
    let avro = r#"{"type": "record", "name": "User", "fields": [{"name": "id", "type": "long"}, {"name": "name", "type": "string"}]}"#;
    let proto = "syntax = \"proto3\"; message Other { int32 x = 1; } message User { int64 id = 1; string name = 2; }";
    let (aid, _) = c.register_schema("users-value", SchemaType::Avro, avro).await.unwrap();
    let (pid, _) = c.register_schema("users-proto", SchemaType::Protobuf, proto).await.unwrap();
    let bind = |id: u32, t: SchemaType, text: &str, placement: IdPlacement, message: Option<&str>| {
        SchemaBinding::new(id, std::sync::Arc::new(ParsedSchema::parse(t, text).unwrap()), placement, message).unwrap()
    };
    let a = bind(aid, SchemaType::Avro, avro, IdPlacement::Confluent, None)
        .encode(&json!({"id": 1, "name": "ann"}))
        .unwrap();
    let p = bind(pid, SchemaType::Protobuf, proto, IdPlacement::Confluent, Some("User"))
        .encode(&json!({"id": 2, "name": "bob"}))
        .unwrap();
    let h =
        bind(aid, SchemaType::Avro, avro, IdPlacement::Header, None).encode(&json!({"id": 3, "name": "cy"})).unwrap();
    let records =
        batch(&[(a.value, None), (p.value, None), (h.value, Some(aid)), (Bytes::from_static(b"plain"), None)]);
    assert_eq!(c.produce("users", 0, Acks::All, records).await.unwrap().error, ErrorCode::None);

    let raw = ok(run(&b, "alice", &["consume", "-t", "users", "--format", "json"]));
    let ids: Vec<Value> = raw.lines().map(|l| serde_json::from_str::<Value>(l).unwrap()["schema_id"].clone()).collect();
    assert_eq!(ids, vec![json!(aid), json!(pid), json!(aid), Value::Null]);
    let decoded = ok(run(&b, "alice", &["consume", "-t", "users", "--format", "json", "--decode"]));
    let values: Vec<Value> =
        decoded.lines().map(|l| serde_json::from_str::<Value>(l).unwrap()["value"].clone()).collect();
    assert_eq!(values[0], json!({"id": 1, "name": "ann"}));
    // Protobuf's JSON mapping writes 64-bit integers as strings.
    assert_eq!(values[1], json!({"id": "2", "name": "bob"}));
    assert_eq!(values[2], json!({"id": 3, "name": "cy"}));
    assert_eq!(values[3], json!("plain"));
    let text = ok(run(&b, "alice", &["consume", "-t", "users", "--decode"]));
    assert!(text.lines().next().unwrap().contains(&format!("schema_id={aid} {{\"id\":1,\"name\":\"ann\"}}")), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn produce_validates_against_a_subject_and_consume_decodes() {
    let b = TestBroker::start().await;
    let dir = tempfile::tempdir().unwrap();
    let order = file(dir.path(), "order.json", ORDER);
    ok(run(&b, "alice", &["schema", "register", "orders-value", "--type", "json_schema", "--file", &order]));
    ok(run(&b, "alice", &["topics", "create", "orders", "--schema-validation", "enforce"]));

    // An invalid value: exit 8, a one-line reason naming path and rule, nothing sent.
    let err = fails(
        run(
            &b,
            "alice",
            &["produce", "-t", "orders", "--schema-subject", "orders-value", "-m", r#"{"id": 1, "qty": 0}"#],
        ),
        8,
        "record 0 not sent",
    );
    let line = err.lines().find(|l| l.starts_with("error: ")).unwrap();
    assert!(line.contains("/qty") && line.contains("minimum"), "{line}");
    assert_eq!(ok(run(&b, "alice", &["consume", "-t", "orders"])), "");

    let out = ok(run(
        &b,
        "alice",
        &["produce", "-t", "orders", "--schema-subject", "orders-value", "-m", r#"{"id": {i}, "qty": 2}"#, "-c", "2"],
    ));
    assert!(out.contains("sent 2 of 2 records"), "{out}");
    let lines = ok(run(&b, "alice", &["consume", "-t", "orders", "--format", "json"]));
    for l in lines.lines() {
        let v: Value = serde_json::from_str(l).unwrap();
        assert_eq!(v["schema_id"], json!(1));
    }
    // Without validation the enforcing broker refuses the record.
    fails(run(&b, "alice", &["produce", "-t", "orders", "-m", r#"{"id": 9, "qty": 9}"#]), 8, "SCHEMA_REQUIRED");

    // --schema-file registers under {topic}-value; Avro values are encoded from JSON.
    let avsc = file(
        dir.path(),
        "user.avsc",
        r#"{"type": "record", "name": "User", "fields": [{"name": "id", "type": "long"}, {"name": "name", "type": "string"}]}"#,
    );
    let out = ok(run(
        &b,
        "alice",
        &[
            "produce",
            "-t",
            "users",
            "--schema-file",
            &avsc,
            "--schema-type",
            "avro",
            "--schema-id-placement",
            "confluent",
            "-m",
            r#"{"id": 5, "name": "eve"}"#,
        ],
    ));
    assert!(out.contains("sent 1 of 1"), "{out}");
    assert_eq!(ok(run(&b, "alice", &["schema", "versions", "users-value"])), "1\n");
    let decoded = ok(run(&b, "alice", &["consume", "-t", "users", "--format", "json", "--decode"]));
    let v: Value = serde_json::from_str(decoded.trim()).unwrap();
    assert_eq!((v["schema_id"].clone(), v["value"].clone()), (json!(2), json!({"id": 5, "name": "eve"})));
    fails(
        run(
            &b,
            "alice",
            &["produce", "-t", "users", "--schema-subject", "users-value", "-m", r#"{"id": "x", "name": "eve"}"#],
        ),
        8,
        "/id",
    );
    fails(run(&b, "alice", &["produce", "-t", "users", "--schema-file", &avsc, "-m", "{}"]), 2, "--schema-type");
}
