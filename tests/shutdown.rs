//! The real process on SIGTERM: stops accepting, completes in-flight responses, closes WebSockets with
//! 1001, and exits 0.

use futures::StreamExt;
use http_body_util::BodyExt;
use hyper_util::rt::TokioIo;
use tideway_e2e::{PATIENCE, Tideway};
use tideway_testkit::tungstenite::Message;
use tideway_testkit::tungstenite::protocol::frame::coding::CloseCode;
use tideway_testkit::{TestReplica, http1_get, ws_connect};
use tokio::net::TcpStream;

#[tokio::test]
async fn sigterm_drains_then_exits_zero() {
    let backend = TestReplica::start("a").await.expect("backend");
    let mut tideway = Tideway::start(&format!(
        "[proxy]\nlisten = \"127.0.0.1:0\"\n\n[[app]]\nname = \"a\"\nhosts = [\"a.test\"]\n\
         [app.static]\naddresses = [\"{}\"]\n",
        backend.addr()
    ));
    let (status, headers, _) = http1_get(tideway.addr, "a.test", "/").await.expect("a response");
    assert_eq!(
        (status.as_u16(), headers["x-backend"].to_str().ok()),
        (200, Some("a"))
    );

    let stream = TcpStream::connect(tideway.addr).await.expect("connect");
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .expect("handshake");
    tokio::spawn(conn);
    let req = http::Request::get("/slow?chunks=5&ms=200")
        .header("host", "a.test")
        .body(http_body_util::Empty::<bytes::Bytes>::new())
        .expect("request");
    let response = sender.send_request(req).await.expect("headers");
    let mut ws = ws_connect(tideway.addr, "a.test", "/ws").await.expect("ws");

    tideway.signal("TERM");
    let body = tokio::time::timeout(PATIENCE, response.into_body().collect())
        .await
        .expect("the slow body in time")
        .expect("complete")
        .to_bytes();
    assert_eq!(
        body.iter().filter(|b| **b == b'\n').count(),
        5,
        "the in-flight response completed"
    );
    let close = loop {
        match tokio::time::timeout(PATIENCE, ws.next())
            .await
            .expect("a frame in time")
        {
            Some(Ok(Message::Close(frame))) => break frame,
            Some(Ok(_)) => continue,
            other => panic!("expected a close frame, got {other:?}"),
        }
    };
    assert_eq!(close.map(|f| f.code), Some(CloseCode::Away));
    drop(ws);
    let status = tideway.exited().await;
    assert_eq!(status.code(), Some(0));
    assert_eq!(tideway.events("draining connections").len(), 1);
    assert!(
        TcpStream::connect(tideway.addr).await.is_err(),
        "the listener is gone"
    );
}
