//! Calls to other nodes through their inboxes, the replies that settle them, and the
//! other cluster-wide records a call may need (live nodes, signed writes seen, swept
//! connections being disconnected here).

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use dashmap::DashMap;
use tokio::sync::oneshot;

use super::wire::{self, Body, Op, Outcome};
use super::{Cluster, MAX_PENDING};
use crate::registry::DeliveryError;

impl Cluster {
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
    pub(super) fn settle(&self, re: u64, outcome: Outcome) {
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
        let alive = self
            .heartbeats(&others)
            .await
            .map_err(|e| self.unavailable("reading heartbeats", &e))?;
        Ok(others
            .into_iter()
            .zip(alive)
            .filter_map(|(node, alive)| alive.then_some(node))
            .collect())
    }
}

/// Removes a call's entry from the pending map however the call ends.
struct Forget<'a>(&'a DashMap<u64, oneshot::Sender<Outcome>>, u64);

impl Drop for Forget<'_> {
    fn drop(&mut self) {
        self.0.remove(&self.1);
    }
}
