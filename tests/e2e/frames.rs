//! Broken WebSocket frames from a raw client: each gets the RFC 6455 answer (close 1002
//! for protocol errors, 1007 for bad UTF-8), and the gateway keeps serving.

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::harness::{Gateway, WAIT, ask};
use crate::standard_config;

/// Opens a raw upgraded connection to /demo/echo.
async fn raw_upgrade(gateway: &Gateway) -> TcpStream {
    let mut tcp = TcpStream::connect(gateway.ws).await.unwrap();
    tcp.write_all(
        b"GET /demo/echo HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
          Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n",
    )
    .await
    .unwrap();
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        let mut byte = [0u8; 1];
        tcp.read_exact(&mut byte).await.unwrap();
        head.push(byte[0]);
    }
    assert!(
        head.starts_with(b"HTTP/1.1 101 "),
        "{}",
        String::from_utf8_lossy(&head)
    );
    tcp
}

/// A client frame: FIN/opcode byte, then the payload, masked unless `masked` is false.
fn frame(first: u8, payload: &[u8], masked: bool) -> Vec<u8> {
    assert!(payload.len() < 65536);
    let mut out = vec![first];
    let mask_bit = if masked { 0x80 } else { 0 };
    if payload.len() < 126 {
        out.push(mask_bit | payload.len() as u8);
    } else {
        out.push(mask_bit | 126);
        out.extend_from_slice(&(payload.len() as u16).to_be_bytes());
    }
    if masked {
        let key = [0x12, 0x34, 0x56, 0x78];
        out.extend_from_slice(&key);
        out.extend(payload.iter().enumerate().map(|(i, b)| b ^ key[i % 4]));
    } else {
        out.extend_from_slice(payload);
    }
    out
}

/// Reads server frames until a close frame; returns its code.
async fn close_code(tcp: &mut TcpStream) -> u16 {
    let read = async {
        loop {
            let mut header = [0u8; 2];
            tcp.read_exact(&mut header).await.unwrap();
            let mut len = u64::from(header[1] & 0x7f);
            if len == 126 {
                let mut ext = [0u8; 2];
                tcp.read_exact(&mut ext).await.unwrap();
                len = u64::from(u16::from_be_bytes(ext));
            } else if len == 127 {
                let mut ext = [0u8; 8];
                tcp.read_exact(&mut ext).await.unwrap();
                len = u64::from_be_bytes(ext);
            }
            let mut payload = vec![0u8; len as usize];
            tcp.read_exact(&mut payload).await.unwrap();
            if header[0] & 0x0f == 0x8 {
                assert!(payload.len() >= 2, "close without a code");
                return u16::from_be_bytes([payload[0], payload[1]]);
            }
        }
    };
    tokio::time::timeout(WAIT, read)
        .await
        .expect("no close frame")
}

/// Each protocol violation gets close 1002 (1007 for invalid UTF-8).
#[tokio::test]
async fn broken_frames_get_the_rfc_answer() {
    let gateway = Gateway::start(&standard_config()).await;
    let cases: Vec<(&str, Vec<u8>, u16)> = vec![
        ("reserved data opcode 0x3", frame(0x83, b"x", true), 1002),
        ("reserved control opcode 0xB", frame(0x8b, b"", true), 1002),
        ("unmasked client frame", frame(0x81, b"hello", false), 1002),
        ("ping with 126 bytes", frame(0x89, &[0u8; 126], true), 1002),
        ("fragmented ping", frame(0x09, b"x", true), 1002),
        (
            "continuation without a start",
            frame(0x80, b"x", true),
            1002,
        ),
        (
            "new message inside a fragmented one",
            [frame(0x01, b"a", true), frame(0x81, b"b", true)].concat(),
            1002,
        ),
        ("reserved bit set", frame(0xc1, b"x", true), 1002),
        (
            "close with reserved code 1005",
            frame(0x88, &1005u16.to_be_bytes(), true),
            1002,
        ),
        (
            "close with code 999",
            frame(0x88, &999u16.to_be_bytes(), true),
            1002,
        ),
        ("close with a 1-byte payload", frame(0x88, &[3], true), 1002),
        (
            "text that is not UTF-8",
            frame(0x81, &[0xc3, 0x28], true),
            1007,
        ),
        (
            "fragmented text split inside a bad sequence",
            [frame(0x01, &[0xe2, 0x82], true), frame(0x80, &[0x28], true)].concat(),
            1007,
        ),
    ];
    for (what, bytes, expected) in cases {
        let mut tcp = raw_upgrade(&gateway).await;
        tcp.write_all(&bytes).await.unwrap();
        assert_eq!(close_code(&mut tcp).await, expected, "{what}");
    }
    // A well-formed fragmented message with a ping between its fragments is answered
    // with a pong and reassembled for the plugin.
    let mut tcp = raw_upgrade(&gateway).await;
    tcp.write_all(
        &[
            frame(0x01, b"frag", true),
            frame(0x89, b"p", true),
            frame(0x80, b"mented", true),
        ]
        .concat(),
    )
    .await
    .unwrap();
    let mut seen = Vec::new();
    tokio::time::timeout(WAIT, async {
        while !String::from_utf8_lossy(&seen).contains("fragmented") {
            let mut chunk = [0u8; 256];
            let n = tcp.read(&mut chunk).await.unwrap();
            assert!(n > 0, "closed before the echo");
            seen.extend_from_slice(&chunk[..n]);
        }
    })
    .await
    .expect("no echo of the fragmented message");
    assert_eq!(&seen[..3], &[0x8a, 0x01, b'p'], "the pong comes first");

    let mut client = gateway.connect("/demo/echo").await;
    assert_eq!(ask(&mut client, "still serving").await, "still serving");
}
