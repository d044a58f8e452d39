//! The `wsgate-bench` binary starts and offers every mode `scripts/bench.sh` runs. Being
//! an integration test, it also makes `cargo test` build the binary, so the test
//! command's benchmark smoke runs without a build of its own.

use std::process::Command;

/// Every mode the scenarios use is listed by `--help`.
#[test]
fn every_mode_is_offered() {
    let output = Command::new(env!("CARGO_BIN_EXE_wsgate-bench"))
        .arg("--help")
        .output()
        .expect("running wsgate-bench");
    assert!(output.status.success());
    let help = String::from_utf8_lossy(&output.stdout);
    for mode in [
        "load",
        "churn",
        "idle",
        "broadcast",
        "manage",
        "startup",
        "echo-server",
        "http-server",
    ] {
        assert!(help.contains(mode), "{mode} missing from:\n{help}");
    }
}
