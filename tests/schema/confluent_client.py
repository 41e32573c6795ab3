"""Drives qwire's schema registry REST API with Confluent's own Python client
(confluent-kafka's SchemaRegistryClient, AvroSerializer, AvroDeserializer), unmodified.

Usage: confluent_client.py URL CA CERT KEY RUST_HEX
  RUST_HEX: a value qwire encoded in the Confluent wire format under subject rust-value
  (Avro record {"id": 7, "name": "from-rust"}).
Prints one JSON line: {"ok": true, "python_hex": ...} (a value Confluent's AvroSerializer
encoded, for the Rust side to decode); exits non-zero with the failed check otherwise.
"""
import json
import sys

from confluent_kafka.schema_registry import Schema, SchemaRegistryClient
from confluent_kafka.schema_registry.avro import AvroDeserializer, AvroSerializer
from confluent_kafka.schema_registry.error import SchemaRegistryError
from confluent_kafka.serialization import MessageField, SerializationContext

url, ca, cert, key, rust_hex = sys.argv[1:6]
sr = SchemaRegistryClient({
    "url": url,
    "ssl.ca.location": ca,
    "ssl.certificate.location": cert,
    "ssl.key.location": key,
})

AVRO1 = json.dumps({"type": "record", "name": "User", "fields": [{"name": "id", "type": "long"}]})
AVRO2 = json.dumps({"type": "record", "name": "User", "fields": [
    {"name": "id", "type": "long"}, {"name": "name", "type": "string", "default": ""}]})
AVRO_BAD = json.dumps({"type": "record", "name": "User", "fields": [{"name": "id", "type": "string"}]})
JSON_SCHEMA = json.dumps({"type": "object", "properties": {"n": {"type": "integer"}}})
PROTO = 'syntax = "proto3";\npackage demo;\nmessage Event { string name = 1; int64 at = 2; }\n'


def check(cond, what):
    if not cond:
        print(json.dumps({"ok": False, "failed": what}))
        sys.exit(1)


check(sorted(sr.get_schema_types()) == ["AVRO", "JSON", "PROTOBUF"], "schema types")
id1 = sr.register_schema("py-value", Schema(AVRO1, "AVRO"))
check(id1 >= 1, "register returns an id")
check(json.loads(sr.get_schema(id1).schema_str) == json.loads(AVRO1), "get_schema by id")
found = sr.lookup_schema("py-value", Schema(AVRO1, "AVRO"))
check(found.schema_id == id1 and found.version == 1, "lookup_schema")
check(sr.test_compatibility("py-value", Schema(AVRO2, "AVRO")) is True, "compatible schema")
check(sr.test_compatibility("py-value", Schema(AVRO_BAD, "AVRO")) is False, "incompatible schema")
id2 = sr.register_schema("py-value", Schema(AVRO2, "AVRO"))
check(id2 != id1, "a new schema gets a new id")
check(sr.get_versions("py-value") == [1, 2], "versions")
check(sr.get_latest_version("py-value").version == 2, "latest version")
try:
    sr.register_schema("py-value", Schema(AVRO_BAD, "AVRO"))
    check(False, "an incompatible schema is refused")
except SchemaRegistryError as e:
    check(e.http_status_code == 409 and e.error_code == 409, "409 for an incompatible schema")
try:
    sr.get_schema(99999)
    check(False, "unknown id is refused")
except SchemaRegistryError as e:
    check(e.http_status_code == 404 and e.error_code == 40403, "40403 for an unknown id")
sr.set_compatibility("py-value", "FULL")
check(sr.get_compatibility("py-value") == "FULL", "subject compatibility")
jid = sr.register_schema("pyjson-value", Schema(JSON_SCHEMA, "JSON"))
pid = sr.register_schema("pyproto-value", Schema(PROTO, "PROTOBUF"))
check(sr.get_schema(pid).schema_type == "PROTOBUF" and sr.get_schema(jid).schema_type == "JSON", "schema types by id")

ctx = SerializationContext("py", MessageField.VALUE)
ser = AvroSerializer(sr, AVRO2, conf={"auto.register.schemas": False, "use.latest.version": True})
python_bytes = ser({"id": 42, "name": "from-python"}, ctx)
de = AvroDeserializer(sr)
check(de(python_bytes, ctx) == {"id": 42, "name": "from-python"}, "round trip through Confluent's serde")
from_rust = de(bytes.fromhex(rust_hex), SerializationContext("rust", MessageField.VALUE))
check(from_rust == {"id": 7, "name": "from-rust"}, "Confluent's deserializer reads qwire's bytes: %r" % (from_rust,))

check(sorted(sr.delete_subject("pyjson-value")) == [1], "soft delete")
check(sorted(sr.delete_subject("pyjson-value", permanent=True)) == [1], "hard delete")
check("pyjson-value" not in sr.get_subjects(), "deleted subject is gone")
print(json.dumps({"ok": True, "python_hex": python_bytes.hex(), "ids": [id1, id2, jid, pid]}))
