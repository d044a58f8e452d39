//! One task per connection: a reader that turns frames into plugin events, in order,
//! and a writer that drains the outbound queue, polled together so a slow plugin call
//! never delays delivery to its own connection.
//!
//! Close codes the gateway sends: 1009 for an oversize message, 1007 for invalid UTF-8,
//! 1002 for a protocol violation, 1001 when the gateway shuts down, and whatever a
//! `disconnect` asked for.

use std::sync::Arc;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::{Error as WsError, Message};
use tokio_util::sync::CancellationToken;
use tracing::{debug, error, warn};

use crate::plugin::{self, Plugin};
use crate::registry::{Connection, new_connection_id};
use crate::tenant::{Route, Tenant};

/// How long to wait for the peer's half of a close handshake.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(5);
/// Most queued messages written before one flush.
const WRITE_BATCH: usize = 64;

type Sink = futures_util::stream::SplitSink<WebSocketStream<TcpStream>, Message>;
type Stream = futures_util::stream::SplitStream<WebSocketStream<TcpStream>>;

/// How the reader ended.
enum ReadEnd {
    /// The peer sent a close frame (and tungstenite answered it), or just a FIN.
    PeerClosed(Option<CloseFrame>),
    /// The peer broke a rule; this close must be sent.
    Violation(CloseFrame),
    /// The socket failed without a close handshake.
    Dropped,
}

/// Serves an upgraded connection until it closes, then runs `$disconnect` and removes it.
pub async fn run(
    ws: WebSocketStream<TcpStream>,
    connection: Arc<Connection>,
    outbound: mpsc::Receiver<Message>,
    tenant: &Tenant,
    route: &Route,
    shutdown: CancellationToken,
) {
    let (mut sink, mut stream) = ws.split();
    let mut linger = false;
    let (code, reason) = {
        let reader = read_loop(
            &mut stream,
            &connection,
            route,
            tenant.limits.max_message_bytes,
        );
        let writer = write_loop(&mut sink, outbound, &connection);
        tokio::pin!(reader, writer);
        tokio::select! {
            end = &mut reader => match end {
                ReadEnd::PeerClosed(frame) => {
                    connection.mark_closing();
                    frame.map_or((1005, String::new()), |f| (f.code.into(), f.reason.to_string()))
                }
                ReadEnd::Violation(frame) => {
                    let sent = (u16::from(frame.code), frame.reason.to_string());
                    // The writer owns the sink: ask it to send the close.
                    let _ = connection.close(frame);
                    linger = tokio::time::timeout(CLOSE_TIMEOUT, &mut writer).await.is_ok_and(|s| s.is_some());
                    sent
                }
                ReadEnd::Dropped => {
                    connection.mark_closing();
                    (1006, String::new())
                }
            },
            sent = &mut writer => match sent {
                // We closed: let the reader finish its current event and see the reply.
                Some(frame) => {
                    let _ = tokio::time::timeout(CLOSE_TIMEOUT, &mut reader).await;
                    (frame.code.into(), frame.reason.to_string())
                }
                None => {
                    connection.mark_closing();
                    (1006, String::new())
                }
            },
            () = shutdown.cancelled() => {
                let _ = connection.close(CloseFrame { code: CloseCode::Away, reason: "gateway shutting down".into() });
                let _ = tokio::time::timeout(CLOSE_TIMEOUT, &mut writer).await;
                (1001, "gateway shutting down".to_owned())
            }
        }
    };
    debug!(code, reason = %reason, "closed");
    if linger && let Ok(ws) = sink.reunite(stream) {
        lingering_close(ws.into_inner()).await;
    }

    if let Some(plugin) = &route.disconnect
        && let Err(err) = plugin
            .on_disconnect(&route.template, &connection.meta.id, code, &reason)
            .await
    {
        error!(plugin = %plugin.name(), kind = %err.kind(), error = %err, "$disconnect failed");
    }
    tenant.registry.remove(connection.id());
}

/// After closing for a client error, the client may still be sending (the rest of an
/// oversize message). Dropping a socket with unread input makes the kernel send a reset,
/// which can destroy our close frame before the client reads it; so half-close, discard
/// input until the client closes too, and only then drop.
async fn lingering_close(mut tcp: TcpStream) {
    let _ = tcp.shutdown().await;
    let mut discard = [0u8; 4096];
    let _ = tokio::time::timeout(CLOSE_TIMEOUT, async {
        while matches!(tcp.read(&mut discard).await, Ok(n) if n > 0) {}
    })
    .await;
}

async fn read_loop(
    stream: &mut Stream,
    connection: &Connection,
    route: &Route,
    max_message_bytes: usize,
) -> ReadEnd {
    let mut peer_close = None;
    while let Some(item) = stream.next().await {
        match item {
            Ok(message @ (Message::Text(_) | Message::Binary(_))) => {
                connection.touch();
                dispatch(connection, route, message, max_message_bytes).await;
            }
            Ok(Message::Ping(_) | Message::Pong(_)) => connection.touch(),
            // Keep reading: tungstenite sends the reply close on the next read, then ends.
            Ok(Message::Close(frame)) => peer_close = Some(frame),
            Ok(Message::Frame(_)) => {}
            Err(WsError::ConnectionClosed | WsError::AlreadyClosed) => break,
            Err(WsError::Capacity(err)) => return violation(CloseCode::Size, format!("message too big: {err}")),
            Err(WsError::Utf8(_)) => return violation(CloseCode::Invalid, "invalid UTF-8 in a text message".into()),
            Err(WsError::Protocol(err)) if !matches!(err, tokio_tungstenite::tungstenite::error::ProtocolError::ResetWithoutClosingHandshake) => {
                return violation(CloseCode::Protocol, err.to_string());
            }
            Err(err) => {
                debug!(error = %err, "socket failed");
                return ReadEnd::Dropped;
            }
        }
    }
    match peer_close {
        Some(frame) => ReadEnd::PeerClosed(frame),
        None => ReadEnd::Dropped,
    }
}

fn violation(code: CloseCode, reason: String) -> ReadEnd {
    debug!(code = u16::from(code), %reason, "closing for a client error");
    let mut reason = reason;
    // A close frame has room for 123 bytes of reason.
    if reason.len() > 123 {
        let mut end = 123;
        while !reason.is_char_boundary(end) {
            end -= 1;
        }
        reason.truncate(end);
    }
    ReadEnd::Violation(CloseFrame {
        code,
        reason: reason.into(),
    })
}

/// Writes queued messages, flushing once per burst; sends the close when one is asked
/// for (after what was queued before it). Returns the close it sent, or `None` when
/// the socket failed.
async fn write_loop(
    sink: &mut Sink,
    mut outbound: mpsc::Receiver<Message>,
    connection: &Connection,
) -> Option<CloseFrame> {
    loop {
        tokio::select! {
            biased;
            frame = connection.close_requested() => {
                while let Ok(message) = outbound.try_recv() {
                    if sink.feed(message).await.is_err() {
                        return None;
                    }
                }
                return match sink.send(Message::Close(Some(frame.clone()))).await {
                    Ok(()) => Some(frame),
                    Err(_) => None,
                };
            }
            message = outbound.recv() => {
                let message = message?;
                if sink.feed(message).await.is_err() {
                    return None;
                }
                for _ in 1..WRITE_BATCH {
                    let Ok(message) = outbound.try_recv() else { break };
                    if sink.feed(message).await.is_err() {
                        return None;
                    }
                }
                if sink.flush().await.is_err() {
                    return None;
                }
            }
        }
    }
}

/// Runs the plugin a message selects and queues its reply.
async fn dispatch(
    connection: &Connection,
    route: &Route,
    message: Message,
    max_message_bytes: usize,
) {
    let Some((key, plugin)) = route.select(&message) else {
        // As AWS answers a message that matches no route and there is no $default.
        return error_frame(connection, "Forbidden").await;
    };
    let Some(guest_message) = plugin::message_from_ws(&message) else {
        return;
    };
    drop(message);
    match plugin
        .on_message(&route.template, &connection.meta.id, &key, &guest_message)
        .await
    {
        Ok(Some(reply)) => {
            reply_to(
                connection,
                plugin,
                plugin::message_to_ws(reply),
                max_message_bytes,
            )
            .await
        }
        Ok(None) => {}
        Err(err) => {
            error!(plugin = %plugin.name(), route_key = %key, kind = %err.kind(), error = %err, "message handler failed");
            error_frame(connection, "Internal server error").await;
        }
    }
}

/// Queues a reply, waiting for room. The tenant's size cap applies to replies too.
async fn reply_to(connection: &Connection, plugin: &Plugin, reply: Message, limit: usize) {
    if reply.len() > limit {
        warn!(plugin = %plugin.name(), size = reply.len(), limit, "reply larger than the tenant's max message size; dropped");
        return error_frame(connection, "Internal server error").await;
    }
    let _ = connection.send_reply(reply).await;
}

/// Sends an error frame shaped as AWS sends them.
async fn error_frame(connection: &Connection, message: &str) {
    let body = serde_json::json!({
        "message": message,
        "connectionId": &*connection.meta.id,
        "requestId": &*new_connection_id(),
    });
    let _ = connection.send_reply(Message::text(body.to_string())).await;
}
