//! End-to-end tests: the real `wsgate` binary on free loopback ports, real plugins
//! built for wasm32-wasip2, real WebSocket and HTTP clients. One file per topic.

mod backend;
mod harness;
mod redis;

mod admin_api;
mod admin_limits;
mod auth;
mod aws_sdk;
mod broadcast;
mod cache;
mod chat;
mod check;
mod cli;
mod cluster;
mod config_errors;
mod connection_memory;
mod console;
mod descriptors;
mod echo;
mod example_backend;
mod execution_log;
mod failures;
mod fairness;
mod frames;
mod guest_budgets;
mod host_api;
mod integration;
mod limits;
mod logs;
mod metrics;
mod outbound;
mod polyglot;
mod proxies;
mod quota;
mod reload;
mod routing;
mod sandbox;
mod seams;
mod sigv4;
mod tls;
mod wit_compat;

use wsgate_test_plugins as plugins;

/// The gateway most tests use: tenant `demo` with every example route and the testing
/// plugins, tenant `acme` with its own echo and probe, tenant `small` with a 1 KiB
/// message limit and a 2 KiB outbound queue, tenant `rated` with a management API
/// burst of 2. Keys: `<tenant>-key`; AWS keys `AKIDDEMO`/`demo-secret`, `AKIDACME`/`acme-secret`.
pub fn standard_config() -> String {
    use harness::plugin;
    let mut tenants = String::new();
    for (name, path, extra) in [
        ("echo", plugins::ECHO, ""),
        ("connection-id", plugins::CONNECTION_ID, ""),
        ("chat", plugins::CHAT, ""),
        ("auth", plugins::AUTH, "config = { token = \"s3cret\" }"),
        ("panic", plugins::PANIC, ""),
        ("probe", plugins::PROBE, "config = { greeting = \"hello\" }"),
        ("probe-self", plugins::PROBE, "access = \"self\""),
    ] {
        tenants.push_str(&plugin("demo", name, path, extra));
    }
    tenants.push_str(
        r#"
[tenants.demo.routes."/echo"]
plugin = "echo"
[tenants.demo.routes."/connections"]
plugin = "connection-id"
[tenants.demo.routes."/chat/{room}"]
plugin = "chat"
[tenants.demo.routes."/private"]
keys = { "$connect" = "auth", "$default" = "probe" }
[tenants.demo.routes."/probe"]
plugin = "probe"
[tenants.demo.routes."/probe/{room}"]
plugin = "probe"
[tenants.demo.routes."/probe-self"]
plugin = "probe-self"
[tenants.demo.routes."/game"]
selection = "$request.body.action"
keys = { "$default" = "echo", whoami = "connection-id", probe = "probe" }
[tenants.demo.routes."/strict"]
selection = "$request.body.action"
keys = { whoami = "connection-id" }
[tenants.demo.routes."/panic"]
plugin = "panic"
"#,
    );
    tenants.push_str(&plugin("acme", "echo", plugins::ECHO, ""));
    tenants.push_str(&plugin("acme", "probe", plugins::PROBE, ""));
    tenants.push_str(
        r#"
[tenants.acme]
hosts = ["acme.test"]
[tenants.acme.routes."/echo"]
plugin = "echo"
[tenants.acme.routes."/probe"]
plugin = "probe"
"#,
    );
    tenants.push_str(&plugin("small", "echo", plugins::ECHO, ""));
    tenants.push_str(&plugin("rated", "echo", plugins::ECHO, ""));
    tenants.push_str(
        r#"
[tenants.demo.credentials]
bearer_keys = ["demo-key"]
aws = [{ access_key_id = "AKIDDEMO", secret_access_key = "demo-secret" }]
[tenants.acme.credentials]
bearer_keys = ["acme-key"]
aws = [{ access_key_id = "AKIDACME", secret_access_key = "acme-secret" }]

[tenants.small.limits]
max_message_bytes = 1024
outbound_queue_bytes = 2048
[tenants.small.credentials]
bearer_keys = ["small-key"]
[tenants.small.routes."/echo"]
plugin = "echo"

[tenants.rated.limits]
api_rate = 1
api_burst = 2
[tenants.rated.credentials]
bearer_keys = ["rated-key"]
[tenants.rated.routes."/echo"]
plugin = "echo"
"#,
    );
    harness::config(&tenants)
}
