//! The schema registry's REST API as a broker serves it on its admin HTTPS listener
//! (client certificates required, subjects under the broker's ACL), driven by an
//! unmodified Confluent client when one is installed, and recovered after a restart.

mod common;
#[allow(dead_code)]
#[path = "common/https.rs"]
mod https;

use std::path::{Path, PathBuf};
use std::process::Command;

use qwire::broker::admin::{Admin, AdminConfig, AdminHandle, AdminTls};
use qwire::broker::BrokerTls;
use qwire::schema::typed::SchemaBinding;
use qwire::schema::wire::split_confluent;
use qwire::schema::{IdPlacement, SchemaInput, SchemaType};

/// The admin listener (HTTPS, client certificates) with the broker's schema router.
async fn admin_for(b: &common::TestBroker) -> AdminHandle {
    let tls = BrokerTls::load(b.certs.path()).unwrap();
    let admin =
        Admin::new(AdminConfig::new("127.0.0.1:0".parse().unwrap(), AdminTls::Mtls(tls))).start().await.unwrap();
    admin.merge(b.handle.as_ref().unwrap().schema_router());
    admin
}

/// A Python with Confluent's client: `QWIRE_CONFLUENT_PYTHON`, else `python3` if it has it.
fn confluent_python() -> Option<PathBuf> {
    let candidates =
        std::env::var_os("QWIRE_CONFLUENT_PYTHON").map(PathBuf::from).into_iter().chain([PathBuf::from("python3")]);
    for py in candidates {
        let ok = Command::new(&py)
            .args(["-c", "import confluent_kafka.schema_registry.avro"])
            .output()
            .is_ok_and(|o| o.status.success());
        if ok {
            return Some(py);
        }
    }
    None
}

const AVRO2: &str = r#"{"type": "record", "name": "User", "fields": [{"name": "id", "type": "long"}, {"name": "name", "type": "string", "default": ""}]}"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rest_api_over_https_with_client_certificates_survives_restart() {
    let dir = tempfile::tempdir().unwrap();
    let acl = dir.path().join("acl.toml");
    // alice may do everything with subjects; carol only reads orders-value.
    std::fs::write(
        &acl,
        "[[allow]]\nprincipal = \"alice\"\nsubjects = [\"*\"]\npermissions = [\"read\", \"write\", \"admin\"]\n\
         [[allow]]\nprincipal = \"carol\"\nsubjects = [\"orders-value\"]\npermissions = [\"read\"]\n",
    )
    .unwrap();
    let mut b = common::TestBroker::start_with(|c| c.acl_file = Some(acl.clone())).await;
    let admin = admin_for(&b).await;
    let registry = b.handle.as_ref().unwrap().schema_registry();
    let certs = &b.certs;
    let addr = admin.local_addr();
    let alice = https::Via::tls(certs.path(), Some("alice"));
    let input = SchemaInput { schema_type: SchemaType::Avro, schema: AVRO2.into() };
    let (id, _) = registry.register("rust-value", &input).await.unwrap();

    let r = https::get(addr, "/subjects", &alice).await.unwrap();
    assert_eq!((r.status, r.body.as_str()), (200, r#"["rust-value"]"#));
    assert_eq!(r.content_type.as_deref(), Some("application/vnd.schemaregistry.v1+json"));
    let r = https::get(addr, "/schemas/ids/999", &alice).await.unwrap();
    assert_eq!(r.status, 404);
    assert!(r.body.contains("40403"), "{}", r.body);
    // No client certificate: the TLS handshake is refused.
    assert!(https::get(addr, "/subjects", &https::Via::tls(certs.path(), None)).await.is_err());
    // The ACL: carol sees no subject she may not read, and cannot fetch through one.
    let carol = https::Via::tls(certs.path(), Some("carol"));
    assert_eq!(https::get(addr, "/subjects", &carol).await.unwrap().body, "[]");
    let r = https::get(addr, &format!("/schemas/ids/{id}"), &carol).await.unwrap();
    assert_eq!(r.status, 403);
    assert!(r.body.contains("40301"), "{}", r.body);

    match confluent_python() {
        None => println!("SKIPPED: Confluent's Python client (confluent-kafka[schemaregistry,avro]) is not installed; set QWIRE_CONFLUENT_PYTHON"),
        Some(py) => {
            let binding = SchemaBinding::new(id, registry.schema(id).await.unwrap().parsed.unwrap(), IdPlacement::Confluent, None).unwrap();
            let rust_value = binding.encode(&serde_json::json!({"id": 7, "name": "from-rust"})).unwrap().value;
            let hex: String = rust_value.iter().map(|b| format!("{b:02x}")).collect();
            let url = format!("https://127.0.0.1:{}", addr.port());
            let dir = b.certs.path().to_owned();
            let out = tokio::task::spawn_blocking(move || {
                Command::new(py)
                    .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/schema/confluent_client.py"))
                    .args([url.as_str(), &p(&dir, "ca.crt"), &p(&dir, "alice.crt"), &p(&dir, "alice.key"), &hex])
                    .output()
                    .unwrap()
            })
            .await
            .unwrap();
            let stdout = String::from_utf8_lossy(&out.stdout);
            assert!(out.status.success(), "Confluent client failed: {stdout}\n{}", String::from_utf8_lossy(&out.stderr));
            let answer: serde_json::Value = serde_json::from_str(stdout.trim()).unwrap();
            // qwire decodes what Confluent's AvroSerializer wrote.
            let bytes: Vec<u8> = (0..answer["python_hex"].as_str().unwrap().len() / 2)
                .map(|i| u8::from_str_radix(&answer["python_hex"].as_str().unwrap()[2 * i..2 * i + 2], 16).unwrap())
                .collect();
            let (pid, payload) = split_confluent(&bytes).unwrap();
            let parsed = registry.schema(pid).await.unwrap().parsed.unwrap();
            assert_eq!(parsed.decode_to_json(payload, &[]).unwrap(), serde_json::json!({"id": 42, "name": "from-python"}));
            assert_eq!(registry.versions("py-value", false).unwrap(), vec![1, 2]);
        }
    }

    // Restart: the registry comes back from its file with the same ids and versions.
    let subjects = registry.subjects(true);
    admin.shutdown().await;
    drop(registry);
    b.stop().await;
    b.restart_broker().await;
    let admin = admin_for(&b).await;
    assert_eq!(b.handle.as_ref().unwrap().schema_registry().subjects(true), subjects);
    let r = https::get(admin.local_addr(), &format!("/schemas/ids/{id}"), &alice).await.unwrap();
    assert_eq!(r.status, 200);
    assert_eq!(serde_json::from_str::<serde_json::Value>(&r.body).unwrap()["schema"], AVRO2);
    admin.shutdown().await;
}

fn p(dir: &Path, file: &str) -> String {
    dir.join(file).to_string_lossy().into_owned()
}
