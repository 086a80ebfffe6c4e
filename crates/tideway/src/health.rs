//! The metrics listener: `/metrics` for Prometheus, `/healthz` and `/readyz` for orchestrators. Safe to
//! expose inside a cluster: it shows counts, never configuration or secrets.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use http::{Method, Request, Response, StatusCode};
use hyper::body::Incoming;
use prometheus::{Encoder, Registry, TextEncoder};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::fleet::{AppView, FleetView};
use crate::http::{Body, respond, serve, text};

/// Serves the metrics listener until `shutdown`. `/readyz` answers 200 while `ready` is set — once the
/// configuration is in force, until shutdown starts — and every app of `fleet` has listed the replicas
/// it had (on Kubernetes, the first listing of its endpoints; the API server's later moods do not matter,
/// since routing goes on with the last endpoints seen).
pub(crate) fn serve_metrics(
    listener: TcpListener,
    shutdown: CancellationToken,
    registry: Registry,
    ready: Arc<AtomicBool>,
    fleet: FleetView,
) {
    let registry = Arc::new(registry);
    serve(listener, shutdown, move |req: Request<Incoming>| {
        let registry = Arc::clone(&registry);
        let ready = ready.load(Ordering::Acquire) && fleet.load().iter().all(AppView::is_listed);
        async move { route(&req, &registry, ready) }
    });
}

fn route(req: &Request<Incoming>, registry: &Registry, ready: bool) -> Response<Body> {
    if req.method() != Method::GET && req.method() != Method::HEAD {
        return text(StatusCode::METHOD_NOT_ALLOWED, "only GET\n");
    }
    match req.uri().path() {
        "/metrics" => {
            let encoder = TextEncoder::new();
            let mut exposition = Vec::new();
            match encoder.encode(&registry.gather(), &mut exposition) {
                Ok(()) => respond(
                    StatusCode::OK,
                    "text/plain; version=0.0.4; charset=utf-8",
                    exposition,
                ),
                Err(_) => text(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "metrics could not be encoded\n",
                ),
            }
        }
        "/healthz" => text(StatusCode::OK, "ok\n"),
        "/readyz" if ready => text(StatusCode::OK, "ready\n"),
        "/readyz" => text(StatusCode::SERVICE_UNAVAILABLE, "not ready\n"),
        _ => text(
            StatusCode::NOT_FOUND,
            "not found: try /metrics, /healthz or /readyz\n",
        ),
    }
}
