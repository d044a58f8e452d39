//! `wsgate check --config FILE`: the config validated and every plugin compiled and
//! linked without serving; a table of the plugins, and every problem in one run.

use std::ffi::OsStr;
use std::path::Path;

use crate::harness::{config, plugin, run_binary};
use crate::plugins;

/// Runs `wsgate check` on `text`, written as `dir/wsgate.toml`.
async fn check(dir: &Path, text: &str) -> (i32, String, String) {
    let path = dir.join("wsgate.toml");
    std::fs::write(&path, text).unwrap();
    run_binary(&[
        OsStr::new("check"),
        OsStr::new("--config"),
        path.as_os_str(),
    ])
    .await
}

/// examples/wsgate.toml with its plugin paths pointing at the built plugins.
fn example() -> String {
    let mut text = include_str!("../../examples/wsgate.toml").to_owned();
    for (stem, path) in [
        ("echo", plugins::ECHO),
        ("connection_id", plugins::CONNECTION_ID),
        ("chat", plugins::CHAT),
        ("auth", plugins::AUTH),
        ("integration", plugins::INTEGRATION),
    ] {
        let example_path = format!("\"../target/plugins/wasm32-wasip2/release/{stem}.wasm\"");
        text = text.replace(&example_path, &format!("{path:?}"));
    }
    assert!(
        !text.contains("../target/plugins"),
        "a plugin of the example is not replaced:\n{text}"
    );
    text
}

/// The example config passes: exit 0, nothing on stderr, a row per plugin with its
/// size, compile time and origin, and the summary. A second run reads every component
/// from the compile cache the first one filled.
#[tokio::test]
async fn example_config_passes() {
    let dir = tempfile::tempdir().unwrap();
    let (code, stdout, stderr) = check(dir.path(), &example()).await;
    assert_eq!(code, 0, "stdout:\n{stdout}\nstderr:\n{stderr}");
    assert!(!stderr.contains("wsgate.toml:"), "a problem:\n{stderr}");
    let header = stdout.lines().next().unwrap();
    for column in ["tenant", "plugin", "size", "compile", "from", "routes"] {
        assert!(header.contains(column), "`{column}` missing:\n{stdout}");
    }
    for row in [
        "demo    echo ",
        "acme    echo ",
        "demo    auth ",
        "demo    aws-integration ",
    ] {
        assert!(stdout.contains(row), "`{row}` missing:\n{stdout}");
    }
    assert!(
        stdout.contains("/private ($connect)"),
        "routes per plugin:\n{stdout}"
    );
    // The three integration plugins are one component: compiled (or read) once.
    assert!(
        stdout.contains("same as demo.aws-integration"),
        "shared component:\n{stdout}"
    );
    assert!(
        stdout.ends_with("OK: 2 tenants, 8 routes, 8 plugins\n"),
        "summary:\n{stdout}"
    );

    let (code, again, _) = check(dir.path(), &example()).await;
    assert_eq!(code, 0);
    assert!(
        !again.contains("compiled"),
        "a component was compiled again:\n{again}"
    );
    assert!(again.contains(" cache "), "read from the cache:\n{again}");
}

/// Independent problems (an unknown plugin, a bad route template, a bad limit, a
/// missing plugin file, a file that is not a component) are all reported by one run,
/// each on its own `file: key: reason` line, and the exit status is 1.
#[tokio::test]
async fn every_problem_is_reported() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("text.wasm"), "not wasm at all").unwrap();
    let mut tenants = plugin("demo", "echo", plugins::ECHO, "");
    tenants.push_str(&plugin("demo", "text", "text.wasm", ""));
    tenants.push_str(&plugin("demo", "gone", "gone.wasm", ""));
    tenants.push_str(&plugin(
        "demo",
        "slow",
        plugins::ECHO,
        "limits = { timeout = \"0s\" }",
    ));
    tenants.push_str(
        "[tenants.demo.routes.\"/echo\"]\nplugin = \"nope\"\n\
         [tenants.demo.routes.\"/a-{x}\"]\nplugin = \"echo\"\n",
    );
    let (code, stdout, stderr) = check(dir.path(), &config(&tenants)).await;
    assert_eq!(code, 1, "stdout:\n{stdout}\nstderr:\n{stderr}");
    let file = dir.path().join("wsgate.toml");
    let problems: Vec<&str> = stderr
        .lines()
        .filter(|line| line.starts_with(&format!("{}: ", file.display())))
        .collect();
    for (key, reason) in [
        ("tenants.demo.routes.\"/echo\".plugin", "no plugin `nope`"),
        ("tenants.demo.routes.\"/a-{x}\"", ""),
        ("tenants.demo.plugins.slow.limits.timeout", "more than zero"),
        ("tenants.demo.plugins.gone.path", "does not exist"),
        (
            "tenants.demo.plugins.text.path",
            "not a valid WebAssembly component",
        ),
    ] {
        let prefix = format!("{}: {key}: ", file.display());
        assert!(
            problems
                .iter()
                .any(|line| line.starts_with(&prefix) && line.contains(reason)),
            "`{prefix}…{reason}` missing:\n{stderr}"
        );
    }
    assert_eq!(problems.len(), 5, "each problem once:\n{stderr}");
    assert!(
        stdout.ends_with("5 problems: 1 tenant, 2 routes, 4 plugins\n"),
        "{stdout}"
    );
    assert!(
        stdout.contains("FAILED"),
        "failed plugins marked:\n{stdout}"
    );
}

/// A file that is not TOML stops at the parser's error; a missing `--config` is a
/// usage error (exit status 2).
#[tokio::test]
async fn unreadable_config_and_usage_errors() {
    let dir = tempfile::tempdir().unwrap();
    let (code, _, stderr) = check(dir.path(), "[listen\n").await;
    assert_eq!(code, 1, "{stderr}");
    assert!(
        stderr.contains("wsgate.toml: ") && stderr.contains("line 1"),
        "{stderr}"
    );
    let (code, _, stderr) = run_binary(&[OsStr::new("check")]).await;
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("--config"), "{stderr}");
}
