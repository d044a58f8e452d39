//! The one way into a plugin's host state from an import: [`HostCall::enter`] counts
//! the call against the event's budget and in the metrics, and traps past the budget.
//! The generated host traits are implemented on [`HostCall`], whose state is private to
//! this module, so an import cannot reach the registry, the config or the grants
//! without being counted.

use wasmtime::component::HasData;

use super::state::HostState;
use crate::metrics::Import;

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
        state.host_calls += 1;
        state.scope.metrics.host_call(import);
        let max = state.scope.limits.max_host_calls;
        if state.host_calls > max {
            return Err(wasmtime::Error::new(HostCallLimit(max)));
        }
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

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::config::Access;
    use crate::plugin::bindings::wsgate::plugin::{config, connections, log, types};
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
        ]
    }

    #[tokio::test]
    async fn every_import_is_counted_and_capped() {
        let mut state = state(Arc::new(LocalRegistry::default()), Access::Tenant, "");
        let metrics = state.scope.metrics.all().clone();
        let mut host = HostCall::new(&mut state);
        // Two rounds of the eight imports: 16 calls within the budget of 20.
        for _ in 0..2 {
            assert!(call_every_import(&mut host).await.iter().all(|ok| *ok));
        }
        assert_eq!(host.state.host_calls, 16);
        let text = metrics.encode();
        for import in Import::ALL {
            let series = format!(
                r#"wsgate_plugin_host_calls_total{{tenant="t",plugin="p",import="{import}"}} 2"#
            );
            assert!(text.contains(&series), "{series} missing from:\n{text}");
        }
        // The third round passes the budget at its fifth call, whichever import it is,
        // and every later call traps too.
        let third = call_every_import(&mut host).await;
        assert_eq!(third, [true, true, true, true, false, false, false, false]);
        let trap = host.enter(Import::Log).err().unwrap();
        assert!(
            trap.to_string().contains("limit of 20 host calls"),
            "{trap}"
        );
    }
}
