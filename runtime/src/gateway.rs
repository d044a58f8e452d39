//! The gateway as a whole: tenants with loaded plugins, and how a request finds its
//! tenant (by host name, else by the first path segment).

use std::collections::HashMap;
use std::sync::Arc;

use std::sync::atomic::{AtomicUsize, Ordering};

use crate::config::{Config, ConfigError, GlobalLimits};
use crate::metrics::Metrics;
use crate::plugin::{Host, PluginScope};
use crate::registry::LocalRegistry;
use crate::tenant::Tenant;

/// Everything the listeners serve.
pub struct Gateway {
    /// Tenants by id.
    tenants: HashMap<Arc<str>, Arc<Tenant>>,
    /// Tenants by host name (lower case).
    hosts: HashMap<String, Arc<Tenant>>,
    /// Limits of the whole gateway.
    pub limits: GlobalLimits,
    /// Every metric.
    pub metrics: Arc<Metrics>,
    /// Open connections across tenants, against `limits.max_connections`.
    open: AtomicUsize,
    /// The wasm engine; kept for the life of the gateway.
    _host: Host,
}

/// A slot counted against the gateway-wide connection cap; freed when dropped.
pub struct ConnectionSlot<'a>(&'a AtomicUsize);

impl Drop for ConnectionSlot<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

impl Gateway {
    /// Compiles every plugin and builds the tenants. A plugin that is not a valid
    /// component implementing the world fails with its config key.
    pub fn new(config: &Config) -> Result<Gateway, ConfigError> {
        let host = Host::new(
            config.limits.max_wasm_stack_bytes,
            config.compile.cache_dir(&config.base_dir),
            config.compile.function_cache,
        )
        .map_err(|e| config.invalid("limits.max_wasm_stack_bytes", format!("{e:#}")))?;
        let metrics = Metrics::new();
        let mut tenants = HashMap::new();
        let mut hosts = HashMap::new();
        let mut compiled = HashMap::new();
        for (id, tenant_config) in &config.tenants {
            let registry = Arc::new(LocalRegistry::default());
            let events = Arc::new(tokio::sync::Semaphore::new(
                tenant_config.limits.max_concurrent_events,
            ));
            let mut plugins = HashMap::new();
            for (name, plugin_config) in &tenant_config.plugins {
                let key = format!("tenants.{id}.plugins.{name}.path");
                let path = config.plugin_path(plugin_config);
                let canonical = path.canonicalize().map_err(|e| {
                    config.invalid(&key, format!("cannot read {}: {e}", path.display()))
                })?;
                let (component, origin) = match compiled.get(&canonical) {
                    Some(ready) => Clone::clone(ready),
                    None => {
                        let bytes = std::fs::read(&canonical).map_err(|e| {
                            config.invalid(&key, format!("cannot read {}: {e}", path.display()))
                        })?;
                        let started = std::time::Instant::now();
                        let (component, origin) = host.compile(&bytes).map_err(|e| {
                            config.invalid(&key, format!("{}: {e}", path.display()))
                        })?;
                        tracing::debug!(path = %path.display(), from = %origin.as_str(), elapsed = ?started.elapsed(), "component ready");
                        compiled.insert(canonical, (component.clone(), origin));
                        (component, origin)
                    }
                };
                let scope = PluginScope {
                    tenant: id.as_str().into(),
                    plugin: name.as_str().into(),
                    registry: registry.clone(),
                    config: plugin_config.config.clone().into_iter().collect(),
                    access: plugin_config.access,
                    max_message_bytes: tenant_config.limits.max_message_bytes,
                    limits: plugin_config.limits.clone(),
                    metrics: metrics.clone(),
                    events: events.clone(),
                    heavy_until_ms: Default::default(),
                };
                let plugin = host
                    .link(&component, scope)
                    .map_err(|e| config.invalid(&key, format!("{}: {e}", path.display())))?;
                tracing::info!(tenant = %id, plugin = %name, path = %path.display(), from = %origin.as_str(), "plugin loaded");
                plugins.insert(name.clone(), Arc::new(plugin));
            }
            let tenant = Arc::new(Tenant::new(
                id,
                tenant_config,
                &plugins,
                registry,
                metrics.tenant(id),
            ));
            for name in &tenant_config.hosts {
                hosts.insert(name.to_ascii_lowercase(), tenant.clone());
            }
            tenants.insert(tenant.id.clone(), tenant);
        }
        if let Some(stats) = host.loaded()
            && stats.reused + stats.compiled > 0
        {
            tracing::info!(
                functions_reused = stats.reused,
                functions_compiled = stats.compiled,
                cache_kib = stats.bytes / 1024,
                "plugins compiled; functions shared between them were compiled once"
            );
        }
        Ok(Gateway {
            tenants,
            hosts,
            limits: config.limits.clone(),
            metrics,
            open: AtomicUsize::new(0),
            _host: host,
        })
    }

    /// The tenant a request is for and the path below it. A `Host` listed by a tenant
    /// wins; otherwise the first path segment names the tenant.
    pub fn resolve<'p>(&self, host: Option<&str>, path: &'p str) -> Option<(Arc<Tenant>, &'p str)> {
        if let Some(host) = host {
            let name = host.rsplit_once(':').map_or(host, |(name, port)| {
                if port.bytes().all(|b| b.is_ascii_digit()) {
                    name
                } else {
                    host
                }
            });
            if let Some(tenant) = self.hosts.get(&name.to_ascii_lowercase()) {
                return Some((tenant.clone(), path));
            }
        }
        let rest = path.strip_prefix('/')?;
        let (id, below) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, "/"),
        };
        self.tenants.get(id).map(|t| (t.clone(), below))
    }

    /// Takes a slot under the gateway-wide connection cap, if one is free.
    pub fn connection_slot(&self) -> Option<ConnectionSlot<'_>> {
        let taken = self.open.fetch_add(1, Ordering::AcqRel);
        let slot = ConnectionSlot(&self.open);
        (taken < self.limits.max_connections).then_some(slot)
    }

    /// Every tenant.
    pub fn tenants(&self) -> impl Iterator<Item = &Arc<Tenant>> {
        self.tenants.values()
    }
}
