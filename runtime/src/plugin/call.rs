//! The one way into a plugin's host state from an import: [`HostCall::enter`] counts
//! the call against the event's budget and in the metrics, and traps past the budget.
//! The generated host traits are implemented on [`HostCall`], whose state is private to
//! this module, so an import cannot reach the registry, the config or the grants
//! without being counted.
//!
//! The budget itself, [`EventBudget`], is shared with the guest's stdout and stderr
//! (`output`): a write to them is a host call too, and their lines and the `log`
//! import's share one cap on log bytes per event.

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use wasmtime::component::HasData;

use super::state::{EventScope, HostState, PluginScope};
use crate::metrics::{Import, Limit};

/// An import call in progress on a plugin instance.
pub struct HostCall<'a> {
    state: &'a mut HostState,
}

impl<'a> HostCall<'a> {
    /// The linker's view of a store for every import (see `engine`).
    pub fn new(state: &'a mut HostState) -> HostCall<'a> {
        HostCall { state }
    }

    /// Counts a call to `import`; past the plugin's budget for one event the guest is
    /// stopped with a trap.
    pub fn enter(&mut self, import: Import) -> wasmtime::Result<&mut HostState> {
        let state = &mut *self.state;
        state.scope.metrics.host_call(import);
        state
            .budget
            .call(state.scope.limits.max_host_calls)
            .map_err(wasmtime::Error::new)?;
        Ok(state)
    }
}

/// The trap raised when an event exceeds its host-call budget.
#[derive(Debug, thiserror::Error)]
#[error("the plugin exceeded its limit of {0} host calls in one event")]
pub struct HostCallLimit(pub u32);

/// Marks [`HostCall`] as the data the generated `add_to_linker` hands each import.
pub struct Calls;

impl HasData for Calls {
    type Data<'a> = HostCall<'a>;
}

/// What the current event has spent of its plugin's per-event budgets: host calls
/// (imports and writes to stdout or stderr, against `limits.max_host_calls`) and log
/// bytes (the `log` import's lines and stdout and stderr lines together, against
/// `limits.max_log_bytes`).
///
/// The imports reach it through their [`HostState`]; the output streams, which
/// wasmtime-wasi keeps in its own table, hold a clone of the `Arc` it sits in. A store
/// runs one event at a time, so nothing here is contended; the atomics and the mutex
/// only make it shareable. [`EventBudget::end`] resets it after each event.
#[derive(Debug, Default)]
pub struct EventBudget {
    /// Host calls made during the event. 64 bits: a stream write past the budget
    /// fails without a trap on the async path, and must not wrap.
    host_calls: AtomicU64,
    /// Log bytes written and dropped during the event.
    log: Mutex<LogSpend>,
}

/// Log bytes an event wrote and dropped.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct LogSpend {
    /// Bytes of the lines that reached the log.
    pub written: usize,
    /// Lines dropped past the cap.
    pub dropped_lines: u64,
    /// Bytes of the dropped lines.
    pub dropped_bytes: u64,
}

impl EventBudget {
    /// Counts one host call; past `max` in the event, the error to stop the guest with.
    pub fn call(&self, max: u32) -> Result<(), HostCallLimit> {
        let calls = self.host_calls.fetch_add(1, Ordering::Relaxed) + 1;
        if calls > u64::from(max) {
            return Err(HostCallLimit(max));
        }
        Ok(())
    }

    /// Host calls made so far in the event.
    #[cfg(test)]
    pub fn host_calls(&self) -> u64 {
        self.host_calls.load(Ordering::Relaxed)
    }

    /// Whether a log line of `len` bytes (as it will be written, escaped) still fits
    /// under `cap` bytes for the event. Lines are written whole or not at all, and once
    /// one is dropped every later one is too, so the log keeps an unbroken beginning of
    /// what the event wrote. A dropped line is counted for [`EventBudget::end`].
    pub fn admit_line(&self, len: usize, cap: usize) -> bool {
        let mut log = self.log.lock().unwrap_or_else(|e| e.into_inner());
        if log.dropped_lines == 0 && len <= cap.saturating_sub(log.written) {
            log.written += len;
            return true;
        }
        log.dropped_lines += 1;
        log.dropped_bytes += len as u64;
        false
    }

    /// Ends the event: resets the budget for the next one and, if lines were dropped,
    /// says so in one warning and counts them in `wsgate_limits_hit_total`
    /// (`limit="log_bytes"`). Returns what the event spent on the log.
    pub fn end(&self, scope: &PluginScope, event: &EventScope) -> LogSpend {
        self.host_calls.store(0, Ordering::Relaxed);
        let spent = std::mem::take(&mut *self.log.lock().unwrap_or_else(|e| e.into_inner()));
        if spent.dropped_lines > 0 {
            scope
                .metrics
                .limit_hits(Limit::LogBytes, spent.dropped_lines);
            tracing::warn!(
                tenant = %scope.tenant,
                plugin = %scope.plugin,
                route = %event.route,
                connection = %event.connection,
                dropped_lines = spent.dropped_lines,
                dropped_bytes = spent.dropped_bytes,
                "the plugin's log lines past its {} bytes for one event were dropped (limits.max_log_bytes)",
                scope.limits.max_log_bytes
            );
        }
        spent
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::config::Access;
    use crate::plugin::bindings::wsgate::plugin::{config, connections, http_client, log, types};
    use crate::plugin::connections_impl::tests::state;
    use crate::registry::LocalRegistry;

    /// Every import, once, in `Import::ALL` order.
    async fn call_every_import(host: &mut HostCall<'_>) -> Vec<bool> {
        use config::Host as _;
        use connections::Host as _;
        use log::Host as _;
        let filter = || types::ListFilter {
            route: None,
            path: None,
        };
        let text = || types::Message::Text("x".into());
        vec![
            host.send("x".into(), text()).await.is_ok(),
            host.get_info("x".into()).await.is_ok(),
            host.disconnect("x".into(), 1000, String::new())
                .await
                .is_ok(),
            host.list(filter()).await.is_ok(),
            host.broadcast(filter(), text(), None).await.is_ok(),
            host.log(log::Level::Debug, "x".into()).await.is_ok(),
            host.get("k".into()).await.is_ok(),
            host.get_all().await.is_ok(),
            host.set_context("x".into(), String::new()).await.is_ok(),
            host.get_context("x".into()).await.is_ok(),
            // Refused (the plugin is granted no origin), but a call all the same.
            http_client::Host::send(
                host,
                http_client::Request {
                    method: "GET".into(),
                    url: "http://127.0.0.1:9/".into(),
                    headers: Vec::new(),
                    body: None,
                },
            )
            .await
            .is_ok(),
        ]
    }

    #[tokio::test]
    async fn every_import_is_counted_and_capped() {
        let mut state = state(Arc::new(LocalRegistry::default()), Access::Tenant, "");
        let metrics = state.scope.metrics.all().clone();
        let mut host = HostCall::new(&mut state);
        // One round of the eleven imports and nine logs: the whole budget of 20.
        assert!(call_every_import(&mut host).await.iter().all(|ok| *ok));
        for _ in 0..9 {
            log::Host::log(&mut host, log::Level::Debug, "x".into())
                .await
                .unwrap();
        }
        assert_eq!(host.state.budget.host_calls(), 20);
        let text = metrics.encode();
        for import in Import::ALL {
            let calls = if *import == Import::Log { 10 } else { 1 };
            let series = format!(
                r#"wsgate_plugin_host_calls_total{{tenant="t",plugin="p",import="{import}"}} {calls}"#
            );
            assert!(text.contains(&series), "{series} missing from:\n{text}");
        }
        // Past the budget, every import traps, whichever it is.
        let past = call_every_import(&mut host).await;
        assert_eq!(past, [false; 11]);
        let trap = host.enter(Import::Log).err().unwrap();
        assert!(
            trap.to_string().contains("limit of 20 host calls"),
            "{trap}"
        );
    }
}
