//! `wsgate check`: a config validated and every plugin compiled and linked against the
//! world, as serving would, without serving. Every problem is collected, not only the
//! first, so one run lists all there is to fix.
//!
//! ```no_run
//! # fn demo(runtime: tokio::runtime::Handle) -> Result<(), Box<dyn std::error::Error>> {
//! let (config, problems) = wsgate::Config::load_all("wsgate.toml".as_ref())?;
//! let report = wsgate::check::check(&config, problems, runtime)?;
//! print!("{}", report.table());
//! for problem in &report.problems {
//!     eprintln!("{}", wsgate::check::problem_line(problem));
//! }
//! # Ok(())
//! # }
//! ```

use std::collections::HashMap;
use std::time::{Duration, Instant};

use sha2::{Digest as _, Sha256};
use wasmtime::component::Component;

use crate::config::{Config, ConfigError, PluginConfig, TenantConfig};
use crate::plugin::{Digest, EngineError, Host, Origin, PluginScope};

/// What a check found: the config's tenants, routes and plugins, and every problem.
#[derive(Debug)]
pub struct Report {
    /// How many tenants the config has.
    pub tenants: usize,
    /// How many routes, across tenants.
    pub routes: usize,
    /// Each plugin of each tenant, in config order (tenants, then plugins, by name).
    pub plugins: Vec<PluginRow>,
    /// Every problem: the config's own, then the plugins' and TLS's.
    pub problems: Vec<ConfigError>,
}

/// One plugin of one tenant, as the check loaded it.
#[derive(Debug)]
pub struct PluginRow {
    /// The tenant id.
    pub tenant: String,
    /// The plugin's name in the tenant.
    pub plugin: String,
    /// The routes that send events to it: a template, with the route keys it serves
    /// when it serves only some (`/private ($connect)`).
    pub routes: Vec<String>,
    /// The component file's size, when it could be read.
    pub bytes: Option<u64>,
    /// How its component was made ready; `None` when it failed (see the problems).
    pub load: Option<Load>,
}

/// How a plugin's component was made ready.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Load {
    /// Compiled, or read back from the compile cache, taking `took`.
    Ready {
        /// Compiled or from the cache.
        origin: Origin,
        /// How long compiling or reading it took.
        took: Duration,
    },
    /// The same bytes as the plugin named `tenant.plugin` above: compiled once, as
    /// serving does.
    SameAs(String),
}

impl Report {
    /// Whether the config can be served: no problem was found.
    pub fn ok(&self) -> bool {
        self.problems.is_empty()
    }

    /// The plugins as a table (tenant, plugin, size, compile time, where the compiled
    /// component came from, routes), then a one-line summary.
    pub fn table(&self) -> String {
        let mut rows = vec![[
            "tenant".to_owned(),
            "plugin".to_owned(),
            "size".to_owned(),
            "compile".to_owned(),
            "from".to_owned(),
            "routes".to_owned(),
        ]];
        for row in &self.plugins {
            let (took, from) = match &row.load {
                Some(Load::Ready { origin, took }) => (duration(*took), origin.as_str().to_owned()),
                Some(Load::SameAs(other)) => ("-".to_owned(), format!("same as {other}")),
                None => ("-".to_owned(), "FAILED".to_owned()),
            };
            rows.push([
                row.tenant.clone(),
                row.plugin.clone(),
                row.bytes.map_or_else(|| "-".to_owned(), size),
                took,
                from,
                row.routes.join(", "),
            ]);
        }
        let mut widths = [0; 6];
        for row in &rows {
            for (width, cell) in widths.iter_mut().zip(row) {
                *width = (*width).max(cell.chars().count());
            }
        }
        let mut out = String::new();
        for row in &rows {
            let mut line = String::new();
            for (i, (cell, width)) in row.iter().zip(widths).enumerate() {
                if i > 0 {
                    line.push_str("  ");
                }
                line.push_str(cell);
                line.extend(std::iter::repeat_n(
                    ' ',
                    width.saturating_sub(cell.chars().count()),
                ));
            }
            out.push_str(line.trim_end());
            out.push('\n');
        }
        let verdict = match self.problems.len() {
            0 => "OK".to_owned(),
            1 => "1 problem".to_owned(),
            n => format!("{n} problems"),
        };
        out.push_str(&format!(
            "\n{verdict}: {}, {}, {}\n",
            count(self.tenants, "tenant"),
            count(self.routes, "route"),
            count(self.plugins.len(), "plugin")
        ));
        out
    }
}

/// A problem as one `file: key: reason` line: a reason that spans lines (wasmtime
/// prints byte arrays one per line) is joined into one. A parse error has no key, and
/// keeps its lines: the parser draws where the error is.
pub fn problem_line(problem: &ConfigError) -> String {
    match problem {
        ConfigError::Invalid { file, key, reason } => {
            let reason: Vec<&str> = reason
                .lines()
                .map(str::trim)
                .filter(|line| !line.is_empty())
                .collect();
            format!("{}: {key}: {}", file.display(), reason.join(" "))
        }
        ConfigError::Read { file, source } => {
            format!("{}: cannot read the file: {source}", file.display())
        }
        ConfigError::Parse { file, source } => format!("{}: {source}", file.display()),
    }
}

/// Checks `config`, which validation found `problems` in: the TLS files, then each
/// plugin of each tenant read, compiled (or read from the compile cache, which it then
/// warms) and linked against the world, as serving would. A plugin whose file
/// validation already reported missing is not tried again. `runtime` is where a
/// plugin's HTTP client would run; nothing is sent. Fails only when the wasm engine
/// cannot start for a reason that is not the config's.
pub fn check(
    config: &Config,
    mut problems: Vec<ConfigError>,
    runtime: tokio::runtime::Handle,
) -> Result<Report, EngineError> {
    if let Some(tls) = &config.tls
        && let Err(reason) = crate::tls::server_config(tls, &config.base_dir)
    {
        add(&mut problems, config.invalid("tls", reason));
    }
    let host = match Host::new(
        config.limits.max_wasm_stack_bytes,
        config.compile.cache_dir(&config.base_dir),
        config.compile.function_cache,
    ) {
        Ok(host) => Some(host),
        Err(err @ EngineError::Settings(_)) => {
            add(
                &mut problems,
                config.invalid("limits.max_wasm_stack_bytes", err.to_string()),
            );
            None
        }
        Err(err @ EngineError::FunctionCache(_)) => {
            add(
                &mut problems,
                config.invalid("compile.function_cache", err.to_string()),
            );
            None
        }
        Err(err @ EngineError::Start(_)) => return Err(err),
    };
    let mut compiled: HashMap<Digest, (Component, String)> = HashMap::new();
    let mut plugins = Vec::new();
    for (id, tenant) in &config.tenants {
        for (name, plugin) in &tenant.plugins {
            let mut row = PluginRow {
                tenant: id.clone(),
                plugin: name.clone(),
                routes: routes_of(tenant, name),
                bytes: None,
                load: None,
            };
            if let Some(host) = &host {
                let target = Target {
                    config,
                    tenant_id: id,
                    tenant,
                    name,
                    plugin,
                };
                load_plugin(
                    host,
                    &target,
                    &mut compiled,
                    &mut row,
                    &mut problems,
                    &runtime,
                );
            }
            plugins.push(row);
        }
    }
    Ok(Report {
        tenants: config.tenants.len(),
        routes: config.tenants.values().map(|t| t.routes.len()).sum(),
        plugins,
        problems,
    })
}

/// The plugin being loaded, and where it sits in the config.
struct Target<'c> {
    config: &'c Config,
    tenant_id: &'c str,
    tenant: &'c TenantConfig,
    name: &'c str,
    plugin: &'c PluginConfig,
}

/// Reads, compiles (or reuses: `compiled` holds components by digest) and links one
/// plugin, filling in `row` and adding its problems.
fn load_plugin(
    host: &Host,
    target: &Target<'_>,
    compiled: &mut HashMap<Digest, (Component, String)>,
    row: &mut PluginRow,
    problems: &mut Vec<ConfigError>,
    runtime: &tokio::runtime::Handle,
) {
    let Target {
        config,
        tenant_id,
        tenant,
        name,
        plugin,
    } = *target;
    let prefix = format!("tenants.{tenant_id}.plugins.{name}");
    let key = format!("{prefix}.path");
    if reported(problems, &key) {
        return;
    }
    let path = config.plugin_path(plugin);
    let bytes = match std::fs::read(&path) {
        Ok(bytes) => bytes,
        Err(err) => {
            let reason = format!("cannot read {}: {err}", path.display());
            add(problems, config.invalid(&key, reason));
            return;
        }
    };
    row.bytes = Some(bytes.len() as u64);
    let digest: Digest = Sha256::digest(&bytes).into();
    let (component, ready) = match compiled.get(&digest) {
        Some((component, first)) => (component.clone(), Load::SameAs(first.clone())),
        None => {
            let started = Instant::now();
            match host.compile(&bytes) {
                Ok((component, origin)) => {
                    let took = started.elapsed();
                    let first = format!("{tenant_id}.{name}");
                    compiled.insert(digest, (component.clone(), first));
                    (component, Load::Ready { origin, took })
                }
                Err(err) => {
                    add(
                        problems,
                        config.invalid(&key, format!("{}: {err}", path.display())),
                    );
                    return;
                }
            }
        }
    };
    let scope = PluginScope::standalone(
        tenant_id,
        tenant,
        name,
        plugin,
        &config.base_dir,
        runtime.clone(),
    );
    let scope = match scope {
        Ok(scope) => scope,
        Err(reason) => {
            add(
                problems,
                config.invalid(format!("{prefix}.outbound_ca_file"), reason),
            );
            return;
        }
    };
    match host.link(&component, scope) {
        Ok(_) => row.load = Some(ready),
        Err(err) => add(
            problems,
            config.invalid(&key, format!("{}: {err}", path.display())),
        ),
    }
}

/// Adds `problem` unless one with its key is listed already: a file validation found
/// missing is not reported again as unreadable.
fn add(problems: &mut Vec<ConfigError>, problem: ConfigError) {
    if let ConfigError::Invalid { key, .. } = &problem
        && reported(problems, key)
    {
        return;
    }
    problems.push(problem);
}

/// Whether a problem with `key` is listed.
fn reported(problems: &[ConfigError], key: &str) -> bool {
    problems
        .iter()
        .any(|p| matches!(p, ConfigError::Invalid { key: k, .. } if k == key))
}

/// The routes of `tenant` that use plugin `name`, with the keys it serves when it
/// does not serve the whole route.
fn routes_of(tenant: &TenantConfig, name: &str) -> Vec<String> {
    let mut routes = Vec::new();
    for (template, route) in &tenant.routes {
        let keys: Vec<&str> = route
            .keys
            .iter()
            .filter(|(_, plugin)| *plugin == name)
            .map(|(key, _)| key.as_str())
            .collect();
        if route.plugin.as_deref() == Some(name) {
            routes.push(template.clone());
        } else if !keys.is_empty() {
            routes.push(format!("{template} ({})", keys.join(", ")));
        }
    }
    routes
}

/// `n` things, in the plural unless one.
fn count(n: usize, thing: &str) -> String {
    match n {
        1 => format!("1 {thing}"),
        n => format!("{n} {thing}s"),
    }
}

/// A size in bytes, KiB or MiB.
fn size(bytes: u64) -> String {
    match bytes {
        0..1024 => format!("{bytes} B"),
        1024..1_048_576 => format!("{:.0} KiB", bytes as f64 / 1024.0),
        _ => format!("{:.1} MiB", bytes as f64 / 1_048_576.0),
    }
}

/// A compile time: a tenth of a millisecond below 10 ms, whole milliseconds above.
fn duration(took: Duration) -> String {
    let ms = took.as_secs_f64() * 1000.0;
    if ms < 10.0 {
        format!("{ms:.1} ms")
    } else {
        format!("{ms:.0} ms")
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;

    /// The config `text` parsed with plugin paths resolved in `dir`, compiled plugins
    /// cached in `dir/cache`, then checked.
    fn run(text: &str, dir: &Path) -> Report {
        let cache = dir.join("cache");
        let text = format!("[compile]\ncache_dir = {cache:?}\n{text}");
        let (config, problems) =
            Config::parse_all(&text, &dir.join("wsgate.toml"), dir).expect("parses");
        check(&config, problems, tokio::runtime::Handle::current()).expect("the engine starts")
    }

    fn keys(report: &Report) -> Vec<String> {
        report
            .problems
            .iter()
            .map(|p| match p {
                ConfigError::Invalid { key, .. } => key.clone(),
                other => panic!("not a keyed problem: {other}"),
            })
            .collect()
    }

    /// A valid config passes: each plugin is compiled once, the same file used twice is
    /// compiled once, and a second check reads the component from the cache.
    #[tokio::test]
    async fn valid_config_compiles_each_component_once() {
        let dir = tempfile::tempdir().unwrap();
        let text = format!(
            r#"
            [tenants.demo.plugins.echo]
            path = {echo:?}
            [tenants.demo.plugins.again]
            path = {echo:?}
            [tenants.demo.routes."/echo"]
            plugin = "echo"
            [tenants.demo.routes."/game"]
            selection = "$request.body.action"
            keys = {{ "$default" = "echo", again = "again" }}
            "#,
            echo = wsgate_test_plugins::ECHO
        );
        let first = run(&text, dir.path());
        assert!(first.ok(), "{:?}", first.problems);
        assert_eq!((first.tenants, first.routes), (1, 2));
        let [again, echo] = &first.plugins[..] else {
            panic!("two plugins: {:?}", first.plugins);
        };
        assert!(matches!(
            again.load,
            Some(Load::Ready {
                origin: Origin::Compiled,
                ..
            })
        ));
        assert_eq!(echo.load, Some(Load::SameAs("demo.again".into())));
        assert_eq!(again.routes, ["/game (again)"]);
        assert_eq!(echo.routes, ["/echo", "/game ($default)"]);
        assert!(echo.bytes.unwrap() > 1000);

        let second = run(&text, dir.path());
        assert!(matches!(
            second.plugins[0].load,
            Some(Load::Ready {
                origin: Origin::Cached,
                ..
            })
        ));
        let table = second.table();
        assert!(table.contains("cache"), "{table}");
        assert!(table.contains("same as demo.again"), "{table}");
        assert!(
            table.ends_with("OK: 1 tenant, 2 routes, 2 plugins\n"),
            "{table}"
        );
    }

    /// Independent problems are all reported in one check: the config's own (an unknown
    /// plugin, a bad template, a missing file, reported once) and the plugins' (a file
    /// that is not a component, a component that does not implement the world).
    #[tokio::test]
    async fn every_problem_is_reported_once() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("text.wasm"), "not wasm").unwrap();
        // The smallest valid component: magic, component version, layer.
        std::fs::write(dir.path().join("empty.wasm"), b"\0asm\x0d\0\x01\0").unwrap();
        let text = format!(
            r#"
            [tenants.demo.plugins.echo]
            path = {echo:?}
            [tenants.demo.plugins.text]
            path = "text.wasm"
            [tenants.demo.plugins.empty]
            path = "empty.wasm"
            [tenants.demo.plugins.gone]
            path = "gone.wasm"
            [tenants.demo.routes."/echo"]
            plugin = "nope"
            [tenants.demo.routes."/a-{{x}}"]
            plugin = "echo"
            "#,
            echo = wsgate_test_plugins::ECHO
        );
        let report = run(&text, dir.path());
        assert_eq!(
            keys(&report),
            [
                "tenants.demo.plugins.gone.path",
                "tenants.demo.routes.\"/a-{x}\"",
                "tenants.demo.routes.\"/echo\".plugin",
                "tenants.demo.plugins.empty.path",
                "tenants.demo.plugins.text.path",
            ]
        );
        let lines: Vec<String> = report.problems.iter().map(problem_line).collect();
        assert!(lines.iter().all(|line| !line.contains('\n')), "{lines:?}");
        assert!(
            lines[3].contains("does not export the wsgate:plugin/handler"),
            "{lines:?}"
        );
        assert!(
            lines[4].contains("not a valid WebAssembly component"),
            "{lines:?}"
        );
        assert!(lines[4].starts_with(&format!(
            "{}: tenants.demo.plugins.text.path: ",
            dir.path().join("wsgate.toml").display()
        )));
        let failed: Vec<&str> = report
            .plugins
            .iter()
            .filter(|row| row.load.is_none())
            .map(|row| row.plugin.as_str())
            .collect();
        assert_eq!(failed, ["empty", "gone", "text"]);
        assert!(
            report
                .table()
                .ends_with("5 problems: 1 tenant, 2 routes, 4 plugins\n")
        );
    }

    #[test]
    fn sizes_and_times_read_well() {
        assert_eq!(size(512), "512 B");
        assert_eq!(size(200 * 1024), "200 KiB");
        assert_eq!(size(3 * 1024 * 1024 / 2), "1.5 MiB");
        assert_eq!(duration(Duration::from_micros(2500)), "2.5 ms");
        assert_eq!(duration(Duration::from_millis(412)), "412 ms");
    }
}
