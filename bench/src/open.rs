//! Opening many client connections at once, for the scenarios that hold thousands.

use anyhow::Context;
use futures_util::StreamExt;
use futures_util::stream::FuturesUnordered;
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

/// A client connection.
pub type Client = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// Upgrades in flight at once.
const IN_FLIGHT: usize = 64;

/// Raises this process's open-files soft limit to the hard one (each connection is a
/// file descriptor) and returns it.
pub fn raise_open_files_limit() -> anyhow::Result<u64> {
    Ok(rlimit::increase_nofile_limit(u64::MAX)?)
}

/// Opens `connections` to `url`, 64 upgrades at a time, printing progress every 1,000.
pub async fn open_many(
    url: &str,
    connections: usize,
    config: WebSocketConfig,
) -> anyhow::Result<Vec<Client>> {
    let mut open = Vec::with_capacity(connections);
    let mut opening = FuturesUnordered::new();
    let mut next = 0;
    while open.len() < connections {
        while next < connections && opening.len() < IN_FLIGHT {
            opening.push(tokio_tungstenite::connect_async_with_config(
                url,
                Some(config),
                true,
            ));
            next += 1;
        }
        let (client, _) = opening
            .next()
            .await
            .expect("a connection is in flight")
            .with_context(|| format!("opening connection {} to {url}", open.len() + 1))?;
        open.push(client);
        if open.len() % 1000 == 0 {
            eprintln!("  {:>6} connections open", open.len());
        }
    }
    Ok(open)
}
