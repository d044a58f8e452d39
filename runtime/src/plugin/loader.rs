//! Loading plugins from the config: each component file read and compiled once however
//! many plugins use it, then linked with each plugin's scope. Errors name the config
//! key of the plugin's path.
//!
//! Components are known by the SHA-256 of their bytes, so a reload reuses the compiled
//! component of every unchanged file (whatever its path) and compiles only new bytes.

use std::collections::HashMap;

use sha2::{Digest as _, Sha256};
use wasmtime::component::Component;

use super::{Digest, Host, Origin, Plugin, PluginScope};
use crate::config::{Config, ConfigError, PluginConfig};

/// Loads the plugins of one config.
pub struct Loader<'h> {
    host: &'h Host,
    /// Components loaded so far, by digest.
    loaded: HashMap<Digest, (Component, Origin)>,
}

/// A loaded plugin and the digest of its component's bytes.
pub struct Loaded {
    /// The plugin, linked with its scope.
    pub plugin: Plugin,
    /// The SHA-256 of its component.
    pub digest: Digest,
    /// Where its compiled component came from.
    pub origin: Origin,
}

impl<'h> Loader<'h> {
    /// A loader on `host`'s engine.
    pub fn new(host: &'h Host) -> Loader<'h> {
        Loader {
            host,
            loaded: HashMap::new(),
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
    ) -> Result<Loaded, ConfigError> {
        let key = format!("tenants.{tenant}.plugins.{name}.path");
        let path = config.plugin_path(plugin);
        let bytes = std::fs::read(&path)
            .map_err(|e| config.invalid(&key, format!("cannot read {}: {e}", path.display())))?;
        let digest: Digest = Sha256::digest(&bytes).into();
        let (component, origin) = match self.loaded.get(&digest) {
            Some(ready) => ready.clone(),
            None => {
                let started = std::time::Instant::now();
                let ready = match self.host.resident(&digest) {
                    Some(component) => (component, Origin::Kept),
                    None => self
                        .host
                        .compile(&bytes)
                        .map_err(|e| config.invalid(&key, format!("{}: {e}", path.display())))?,
                };
                tracing::debug!(path = %path.display(), from = %ready.1.as_str(), elapsed = ?started.elapsed(), "component ready");
                self.loaded.insert(digest, ready.clone());
                ready
            }
        };
        let plugin = self
            .host
            .link(&component, scope)
            .map_err(|e| config.invalid(&key, format!("{}: {e}", path.display())))?;
        tracing::info!(tenant, plugin = name, path = %path.display(), from = %origin.as_str(), "plugin loaded");
        Ok(Loaded {
            plugin,
            digest,
            origin,
        })
    }

    /// Ends loading a config that will be put in force: its components become the
    /// resident set (the next reload reuses them); frees the function cache and logs
    /// what it saved.
    pub fn finish(self) {
        self.host.keep_resident(
            self.loaded
                .into_iter()
                .map(|(digest, (component, _))| (digest, component))
                .collect(),
        );
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
