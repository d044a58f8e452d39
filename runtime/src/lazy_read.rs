//! A socket stream (TCP, or TLS over it) whose read buffer exists only while it holds
//! unread bytes.
//!
//! tungstenite reads into a buffer of its own that it allocates up front and fills with
//! zeros before every read, so its size is resident memory for every connection, idle or
//! not (128 KiB each by default). wsgate gives it a small one (see `server.rs`) and puts
//! this stream underneath: a read asking for little is served from a chunk read in one
//! system call, and the chunk is freed as soon as it has been handed over. An idle
//! connection holds no read buffer at all; a busy one still makes one system call per
//! chunk rather than one per small read.
//!
//! The chunk is filled through tokio's `poll_read`, not `try_read`: a read that comes
//! back short proves the socket drained, and tokio then forgets its readiness, so the
//! next read waits for the poller instead of making a system call that fails with
//! `EAGAIN`; at one message per round trip that is a third of the system calls.
//!
//! Under TLS the chunk is filled from rustls, which holds the decrypted bytes of the
//! records it has read; the socket's readiness says nothing about those, so the chunk is
//! allocated for each read and freed at once if nothing came (see
//! [`Stream::poll_read_ready`]). rustls keeps its own record buffer (4 KiB) for the
//! connection's life.
//!
//! Reads stop at the end of each client frame (see [`FrameGate`]), so that once
//! tungstenite has returned a message it holds none of the stream's bytes, and its state
//! can be rebuilt to give a large message's buffers back.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use bytes::{Buf, BytesMut};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio_util::io::poll_read_buf;

use crate::frame_gate::FrameGate;
use crate::tls::Stream;

/// Bytes read from the socket at once when the caller asks for less.
const CHUNK: usize = 16 * 1024;

/// A [`Stream`] with a read buffer allocated on demand.
#[derive(Debug)]
pub struct LazyReadStream {
    inner: Stream,
    /// Bytes read from the socket and not yet handed over.
    pending: BytesMut,
    /// Where the frames handed over end.
    gate: FrameGate,
}

impl LazyReadStream {
    /// Wraps a connected stream whose first bytes, read with the request head, are
    /// `leftover`.
    pub fn new(inner: impl Into<Stream>, leftover: Vec<u8>) -> Self {
        Self {
            inner: inner.into(),
            pending: BytesMut::from(&leftover[..]),
            gate: FrameGate::default(),
        }
    }

    /// Whether every byte handed over so far ends a whole message: tungstenite then
    /// holds no unread byte and no part of a message.
    pub fn at_message_boundary(&self) -> bool {
        self.gate.at_message_boundary()
    }

    /// The socket, for the close handshake's last steps. Bytes read and not handed over
    /// are dropped: by then nothing more is parsed.
    pub fn into_inner(self) -> Stream {
        self.inner
    }

    /// Hands over what is pending, up to the current frame's end; frees the chunk once
    /// it is all gone.
    fn drain_into(&mut self, out: &mut ReadBuf<'_>) {
        let n = out.remaining().min(self.gate.limit(&self.pending));
        out.put_slice(&self.pending[..n]);
        self.gate.advance(&self.pending[..n]);
        self.pending.advance(n);
        if self.pending.is_empty() {
            self.pending = BytesMut::new();
        }
    }
}

impl AsyncRead for LazyReadStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        out: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if !this.pending.is_empty() {
            this.drain_into(out);
            return Poll::Ready(Ok(()));
        }
        // Allocate only once the socket has something: a connection waiting for its
        // next message holds nothing.
        ready!(this.inner.poll_read_ready(cx))?;
        let mut chunk = BytesMut::with_capacity(CHUNK);
        // Zero bytes is the end of the stream: hand over nothing.
        if ready!(poll_read_buf(Pin::new(&mut this.inner), cx, &mut chunk))? > 0 {
            this.pending = chunk;
            this.drain_into(out);
        }
        Poll::Ready(Ok(()))
    }
}

impl AsyncWrite for LazyReadStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpStream;

    async fn pair() -> (TcpStream, LazyReadStream) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let client = TcpStream::connect(listener.local_addr().unwrap())
            .await
            .unwrap();
        let (server, _) = listener.accept().await.unwrap();
        (client, LazyReadStream::new(server, Vec::new()))
    }

    #[tokio::test]
    async fn small_reads_are_served_from_one_chunk_that_is_then_freed() {
        let (mut client, mut stream) = pair().await;
        let sent: Vec<u8> = (0..1000u32).map(|i| i as u8).collect();
        client.write_all(&sent).await.unwrap();
        let mut got = Vec::new();
        let mut small = [0u8; 64];
        while got.len() < sent.len() {
            let n = stream.read(&mut small).await.unwrap();
            assert!(n > 0);
            got.extend_from_slice(&small[..n]);
        }
        assert_eq!(got, sent);
        assert_eq!(
            stream.pending.capacity(),
            0,
            "the chunk is freed once drained"
        );
    }

    #[tokio::test]
    async fn the_end_is_seen() {
        let (mut client, mut stream) = pair().await;
        client.write_all(&[0x82, 0x85, 0, 0, 0, 0]).await.unwrap();
        client.write_all(b"hello").await.unwrap();
        client.shutdown().await.unwrap();
        let mut big = vec![0u8; CHUNK];
        let mut n = 0;
        while n < 11 {
            n += stream.read(&mut big[n..]).await.unwrap();
        }
        assert_eq!(&big[6..n], b"hello");
        assert_eq!(stream.pending.capacity(), 0);
        let mut small = [0u8; 8];
        assert_eq!(stream.read(&mut small).await.unwrap(), 0);
    }

    /// Under TLS, a burst larger than a chunk, in whole frames, is read to its end in
    /// small pieces after the client has gone quiet, and the chunk is freed.
    #[tokio::test]
    async fn under_tls_a_burst_is_read_to_its_end_in_small_pieces() {
        use crate::tls::testing::Ca;
        let ca = Ca::new();
        let dir = tempfile::tempdir().unwrap();
        ca.write_leaf(dir.path());
        let tls = crate::config::TlsConfig {
            cert: "cert.pem".into(),
            key: "key.pem".into(),
        };
        let config = crate::tls::server_config(&tls, dir.path()).unwrap();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let connector = tokio_rustls::TlsConnector::from(ca.client_config());
        let (client, server) = tokio::join!(
            async {
                let tcp = TcpStream::connect(address).await.unwrap();
                let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
                connector.connect(name, tcp).await.unwrap()
            },
            async {
                let (tcp, _) = listener.accept().await.unwrap();
                crate::tls::accept(tcp, Some(config)).await.unwrap()
            }
        );
        let (mut client, mut stream) = (client, LazyReadStream::new(server, Vec::new()));
        // 400 masked binary frames of 125 bytes: 52,400 bytes, over three chunks.
        let mut sent = Vec::new();
        for i in 0..400u32 {
            sent.extend_from_slice(&[0x82, 0x80 | 125, 0, 0, 0, 0]);
            sent.extend(std::iter::repeat_n(i as u8, 125));
        }
        client.write_all(&sent).await.unwrap();
        client.flush().await.unwrap();
        let mut got = Vec::new();
        let mut small = [0u8; 64];
        while got.len() < sent.len() {
            let n =
                tokio::time::timeout(std::time::Duration::from_secs(10), stream.read(&mut small))
                    .await
                    .expect("bytes rustls holds are read within 10 s")
                    .unwrap();
            assert!(n > 0);
            got.extend_from_slice(&small[..n]);
        }
        assert_eq!(got, sent);
        assert_eq!(
            stream.pending.capacity(),
            0,
            "the chunk is freed once drained"
        );
    }
}
