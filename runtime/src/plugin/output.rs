//! Guest stdout and stderr, and what every guest line passes before it reaches the log.
//! Each stdout or stderr line goes to the gateway's log with tenant and plugin; the
//! last lines of the current event are kept, so that when a guest traps the error can
//! say what it printed (a Rust panic message, typically).
//!
//! Writes are synchronous and never block: a guest cannot stall on its output, and a
//! line longer than [`MAX_LINE`] is cut. Each write is a host call of the event
//! (`EventBudget`), so past `limits.max_host_calls` the guest is stopped like an
//! import flood. Lines, these and the `log` import's, are [`escape`]d and share the
//! event's `limits.max_log_bytes`.

use std::borrow::Cow;
use std::collections::VecDeque;
use std::fmt::Write as _;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use bytes::Bytes;
use tokio::io::AsyncWrite;
use wasmtime_wasi::cli::{IsTerminal, StdoutStream};
use wasmtime_wasi::p2::{OutputStream, Pollable, StreamError, StreamResult};

use super::call::EventBudget;
use super::state::PluginScope;

/// Longest line kept; the rest of a longer one is dropped.
const MAX_LINE: usize = 4096;
/// Lines remembered for the error of a failing event.
const RECENT_LINES: usize = 4;

/// Whether `c` could end, hide or rewrite a log line: a control character (C0, DEL,
/// C1, which include CR, LF, NEL and the escape that starts terminal sequences), a
/// Unicode line or paragraph separator, or a bidirectional embedding, override or
/// isolate (which reorder what a viewer shows).
fn needs_escape(c: char) -> bool {
    c.is_control()
        || matches!(
            c,
            '\u{2028}' | '\u{2029}' | '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}'
        )
}

/// `text` as one log line: `\n`, `\r` and `\t` become those two-character escapes, and
/// every other character that could end, hide or rewrite a line (see
/// [`needs_escape`]) becomes `\u{..}` with its hex code, so a guest cannot forge a
/// log line or recolour the operator's terminal. A backslash is left alone so that
/// ordinary text reads as written: a literal `\n` in a message looks like an escaped
/// newline, but it cannot start a line. Text without such characters is borrowed.
pub fn escape(text: &str) -> Cow<'_, str> {
    let Some(first) = text.find(needs_escape) else {
        return Cow::Borrowed(text);
    };
    let mut out = String::with_capacity(text.len() + 16);
    out.push_str(&text[..first]);
    for c in text[first..].chars() {
        match c {
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if needs_escape(c) => {
                // Writing into a String cannot fail.
                let _ = write!(out, "\\u{{{:x}}}", u32::from(c));
            }
            c => out.push(c),
        }
    }
    Cow::Owned(out)
}

/// One of a guest's output streams.
#[derive(Clone)]
pub struct GuestOutput {
    state: Arc<Mutex<State>>,
    /// The plugin: tenant and name for the log, and its limits.
    scope: Arc<PluginScope>,
    /// The event's budgets, shared with the imports and the other stream.
    budget: Arc<EventBudget>,
    stream: &'static str,
}

#[derive(Default)]
struct State {
    partial: Vec<u8>,
    recent: VecDeque<String>,
}

impl GuestOutput {
    /// A stream named `stream` ("stdout" or "stderr") of the plugin `scope`, whose
    /// writes and lines count against `budget`.
    pub fn new(scope: Arc<PluginScope>, budget: Arc<EventBudget>, stream: &'static str) -> Self {
        Self {
            state: Arc::default(),
            scope,
            budget,
            stream,
        }
    }

    /// Counts a write as a host call of the event; past the budget, the error to stop
    /// the guest with.
    fn count_write(&self) -> Result<(), super::call::HostCallLimit> {
        self.budget.call(self.scope.limits.max_host_calls)
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
        let line = escape(String::from_utf8_lossy(line).trim_end()).into_owned();
        if line.is_empty() {
            return;
        }
        // A line the log would filter out costs nothing of the cap.
        if tracing::enabled!(target: "wsgate::plugin", tracing::Level::INFO)
            && self
                .budget
                .admit_line(line.len(), self.scope.limits.max_log_bytes)
        {
            let scope = &self.scope;
            tracing::info!(target: "wsgate::plugin", tenant = %scope.tenant, plugin = %scope.plugin, stream = self.stream, "{line}");
        }
        // Kept even past the cap: a trap's error quotes them, and they are few and cut.
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
    /// Every way a guest writes (`write`, `blocking-write-and-flush`, the zeroes and
    /// splice variants) comes here once per chunk, so each counts as a host call.
    /// `flush` and `check-write` do not count: on this stream they do nothing and cost
    /// the host nothing, and a guest spinning on them is computing, which its time
    /// limit bounds.
    fn write(&mut self, bytes: Bytes) -> StreamResult<()> {
        self.count_write()
            .map_err(|limit| StreamError::Trap(wasmtime::Error::new(limit)))?;
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
        // The async path (WASI 0.3, not linked today) reports the limit as a failed
        // write rather than a trap; the write is refused either way.
        if let Err(limit) = self.count_write() {
            return Poll::Ready(Err(std::io::Error::other(limit)));
        }
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
    use std::sync::Arc;

    use super::*;
    use crate::config::Access;
    use crate::plugin::bindings::wsgate::plugin::log::{self, Host as _};
    use crate::plugin::call::{HostCall, HostCallLimit, LogSpend};
    use crate::plugin::connections_impl::tests::state;
    use crate::plugin::state::HostState;
    use crate::registry::LocalRegistry;

    /// A state of plugin "p" of tenant "t" (20 host calls per event, 64 KiB of log).
    fn host() -> HostState {
        state(Arc::new(LocalRegistry::default()), Access::Tenant, "c")
    }

    /// A stream of `state`'s plugin that shares its event budget, as the WASI context's do.
    fn stream(state: &HostState, name: &'static str) -> GuestOutput {
        GuestOutput::new(state.scope.clone(), state.budget.clone(), name)
    }

    /// What `run` logs, at every level, as the gateway's formatter writes it.
    fn captured<R>(run: impl FnOnce() -> R) -> (R, String) {
        #[derive(Clone, Default)]
        struct Sink(Arc<Mutex<Vec<u8>>>);
        impl std::io::Write for Sink {
            fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
                self.0.lock().unwrap().extend_from_slice(bytes);
                Ok(bytes.len())
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        let sink = Sink::default();
        let writer = sink.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_max_level(tracing::Level::TRACE)
            .with_ansi(false)
            .with_writer(move || writer.clone())
            .finish();
        let result = tracing::subscriber::with_default(subscriber, run);
        let text = String::from_utf8(sink.0.lock().unwrap().clone()).unwrap();
        (result, text)
    }

    use crate::plugin::connections_impl::tests::now;

    #[test]
    fn lines_are_split_cut_and_remembered() {
        let state = host();
        let out = stream(&state, "stderr");
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

    /// Line breaks, terminal escapes, C1 controls, separators and bidi overrides are
    /// escaped; everything else, backslashes and non-ASCII text included, is kept.
    #[test]
    fn control_characters_are_escaped() {
        for (raw, escaped) in [
            ("plain text, ünïcode, \\n as typed", None),
            ("a\nb\r\nc\td", Some("a\\nb\\r\\nc\\td")),
            ("\u{1b}[31mred\u{7}", Some("\\u{1b}[31mred\\u{7}")),
            (
                "nul\0 del\u{7f} nel\u{85} csi\u{9b}",
                Some("nul\\u{0} del\\u{7f} nel\\u{85} csi\\u{9b}"),
            ),
            ("ls\u{2028}ps\u{2029}", Some("ls\\u{2028}ps\\u{2029}")),
            (
                "rlo\u{202e}txt.exe fsi\u{2068}",
                Some("rlo\\u{202e}txt.exe fsi\\u{2068}"),
            ),
        ] {
            let out = escape(raw);
            match escaped {
                None => assert!(matches!(out, Cow::Borrowed(b) if b == raw), "{raw:?}"),
                Some(escaped) => assert_eq!(out, escaped, "{raw:?}"),
            }
            assert!(!out.chars().any(needs_escape), "{out:?}");
        }
    }

    /// Neither the `log` import nor a stdout line can start a log line of its own.
    #[test]
    fn a_guest_cannot_forge_log_lines() {
        let mut state = host();
        let stdout = stream(&state, "stdout");
        let ((), text) = captured(|| {
            let message = "ok\n2030-01-01T00:00:00Z  INFO wsgate: forged by log".to_owned();
            now(HostCall::new(&mut state).log(log::Level::Info, message)).unwrap();
            stdout.push(b"ok\r2030-01-01T00:00:00Z  INFO wsgate: forged by stdout\n");
        });
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 2, "{text}");
        assert!(lines[0].contains("ok\\n2030-01-01T00:00:00Z  INFO wsgate: forged by log"));
        assert!(lines[1].contains("ok\\r2030-01-01T00:00:00Z  INFO wsgate: forged by stdout"));
        assert!(!text.contains('\r'), "{text:?}");
    }

    /// Every write to stdout or stderr is a host call of the event, under the same
    /// budget as the imports; past it the guest is stopped with the host-call trap.
    #[test]
    fn writes_count_against_the_host_call_budget() {
        let mut state = host();
        let (mut stdout, mut stderr) = (stream(&state, "stdout"), stream(&state, "stderr"));
        now(HostCall::new(&mut state).log(log::Level::Trace, "x".into())).unwrap();
        for _ in 0..9 {
            stdout.write(Bytes::from_static(b"o\n")).unwrap();
            stderr.write(Bytes::from_static(b"e\n")).unwrap();
        }
        stdout.write(Bytes::from_static(b"20th\n")).unwrap();
        assert_eq!(state.budget.host_calls(), 20);
        let Err(StreamError::Trap(trap)) = stderr.write(Bytes::from_static(b"21st\n")) else {
            panic!("the 21st call was let through");
        };
        assert!(trap.downcast_ref::<HostCallLimit>().is_some(), "{trap}");
        let refused = Pin::new(&mut stdout).poll_write(
            &mut Context::from_waker(std::task::Waker::noop()),
            b"async\n",
        );
        assert!(matches!(refused, Poll::Ready(Err(_))));
        // The next event starts with a whole budget.
        state.end_event();
        stdout.write(Bytes::from_static(b"next\n")).unwrap();
        assert_eq!(state.budget.host_calls(), 1);
    }

    /// The `log` import's lines and stdout and stderr lines share one cap per event;
    /// past it lines are dropped, one warning and a metric say how many, and the next
    /// event logs again.
    #[test]
    fn log_lines_share_one_cap_per_event() {
        let mut state = host();
        let cap = state.scope.limits.max_log_bytes;
        assert_eq!(cap, 64 * 1024);
        let stdout = stream(&state, "stdout");
        let line = "x".repeat(4000);
        let (spent, text) = captured(|| {
            // 20 lines of 4,000 bytes: 16 fit in 65,536 bytes.
            for _ in 0..10 {
                now(HostCall::new(&mut state).log(log::Level::Debug, line.clone())).unwrap();
                stdout.push(format!("{line}\n").as_bytes());
            }
            state.end_event()
        });
        assert_eq!(
            spent,
            LogSpend {
                written: 16 * 4000,
                dropped_lines: 4,
                dropped_bytes: 4 * 4000
            }
        );
        assert_eq!(text.matches(&line).count(), 16, "{text}");
        let summary = text.lines().last().unwrap();
        assert!(
            summary.contains("WARN")
                && summary.contains("dropped_lines=4 dropped_bytes=16000")
                && summary.contains("65536 bytes"),
            "{summary}"
        );
        let metrics = state.scope.metrics.all().encode();
        let series = r#"wsgate_limits_hit_total{tenant="t",limit="log_bytes"} 4"#;
        assert!(
            metrics.contains(series),
            "{series} missing from:\n{metrics}"
        );

        let (spent, text) = captured(|| {
            stdout.push(b"next event\n");
            state.end_event()
        });
        assert_eq!(spent.dropped_lines, 0);
        assert!(text.contains("next event"), "{text}");
    }
}
