//! This node's inbox: other nodes' requests on its connections, and the replies to its
//! own requests. Local verbs do not wait (they queue or ask), so requests are served in
//! order as they arrive; only the reply's `PUBLISH` is awaited, in its own task.

use std::sync::Arc;

use redis::{PushInfo, PushKind, Value};
use tokio::sync::{Semaphore, mpsc};
use tokio_util::sync::CancellationToken;

use super::Cluster;
use super::wire::{self, Body, Op, Outcome, Unreadable, WireInfo};
use crate::close::Close;
use crate::registry::{DeliveryError, ListFilter, Registry};

/// Replies being published at once; the inbox waits for a place past it.
const REPLIES_IN_FLIGHT: usize = 1024;

/// Reads the inbox until `shutdown`.
pub async fn serve(
    cluster: Arc<Cluster>,
    mut pushes: mpsc::Receiver<PushInfo>,
    shutdown: CancellationToken,
) {
    let replies = Arc::new(Semaphore::new(REPLIES_IN_FLIGHT));
    loop {
        let push = tokio::select! {
            _ = shutdown.cancelled() => return,
            push = pushes.recv() => match push {
                Some(push) => push,
                None => return,
            },
        };
        if push.kind != PushKind::Message {
            continue;
        }
        let Some(Value::BulkString(bytes)) = push.data.get(1) else {
            continue;
        };
        let frame = match wire::decode(bytes) {
            Ok(frame) => frame,
            Err(Unreadable::Version { version, id, from }) => {
                tracing::warn!(
                    node = %cluster.node(),
                    version = ?version,
                    from = ?from,
                    "cluster: a frame in a format version this node cannot read (it reads {}); refused",
                    wire::VERSION
                );
                if let (Some(id), Some(from)) = (id, from) {
                    let reason = format!(
                        "node {} cannot read format version {version:?} (it reads {}): finish the rolling upgrade",
                        cluster.node(),
                        wire::VERSION
                    );
                    reply(&cluster, &replies, from, id, Outcome::Refused { reason }).await;
                }
                continue;
            }
            Err(Unreadable::Garbage(why)) => {
                tracing::warn!(node = %cluster.node(), "cluster: an unreadable frame on the inbox: {why}");
                continue;
            }
        };
        match frame.body {
            Body::Reply { re, outcome } => cluster.settle(re, outcome),
            Body::Request {
                id,
                from,
                tenant,
                op,
            } => {
                let outcome = run(&cluster, &tenant, op).await;
                reply(&cluster, &replies, from, id, outcome).await;
            }
        }
    }
}

/// Runs an op on this node's connections of `tenant`.
async fn run(cluster: &Cluster, tenant: &str, op: Op) -> Outcome {
    let Some(local) = cluster.local(tenant) else {
        return match op {
            Op::Broadcast { .. } => Outcome::Broadcast { queued: 0, full: 0 },
            Op::CloseAll { .. } => Outcome::Closed { count: 0 },
            _ => Outcome::Gone,
        };
    };
    let delivered = |result: Result<(), DeliveryError>| match result {
        Ok(()) => Outcome::Done,
        Err(DeliveryError::QueueFull) => Outcome::QueueFull,
        Err(_) => Outcome::Gone,
    };
    match op {
        Op::Send { conn, payload } => match payload.into_payload() {
            Ok(payload) => delivered(local.send(&conn, payload).await),
            Err(reason) => Outcome::Refused { reason },
        },
        Op::Close { conn, code, reason } => {
            delivered(local.close(&conn, Close::gateway(code, reason)).await)
        }
        Op::Info { conn } => match local.info(&conn).await {
            Ok(info) => Outcome::Info {
                info: Box::new(WireInfo::from(&info)),
            },
            Err(_) => Outcome::Gone,
        },
        Op::Broadcast {
            route,
            path,
            payload,
            except,
        } => match payload.into_payload() {
            Ok(payload) => {
                let outcome =
                    local.broadcast_now(&ListFilter { route, path }, payload, except.as_deref());
                Outcome::Broadcast {
                    queued: outcome.queued,
                    full: outcome.full,
                }
            }
            Err(reason) => Outcome::Refused { reason },
        },
        Op::CloseAll { code, reason } => Outcome::Closed {
            count: local.close_all_now(Close::gateway(code, reason)),
        },
    }
}

/// Publishes a reply to node `to` in its own task.
async fn reply(
    cluster: &Arc<Cluster>,
    places: &Arc<Semaphore>,
    to: String,
    re: u64,
    outcome: Outcome,
) {
    if !super::valid_node_id(&to) {
        return;
    }
    let Ok(place) = places.clone().acquire_owned().await else {
        return;
    };
    let channel = cluster.keys().inbox(&to);
    let frame = wire::encode(Body::Reply { re, outcome });
    let mut redis = cluster.redis();
    let cluster = cluster.clone();
    tokio::spawn(async move {
        let _place = place;
        if let Err(err) = redis::cmd("PUBLISH")
            .arg(channel)
            .arg(frame)
            .query_async::<i64>(&mut redis)
            .await
        {
            cluster.redis_failed("replying to another node", &err);
        }
    });
}
