//! [`ClusterRegistry`]: one tenant's verbs across the cluster. A connection held here
//! goes to the local registry; one held elsewhere goes to its node's inbox; lists and
//! counts come from Redis; broadcasts and close-alls go to every live node.

use std::sync::Arc;

use super::Cluster;
use super::wire::{Op, Outcome, WirePayload};
use crate::registry::{
    Admission, AtCapacity, Attachment, Broadcast, Close, ConnectionInfo, ConnectionMeta,
    DeliveryError, ListFilter, Listed, LocalRegistry, Page, PageRequest, Payload, Registry,
    Unavailable, new_connection_id,
};

/// Ids read from Redis per round trip when listing.
const LIST_CHUNK: usize = 1000;
/// The most ids one list call reads from Redis before it returns a short page with a
/// token (a filter that matches few connections must not make one call read them all).
const LIST_SCAN: usize = 100_000;

/// Admits a connection under the cap: counted in the tenant's set with every node's.
const ADMIT: &str = r#"
local max = tonumber(ARGV[3])
if max > 0 and redis.call('ZCARD', KEYS[1]) >= max then
  return 0
end
redis.call('ZADD', KEYS[1], 0, ARGV[1])
redis.call('HSET', KEYS[2], ARGV[1], ARGV[2])
return 1
"#;

/// One tenant's registry in a cluster.
#[derive(Debug, Clone)]
pub struct ClusterRegistry {
    tenant: Arc<str>,
    local: LocalRegistry,
    cluster: Arc<Cluster>,
}

impl ClusterRegistry {
    /// The registry of `tenant`, whose connections on this node are in `local`.
    pub fn new(tenant: &str, local: LocalRegistry, cluster: Arc<Cluster>) -> ClusterRegistry {
        ClusterRegistry {
            tenant: tenant.into(),
            local,
            cluster,
        }
    }

    /// The node holding `id`, unless it is this one. An id naming no node is gone. While
    /// this node cannot reach Redis, another node's connection is unavailable at once
    /// rather than after a reconnection attempt.
    fn remote<'a>(&self, id: &'a str) -> Result<Option<&'a str>, DeliveryError> {
        match super::node_of(id) {
            Some(node) if node == self.cluster.node() => Ok(None),
            Some(node) => {
                self.reachable()?;
                Ok(Some(node))
            }
            None => Err(DeliveryError::Gone),
        }
    }

    /// Fails at once while this node is cut off from Redis.
    fn reachable(&self) -> Result<(), DeliveryError> {
        match self.cluster.degraded() {
            None => Ok(()),
            Some(reason) => Err(DeliveryError::Unavailable(format!(
                "this node cannot reach the cluster ({reason}); nothing was done, retry later"
            ))),
        }
    }

    /// Runs `op` on every other live node and adds up what they did with `add`.
    async fn everywhere(&self, op: Op, mut add: impl FnMut(Outcome)) -> Result<(), Unavailable> {
        let partial = |err: DeliveryError| {
            Unavailable(format!(
                "this node's connections got it, but the other nodes could not be reached: {}",
                unavailable(err).0
            ))
        };
        self.reachable().map_err(partial)?;
        let nodes = self.cluster.other_live_nodes().await.map_err(partial)?;
        let calls = nodes
            .iter()
            .map(|node| self.cluster.call(node, &self.tenant, op.clone()));
        let mut failed = Vec::new();
        for (node, outcome) in nodes
            .iter()
            .zip(futures_util::future::join_all(calls).await)
        {
            match outcome {
                Ok(Outcome::Refused { reason }) => failed.push(format!("{node}: {reason}")),
                Ok(outcome) => add(outcome),
                // A node that died meanwhile holds nothing any more.
                Err(DeliveryError::Gone) => {}
                Err(err) => failed.push(format!("{node}: {err}")),
            }
        }
        if failed.is_empty() {
            Ok(())
        } else {
            Err(Unavailable(format!(
                "not every node could be reached ({}); this node and the others did their part",
                failed.join("; ")
            )))
        }
    }

    /// Reads ids after `after` from the tenant's set and their facts, at most `count`.
    async fn read_page(
        &self,
        after: &str,
        count: usize,
    ) -> Result<Vec<(String, Option<String>)>, Unavailable> {
        let mut redis = self.cluster.redis();
        let min = if after.is_empty() {
            "-".to_owned()
        } else {
            format!("({after}")
        };
        let ids: Vec<String> = redis::cmd("ZRANGEBYLEX")
            .arg(self.cluster.keys().tenant(&self.tenant))
            .arg(min)
            .arg("+")
            .arg("LIMIT")
            .arg(0)
            .arg(count)
            .query_async(&mut redis)
            .await
            .map_err(|e| unavailable(self.cluster.unavailable("listing connections", &e)))?;
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let facts: Vec<Option<String>> = redis::cmd("HMGET")
            .arg(self.cluster.keys().info(&self.tenant))
            .arg(&ids)
            .query_async(&mut redis)
            .await
            .map_err(|e| unavailable(self.cluster.unavailable("reading connections", &e)))?;
        Ok(ids.into_iter().zip(facts).collect())
    }
}

fn unavailable(err: DeliveryError) -> Unavailable {
    match err {
        DeliveryError::Unavailable(why) => Unavailable(why),
        other => Unavailable(other.to_string()),
    }
}

/// A listed connection from its facts in Redis (`{"r", "p", "c", "ip", "ua"}`).
fn listed(id: String, facts: &str) -> Option<Listed> {
    let facts: serde_json::Value = serde_json::from_str(facts).ok()?;
    Some(Listed {
        id: id.into(),
        route: facts.get("r")?.as_str()?.into(),
        path: facts.get("p")?.as_str()?.to_owned(),
        connected_at: facts.get("c")?.as_u64()?,
        source_ip: facts
            .get("ip")
            .and_then(|v| v.as_str())
            .unwrap_or_default()
            .to_owned(),
        user_agent: facts.get("ua").and_then(|v| v.as_str()).map(str::to_owned),
        last_active_at: None,
    })
}

fn delivered(outcome: Outcome) -> Result<(), DeliveryError> {
    match outcome {
        Outcome::Done => Ok(()),
        Outcome::QueueFull => Err(DeliveryError::QueueFull),
        Outcome::Refused { reason } => Err(DeliveryError::Unavailable(reason)),
        _ => Err(DeliveryError::Gone),
    }
}

#[async_trait::async_trait]
impl Registry for ClusterRegistry {
    fn may_wait(&self) -> bool {
        true
    }

    fn new_id(&self) -> Arc<str> {
        format!("{}.{}", new_connection_id(), self.cluster.node()).into()
    }

    async fn admit(&self, id: &str, max: usize) -> Result<Admission, AtCapacity> {
        // Cut off from Redis: the node keeps serving its own clients under its own cap,
        // without waiting on a Redis that does not answer; the connection is written
        // to Redis at the reconciliation after the outage.
        if self.cluster.degraded().is_some() {
            return Ok(Admission::default());
        }
        let keys = self.cluster.keys();
        let mut redis = self.cluster.redis();
        let admitted: redis::RedisResult<i64> = redis::Script::new(ADMIT)
            .key(keys.tenant(&self.tenant))
            .key(keys.conns(self.cluster.node()))
            .arg(id)
            .arg(&*self.tenant)
            .arg(max)
            .invoke_async(&mut redis)
            .await;
        match admitted {
            Ok(0) => return Err(AtCapacity),
            Ok(_) => {}
            Err(err) => {
                self.cluster.redis_failed("admitting a connection", &err);
                return Ok(Admission::default());
            }
        }
        let (cluster, tenant, id) = (self.cluster.clone(), self.tenant.clone(), id.to_owned());
        Ok(Admission::releasing(move || {
            if let Ok(handle) = tokio::runtime::Handle::try_current() {
                handle.spawn(async move {
                    let mut pipe = redis::pipe();
                    cluster.removal(&mut pipe, &tenant, &id);
                    let mut redis = cluster.redis();
                    if let Err(err) = pipe.query_async::<()>(&mut redis).await {
                        cluster.redis_failed("giving back a connection place", &err);
                    }
                });
            }
        }))
    }

    async fn attach(&self, meta: ConnectionMeta, queue_bytes: usize) -> Attachment {
        let attachment = self.local.attach_now(meta, queue_bytes);
        self.cluster.register(attachment.meta()).await;
        attachment
    }

    async fn send(&self, id: &str, payload: Payload) -> Result<(), DeliveryError> {
        match self.remote(id)? {
            None => self.local.send(id, payload).await,
            Some(node) => {
                let op = Op::Send {
                    conn: id.to_owned(),
                    payload: WirePayload::from(&payload),
                };
                delivered(self.cluster.call(node, &self.tenant, op).await?)
            }
        }
    }

    async fn close(&self, id: &str, close: Close) -> Result<(), DeliveryError> {
        match self.remote(id)? {
            None => self.local.close(id, close).await,
            Some(node) => {
                let op = Op::Close {
                    conn: id.to_owned(),
                    code: close.code,
                    reason: close.reason,
                };
                delivered(self.cluster.call(node, &self.tenant, op).await?)
            }
        }
    }

    async fn info(&self, id: &str) -> Result<ConnectionInfo, DeliveryError> {
        if let Some(info) = self.cluster.swept(id)
            && *info.meta.tenant == *self.tenant
        {
            return Ok(info);
        }
        match self.remote(id)? {
            None => self.local.info(id).await,
            Some(node) => {
                let op = Op::Info {
                    conn: id.to_owned(),
                };
                match self.cluster.call(node, &self.tenant, op).await? {
                    Outcome::Info { info } => {
                        let info = ConnectionInfo::from(*info);
                        // Another tenant's connection is as unknown as a missing one.
                        if *info.meta.tenant != *self.tenant {
                            return Err(DeliveryError::Gone);
                        }
                        Ok(info)
                    }
                    Outcome::Refused { reason } => Err(DeliveryError::Unavailable(reason)),
                    _ => Err(DeliveryError::Gone),
                }
            }
        }
    }

    async fn list(&self, filter: &ListFilter, page: PageRequest) -> Result<Page, Unavailable> {
        self.reachable().map_err(unavailable)?;
        let mut after = page.after.unwrap_or_default();
        let want = page
            .limit
            .map_or(usize::MAX, |limit| limit.saturating_add(1));
        let mut items = Vec::new();
        let mut scanned = 0;
        let mut exhausted = false;
        while items.len() < want {
            let chunk = self.read_page(&after, LIST_CHUNK).await?;
            if chunk.len() < LIST_CHUNK {
                exhausted = true;
            }
            for (id, facts) in chunk {
                after.clone_from(&id);
                scanned += 1;
                // No facts: admitted, still in its `$connect`; not open yet.
                let Some(listed) = facts.as_deref().and_then(|f| listed(id, f)) else {
                    continue;
                };
                let open = filter.route.as_deref().is_none_or(|r| *listed.route == *r)
                    && filter.path.as_deref().is_none_or(|p| listed.path == p);
                if open {
                    items.push(listed);
                    if items.len() >= want {
                        break;
                    }
                }
            }
            if exhausted || (page.limit.is_some() && scanned >= LIST_SCAN) {
                break;
            }
        }
        // Redis keeps no activity; this node knows its own connections'.
        for item in &mut items {
            item.last_active_at = self.local.last_active_of(&item.id);
        }
        let Some(limit) = page.limit else {
            return Ok(Page { items, next: None });
        };
        if items.len() > limit {
            items.truncate(limit);
            let next = items.last().map(|last| last.id.to_string());
            return Ok(Page { items, next });
        }
        // A short page from a capped scan still says where to go on.
        let next = (!exhausted && scanned >= LIST_SCAN).then_some(after);
        Ok(Page { items, next })
    }

    async fn broadcast(
        &self,
        filter: &ListFilter,
        payload: Payload,
        except: Option<&str>,
    ) -> Result<Broadcast, Unavailable> {
        let op = Op::Broadcast {
            route: filter.route.clone(),
            path: filter.path.clone(),
            payload: WirePayload::from(&payload),
            except: except.map(str::to_owned),
        };
        let mut total = self.local.broadcast_now(filter, payload, except);
        self.everywhere(op, |outcome| {
            if let Outcome::Broadcast { queued, full } = outcome {
                total.queued += queued;
                total.full += full;
            }
        })
        .await?;
        Ok(total)
    }

    async fn close_all(&self, close: Close) -> Result<usize, Unavailable> {
        let op = Op::CloseAll {
            code: close.code,
            reason: close.reason.clone(),
        };
        let mut total = self.local.close_all_now(close);
        self.everywhere(op, |outcome| {
            if let Outcome::Closed { count } = outcome {
                total += count;
            }
        })
        .await?;
        Ok(total)
    }

    async fn count(&self) -> usize {
        let mut redis = self.cluster.redis();
        match redis::cmd("ZCARD")
            .arg(self.cluster.keys().tenant(&self.tenant))
            .query_async::<usize>(&mut redis)
            .await
        {
            Ok(count) => count,
            Err(err) => {
                self.cluster.redis_failed("counting connections", &err);
                self.local.len()
            }
        }
    }
}
