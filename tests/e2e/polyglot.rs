//! Plugins in JavaScript (componentize-js) and Python (componentize-py), built by
//! `scripts/build-polyglot.sh` from `plugins/js` and `plugins/py`: their echo and chat
//! pass the Rust plugins' tests, and the chat's frames are the Rust chat's, byte for
//! byte. One gateway per language: each component is 12–18 MB and its first
//! compilation takes seconds, so every test of a language shares it.

use std::path::PathBuf;

use crate::harness::{Gateway, config, plugin, recv_text, run_binary, send_text};
use crate::{chat, echo, plugins};

/// The four components, where `scripts/build-polyglot.sh` writes them.
fn component(name: &str) -> String {
    let path = PathBuf::from(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../target/plugins/polyglot"
    ))
    .join(format!("{name}.wasm"));
    assert!(
        path.is_file(),
        "{} is missing: scripts/build-polyglot.sh builds it (scripts/test.sh runs that first)",
        path.display()
    );
    path.to_str().unwrap().to_owned()
}

/// As examples/polyglot.toml: interpreters start with 9–13 MiB of linear memory.
const LIMITS: &str = r#"limits = { memory_bytes = 67108864, pool_memory_bytes = 33554432, pool_size = 64, timeout = "1s" }"#;

/// Tenant `demo` with `lang`'s echo on `/echo-{lang}` and chat on `/chat-{lang}/{room}`,
/// and the Rust chat on `/chat/{room}` to compare with.
fn gateway_config(lang: &str) -> String {
    let mut tenants = plugin("demo", "echo", &component(&format!("echo_{lang}")), LIMITS);
    tenants.push_str(&plugin(
        "demo",
        "chat",
        &component(&format!("chat_{lang}")),
        LIMITS,
    ));
    tenants.push_str(&plugin("demo", "rust-chat", plugins::CHAT, ""));
    tenants.push_str(&format!(
        "[tenants.demo.routes.\"/echo-{lang}\"]\nplugin = \"echo\"\n\
         [tenants.demo.routes.\"/chat-{lang}/{{room}}\"]\nplugin = \"chat\"\n\
         [tenants.demo.routes.\"/chat/{{room}}\"]\nplugin = \"rust-chat\"\n"
    ));
    config(&tenants)
}

async fn language(lang: &str) {
    let gateway = Gateway::start(&gateway_config(lang)).await;
    echo::text_and_binary_come_back(&gateway, &format!("/demo/echo-{lang}")).await;
    chat::two_rooms(&gateway, &format!("/demo/chat-{lang}")).await;
    chat::decoded_room_names(&gateway, &format!("/demo/chat-{lang}")).await;
    same_frames_as_rust(&gateway, &format!("/demo/chat-{lang}")).await;
}

/// A join, a message with characters JSON escapes and a leave, through `prefix`'s chat
/// and through the Rust one: the frames are the same once the ids are.
async fn same_frames_as_rust(gateway: &Gateway, prefix: &str) {
    let mut frames = Vec::new();
    for prefix in [prefix, "/demo/chat"] {
        let mut a = gateway
            .connect(&format!("{prefix}/r%C3%B6om%20%22x%22"))
            .await;
        let mut b = gateway
            .connect(&format!("{prefix}/r%C3%B6om%20%22x%22"))
            .await;
        let join = recv_text(&mut a).await;
        send_text(
            &mut b,
            "quote \" backslash \\ é ✓ \n \u{1} \u{7f} </script>",
        )
        .await;
        let message = recv_text(&mut a).await;
        b.close(None).await.unwrap();
        let leave = recv_text(&mut a).await;
        let id: serde_json::Value = serde_json::from_str(&join).unwrap();
        let id = id["connection"].as_str().unwrap().to_owned();
        frames.push(
            [join, message, leave]
                .map(|frame| frame.replace(&id, "<id>"))
                .to_vec(),
        );
    }
    assert_eq!(frames[0], frames[1], "{prefix} against the Rust chat");
}

#[tokio::test]
async fn javascript_echo_and_chat_behave_as_the_rust_ones() {
    language("js").await;
}

#[tokio::test]
async fn python_echo_and_chat_behave_as_the_rust_ones() {
    language("py").await;
}

/// The example config serves them as they are built (after the tests above, its
/// components come from the compile cache).
#[tokio::test]
async fn the_polyglot_example_config_checks() {
    for name in ["echo_js", "chat_js", "echo_py", "chat_py"] {
        component(name);
    }
    let example = concat!(env!("CARGO_MANIFEST_DIR"), "/../examples/polyglot.toml");
    let (code, stdout, stderr) =
        run_binary(&["check".as_ref(), "--config".as_ref(), example.as_ref()]).await;
    assert_eq!(code, 0, "{stdout}\n{stderr}");
    for route in ["/echo-js", "/chat-js/{room}", "/echo-py", "/chat-py/{room}"] {
        assert!(stdout.contains(route), "{route} in:\n{stdout}");
    }
}
