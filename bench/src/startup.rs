//! Start-up time with many plugins: the time from spawning the gateway to its
//! `listening` line, first with an empty compile cache (cold), then with the cache the
//! cold start filled (warm).
//!
//! The plugins are copies of one component made distinct by a custom section holding
//! their number, so each has its own content hash and is compiled on its own, as 50
//! different plugins would be.

use std::fmt::Write as _;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

/// Cold and warm start-up times.
pub struct StartupReport {
    /// Plugins configured.
    pub plugins: usize,
    /// Start with an empty cache.
    pub cold: Duration,
    /// Fastest of the starts with a filled cache.
    pub warm: Duration,
}

impl StartupReport {
    /// Prints the report.
    pub fn print(&self, label: &str, json: bool) {
        let (cold, warm) = (self.cold.as_secs_f64(), self.warm.as_secs_f64());
        if json {
            println!(
                "{}",
                serde_json::json!({
                    "label": label, "unit": "startup", "plugins": self.plugins,
                    "cold_s": cold, "warm_s": warm, "cold_over_warm": cold / warm,
                })
            );
        } else {
            println!(
                "{label}: {} plugins, cold start {cold:.3} s, warm start {warm:.3} s ({:.1}x faster warm)",
                self.plugins,
                cold / warm
            );
        }
    }
}

/// Appends a custom section (id 0) named `wsgate-bench` holding `n` to a component.
fn distinct(component: &[u8], n: usize) -> Vec<u8> {
    fn leb128(mut value: usize, out: &mut Vec<u8>) {
        loop {
            let byte = (value & 0x7f) as u8;
            value >>= 7;
            if value == 0 {
                out.push(byte);
                return;
            }
            out.push(byte | 0x80);
        }
    }
    let name = b"wsgate-bench";
    let payload = n.to_le_bytes();
    let mut contents = Vec::new();
    leb128(name.len(), &mut contents);
    contents.extend_from_slice(name);
    contents.extend_from_slice(&payload);
    let mut out = component.to_vec();
    out.push(0);
    leb128(contents.len(), &mut out);
    out.extend_from_slice(&contents);
    out
}

/// Spawns the gateway and times it to its `listening ws=` line, then stops it.
fn time_start(gateway: &Path, config: &Path) -> anyhow::Result<Duration> {
    let started = Instant::now();
    let mut child = Command::new(gateway)
        .args(["serve", "--config"])
        .arg(config)
        .env("WSGATE_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .with_context(|| format!("starting {}", gateway.display()))?;
    let stdout = child.stdout.take().expect("stdout is piped");
    let mut listening = None;
    for line in BufReader::new(stdout).lines() {
        if line?.starts_with("listening ws=") {
            listening = Some(started.elapsed());
            break;
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    listening.context("the gateway exited before listening; its errors are above")
}

/// Writes `plugins` distinct copies of `plugin` and a config routing to each, then times
/// one cold and three warm starts.
pub fn run(gateway: &Path, plugin: &Path, plugins: usize) -> anyhow::Result<StartupReport> {
    if plugins == 0 {
        bail!("--plugins must be at least 1");
    }
    let component =
        std::fs::read(plugin).with_context(|| format!("reading {}", plugin.display()))?;
    let dir = tempfile::tempdir()?;
    let cache = dir.path().join("cache");
    let mut config = format!(
        "[listen]\nws = \"127.0.0.1:0\"\nadmin = \"127.0.0.1:0\"\n\n[compile]\ncache_dir = {:?}\n",
        cache.display().to_string()
    );
    for n in 0..plugins {
        let file = dir.path().join(format!("plugin{n}.wasm"));
        std::fs::write(&file, distinct(&component, n))?;
        write!(
            config,
            "\n[tenants.bench.plugins.p{n}]\npath = \"plugin{n}.wasm\"\n[tenants.bench.routes.\"/p{n}\"]\nplugin = \"p{n}\"\n"
        )?;
    }
    let config_path = dir.path().join("wsgate.toml");
    std::fs::write(&config_path, config)?;

    let cold = time_start(gateway, &config_path)?;
    eprintln!("  cold start: {:.3} s", cold.as_secs_f64());
    let mut warm = Duration::MAX;
    for _ in 0..3 {
        let took = time_start(gateway, &config_path)?;
        eprintln!("  warm start: {:.3} s", took.as_secs_f64());
        warm = warm.min(took);
    }
    Ok(StartupReport {
        plugins,
        cold,
        warm,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_custom_section_is_appended_with_lengths_in_leb128() {
        let out = distinct(b"\0asm", 1);
        assert_eq!(&out[..4], b"\0asm");
        assert_eq!(out[4], 0, "custom section id");
        assert_eq!(out[5] as usize, 1 + 12 + 8, "section size");
        assert_eq!(out[6] as usize, 12, "name length");
        assert_eq!(&out[7..19], b"wsgate-bench");
        assert_eq!(out.len(), 19 + 8);
    }
}
