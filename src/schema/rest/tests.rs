//! The REST API through the router: status codes, bodies and content type as Confluent's
//! registry answers them, and authorisation.

use super::*;
use axum::body::Body;
use axum::http::{Method, Request};
use http_body_util::BodyExt;
use serde_json::{json, Value};
use tower::ServiceExt;

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap()
}

async fn app() -> Router {
    router(Arc::new(Registry::in_memory().await), Arc::new(AllowAll))
}

/// Sends a request; returns the status and the body (JSON when it parses, else a string).
async fn call(app: &Router, method: Method, uri: &str, body: Option<Value>) -> (u16, Value) {
    let req = Request::builder()
        .method(method)
        .uri(uri)
        .header("content-type", CONTENT_TYPE)
        .body(body.map_or_else(Body::empty, |b| Body::from(b.to_string())))
        .unwrap();
    let resp = app.clone().oneshot(req).await.unwrap();
    assert_eq!(resp.headers()["content-type"], CONTENT_TYPE, "{uri}");
    let status = resp.status().as_u16();
    let bytes = resp.into_body().collect().await.unwrap().to_bytes();
    let text = String::from_utf8(bytes.to_vec()).unwrap();
    (status, serde_json::from_str(&text).unwrap_or(Value::String(text)))
}

const AVRO1: &str = r#"{"type":"record","name":"User","fields":[{"name":"id","type":"long"}]}"#;
const AVRO2: &str = r#"{"type":"record","name":"User","fields":[{"name":"id","type":"long"},{"name":"name","type":"string","default":""}]}"#;
const AVRO_BAD: &str = r#"{"type":"record","name":"User","fields":[{"name":"id","type":"string"}]}"#;

fn err(code: u32) -> impl Fn(&Value) -> bool {
    move |v| v["error_code"] == code && v["message"].as_str().is_some_and(|m| !m.is_empty())
}

#[test]
fn register_fetch_and_lookup() {
    rt().block_on(async {
        let app = app().await;
        assert_eq!(call(&app, Method::GET, "/", None).await, (200, json!({})));
        assert_eq!(call(&app, Method::GET, "/schemas/types", None).await, (200, json!(["JSON", "PROTOBUF", "AVRO"])));
        assert_eq!(call(&app, Method::GET, "/subjects", None).await, (200, json!([])));
        // Confluent's default type is Avro.
        let r = call(&app, Method::POST, "/subjects/users-value/versions", Some(json!({"schema": AVRO1}))).await;
        assert_eq!(r, (200, json!({"id": 1})));
        let r = call(
            &app,
            Method::POST,
            "/subjects/users-value/versions",
            Some(json!({"schema": AVRO2, "schemaType": "AVRO"})),
        )
        .await;
        assert_eq!(r, (200, json!({"id": 2})));
        // Registering again returns the existing id.
        let r = call(&app, Method::POST, "/subjects/users-value/versions", Some(json!({"schema": AVRO1}))).await;
        assert_eq!(r, (200, json!({"id": 1})));
        let json_schema = r#"{"type":"object","properties":{"n":{"type":"integer"}}}"#;
        let r = call(
            &app,
            Method::POST,
            "/subjects/other/versions",
            Some(json!({"schema": json_schema, "schemaType": "JSON"})),
        )
        .await;
        assert_eq!(r, (200, json!({"id": 3})));

        assert_eq!(call(&app, Method::GET, "/subjects", None).await, (200, json!(["other", "users-value"])));
        assert_eq!(call(&app, Method::GET, "/subjects/users-value/versions", None).await, (200, json!([1, 2])));
        let latest = json!({"subject": "users-value", "version": 2, "id": 2, "schema": AVRO2});
        assert_eq!(call(&app, Method::GET, "/subjects/users-value/versions/latest", None).await, (200, latest.clone()));
        assert_eq!(call(&app, Method::GET, "/subjects/users-value/versions/2", None).await, (200, latest));
        assert_eq!(
            call(&app, Method::GET, "/subjects/users-value/versions/1/schema", None).await,
            (200, serde_json::from_str::<Value>(AVRO1).unwrap())
        );
        assert_eq!(call(&app, Method::GET, "/schemas/ids/1", None).await, (200, json!({"schema": AVRO1})));
        assert_eq!(
            call(&app, Method::GET, "/schemas/ids/3", None).await,
            (200, json!({"schema": json_schema, "schemaType": "JSON"}))
        );
        assert_eq!(
            call(&app, Method::GET, "/schemas/ids/1/versions", None).await,
            (200, json!([{"subject": "users-value", "version": 1}]))
        );
        let r = call(&app, Method::POST, "/subjects/users-value", Some(json!({"schema": AVRO1}))).await;
        assert_eq!(r, (200, json!({"subject": "users-value", "version": 1, "id": 1, "schema": AVRO1})));

        let (s, b) = call(&app, Method::GET, "/subjects/nope/versions", None).await;
        assert!(s == 404 && err(40401)(&b), "{b}");
        let (s, b) = call(&app, Method::GET, "/subjects/users-value/versions/9", None).await;
        assert!(s == 404 && err(40402)(&b), "{b}");
        let (s, b) = call(&app, Method::GET, "/schemas/ids/99", None).await;
        assert!(s == 404 && err(40403)(&b), "{b}");
        let (s, b) = call(&app, Method::POST, "/subjects/users-value", Some(json!({"schema": AVRO_BAD}))).await;
        assert!(s == 404 && err(40403)(&b), "{b}");
        let (s, b) = call(&app, Method::GET, "/subjects/users-value/versions/zero", None).await;
        assert!(s == 422 && err(42202)(&b), "{b}");
        let (s, b) = call(&app, Method::GET, "/no/such/path", None).await;
        assert!(s == 404 && err(404)(&b), "{b}");
    });
}

#[test]
fn invalid_and_incompatible_schemas() {
    rt().block_on(async {
        let app = app().await;
        call(&app, Method::POST, "/subjects/s/versions", Some(json!({"schema": AVRO1}))).await;
        let (s, b) = call(&app, Method::POST, "/subjects/s/versions", Some(json!({"schema": AVRO_BAD}))).await;
        assert!(s == 409 && err(409)(&b), "{b}");
        let (s, b) =
            call(&app, Method::POST, "/subjects/s/versions", Some(json!({"schema": "{nope", "schemaType": "AVRO"})))
                .await;
        assert!(s == 422 && err(42201)(&b), "{b}");
        let (s, b) =
            call(&app, Method::POST, "/subjects/s/versions", Some(json!({"schema": "{}", "schemaType": "XML"}))).await;
        assert!(s == 422 && err(42201)(&b), "{b}");
        let refs = json!({"schema": AVRO2, "references": [{"name": "x", "subject": "y", "version": 1}]});
        let (s, b) = call(&app, Method::POST, "/subjects/s/versions", Some(refs)).await;
        assert!(s == 422 && err(42201)(&b), "{b}");
        let (s, _) = call(&app, Method::POST, "/subjects/s/versions", Some(json!({"nope": 1}))).await;
        assert_eq!(s, 422);
        // A malformed body.
        let req = Request::builder().method(Method::POST).uri("/subjects/s/versions").body(Body::from("{")).unwrap();
        assert_eq!(app.clone().oneshot(req).await.unwrap().status().as_u16(), 400);

        let body = Some(json!({"schema": AVRO_BAD}));
        assert_eq!(
            call(&app, Method::POST, "/compatibility/subjects/s/versions/latest", body.clone()).await,
            (200, json!({"is_compatible": false}))
        );
        let (s, b) = call(&app, Method::POST, "/compatibility/subjects/s/versions/1?verbose=true", body.clone()).await;
        assert_eq!((s, &b["is_compatible"]), (200, &json!(false)));
        assert!(b["messages"][0].as_str().unwrap().contains("version 1"), "{b}");
        let good = Some(json!({"schema": AVRO2}));
        assert_eq!(
            call(&app, Method::POST, "/compatibility/subjects/s/versions", good.clone()).await,
            (200, json!({"is_compatible": true}))
        );
        // No subject yet: latest is compatible, a numbered version is not found.
        assert_eq!(
            call(&app, Method::POST, "/compatibility/subjects/new/versions/latest", good.clone()).await,
            (200, json!({"is_compatible": true}))
        );
        let (s, b) = call(&app, Method::POST, "/compatibility/subjects/new/versions/1", good).await;
        assert!(s == 404 && err(40401)(&b), "{b}");
    });
}

#[test]
fn config_endpoints() {
    rt().block_on(async {
        let app = app().await;
        assert_eq!(call(&app, Method::GET, "/config", None).await, (200, json!({"compatibilityLevel": "BACKWARD"})));
        assert_eq!(
            call(&app, Method::PUT, "/config", Some(json!({"compatibility": "FULL"}))).await,
            (200, json!({"compatibility": "FULL"}))
        );
        assert_eq!(call(&app, Method::GET, "/config", None).await, (200, json!({"compatibilityLevel": "FULL"})));
        let (s, b) = call(&app, Method::GET, "/config/s", None).await;
        assert!(s == 404 && err(40408)(&b), "{b}");
        assert_eq!(
            call(&app, Method::GET, "/config/s?defaultToGlobal=true", None).await,
            (200, json!({"compatibilityLevel": "FULL"}))
        );
        assert_eq!(
            call(&app, Method::PUT, "/config/s", Some(json!({"compatibility": "none"}))).await,
            (200, json!({"compatibility": "NONE"}))
        );
        assert_eq!(call(&app, Method::GET, "/config/s", None).await, (200, json!({"compatibilityLevel": "NONE"})));
        let (s, b) = call(&app, Method::PUT, "/config/s", Some(json!({"compatibility": "SIDEWAYS"}))).await;
        assert!(s == 422 && err(42203)(&b), "{b}");
        // The subject's own level now governs registration.
        call(&app, Method::POST, "/subjects/s/versions", Some(json!({"schema": AVRO1}))).await;
        assert_eq!(
            call(&app, Method::POST, "/subjects/s/versions", Some(json!({"schema": AVRO_BAD}))).await,
            (200, json!({"id": 2}))
        );
        assert_eq!(call(&app, Method::DELETE, "/config/s", None).await, (200, json!({"compatibilityLevel": "NONE"})));
        assert_eq!(call(&app, Method::DELETE, "/config", None).await, (200, json!({"compatibilityLevel": "FULL"})));
        assert_eq!(call(&app, Method::GET, "/config", None).await, (200, json!({"compatibilityLevel": "BACKWARD"})));
        assert_eq!(call(&app, Method::GET, "/mode", None).await, (200, json!({"mode": "READWRITE"})));
    });
}

#[test]
fn soft_and_hard_deletes() {
    rt().block_on(async {
        let app = app().await;
        call(&app, Method::POST, "/subjects/s/versions", Some(json!({"schema": AVRO1}))).await;
        call(&app, Method::POST, "/subjects/s/versions", Some(json!({"schema": AVRO2}))).await;
        let (s, b) = call(&app, Method::DELETE, "/subjects/s/versions/1?permanent=true", None).await;
        assert!(s == 404 && err(40407)(&b), "{b}");
        assert_eq!(call(&app, Method::DELETE, "/subjects/s/versions/1", None).await, (200, json!(1)));
        let (s, b) = call(&app, Method::DELETE, "/subjects/s/versions/1", None).await;
        assert!(s == 404 && err(40406)(&b), "{b}");
        assert_eq!(call(&app, Method::GET, "/subjects/s/versions", None).await, (200, json!([2])));
        assert_eq!(call(&app, Method::GET, "/subjects/s/versions?deleted=true", None).await, (200, json!([1, 2])));
        assert_eq!(call(&app, Method::DELETE, "/subjects/s/versions/1?permanent=true", None).await, (200, json!(1)));
        let (s, b) = call(&app, Method::DELETE, "/subjects/s?permanent=true", None).await;
        assert!(s == 404 && err(40405)(&b), "{b}");
        assert_eq!(call(&app, Method::DELETE, "/subjects/s", None).await, (200, json!([2])));
        let (s, b) = call(&app, Method::DELETE, "/subjects/s", None).await;
        assert!(s == 404 && err(40404)(&b), "{b}");
        assert_eq!(call(&app, Method::GET, "/subjects", None).await, (200, json!([])));
        assert_eq!(call(&app, Method::GET, "/subjects?deleted=true", None).await, (200, json!(["s"])));
        // A soft-deleted schema is still served by id.
        assert_eq!(call(&app, Method::GET, "/schemas/ids/2", None).await.0, 200);
        assert_eq!(call(&app, Method::DELETE, "/subjects/s?permanent=true", None).await, (200, json!([2])));
        let (s, b) = call(&app, Method::GET, "/schemas/ids/2", None).await;
        assert!(s == 404 && err(40403)(&b), "{b}");
        let (s, b) = call(&app, Method::DELETE, "/subjects/s", None).await;
        assert!(s == 404 && err(40401)(&b), "{b}");
    });
}

/// Principals from a header; alice reads and writes `a-*`, admin does everything.
struct HeaderAuth;

impl RestAuthorizer for HeaderAuth {
    fn principal(&self, request: &Parts) -> Option<String> {
        request.headers.get("x-principal").and_then(|v| v.to_str().ok()).map(str::to_owned)
    }
    fn allowed(&self, principal: &str, op: Operation, resource: Resource<'_>) -> bool {
        match (principal, resource) {
            ("admin", _) => true,
            ("alice", Resource::Subject(s)) => s.starts_with("a-") && op != Operation::Admin,
            _ => false,
        }
    }
}

#[test]
fn every_call_is_authorised() {
    rt().block_on(async {
        let app = router(Arc::new(Registry::in_memory().await), Arc::new(HeaderAuth));
        let send = |who: Option<&'static str>, method: Method, uri: &'static str, body: Option<Value>| {
            let app = app.clone();
            async move {
                let mut req = Request::builder().method(method).uri(uri);
                if let Some(w) = who {
                    req = req.header("x-principal", w);
                }
                let req = req.body(body.map_or_else(Body::empty, |b| Body::from(b.to_string()))).unwrap();
                let resp = app.oneshot(req).await.unwrap();
                let status = resp.status().as_u16();
                let b = resp.into_body().collect().await.unwrap().to_bytes();
                (status, serde_json::from_slice::<Value>(&b).unwrap_or(Value::Null))
            }
        };
        let schema = || Some(json!({"schema": AVRO1}));
        let (s, b) = send(None, Method::GET, "/subjects", None).await;
        assert!(s == 401 && err(40101)(&b), "{b}");
        assert_eq!(
            send(Some("alice"), Method::POST, "/subjects/a-1/versions", schema()).await,
            (200, json!({"id": 1}))
        );
        let (s, b) = send(Some("alice"), Method::POST, "/subjects/b-1/versions", schema()).await;
        assert!(s == 403 && err(40301)(&b), "{b}");
        assert_eq!(send(Some("admin"), Method::POST, "/subjects/b-1/versions", schema()).await.0, 200);
        // Listing shows only readable subjects; the id is readable through a-1.
        assert_eq!(send(Some("alice"), Method::GET, "/subjects", None).await, (200, json!(["a-1"])));
        assert_eq!(
            send(Some("alice"), Method::GET, "/schemas/ids/1/versions", None).await,
            (200, json!([{"subject": "a-1", "version": 1}]))
        );
        assert_eq!(send(Some("alice"), Method::GET, "/schemas/ids/1", None).await.0, 200);
        assert_eq!(send(Some("bob"), Method::GET, "/schemas/ids/1", None).await.0, 403);
        // Config and deletes need admin.
        assert_eq!(
            send(Some("alice"), Method::PUT, "/config/a-1", Some(json!({"compatibility": "NONE"}))).await.0,
            403
        );
        assert_eq!(send(Some("alice"), Method::DELETE, "/subjects/a-1", None).await.0, 403);
        assert_eq!(send(Some("alice"), Method::PUT, "/config", Some(json!({"compatibility": "NONE"}))).await.0, 403);
        assert_eq!(send(Some("admin"), Method::DELETE, "/subjects/a-1", None).await, (200, json!([1])));
    });
}
