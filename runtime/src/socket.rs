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
//! - 1012: the listener the connection came through moved (a reload);
//! - otherwise, whatever a `disconnect` asked for.
//!
//! A client that stops reading is dropped after the tenant's write timeout, and a
//! client that does not answer pings is dropped at the next ping.

use std::sync::Arc;
use std::time::Duration;

use futures_util::{FutureExt, Sink, SinkExt, Stream, StreamExt};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::error::ProtocolError;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::{Error as WsError, Message};
use tokio_util::sync::CancellationToken;
use tracing::{debug, error, warn};

use crate::close::Close;
use crate::config::TenantLimits;
use crate::fair::TenantShare;
use crate::gateway::Gateway;
use crate::metrics::{FailureKind, Limit, TenantMetrics};
use crate::plugin::{self, Plugin};
use crate::registry::{Attachment, Payload, new_connection_id};
use crate::tenant::Route;

/// How long to wait for the peer's half of a close handshake.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(5);

/// How a connection finds its route at each event: by stable keys into the gateway's
/// current snapshot, so a swapped config reaches live connections at their next event.
#[derive(Clone)]
pub enum RouteRef {
    /// Looked up in the gateway's snapshot in force.
    Live {
        /// The gateway.
        gateway: Arc<Gateway>,
        /// The tenant id.
        tenant: Arc<str>,
        /// The route template.
        template: Arc<str>,
    },
    /// Always this route (tests of the socket loop).
    Fixed(Arc<Route>),
}

impl RouteRef {
    /// The route as the config in force has it; `None` once a reload removed it.
    pub fn current(&self) -> Option<Arc<Route>> {
        match self {
            RouteRef::Live {
                gateway,
                tenant,
                template,
            } => gateway.route(tenant, template),
            RouteRef::Fixed(route) => Some(route.clone()),
        }
    }
}

/// What a connection's task knows of its tenant and route.
pub struct Context {
    /// Where its route is found.
    pub route: RouteRef,
    /// The tenant's client limits when the connection opened.
    pub limits: Arc<TenantLimits>,
    /// The tenant's metrics.
    pub metrics: Arc<TenantMetrics>,
    /// The tenant's quotas, which each message passes before it is dispatched.
    pub share: Arc<TenantShare>,
}

/// How a connection ended, for `$disconnect`, and whether the caller should linger:
/// the gateway closed while the client may still be sending.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ended {
    /// The close code `$disconnect` hears.
    pub code: u16,
    /// The close reason.
    pub reason: String,
    /// Drain the client's input before dropping the socket (see [`lingering_close`]).
    pub linger: bool,
}

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
    Closing(Close),
    /// The client did not answer the previous ping.
    DeadPeer,
    /// The socket failed without a close handshake.
    Dropped,
}

/// What ends a connection from the gateway's side.
#[derive(Debug, Clone, Default)]
pub struct Stop {
    /// The gateway shuts down: the connection is closed with 1001.
    pub shutdown: CancellationToken,
    /// The listener it came through moved (a child of `shutdown`): the connection is
    /// closed with 1012, so that its client reconnects to the new address.
    pub listener: CancellationToken,
}

/// Serves an upgraded connection until it closes: frames from `stream` become events,
/// the outbound queue goes to `sink`. Generic over both halves so the loop can be
/// tested over channels.
pub async fn serve<S, R>(
    sink: &mut S,
    stream: &mut R,
    connection: &Attachment,
    context: &Context,
    stop: &Stop,
) -> Ended
where
    S: Sink<Message, Error = WsError> + Unpin,
    R: Stream<Item = Result<Message, WsError>> + Unpin,
{
    let mut linger = false;
    let metrics = &context.metrics;
    let (code, reason) = {
        // Pinned where they are built: a move would make the task reserve room for
        // each future twice, and every idle connection pays for that space.
        let mut reader = std::pin::pin!(read_loop(stream, connection, context));
        let mut writer = std::pin::pin!(write_loop(sink, connection, context));
        tokio::select! {
            end = &mut reader => match end {
                ReadEnd::PeerClosed(frame) => {
                    connection.mark_closing();
                    frame.map_or((1005, String::new()), |f| (f.code.into(), f.reason.to_string()))
                }
                ReadEnd::Closing(close) => {
                    // The writer owns the sink: ask it to send the close.
                    let _ = connection.close(&close);
                    linger = matches!(tokio::time::timeout(CLOSE_TIMEOUT, &mut writer).await, Ok(WriteEnd::Closed(_)));
                    (close.code, close.reason)
                }
                ReadEnd::DeadPeer => {
                    connection.mark_closing();
                    metrics.limit_hit(Limit::DeadPeer);
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
                    metrics.limit_hit(Limit::SlowConsumer);
                    (1008, "slow consumer".to_owned())
                }
                WriteEnd::Failed => {
                    connection.mark_closing();
                    (1006, String::new())
                }
            },
            () = stop.listener.cancelled() => {
                let close = if stop.shutdown.is_cancelled() {
                    Close::gateway(1001, "gateway shutting down")
                } else {
                    Close::gateway(1012, "the gateway moved this listener; reconnect")
                };
                let _ = connection.close(&close);
                let _ = tokio::time::timeout(CLOSE_TIMEOUT, &mut writer).await;
                (close.code, close.reason)
            }
        }
    };
    debug!(code, reason = %reason, "closed");
    Ended {
        code,
        reason,
        linger,
    }
}

/// Runs `$disconnect` (on the route as the config in force has it), counts the close,
/// and drops the connection's end, which removes it from the registry.
pub async fn finish(connection: Attachment, context: &Context, ended: &Ended) {
    // Futures awaited here and in `read_loop` are boxed: a plugin event's future is
    // large and lives only while it runs, and inline it would be part of every
    // connection's task for the connection's whole life (idle ones included).
    if let Some(route) = context.route.current()
        && let Some(plugin) = &route.disconnect
        && let Err(err) = Box::pin(plugin.on_disconnect(
            &route.template,
            connection.id(),
            ended.code,
            &ended.reason,
        ))
        .await
    {
        error!(plugin = %plugin.name(), kind = %err.kind(), error = %err, "$disconnect failed");
    }
    context.metrics.connection_closed(ended.code);
    drop(connection);
}

/// After the gateway closes, the client may still be sending (the rest of an oversize
/// message, a flood). Dropping a socket with unread input makes the kernel send a reset,
/// which can destroy our close frame before the client reads it; so half-close, discard
/// input until the client closes too, and only then drop. Under TLS the shutdown sends a
/// close_notify first, and input is discarded once decrypted.
pub async fn lingering_close(mut socket: impl AsyncRead + AsyncWrite + Unpin) {
    let _ = socket.shutdown().await;
    let mut discard = [0u8; 4096];
    let _ = tokio::time::timeout(CLOSE_TIMEOUT, async {
        while matches!(socket.read(&mut discard).await, Ok(n) if n > 0) {}
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
    let close = Close::gateway(code.into(), reason);
    debug!(code = close.code, reason = %close.reason, "the gateway closes the connection");
    ReadEnd::Closing(close)
}

async fn read_loop<R>(stream: &mut R, connection: &Attachment, context: &Context) -> ReadEnd
where
    R: Stream<Item = Result<Message, WsError>> + Unpin,
{
    let limits = &context.limits;
    let metrics = &context.metrics;
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
    // Whether the tenant took turns at the last message: while it does, the next one is
    // read in its turn (see `crate::fair`).
    let mut contended = false;
    // The window in which this connection last sent (see `crate::fair`).
    let mut last_sent = 0;
    loop {
        let mut read_in_turn = None;
        if contended && context.share.heavy() {
            read_in_turn = context.share.turn(|| stream.next().now_or_never()).await;
        }
        let had_turn = read_in_turn.is_some();
        let item = if let Some(item) = read_in_turn {
            item
        } else {
            tokio::select! {
            biased;
            item = stream.next() => item,
            () = &mut timer, if peer_close.is_none() => {
                let now = Instant::now();
                if now >= expires {
                    metrics.limit_hit(Limit::MaxAge);
                    return closing(CloseCode::Away, "maximum connection age reached");
                }
                if now >= idle_until {
                    metrics.limit_hit(Limit::Idle);
                    return closing(CloseCode::Away, "idle timeout");
                }
                if now >= next_ping {
                    if awaiting_pong {
                        debug!("no answer to the last ping: the peer is gone");
                        return ReadEnd::DeadPeer;
                    }
                    awaiting_pong = true;
                    // Pings go through the queue: the writer owns the sink.
                    connection.ping();
                    next_ping = now + limits.ping_interval;
                }
                timer.as_mut().reset(idle_until.min(expires).min(next_ping));
                continue;
            }
            }
        };
        let Some(item) = item else { break };
        awaiting_pong = false;
        match item {
            Ok(message @ (Message::Text(_) | Message::Binary(_))) => {
                let Some(payload) = Payload::from_message(message) else {
                    continue;
                };
                let now = Instant::now();
                idle_until = now + limits.idle_timeout;
                connection.touch();
                metrics.message_in(payload.len());
                let Some(rate) = rate.as_mut() else {
                    contended =
                        dispatch_fairly(connection, context, payload, had_turn, &mut last_sent)
                            .await;
                    continue;
                };
                if rate.allow(now) {
                    contended =
                        dispatch_fairly(connection, context, payload, had_turn, &mut last_sent)
                            .await;
                } else if f64::from(rate.dropped) > rate.burst {
                    metrics.limit_hit(Limit::MessageFlood);
                    return closing(CloseCode::Policy, "message rate exceeded");
                } else if rate.dropped == 1 {
                    // One error frame per run of drops: a flood must not be amplified.
                    metrics.limit_hit(Limit::MessageRate);
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
                metrics.limit_hit(Limit::MessageSize);
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
async fn write_loop<S>(sink: &mut S, connection: &Attachment, context: &Context) -> WriteEnd
where
    S: Sink<Message, Error = WsError> + Unpin,
{
    let write_timeout = context.limits.write_timeout;
    let metrics = &context.metrics;
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
                for message in connection.take_all() {
                    let len = message.len();
                    let data = matches!(message, Message::Text(_) | Message::Binary(_));
                    write!(sink.feed(message));
                    connection.release(len);
                    if data {
                        metrics.message_out(len);
                    }
                }
                write!(sink.send(Message::Close(Some(frame.clone()))));
                return WriteEnd::Closed(frame);
            }
            burst = connection.recv_all() => {
                // The burst is bounded by the queue's byte budget.
                for message in burst {
                    let len = message.len();
                    let data = matches!(message, Message::Text(_) | Message::Binary(_));
                    write!(sink.feed(message));
                    connection.release(len);
                    if data {
                        metrics.message_out(len);
                    }
                }
                write!(sink.flush());
            }
        }
    }
}

/// Dispatches a message once, if the tenant takes turns, it is its turn (unless it was
/// read in one), and once the tenant's quotas let it through (see [`crate::fair`]):
/// until then the reader reads nothing more. Says whether the tenant took turns.
async fn dispatch_fairly(
    connection: &Attachment,
    context: &Context,
    payload: Payload,
    had_turn: bool,
    last_sent: &mut u64,
) -> bool {
    let heavy = context.share.read(last_sent);
    if heavy && !had_turn {
        context.share.turn(|| ()).await;
    }
    context.share.admit(payload.len()).await;
    Box::pin(dispatch(connection, context, payload)).await;
    heavy
}

/// Runs the plugin a message selects (on the route as the config in force has it) and
/// queues its reply.
async fn dispatch(connection: &Attachment, context: &Context, payload: Payload) {
    let Some(route) = context.route.current() else {
        return error_frame(connection, "Forbidden").await;
    };
    let Some((key, plugin)) = route.select(&payload) else {
        // As AWS answers a message that matches no route and there is no $default.
        return error_frame(connection, "Forbidden").await;
    };
    let message = plugin::guest_message(&payload);
    drop(payload);
    match plugin
        .on_message(&route.template, connection.id(), key.clone(), message)
        .await
    {
        Ok(Some(reply)) => reply_to(connection, plugin, plugin::payload(reply), context).await,
        Ok(None) => {}
        Err(err) => {
            error!(plugin = %plugin.name(), route_key = %key, kind = %err.kind(), error = %err, "message handler failed");
            error_frame(connection, "Internal server error").await;
        }
    }
}

/// Queues a reply, waiting for room. The tenant's size cap applies to replies too.
async fn reply_to(connection: &Attachment, plugin: &Plugin, reply: Payload, context: &Context) {
    let limit = context.limits.max_message_bytes;
    if reply.len() > limit {
        warn!(plugin = %plugin.name(), size = reply.len(), limit, "reply larger than the tenant's max message size; dropped");
        plugin.record_failure(FailureKind::ReplyTooLarge);
        return error_frame(connection, "Internal server error").await;
    }
    let _ = connection.reply(reply).await;
}

/// Sends an error frame shaped as AWS sends them.
async fn error_frame(connection: &Attachment, message: &str) {
    let body = serde_json::json!({
        "message": message,
        "connectionId": &**connection.id(),
        "requestId": &*new_connection_id(),
    });
    let _ = connection.reply(Payload::text(body.to_string())).await;
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

    /// The socket loop over channels, with tokio's clock paused: timers fire as soon
    /// as nothing else can run, so an hour of idle takes no time.
    mod over_channels {
        use std::time::Duration;

        use futures_channel::mpsc;
        use futures_util::{SinkExt, StreamExt};
        use tokio::task::JoinHandle;
        use tokio_tungstenite::tungstenite::{Error as WsError, Message};

        use crate::config::TenantLimits;
        use crate::metrics::Metrics;
        use crate::registry::{ConnectionMeta, LocalRegistry};
        use crate::socket::{Context, Ended, RouteRef, finish, serve};
        use crate::tenant::Route;
        use std::sync::Arc;

        /// The client's side of a connection under test.
        struct Client {
            /// Frames the client sends (or errors its socket reports).
            to_server: mpsc::UnboundedSender<Result<Message, WsError>>,
            /// Frames the server wrote.
            from_server: mpsc::UnboundedReceiver<Message>,
            /// How the server's loop ended, and the registry it left.
            ended: JoinHandle<(Ended, usize)>,
        }

        /// Serves one connection of a route with no plugins under `limits`.
        fn start(limits: TenantLimits) -> Client {
            let (to_server, mut stream) = mpsc::unbounded();
            let (sink, from_server) = mpsc::unbounded::<Message>();
            let registry = LocalRegistry::default();
            let connection = registry.attach_now(
                ConnectionMeta::for_test("t", "/r"),
                limits.outbound_queue_bytes,
            );
            let context = Context {
                route: RouteRef::Fixed(Arc::new(Route::empty("/r"))),
                share: Arc::new(crate::fair::TenantShare::new(&limits, Arc::default())),
                limits: Arc::new(limits),
                metrics: Arc::new(Metrics::new().tenant("t")),
            };
            let ended = tokio::spawn(async move {
                let mut sink = sink.sink_map_err(|_| WsError::ConnectionClosed);
                let stop = crate::socket::Stop::default();
                let ended = serve(&mut sink, &mut stream, &connection, &context, &stop).await;
                finish(connection, &context, &ended).await;
                (ended, registry.len())
            });
            Client {
                to_server,
                from_server,
                ended,
            }
        }

        fn limits() -> TenantLimits {
            TenantLimits {
                idle_timeout: Duration::from_secs(600),
                max_connection_age: Duration::from_secs(7200),
                ping_interval: Duration::from_secs(3600),
                ..TenantLimits::default()
            }
        }

        impl Client {
            async fn next(&mut self) -> Message {
                self.from_server
                    .next()
                    .await
                    .expect("the server's sink closed")
            }

            async fn close_frame(&mut self) -> (u16, String) {
                loop {
                    match self.next().await {
                        Message::Close(Some(frame)) => {
                            return (frame.code.into(), frame.reason.to_string());
                        }
                        Message::Close(None) => panic!("a close without a code"),
                        _ => continue,
                    }
                }
            }

            fn send(&self, message: Message) {
                self.to_server.unbounded_send(Ok(message)).unwrap();
            }

            /// The client closes its socket; the server's loop then ends.
            async fn ended(self) -> (Ended, usize) {
                drop(self.to_server);
                self.ended.await.unwrap()
            }
        }

        #[tokio::test(start_paused = true)]
        async fn an_idle_connection_is_closed_at_the_idle_timeout() {
            let started = tokio::time::Instant::now();
            let mut client = start(limits());
            assert_eq!(client.close_frame().await, (1001, "idle timeout".into()));
            assert_eq!(started.elapsed(), Duration::from_secs(600));
            let (ended, left) = client.ended().await;
            assert_eq!((ended.code, ended.linger), (1001, true));
            assert_eq!(left, 0, "the connection is unregistered");
        }

        #[tokio::test(start_paused = true)]
        async fn activity_defers_the_idle_timeout_but_not_the_maximum_age() {
            let started = tokio::time::Instant::now();
            let mut client = start(TenantLimits {
                idle_timeout: Duration::from_secs(60),
                max_connection_age: Duration::from_secs(150),
                ..limits()
            });
            // Pings at 40, 80 and 120 s keep a 60 s idle timeout away.
            for _ in 0..3 {
                tokio::time::sleep(Duration::from_secs(40)).await;
                client.send(Message::Ping(Default::default()));
            }
            assert_eq!(
                client.close_frame().await,
                (1001, "maximum connection age reached".into())
            );
            assert_eq!(started.elapsed(), Duration::from_secs(150));
        }

        #[tokio::test(start_paused = true)]
        async fn a_peer_that_answers_no_ping_is_dropped_at_the_next_one() {
            let started = tokio::time::Instant::now();
            let mut client = start(TenantLimits {
                ping_interval: Duration::from_secs(20),
                ..limits()
            });
            assert!(matches!(client.next().await, Message::Ping(_)));
            assert_eq!(started.elapsed(), Duration::from_secs(20));
            let (ended, left) = client.ended.await.unwrap();
            assert_eq!(
                (ended.code, ended.reason.as_str()),
                (1006, "no answer to ping")
            );
            assert_eq!(started.elapsed(), Duration::from_secs(40));
            assert_eq!(left, 0);
        }

        #[tokio::test(start_paused = true)]
        async fn a_peer_that_answers_pings_stays() {
            let mut client = start(TenantLimits {
                ping_interval: Duration::from_secs(20),
                ..limits()
            });
            for _ in 0..10 {
                assert!(matches!(client.next().await, Message::Ping(_)));
                client.send(Message::Pong(Default::default()));
            }
            client.send(Message::Close(None));
            let (ended, _) = client.ended().await;
            assert_eq!(ended.code, 1005, "the client closed, without a code");
        }

        #[tokio::test(start_paused = true)]
        async fn a_flood_past_the_rate_gets_one_error_then_a_1008() {
            let mut client = start(TenantLimits {
                message_rate: Some(2),
                message_burst: Some(2),
                ..limits()
            });
            // Within the burst: no plugin handles the route, so each gets AWS's answer.
            for _ in 0..2 {
                client.send(Message::text("m"));
                let reply = client.next().await;
                assert!(reply.to_text().unwrap().contains("Forbidden"), "{reply:?}");
            }
            // The third, at the same instant, is over the rate: one error for the run.
            for _ in 0..3 {
                client.send(Message::text("m"));
            }
            let reply = client.next().await;
            assert!(
                reply.to_text().unwrap().contains("Too many requests"),
                "{reply:?}"
            );
            assert_eq!(
                client.close_frame().await,
                (1008, "message rate exceeded".into())
            );
        }

        #[tokio::test(start_paused = true)]
        async fn the_rate_refills_with_time() {
            let mut client = start(TenantLimits {
                message_rate: Some(1),
                message_burst: Some(1),
                ..limits()
            });
            for _ in 0..5 {
                client.send(Message::text("m"));
                let reply = client.next().await;
                assert!(reply.to_text().unwrap().contains("Forbidden"), "{reply:?}");
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
    }
}
