//! Compiled components are cached on disk: a restart reads them back instead of
//! compiling, and an unusable entry is compiled again. While plugins load, functions
//! they share are compiled once.

use crate::harness::{Gateway, ask, config, plugin, recv_json, send_text};
use crate::plugins;

/// First start compiles and stores; the second reads the cache; a corrupt entry is
/// replaced by a fresh compilation and the gateway serves throughout.
#[tokio::test]
async fn compiled_components_are_cached() {
    let dir = tempfile::tempdir().unwrap();
    let text = config(&format!(
        "[compile]\ncache_dir = {:?}\n\n{}[tenants.demo.routes.\"/echo\"]\nplugin = \"echo\"\n",
        dir.path(),
        plugin("demo", "echo", plugins::ECHO, "")
    ));
    let loaded = |origin: &'static str| {
        move |l: &str| l.contains("plugin loaded") && l.contains(&format!("from={origin}"))
    };

    let first = Gateway::start_binary(&text).await;
    first.logs.wait_for("compiled", loaded("compiled")).await;
    drop(first);
    let entries: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(entries.len(), 1, "{entries:?}");
    assert!(entries[0].extension().is_some_and(|e| e == "cwasm"));

    let second = Gateway::start_binary(&text).await;
    second
        .logs
        .wait_for("read from the cache", loaded("cache"))
        .await;
    let mut client = second.connect("/demo/echo").await;
    assert_eq!(ask(&mut client, "warm").await, "warm");
    drop(second);

    std::fs::write(&entries[0], b"garbage").unwrap();
    let third = Gateway::start_binary(&text).await;
    third
        .logs
        .wait_for("a warning", |l| l.contains("unusable cache entry"))
        .await;
    third
        .logs
        .wait_for("compiled again", loaded("compiled"))
        .await;
    let mut client = third.connect("/demo/echo").await;
    assert_eq!(ask(&mut client, "recompiled").await, "recompiled");
}

/// Two different plugins compiled in one start share functions (the standard library,
/// the SDK): the second reuses them, and both plugins run correctly on reused code.
#[tokio::test]
async fn functions_shared_between_plugins_are_compiled_once() {
    let text = config(&format!(
        "[compile]\ncache = false\n\n{}{}\
         [tenants.demo.routes.\"/echo\"]\nplugin = \"echo\"\n\
         [tenants.demo.routes.\"/id\"]\nplugin = \"id\"\n",
        plugin("demo", "echo", plugins::ECHO, ""),
        plugin("demo", "id", plugins::CONNECTION_ID, ""),
    ));
    let gateway = Gateway::start_binary(&text).await;
    let line = gateway
        .logs
        .wait_for("the function cache's report", |l| {
            l.contains("functions_reused=")
        })
        .await;
    let count = |key: &str| -> u64 {
        let rest = &line[line.find(key).unwrap_or_else(|| panic!("{key} in {line}")) + key.len()..];
        rest.split(|c: char| !c.is_ascii_digit())
            .next()
            .unwrap()
            .parse()
            .unwrap()
    };
    assert!(count("functions_reused=") > 0, "{line}");
    assert!(count("functions_compiled=") > 0, "{line}");

    let mut echo = gateway.connect("/demo/echo").await;
    assert_eq!(ask(&mut echo, "shared code").await, "shared code");
    let mut id = gateway.connect("/demo/id").await;
    send_text(&mut id, "who").await;
    assert_eq!(
        recv_json(&mut id).await["connection_id"]
            .as_str()
            .unwrap()
            .len(),
        22
    );
}
