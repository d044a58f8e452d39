//! `wsgate:plugin/config`: the plugin's own key-values from the gateway config.

use super::bindings::wsgate::plugin::config;
use super::call::HostCall;
use crate::metrics::Import;

impl config::Host for HostCall<'_> {
    async fn get(&mut self, key: String) -> wasmtime::Result<Option<String>> {
        let state = self.enter(Import::ConfigGet)?;
        Ok(state
            .scope
            .config
            .iter()
            .find(|(k, _)| *k == key)
            .map(|(_, v)| v.clone()))
    }

    async fn get_all(&mut self) -> wasmtime::Result<Vec<(String, String)>> {
        let state = self.enter(Import::ConfigGetAll)?;
        Ok(state.scope.config.clone())
    }
}
