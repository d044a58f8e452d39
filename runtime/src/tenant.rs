//! A tenant at run time, as one snapshot of the config sees it: its routes with their
//! plugins resolved, its limits and credentials, and its connection registry (which
//! outlives snapshots).

use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::Arc;

use crate::config::{self, TenantConfig, TenantLimits};
use crate::metrics::TenantMetrics;
use crate::plugin::Plugin;
use crate::registry::{Payload, Registry};
use crate::routes::{RouteTable, SelectionExpression};

/// A tenant, ready to serve.
#[derive(Debug)]
pub struct Tenant {
    /// The tenant id.
    pub id: Arc<str>,
    /// Client limits; shared with the connections opened under them.
    pub limits: Arc<TenantLimits>,
    /// The tenant's connections, and no one else's.
    pub registry: Arc<dyn Registry>,
    /// Its connections and the upgrades under way, against `limits.max_connections`.
    pub slots: crate::gateway::Slots,
    /// Its share of the cores and its quotas (which outlive snapshots).
    pub share: Arc<crate::fair::TenantShare>,
    /// Routes by template.
    pub routes: RouteTable<Arc<Route>>,
    /// Management API credentials.
    pub credentials: config::Credentials,
    /// Whether the management API shows the end user's credentials (see the config).
    pub expose_credentials: bool,
    /// The management API rate limit (requests per second, with a burst).
    pub api_limiter: governor::DefaultDirectRateLimiter,
    /// The tenant's metrics; shared with its connections.
    pub metrics: Arc<TenantMetrics>,
}

/// A route with its plugins resolved.
#[derive(Debug)]
pub struct Route {
    /// The template, e.g. `/chat/{room}`.
    pub template: Arc<str>,
    /// The selection expression, if the route has custom keys.
    pub selection: Option<SelectionExpression>,
    /// `$connect` handler.
    pub connect: Option<Arc<Plugin>>,
    /// `$disconnect` handler.
    pub disconnect: Option<Arc<Plugin>>,
    /// `$default` handler.
    pub default: Option<Arc<Plugin>>,
    /// Custom route keys.
    pub keys: HashMap<String, Arc<Plugin>>,
}

/// The route key used when no custom key matched.
pub const DEFAULT_KEY: &str = config::DEFAULT_KEY;

impl Route {
    /// Builds a route from its config, looking plugins up in `plugins`.
    pub fn new(
        template: &str,
        route: &config::RouteConfig,
        plugins: &HashMap<String, Arc<Plugin>>,
    ) -> Route {
        // Validation has checked every name, so lookups cannot fail here.
        let plugin = |name: &String| plugins[name].clone();
        let fallback = route.plugin.as_ref().map(plugin);
        let special = |key: &str| route.keys.get(key).map(plugin).or_else(|| fallback.clone());
        Route {
            template: template.into(),
            selection: route
                .selection
                .as_deref()
                .map(|expr| SelectionExpression::parse(expr).expect("validated")),
            connect: special(config::CONNECT_KEY),
            disconnect: special(config::DISCONNECT_KEY),
            default: special(config::DEFAULT_KEY),
            keys: route
                .keys
                .iter()
                .filter(|(key, _)| !key.starts_with('$'))
                .map(|(key, name)| (key.clone(), plugin(name)))
                .collect(),
        }
    }

    /// A route without plugins: every message answers as an unrouted one.
    pub fn empty(template: &str) -> Route {
        Route {
            template: template.into(),
            selection: None,
            connect: None,
            disconnect: None,
            default: None,
            keys: HashMap::new(),
        }
    }

    /// The route key and plugin for a message: the selection expression's value when it
    /// names a key, else `$default`. `None` when nothing handles it.
    pub fn select(&self, payload: &Payload) -> Option<(Cow<'static, str>, &Arc<Plugin>)> {
        if let (Some(expr), Payload::Text(text)) = (&self.selection, payload)
            && let Some(key) = expr.select(text)
            && let Some(plugin) = self.keys.get(&key)
        {
            return Some((Cow::Owned(key), plugin));
        }
        self.default
            .as_ref()
            .map(|p| (Cow::Borrowed(DEFAULT_KEY), p))
    }
}

impl Tenant {
    /// Builds a tenant whose plugins are already loaded.
    pub fn new(
        id: &str,
        config: &TenantConfig,
        plugins: &HashMap<String, Arc<Plugin>>,
        registry: Arc<dyn Registry>,
        slots: crate::gateway::Slots,
        share: Arc<crate::fair::TenantShare>,
        metrics: Arc<TenantMetrics>,
    ) -> Tenant {
        let mut routes = RouteTable::builder();
        for (template, route) in &config.routes {
            routes
                .insert(template, Arc::new(Route::new(template, route, plugins)))
                .expect("route templates were validated");
        }
        Tenant {
            id: id.into(),
            limits: Arc::new(config.limits.clone()),
            registry,
            slots,
            share,
            routes,
            credentials: config.credentials.clone(),
            expose_credentials: config.expose_credentials,
            api_limiter: governor::RateLimiter::direct(
                governor::Quota::per_second(
                    std::num::NonZeroU32::new(config.limits.api_rate).expect("validated"),
                )
                .allow_burst(
                    std::num::NonZeroU32::new(config.limits.api_burst).expect("validated"),
                ),
            ),
            metrics,
        }
    }

    /// The route with exactly this template.
    pub fn route(&self, template: &str) -> Option<&Arc<Route>> {
        self.routes.get(template)
    }
}
