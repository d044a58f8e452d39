//! Guest stdout and stderr. Each line goes to the gateway's log with tenant and plugin;
//! the last lines of the current event are kept, so that when a guest traps the error
//! can say what it printed (a Rust panic message, typically).
//!
//! Writes are synchronous and never fail or block: a guest cannot stall on its output,
//! and a line longer than [`MAX_LINE`] is cut.

use std::collections::VecDeque;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use bytes::Bytes;
use tokio::io::AsyncWrite;
use wasmtime_wasi::cli::{IsTerminal, StdoutStream};
use wasmtime_wasi::p2::{OutputStream, Pollable, StreamResult};

/// Longest line kept; the rest of a longer one is dropped.
const MAX_LINE: usize = 4096;
/// Lines remembered for the error of a failing event.
const RECENT_LINES: usize = 4;

/// One of a guest's output streams.
#[derive(Clone)]
pub struct GuestOutput {
    state: Arc<Mutex<State>>,
    tenant: Arc<str>,
    plugin: Arc<str>,
    stream: &'static str,
}

#[derive(Default)]
struct State {
    partial: Vec<u8>,
    recent: VecDeque<String>,
}

impl GuestOutput {
    /// A stream named `stream` ("stdout" or "stderr") of a tenant's plugin.
    pub fn new(tenant: Arc<str>, plugin: Arc<str>, stream: &'static str) -> Self {
        Self {
            state: Arc::default(),
            tenant,
            plugin,
            stream,
        }
    }

    fn push(&self, mut bytes: &[u8]) {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        while let Some(newline) = bytes.iter().position(|&b| b == b'\n') {
            self.append(&mut state, &bytes[..newline]);
            let line = std::mem::take(&mut state.partial);
            self.emit(&mut state, &line);
            bytes = &bytes[newline + 1..];
        }
        self.append(&mut state, bytes);
    }

    fn append(&self, state: &mut State, bytes: &[u8]) {
        let room = MAX_LINE.saturating_sub(state.partial.len());
        state
            .partial
            .extend_from_slice(&bytes[..bytes.len().min(room)]);
    }

    fn emit(&self, state: &mut State, line: &[u8]) {
        let line = String::from_utf8_lossy(line).trim_end().to_owned();
        if line.is_empty() {
            return;
        }
        tracing::info!(target: "wsgate::plugin", tenant = %self.tenant, plugin = %self.plugin, stream = self.stream, "{line}");
        if state.recent.len() == RECENT_LINES {
            state.recent.pop_front();
        }
        state.recent.push_back(line);
    }

    /// Forgets remembered lines: called as each event starts.
    pub fn clear_recent(&self) {
        self.state
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .recent
            .clear();
    }

    /// The lines printed during the current event, including an unfinished one.
    pub fn take_recent(&self) -> Vec<String> {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let partial = std::mem::take(&mut state.partial);
        self.emit(&mut state, &partial);
        state.recent.drain(..).collect()
    }
}

impl IsTerminal for GuestOutput {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl StdoutStream for GuestOutput {
    fn p2_stream(&self) -> Box<dyn OutputStream> {
        Box::new(self.clone())
    }

    fn async_stream(&self) -> Box<dyn AsyncWrite + Send + Sync> {
        Box::new(self.clone())
    }
}

impl OutputStream for GuestOutput {
    fn write(&mut self, bytes: Bytes) -> StreamResult<()> {
        self.push(&bytes);
        Ok(())
    }

    fn flush(&mut self) -> StreamResult<()> {
        Ok(())
    }

    fn check_write(&mut self) -> StreamResult<usize> {
        Ok(64 * 1024)
    }
}

#[async_trait::async_trait]
impl Pollable for GuestOutput {
    async fn ready(&mut self) {}
}

impl AsyncWrite for GuestOutput {
    fn poll_write(
        self: Pin<&mut Self>,
        _: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        self.push(buf);
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_are_split_cut_and_remembered() {
        let out = GuestOutput::new("t".into(), "p".into(), "stderr");
        out.push(b"panicked at src/lib.rs:1:1:\nasked to ");
        out.push(b"panic\n\nnote: x\n");
        out.push(b"unfinished");
        assert_eq!(
            out.take_recent(),
            [
                "panicked at src/lib.rs:1:1:",
                "asked to panic",
                "note: x",
                "unfinished"
            ]
        );
        out.push(&vec![b'a'; 10_000]);
        out.push(b"\n");
        assert_eq!(out.take_recent()[0].len(), MAX_LINE);
        out.push(b"old\n");
        out.clear_recent();
        assert!(out.take_recent().is_empty());
    }
}
