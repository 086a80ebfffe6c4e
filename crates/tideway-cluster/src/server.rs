//! The internal listener: peers post their reports here, and get this instance's latest report back —
//! so each report a peer sends refreshes its view of this instance within one round trip — and ask for
//! the sessions their clients came back with (`crate::handover`). A request without the shared secret
//! gets `401` and nothing else; a report is handed to the cluster task as it comes.

use std::convert::Infallible;
use std::sync::Arc;

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use tideway_core::App;

use crate::handover::{Ask, HANDOVER_PATH, give_up};
use crate::report::Report;
use crate::secret::constant_time_eq;
use crate::sender::Heard;

/// Where peers post reports.
pub(crate) const REPORT_PATH: &str = "/v1/report";

/// Largest report taken: thousands of replicas fit; a body past it is refused, not buffered.
const MAX_REPORT_BYTES: usize = 4 * 1024 * 1024;

/// What the internal listener answers with.
#[derive(Clone)]
pub(crate) struct Listener {
    pub(crate) secret: Arc<[u8]>,
    /// Where reports go: the cluster task.
    pub(crate) reports: mpsc::Sender<Heard>,
    /// This instance's latest report, the answer to each.
    pub(crate) own: watch::Receiver<Arc<Report>>,
    /// The shared apps, whose sessions peers ask for.
    pub(crate) apps: watch::Receiver<Arc<Vec<Arc<App>>>>,
}

/// Serves `listener` until `shutdown`: each request carrying the secret is answered as `answers` says.
pub(crate) fn serve(listener: TcpListener, answers: Listener, shutdown: CancellationToken) {
    tokio::spawn(async move {
        loop {
            let (stream, peer) = tokio::select! {
                accepted = listener.accept() => match accepted {
                    Ok(accepted) => accepted,
                    Err(error) => {
                        warn!(%error, "cluster listener: accept failed");
                        continue;
                    }
                },
                () = shutdown.cancelled() => return,
            };
            // A report is one small request: sent at once, not held back for more to send.
            let _ = stream.set_nodelay(true);
            let (answers, shutdown) = (answers.clone(), shutdown.clone());
            tokio::spawn(async move {
                let service = service_fn(move |req| answer(req, answers.clone()));
                let connection = http1::Builder::new().serve_connection(TokioIo::new(stream), service);
                tokio::select! {
                    served = connection => if let Err(error) = served {
                        debug!(%peer, %error, "cluster connection ended");
                    },
                    () = shutdown.cancelled() => {}
                }
            });
        }
    });
}

async fn answer(req: Request<Incoming>, answers: Listener) -> Result<Response<Full<Bytes>>, Infallible> {
    let presented = req
        .headers()
        .get(http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or_default();
    if !constant_time_eq(presented.as_bytes(), &answers.secret) {
        return Ok(status(StatusCode::UNAUTHORIZED));
    }
    let path = req.uri().path();
    if path != REPORT_PATH && path != HANDOVER_PATH {
        return Ok(status(StatusCode::NOT_FOUND));
    }
    if req.method() != Method::POST {
        return Ok(status(StatusCode::METHOD_NOT_ALLOWED));
    }
    let handover = path == HANDOVER_PATH;
    let body = match Limited::new(req.into_body(), MAX_REPORT_BYTES).collect().await {
        Ok(body) => body.to_bytes(),
        Err(_) => return Ok(status(StatusCode::PAYLOAD_TOO_LARGE)),
    };
    if handover {
        let apps = Arc::clone(&answers.apps.borrow());
        let outcome = serde_json::from_slice::<Ask>(&body)
            .ok()
            .and_then(|ask| give_up(&apps, &ask));
        return Ok(outcome.map_or_else(|| status(StatusCode::BAD_REQUEST), |outcome| json(&outcome)));
    }
    let Ok(report) = serde_json::from_slice::<Report>(&body) else {
        return Ok(status(StatusCode::BAD_REQUEST));
    };
    // The cluster task ends only with tideway.
    let _ = answers.reports.send(Heard::Report(report)).await;
    let latest = Arc::clone(&answers.own.borrow());
    Ok(json(&*latest))
}

fn json(value: &impl serde::Serialize) -> Response<Full<Bytes>> {
    let Ok(body) = serde_json::to_vec(value) else {
        return status(StatusCode::INTERNAL_SERVER_ERROR);
    };
    let mut response = Response::new(Full::new(Bytes::from(body)));
    response.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/json"),
    );
    response
}

fn status(code: StatusCode) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::new()));
    *response.status_mut() = code;
    response
}
