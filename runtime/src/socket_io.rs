//! The upgraded socket as the two halves the connection's task polls (a [`Reader`] of
//! messages and a [`Writer`] of them), and the giving back of a large message's memory.
//!
//! tungstenite grows its read buffer to the largest frame and its write buffer to the
//! largest message, and keeps both for the connection's life: a client that sends or
//! receives one 128 KiB message would pin that much until it leaves, however long it
//! then idles, and 20,000 such connections would pin gigabytes. tungstenite offers no
//! knob to shrink them, so after a message larger than [`COMPACT_ABOVE`] the halves
//! rebuild its state around the same socket as soon as that is sound:
//! - the stream underneath hands over bytes only up to a frame's end, so tungstenite
//!   holds no unread byte once a message is out ([`LazyReadStream::at_message_boundary`]);
//! - everything written is flushed (a pong tungstenite queued included);
//! - no close frame went either way (the close handshake's state must survive).
//!
//! Until then the rebuild waits for the next message or flush. A fresh state costs a
//! few hundred bytes and three allocations, small beside the message that called for it.

use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};

use futures_util::{Sink, Stream};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::protocol::Role;
use tokio_tungstenite::tungstenite::{Error as WsError, Message};

use crate::lazy_read::LazyReadStream;

/// Messages larger than this (in either direction) have their buffers given back.
pub const COMPACT_ABOVE: usize = 1024;

type Ws = WebSocketStream<LazyReadStream>;

/// What both halves share. One task polls both, so the lock is never contended.
struct Shared {
    /// Always `Some` between calls; taken only while it is rebuilt.
    ws: Option<Ws>,
    /// A message larger than [`COMPACT_ABOVE`] went through since the last rebuild.
    large: bool,
    /// A close frame was sent or received: the state must stay as it is.
    closing: bool,
    /// How many times the state was rebuilt (for tests and debugging).
    rebuilds: u64,
}

impl Shared {
    fn ws(&mut self) -> Pin<&mut Ws> {
        Pin::new(self.ws.as_mut().expect("the socket is rebuilt in place"))
    }

    /// Rebuilds tungstenite's state if a large message went through and it is sound now.
    /// Polls a flush with the task's own context, so a write that cannot finish now
    /// leaves the task woken when it can, and the rebuild is tried again later.
    fn compact(&mut self, cx: &mut Context<'_>) {
        if !self.large || self.closing {
            return;
        }
        let boundary = self
            .ws
            .as_ref()
            .is_some_and(|ws| ws.get_ref().at_message_boundary());
        if !boundary {
            return;
        }
        if !matches!(self.ws().poll_flush(cx), Poll::Ready(Ok(()))) {
            return;
        }
        let old = self.ws.take().expect("the socket is rebuilt in place");
        let config = *old.get_config();
        let rebuild =
            WebSocketStream::from_raw_socket(old.into_inner(), Role::Server, Some(config));
        // Building without a handshake completes on its first poll.
        let mut rebuild = std::pin::pin!(rebuild);
        let Poll::Ready(ws) = rebuild.as_mut().poll(cx) else {
            unreachable!("a WebSocket state without a handshake is ready at once")
        };
        self.ws = Some(ws);
        self.large = false;
        self.rebuilds += 1;
    }
}

/// Splits an upgraded socket into the halves one task polls.
pub fn split(ws: Ws) -> (Writer, Reader) {
    let shared = Arc::new(Mutex::new(Shared {
        ws: Some(ws),
        large: false,
        closing: false,
        rebuilds: 0,
    }));
    (Writer(shared.clone()), Reader(shared))
}

/// Rejoins the halves: the socket, for the close handshake's last steps.
pub fn reunite(writer: Writer, reader: Reader) -> Option<LazyReadStream> {
    drop(reader);
    let shared = Arc::into_inner(writer.0)?;
    let shared = shared.into_inner().unwrap_or_else(|e| e.into_inner());
    shared.ws.map(WebSocketStream::into_inner)
}

fn lock(shared: &Mutex<Shared>) -> MutexGuard<'_, Shared> {
    shared.lock().unwrap_or_else(|e| e.into_inner())
}

/// The half that yields the client's messages.
pub struct Reader(Arc<Mutex<Shared>>);

/// The half that writes messages to the client.
pub struct Writer(Arc<Mutex<Shared>>);

impl Reader {
    /// How many times tungstenite's state was rebuilt to give buffers back.
    pub fn rebuilds(&self) -> u64 {
        lock(&self.0).rebuilds
    }
}

impl Stream for Reader {
    type Item = Result<Message, WsError>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let mut shared = lock(&self.0);
        let item = shared.ws().poll_next(cx);
        match &item {
            Poll::Ready(Some(Ok(Message::Close(_)))) => shared.closing = true,
            Poll::Ready(Some(Ok(message))) if message.len() > COMPACT_ABOVE => {
                shared.large = true;
                shared.compact(cx);
            }
            _ => {}
        }
        item
    }
}

impl Sink<Message> for Writer {
    type Error = WsError;

    fn poll_ready(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), WsError>> {
        lock(&self.0).ws().poll_ready(cx)
    }

    fn start_send(self: Pin<&mut Self>, message: Message) -> Result<(), WsError> {
        let mut shared = lock(&self.0);
        match &message {
            Message::Close(_) => shared.closing = true,
            message if message.len() > COMPACT_ABOVE => shared.large = true,
            _ => {}
        }
        shared.ws().start_send(message)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), WsError>> {
        let mut shared = lock(&self.0);
        let flushed = shared.ws().poll_flush(cx);
        if matches!(flushed, Poll::Ready(Ok(()))) {
            shared.compact(cx);
        }
        flushed
    }

    fn poll_close(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), WsError>> {
        let mut shared = lock(&self.0);
        shared.closing = true;
        shared.ws().poll_close(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_util::{SinkExt, StreamExt};
    use tokio::net::{TcpListener, TcpStream};
    use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;

    type Client = WebSocketStream<TcpStream>;

    /// A client and the server's halves over loopback TCP.
    async fn pair() -> (Client, Writer, Reader) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let client = TcpStream::connect(listener.local_addr().unwrap())
            .await
            .unwrap();
        let (server, _) = listener.accept().await.unwrap();
        let config = WebSocketConfig::default()
            .read_buffer_size(256)
            .write_buffer_size(0);
        let server = WebSocketStream::from_raw_socket(
            LazyReadStream::new(server, Vec::new()),
            Role::Server,
            Some(config),
        )
        .await;
        let client = WebSocketStream::from_raw_socket(client, Role::Client, None).await;
        let (writer, reader) = split(server);
        (client, writer, reader)
    }

    /// The next data message the server reads (tungstenite answers pings itself).
    async fn next(reader: &mut Reader) -> Summary {
        loop {
            let message = tokio::time::timeout(std::time::Duration::from_secs(10), reader.next())
                .await
                .expect("a message within 10 s")
                .expect("the stream is open")
                .expect("a valid message");
            if !message.is_ping() {
                return summary(&message);
            }
        }
    }

    /// A message's kind, length and first and last bytes: enough to tell them apart
    /// without printing 100 KB when an assertion fails.
    type Summary = (&'static str, usize, Option<u8>, Option<u8>);

    fn summary(message: &Message) -> Summary {
        let kind = match message {
            Message::Text(_) => "text",
            Message::Binary(_) => "binary",
            Message::Ping(_) => "ping",
            Message::Pong(_) => "pong",
            _ => "other",
        };
        let data = message.clone().into_data();
        (
            kind,
            data.len(),
            data.first().copied(),
            data.last().copied(),
        )
    }

    fn large(fill: u8) -> Message {
        Message::binary(vec![fill; 100_000])
    }

    #[tokio::test]
    async fn messages_pipelined_behind_a_large_one_survive_the_rebuild() {
        let (mut client, mut writer, mut reader) = pair().await;
        // All in one burst: the small messages and the ping arrive in the same reads as
        // the large one's end, and must not be lost when its state is rebuilt.
        client.feed(large(1)).await.unwrap();
        client.feed(Message::text("after")).await.unwrap();
        client
            .feed(Message::Ping(b"p".to_vec().into()))
            .await
            .unwrap();
        client.feed(large(2)).await.unwrap();
        client.feed(Message::text("last")).await.unwrap();
        client.flush().await.unwrap();
        assert_eq!(next(&mut reader).await, summary(&large(1)));
        assert_eq!(next(&mut reader).await, summary(&Message::text("after")));
        assert_eq!(next(&mut reader).await, summary(&large(2)));
        assert_eq!(next(&mut reader).await, summary(&Message::text("last")));
        assert!(reader.rebuilds() >= 2, "each large message is given back");
        // The ping was answered, and writes after rebuilds reach the client whole.
        writer.send(large(3)).await.unwrap();
        writer.send(Message::text("bye")).await.unwrap();
        let mut got = Vec::new();
        while got.len() < 3 {
            got.push(summary(&client.next().await.unwrap().unwrap()));
        }
        assert_eq!(got[0], summary(&Message::Pong(b"p".to_vec().into())));
        assert_eq!(got[1], summary(&large(3)));
        assert_eq!(got[2], summary(&Message::text("bye")));
        assert!(reader.rebuilds() >= 3, "a large write is given back too");
    }

    #[tokio::test]
    async fn a_fragmented_message_is_never_cut_by_a_rebuild() {
        use tokio_tungstenite::tungstenite::protocol::frame::Frame;
        use tokio_tungstenite::tungstenite::protocol::frame::coding::{Data, OpCode};
        let (mut client, mut writer, mut reader) = pair().await;
        // The server sends a large message while the client is half-way through a
        // fragmented one: the writer's flush must not rebuild under the open message.
        let part = |data: Vec<u8>, first: bool, fin: bool| {
            let opcode = if first { Data::Text } else { Data::Continue };
            Message::Frame(Frame::message(data, OpCode::Data(opcode), fin))
        };
        client
            .send(part(vec![b'a'; 5000], true, false))
            .await
            .unwrap();
        // Wait until the server's tungstenite holds the first fragment.
        let holds_fragment = std::future::poll_fn(|cx| {
            assert!(Pin::new(&mut reader).poll_next(cx).is_pending());
            let shared = lock(&reader.0);
            let boundary = shared.ws.as_ref().unwrap().get_ref().at_message_boundary();
            if boundary {
                Poll::Pending
            } else {
                Poll::Ready(())
            }
        });
        tokio::time::timeout(std::time::Duration::from_secs(10), holds_fragment)
            .await
            .expect("the first fragment is read within 10 s");
        writer.send(large(7)).await.unwrap();
        assert_eq!(reader.rebuilds(), 0, "no rebuild under an open message");
        assert_eq!(
            summary(&client.next().await.unwrap().unwrap()),
            summary(&large(7))
        );
        client
            .send(part(vec![b'b'; 5000], false, true))
            .await
            .unwrap();
        assert_eq!(
            next(&mut reader).await,
            ("text", 10_000, Some(b'a'), Some(b'b'))
        );
        assert_eq!(
            reader.rebuilds(),
            1,
            "the rebuild waited for the message's end"
        );
    }
}
