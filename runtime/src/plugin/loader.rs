//! Loading plugins from the config: each component file read and compiled once however
//! many plugins use it, then linked with each plugin's scope. Errors name the config
//! key of the plugin's path.

use std::collections::HashMap;
use std::path::PathBuf;

use wasmtime::component::Component;

use super::{Host, Origin, Plugin, PluginScope};
use crate::config::{Config, ConfigError, PluginConfig};

/// Loads the plugins of one config.
pub struct Loader<'h> {
    host: &'h Host,
    /// Components compiled so far, by canonical path.
    compiled: HashMap<PathBuf, (Component, Origin)>,
}

impl<'h> Loader<'h> {
    /// A loader on `host`'s engine.
    pub fn new(host: &'h Host) -> Loader<'h> {
        Loader {
            host,
            compiled: HashMap::new(),
        }
    }

    /// Compiles (or reuses) the component of `plugin`, the plugin `name` of tenant
    /// `tenant` in `config`, and links it with `scope`.
    pub fn load(
        &mut self,
        config: &Config,
        tenant: &str,
        name: &str,
        plugin: &PluginConfig,
        scope: PluginScope,
    ) -> Result<Plugin, ConfigError> {
        let key = format!("tenants.{tenant}.plugins.{name}.path");
        let path = config.plugin_path(plugin);
        let canonical = path
            .canonicalize()
            .map_err(|e| config.invalid(&key, format!("cannot read {}: {e}", path.display())))?;
        let (component, origin) = match self.compiled.get(&canonical) {
            Some(ready) => ready.clone(),
            None => {
                let bytes = std::fs::read(&canonical).map_err(|e| {
                    config.invalid(&key, format!("cannot read {}: {e}", path.display()))
                })?;
                let started = std::time::Instant::now();
                let ready = self
                    .host
                    .compile(&bytes)
                    .map_err(|e| config.invalid(&key, format!("{}: {e}", path.display())))?;
                tracing::debug!(path = %path.display(), from = %ready.1.as_str(), elapsed = ?started.elapsed(), "component ready");
                self.compiled.insert(canonical, ready.clone());
                ready
            }
        };
        let plugin = self
            .host
            .link(&component, scope)
            .map_err(|e| config.invalid(&key, format!("{}: {e}", path.display())))?;
        tracing::info!(tenant, plugin = name, path = %path.display(), from = %origin.as_str(), "plugin loaded");
        Ok(plugin)
    }

    /// Ends loading: frees the function cache and logs what it saved.
    pub fn finish(self) {
        if let Some(stats) = self.host.loaded()
            && stats.reused + stats.compiled > 0
        {
            tracing::info!(
                functions_reused = stats.reused,
                functions_compiled = stats.compiled,
                cache_kib = stats.bytes / 1024,
                "plugins compiled; functions shared between them were compiled once"
            );
        }
    }
}
