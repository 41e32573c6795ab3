//! The built-in endpoints: `GET /health`, `GET /ready`, `GET /metrics`.

use std::time::Instant;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};

use super::metrics::MetricsRegistry;
use super::readiness::Readiness;

#[derive(Clone)]
struct Builtin {
    readiness: Readiness,
    metrics: MetricsRegistry,
    started: Instant,
}

/// The router with the built-in endpoints.
pub(crate) fn builtin(readiness: Readiness, metrics: MetricsRegistry) -> Router {
    Router::new()
        .route("/health", get(health))
        .route("/ready", get(ready))
        .route("/metrics", get(metrics_text))
        .with_state(Builtin { readiness, metrics, started: Instant::now() })
}

/// 200 while the process serves HTTP at all: `{"status":"ok","version":..,"uptime_seconds":..}`.
async fn health(State(s): State<Builtin>) -> Response {
    Json(serde_json::json!({
        "status": "ok",
        "version": env!("CARGO_PKG_VERSION"),
        "uptime_seconds": s.started.elapsed().as_secs_f64(),
    }))
    .into_response()
}

/// 200 when every readiness condition is met, else 503; the body names each condition:
/// `{"ready":false,"conditions":{"accepting_connections":false,"storage_recovered":true}}`.
async fn ready(State(s): State<Builtin>) -> Response {
    let report = s.readiness.report();
    let status = if report.ready { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
    (status, Json(report)).into_response()
}

/// Prometheus text format 0.0.4.
async fn metrics_text(State(s): State<Builtin>) -> Response {
    ([(header::CONTENT_TYPE, crate::prometheus::CONTENT_TYPE)], s.metrics.encode()).into_response()
}
