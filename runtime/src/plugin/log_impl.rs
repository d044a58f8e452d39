//! `wsgate:plugin/log`: a guest's log lines, with tenant, plugin, route and connection.

use super::bindings::wsgate::plugin::log;
use super::call::HostCall;
use crate::metrics::Import;

impl log::Host for HostCall<'_> {
    async fn log(&mut self, level: log::Level, message: String) -> wasmtime::Result<()> {
        let state = self.enter(Import::Log)?;
        let scope = &state.scope;
        let event = &state.event;
        macro_rules! emit {
            ($level:expr) => {
                tracing::event!(
                    target: "wsgate::plugin",
                    $level,
                    tenant = %scope.tenant,
                    plugin = %scope.plugin,
                    route = %event.route,
                    connection = %event.connection,
                    "{message}"
                )
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
