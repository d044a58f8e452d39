//! A config the gateway cannot use stops start-up with a non-zero exit and a message
//! naming the file, the key or plugin, and the reason.

use crate::harness::{config, plugin, start_fails};
use crate::plugins;

fn echo_tenant(path: &str) -> String {
    config(&format!(
        "{}[tenants.demo.routes.\"/echo\"]\nplugin = \"echo\"\n",
        plugin("demo", "echo", path, "")
    ))
}

async fn refused(text: &str, expected: &[&str]) {
    let (code, stderr) = start_fails(text).await;
    assert_ne!(code, 0, "exit code must be non-zero");
    for part in expected {
        assert!(
            stderr.contains(part),
            "`{part}` missing from the error:\n{stderr}"
        );
    }
    assert!(stderr.contains("bad.toml"), "the file is named:\n{stderr}");
}

/// Broken TOML names the line.
#[tokio::test]
async fn toml_syntax_error() {
    refused("[listen\nws = 1\n", &["line 1"]).await;
}

/// An unknown key is named.
#[tokio::test]
async fn unknown_key() {
    let text = format!(
        "{}\n[tenants.demo.limits]\nmax_mesage_bytes = 10\n",
        echo_tenant(plugins::ECHO)
    );
    refused(&text, &["unknown field", "max_mesage_bytes"]).await;
}

/// Two templates matching the same paths are refused, naming both.
#[tokio::test]
async fn duplicate_route() {
    let text = format!(
        "{}\n[tenants.demo.routes.\"/chat/{{a}}\"]\nplugin = \"echo\"\n[tenants.demo.routes.\"/chat/{{b}}\"]\nplugin = \"echo\"\n",
        echo_tenant(plugins::ECHO)
    );
    refused(
        &text,
        &[
            "tenants.demo.routes.\"/chat/{b}\"",
            "conflicts with route `/chat/{a}`",
        ],
    )
    .await;
}

/// A missing plugin file is named with its key.
#[tokio::test]
async fn missing_plugin_file() {
    refused(
        &echo_tenant("/nonexistent/echo.wasm"),
        &[
            "tenants.demo.plugins.echo.path",
            "/nonexistent/echo.wasm",
            "does not exist",
        ],
    )
    .await;
}

/// A file that is not a component is refused with its key.
#[tokio::test]
async fn file_is_not_a_component() {
    let dir = tempfile::tempdir().unwrap();
    let text_file = dir.path().join("plugin.wasm");
    std::fs::write(&text_file, "not wasm at all").unwrap();
    refused(
        &echo_tenant(text_file.to_str().unwrap()),
        &[
            "tenants.demo.plugins.echo.path",
            "not a valid WebAssembly component",
        ],
    )
    .await;
    // A core module is not a component either.
    std::fs::write(&text_file, b"\0asm\x01\0\0\0").unwrap();
    refused(
        &echo_tenant(text_file.to_str().unwrap()),
        &[
            "tenants.demo.plugins.echo.path",
            "not a valid WebAssembly component",
        ],
    )
    .await;
}

/// A component that does not implement the route-handler world is refused.
#[tokio::test]
async fn component_without_the_handler() {
    let dir = tempfile::tempdir().unwrap();
    let empty = dir.path().join("empty.wasm");
    // The smallest valid component: magic, component version, layer.
    std::fs::write(&empty, b"\0asm\x0d\0\x01\0").unwrap();
    refused(
        &echo_tenant(empty.to_str().unwrap()),
        &[
            "tenants.demo.plugins.echo.path",
            "does not export the wsgate:plugin/handler",
        ],
    )
    .await;
}
