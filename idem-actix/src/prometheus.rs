//! Prometheus exposition of idem's metrics (feature `prometheus`).

use actix_web::http::header::ContentType;
use actix_web::{HttpResponse, Resource, web};
use idem_runtime::{WRITE_DURATION_MS, register_metrics};
pub use metrics_exporter_prometheus::PrometheusHandle;
use metrics_exporter_prometheus::{BuildError, Matcher, PrometheusBuilder};

/// The buckets of `idempotent_write_duration_ms`, in milliseconds: a write takes from under a
/// millisecond (a replay from memory-hot pages) to seconds (a twin waiting out a lock).
pub const DURATION_BUCKETS_MS: [f64; 14] = [
    0.5, 1.0, 2.5, 5.0, 10.0, 25.0, 50.0, 100.0, 250.0, 500.0, 1000.0, 2500.0, 5000.0, 10000.0,
];

/// Installs a Prometheus recorder as the process's global `metrics` recorder, with
/// [`DURATION_BUCKETS_MS`] for the duration histogram (so dashboards can aggregate p95 across
/// instances), and registers idem's metrics on it: every counter of every registered operation
/// at zero, each with its HELP text ([`register_metrics`]). Call it once, at startup.
pub fn install_recorder() -> Result<PrometheusHandle, BuildError> {
    let handle = PrometheusBuilder::new()
        .set_buckets_for_metric(
            Matcher::Full(WRITE_DURATION_MS.to_owned()),
            &DURATION_BUCKETS_MS,
        )?
        .install_recorder()?;
    register_metrics();
    Ok(handle)
}

/// `GET /metrics`: the metrics in Prometheus' text format.
pub fn metrics_service(handle: PrometheusHandle) -> Resource {
    web::resource("/metrics").route(web::get().to(move || {
        let body = handle.render();
        async move {
            HttpResponse::Ok()
                .insert_header(ContentType(
                    "text/plain; version=0.0.4"
                        .parse()
                        .expect("a valid media type"),
                ))
                .body(body)
        }
    }))
}
