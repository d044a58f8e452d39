//! `wsgate:plugin/log`: a guest's log lines, with tenant, plugin, route and connection.

use super::bindings::wsgate::plugin::log;
use super::call::HostCall;
use super::output::escape;
use crate::metrics::Import;

impl log::Host for HostCall<'_> {
    /// Counts the call, then writes the message escaped (see `output::escape`) unless
    /// its level is filtered out or the event's `limits.max_log_bytes` is spent.
    async fn log(&mut self, level: log::Level, message: String) -> wasmtime::Result<()> {
        let state = self.enter(Import::Log)?;
        let scope = &state.scope;
        let event = &state.event;
        macro_rules! emit {
            ($level:expr) => {{
                // A line the log would filter out costs nothing of the cap, nor an escape.
                if !tracing::enabled!(target: "wsgate::plugin", $level) {
                    return Ok(());
                }
                let message = escape(&message);
                if !state
                    .budget
                    .admit_line(message.len(), scope.limits.max_log_bytes)
                {
                    return Ok(());
                }
                tracing::event!(
                    target: "wsgate::plugin",
                    $level,
                    tenant = %scope.tenant,
                    plugin = %scope.plugin,
                    route = %event.route,
                    connection = %event.connection,
                    "{message}"
                )
            }};
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
