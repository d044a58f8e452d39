//! The baselines: a raw tokio-tungstenite echo server, no gateway and no Wasm; with
//! `room`, the same server relaying each message to every other connection instead (the
//! ceiling for the broadcast scenario); and with `relay`, the same server handing each
//! message to an HTTP backend as a Lambda proxy event and sending back the answer's body
//! (the native counterpart of the integration plugin, [`crate::lambda`]).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use futures_util::{SinkExt, StreamExt};
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Message;

/// Every open connection's outbound queue, for `room` mode.
type Room = Arc<Mutex<HashMap<u64, mpsc::UnboundedSender<Message>>>>;

/// Serves until killed; prints `listening ws=ADDR` first. With `relay_url`, each message
/// is POSTed there as a Lambda proxy event instead of echoed.
pub async fn run(listen: &str, room: bool, relay_url: Option<&str>) -> anyhow::Result<()> {
    crate::open::raise_open_files_limit()?;
    let lambda = relay_url.map(crate::lambda::Relay::new).transpose()?;
    let listener = TcpListener::bind(listen).await?;
    println!("listening ws={}", listener.local_addr()?);
    let peers: Room = Arc::default();
    for id in 0u64.. {
        let (stream, peer) = listener.accept().await?;
        if let Some(lambda) = &lambda {
            tokio::spawn(lambda.clone().serve(stream, peer));
            continue;
        }
        let peers = peers.clone();
        tokio::spawn(async move {
            let _ = stream.set_nodelay(true);
            // In a room, the connection joins before its handshake completes, as the
            // gateway registers one before its 101: a client that sees its upgrade
            // done gets every message relayed after that.
            let queue = room.then(|| {
                let (tx, rx) = mpsc::unbounded_channel();
                peers.lock().unwrap().insert(id, tx);
                rx
            });
            let Ok(ws) = tokio_tungstenite::accept_async(stream).await else {
                peers.lock().unwrap().remove(&id);
                return;
            };
            if let Some(queue) = queue {
                relay(ws, id, peers, queue).await;
            } else {
                let (mut sink, mut stream) = ws.split();
                while let Some(Ok(message)) = stream.next().await {
                    if (message.is_text() || message.is_binary())
                        && sink.send(message).await.is_err()
                    {
                        break;
                    }
                }
            }
        });
    }
    Ok(())
}

/// Room mode: a writer task per connection drains its queue (`rx`, already in the
/// room); each message read is queued for every other connection.
async fn relay(
    ws: tokio_tungstenite::WebSocketStream<tokio::net::TcpStream>,
    id: u64,
    peers: Room,
    mut rx: mpsc::UnboundedReceiver<Message>,
) {
    let (mut sink, mut stream) = ws.split();
    let writer = tokio::spawn(async move {
        while let Some(message) = rx.recv().await {
            if sink.send(message).await.is_err() {
                break;
            }
        }
    });
    while let Some(Ok(message)) = stream.next().await {
        if message.is_text() || message.is_binary() {
            for (peer, queue) in peers.lock().unwrap().iter() {
                if *peer != id {
                    let _ = queue.send(message.clone());
                }
            }
        }
    }
    peers.lock().unwrap().remove(&id);
    writer.abort();
}
