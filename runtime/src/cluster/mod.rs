//! Cluster mode: gateway nodes that share one Redis act as one gateway.
//!
//! - `keys`: every Redis key and channel.
//! - `wire`: what nodes say to each other (versioned JSON).
//! - `registry`: [`ClusterRegistry`], the tenant's verbs across nodes.
//! - `inbox`: this node's side of other nodes' requests.
//! - `sweep`: dead nodes' connections, cleaned once across the cluster.
//!
//! A connection id ends with `.{node}`, so a verb on a connection held elsewhere goes
//! straight to that node's inbox, a Redis pub/sub channel, and waits for the reply up to
//! `request_timeout`. Pub/sub rather than a stream: a request is only worth delivering
//! while its caller still waits, and `PUBLISH` tells at once whether the node listens,
//! so nothing needs resuming after a crash (the sweep handles a dead node's
//! connections). What lives in Redis changes only when a connection comes or goes,
//! never while it idles; a node's heartbeat is one key renewed every
//! `heartbeat_interval`.

mod calls;
mod inbox;
mod keys;
mod membership;
mod registry;
mod sweep;
pub mod wire;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use dashmap::DashMap;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{IntoConnectionInfo, ProtocolVersion};
use tokio::sync::{mpsc, oneshot};

pub use keys::Keys;
pub use membership::{LISTED_NODES, NodeState};
pub use registry::ClusterRegistry;

use crate::config::ClusterConfig;
use crate::registry::{ConnectionMeta, DeliveryError, LocalRegistry};
use wire::Outcome;

/// Pushes from Redis (inbox frames) waiting to be read; past it they are dropped and
/// their callers time out with 503.
const INBOX_QUEUE: usize = 65_536;
/// Departures waiting to be written to Redis; past it they are left to the next
/// reconciliation.
const CHANGES_QUEUE: usize = 65_536;
/// Calls to other nodes waiting for their reply at once; past it calls fail at once.
const MAX_PENDING: usize = 65_536;
/// Redis writes per pipeline when registering or removing many connections.
const BATCH: usize = 500;

/// Whether `id` can be a node id: 1 to 32 letters, digits, '-' or '_'.
pub fn valid_node_id(id: &str) -> bool {
    (1..=32).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// The node that holds connection `id`, from the id's `.{node}` ending.
pub fn node_of(id: &str) -> Option<&str> {
    id.rsplit_once('.')
        .map(|(_, node)| node)
        .filter(|node| valid_node_id(node))
}

/// Why the cluster could not start.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    /// The Redis URL could not be used.
    #[error("cluster.redis_url: {0}")]
    Url(String),
}

/// This node's membership of the cluster: its Redis connection, its inbox, the calls it
/// waits on, and the tenants' local registries it answers for.
pub struct Cluster {
    node: Arc<str>,
    config: ClusterConfig,
    keys: Keys,
    redis: ConnectionManager,
    /// Replies awaited, by request id.
    pending: DashMap<u64, oneshot::Sender<Outcome>>,
    next_request: AtomicU64,
    /// Each tenant's registry on this node, for requests from other nodes.
    locals: Mutex<HashMap<Arc<str>, LocalRegistry>>,
    /// Why the node is degraded (Redis unreachable), or `None` when healthy.
    degraded: Mutex<Option<String>>,
    /// Redis may disagree with this node's connections (a write failed, or Redis
    /// restarted empty): the next heartbeat rewrites them.
    needs_reconcile: AtomicBool,
    /// Whether the inbox subscription is in place (the manager renews it on reconnect).
    subscribed: AtomicBool,
    /// Connections gone, for the writer.
    changes: mpsc::Sender<Change>,
    /// The receiving ends, taken once by [`Cluster::start`].
    receivers: Mutex<Option<Receivers>>,
    /// Swept connections whose `$disconnect` runs now, by id.
    swept: DashMap<Arc<str>, crate::registry::ConnectionInfo>,
}

struct Receivers {
    inbox: mpsc::Receiver<redis::PushInfo>,
    changes: mpsc::Receiver<Change>,
}

/// A change to write to Redis: a connection of a tenant left.
struct Change(Arc<str>, Arc<str>);

impl std::fmt::Debug for Cluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cluster")
            .field("node", &self.node)
            .finish_non_exhaustive()
    }
}

impl Cluster {
    /// Prepares this node's membership; nothing is sent to Redis until [`Cluster::start`],
    /// and a Redis that is down now only makes the node start degraded.
    pub fn new(config: &ClusterConfig) -> Result<Arc<Cluster>, ClusterError> {
        let node: Arc<str> = match &config.node_id {
            Some(node) => node.as_str().into(),
            None => generated_node_id().into(),
        };
        let url = config
            .redis_url
            .as_ref()
            .ok_or_else(|| ClusterError::Url("missing: set the shared Redis's URL".into()))?;
        let info = url
            .expose()
            .into_connection_info()
            .map_err(|e| ClusterError::Url(e.to_string()))?;
        // RESP3: pub/sub pushes arrive on the same multiplexed connection as commands.
        let settings = info
            .redis_settings()
            .clone()
            .set_protocol(ProtocolVersion::RESP3);
        let client = redis::Client::open(info.set_redis_settings(settings))
            .map_err(|e| ClusterError::Url(e.to_string()))?;
        let (push_tx, push_rx) = mpsc::channel(INBOX_QUEUE);
        let manager_config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(config.request_timeout))
            .set_response_timeout(Some(config.request_timeout))
            .set_number_of_retries(1)
            .set_max_delay(Duration::from_secs(1))
            .set_automatic_resubscription()
            .set_push_sender(move |push: redis::PushInfo| {
                push_tx.try_send(push).map_err(|_| redis::aio::SendError)
            });
        let redis = ConnectionManager::new_lazy_with_config(client, manager_config)
            .map_err(|e| ClusterError::Url(e.to_string()))?;
        let (changes_tx, changes_rx) = mpsc::channel(CHANGES_QUEUE);
        Ok(Arc::new(Cluster {
            keys: Keys::new(&config.key_prefix),
            node,
            config: config.clone(),
            redis,
            pending: DashMap::new(),
            next_request: AtomicU64::new(1),
            locals: Mutex::default(),
            degraded: Mutex::new(Some("not yet registered in Redis".into())),
            needs_reconcile: AtomicBool::new(true),
            subscribed: AtomicBool::new(false),
            changes: changes_tx,
            receivers: Mutex::new(Some(Receivers {
                inbox: push_rx,
                changes: changes_rx,
            })),
            swept: DashMap::new(),
        }))
    }

    /// This node's id.
    pub fn node(&self) -> &str {
        &self.node
    }

    /// The cluster's settings.
    pub fn config(&self) -> &ClusterConfig {
        &self.config
    }

    /// The Redis key names.
    pub fn keys(&self) -> &Keys {
        &self.keys
    }

    /// A handle on the Redis connection (cheap: it is shared).
    pub fn redis(&self) -> ConnectionManager {
        self.redis.clone()
    }

    /// Why the node is degraded, or `None`.
    pub fn degraded(&self) -> Option<String> {
        self.degraded
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Records that Redis failed (`what` was being done); the node is degraded until the
    /// next heartbeat gets through, and then rewrites its connections.
    pub fn redis_failed(&self, what: &str, err: &redis::RedisError) {
        let reason = format!("Redis is unreachable ({what}: {err})");
        let mut degraded = self.degraded.lock().unwrap_or_else(|e| e.into_inner());
        if degraded.is_none() {
            tracing::warn!(node = %self.node, "cluster degraded: {reason}");
        }
        *degraded = Some(reason);
        self.needs_reconcile.store(true, Ordering::Relaxed);
    }

    /// The error a cluster operation gives while Redis fails.
    pub fn unavailable(&self, what: &str, err: &redis::RedisError) -> DeliveryError {
        self.redis_failed(what, err);
        DeliveryError::Unavailable(format!(
            "the cluster's Redis did not answer ({what}: {err}); nothing was done, retry later"
        ))
    }

    /// Makes tenant `id`'s local registry, which tells the cluster of departures, and
    /// remembers it for other nodes' requests.
    pub fn local_registry(
        self: &Arc<Self>,
        tenant: &str,
        gauge: prometheus_client::metrics::gauge::Gauge,
    ) -> LocalRegistry {
        let tenant: Arc<str> = tenant.into();
        let mut locals = self.locals.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(local) = locals.get(&tenant) {
            return local.clone();
        }
        let weak = Arc::downgrade(self);
        let hook_tenant = tenant.clone();
        let local = LocalRegistry::with_hook(
            gauge,
            Some(Box::new(move |meta: &ConnectionMeta| {
                if let Some(cluster) = weak.upgrade() {
                    cluster.detach(&hook_tenant, &meta.id);
                }
            })),
        );
        locals.insert(tenant, local.clone());
        local
    }

    /// Tenant `tenant`'s registry on this node.
    pub fn local(&self, tenant: &str) -> Option<LocalRegistry> {
        self.locals
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(tenant)
            .cloned()
    }

    /// Queues a departed connection's removal from Redis.
    fn detach(&self, tenant: &Arc<str>, id: &Arc<str>) {
        self.write_later(Change(tenant.clone(), id.clone()));
    }

    /// Queues a change for the writer, or leaves it to the next reconciliation.
    fn write_later(&self, change: Change) {
        if self.changes.try_send(change).is_err() {
            // The writer is behind: the next reconciliation removes it.
            self.needs_reconcile.store(true, Ordering::Relaxed);
        }
    }

    /// Starts the heartbeat, the inbox reader, the departure writer and the sweeper;
    /// they stop with `shutdown`.
    pub fn start(
        self: &Arc<Self>,
        gateway: Arc<crate::Gateway>,
        shutdown: tokio_util::sync::CancellationToken,
    ) {
        let Some(receivers) = self
            .receivers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take()
        else {
            return;
        };
        tracing::info!(node = %self.node, "cluster: joining through Redis");
        tokio::spawn(inbox::serve(
            self.clone(),
            receivers.inbox,
            shutdown.clone(),
        ));
        tokio::spawn(
            self.clone()
                .write_changes(receivers.changes, shutdown.clone()),
        );
        tokio::spawn(self.clone().heartbeat(shutdown.clone()));
        tokio::spawn(sweep::run(self.clone(), gateway, shutdown));
    }
}

/// A node id for a node that was given none: 8 random letters and digits.
fn generated_node_id() -> String {
    const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";
    (0..8)
        .map(|_| ALPHABET[rand::random_range(0..ALPHABET.len())] as char)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_ids_and_the_node_of_a_connection() {
        assert!(valid_node_id("a"));
        assert!(valid_node_id("node-1_B"));
        assert!(!valid_node_id(""));
        assert!(!valid_node_id("a.b"));
        assert!(!valid_node_id(&"x".repeat(33)));
        assert_eq!(node_of("AbC-_12.node-1"), Some("node-1"));
        assert_eq!(node_of("AbC-_12"), None);
        assert_eq!(node_of("x.bad node"), None);
        let generated = generated_node_id();
        assert!(valid_node_id(&generated), "{generated}");
    }

    /// A cluster whose Redis is never reached (the connection is made lazily).
    fn unconnected() -> Arc<Cluster> {
        let config: ClusterConfig =
            toml::from_str("redis_url = \"redis://127.0.0.1:1\"\nnode_id = \"a\"").unwrap();
        Cluster::new(&config).unwrap()
    }

    /// Past `MAX_PENDING` calls waiting for replies, a call fails at once, before it
    /// publishes anything.
    #[tokio::test]
    async fn calls_past_the_pending_cap_fail_at_once() {
        let cluster = unconnected();
        let mut waiting = Vec::with_capacity(MAX_PENDING);
        for id in 0..MAX_PENDING as u64 {
            let (tx, rx) = oneshot::channel();
            cluster.pending.insert(u64::MAX - id, tx);
            waiting.push(rx);
        }
        let op = wire::Op::Info { conn: "x.b".into() };
        match cluster.call("b", "t", op).await {
            Err(DeliveryError::Unavailable(why)) => {
                assert!(why.contains("waiting already"), "{why}")
            }
            other => panic!("expected unavailable at the cap, got {other:?}"),
        }
        assert_eq!(
            cluster.pending.len(),
            MAX_PENDING,
            "the refused call left nothing"
        );
    }

    /// Past `CHANGES_QUEUE` departures waiting for the writer, a departure is left to
    /// the next reconciliation rather than queued without bound.
    #[tokio::test]
    async fn departures_past_the_queue_are_left_to_reconciliation() {
        let cluster = unconnected();
        let (tenant, id): (Arc<str>, Arc<str>) = ("t".into(), "x.a".into());
        for _ in 0..CHANGES_QUEUE {
            cluster.detach(&tenant, &id);
        }
        cluster.needs_reconcile.store(false, Ordering::Relaxed);
        cluster.detach(&tenant, &id);
        assert!(cluster.needs_reconcile.load(Ordering::Relaxed));
    }
}
