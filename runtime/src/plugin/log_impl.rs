//! `wsgate:plugin/log`: a guest's log lines, with tenant, plugin, route and connection,
//! into the gateway's log and the tenant's execution log.

use super::bindings::wsgate::plugin::log;
use super::call::HostCall;
use super::output::escape;
use crate::execlog::Level;
use crate::metrics::Import;

impl log::Host for HostCall<'_> {
    /// Counts the call, then, unless the event's `limits.max_log_bytes` is spent, keeps
    /// the message escaped (see `output::escape`) in the tenant's execution log, and
    /// writes it to the gateway's log unless its level is filtered out there. The
    /// execution log keeps every level: it is the tenant's, and the operator's filter
    /// is not theirs to choose; the cap bounds what one event may put in it.
    async fn log(&mut self, level: log::Level, message: String) -> wasmtime::Result<()> {
        let state = self.enter(Import::Log)?;
        let scope = &state.scope;
        let event = &state.event;
        let message = escape(&message);
        if !state
            .budget
            .admit_line(message.len(), scope.limits.max_log_bytes)
        {
            return Ok(());
        }
        let kept = match level {
            log::Level::Trace => Level::Trace,
            log::Level::Debug => Level::Debug,
            log::Level::Info => Level::Info,
            log::Level::Warn => Level::Warn,
            log::Level::Error => Level::Error,
        };
        scope.execution_log.log(
            kept,
            &scope.plugin,
            &event.route,
            &event.connection,
            &message,
        );
        macro_rules! emit {
            ($level:expr) => {
                // A line the log filters out costs no formatting.
                if tracing::enabled!(target: "wsgate::plugin", $level) {
                    tracing::event!(
                        target: "wsgate::plugin",
                        $level,
                        tenant = %scope.tenant,
                        plugin = %scope.plugin,
                        route = %event.route,
                        connection = %event.connection,
                        "{message}"
                    )
                }
            };
        }
        match level {
            log::Level::Trace => emit!(tracing::Level::TRACE),
            log::Level::Debug => emit!(tracing::Level::DEBUG),
            log::Level::Info => emit!(tracing::Level::INFO),
            log::Level::Warn => emit!(tracing::Level::WARN),
            log::Level::Error => emit!(tracing::Level::ERROR),
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::config::Access;
    use crate::execlog::Kind;
    use crate::plugin::connections_impl::tests::{now, state};
    use crate::registry::LocalRegistry;

    /// Every level reaches the tenant's execution log, escaped once, with the event's
    /// route and connection, whatever the gateway's log filters; lines past the
    /// event's cap reach neither.
    #[test]
    fn lines_reach_the_execution_log_within_the_cap() {
        use log::Host as _;
        let mut state = state(Arc::new(LocalRegistry::default()), Access::Tenant, "c1");
        state.event.route = "/r".into();
        let cap = state.scope.limits.max_log_bytes;
        let kept = state.scope.execution_log.clone();
        // No subscriber: the gateway's log filters out every level.
        now(HostCall::new(&mut state).log(log::Level::Trace, "a\nb".into())).unwrap();
        now(HostCall::new(&mut state).log(log::Level::Error, "x".repeat(cap))).unwrap();
        let page = kept.read(0, 10);
        assert_eq!(page.entries.len(), 1, "the second line is past the cap");
        let entry = &page.entries[0];
        assert_eq!(
            (entry.level, entry.kind, entry.message.as_str()),
            (Level::Trace, Kind::Log, "a\\nb")
        );
        assert_eq!(entry.plugin.as_deref(), Some("p"));
        assert_eq!(entry.route.as_deref(), Some("/r"));
        assert_eq!(entry.connection_id.as_deref(), Some("c1"));
    }
}
