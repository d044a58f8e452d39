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

mod inbox;
mod keys;
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
pub use registry::ClusterRegistry;

use crate::config::ClusterConfig;
use crate::registry::{ConnectionMeta, DeliveryError, LocalRegistry};
use wire::{Body, Op, Outcome};

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

    /// Renews the heartbeat, keeps the inbox subscribed, and rewrites this node's
    /// connections in Redis when it may have lost them (Redis restarted, or a write
    /// failed).
    async fn heartbeat(self: Arc<Self>, shutdown: tokio_util::sync::CancellationToken) {
        let mut tick = tokio::time::interval(self.config.heartbeat_interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tick.tick() => {}
            }
            if let Err((what, err)) = self.beat().await {
                self.redis_failed(what, &err);
                continue;
            }
            let mut degraded = self.degraded.lock().unwrap_or_else(|e| e.into_inner());
            if let Some(reason) = degraded.take() {
                tracing::info!(node = %self.node, "cluster: registered (was: {reason})");
            }
        }
    }

    async fn beat(&self) -> Result<(), (&'static str, redis::RedisError)> {
        let mut redis = self.redis.clone();
        let ttl = self.config.node_timeout.as_millis() as u64;
        let previous: Option<String> = redis::cmd("SET")
            .arg(self.keys.heartbeat(&self.node))
            .arg(wire::VERSION)
            .arg("PX")
            .arg(ttl)
            .arg("GET")
            .query_async(&mut redis)
            .await
            .map_err(|e| ("renewing the heartbeat", e))?;
        if previous.is_none() {
            // Redis lost the heartbeat (restarted, or first start): it may have lost
            // this node's connections too.
            self.needs_reconcile.store(true, Ordering::Relaxed);
        }
        let _: () = redis::cmd("SADD")
            .arg(self.keys.nodes())
            .arg(&*self.node)
            .query_async(&mut redis)
            .await
            .map_err(|e| ("registering the node", e))?;
        if !self.subscribed.load(Ordering::Relaxed) {
            redis
                .subscribe(self.keys.inbox(&self.node))
                .await
                .map_err(|e| ("subscribing to the inbox", e))?;
            self.subscribed.store(true, Ordering::Relaxed);
        }
        if self.needs_reconcile.swap(false, Ordering::Relaxed)
            && let Err(err) = self.reconcile().await
        {
            self.needs_reconcile.store(true, Ordering::Relaxed);
            return Err(("rewriting this node's connections", err));
        }
        Ok(())
    }

    /// Makes Redis hold exactly this node's live connections: removes entries of
    /// connections that left while Redis was unreachable, writes the live ones again.
    async fn reconcile(&self) -> redis::RedisResult<()> {
        let mut redis = self.redis.clone();
        let live: Vec<(Arc<str>, Vec<ConnectionMeta>)> = {
            let locals = self.locals.lock().unwrap_or_else(|e| e.into_inner());
            locals
                .iter()
                .map(|(tenant, local)| (tenant.clone(), local.metas()))
                .collect()
        };
        let live_ids: std::collections::HashSet<&str> = live
            .iter()
            .flat_map(|(_, metas)| metas.iter().map(|m| &*m.id))
            .collect();
        let registered: HashMap<String, String> = redis::cmd("HGETALL")
            .arg(self.keys.conns(&self.node))
            .query_async(&mut redis)
            .await?;
        let stale: Vec<(&String, &String)> = registered
            .iter()
            .filter(|(id, _)| !live_ids.contains(id.as_str()))
            .collect();
        for chunk in stale.chunks(BATCH) {
            let mut pipe = redis::pipe();
            for (id, tenant) in chunk {
                self.removal(&mut pipe, tenant, id);
            }
            let _: () = pipe.query_async(&mut redis).await?;
        }
        let mut written = 0;
        for (tenant, metas) in &live {
            for chunk in metas.chunks(BATCH) {
                let mut pipe = redis::pipe();
                for meta in chunk {
                    self.registration(&mut pipe, tenant, meta);
                }
                let _: () = pipe.query_async(&mut redis).await?;
                written += chunk.len();
            }
        }
        // A connection that left while it was being written again would stay behind.
        let gone: Vec<(&Arc<str>, &Arc<str>)> = {
            let locals = self.locals.lock().unwrap_or_else(|e| e.into_inner());
            live.iter()
                .flat_map(|(tenant, metas)| metas.iter().map(move |m| (tenant, &m.id)))
                .filter(|(tenant, id)| !locals.get(*tenant).is_some_and(|l| l.contains(id)))
                .collect()
        };
        for chunk in gone.chunks(BATCH) {
            let mut pipe = redis::pipe();
            for (tenant, id) in chunk {
                self.removal(&mut pipe, tenant, id);
            }
            let _: () = pipe.query_async(&mut redis).await?;
        }
        tracing::info!(
            node = %self.node,
            removed = stale.len(),
            registered = written,
            "cluster: this node's connections rewritten in Redis"
        );
        Ok(())
    }

    /// Adds the writes that register connection `meta` of `tenant` to `pipe`.
    fn registration(&self, pipe: &mut redis::Pipeline, tenant: &str, meta: &ConnectionMeta) {
        let facts = facts(meta);
        pipe.cmd("HSET")
            .arg(self.keys.conns(&self.node))
            .arg(&*meta.id)
            .arg(tenant)
            .ignore();
        pipe.cmd("ZADD")
            .arg(self.keys.tenant(tenant))
            .arg(0)
            .arg(&*meta.id)
            .ignore();
        pipe.cmd("HSET")
            .arg(self.keys.info(tenant))
            .arg(&*meta.id)
            .arg(facts.to_string())
            .ignore();
    }

    /// Adds the writes that remove connection `id` of `tenant` to `pipe`.
    fn removal(&self, pipe: &mut redis::Pipeline, tenant: &str, id: &str) {
        pipe.cmd("HDEL")
            .arg(self.keys.conns(&self.node))
            .arg(id)
            .ignore();
        pipe.cmd("ZREM")
            .arg(self.keys.tenant(tenant))
            .arg(id)
            .ignore();
        pipe.cmd("HDEL")
            .arg(self.keys.info(tenant))
            .arg(id)
            .ignore();
    }

    /// Registers a connection that just upgraded on this node, before its 101 goes out,
    /// as on one node: once the client sees it, a list on any node shows it. While Redis
    /// is unreachable the connection is written at the reconciliation after the outage.
    pub async fn register(&self, meta: &ConnectionMeta) {
        if self.degraded().is_some() {
            self.needs_reconcile.store(true, Ordering::Relaxed);
            return;
        }
        let mut pipe = redis::pipe();
        self.registration(&mut pipe, &meta.tenant, meta);
        let mut redis = self.redis.clone();
        if let Err(err) = pipe.query_async::<()>(&mut redis).await {
            self.redis_failed("registering a connection", &err);
        }
    }

    /// Writes departures to Redis, many per round trip.
    async fn write_changes(
        self: Arc<Self>,
        mut changes: mpsc::Receiver<Change>,
        shutdown: tokio_util::sync::CancellationToken,
    ) {
        let mut batch = Vec::with_capacity(BATCH);
        loop {
            batch.clear();
            let got = tokio::select! {
                _ = shutdown.cancelled() => return,
                got = changes.recv_many(&mut batch, BATCH) => got,
            };
            if got == 0 {
                return;
            }
            let mut pipe = redis::pipe();
            for Change(tenant, id) in &batch {
                self.removal(&mut pipe, tenant, id);
            }
            let mut redis = self.redis.clone();
            if let Err(err) = pipe.query_async::<()>(&mut redis).await {
                self.redis_failed("removing departed connections", &err);
            }
        }
    }

    /// Leaves the cluster at shutdown, once local connections are closed: removes this
    /// node's connections and heartbeat from Redis at once, so no sweep is needed.
    pub async fn leave(&self) {
        let leave = async {
            self.reconcile().await?;
            let mut redis = self.redis.clone();
            let _: () = redis::pipe()
                .cmd("DEL")
                .arg(self.keys.heartbeat(&self.node))
                .ignore()
                .cmd("DEL")
                .arg(self.keys.conns(&self.node))
                .ignore()
                .cmd("SREM")
                .arg(self.keys.nodes())
                .arg(&*self.node)
                .ignore()
                .query_async(&mut redis)
                .await?;
            redis::RedisResult::Ok(())
        };
        match tokio::time::timeout(self.config.request_timeout * 2, leave).await {
            Ok(Ok(())) => tracing::info!(node = %self.node, "cluster: left"),
            Ok(Err(err)) => {
                tracing::warn!(node = %self.node, error = %err, "cluster: could not leave cleanly; the sweep will clean up after node_timeout")
            }
            Err(_) => {
                tracing::warn!(node = %self.node, "cluster: Redis did not answer while leaving; the sweep will clean up after node_timeout")
            }
        }
    }

    /// Runs `op` on node `node` for tenant `tenant` and waits for its outcome, up to
    /// `request_timeout`.
    pub async fn call(&self, node: &str, tenant: &str, op: Op) -> Result<Outcome, DeliveryError> {
        if self.pending.len() >= MAX_PENDING {
            return Err(DeliveryError::Unavailable(format!(
                "{MAX_PENDING} calls to other nodes are waiting already; retry later"
            )));
        }
        let id = self.next_request.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        self.pending.insert(id, tx);
        let _forget = Forget(&self.pending, id);
        let deadline = tokio::time::Instant::now() + self.config.request_timeout;
        let frame = wire::encode(Body::Request {
            id,
            from: self.node.to_string(),
            tenant: tenant.to_owned(),
            op,
        });
        let mut redis = self.redis.clone();
        let listeners: i64 = redis::cmd("PUBLISH")
            .arg(self.keys.inbox(node))
            .arg(frame)
            .query_async(&mut redis)
            .await
            .map_err(|e| self.unavailable("publishing to another node", &e))?;
        if listeners == 0 {
            let alive: bool = redis::cmd("EXISTS")
                .arg(self.keys.heartbeat(node))
                .query_async(&mut redis)
                .await
                .map_err(|e| self.unavailable("checking another node's heartbeat", &e))?;
            if !alive {
                // A node that is gone holds no connection any more.
                return Err(DeliveryError::Gone);
            }
            return Err(DeliveryError::Unavailable(format!(
                "node {node}, which holds the connection, is not listening on its inbox (it is reconnecting to Redis); retry later"
            )));
        }
        match tokio::time::timeout_at(deadline, rx).await {
            Ok(Ok(outcome)) => Ok(outcome),
            _ => Err(DeliveryError::Unavailable(format!(
                "node {node}, which holds the connection, did not answer within {:?}; retry later",
                self.config.request_timeout
            ))),
        }
    }

    /// Records a signed write of `tenant` cluster-wide; `false` when another node saw it
    /// first (a replay). While Redis is unreachable the node's own memory is the only
    /// protection, and the write is let through.
    pub async fn first_use_of_signature(&self, tenant: &str, digest: &str) -> bool {
        // A signature is good while its date is within the 5-minute skew of the clock
        // either way, in minutes: kept past the latest moment it could be replayed.
        const KEEP: Duration = Duration::from_secs(11 * 60);
        let mut redis = self.redis.clone();
        let set: redis::RedisResult<Option<String>> = redis::cmd("SET")
            .arg(self.keys.replay(tenant, digest))
            .arg(&*self.node)
            .arg("NX")
            .arg("PX")
            .arg(KEEP.as_millis() as u64)
            .query_async(&mut redis)
            .await;
        match set {
            Ok(answer) => answer.is_some(),
            Err(err) => {
                self.redis_failed("remembering a signed write", &err);
                true
            }
        }
    }

    /// Forgets a signed write whose request failed, so a retry is accepted anywhere.
    pub fn forget_signature(self: &Arc<Self>, tenant: &str, digest: &str) {
        let (cluster, key) = (self.clone(), self.keys.replay(tenant, digest));
        tokio::spawn(async move {
            let mut redis = cluster.redis.clone();
            if let Err(err) = redis::cmd("DEL")
                .arg(key)
                .query_async::<()>(&mut redis)
                .await
            {
                cluster.redis_failed("forgetting a failed signed write", &err);
            }
        });
    }

    /// A connection of a dead node whose `$disconnect` is running here, as its facts in
    /// Redis describe it (a handler may ask for its own info, as on its own node).
    pub fn swept(&self, id: &str) -> Option<crate::registry::ConnectionInfo> {
        self.swept.get(id).map(|info| info.clone())
    }

    /// Hands a reply to the call waiting for it.
    fn settle(&self, re: u64, outcome: Outcome) {
        if let Some((_, waiting)) = self.pending.remove(&re) {
            let _ = waiting.send(outcome);
        }
    }

    /// The nodes whose heartbeat is current, this one excluded.
    pub async fn other_live_nodes(&self) -> Result<Vec<String>, DeliveryError> {
        let mut redis = self.redis.clone();
        let nodes: Vec<String> = redis::cmd("SMEMBERS")
            .arg(self.keys.nodes())
            .query_async(&mut redis)
            .await
            .map_err(|e| self.unavailable("listing nodes", &e))?;
        let others: Vec<String> = nodes.into_iter().filter(|n| **n != *self.node).collect();
        if others.is_empty() {
            return Ok(others);
        }
        let mut mget = redis::cmd("MGET");
        for node in &others {
            mget.arg(self.keys.heartbeat(node));
        }
        let beats: Vec<Option<String>> = mget
            .query_async(&mut redis)
            .await
            .map_err(|e| self.unavailable("reading heartbeats", &e))?;
        Ok(others
            .into_iter()
            .zip(beats)
            .filter_map(|(node, beat)| beat.map(|_| node))
            .collect())
    }
}

/// What Redis keeps of a connection: enough to list it and to describe it to its
/// `$disconnect` if its node dies (route, path and its parameters, when, who), never
/// its headers, so Redis memory per connection stays small.
fn facts(meta: &ConnectionMeta) -> String {
    serde_json::json!({
        "r": &*meta.route,
        "p": meta.path,
        "c": meta.connected_at,
        "pp": meta.path_params.to_vec(),
        "ip": meta.source_ip,
        "ua": meta.user_agent,
        "sp": meta.subprotocol,
    })
    .to_string()
}

/// A connection described by its facts in Redis, for a swept connection's
/// `$disconnect`: closing, last active when it connected (its node took the rest).
pub fn described(
    id: &str,
    tenant: &str,
    facts: &serde_json::Value,
) -> Option<crate::registry::ConnectionInfo> {
    let text = |key: &str| facts.get(key).and_then(|v| v.as_str()).map(str::to_owned);
    let connected_at = facts.get("c")?.as_u64()?;
    let path_params: Vec<(String, String)> = facts
        .get("pp")
        .and_then(|pp| serde_json::from_value(pp.clone()).ok())
        .unwrap_or_default();
    Some(crate::registry::ConnectionInfo {
        meta: ConnectionMeta {
            id: id.into(),
            tenant: tenant.into(),
            route: text("r")?.into(),
            path: text("p")?,
            uri: String::new(),
            headers: crate::registry::Pairs::default(),
            path_params: path_params.into_iter().collect(),
            query_params: crate::registry::Pairs::default(),
            source_ip: text("ip").unwrap_or_default(),
            user_agent: text("ua"),
            requested_subprotocols: Vec::new(),
            subprotocol: text("sp"),
            connected_at,
            context: None,
        },
        last_active_at: connected_at,
        closing: true,
    })
}

/// Removes a call's entry from the pending map however the call ends.
struct Forget<'a>(&'a DashMap<u64, oneshot::Sender<Outcome>>, u64);

impl Drop for Forget<'_> {
    fn drop(&mut self) {
        self.0.remove(&self.1);
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
}
