//! Test replicas and real clients for tideway's integration tests.
//!
//! A [`TestReplica`] is an app replica stand-in: a hyper HTTP/1.1 server with WebSocket and raw-upgrade
//! support on `127.0.0.1:<ephemeral>`, which counts what it sees (accepted connections, requests, open
//! sessions, close codes) so tests can assert on what tideway did upstream. Everything uses real sockets;
//! every task a test replica spawns stops when it is dropped.
//!
//! Routes (any method unless noted):
//! - default: `200` with a JSON echo of the request (`backend`, `method`, `path`, `version`, `headers`,
//!   `body_len`) and an `x-backend: <name>` header;
//! - `/slow?chunks=K&ms=N`: a streamed body of `K` chunks `chunk i\n` (`i` from 0), `N` ms before each;
//! - `/delay?ms=N`: the JSON echo, `N` ms late;
//! - `/status/{code}`: that status, empty body;
//! - `/abort`: `200` with `content-length: 1000`, 10 body bytes, then the TCP connection is dropped;
//! - `/bytes?n=N`: `N` bytes, for clients that stop reading;
//! - `/drop-next`: `200`, and the next request on the same connection is read but never answered — the
//!   connection is dropped instead (a keep-alive connection the server closes as it is reused);
//! - `/ws`: a WebSocket echo (`"whoami"` → name, `"close"` → backend-initiated close 1000);
//! - any request with `Upgrade: echo` + `Connection: upgrade`: `101`, then a raw byte echo until EOF.

mod client;
pub mod cluster;
mod raw;
mod replica;
mod routes;
mod session;
mod tunnel;
mod wait;
mod websocket;

pub use client::{http1_get, ws_connect};
pub use raw::{RawResponse, read_response};
pub use replica::{TestReplica, refused_addr};
/// Re-exported so tests can drive [`ws_connect`]'s stream without depending on tokio-tungstenite themselves.
pub use tokio_tungstenite::{self, tungstenite};
pub use wait::{eventually, within};
