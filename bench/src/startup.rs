//! Start-up time with many plugins: the time from spawning the gateway to its
//! `listening` line, first with an empty compile cache (cold), then with the cache the
//! cold start filled (warm).
//!
//! The plugins are copies of the given components, taken in turn, made distinct by a
//! custom section holding their number, so each has its own content hash and is
//! compiled on its own, as different plugins would be. Copies share every function,
//! which the gateway's function cache (`compile.function_cache`) compiles once; so the
//! cold start is timed twice, with that cache (the default) and without it (what
//! plugins sharing no code at all would cost).

use std::fmt::Write as _;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

/// Cold and warm start-up times.
pub struct StartupReport {
    /// Plugins configured.
    pub plugins: usize,
    /// Distinct components the plugins were copied from.
    pub components: usize,
    /// Start with an empty cache.
    pub cold: Duration,
    /// Start with an empty cache and the function cache off.
    pub cold_unshared: Duration,
    /// Fastest of the starts with a filled cache.
    pub warm: Duration,
}

impl StartupReport {
    /// Prints the report.
    pub fn print(&self, label: &str, json: bool) {
        let (cold, warm) = (self.cold.as_secs_f64(), self.warm.as_secs_f64());
        let unshared = self.cold_unshared.as_secs_f64();
        if json {
            println!(
                "{}",
                serde_json::json!({
                    "label": label, "unit": "startup", "plugins": self.plugins,
                    "components": self.components, "cold_s": cold,
                    "cold_unshared_s": unshared, "warm_s": warm, "cold_over_warm": cold / warm,
                })
            );
        } else {
            println!(
                "{label}: {} plugins from {} component(s), cold start {cold:.3} s \
                 ({unshared:.3} s without the function cache), warm start {warm:.3} s \
                 ({:.1}x faster warm)",
                self.plugins,
                self.components,
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

/// The config for `plugins` plugins in `dir`, with its compile cache in `cache`.
fn config(dir: &Path, cache: &str, function_cache: bool, plugins: usize) -> String {
    let mut config = format!(
        "[listen]\nws = \"127.0.0.1:0\"\nadmin = \"127.0.0.1:0\"\n\n[compile]\n\
         cache_dir = {:?}\nfunction_cache = {function_cache}\n",
        dir.join(cache).display().to_string()
    );
    for n in 0..plugins {
        let _ = write!(
            config,
            "\n[tenants.bench.plugins.p{n}]\npath = \"plugin{n}.wasm\"\n[tenants.bench.routes.\"/p{n}\"]\nplugin = \"p{n}\"\n"
        );
    }
    config
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

/// Writes `plugins` distinct copies of `components` (taken in turn) and a config
/// routing to each, then times a cold start without the function cache, one with it,
/// and three warm starts.
pub fn run(
    gateway: &Path,
    components: &[PathBuf],
    plugins: usize,
) -> anyhow::Result<StartupReport> {
    if plugins == 0 || components.is_empty() {
        bail!("--plugins must be at least 1, with at least one --plugin");
    }
    let sources = components
        .iter()
        .map(|path| std::fs::read(path).with_context(|| format!("reading {}", path.display())))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let dir = tempfile::tempdir()?;
    for n in 0..plugins {
        let file = dir.path().join(format!("plugin{n}.wasm"));
        std::fs::write(&file, distinct(&sources[n % sources.len()], n))?;
    }
    let write_config = |name: &str, cache: &str, function_cache: bool| {
        let path = dir.path().join(name);
        std::fs::write(&path, config(dir.path(), cache, function_cache, plugins)).map(|()| path)
    };
    let unshared_config = write_config("unshared.toml", "cache-unshared", false)?;
    let config_path = write_config("wsgate.toml", "cache", true)?;

    let cold_unshared = time_start(gateway, &unshared_config)?;
    eprintln!(
        "  cold start without the function cache: {:.3} s",
        cold_unshared.as_secs_f64()
    );
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
        components: sources.len().min(plugins),
        cold,
        cold_unshared,
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
