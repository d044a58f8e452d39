//! The sweep: every node looks for dead nodes (registered, heartbeat lapsed) every
//! `sweep_interval` and claims their connections in batches. A claim removes the
//! connection from Redis in one script, so whichever node's claim removes it runs its
//! `$disconnect` (code 1006, reason `node lost`): exactly once across the cluster,
//! however many nodes sweep at once.

use std::sync::Arc;

use futures_util::StreamExt as _;
use tokio_util::sync::CancellationToken;

use super::Cluster;
use crate::Gateway;

/// Connections claimed per script run.
const CLAIM_BATCH: usize = 200;
/// `$disconnect` handlers of swept connections run at once.
const DISCONNECTS_AT_ONCE: usize = 32;
/// The close a swept connection's `$disconnect` sees.
pub const NODE_LOST_CODE: u16 = 1006;
/// The reason a swept connection's `$disconnect` sees.
pub const NODE_LOST_REASON: &str = "node lost";

/// Claims connections `ARGV[2..]` of the dead node whose connection hash is `KEYS[1]`:
/// each one removed from the hash by this run is this caller's, and is removed from its
/// tenant's set and facts here too. Returns id, tenant, facts (or "") for each claimed.
const CLAIM: &str = r#"
local prefix = ARGV[1]
local claimed = {}
for i = 2, #ARGV do
  local id = ARGV[i]
  local tenant = redis.call('HGET', KEYS[1], id)
  if tenant and redis.call('HDEL', KEYS[1], id) == 1 then
    redis.call('ZREM', prefix .. ':tenant:' .. tenant, id)
    local facts = redis.call('HGET', prefix .. ':info:' .. tenant, id)
    redis.call('HDEL', prefix .. ':info:' .. tenant, id)
    table.insert(claimed, id)
    table.insert(claimed, tenant)
    table.insert(claimed, facts or '')
  end
end
return claimed
"#;

/// Sweeps until `shutdown`.
pub async fn run(cluster: Arc<Cluster>, gateway: Arc<Gateway>, shutdown: CancellationToken) {
    let mut tick = tokio::time::interval(cluster.config().sweep_interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        if let Err(err) = sweep_once(&cluster, &gateway).await {
            cluster.redis_failed("sweeping dead nodes", &err);
        }
    }
}

/// Looks for dead nodes once and sweeps each.
async fn sweep_once(cluster: &Arc<Cluster>, gateway: &Arc<Gateway>) -> redis::RedisResult<()> {
    let mut redis = cluster.redis();
    let nodes: Vec<String> = redis::cmd("SMEMBERS")
        .arg(cluster.keys().nodes())
        .query_async(&mut redis)
        .await?;
    for node in nodes.iter().filter(|n| n.as_str() != cluster.node()) {
        let alive: bool = redis::cmd("EXISTS")
            .arg(cluster.keys().heartbeat(node))
            .query_async(&mut redis)
            .await?;
        if !alive {
            sweep_node(cluster, gateway, node).await?;
        }
    }
    Ok(())
}

/// Claims and disconnects every connection of dead node `node`, then forgets the node.
async fn sweep_node(
    cluster: &Arc<Cluster>,
    gateway: &Arc<Gateway>,
    node: &str,
) -> redis::RedisResult<()> {
    let mut redis = cluster.redis();
    let conns = cluster.keys().conns(node);
    let mut swept = 0usize;
    let mut cursor: u64 = 0;
    loop {
        let (next, ids): (u64, Vec<String>) = redis::cmd("HSCAN")
            .arg(&conns)
            .arg(cursor)
            .arg("COUNT")
            .arg(CLAIM_BATCH)
            .query_async::<(u64, Vec<String>)>(&mut redis)
            .await
            .map(|(next, pairs)| (next, pairs.into_iter().step_by(2).collect()))?;
        if !ids.is_empty() {
            let claimed: Vec<String> = redis::Script::new(CLAIM)
                .key(&conns)
                .arg(cluster.config().key_prefix.as_str())
                .arg(&ids)
                .invoke_async(&mut redis)
                .await?;
            swept += claimed.len() / 3;
            disconnect(cluster, gateway, claimed).await;
        }
        cursor = next;
        if cursor == 0 {
            break;
        }
    }
    // Forgotten only once nothing is left, so a crashed sweep is finished by the next.
    let left: usize = redis::cmd("HLEN")
        .arg(&conns)
        .query_async(&mut redis)
        .await?;
    if left == 0 {
        let _: () = redis::cmd("SREM")
            .arg(cluster.keys().nodes())
            .arg(node)
            .query_async(&mut redis)
            .await?;
    }
    if swept > 0 || left == 0 {
        tracing::warn!(
            node = %cluster.node(),
            dead = node,
            swept,
            "cluster: swept a dead node's connections (their $disconnect ran here with 1006 \"node lost\")"
        );
    }
    gateway.metrics.cluster_swept(swept as u64);
    Ok(())
}

/// Runs `$disconnect` for claimed connections (id, tenant, facts triples).
async fn disconnect(cluster: &Arc<Cluster>, gateway: &Arc<Gateway>, claimed: Vec<String>) {
    let mut jobs = Vec::new();
    for claim in claimed.chunks_exact(3) {
        let (id, tenant, facts) = (&claim[0], &claim[1], &claim[2]);
        let Ok(facts) = serde_json::from_str::<serde_json::Value>(facts) else {
            continue;
        };
        let Some(route) = facts
            .get("r")
            .and_then(|r| r.as_str())
            .and_then(|template| gateway.route(tenant, template))
        else {
            continue;
        };
        if let Some(plugin) = route.disconnect.clone()
            && let Some(info) = super::membership::described(id, tenant, &facts)
        {
            let id: Arc<str> = id.as_str().into();
            jobs.push((plugin, route.template.clone(), id, info));
        }
    }
    futures_util::stream::iter(jobs)
        .map(|(plugin, template, id, info)| async move {
            cluster.swept.insert(id.clone(), info);
            let _forget = SweptUntilDone(cluster, &id);
            if let Err(err) = plugin
                .on_disconnect(&template, &id, NODE_LOST_CODE, NODE_LOST_REASON)
                .await
            {
                tracing::warn!(connection = %id, error = %err, "$disconnect of a swept connection failed");
            }
        })
        .buffer_unordered(DISCONNECTS_AT_ONCE)
        .collect::<Vec<()>>()
        .await;
}

/// Forgets a swept connection's description once its `$disconnect` is over.
struct SweptUntilDone<'a>(&'a Cluster, &'a Arc<str>);

impl Drop for SweptUntilDone<'_> {
    fn drop(&mut self) {
        self.0.swept.remove(self.1);
    }
}
