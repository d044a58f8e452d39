//! This node's place in Redis: the heartbeat (with the inbox subscription), its
//! connections written as they come and go, rewritten after an outage
//! (reconciliation), and removed at once when it leaves.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use tokio::sync::mpsc;

use super::{BATCH, Change, Cluster, wire};
use crate::registry::ConnectionMeta;

impl Cluster {
    /// Renews the heartbeat, keeps the inbox subscribed, and rewrites this node's
    /// connections in Redis when it may have lost them (Redis restarted, or a write
    /// failed).
    pub(super) async fn heartbeat(self: Arc<Self>, shutdown: tokio_util::sync::CancellationToken) {
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

    pub(super) async fn beat(&self) -> Result<(), (&'static str, redis::RedisError)> {
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
    pub(super) async fn reconcile(&self) -> redis::RedisResult<()> {
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
    pub(super) fn registration(
        &self,
        pipe: &mut redis::Pipeline,
        tenant: &str,
        meta: &ConnectionMeta,
    ) {
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
    pub(super) fn removal(&self, pipe: &mut redis::Pipeline, tenant: &str, id: &str) {
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
    pub(super) async fn write_changes(
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
}

/// A node of the cluster as the console shows it.
#[derive(Debug, Clone, serde::Serialize, PartialEq, Eq)]
pub struct NodeState {
    /// The node's id.
    pub id: String,
    /// Whether its heartbeat is current.
    pub alive: bool,
}

/// How many nodes the console lists: a cluster is a handful of nodes, and the answer
/// must stay small whatever Redis holds.
pub const LISTED_NODES: usize = 256;

impl Cluster {
    /// The cluster's nodes, sorted by id, with whether each is alive, and how many more
    /// the set holds: past [`LISTED_NODES`], a sample of that many is listed. A Redis
    /// failure is returned, not recorded as an outage: the console asking must not
    /// change what the node does.
    pub async fn nodes(&self) -> Result<(Vec<NodeState>, usize), String> {
        let mut redis = self.redis();
        let total: usize = redis::cmd("SCARD")
            .arg(self.keys.nodes())
            .query_async(&mut redis)
            .await
            .map_err(|e| format!("counting nodes: {e}"))?;
        let listing = if total > LISTED_NODES {
            let mut sample = redis::cmd("SRANDMEMBER");
            sample.arg(self.keys.nodes()).arg(LISTED_NODES);
            sample
        } else {
            let mut all = redis::cmd("SMEMBERS");
            all.arg(self.keys.nodes());
            all
        };
        let mut nodes: Vec<String> = listing
            .query_async(&mut redis)
            .await
            .map_err(|e| format!("listing nodes: {e}"))?;
        nodes.truncate(LISTED_NODES);
        nodes.sort_unstable();
        let more = total.saturating_sub(nodes.len());
        if nodes.is_empty() {
            return Ok((Vec::new(), more));
        }
        let alive = self
            .heartbeats(&nodes)
            .await
            .map_err(|e| format!("reading heartbeats: {e}"))?;
        let listed = nodes
            .into_iter()
            .zip(alive)
            .map(|(id, alive)| NodeState { id, alive })
            .collect();
        Ok((listed, more))
    }

    /// Each tenant's connections across the cluster (its admitted ones, as Redis counts
    /// them for the connection cap), in one round trip.
    pub async fn tenant_counts(&self, tenants: &[&str]) -> redis::RedisResult<Vec<u64>> {
        if tenants.is_empty() {
            return Ok(Vec::new());
        }
        let mut pipe = redis::pipe();
        for tenant in tenants {
            pipe.cmd("ZCARD").arg(self.keys.tenant(tenant));
        }
        pipe.query_async(&mut self.redis()).await
    }

    /// Whether each of `nodes` (not empty) has a current heartbeat.
    pub(super) async fn heartbeats(&self, nodes: &[String]) -> redis::RedisResult<Vec<bool>> {
        let mut mget = redis::cmd("MGET");
        for node in nodes {
            mget.arg(self.keys.heartbeat(node));
        }
        let beats: Vec<Option<String>> = mget.query_async(&mut self.redis()).await?;
        Ok(beats.iter().map(Option::is_some).collect())
    }
}

/// What Redis keeps of a connection: enough to list it and to describe it to its
/// `$disconnect` if its node dies (route, path and its parameters, when, who), never
/// its headers, so Redis memory per connection stays small.
pub(super) fn facts(meta: &ConnectionMeta) -> String {
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
