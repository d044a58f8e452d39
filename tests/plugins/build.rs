//! Builds every plugin for wasm32-wasip2 with a nested cargo, into `target/plugins` (the
//! outer cargo holds the lock on the usual directories), and writes one constant per
//! plugin with the path of its `.wasm` file.
//!
//! This is the one build of the plugins: the tests get their paths from here, and
//! `scripts/build-plugins.sh` (for the example and the benchmarks) just builds this
//! crate. Plugins are built with LTO, one codegen unit and symbols stripped: the
//! component is a third smaller, which makes its first compilation by the gateway
//! faster (50 copies of echo compile in 1.9 s instead of 2.1 s). These settings reach
//! the nested build only, so the gateway's own build stays quick to compile.

use std::env;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;

/// (constant, package, file stem)
const PLUGINS: &[(&str, &str, &str)] = &[
    ("ECHO", "echo", "echo"),
    ("CONNECTION_ID", "connection-id", "connection_id"),
    ("CHAT", "chat", "chat"),
    ("AUTH", "auth", "auth"),
    ("PANIC", "test-panic", "test_panic"),
    ("PROBE", "test-probe", "test_probe"),
    ("HOSTILE", "test-hostile", "test_hostile"),
    ("FANOUT", "test-fanout", "test_fanout"),
    ("FETCH", "test-fetch", "test_fetch"),
    ("INTEGRATION", "integration", "integration"),
    ("BACKEND_AUTH", "backend-auth", "backend_auth"),
];

fn main() {
    let manifest_dir = PathBuf::from(env::var_os("CARGO_MANIFEST_DIR").unwrap());
    let workspace = manifest_dir.join("../..").canonicalize().unwrap();
    for watched in ["plugins", "plugin-sdk", "wit", "Cargo.toml", "Cargo.lock"] {
        println!(
            "cargo:rerun-if-changed={}",
            workspace.join(watched).display()
        );
    }
    let target_dir = match env::var_os("CARGO_TARGET_DIR") {
        Some(dir) => PathBuf::from(dir).join("plugins"),
        None => workspace.join("target/plugins"),
    };

    let cargo = env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.current_dir(&workspace)
        .args([
            "build",
            "--release",
            "--target",
            "wasm32-wasip2",
            "--target-dir",
        ])
        .arg(&target_dir)
        .env("CARGO_PROFILE_RELEASE_LTO", "true")
        .env("CARGO_PROFILE_RELEASE_CODEGEN_UNITS", "1")
        .env("CARGO_PROFILE_RELEASE_STRIP", "true")
        // Flags meant for the host build must not leak into the wasm one.
        .env_remove("CARGO_ENCODED_RUSTFLAGS")
        .env_remove("RUSTFLAGS")
        .env_remove("CARGO_BUILD_TARGET");
    for (_, package, _) in PLUGINS {
        cmd.args(["-p", package]);
    }
    let status = cmd
        .status()
        .expect("running cargo to build the test plugins");
    assert!(
        status.success(),
        "building the plugins for wasm32-wasip2 failed (see above). If the target is missing, \
         run `rustup target add wasm32-wasip2` or scripts/test.sh, which does it for you."
    );

    let release = target_dir.join("wasm32-wasip2/release");
    let mut out = String::new();
    for (constant, package, stem) in PLUGINS {
        let path = release.join(format!("{stem}.wasm"));
        assert!(
            Path::new(&path).is_file(),
            "{} was not built",
            path.display()
        );
        writeln!(out, "/// The `{package}` plugin, built for wasm32-wasip2.").unwrap();
        writeln!(
            out,
            "pub const {constant}: &str = {:?};",
            path.display().to_string()
        )
        .unwrap();
    }
    let dest = PathBuf::from(env::var_os("OUT_DIR").unwrap()).join("plugins.rs");
    std::fs::write(dest, out).unwrap();
}
