//! The baseline: a raw tokio-tungstenite echo server, no gateway and no Wasm.

use futures_util::{SinkExt, StreamExt};
use tokio::net::TcpListener;

/// Serves until killed; prints `listening ws=ADDR` first.
pub async fn run(listen: &str) -> anyhow::Result<()> {
    let listener = TcpListener::bind(listen).await?;
    println!("listening ws={}", listener.local_addr()?);
    loop {
        let (stream, _) = listener.accept().await?;
        tokio::spawn(async move {
            let _ = stream.set_nodelay(true);
            let Ok(ws) = tokio_tungstenite::accept_async(stream).await else {
                return;
            };
            let (mut sink, mut stream) = ws.split();
            while let Some(Ok(message)) = stream.next().await {
                if (message.is_text() || message.is_binary()) && sink.send(message).await.is_err() {
                    break;
                }
            }
        });
    }
}
