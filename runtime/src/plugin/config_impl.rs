//! `wsgate:plugin/config`: the plugin's own key-values from the gateway config.

use super::bindings::wsgate::plugin::config;
use super::call::HostCall;
use crate::metrics::Import;

/// The gateway's own key: the management API's public `host:port`. Plugin configs may
/// not set keys under `wsgate.` (the config check refuses them).
const DOMAIN_NAME: &str = "wsgate.domain_name";

impl config::Host for HostCall<'_> {
    async fn get(&mut self, key: String) -> wasmtime::Result<Option<String>> {
        let state = self.enter(Import::ConfigGet)?;
        if key == DOMAIN_NAME {
            return Ok(state.scope.domain_name.load_full().map(|n| (*n).clone()));
        }
        Ok(state
            .scope
            .config
            .iter()
            .find(|(k, _)| *k == key)
            .map(|(_, v)| v.clone()))
    }

    async fn get_all(&mut self) -> wasmtime::Result<Vec<(String, String)>> {
        let state = self.enter(Import::ConfigGetAll)?;
        let mut all = state.scope.config.clone();
        if let Some(name) = state.scope.domain_name.load_full() {
            // Sorted like the rest: `wsgate.` sorts after the usual lower-case keys only
            // sometimes, so place it properly.
            let at = all.partition_point(|(k, _)| k.as_str() < DOMAIN_NAME);
            all.insert(at, (DOMAIN_NAME.to_owned(), (*name).clone()));
        }
        Ok(all)
    }
}
