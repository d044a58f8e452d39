//! Which versions of the WIT package the gateway loads, and what a plugin author is told
//! when a component does not link: the version it was built against, what it exports,
//! which import is missing, and what to do (wit/README.md, "Versioning").

use wasmtime::component::Component;

/// The WIT package plugins are built against.
pub const WIT_PACKAGE: &str = "wsgate:plugin";

/// `wit/world.wit`, the file whose `package` line the host's bindings are generated with.
const WORLD_WIT: &str = include_str!("../../../wit/world.wit");

/// The interfaces of the package: what a plugin may import (all but `handler`) and export.
const WIT_INTERFACES: &[&str] = &[
    "types",
    "connections",
    "log",
    "config",
    "http-client",
    "handler",
];

/// The WASI 0.2 packages the gateway links (`wasmtime_wasi::p2` and wasi:http's outgoing
/// handler). Their contexts grant nothing but clocks, random numbers, stdout and stderr
/// (into the log) and, for granted origins only, outbound HTTP.
const WASI_PACKAGES: &[&str] = &[
    "wasi:cli/",
    "wasi:io/",
    "wasi:clocks/",
    "wasi:random/",
    "wasi:filesystem/",
    "wasi:sockets/",
    "wasi:http/",
];

/// The version of the WIT package this gateway implements, e.g. `0.1.0`: read from
/// `wit/world.wit` at build time, so it cannot disagree with the bindings.
pub fn wit_version() -> &'static str {
    WORLD_WIT
        .lines()
        .find_map(|line| {
            line.trim()
                .strip_prefix("package wsgate:plugin@")?
                .strip_suffix(';')
        })
        .expect("wit/world.wit declares `package wsgate:plugin@VERSION;`")
}

/// The versions of the package whose components this gateway loads: the current one.
/// A breaking change makes a new major version (wit/README.md, "Versioning"); the
/// gateway then links the old major's bindings too, and lists its version here.
pub fn supported_wit_versions() -> Vec<&'static str> {
    vec![wit_version()]
}

/// `MAJOR.MINOR.PATCH` as numbers, if `version` is plain semver without pre-release.
fn version_numbers(version: &str) -> Option<(u64, u64, u64)> {
    let mut parts = version.split('.');
    let numbers = (
        parts.next()?.parse().ok()?,
        parts.next()?.parse().ok()?,
        parts.next()?.parse().ok()?,
    );
    parts.next().is_none().then_some(numbers)
}

/// The compatibility line of a version, as wasmtime matches an import to what the host
/// defines: `1.4.2` and `1.0.0` are both `1`, `0.3.1` is `0.3`, and `0.0.4` (or a
/// pre-release, or something that is not semver) matches only itself.
pub fn compat_line(version: &str) -> String {
    match version_numbers(version) {
        Some((0, 0, _)) | None => version.to_owned(),
        Some((0, minor, _)) => format!("0.{minor}"),
        Some((major, _, _)) => major.to_string(),
    }
}

/// Which step of linking a component failed.
pub enum LinkStage {
    /// Its imports: something it imports is not in the host's linker.
    Imports,
    /// Its exports: it does not export the handler the gateway calls.
    Exports,
}

/// What a plugin author is told to do: `first`, then rebuild against this release.
fn remedy(first: &str) -> String {
    format!(
        "To fix: {first}rebuild the plugin against the wit/ of this gateway release \
         ({WIT_PACKAGE}@{version}, world `route-handler`; in Rust, a library crate (`crate-type = [\"cdylib\"]`) using \
         this release's wsgate-sdk and its `export!` macro, built with `cargo build \
         --release --target wasm32-wasip2`; other languages: see wit/README.md)",
        version = wit_version()
    )
}

/// `a`, `a and b`, `a, b and c`, each in backquotes.
fn names(list: &[&str]) -> String {
    let quoted: Vec<String> = list.iter().map(|name| format!("`{name}`")).collect();
    match quoted.split_last() {
        None => String::new(),
        Some((last, [])) => last.clone(),
        Some((last, rest)) => format!("{} and {last}", rest.join(", ")),
    }
}

/// `wsgate:plugin/<interface>[@<version>]` split, if `name` is of the package.
fn package_item(name: &str) -> Option<(&str, Option<&str>)> {
    let item = name.strip_prefix(WIT_PACKAGE)?.strip_prefix('/')?;
    Some(match item.split_once('@') {
        Some((interface, version)) => (interface, Some(version)),
        None => (item, None),
    })
}

/// Whether the host links this import (an interface of a supported package version,
/// or a WASI 0.2 interface).
fn provided(name: &str) -> bool {
    if let Some((interface, version)) = package_item(name) {
        let lines: Vec<String> = supported_wit_versions()
            .into_iter()
            .map(compat_line)
            .collect();
        return interface != "handler"
            && WIT_INTERFACES.contains(&interface)
            && version.is_some_and(|version| lines.contains(&compat_line(version)));
    }
    WASI_PACKAGES
        .iter()
        .any(|package| name.starts_with(package))
        && name
            .split_once('@')
            .is_some_and(|(_, version)| compat_line(version) == "0.2")
}

/// The reason a component could not be linked, for a plugin author: which package
/// version it was built against and which this gateway supports, what it exports
/// instead of the handler, or which of its imports the gateway lacks; then what to do.
/// `detail` is wasmtime's own error, kept at the end. One line.
pub fn explain_link_failure(component: &Component, stage: LinkStage, detail: &str) -> String {
    let engine = component.engine();
    let ty = component.component_type();
    let imports: Vec<&str> = ty.imports(engine).map(|(name, _)| name).collect();
    let exports: Vec<&str> = ty.exports(engine).map(|(name, _)| name).collect();
    let current = wit_version();
    let supported = supported_wit_versions();
    let lines: Vec<String> = supported.iter().map(|v| compat_line(v)).collect();
    let detail = detail.replace('\n', " ");

    // Built against another version of the package: the versions it names, in order.
    let mut built_against: Vec<&str> = imports
        .iter()
        .chain(&exports)
        .filter_map(|name| package_item(name).map(|(_, version)| version.unwrap_or("")))
        .collect();
    built_against.sort_unstable();
    built_against.dedup();
    let named = |version: &str| -> Vec<&str> {
        imports
            .iter()
            .chain(&exports)
            .copied()
            .filter(|name| package_item(name).is_some_and(|(_, v)| v.unwrap_or("") == version))
            .take(4)
            .collect()
    };
    let supported_text = format!(
        "this gateway supports {}",
        supported
            .iter()
            .map(|v| format!("{WIT_PACKAGE}@{v}"))
            .collect::<Vec<_>>()
            .join(", ")
    );
    if let Some(found) = built_against
        .iter()
        .find(|version| !lines.contains(&compat_line(version)))
    {
        let shown = if found.is_empty() {
            format!("{WIT_PACKAGE} without a version")
        } else {
            format!("{WIT_PACKAGE}@{found}")
        };
        return format!(
            "the component was built against {shown} (it names {}), a version this gateway \
             does not support: {supported_text} (wasmtime: {detail}). {}; or run it on a \
             gateway release that supports {shown}",
            names(&named(found)),
            remedy(""),
        );
    }
    if matches!(stage, LinkStage::Imports)
        && let Some(newer) = built_against.iter().find(|found| {
            version_numbers(found) > supported.iter().filter_map(|v| version_numbers(v)).max()
        })
    {
        return format!(
            "the component was built against {WIT_PACKAGE}@{newer}, newer than this \
             gateway's {current}: it uses something added since (wasmtime: {detail}). \
             {}",
            remedy("upgrade the gateway, or "),
        );
    }

    let handler = format!("{WIT_PACKAGE}/handler@{current}");
    let exports_handler = exports
        .iter()
        .any(|name| package_item(name).is_some_and(|(interface, _)| interface == "handler"));
    if !exports_handler {
        let what = if exports.is_empty() {
            "it exports nothing".to_owned()
        } else if exports.iter().any(|name| name.starts_with("wasi:cli/run@")) {
            format!(
                "it exports {} instead: it is a command (a program with `main`), not a plugin",
                names(&exports)
            )
        } else {
            format!("it exports only {}", names(&exports))
        };
        return format!(
            "the component does not export the wsgate:plugin/handler interface (`{handler}`), \
             so it is not a route handler; {what} (wasmtime: {detail}). {}",
            remedy(""),
        );
    }

    let missing: Vec<&str> = imports
        .iter()
        .copied()
        .filter(|name| !provided(name))
        .collect();
    match stage {
        LinkStage::Imports if !missing.is_empty() => format!(
            "the component imports {}, which this gateway does not provide. A plugin may \
             import only the {WIT_PACKAGE}@{current} interfaces (connections, log, config), \
             WASI 0.2 (wasi:cli, wasi:io, wasi:clocks, wasi:random, wasi:filesystem, \
             wasi:sockets; no files, network, environment or arguments are granted) and \
             wasi:http/outgoing-handler 0.2 (wasmtime: {detail}). {}",
            names(&missing),
            remedy("remove the import (a dependency may have added it) and "),
        ),
        LinkStage::Imports => format!(
            "the component imports something this gateway does not provide (wasmtime: \
             {detail}). {}",
            remedy(""),
        ),
        LinkStage::Exports => format!(
            "the component's wsgate:plugin/handler export does not match `{handler}` \
             (wasmtime: {detail}). {}",
            remedy(""),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The version is read from wit/world.wit, and is plain semver.
    #[test]
    fn the_wit_version_is_read_from_the_package_line() {
        let version = wit_version();
        assert!(version_numbers(version).is_some(), "{version}");
        assert!(WORLD_WIT.contains(&format!("package wsgate:plugin@{version};")));
        assert_eq!(supported_wit_versions(), [version]);
    }

    #[test]
    fn compatibility_lines_follow_wasmtime() {
        for (version, line) in [
            ("0.1.0", "0.1"),
            ("0.1.7", "0.1"),
            ("0.2.0", "0.2"),
            ("1.0.0", "1"),
            ("1.3.2", "1"),
            ("9.0.0", "9"),
            ("0.0.3", "0.0.3"),
            ("1.0.0-rc1", "1.0.0-rc1"),
        ] {
            assert_eq!(compat_line(version), line, "{version}");
        }
    }

    #[test]
    fn provided_imports() {
        let current = wit_version();
        assert!(provided(&format!("wsgate:plugin/connections@{current}")));
        assert!(provided("wasi:cli/environment@0.2.3"));
        assert!(provided("wasi:http/outgoing-handler@0.2.0"));
        assert!(!provided(&format!("wsgate:plugin/handler@{current}")));
        assert!(!provided(&format!("wsgate:plugin/kv@{current}")));
        assert!(!provided("wsgate:plugin/log@9.0.0"));
        assert!(!provided("wasi:keyvalue/store@0.2.0-draft"));
        assert!(!provided("wasi:cli/environment@0.3.0"));
        assert!(!provided("fixture:extra/store"));
    }

    #[test]
    fn names_are_listed() {
        assert_eq!(names(&[]), "");
        assert_eq!(names(&["a"]), "`a`");
        assert_eq!(names(&["a", "b", "c"]), "`a`, `b` and `c`");
    }
}
