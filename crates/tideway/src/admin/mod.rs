//! The admin listener: a JSON API over the running apps (read, and change a policy) and the instance's
//! peers, and a live status page.
//! On loopback by default; anywhere else a bearer token is required (from `token_file` or `token_env`).

mod api;

use std::sync::Arc;

use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;
use tideway_cluster::{Cluster, constant_time_eq};
use tideway_config::AdminSettings;
use tideway_proxy::{Proxy, RuntimeClock};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::fleet::FleetView;
use crate::http::{Body, json, respond, serve, text};
use crate::secret::{SecretError, load_secret};

/// The status page, embedded: it polls `api/apps` and needs nothing from the network.
const STATUS_PAGE: &str = include_str!("status.html");
/// Largest request body the API reads (a policy change is a few hundred bytes).
const MAX_BODY: usize = 64 * 1024;

/// What the admin API shows.
pub(crate) struct Served {
    /// The apps.
    pub(crate) fleet: FleetView,
    /// The data plane: its certificates.
    pub(crate) proxy: Arc<Proxy>,
    /// The instance's peers, with `[cluster]`.
    pub(crate) cluster: Option<Cluster>,
}

/// What the admin handlers read.
struct Admin {
    fleet: FleetView,
    proxy: Arc<Proxy>,
    clock: RuntimeClock,
    token: Option<Vec<u8>>,
    cluster: Option<Cluster>,
}

/// Reads the configured admin token, if any.
pub(crate) fn load_token(settings: &AdminSettings) -> Result<Option<Vec<u8>>, SecretError> {
    load_secret(
        "admin",
        "token",
        settings.token_file.as_deref(),
        settings.token_env.as_deref(),
    )
}

/// Serves the admin listener until `shutdown`.
pub(crate) fn serve_admin(
    listener: TcpListener,
    shutdown: CancellationToken,
    served: Served,
    clock: RuntimeClock,
    token: Option<Vec<u8>>,
) {
    let admin = Arc::new(Admin {
        fleet: served.fleet,
        proxy: served.proxy,
        clock,
        token,
        cluster: served.cluster,
    });
    serve(listener, shutdown, move |req: Request<Incoming>| {
        let admin = Arc::clone(&admin);
        async move { admin.route(req).await }
    });
}

impl Admin {
    async fn route(&self, req: Request<Incoming>) -> Response<Body> {
        let path = req.uri().path().trim_end_matches('/').to_owned();
        let segments: Vec<&str> = path.split('/').skip(1).collect();
        let method = req.method().clone();
        // The page itself holds no data; it asks for the token when the API answers 401.
        if segments.is_empty() || segments == [""] {
            return match method {
                Method::GET | Method::HEAD => {
                    respond(StatusCode::OK, "text/html; charset=utf-8", STATUS_PAGE)
                }
                _ => text(StatusCode::METHOD_NOT_ALLOWED, "only GET\n"),
            };
        }
        // Without a token the listener is on loopback, and the Host is all that tells a local tool from a
        // web page that had its own name resolve to 127.0.0.1 (DNS rebinding).
        if self.token.is_none() && !loopback_host(&req) {
            return json(
                StatusCode::FORBIDDEN,
                &serde_json::json!({ "error": "without an admin token only loopback host names are served (localhost, 127.0.0.1, [::1])" }),
            );
        }
        if !self.authorized(&req) {
            let mut response = json(
                StatusCode::UNAUTHORIZED,
                &serde_json::json!({ "error": "a bearer token is required: Authorization: Bearer <token>" }),
            );
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"tideway\""),
            );
            return response;
        }
        let fleet = self.fleet.load();
        let now = self.clock.now();
        match (&method, segments.as_slice()) {
            (&Method::GET, ["api", "apps"]) => {
                let cluster = self.cluster.as_ref().map(Cluster::view);
                let certificates = api::certificates(&self.proxy.certificates());
                json(
                    StatusCode::OK,
                    &api::apps(&fleet, now, cluster.as_deref(), certificates),
                )
            }
            (&Method::GET, ["api", "certificates"]) => {
                json(StatusCode::OK, &api::certificates(&self.proxy.certificates()))
            }
            (&Method::GET, ["api", "cluster"]) => match &self.cluster {
                Some(cluster) => json(StatusCode::OK, &serde_json::json!(*cluster.view())),
                None => json(
                    StatusCode::NOT_FOUND,
                    &serde_json::json!({ "error": "this instance runs alone: no [cluster]" }),
                ),
            },
            (&Method::GET, ["api", "apps", name]) => {
                match fleet.iter().find(|v| v.app.name() == *name && v.is_shown()) {
                    Some(view) => json(StatusCode::OK, &api::app(view, now)),
                    None => not_found(name),
                }
            }
            (&Method::PUT | &Method::PATCH, ["api", "apps", name, "policy"]) => {
                // A removed app only drains: it has no policy to change.
                let Some(view) = fleet.iter().find(|v| v.app.name() == *name && !v.removed) else {
                    return not_found(name);
                };
                // A browser sends text/plain across origins without asking first; application/json it
                // must ask for (CORS preflight), which this listener never grants.
                if !is_json(&req) {
                    return json(
                        StatusCode::UNSUPPORTED_MEDIA_TYPE,
                        &serde_json::json!({ "error": "a policy change must be sent as Content-Type: application/json" }),
                    );
                }
                match read_body(req).await {
                    Ok(body) => api::change_policy(view, &body),
                    Err(response) => response,
                }
            }
            (_, ["api", ..]) => json(
                StatusCode::NOT_FOUND,
                &serde_json::json!({ "error": "no such endpoint: see GET /api/apps" }),
            ),
            _ => text(StatusCode::NOT_FOUND, "not found\n"),
        }
    }

    /// Whether the request carries the token (or none is needed). Compared in constant time, so the
    /// response time does not tell how much of a guess was right.
    fn authorized(&self, req: &Request<Incoming>) -> bool {
        let Some(expected) = &self.token else {
            return true;
        };
        // The scheme is case-insensitive (RFC 9110 §11.1).
        let presented = req
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().split_once(' '))
            .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
            .map(|(_, token)| token.trim())
            .unwrap_or_default();
        constant_time_eq(presented.as_bytes(), expected)
    }
}

/// Whether the request names a loopback host — `localhost` or a name under it, a loopback IPv4 address or
/// `[::1]`, with any port — or none (a client without `Host` is no browser).
fn loopback_host(req: &Request<Incoming>) -> bool {
    let host = req.uri().authority().map(|a| a.host().to_owned()).or_else(|| {
        let value = req.headers().get(header::HOST)?.to_str().ok()?;
        let authority: http::uri::Authority = value.parse().ok()?;
        Some(authority.host().to_owned())
    });
    let Some(host) = host else {
        return req.headers().get(header::HOST).is_none();
    };
    let host = host.trim_end_matches('.').to_ascii_lowercase();
    host == "localhost"
        || host.ends_with(".localhost")
        || host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// Whether the request body is declared as JSON (`application/json`, parameters allowed).
fn is_json(req: &Request<Incoming>) -> bool {
    req.headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|media| media.trim().eq_ignore_ascii_case("application/json"))
}

async fn read_body(req: Request<Incoming>) -> Result<Bytes, Response<Body>> {
    match Limited::new(req.into_body(), MAX_BODY).collect().await {
        Ok(body) => Ok(body.to_bytes()),
        Err(_) => Err(json(
            StatusCode::PAYLOAD_TOO_LARGE,
            &serde_json::json!({ "error": "the body is larger than 64 KiB" }),
        )),
    }
}

fn not_found(name: &str) -> Response<Body> {
    json(
        StatusCode::NOT_FOUND,
        &serde_json::json!({ "error": format!("no app named {name:?}") }),
    )
}
