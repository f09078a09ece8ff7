//! Slow and idle clients: header and body timeouts, idle keep-alive connections.
//! Raw loopback sockets; every wait is bounded by a generous liveness limit, never a threshold.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::timeout;

use crate::common::*;

/// Far above any of the small test timeouts; only turns "never closed" into a failure.
const LIVENESS: Duration = Duration::from_secs(10);

/// Everything the server sends until it closes the connection, or `None` if it is still open
/// after `LIVENESS`. A reset counts as closed.
async fn read_until_closed(s: &mut TcpStream) -> Option<Vec<u8>> {
    timeout(LIVENESS, async {
        let mut out = Vec::new();
        let mut chunk = [0u8; 4096];
        // Bounded: a response here is a few hundred bytes.
        for _ in 0..1024 {
            match s.read(&mut chunk).await {
                Ok(0) | Err(_) => break,
                Ok(n) => out.extend_from_slice(&chunk[..n]),
            }
        }
        out
    })
    .await
    .ok()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_hundred_idle_connections_neither_block_requests_nor_stay_open() {
    let h = harness_with(|c| c.header_timeout_ms = 300).await;
    let http = unpooled_client();
    let mut idle = Vec::with_capacity(300);
    for _ in 0..300 {
        idle.push(
            TcpStream::connect(h.server.addr)
                .await
                .expect("loopback connect"),
        );
    }
    let login = timeout(
        LIVENESS,
        read(
            http.post(h.url("/auth/login"))
                .json(&serde_json::json!({"username": "demo", "password": "demo"})),
        ),
    )
    .await
    .expect("answered while 300 connections sit idle");
    assert_eq!(login.status, 200, "{}", login.text);
    let api = timeout(
        LIVENESS,
        read(
            http.get(h.url("/statistics"))
                .bearer_auth(login.str("access_token")),
        ),
    )
    .await
    .expect("answered");
    assert_eq!(api.status, 200);
    let mut closed = 0;
    for s in idle.iter_mut() {
        let got = read_until_closed(s)
            .await
            .expect("an idle connection is closed by the server");
        assert!(got.is_empty(), "closed without an answer: {got:?}");
        closed += 1;
    }
    assert_eq!(closed, 300);
    drop(idle);
}

#[tokio::test]
async fn a_half_sent_request_head_is_closed_after_the_header_timeout() {
    let h = harness_with(|c| c.header_timeout_ms = 300).await;
    let mut s = TcpStream::connect(h.server.addr).await.expect("connect");
    s.write_all(b"POST /auth/refresh-token HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Ty")
        .await
        .expect("write");
    let got = read_until_closed(&mut s)
        .await
        .expect("a slowloris head is cut off");
    assert!(got.is_empty(), "closed without an answer: {got:?}");
    // The server itself is unaffected.
    let fresh = read(unpooled_client().get(h.url("/statistics"))).await;
    assert_eq!(fresh.status, 401);
}

#[tokio::test]
async fn an_idle_keep_alive_connection_is_closed_after_the_header_timeout() {
    let h = harness_with(|c| c.header_timeout_ms = 300).await;
    let mut s = TcpStream::connect(h.server.addr).await.expect("connect");
    s.write_all(b"GET /statistics HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        .await
        .expect("write");
    let got = read_until_closed(&mut s)
        .await
        .expect("closed once idle after its answer");
    let text = String::from_utf8_lossy(&got);
    assert!(text.starts_with("HTTP/1.1 401"), "{text}");
    assert_eq!(text.matches("HTTP/1.1").count(), 1, "{text}");
}

#[tokio::test]
async fn a_stalled_request_body_gets_408_and_the_connection_closes() {
    let h = harness_with(|c| c.body_timeout_ms = 300).await;
    let mut s = TcpStream::connect(h.server.addr).await.expect("connect");
    s.write_all(
        b"POST /auth/refresh-token HTTP/1.1\r\nHost: 127.0.0.1\r\n\
          Content-Type: application/json\r\nContent-Length: 100\r\n\r\n{\"refresh_tok",
    )
    .await
    .expect("write");
    let got = read_until_closed(&mut s)
        .await
        .expect("answered and closed");
    let text = String::from_utf8_lossy(&got).to_ascii_lowercase();
    assert!(text.starts_with("http/1.1 408"), "{text}");
    assert!(text.contains("connection: close"), "{text}");
    assert!(text.contains("\"error\":\"invalid_request\""), "{text}");
    assert_eq!(h.stat("refresh_ok").await, 0);
}

#[tokio::test]
async fn default_timeouts_leave_normal_traffic_alone_and_announce_keep_alive() {
    let h = harness().await;
    assert_eq!(h.server.config().header_timeout_ms, 10_000);
    assert_eq!(h.server.config().body_timeout_ms, 10_000);
    let p = h.login().await;
    let r = h.get("/statistics", Some(&p.access)).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.header("keep-alive").as_deref(), Some("timeout=10"));
    // A body sent in pieces, well within the limit, is read whole.
    let mut s = TcpStream::connect(h.server.addr).await.expect("connect");
    let body = format!("{{\"refresh_token\":\"{}\"}}", p.refresh);
    let head = format!(
        "POST /auth/refresh-token HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    s.write_all(head.as_bytes()).await.expect("write");
    let (a, b) = body.split_at(10);
    s.write_all(a.as_bytes()).await.expect("write");
    tokio::time::sleep(Duration::from_millis(50)).await;
    s.write_all(b.as_bytes()).await.expect("write");
    let got = read_until_closed(&mut s).await.expect("answered");
    let text = String::from_utf8_lossy(&got);
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
}

#[test]
fn timeout_flags_parse() {
    use token_server::{Command, Config};
    let Ok(Command::Run(c)) =
        Config::from_args(["--header-timeout-ms", "300", "--body-timeout-ms=0"])
    else {
        panic!("parses");
    };
    assert_eq!(c.header_timeout_ms, 300);
    assert_eq!(c.body_timeout_ms, 0, "0 = off");
    for bad in [
        ["--header-timeout-ms", "-1"],
        ["--header-timeout-ms", "1.5"],
        ["--body-timeout-ms", "soon"],
        ["--body-timeout-ms", "99999999999"],
    ] {
        assert!(Config::from_args(bad).is_err(), "{bad:?}");
    }
}
