//! Cluster mode (issue 13): several `wsgate` processes sharing one real Redis act as one
//! gateway. Each test starts its own Redis and nodes `a`, `b` (and `c`) with short
//! timings, so a dead node is noticed in about a second.
//!
//! By topic: a connection held by one node is reached through another (management API,
//! boto3, plugins), and a plugin whose call cannot get through is told `unavailable`;
//! lists, close-all and the connection cap count every node; a killed node's
//! connections are swept with their `$disconnect` run exactly once, and a node shut
//! down cleanly leaves nothing behind; a Redis outage degrades loudly and heals by
//! itself; what nodes say to each other is versioned; a signed write cannot be
//! replayed to another node.

use std::collections::{BTreeSet, HashMap};
use std::time::{Duration, Instant, SystemTime};

use futures_util::StreamExt;
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio_tungstenite::tungstenite::Message;
use wsgate::client::{Credentials, auth_headers};

use crate::backend::{Backend, Reply, Seen};
use crate::harness::{
    Client, Gateway, HttpAnswer, WAIT, ask, expect_close, http, own_id, recv, recv_json, recv_text,
    send_text,
};
use crate::redis::Redis;
use crate::{plugins, standard_config};

// ------------------------------------------------------------------------- set-up

/// How often a node renews its heartbeat in these tests.
const HEARTBEAT_INTERVAL: Duration = Duration::from_millis(200);
/// A node silent this long is dead.
const NODE_TIMEOUT: Duration = Duration::from_secs(1);
/// How often every node looks for dead nodes.
const SWEEP_INTERVAL: Duration = Duration::from_millis(300);
/// How long a node waits for another node's answer before answering 503.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(1);
/// Slack on top of a stated bound, for a loaded 2-core machine.
const MARGIN: Duration = Duration::from_secs(2);
/// How often a bounded poll looks again.
const POLL: Duration = Duration::from_millis(20);

/// `config` with a `[cluster]` table for node `node` on `redis` (appended at the end:
/// it is a new table). A node is dead after `node_timeout`.
fn node_config(config: &str, redis: &Redis, node: &str, node_timeout: Duration) -> String {
    format!(
        "{config}\n[cluster]\nredis_url = \"{url}\"\nnode_id = \"{node}\"\n\
         heartbeat_interval = \"{heartbeat}ms\"\nnode_timeout = \"{timeout}ms\"\n\
         sweep_interval = \"{sweep}ms\"\nrequest_timeout = \"{request}ms\"\n",
        url = redis.url(),
        heartbeat = HEARTBEAT_INTERVAL.as_millis(),
        timeout = node_timeout.as_millis(),
        sweep = SWEEP_INTERVAL.as_millis(),
        request = REQUEST_TIMEOUT.as_millis(),
    )
}

/// Starts the `wsgate` binary as each named node on `config` (with the short timings)
/// and waits until every one is registered and listening on its inbox: `/health`
/// answers `OK` only once its heartbeat and inbox subscription have reached Redis.
async fn start_nodes<const N: usize>(
    redis: &Redis,
    names: [&str; N],
    config: &str,
) -> [Gateway; N] {
    start_nodes_with(redis, names, config, NODE_TIMEOUT).await
}

/// As [`start_nodes`], with a node declared dead after `node_timeout`.
async fn start_nodes_with<const N: usize>(
    redis: &Redis,
    names: [&str; N],
    config: &str,
    node_timeout: Duration,
) -> [Gateway; N] {
    let configs = names.map(|name| node_config(config, redis, name, node_timeout));
    let nodes =
        futures_util::future::join_all(configs.iter().map(|c| Gateway::start_binary(c))).await;
    for (node, name) in nodes.iter().zip(names) {
        health_becomes(node, &format!("OK on node {name} after start"), |body| {
            body == "OK"
        })
        .await;
    }
    match nodes.try_into() {
        Ok(nodes) => nodes,
        Err(_) => unreachable!("one gateway per name"),
    }
}

/// `GET /health` on the admin listener: status and body.
async fn health(node: &Gateway) -> (u16, String) {
    let (status, _, body) =
        http("GET", &format!("http://{}/health", node.admin), &[], vec![]).await;
    (status, body)
}

/// Polls `/health` (bounded by [`WAIT`]) until it answers 200 with a body for which
/// `pred` holds; returns the body. Any other status fails at once: a node that still
/// serves its clients must never look dead to a load balancer.
async fn health_becomes(node: &Gateway, what: &str, pred: impl Fn(&str) -> bool) -> String {
    let deadline = Instant::now() + WAIT;
    loop {
        let (status, body) = health(node).await;
        assert_eq!(
            status, 200,
            "/health must answer 200 (waiting for {what}): {body}"
        );
        if pred(&body) {
            return body;
        }
        assert!(
            Instant::now() < deadline,
            "/health did not become {what} within {WAIT:?}; it says {body:?}; log:\n{}",
            node.logs.all()
        );
        tokio::time::sleep(POLL).await;
    }
}

const DEMO_KEY: &str = "demo-key";

/// The cluster as the console's `GET /-/status` on `node` shows it.
async fn cluster_nodes(node: &Gateway) -> Value {
    let (status, _, body) = api(node, "GET", "/-/status", crate::harness::OPS_KEY, "").await;
    assert_eq!(status, 200, "{body}");
    serde_json::from_str::<Value>(&body).unwrap()["cluster"].clone()
}

/// A management API call on `node` with a bearer key.
async fn api(
    node: &Gateway,
    method: &str,
    path: &str,
    key: &str,
    body: impl Into<Vec<u8>>,
) -> HttpAnswer {
    http(
        method,
        &format!("http://{}{path}", node.admin),
        &[("authorization".into(), format!("Bearer {key}"))],
        body.into(),
    )
    .await
}

/// The ids of one page of `GET {path}` on `node`, and its `nextToken`.
async fn page(node: &Gateway, path: &str) -> (Vec<Value>, Option<String>) {
    let (status, _, body) = api(node, "GET", path, DEMO_KEY, "").await;
    assert_eq!(status, 200, "GET {path}: {body}");
    let page: Value = serde_json::from_str(&body).unwrap();
    let items = page["items"].as_array().expect("items").clone();
    (items, page["nextToken"].as_str().map(str::to_owned))
}

/// Every connection id of tenant demo as node `node` lists them, one page.
async fn listed_ids(node: &Gateway) -> BTreeSet<String> {
    let (items, next) = page(node, "/demo/@connections?limit=1000").await;
    assert!(next.is_none());
    items
        .iter()
        .map(|item| item["connectionId"].as_str().unwrap().to_owned())
        .collect()
}

/// Polls (bounded) until `redis` answers `args` with `expected`.
async fn redis_reaches(redis: &Redis, args: &[&str], expected: i64) {
    let deadline = Instant::now() + WAIT;
    loop {
        let got = redis.integer(args);
        if got == expected {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "Redis answers {args:?} with {got}, not {expected}, after {WAIT:?}"
        );
        tokio::time::sleep(POLL).await;
    }
}

/// The `{"event": …}` notices of the chat plugin.
async fn notice(client: &mut Client) -> Value {
    let notice = recv_json(client).await;
    assert!(notice["event"].is_string(), "not a chat notice: {notice}");
    notice
}

/// Reads chat notices until `count` joins of connections held by node `node` arrived;
/// returns their ids in arrival order.
async fn joins_from(watcher: &mut Client, node: &str, count: usize) -> Vec<String> {
    let suffix = format!(".{node}");
    let mut ids = Vec::new();
    while ids.len() < count {
        let notice = notice(watcher).await;
        let id = notice["connection"].as_str().unwrap_or_default();
        if notice["event"] == "join" && id.ends_with(&suffix) {
            ids.push(id.to_owned());
        }
    }
    ids
}

/// Reads chat notices until a `leave` came for each of `ids` (a second `leave` for one
/// of them fails: its `$disconnect` ran twice), up to `deadline`.
async fn one_leave_each(
    watcher: &mut Client,
    who: &str,
    ids: &[String],
    deadline: tokio::time::Instant,
) {
    let mut left: HashMap<&str, usize> = HashMap::new();
    while left.len() < ids.len() {
        let next = tokio::time::timeout_at(deadline, watcher.next()).await;
        let message = match next {
            Ok(Some(Ok(message))) => message,
            Ok(other) => {
                panic!("{who}'s connection ended while waiting for leave notices: {other:?}")
            }
            Err(_) => panic!(
                "{who} saw a leave notice for {:?} only, of {ids:?}, by the deadline",
                left.keys().collect::<Vec<_>>()
            ),
        };
        let Message::Text(text) = message else {
            continue;
        };
        let notice: Value = serde_json::from_str(&text).unwrap();
        if notice["event"] != "leave" {
            continue;
        }
        let id = notice["connection"].as_str().unwrap();
        let id = ids
            .iter()
            .find(|known| known.as_str() == id)
            .unwrap_or_else(|| panic!("{who} saw a leave of {id}, which should not have left"));
        let seen = left.entry(id.as_str()).or_default();
        *seen += 1;
        assert_eq!(
            *seen, 1,
            "{who} saw two leave notices for {id}: its $disconnect ran twice"
        );
    }
}

/// Listens to `watcher` for `span` and fails on any `leave` notice: after every
/// expected leave arrived, none more may come (exactly once). A bounded wait for
/// something that must not happen.
async fn no_more_leaves(watcher: &mut Client, who: &str, span: Duration) {
    let _ = tokio::time::timeout(span, async {
        while let Some(Ok(message)) = watcher.next().await {
            if let Message::Text(text) = message {
                let notice: Value = serde_json::from_str(&text).unwrap();
                assert_ne!(
                    notice["event"], "leave",
                    "{who} got one leave notice too many: {notice}"
                );
            }
        }
    })
    .await;
}

/// The JSON event the integration plugin sent the backend.
fn event_of(seen: &Seen) -> Value {
    serde_json::from_slice(&seen.body)
        .unwrap_or_else(|e| panic!("the backend got no JSON ({e}): {}", seen.text()))
}

// ---------------------------------------------- the management API across nodes

/// The heart of the issue: a backend talks to any node. POST (text and binary), GET
/// and DELETE on B reach a client held by A; an id that does not exist on A, an id
/// naming no live node and another tenant's id are all 410; nothing else arrives.
#[tokio::test]
async fn management_calls_on_b_reach_a_client_on_a() {
    let redis = Redis::start();
    let [a, b] = start_nodes(&redis, ["a", "b"], &standard_config()).await;
    let mut client = a.connect("/demo/connections").await;
    let id = own_id(&mut client).await;
    assert!(id.ends_with(".a"), "a connection id names its node: {id}");
    let path = format!("/demo/@connections/{id}");

    let (status, _, body) = api(&b, "POST", &path, DEMO_KEY, "text from b").await;
    assert_eq!(status, 200, "POST on b: {body}");
    assert_eq!(recv_text(&mut client).await, "text from b");
    let bytes = vec![0u8, 159, 146, 150, 255, b'x'];
    let (status, _, body) = api(&b, "POST", &path, DEMO_KEY, bytes.clone()).await;
    assert_eq!(status, 200, "binary POST on b: {body}");
    match recv(&mut client).await {
        Message::Binary(got) => assert_eq!(&got[..], &bytes[..]),
        other => panic!("expected the binary message, got {other:?}"),
    }

    let (status, _, body) = api(&b, "GET", &path, DEMO_KEY, "").await;
    assert_eq!(status, 200, "GET on b: {body}");
    let info: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(info["connectionId"], id.as_str(), "{info}");
    assert_eq!(info["route"], "/connections", "{info}");
    assert_eq!(info["identity"]["sourceIp"], "127.0.0.1", "{info}");
    assert!(
        info["connectedAt"].as_str().unwrap().starts_with("20"),
        "{info}"
    );

    let unknown_on_a = format!("/demo/@connections/{}.a", "A".repeat(22));
    let no_such_node = format!("/demo/@connections/{}", id.replace(".a", ".nosuchnode"));
    for (what, path) in [
        ("an id unknown on a", &unknown_on_a),
        ("an id of no live node", &no_such_node),
    ] {
        for method in ["POST", "GET", "DELETE"] {
            let (status, kind, body) = api(&b, method, path, DEMO_KEY, "x").await;
            assert_eq!(
                (status, kind.as_deref()),
                (410, Some("GoneException")),
                "{method} {what} on b: {body}"
            );
        }
    }
    // Tenant separation across nodes: acme's key on acme's API does not find demo's
    // id held by another node, and does not open demo's API at all.
    let acme_path = format!("/acme/@connections/{id}");
    for method in ["POST", "GET", "DELETE"] {
        let (status, kind, body) = api(&b, method, &acme_path, "acme-key", "sneaky").await;
        assert_eq!(
            (status, kind.as_deref()),
            (410, Some("GoneException")),
            "{method} as acme on b: {body}"
        );
        let (status, _, body) = api(&b, method, &path, "acme-key", "sneaky").await;
        assert_eq!(
            status, 403,
            "{method} on demo's API with acme's key: {body}"
        );
    }
    // None of those reached the client: the next message is the next good POST.
    assert_eq!(
        api(&b, "POST", &path, DEMO_KEY, "after the refusals")
            .await
            .0,
        200
    );
    assert_eq!(recv_text(&mut client).await, "after the refusals");

    let (status, _, body) = api(
        &b,
        "DELETE",
        &format!("{path}?code=4001&reason=bye%20from%20b"),
        DEMO_KEY,
        "",
    )
    .await;
    assert_eq!(status, 204, "DELETE on b: {body}");
    let frame = expect_close(&mut client).await;
    assert_eq!(
        (u16::from(frame.code), frame.reason.as_str()),
        (4001, "bye from b")
    );
    let (status, kind, body) = api(&b, "GET", &path, DEMO_KEY, "").await;
    assert_eq!(
        (status, kind.as_deref()),
        (410, Some("GoneException")),
        "GET on b after the DELETE: {body}"
    );
}

/// POST answers 200 only once the owning node has the message queued: a client on A
/// that reads nothing fills its queue, and B answers 429 LimitExceeded, as one node
/// does.
#[tokio::test]
async fn a_full_queue_on_a_answers_429_on_b() {
    let mut config = standard_config();
    config.push_str(&crate::harness::plugin("full", "echo", plugins::ECHO, ""));
    config.push_str(
        r#"
[tenants.full.routes."/echo"]
plugin = "echo"
[tenants.full.limits]
max_message_bytes = 65536
outbound_queue_bytes = 65536
write_timeout = "60s"
[tenants.full.credentials]
bearer_keys = ["full-key"]
"#,
    );
    let redis = Redis::start();
    let [a, b] = start_nodes(&redis, ["a", "b"], &config).await;
    let mut client = a.connect("/full/echo").await;
    assert_eq!(ask(&mut client, "who").await, "who");
    let (status, _, body) = api(&b, "GET", "/full/@connections", "full-key", "").await;
    assert_eq!(status, 200, "{body}");
    let list: Value = serde_json::from_str(&body).unwrap();
    let id = list["items"][0]["connectionId"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(id.ends_with(".a"), "{id}");

    let path = format!("/full/@connections/{id}");
    let mut answers = Vec::new();
    for _ in 0..5000 {
        let (status, kind, body) = api(&b, "POST", &path, "full-key", vec![b'q'; 60_000]).await;
        answers.push(status);
        match status {
            200 => continue,
            429 => {
                assert_eq!(kind.as_deref(), Some("LimitExceededException"), "{body}");
                break;
            }
            other => panic!("POST {} on b answered {other}: {body}", answers.len()),
        }
    }
    assert_eq!(
        answers.last(),
        Some(&429),
        "after {} POSTs the queue never filled",
        answers.len()
    );
    // The client is still there and gets what was queued.
    assert_eq!(recv_text(&mut client).await.len(), 60_000);
}

/// A real AWS SDK pointed at B drives a client held by A: boto3's post_to_connection,
/// get_connection and delete_connection, and its named exceptions (tests/e2e/aws_sdk.py,
/// as in aws_sdk.rs but with the endpoint on the other node).
#[tokio::test]
async fn boto3_on_b_drives_a_client_on_a() {
    let redis = Redis::start();
    let [a, b] = start_nodes(&redis, ["a", "b"], &standard_config()).await;
    let mut client = a.connect("/demo/connections").await;
    let id = own_id(&mut client).await;
    crate::aws_sdk::boto3_drives(&format!("http://{}/demo", b.admin), &mut client, &id).await;
}

/// The list is the tenant's across nodes, in id order, and its `nextToken` is good on
/// any node; DELETE on the collection closes the tenant's connections on every node and
/// counts them all; another tenant's connection is neither listed nor closed.
#[tokio::test]
async fn list_and_close_all_span_every_node() {
    let redis = Redis::start();
    let [a, b] = start_nodes(&redis, ["a", "b"], &standard_config()).await;
    let mut clients = vec![
        a.connect("/demo/connections").await,
        a.connect("/demo/connections").await,
        b.connect("/demo/connections").await,
    ];
    let mut ids = Vec::new();
    for client in &mut clients {
        ids.push(own_id(client).await);
    }
    let mut acme = b.connect("/acme/echo").await;
    let expected: BTreeSet<String> = ids.iter().cloned().collect();
    assert_eq!(
        expected.iter().filter(|id| id.ends_with(".a")).count(),
        2,
        "{expected:?}"
    );

    // Arrivals reach Redis just behind the upgrade.
    redis_reaches(&redis, &["ZCARD", "wsgate:tenant:demo"], 3).await;
    // The console's counts are the cluster's: what a close-all reaches.
    let (status, _, body) = api(&b, "GET", "/demo/@stats", DEMO_KEY, "").await;
    let stats: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        (&stats["connections"], &stats["connectionsScope"]),
        (&json!(3), &json!("cluster")),
        "{stats}"
    );
    let (status, _, body) = api(&a, "GET", "/-/status", crate::harness::OPS_KEY, "").await;
    let node: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(status, 200, "{body}");
    let demo = node["tenants"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["id"] == "demo");
    assert_eq!(demo.map(|t| &t["connections"]), Some(&json!(3)), "{node}");
    let (first, token) = page(&b, "/demo/@connections?limit=2").await;
    assert_eq!(first.len(), 2, "{first:?}");
    let token = token.expect("a nextToken after a full first page");
    let next_path = format!("/demo/@connections?limit=2&nextToken={token}");
    let (second, end) = page(&b, &next_path).await;
    assert_eq!(end, None, "{second:?}");
    // The same token on the other node gives the same page (the same connections;
    // each node knows the last activity of its own only).
    let ids_of = |items: &[Value]| -> Vec<Value> {
        items.iter().map(|i| i["connectionId"].clone()).collect()
    };
    let (on_a, end_on_a) = page(&a, &next_path).await;
    assert_eq!(
        (ids_of(&on_a), end_on_a),
        (ids_of(&second), None),
        "the token on node a"
    );

    let listed: Vec<String> = first
        .iter()
        .chain(&second)
        .map(|item| item["connectionId"].as_str().unwrap().to_owned())
        .collect();
    assert!(
        listed.windows(2).all(|w| w[0] < w[1]),
        "ordered by id: {listed:?}"
    );
    assert_eq!(listed.iter().cloned().collect::<BTreeSet<_>>(), expected);
    for item in first.iter().chain(&second) {
        let held_by_b = item["connectionId"].as_str().unwrap().ends_with(".b");
        assert_eq!(
            item["lastActiveAt"].is_string(),
            held_by_b,
            "node b lists: {item}"
        );
        assert_eq!(item["identity"]["sourceIp"], "127.0.0.1", "{item}");
        assert_eq!(item["route"], "/connections", "{item}");
        assert_eq!(item["path"], "/connections", "{item}");
        assert!(
            item["connectedAt"].as_str().unwrap().starts_with("20"),
            "{item}"
        );
    }
    assert_eq!(listed_ids(&a).await, expected, "the list on node a");

    let (status, _, body) = api(&b, "DELETE", "/demo/@connections", DEMO_KEY, "").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        serde_json::from_str::<Value>(&body).unwrap(),
        json!({ "closed": 3 }),
        "counted on every node"
    );
    for client in &mut clients {
        assert_eq!(u16::from(expect_close(client).await.code), 1000);
    }
    drop(clients);
    assert_eq!(ask(&mut acme, "acme untouched").await, "acme untouched");
    redis_reaches(&redis, &["ZCARD", "wsgate:tenant:demo"], 0).await;
    assert_eq!(listed_ids(&b).await, BTreeSet::new());
}

// ------------------------------------------------------------- plugins across nodes

/// A plugin on A sends to, describes, lists and kicks a client held by B; `list` is
/// the tenant's across nodes; acme's plugin on B reaches none of demo's connections on
/// A (another tenant's id is gone everywhere).
#[tokio::test]
async fn a_plugin_on_a_reaches_a_client_on_b() {
    let redis = Redis::start();
    let [a, b] = start_nodes(&redis, ["a", "b"], &standard_config()).await;
    let mut probe = a.connect("/demo/probe").await;
    let mut target = b.connect("/demo/connections").await;
    let target_id = own_id(&mut target).await;
    assert!(target_id.ends_with(".b"), "{target_id}");
    let probe_id = ask(&mut probe, "list route=/probe").await;
    assert!(probe_id.ends_with(".a"), "{probe_id}");

    assert_eq!(
        ask(&mut probe, &format!("send {target_id} hello from a")).await,
        "ok"
    );
    assert_eq!(recv_text(&mut target).await, "hello from a");
    let info = ask(&mut probe, &format!("info {target_id}")).await;
    assert!(
        info.starts_with(&format!(
            "id={target_id} tenant=demo route=/connections path=/connections "
        )),
        "{info}"
    );
    assert!(info.contains(" ip=127.0.0.1"), "{info}");
    let mut both = [probe_id.clone(), target_id.clone()];
    both.sort();
    assert_eq!(
        ask(&mut probe, "list").await,
        both.join(","),
        "list spans the nodes"
    );
    assert_eq!(ask(&mut probe, "list route=/connections").await, target_id);
    assert_eq!(ask(&mut probe, "list path=/connections").await, target_id);

    let mut acme = b.connect("/acme/probe").await;
    for command in [
        format!("send {probe_id} sneaky"),
        format!("info {probe_id}"),
        format!("kick {probe_id} 4000 sneaky"),
    ] {
        assert_eq!(
            ask(&mut acme, &command).await,
            "error: gone",
            "acme on b: {command}"
        );
    }
    let acme_list = ask(&mut acme, "list").await;
    assert!(
        acme_list.ends_with(".b") && !acme_list.contains(','),
        "acme sees only itself: {acme_list}"
    );
    assert_eq!(
        ask(&mut probe, "key").await,
        "$default",
        "the demo probe got nothing from acme"
    );

    assert_eq!(
        ask(&mut probe, &format!("kick {target_id} 4002 kicked from a")).await,
        "ok"
    );
    let frame = expect_close(&mut target).await;
    assert_eq!(
        (u16::from(frame.code), frame.reason.as_str()),
        (4002, "kicked from a")
    );
    drop(target);
    let deadline = Instant::now() + WAIT;
    loop {
        let info = ask(&mut probe, &format!("info {target_id}")).await;
        if info == "error: gone" {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the kicked connection is still described: {info}"
        );
        tokio::time::sleep(POLL).await;
    }
    assert_eq!(ask(&mut probe, "list").await, probe_id);
}

/// The chat plugin's rooms span nodes: its `broadcast` reaches members on every node
/// (joins, messages both ways, leaves) and only the room's members.
#[tokio::test]
async fn chat_rooms_span_nodes() {
    let redis = Redis::start();
    let [a, b] = start_nodes(&redis, ["a", "b"], &standard_config()).await;
    let mut carol = b.connect("/demo/chat/other").await;
    let mut dave = a.connect("/demo/chat/other").await;
    let dave_id = joins_from(&mut carol, "a", 1).await.remove(0);

    let mut alice = a.connect("/demo/chat/lobby").await;
    let mut bob = b.connect("/demo/chat/lobby").await;
    let bob_id = joins_from(&mut alice, "b", 1).await.remove(0);

    send_text(&mut alice, "hi bob").await;
    let message = notice(&mut bob).await;
    assert_eq!(
        (&message["event"], &message["room"], &message["text"]),
        (&json!("message"), &json!("lobby"), &json!("hi bob")),
        "{message}"
    );
    let alice_id = message["from"].as_str().unwrap().to_owned();
    assert!(alice_id.ends_with(".a"), "{alice_id}");
    send_text(&mut bob, "hi alice").await;
    let message = notice(&mut alice).await;
    assert_eq!(
        (&message["event"], &message["from"], &message["text"]),
        (&json!("message"), &json!(bob_id), &json!("hi alice")),
        "{message}"
    );

    // The other room heard none of it: carol's next notice is dave's message.
    send_text(&mut dave, "in the other room").await;
    let message = notice(&mut carol).await;
    assert_eq!(
        (&message["from"], &message["text"]),
        (&json!(dave_id), &json!("in the other room")),
        "{message}"
    );

    alice.close(None).await.unwrap();
    let leave = notice(&mut bob).await;
    assert_eq!(
        leave,
        json!({ "event": "leave", "room": "lobby", "connection": alice_id })
    );
}

// ------------------------------- plugins when another node or Redis cannot answer

/// Runs each probe command on `probe`; returns (command, answer, how long it took).
async fn run_all(probe: &mut Client, commands: &[String]) -> Vec<(String, String, Duration)> {
    let mut answers = Vec::new();
    for command in commands {
        let started = Instant::now();
        let answer = ask(probe, command).await;
        answers.push((command.clone(), answer, started.elapsed()));
    }
    answers
}

/// Fails unless every answer is `error: unavailable`, with the node's failed-handler
/// log lines (a plugin cut at its time limit logs `kind=timeout`).
fn all_unavailable(answers: &[(String, String, Duration)], node: &Gateway, what: &str) {
    if answers
        .iter()
        .all(|(_, answer, _)| answer == "error: unavailable")
    {
        return;
    }
    let log = node.logs.all();
    let failures: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("handler failed") || l.contains("suspended"))
        .collect();
    panic!(
        "{what}: every host call must answer \"error: unavailable\"; got (command, answer, took):\n{answers:#?}\nfailures logged:\n{}",
        failures.join("\n")
    );
}

/// While Redis is down, a plugin's host calls on another node's connection, and its
/// cluster-wide list, answer `unavailable`, which the plugin can handle, rather than
/// failing its event; its local sends keep working and it is not suspended.
#[tokio::test]
async fn a_plugin_reaching_across_nodes_while_redis_is_down_gets_unavailable() {
    let mut redis = Redis::start();
    let [a, b] = start_nodes(&redis, ["a", "b"], &standard_config()).await;
    let mut probe = a.connect("/demo/probe").await;
    let mut target = b.connect("/demo/connections").await;
    let target_id = own_id(&mut target).await;
    let mut local = a.connect("/demo/connections").await;
    let local_id = own_id(&mut local).await;

    redis.stop();
    health_becomes(&a, "degraded on a", |body| body.starts_with("degraded:")).await;
    // Five of them: as many failed events in a row as suspend a plugin that times out.
    let commands = [
        format!("send {target_id} x"),
        format!("info {target_id}"),
        format!("kick {target_id} 4000 x"),
        "list".to_owned(),
        "list route=/connections".to_owned(),
    ];
    let answers = run_all(&mut probe, &commands).await;
    let local_answer = ask(&mut probe, &format!("send {local_id} local")).await;
    all_unavailable(&answers, &a, "a plugin on a while Redis is down");
    assert_eq!(
        local_answer, "ok",
        "a local send by the same plugin after those"
    );
    assert_eq!(recv_text(&mut local).await, "local");
}

/// A node that holds the connection but does not answer (played by hand: `zz`, alive by
/// its heartbeat, listening, silent): a plugin's host call on its connection answers
/// `unavailable` rather than running the plugin past its time limit (request_timeout,
/// 1 s here, is longer than the plugin's 100 ms).
#[tokio::test]
async fn a_plugin_reaching_a_silent_node_gets_unavailable() {
    let redis = Redis::start();
    let [a] = start_nodes(&redis, ["a"], &standard_config()).await;
    let _zz = FakeNode::listen(&redis, "zz").await;
    redis.command(&["SET", "wsgate:node:zz", "1", "PX", "60000"]);
    let conn = format!("{}.zz", "Z".repeat(22));
    let mut probe = a.connect("/demo/probe").await;
    let commands = [
        format!("send {conn} x"),
        format!("info {conn}"),
        format!("kick {conn} 4000 x"),
    ];
    let answers = run_all(&mut probe, &commands).await;
    all_unavailable(&answers, &a, "a plugin on a calling silent node zz");
}

// ------------------------------------------------------ the cluster-wide cap

/// `max_connections` counts the tenant's connections on every node: with one on A and
/// one on B, a third is refused with 429 on either node; a place freed on B is taken on
/// A.
#[tokio::test]
async fn the_tenant_connection_cap_counts_every_node() {
    let config = format!(
        "{}\n[tenants.demo.limits]\nmax_connections = 2\n",
        standard_config()
    );
    let redis = Redis::start();
    let [a, b] = start_nodes(&redis, ["a", "b"], &config).await;
    let _first = a.connect("/demo/echo").await;
    let mut second = b.connect("/demo/echo").await;
    for node in [&a, &b] {
        let (status, body) = node.refused(node.url("/demo/echo")).await;
        assert_eq!(status, 429, "a third connection: {body}");
    }
    assert_eq!(
        redis.integer(&["ZCARD", "wsgate:tenant:demo"]),
        2,
        "refused upgrades hold no place"
    );
    let mut acme = a.connect("/acme/echo").await;
    assert_eq!(
        ask(&mut acme, "acme is not capped by demo").await,
        "acme is not capped by demo"
    );

    second.close(None).await.unwrap();
    let deadline = Instant::now() + WAIT;
    let mut third = loop {
        match tokio_tungstenite::connect_async(a.url("/demo/echo")).await {
            Ok((client, _)) => break client,
            Err(err) => {
                assert!(
                    Instant::now() < deadline,
                    "the place freed on b never reached a: {err}"
                );
                tokio::time::sleep(POLL).await;
            }
        }
    };
    assert_eq!(ask(&mut third, "in").await, "in");
}

// ------------------------------------------------------------ nodes that leave

/// `kill -9` of one of three nodes: once its heartbeat lapses, the survivors' sweeps
/// claim its connections and run each one's `$disconnect` (1006, "node lost") exactly
/// once between them, within node_timeout + sweep_interval; Redis is left with nothing
/// of the dead node and its ids are 410 everywhere.
#[tokio::test]
async fn a_killed_node_is_swept_once_within_the_bound() {
    // Tenant `t` forwards its events to a backend (the integration plugin, aws shape),
    // which sees the close code and reason each `$disconnect` was given.
    let backend = Backend::start(|_| {
        Reply::ok(json!({ "statusCode": 200 }).to_string())
            .header("content-type", "application/json")
    })
    .await;
    let mut config = standard_config();
    config.push_str(&crate::harness::plugin(
        "t",
        "int",
        plugins::INTEGRATION,
        &format!(
            "allowed_outbound_hosts = [{:?}]\nconfig = {{ url = {:?}, shape = \"aws\" }}\n",
            backend.origin(),
            backend.url("/aws")
        ),
    ));
    config.push_str("[tenants.t.routes.\"/int\"]\nplugin = \"int\"\n");
    let redis = Redis::start();
    let [mut a, b, c] = start_nodes(&redis, ["a", "b", "c"], &config).await;
    let mut on_b = b.connect("/demo/chat/doomed").await;
    let mut on_c = c.connect("/demo/chat/doomed").await;
    let mut victims = Vec::new();
    for _ in 0..3 {
        victims.push(a.connect("/demo/chat/doomed").await);
    }
    let ids = joins_from(&mut on_b, "a", 3).await;
    assert_eq!(
        joins_from(&mut on_c, "a", 3).await,
        ids,
        "c saw the same joins"
    );
    let _forwarded = a.connect("/t/int").await;
    let connect = event_of(&backend.wait_for(1).await[0]);
    assert_eq!(
        connect["requestContext"]["eventType"], "CONNECT",
        "{connect}"
    );
    let forwarded_id = connect["requestContext"]["connectionId"]
        .as_str()
        .unwrap()
        .to_owned();
    // Arrivals reach Redis just behind the upgrade.
    redis_reaches(&redis, &["HLEN", "wsgate:conns:a"], 4).await;
    redis_reaches(&redis, &["ZCARD", "wsgate:tenant:demo"], 5).await;

    assert_eq!(
        cluster_nodes(&b).await,
        json!({ "node": "b", "nodes": [
            { "id": "a", "alive": true },
            { "id": "b", "alive": true },
            { "id": "c", "alive": true },
        ], "moreNodes": 0 }),
        "the console's view of the cluster, from b"
    );

    let killed = Instant::now();
    a.signal(libc::SIGKILL).await;
    let bound = NODE_TIMEOUT + SWEEP_INTERVAL;
    let deadline = tokio::time::Instant::now() + bound + MARGIN + WAIT;
    let (_, _) = tokio::join!(
        one_leave_each(&mut on_b, "the watcher on b", &ids, deadline),
        one_leave_each(&mut on_c, "the watcher on c", &ids, deadline),
    );
    let took = killed.elapsed();
    assert!(
        took <= bound + MARGIN,
        "the leaves came {took:?} after the kill; the bound is node_timeout + sweep_interval = {bound:?} (+{MARGIN:?} slack)"
    );
    // Exactly once: no node runs them again on a later sweep.
    let quiet = SWEEP_INTERVAL * 4;
    let (_, _) = tokio::join!(
        no_more_leaves(&mut on_b, "the watcher on b", quiet),
        no_more_leaves(&mut on_c, "the watcher on c", quiet),
    );
    drop(victims);
    // The forwarded connection's `$disconnect` ran once, with 1006 "node lost".
    let seen = backend.wait_for(2).await;
    assert_eq!(seen.len(), 2, "one CONNECT and one DISCONNECT: {seen:?}");
    let context = &event_of(&seen[1])["requestContext"];
    assert_eq!(
        (&context["eventType"], &context["connectionId"]),
        (&json!("DISCONNECT"), &json!(forwarded_id)),
        "{context}"
    );
    assert_eq!(
        (
            &context["disconnectStatusCode"],
            &context["disconnectReason"]
        ),
        (&json!(1006), &json!("node lost")),
        "{context}"
    );
    assert_eq!(redis.integer(&["ZCARD", "wsgate:tenant:t"]), 0);

    assert_eq!(
        redis.integer(&["HLEN", "wsgate:conns:a"]),
        0,
        "a's connections left in Redis"
    );
    redis_reaches(&redis, &["SISMEMBER", "wsgate:nodes", "a"], 0).await;
    assert_eq!(
        redis.integer(&["ZCARD", "wsgate:tenant:demo"]),
        2,
        "only the two watchers are left"
    );
    assert_eq!(redis.integer(&["HLEN", "wsgate:info:demo"]), 2);
    for id in &ids {
        let (status, kind, body) = api(
            &b,
            "POST",
            &format!("/demo/@connections/{id}"),
            DEMO_KEY,
            "x",
        )
        .await;
        assert_eq!(
            (status, kind.as_deref()),
            (410, Some("GoneException")),
            "a swept id on b: {body}"
        );
    }
    let listed = listed_ids(&c).await;
    assert_eq!(listed.len(), 2, "{listed:?}");
    assert!(listed.iter().all(|id| !id.ends_with(".a")), "{listed:?}");
    assert_eq!(
        cluster_nodes(&c).await["nodes"],
        json!([{ "id": "b", "alive": true }, { "id": "c", "alive": true }]),
        "the swept node is gone from the console's view"
    );
    // Whichever survivor swept says so, with the count.
    let swept = |node: &Gateway| {
        node.logs
            .count(|l| l.contains("swept a dead node's connections"))
    };
    assert!(swept(&b) + swept(&c) >= 1, "no survivor logged its sweep");
}

/// SIGTERM: the node closes its clients (1001), their `$disconnect` runs there once,
/// and the node removes its connections and itself from Redis before exiting, with no
/// sweep needed (node_timeout is 30 s here, so no sweep could have done it).
#[tokio::test]
async fn a_graceful_shutdown_cleans_redis_at_once() {
    let redis = Redis::start();
    let [mut a, b] = start_nodes_with(
        &redis,
        ["a", "b"],
        &standard_config(),
        Duration::from_secs(30),
    )
    .await;
    let mut watcher = b.connect("/demo/chat/bye").await;
    let mut leaving = vec![
        a.connect("/demo/chat/bye").await,
        a.connect("/demo/chat/bye").await,
    ];
    let ids = joins_from(&mut watcher, "a", 2).await;
    // Arrivals reach Redis just behind the upgrade.
    redis_reaches(&redis, &["HLEN", "wsgate:conns:a"], 2).await;
    redis_reaches(&redis, &["ZCARD", "wsgate:tenant:demo"], 3).await;

    let status = a.signal(libc::SIGTERM).await;
    assert!(
        status.success(),
        "the gateway exits cleanly on SIGTERM: {status}"
    );
    assert_eq!(
        redis.integer(&["HLEN", "wsgate:conns:a"]),
        0,
        "a's connections stayed in Redis"
    );
    assert_eq!(
        redis.integer(&["SISMEMBER", "wsgate:nodes", "a"]),
        0,
        "a is still a member"
    );
    assert_eq!(
        redis.integer(&["EXISTS", "wsgate:node:a"]),
        0,
        "a's heartbeat outlived it"
    );
    assert_eq!(
        redis.integer(&["ZCARD", "wsgate:tenant:demo"]),
        1,
        "only the watcher is left"
    );
    assert_eq!(redis.integer(&["HLEN", "wsgate:info:demo"]), 1);
    for client in &mut leaving {
        assert_eq!(u16::from(expect_close(client).await.code), 1001);
    }
    let deadline = tokio::time::Instant::now() + WAIT;
    one_leave_each(&mut watcher, "the watcher on b", &ids, deadline).await;
    no_more_leaves(&mut watcher, "the watcher on b", SWEEP_INTERVAL * 2).await;
    let (status, _, body) = api(
        &b,
        "GET",
        &format!("/demo/@connections/{}", ids[0]),
        DEMO_KEY,
        "",
    )
    .await;
    assert_eq!(status, 410, "{body}");
}

/// Commands Redis processed during `window` (its own `INFO` answer included).
async fn commands_during(redis: &Redis, window: Duration) -> i64 {
    let total = |redis: &Redis| {
        let info = redis.command(&["INFO", "stats"]);
        info.lines()
            .find_map(|line| line.strip_prefix("total_commands_processed:"))
            .and_then(|n| n.trim().parse::<i64>().ok())
            .expect("total_commands_processed in INFO stats")
    };
    let before = total(redis);
    // A measurement window, not a wait for an event.
    tokio::time::sleep(window).await;
    total(redis) - before
}

/// Redis traffic must not grow with idle connections: no per-connection refresh. Over
/// ten heartbeats a node with 40 idle connections sends Redis what it sends with none
/// (its heartbeat and its sweep), give or take a tick at the window's edges.
#[tokio::test]
async fn idle_connections_cost_redis_nothing() {
    let redis = Redis::start();
    let [a] = start_nodes(&redis, ["a"], &standard_config()).await;
    let window = HEARTBEAT_INTERVAL * 10;
    let without = commands_during(&redis, window).await;
    let mut clients = Vec::new();
    for _ in 0..40 {
        clients.push(a.connect("/demo/echo").await);
    }
    redis_reaches(&redis, &["ZCARD", "wsgate:tenant:demo"], 40).await;
    let with = commands_during(&redis, window).await;
    assert!(
        with <= without + 8,
        "Redis processed {with} commands over {window:?} with 40 idle connections against {without} with none: something is refreshed per connection"
    );
    drop(clients);
}

// ------------------------------------------------------------------ Redis down

/// Redis stops mid-test: each node keeps serving its own clients (echo, a local POST, a
/// local plugin send, even new connections), says `degraded: <why>` with 200 on
/// /health (admin and WebSocket ports), and answers what needs another node with 503
/// and a reason, never 200. Redis comes back empty: the nodes reconnect, resubscribe
/// and write their live connections again by themselves, and everything reaches
/// everything; no connection is forgotten, none that left comes back.
#[tokio::test]
async fn redis_down_then_back() {
    let mut redis = Redis::start();
    let [a, b] = start_nodes(&redis, ["a", "b"], &standard_config()).await;
    let mut held_a = a.connect("/demo/connections").await;
    let id_a = own_id(&mut held_a).await;
    let mut held_b = b.connect("/demo/connections").await;
    let id_b = own_id(&mut held_b).await;
    let mut echo_a = a.connect("/demo/echo").await;
    let mut echo_b = b.connect("/demo/echo").await;
    let mut probe_a = a.connect("/demo/probe").await;
    let mut leaves_during = a.connect("/demo/connections").await;
    let id_leaves = own_id(&mut leaves_during).await;
    let path_a = format!("/demo/@connections/{id_a}");

    redis.stop();
    for (node, name) in [(&a, "a"), (&b, "b")] {
        let body = health_becomes(node, &format!("degraded on {name}"), |body| {
            body.starts_with("degraded:")
        })
        .await;
        assert!(
            body.len() > "degraded: ".len() + 5,
            "a reason after degraded: {body:?}"
        );
        let raw = node
            .raw_http("GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            .await;
        assert!(
            raw.starts_with("HTTP/1.1 200"),
            "/health on the WebSocket port of {name}: {raw}"
        );
        assert!(
            raw.contains("\r\n\r\ndegraded: "),
            "/health on the WebSocket port of {name}: {raw}"
        );
    }

    // Each node serves its own.
    assert_eq!(ask(&mut echo_a, "still here on a").await, "still here on a");
    assert_eq!(ask(&mut echo_b, "still here on b").await, "still here on b");
    let (status, _, body) = api(&a, "POST", &path_a, DEMO_KEY, "local POST").await;
    assert_eq!(status, 200, "a POST on a to a's own client: {body}");
    assert_eq!(recv_text(&mut held_a).await, "local POST");
    assert_eq!(
        ask(&mut probe_a, &format!("send {id_a} local plugin send")).await,
        "ok"
    );
    assert_eq!(recv_text(&mut held_a).await, "local plugin send");
    let mut joined_during = a.connect("/demo/connections").await;
    let id_joined = own_id(&mut joined_during).await;
    leaves_during.close(None).await.unwrap();
    // The server's answer to our close (it echoes ours, with no code), or the end.
    let _ = tokio::time::timeout(WAIT, async {
        while let Some(Ok(message)) = leaves_during.next().await {
            if message.is_close() {
                return;
            }
        }
    })
    .await;

    // What needs the other node or Redis fails loudly.
    for (method, path, what) in [
        ("POST", path_a.as_str(), "POST on b to a's client"),
        ("GET", path_a.as_str(), "GET on b of a's client"),
        ("DELETE", path_a.as_str(), "DELETE on b of a's client"),
        ("GET", "/demo/@connections", "the list on b"),
    ] {
        let started = Instant::now();
        let (status, kind, body) = api(&b, method, path, DEMO_KEY, "must not arrive").await;
        assert_eq!(
            (status, kind.as_deref()),
            (503, Some("ServiceUnavailableException")),
            "{what}: {body}"
        );
        let message = serde_json::from_str::<Value>(&body).unwrap()["message"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        assert!(message.len() > 10, "{what}: a 503 with a reason: {body}");
        assert!(
            started.elapsed() <= REQUEST_TIMEOUT + MARGIN,
            "{what} took {:?}",
            started.elapsed()
        );
    }
    redis.start_again();
    for (node, name) in [(&a, "a"), (&b, "b")] {
        health_becomes(node, &format!("OK again on {name}"), |body| body == "OK").await;
    }
    for (node, path, client, what) in [
        (&b, path_a.clone(), &mut held_a, "b to a's client"),
        (
            &b,
            format!("/demo/@connections/{id_joined}"),
            &mut joined_during,
            "b to the client that joined a during the outage",
        ),
        (
            &a,
            format!("/demo/@connections/{id_b}"),
            &mut held_b,
            "a to b's client",
        ),
    ] {
        let (status, _, body) = api(node, "POST", &path, DEMO_KEY, "after the outage").await;
        assert_eq!(status, 200, "{what}: {body}");
        assert_eq!(recv_text(client).await, "after the outage", "{what}");
    }
    assert_eq!(
        ask(&mut probe_a, &format!("send {id_b} plugin after")).await,
        "ok"
    );
    assert_eq!(recv_text(&mut held_b).await, "plugin after");

    let listed = listed_ids(&b).await;
    for id in [&id_a, &id_b, &id_joined] {
        assert!(
            listed.contains(id),
            "{id} is forgotten by the list on b: {listed:?}"
        );
    }
    assert!(
        !listed.contains(&id_leaves),
        "a connection that left during the outage came back: {listed:?}"
    );
    assert_eq!(
        listed.len(),
        6,
        "held a and b, two echoes, the probe, the one that joined: {listed:?}"
    );
    assert_eq!(redis.integer(&["ZCARD", "wsgate:tenant:demo"]), 6);
}

// --------------------------------------------------------- between nodes: the wire

/// A pretend node: a raw Redis connection subscribed to node `name`'s inbox, to see
/// what real nodes send there and to answer (or not) by hand.
struct FakeNode {
    reader: BufReader<tokio::net::TcpStream>,
}

impl FakeNode {
    async fn listen(redis: &Redis, name: &str) -> FakeNode {
        let stream = tokio::net::TcpStream::connect(("127.0.0.1", redis.port()))
            .await
            .unwrap();
        let mut node = FakeNode {
            reader: BufReader::new(stream),
        };
        let channel = format!("wsgate:inbox:{name}");
        let mut request = b"*2\r\n$9\r\nSUBSCRIBE\r\n".to_vec();
        request.extend_from_slice(format!("${}\r\n{channel}\r\n", channel.len()).as_bytes());
        node.reader.get_mut().write_all(&request).await.unwrap();
        let confirmed = node.next_push().await;
        assert_eq!(confirmed[..2], ["subscribe".to_owned(), channel]);
        node
    }

    /// The next pub/sub push (an array of bulk strings and integers), as strings.
    async fn next_push(&mut self) -> Vec<String> {
        let read = async {
            let mut line = String::new();
            self.reader.read_line(&mut line).await.unwrap();
            let count: usize = line
                .strip_prefix('*')
                .and_then(|n| n.trim().parse().ok())
                .unwrap_or_else(|| panic!("not a push: {line:?}"));
            let mut items = Vec::new();
            for _ in 0..count {
                line.clear();
                self.reader.read_line(&mut line).await.unwrap();
                if let Some(len) = line.strip_prefix('$') {
                    let mut data = vec![0; len.trim().parse::<usize>().unwrap() + 2];
                    self.reader.read_exact(&mut data).await.unwrap();
                    data.truncate(data.len() - 2);
                    items.push(String::from_utf8(data).unwrap());
                } else {
                    items.push(line[1..].trim().to_owned());
                }
            }
            items
        };
        tokio::time::timeout(WAIT, read)
            .await
            .expect("nothing on the fake node's inbox")
    }

    /// The next frame published on the inbox.
    async fn next_frame(&mut self) -> Value {
        let push = self.next_push().await;
        assert_eq!(push[0], "message", "{push:?}");
        serde_json::from_str(&push[2])
            .unwrap_or_else(|e| panic!("a frame that is not JSON ({e}): {}", push[2]))
    }
}

/// Frames carry `"v": 1`; a node that receives another version logs a warning saying
/// it cannot read it, refuses it (answering the sender why), and goes on serving.
#[tokio::test]
async fn a_request_in_another_format_version_is_refused() {
    let redis = Redis::start();
    let [a] = start_nodes(&redis, ["a"], &standard_config()).await;
    let mut sender = FakeNode::listen(&redis, "zz").await;
    let frame = json!({"v": 2, "kind": "request", "id": 1, "from": "zz", "tenant": "demo", "op": {"op": "teleport"}});
    assert_eq!(
        redis.integer(&["PUBLISH", "wsgate:inbox:a", &frame.to_string()]),
        1,
        "a listens on its inbox"
    );
    let line = a
        .logs
        .wait_for("saying a cannot read the frame", |l| {
            l.contains("cannot read")
        })
        .await;
    assert!(line.contains("WARN"), "a warning: {line}");
    let reply = sender.next_frame().await;
    assert_eq!(
        (&reply["v"], &reply["kind"], &reply["re"]),
        (&json!(1), &json!("reply"), &json!(1)),
        "{reply}"
    );
    assert_eq!(reply["outcome"]["outcome"], "refused", "{reply}");
    assert!(
        reply["outcome"]["reason"]
            .as_str()
            .unwrap()
            .contains("version"),
        "{reply}"
    );

    let mut client = a.connect("/demo/echo").await;
    assert_eq!(ask(&mut client, "still serving").await, "still serving");
}

/// What the caller of another node answers depends only on that node's reply, read
/// under the format version: done 200, gone 410, queue full 429; a reply in another
/// version is refused (logged) and the caller answers 503, never 200; a node that
/// does not answer within request_timeout gives 503 too; a node not listening but alive
/// 503; a node with no heartbeat holds nothing, 410. Node `zz` is played by hand.
#[tokio::test]
async fn calls_to_another_node_are_answered_by_its_reply_only() {
    let redis = Redis::start();
    let [a] = start_nodes(&redis, ["a"], &standard_config()).await;
    let mut zz = FakeNode::listen(&redis, "zz").await;
    redis.command(&["SET", "wsgate:node:zz", "1", "PX", "60000"]);
    let conn = format!("{}.zz", "Z".repeat(22));
    let url = format!("http://{}/demo/@connections/{conn}", a.admin);
    let post = |text: &'static str| {
        let url = url.clone();
        tokio::spawn(async move {
            let started = Instant::now();
            let answer = http(
                "POST",
                &url,
                &[("authorization".into(), format!("Bearer {DEMO_KEY}"))],
                text.into(),
            )
            .await;
            (answer, started.elapsed())
        })
    };

    for (outcome, expected) in [("done", 200), ("gone", 410), ("queue_full", 429)] {
        let call = post("hello zz");
        let request = zz.next_frame().await;
        assert_eq!(
            (
                &request["v"],
                &request["kind"],
                &request["from"],
                &request["tenant"]
            ),
            (&json!(1), &json!("request"), &json!("a"), &json!("demo")),
            "{request}"
        );
        assert_eq!(
            request["op"],
            json!({"op": "send", "conn": conn, "payload": {"type": "text", "data": "hello zz"}}),
            "{request}"
        );
        let reply =
            json!({"v": 1, "kind": "reply", "re": request["id"], "outcome": {"outcome": outcome}});
        redis.command(&["PUBLISH", "wsgate:inbox:a", &reply.to_string()]);
        let ((status, _, body), _) = call.await.unwrap();
        assert_eq!(status, expected, "a reply {outcome}: {body}");
    }

    let call = post("v2 reply");
    let request = zz.next_frame().await;
    let reply =
        json!({"v": 2, "kind": "reply", "re": request["id"], "outcome": {"outcome": "done"}});
    redis.command(&["PUBLISH", "wsgate:inbox:a", &reply.to_string()]);
    let ((status, kind, body), took) = call.await.unwrap();
    assert_eq!(
        (status, kind.as_deref()),
        (503, Some("ServiceUnavailableException")),
        "a reply in version 2: {body}"
    );
    assert!(
        took >= REQUEST_TIMEOUT - Duration::from_millis(50),
        "answered after {took:?}"
    );
    a.logs
        .wait_for("refusing the version 2 reply", |l| {
            l.contains("cannot read")
        })
        .await;

    let call = post("silence");
    let _ = zz.next_frame().await;
    let ((status, _, body), took) = call.await.unwrap();
    assert_eq!(status, 503, "no reply at all: {body}");
    assert!(body.contains("did not answer"), "{body}");
    assert!(took <= REQUEST_TIMEOUT + MARGIN, "answered after {took:?}");

    // zz stops listening but its heartbeat lives on: not gone, but unreachable.
    drop(zz);
    let deadline = Instant::now() + WAIT;
    loop {
        let ((status, _, body), _) = post("nobody listens").await.unwrap();
        if status == 503 && body.contains("not listening") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "a node alive but not listening: {status} {body}"
        );
        tokio::time::sleep(POLL).await;
    }
    redis.command(&["DEL", "wsgate:node:zz"]);
    let ((status, kind, body), _) = post("nobody there").await.unwrap();
    assert_eq!(
        (status, kind.as_deref()),
        (410, Some("GoneException")),
        "a node with no heartbeat: {body}"
    );
}

// ---------------------------------------------------------------- SigV4 replays

/// A signed write is accepted once across the cluster: the very same request (same
/// signature, body and Host, as a load balancer would pass it on) replayed to the other
/// node is refused as a replay (403, as on one node), and nothing is delivered twice.
#[tokio::test]
async fn a_signed_write_replayed_to_another_node_is_refused() {
    let config =
        standard_config().replacen("[admin]\n", "[admin]\nhosts = [\"api.example.test\"]\n", 1);
    let redis = Redis::start();
    let [a, b] = start_nodes(&redis, ["a", "b"], &config).await;
    let mut client = a.connect("/demo/connections").await;
    let id = own_id(&mut client).await;
    let path = format!("/demo/@connections/{id}");
    let demo = Credentials::Aws {
        access_key_id: "AKIDDEMO".into(),
        secret_access_key: "demo-secret".into(),
        session_token: None,
        region: "eu-west-1".into(),
    };
    for (text, first, second) in [("once via a", &a, &b), ("once via b", &b, &a)] {
        let mut headers = auth_headers(
            &demo,
            "POST",
            &format!("http://api.example.test{path}"),
            text.as_bytes(),
            SystemTime::now(),
        )
        .unwrap();
        headers.push(("host".into(), "api.example.test".into()));
        let (status, _, body) = http(
            "POST",
            &format!("http://{}{path}", first.admin),
            &headers,
            text.into(),
        )
        .await;
        assert_eq!(status, 200, "{text}: {body}");
        assert_eq!(recv_text(&mut client).await, text);
        let (status, kind, body) = http(
            "POST",
            &format!("http://{}{path}", second.admin),
            &headers,
            text.into(),
        )
        .await;
        assert_eq!(
            (status, kind.as_deref()),
            (403, Some("ForbiddenException")),
            "{text}, then the same signed request on the other node: {body}"
        );
        assert!(body.contains("replay"), "{body}");
    }
    // Nothing arrived twice: the next message is the next one sent.
    assert_eq!(api(&b, "POST", &path, DEMO_KEY, "last").await.0, 200);
    assert_eq!(recv_text(&mut client).await, "last");
}
