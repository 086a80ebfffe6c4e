//! Tideway's own answers on an HTTP/1.1 connection: refusals, rejections, and the gateway's errors.

use std::sync::Arc;

use http::StatusCode;
use tideway_core::{App, RejectReason, Replica};
use tracing::debug;

use crate::h1::Conn;
use crate::handler::rejection;
use crate::message::framing::Framing;
use crate::message::head::{self, RequestHead, Said};
use crate::record::{Outcome, Record};

use super::Next;
use super::relay::write_to_client;

/// Answers a request that cannot be parsed; false if the client is gone.
pub(in crate::h1) async fn refuse(conn: &mut Conn, status: StatusCode, text: &'static str) -> bool {
    let shared = &conn.shared;
    let record = Record::open(
        conn.client.request_started(None),
        None,
        None,
        Arc::clone(&shared.metrics),
        shared.settings.load().access_log,
    );
    let written = write_own(conn, record, status, text, Said::Nothing, true).await;
    debug!(peer = %conn.client.peer(), status = status.as_u16(), written, "request refused");
    written
}

/// Answers a request that got no seat (counted as rejected).
pub(super) async fn unseated(
    conn: &mut Conn,
    head: &RequestHead,
    record: Record,
    app: &App,
    reason: RejectReason,
) -> Next {
    let (refusal, retry_after) = rejection(app, reason);
    let said = retry_after.map_or(Said::Nothing, Said::RetryAfter);
    reply(conn, head, record, refusal.status, refusal.text, said).await
}

/// Answers a request its replica failed before answering (`text` says how).
pub(super) async fn bad_gateway(
    conn: &mut Conn,
    head: &RequestHead,
    record: Record,
    app: &App,
    replica: &Replica,
    text: &'static str,
) -> Next {
    debug!(
        app = app.name(),
        replica = replica.name(),
        text,
        "replica failed the request"
    );
    reply(conn, head, record, StatusCode::BAD_GATEWAY, text, Said::Nothing).await
}

/// Answers a request with one of tideway's own responses.
pub(super) async fn reply(
    conn: &mut Conn,
    head: &RequestHead,
    record: Record,
    status: StatusCode,
    text: &'static str,
    said: Said<'_>,
) -> Next {
    // A body tideway did not read would be taken for the next request.
    let unread = head.body != Framing::Empty;
    let close = unread || !head.keep_alive || conn.client.is_closing();
    if !write_own(conn, record, status, text, said, close).await {
        return Next::Close;
    }
    match (close, unread) {
        (true, true) => Next::CloseUnread,
        (true, false) => Next::Close,
        (false, _) => Next::KeepAlive,
    }
}

/// Writes one of tideway's own responses; false if the client is gone.
pub(super) async fn write_own(
    conn: &mut Conn,
    mut record: Record,
    status: StatusCode,
    text: &str,
    said: Said<'_>,
    close: bool,
) -> bool {
    let response = head::own_response(status, text, said, close);
    record.set_status(status);
    record.count(text.len());
    let (_, mut writer) = conn.stream.split();
    let written = write_to_client(&mut writer, &conn.client, &response)
        .await
        .is_ok();
    record.finish(
        None,
        if written {
            Outcome::Complete
        } else {
            Outcome::ClientGone
        },
    );
    written
}
