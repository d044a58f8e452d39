//! One task per connection: a reader that turns frames into plugin events, in order,
//! and a writer that drains the outbound queue, polled together so a slow plugin call
//! never delays delivery to its own connection.
//!
//! Close codes the gateway sends:
//! - 1009: an oversize message;
//! - 1007: invalid UTF-8;
//! - 1002: a protocol violation;
//! - 1008: a sustained message flood;
//! - 1001: idle timeout, maximum age, or gateway shutdown;
//! - otherwise, whatever a `disconnect` asked for.
//!
//! A client that stops reading is dropped after the tenant's write timeout, and a
//! client that does not answer pings is dropped at the next ping.

use std::sync::Arc;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Instant;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::error::ProtocolError;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::{Error as WsError, Message};
use tokio_util::sync::CancellationToken;
use tracing::{debug, error, warn};

use crate::config::TenantLimits;
use crate::lazy_read::LazyReadStream;
use crate::plugin::{self, Plugin};
use crate::registry::{Connection, Outbound, new_connection_id};
use crate::tenant::{Route, Tenant};

/// How long to wait for the peer's half of a close handshake.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(5);

/// The writing half of an upgraded connection.
pub type Sink = futures_util::stream::SplitSink<WebSocketStream<LazyReadStream>, Message>;
/// The reading half of an upgraded connection.
pub type Stream = futures_util::stream::SplitStream<WebSocketStream<LazyReadStream>>;

/// How the writer ended, when it ended first.
enum WriteEnd {
    /// It sent this close frame, as asked.
    Closed(CloseFrame),
    /// The socket failed.
    Failed,
    /// Nothing could be written for the tenant's write timeout: the client is not reading.
    SlowConsumer,
}

/// How the reader ended.
enum ReadEnd {
    /// The peer sent a close frame (and tungstenite answered it), or just a FIN.
    PeerClosed(Option<CloseFrame>),
    /// The gateway closes: the peer broke a rule, or a timer expired. This close must
    /// be sent.
    Closing(CloseFrame),
    /// The client did not answer the previous ping.
    DeadPeer,
    /// The socket failed without a close handshake.
    Dropped,
}

/// Serves an upgraded connection until it closes, then runs `$disconnect` and removes it.
pub async fn run(
    (mut sink, mut stream): (Sink, Stream),
    connection: Arc<Connection>,
    outbound: Outbound,
    tenant: &Tenant,
    route: &Route,
    shutdown: CancellationToken,
) {
    let mut linger = false;
    let (code, reason) = {
        // Pinned where they are built: a move would make the task reserve room for
        // each future twice, and every idle connection pays for that space.
        let mut reader = std::pin::pin!(read_loop(&mut stream, &connection, route, tenant));
        let mut writer =
            std::pin::pin!(write_loop(&mut sink, outbound, &connection, &tenant.limits));
        tokio::select! {
            end = &mut reader => match end {
                ReadEnd::PeerClosed(frame) => {
                    connection.mark_closing();
                    frame.map_or((1005, String::new()), |f| (f.code.into(), f.reason.to_string()))
                }
                ReadEnd::Closing(frame) => {
                    let sent = (u16::from(frame.code), frame.reason.to_string());
                    // The writer owns the sink: ask it to send the close.
                    let _ = connection.close(frame);
                    linger = matches!(tokio::time::timeout(CLOSE_TIMEOUT, &mut writer).await, Ok(WriteEnd::Closed(_)));
                    sent
                }
                ReadEnd::DeadPeer => {
                    connection.mark_closing();
                    tenant.metrics.limit_hit("dead_peer");
                    (1006, "no answer to ping".to_owned())
                }
                ReadEnd::Dropped => {
                    connection.mark_closing();
                    (1006, String::new())
                }
            },
            end = &mut writer => match end {
                // We closed: let the reader finish its current event and see the reply.
                WriteEnd::Closed(frame) => {
                    let _ = tokio::time::timeout(CLOSE_TIMEOUT, &mut reader).await;
                    (frame.code.into(), frame.reason.to_string())
                }
                // No close frame can reach a client that reads nothing: the socket is
                // dropped, and $disconnect hears why.
                WriteEnd::SlowConsumer => {
                    connection.mark_closing();
                    tenant.metrics.limit_hit("slow_consumer");
                    (1008, "slow consumer".to_owned())
                }
                WriteEnd::Failed => {
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
    // Futures awaited here and in `read_loop` are boxed: a plugin event's future is
    // large and lives only while it runs, and inline it would be part of every
    // connection's task for the connection's whole life (idle ones included).
    if linger && let Ok(ws) = sink.reunite(stream) {
        Box::pin(lingering_close(ws.into_inner().into_inner())).await;
    }

    if let Some(plugin) = &route.disconnect
        && let Err(err) =
            Box::pin(plugin.on_disconnect(&route.template, &connection.meta.id, code, &reason))
                .await
    {
        error!(plugin = %plugin.name(), kind = %err.kind(), error = %err, "$disconnect failed");
    }
    tenant.registry.remove(connection.id());
    tenant.metrics.connection_closed(code);
}

/// After the gateway closes, the client may still be sending (the rest of an oversize
/// message, a flood). Dropping a socket with unread input makes the kernel send a reset,
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

/// A token bucket for the client's incoming messages.
struct MessageRate {
    tokens: f64,
    rate: f64,
    burst: f64,
    refilled: Instant,
    /// Messages dropped since the last accepted one.
    dropped: u32,
}

impl MessageRate {
    /// The tenant's bucket, or `None` when it sets no rate.
    fn new(limits: &TenantLimits) -> Option<Self> {
        let rate = limits.message_rate?;
        let burst = limits.message_burst.unwrap_or(rate);
        Some(Self {
            tokens: f64::from(burst),
            rate: f64::from(rate),
            burst: f64::from(burst),
            refilled: Instant::now(),
            dropped: 0,
        })
    }

    /// Whether a message may pass now.
    fn allow(&mut self, now: Instant) -> bool {
        let elapsed = now.saturating_duration_since(self.refilled).as_secs_f64();
        self.refilled = now;
        self.tokens = (self.tokens + elapsed * self.rate).min(self.burst);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            self.dropped = 0;
            true
        } else {
            self.dropped += 1;
            false
        }
    }
}

fn closing(code: CloseCode, reason: impl Into<String>) -> ReadEnd {
    let mut reason = reason.into();
    debug!(code = u16::from(code), %reason, "the gateway closes the connection");
    // A close frame has room for 123 bytes of reason.
    if reason.len() > 123 {
        let mut end = 123;
        while !reason.is_char_boundary(end) {
            end -= 1;
        }
        reason.truncate(end);
    }
    ReadEnd::Closing(CloseFrame {
        code,
        reason: reason.into(),
    })
}

async fn read_loop(
    stream: &mut Stream,
    connection: &Connection,
    route: &Route,
    tenant: &Tenant,
) -> ReadEnd {
    let limits = &tenant.limits;
    let mut peer_close = None;
    let mut rate = MessageRate::new(limits);
    let expires = Instant::now() + limits.max_connection_age;
    let mut idle_until = Instant::now() + limits.idle_timeout;
    let mut next_ping = Instant::now() + limits.ping_interval;
    // Set when the gateway pings; cleared by any frame from the peer.
    let mut awaiting_pong = false;
    // One timer for idle, age and ping, re-armed only when it fires: activity just moves
    // `idle_until`, so a message costs no timer operation, and an idle connection
    // carries one timer, not two.
    let mut timer = std::pin::pin!(tokio::time::sleep_until(
        idle_until.min(expires).min(next_ping)
    ));
    loop {
        let item = tokio::select! {
            biased;
            item = stream.next() => item,
            () = &mut timer, if peer_close.is_none() => {
                let now = Instant::now();
                if now >= expires {
                    tenant.metrics.limit_hit("max_age");
                    return closing(CloseCode::Away, "maximum connection age reached");
                }
                if now >= idle_until {
                    tenant.metrics.limit_hit("idle");
                    return closing(CloseCode::Away, "idle timeout");
                }
                if now >= next_ping {
                    if awaiting_pong {
                        debug!("no answer to the last ping: the peer is gone");
                        return ReadEnd::DeadPeer;
                    }
                    awaiting_pong = true;
                    // Pings go through the queue: the writer owns the sink. An empty
                    // ping takes none of the byte budget.
                    let _ = connection.send(Message::Ping(Default::default()));
                    next_ping = now + limits.ping_interval;
                }
                timer.as_mut().reset(idle_until.min(expires).min(next_ping));
                continue;
            }
        };
        let Some(item) = item else { break };
        awaiting_pong = false;
        match item {
            Ok(message @ (Message::Text(_) | Message::Binary(_))) => {
                let now = Instant::now();
                idle_until = now + limits.idle_timeout;
                connection.touch();
                tenant.metrics.message_in();
                let Some(rate) = rate.as_mut() else {
                    Box::pin(dispatch(connection, route, tenant, message)).await;
                    continue;
                };
                if rate.allow(now) {
                    Box::pin(dispatch(connection, route, tenant, message)).await;
                } else if f64::from(rate.dropped) > rate.burst {
                    tenant.metrics.limit_hit("message_flood");
                    return closing(CloseCode::Policy, "message rate exceeded");
                } else if rate.dropped == 1 {
                    // One error frame per run of drops: a flood must not be amplified.
                    tenant.metrics.limit_hit("message_rate");
                    Box::pin(error_frame(
                        connection,
                        "Too many requests: the connection's message rate is exceeded",
                    ))
                    .await;
                }
            }
            Ok(Message::Ping(_)) => {
                idle_until = Instant::now() + limits.idle_timeout;
                connection.touch();
            }
            Ok(Message::Pong(_) | Message::Frame(_)) => {}
            // Keep reading: tungstenite sends the reply close on the next read, then ends.
            Ok(Message::Close(frame)) => peer_close = Some(frame),
            Err(WsError::ConnectionClosed | WsError::AlreadyClosed) => break,
            Err(WsError::Capacity(err)) => {
                tenant.metrics.limit_hit("message_size");
                return closing(CloseCode::Size, format!("message too big: {err}"));
            }
            Err(WsError::Utf8(_)) => {
                return closing(CloseCode::Invalid, "invalid UTF-8 in a text message");
            }
            Err(WsError::Protocol(err))
                if !matches!(err, ProtocolError::ResetWithoutClosingHandshake) =>
            {
                return closing(CloseCode::Protocol, err.to_string());
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

/// Writes queued messages (pings included), flushing once per burst, and sends the close
/// when one is asked for (after what was queued before it).
async fn write_loop(
    sink: &mut Sink,
    mut outbound: Outbound,
    connection: &Connection,
    limits: &TenantLimits,
) -> WriteEnd {
    let write_timeout = limits.write_timeout;
    // Each write is bounded by the write timeout: a client that reads nothing is a slow
    // consumer and is dropped rather than holding memory.
    macro_rules! write {
        ($op:expr) => {
            match tokio::time::timeout(write_timeout, $op).await {
                Ok(Ok(())) => {}
                Ok(Err(_)) => return WriteEnd::Failed,
                Err(_) => {
                    warn!(
                        queued_bytes = connection.queued_bytes(),
                        "slow consumer: nothing written for {write_timeout:?}; dropping the connection"
                    );
                    return WriteEnd::SlowConsumer;
                }
            }
        };
    }
    loop {
        tokio::select! {
            biased;
            frame = connection.close_requested() => {
                for message in outbound.take_all() {
                    let len = message.len();
                    write!(sink.feed(message));
                    connection.release(len);
                }
                write!(sink.send(Message::Close(Some(frame.clone()))));
                return WriteEnd::Closed(frame);
            }
            burst = outbound.recv_all() => {
                // The burst is bounded by the queue's byte budget.
                for message in burst {
                    let len = message.len();
                    write!(sink.feed(message));
                    connection.release(len);
                }
                write!(sink.flush());
            }
        }
    }
}

/// Runs the plugin a message selects and queues its reply.
async fn dispatch(connection: &Connection, route: &Route, tenant: &Tenant, message: Message) {
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
        Ok(Some(reply)) => reply_to(connection, plugin, plugin::message_to_ws(reply), tenant).await,
        Ok(None) => {}
        Err(err) => {
            error!(plugin = %plugin.name(), route_key = %key, kind = %err.kind(), error = %err, "message handler failed");
            error_frame(connection, "Internal server error").await;
        }
    }
}

/// Queues a reply, waiting for room. The tenant's size cap applies to replies too.
async fn reply_to(connection: &Connection, plugin: &Plugin, reply: Message, tenant: &Tenant) {
    let limit = tenant.limits.max_message_bytes;
    if reply.len() > limit {
        warn!(plugin = %plugin.name(), size = reply.len(), limit, "reply larger than the tenant's max message size; dropped");
        plugin.record_failure("reply_too_large");
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn message_rate_allows_the_burst_then_the_rate() {
        let limits = TenantLimits {
            message_rate: Some(10),
            message_burst: Some(3),
            ..TenantLimits::default()
        };
        let mut rate = MessageRate::new(&limits).unwrap();
        assert!(
            MessageRate::new(&TenantLimits::default()).is_none(),
            "no rate by default"
        );
        let start = Instant::now();
        assert!((0..3).all(|_| rate.allow(start)));
        assert!(!rate.allow(start));
        assert!(!rate.allow(start));
        assert_eq!(rate.dropped, 2);
        // 100 ms at 10 per second buys one more message.
        assert!(rate.allow(start + Duration::from_millis(100)));
        assert_eq!(rate.dropped, 0);
        assert!(!rate.allow(start + Duration::from_millis(100)));
    }
}
