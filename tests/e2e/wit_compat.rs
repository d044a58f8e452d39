//! The WIT compatibility guard: components built against the `wsgate:plugin@0.1.0`
//! baseline (`tests/wit-baseline/`, committed `.wasm` files, never rebuilt from `wit/`)
//! are loaded into the current gateway and exercised: every handler export and every
//! host import. A change to `wit/` or to the host that breaks components built against
//! 0.1.0 fails here. Also: the baseline itself is frozen, the live package version
//! follows the versioning policy of wit/README.md, and a component the gateway cannot
//! use is refused with a message that names the file, the cause and what to do.

use std::collections::{BTreeMap, BTreeSet};
use std::ffi::OsStr;
use std::path::{Path, PathBuf};

use sha2::{Digest as _, Sha256};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

use crate::harness::{
    Client, Gateway, ask, config, expect_close, plugin, recv, recv_json, recv_text, refusal,
    run_binary, send_text, start_fails,
};

/// The repository root.
fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// The baselines' directory.
fn baselines() -> PathBuf {
    repo().join("tests/wit-baseline")
}

/// A committed fixture, `tests/wit-baseline/fixtures/{stem}.wasm`.
fn fixture(stem: &str) -> String {
    let path = baselines().join("fixtures").join(format!("{stem}.wasm"));
    assert!(path.is_file(), "the fixture {} is missing", path.display());
    path.canonicalize().unwrap().display().to_string()
}

/// The version in a `package wsgate:plugin@VERSION;` line.
fn package_version(world_wit: &str) -> String {
    world_wit
        .lines()
        .find_map(|line| {
            line.trim()
                .strip_prefix("package wsgate:plugin@")?
                .strip_suffix(';')
        })
        .expect("a `package wsgate:plugin@VERSION;` line")
        .to_owned()
}

/// The functions of each interface of a WIT file, and the world's imports and exports
/// (`import X;` / `export X;`). A small reader for this package's own style, not a WIT
/// parser: one declaration per line.
struct Wit {
    functions: BTreeMap<String, BTreeSet<String>>,
    imports: BTreeSet<String>,
    exports: BTreeSet<String>,
}

fn read_wit(dir: &Path) -> Wit {
    let mut wit = Wit {
        functions: BTreeMap::new(),
        imports: BTreeSet::new(),
        exports: BTreeSet::new(),
    };
    for file in ["types.wit", "world.wit"] {
        let text = std::fs::read_to_string(dir.join(file)).unwrap();
        let mut interface: Option<String> = None;
        let mut depth = 0usize;
        for line in text.lines() {
            let line = line.trim();
            if line.starts_with("//") {
                continue;
            }
            if depth == 0
                && let Some(name) = line.strip_prefix("interface ")
            {
                interface = Some(name.trim_end_matches('{').trim().to_owned());
                wit.functions.entry(interface.clone().unwrap()).or_default();
            }
            if depth == 1
                && let Some(name) = &interface
                && let Some((function, _)) = line.split_once(": func(")
            {
                let function = function.trim().trim_start_matches('%').to_owned();
                wit.functions.get_mut(name).unwrap().insert(function);
            }
            if depth == 1 && interface.is_none() {
                if let Some(name) = line.strip_prefix("import ") {
                    wit.imports.insert(name.trim_end_matches(';').to_owned());
                } else if let Some(name) = line.strip_prefix("export ") {
                    wit.exports.insert(name.trim_end_matches(';').to_owned());
                }
            }
            depth += line.matches('{').count();
            depth -= line.matches('}').count();
            if depth == 0 {
                interface = None;
            }
        }
    }
    wit
}

/// The functions of each `wsgate:plugin` instance a component imports or exports, by
/// full name (`wsgate:plugin/log@0.1.0`).
fn component_functions(
    path: &str,
) -> (
    BTreeMap<String, BTreeSet<String>>,
    BTreeMap<String, BTreeSet<String>>,
) {
    use wasmtime::component::types::ComponentItem;
    let mut config = wasmtime::Config::new();
    config.wasm_component_model(true);
    let engine = wasmtime::Engine::new(&config).unwrap();
    let component = wasmtime::component::Component::from_file(&engine, path).unwrap();
    let ty = component.component_type();
    let functions = |item: &ComponentItem| -> BTreeSet<String> {
        match item {
            ComponentItem::ComponentInstance(instance) => instance
                .exports(&engine)
                .filter(|(_, item)| matches!(item.ty, ComponentItem::ComponentFunc(_)))
                .map(|(name, _)| name.to_owned())
                .collect(),
            _ => BTreeSet::new(),
        }
    };
    let imports = ty
        .imports(&engine)
        .filter(|(name, _)| name.starts_with("wsgate:plugin/"))
        .map(|(name, item)| (name.to_owned(), functions(&item.ty)))
        .collect();
    let exports = ty
        .exports(&engine)
        .filter(|(name, _)| name.starts_with("wsgate:plugin/"))
        .map(|(name, item)| (name.to_owned(), functions(&item.ty)))
        .collect();
    (imports, exports)
}

/// The 0.1.0 baseline is frozen: these are the bytes of `wit/` when it was cut. A
/// baseline never changes; a new version gets a new directory (wit/README.md).
#[test]
fn wit_baseline_0_1_0_is_unchanged() {
    let dir = baselines().join("0.1.0");
    for (file, sha256) in [
        (
            "types.wit",
            "c0a806b8c8d68926e317b79d131be6a33217da8c2dddee17d0a2b85564381594",
        ),
        (
            "world.wit",
            "779a02b07ac5550508c9de775d2435f57283f02a0a05a2dc74b673490aad0e90",
        ),
    ] {
        let bytes = std::fs::read(dir.join(file)).unwrap();
        let digest: String = Sha256::digest(&bytes)
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        assert_eq!(
            digest, sha256,
            "tests/wit-baseline/0.1.0/{file} changed: a baseline must never change"
        );
    }
    let world = std::fs::read_to_string(dir.join("world.wit")).unwrap();
    assert_eq!(package_version(&world), "0.1.0");
}

/// Between them, the fixtures import every function of every host interface of the
/// 0.1.0 world and export every handler function, all at version 0.1.0: linking them is
/// a check of the whole world. Read from the baseline's WIT, so nothing is forgotten.
#[test]
fn wit_fixtures_cover_the_0_1_0_world() {
    let wit = read_wit(&baselines().join("0.1.0"));
    assert_eq!(
        wit.imports,
        BTreeSet::from(["connections".into(), "log".into(), "config".into()])
    );
    assert_eq!(wit.exports, BTreeSet::from(["handler".into()]));
    let (mut imports, mut exports) = (BTreeMap::new(), BTreeMap::new());
    for stem in ["route_handler", "echo"] {
        let (i, e) = component_functions(&fixture(stem));
        for (name, functions) in i {
            imports
                .entry(name)
                .or_insert_with(BTreeSet::new)
                .extend(functions);
        }
        for (name, functions) in e {
            exports
                .entry(name)
                .or_insert_with(BTreeSet::new)
                .extend(functions);
        }
    }
    for (directions, covered) in [(&wit.imports, &imports), (&wit.exports, &exports)] {
        for interface in directions {
            let name = format!("wsgate:plugin/{interface}@0.1.0");
            let wanted = &wit.functions[interface];
            assert!(!wanted.is_empty(), "no functions read for {interface}");
            assert_eq!(
                covered.get(&name),
                Some(wanted),
                "the fixtures do not cover every function of {name}: {covered:?}"
            );
        }
    }
    // Nothing of another version slipped in (a fixture rebuilt against wit/).
    for name in imports.keys().chain(exports.keys()) {
        assert!(
            name.ends_with("@0.1.0"),
            "{name}: fixtures are built against 0.1.0"
        );
    }
}

/// The versioning policy (wit/README.md): the live package's compatibility line (its
/// major version; for 0.x, `0.MINOR`) is that of a baseline at or below it, or it is a
/// new line with its own baseline; the gateway supports every baseline's line, and
/// wit/README.md documents the live version.
#[test]
fn wit_live_version_follows_the_policy() {
    use wsgate::plugin::{compat_line, supported_wit_versions, wit_version};
    let live = package_version(&std::fs::read_to_string(repo().join("wit/world.wit")).unwrap());
    assert_eq!(
        live,
        wit_version(),
        "the gateway's version is read from wit/"
    );
    let mut versions = Vec::new();
    for entry in std::fs::read_dir(baselines()).unwrap() {
        let entry = entry.unwrap();
        let name = entry.file_name().into_string().unwrap();
        if !entry.path().join("world.wit").is_file() {
            continue;
        }
        let world = std::fs::read_to_string(entry.path().join("world.wit")).unwrap();
        assert_eq!(
            package_version(&world),
            name,
            "tests/wit-baseline/{name} declares another version"
        );
        versions.push(name);
    }
    assert!(versions.contains(&"0.1.0".to_owned()), "{versions:?}");
    let number = |v: &str| -> Vec<u64> { v.split('.').map(|n| n.parse().unwrap()).collect() };
    assert!(
        versions
            .iter()
            .any(|v| compat_line(v) == compat_line(&live) && number(v) <= number(&live)),
        "wit/ declares wsgate:plugin@{live}, whose compatibility line {} has no baseline at or \
         below it in tests/wit-baseline ({versions:?}). A compatible addition keeps the line \
         of the last baseline (0.1.0 -> 0.1.1; 1.2.0 -> 1.3.0); a breaking change starts a new \
         line (0.2.0, 2.0.0), and then needs a baseline of its own and fixtures, while the \
         gateway keeps loading the old line (see wit/README.md, Versioning)",
        compat_line(&live)
    );
    let supported: BTreeSet<String> = supported_wit_versions()
        .iter()
        .map(|v| compat_line(v))
        .collect();
    for version in &versions {
        assert!(
            supported.contains(&compat_line(version)),
            "the gateway no longer loads components built against the {version} baseline \
             (it supports {supported:?}): the host must keep loading old versions"
        );
    }
    let readme = std::fs::read_to_string(repo().join("wit/README.md")).unwrap();
    assert!(
        readme.contains(&format!("wsgate:plugin@{live}")),
        "wit/README.md does not document wsgate:plugin@{live}"
    );
}

/// A gateway with the 0.1.0 fixtures: `/compat/{room}` and `/keys` (with a route
/// selection expression) on the full fixture, `/echo` on the minimal one.
fn compat_config() -> String {
    let mut tenants = plugin(
        "demo",
        "compat",
        &fixture("route_handler"),
        "config = { greeting = \"hello\", color = \"blue\" }",
    );
    tenants.push_str(&plugin("demo", "echo", &fixture("echo"), ""));
    tenants.push_str(
        r#"
[tenants.demo.routes."/compat/{room}"]
plugin = "compat"
[tenants.demo.routes."/keys"]
selection = "$request.body.action"
keys = { "$default" = "compat", ping = "compat" }
[tenants.demo.routes."/echo"]
plugin = "echo"
"#,
    );
    config(&tenants)
}

/// The fixture built against 0.1.0 runs on this gateway: `$connect` (accept with a
/// subprotocol and a header, `set-context`, reject), every host call with its answers
/// and errors, replies (text, binary, none), route keys, and `$disconnect` (which still
/// reads `get-info`). Its `log` call reaches the gateway's log.
#[tokio::test]
async fn wit_0_1_0_fixture_runs_every_event_and_host_call() {
    let gateway = Gateway::start_binary(&compat_config()).await;

    // $connect: accepts, choosing the first subprotocol offered, with its header; the
    // context it set is kept.
    let mut request = gateway
        .url("/demo/compat/general?ctx=alpha&q=1")
        .into_client_request()
        .unwrap();
    let headers = request.headers_mut();
    headers.insert("sec-websocket-protocol", "v1, v2".parse().unwrap());
    headers.insert("user-agent", "compat-test/0.1".parse().unwrap());
    let (mut a, response) = tokio_tungstenite::connect_async(request).await.unwrap();
    assert_eq!(response.headers()["x-compat"], "0.1.0");
    assert_eq!(response.headers()["sec-websocket-protocol"], "v1");

    // get-info: every field of connection-info.
    send_text(&mut a, "info").await;
    let info = recv_json(&mut a).await;
    let a_id = info["id"].as_str().unwrap().to_owned();
    assert_eq!(info["tenant"], "demo", "{info}");
    assert_eq!(info["route"], "/compat/{room}", "{info}");
    assert_eq!(info["path"], "/compat/general", "{info}");
    assert!(
        info["uri"].as_str().unwrap().ends_with("?ctx=alpha&q=1"),
        "{info}"
    );
    assert_eq!(info["source_ip"], "127.0.0.1", "{info}");
    assert_eq!(
        info["path_params"],
        serde_json::json!([["room", "general"]]),
        "{info}"
    );
    assert_eq!(
        info["query_params"],
        serde_json::json!([["ctx", "alpha"], ["q", "1"]]),
        "{info}"
    );
    assert!(
        info["headers"]
            .as_array()
            .unwrap()
            .iter()
            .any(|pair| pair[0] == "user-agent"),
        "{info}"
    );
    assert_eq!(info["user_agent"], "compat-test/0.1", "{info}");
    assert_eq!(
        info["requested_subprotocols"],
        serde_json::json!(["v1", "v2"]),
        "{info}"
    );
    assert_eq!(info["subprotocol"], "v1", "{info}");
    let connected_at = info["connected_at"].as_u64().unwrap();
    assert!(connected_at > 1_600_000_000_000, "{info}");
    assert!(
        info["last_active_at"].as_u64().unwrap() >= connected_at,
        "{info}"
    );

    // The route key, context, and set-context outside $connect.
    assert_eq!(ask(&mut a, "key").await, "$default");
    assert_eq!(ask(&mut a, "context").await, "ctx:alpha");
    assert_eq!(
        ask(&mut a, "setcontext later").await,
        "error: invalid-argument"
    );
    assert_eq!(ask(&mut a, "context").await, "ctx:alpha");

    // A second and a third connection.
    let mut b = gateway.connect("/demo/compat/other").await;
    send_text(&mut b, "info").await;
    let b_id = recv_json(&mut b).await["id"].as_str().unwrap().to_owned();
    assert_eq!(ask(&mut b, "context").await, "ctx:-");
    assert_eq!(ask(&mut a, &format!("context {b_id}")).await, "ctx:-");
    let mut watcher = gateway.connect("/demo/compat/watch").await;
    send_text(&mut watcher, "info").await;
    let watcher_id = recv_json(&mut watcher).await["id"]
        .as_str()
        .unwrap()
        .to_owned();

    // list, with each filter.
    let mut all = [a_id.clone(), b_id.clone(), watcher_id.clone()];
    all.sort();
    assert_eq!(ask(&mut a, "list").await, all.join(","));
    assert_eq!(
        ask(&mut a, "list route=/compat/{room}").await,
        all.join(",")
    );
    assert_eq!(ask(&mut a, "list path=/compat/general").await, a_id);
    assert_eq!(ask(&mut a, "list path=/nowhere").await, "");

    // send, text and binary; errors for an unknown id.
    assert_eq!(ask(&mut a, &format!("send {b_id} hi")).await, "ok");
    assert_eq!(recv_text(&mut b).await, "hi");
    assert_eq!(ask(&mut a, &format!("sendbin {b_id} raw")).await, "ok");
    assert_eq!(recv(&mut b).await, Message::binary(b"raw".to_vec()));
    assert_eq!(ask(&mut a, "send nobody x").await, "error: gone");
    assert_eq!(ask(&mut a, "info nobody").await, "error: gone");
    assert_eq!(ask(&mut a, "context nobody").await, "error: gone");

    // broadcast: everyone but the sender.
    assert_eq!(ask(&mut a, "broadcast all-hands").await, "2");
    assert_eq!(recv_text(&mut b).await, "all-hands");
    assert_eq!(recv_text(&mut watcher).await, "all-hands");

    // config and log.
    assert_eq!(ask(&mut a, "config greeting").await, "hello");
    assert_eq!(ask(&mut a, "config missing").await, "none");
    let all_config = ask(&mut a, "config-all").await;
    let pairs: Vec<&str> = all_config.split(';').collect();
    let color = pairs.iter().position(|p| *p == "color=blue");
    let greeting = pairs.iter().position(|p| *p == "greeting=hello");
    assert!(
        color.is_some() && color < greeting,
        "sorted by key: {all_config}"
    );
    assert_eq!(ask(&mut a, "log warn compat-fixture-logged").await, "ok");
    gateway
        .logs
        .wait_for("with the fixture's log call", |line| {
            line.contains("compat-fixture-logged") && line.contains("WARN")
        })
        .await;

    // Replies: binary echo, binary from text, none.
    send_binary(&mut a, vec![1, 2, 3]).await;
    assert_eq!(recv(&mut a).await, Message::binary(vec![1, 2, 3]));
    send_text(&mut a, "binary xyz").await;
    assert_eq!(recv(&mut a).await, Message::binary(b"xyz".to_vec()));
    send_text(&mut a, "silent").await;
    assert_eq!(
        ask(&mut a, "after silence").await,
        "after silence",
        "no reply to `silent`"
    );

    // disconnect: a reserved code is refused; a valid one closes b, whose $disconnect
    // still reads get-info and broadcasts what it saw.
    assert_eq!(
        ask(&mut a, &format!("kick {b_id} 2000 no")).await,
        "error: invalid-argument"
    );
    send_text(&mut a, &format!("kick {b_id} 4001 bye")).await;
    let frame = expect_close(&mut b).await;
    assert_eq!(
        (u16::from(frame.code), frame.reason.as_str()),
        (4001, "bye")
    );
    let note = format!("disconnected {b_id} 4001 bye info=ok");
    assert_eq!(recv_text(&mut watcher).await, note);
    // The reply to `kick` and the note from b's $disconnect, in either order.
    let mut answers = [recv_text(&mut a).await, recv_text(&mut a).await];
    answers.sort();
    assert_eq!(answers, [note, "ok".to_owned()]);
    assert_eq!(
        ask(&mut a, &format!("send {b_id} late")).await,
        "error: gone"
    );

    // The client closing runs $disconnect too.
    a.close(None).await.unwrap();
    let closed = recv_text(&mut watcher).await;
    assert!(
        closed.starts_with(&format!("disconnected {a_id} 100")),
        "{closed}"
    );
    assert!(closed.ends_with("info=ok"), "{closed}");

    // Route keys from a selection expression.
    let mut keyed = gateway.connect("/demo/keys").await;
    let answer = ask(&mut keyed, r#"{"action":"ping"}"#).await;
    let answer: serde_json::Value = serde_json::from_str(&answer).unwrap();
    assert_eq!(answer["route_key"], "ping");
    let answer = ask(&mut keyed, r#"{"action":"other"}"#).await;
    let answer: serde_json::Value = serde_json::from_str(&answer).unwrap();
    assert_eq!(answer["route_key"], "$default");

    // $connect rejects with the fixture's status, header and body.
    let (status, headers, body) = refusal(gateway.url("/demo/compat/general?reject=403")).await;
    assert_eq!(status, 403);
    assert_eq!(headers["x-compat"], "0.1.0");
    assert_eq!(body, "rejected by the 0.1.0 fixture");

    // The minimal fixture, which imports none of the host API, echoes.
    let mut echo = gateway.connect("/demo/echo").await;
    assert_eq!(ask(&mut echo, "plain echo").await, "plain echo");
    send_binary(&mut echo, vec![9, 8]).await;
    assert_eq!(recv(&mut echo).await, Message::binary(vec![9, 8]));
}

/// Sends a binary message.
async fn send_binary(client: &mut Client, bytes: Vec<u8>) {
    use futures_util::SinkExt;
    client
        .send(Message::binary(bytes))
        .await
        .expect("send failed");
}

/// A config with one plugin on `path`, on route `/r`.
fn one_plugin(path: &str) -> String {
    config(&format!(
        "{}[tenants.demo.routes.\"/r\"]\nplugin = \"bad\"\n",
        plugin("demo", "bad", path, "")
    ))
}

/// Start-up refuses `path`; the error names the config file, the key, the plugin file
/// and each of `expected`.
async fn refused_at_start(path: &str, expected: &[&str]) -> String {
    let (code, stderr) = start_fails(&one_plugin(path)).await;
    assert_ne!(code, 0, "exit code must be non-zero:\n{stderr}");
    for part in ["bad.toml", "tenants.demo.plugins.bad.path", path]
        .iter()
        .chain(expected)
    {
        assert!(
            stderr.contains(part),
            "`{part}` missing from the error:\n{stderr}"
        );
    }
    assert!(
        stderr.contains("To fix: ") && stderr.contains("wit/README.md"),
        "says what to do:\n{stderr}"
    );
    stderr
}

/// A wasi:cli command (a `main` program) exports no handler: refused, saying what it
/// is and how to build a plugin instead.
#[tokio::test]
async fn wit_component_without_the_handler_export_is_refused() {
    let version = wsgate::plugin::wit_version();
    refused_at_start(
        &fixture("no_handler"),
        &[
            "does not export the wsgate:plugin/handler interface",
            &format!("wsgate:plugin/handler@{version}"),
            "`wasi:cli/run@0.2",
            "it is a command",
            "crate-type",
            "cdylib",
            "export!",
            "--target wasm32-wasip2",
        ],
    )
    .await;
}

/// A component built against `wsgate:plugin@9.0.0`: refused, naming the version found
/// and the one supported.
#[tokio::test]
async fn wit_component_of_an_unknown_world_version_is_refused() {
    let version = wsgate::plugin::wit_version();
    refused_at_start(
        &fixture("unknown_version"),
        &[
            "built against wsgate:plugin@9.0.0",
            "`wsgate:plugin/handler@9.0.0`",
            &format!("this gateway supports wsgate:plugin@{version}"),
            &format!("rebuild the plugin against the wit/ of this gateway release (wsgate:plugin@{version}"),
            "wsgate-sdk",
        ],
    )
    .await;
}

/// A component importing an interface the gateway does not provide: refused, naming
/// the import and what a plugin may import.
#[tokio::test]
async fn wit_component_with_a_missing_import_is_refused() {
    refused_at_start(
        &fixture("extra_import"),
        &[
            "imports `fixture:extra/store`, which this gateway does not provide",
            "may import only the wsgate:plugin@",
            "remove the import",
        ],
    )
    .await;
}

/// `wsgate check` reports the three in one run, each on its own line naming the config
/// file, the key and the plugin file, and loads the 0.1.0 fixtures.
#[tokio::test]
async fn wit_check_reports_each_bad_component() {
    let dir = tempfile::tempdir().unwrap();
    let mut tenants = String::new();
    for (name, stem) in [
        ("compat", "route_handler"),
        ("echo", "echo"),
        ("command", "no_handler"),
        ("future", "unknown_version"),
        ("extra", "extra_import"),
    ] {
        tenants.push_str(&plugin("demo", name, &fixture(stem), ""));
        tenants.push_str(&format!(
            "[tenants.demo.routes.\"/{name}\"]\nplugin = \"{name}\"\n"
        ));
    }
    let file = dir.path().join("wsgate.toml");
    std::fs::write(&file, config(&tenants)).unwrap();
    let (code, stdout, stderr) = run_binary(&[
        OsStr::new("check"),
        OsStr::new("--config"),
        file.as_os_str(),
    ])
    .await;
    assert_eq!(code, 1, "stdout:\n{stdout}\nstderr:\n{stderr}");
    for (name, stem, reason) in [
        (
            "command",
            "no_handler",
            "does not export the wsgate:plugin/handler",
        ),
        (
            "future",
            "unknown_version",
            "built against wsgate:plugin@9.0.0",
        ),
        ("extra", "extra_import", "imports `fixture:extra/store`"),
    ] {
        let prefix = format!(
            "{}: tenants.demo.plugins.{name}.path: {}: ",
            file.display(),
            fixture(stem)
        );
        assert!(
            stderr
                .lines()
                .any(|line| line.starts_with(&prefix) && line.contains(reason)),
            "`{prefix}…{reason}` missing:\n{stderr}"
        );
    }
    assert!(
        stdout.contains("3 problems: 1 tenant, 5 routes, 5 plugins"),
        "{stdout}"
    );
}
