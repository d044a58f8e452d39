//! The TOML configuration: loading, and the error that names file, key and reason.
//!
//! - `schema`: the serde structs and their defaults (`impl Default` of each struct).
//! - `origin`: [`Origin`], one entry of a plugin's `allowed_outbound_hosts`.
//! - `secret`: [`Secret`], a value from the file or the environment, redacted in `Debug`.
//! - `validate`: the checks that serde cannot express, as [`ConfigError::Invalid`].
//!
//! Every struct denies unknown keys, so a typo stops start-up instead of being ignored.
//! Relative plugin paths are resolved against the directory of the config file.

use std::path::{Path, PathBuf};

mod origin;
mod schema;
mod secret;
mod validate;

pub use origin::Origin;
pub use schema::{
    Access, AdminConfig, AwsCredential, CONNECT_KEY, ClusterConfig, CompileConfig, Config,
    Credentials, DEFAULT_KEY, DISCONNECT_KEY, GlobalLimits, LifecycleConfig, Listen, PluginConfig,
    PluginLimits, RouteConfig, TenantConfig, TenantLimits, TlsConfig, default_cache_dir,
};
pub use schema::{MAX_EXECUTION_LOG_BYTES, MAX_EXECUTION_LOG_ENTRIES, MIN_EXECUTION_LOG_BYTES};
pub use secret::Secret;
pub use validate::{plain_host, websocket_origin};

/// Why a configuration could not be used. Each variant names the file and what to fix.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config file {file}: {source}")]
    Read {
        /// The config file.
        file: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The file is not valid TOML or does not fit the schema (unknown key, wrong type).
    #[error("invalid config file {file}: {source}")]
    Parse {
        /// The config file.
        file: PathBuf,
        /// The parser's message, with line, column and key.
        source: Box<toml::de::Error>,
    },
    /// A value is well-formed but not acceptable.
    #[error("invalid config file {file}: `{key}`: {reason}")]
    Invalid {
        /// The config file.
        file: PathBuf,
        /// The dotted key of the offending value, e.g. `tenants.demo.routes."/chat"`.
        key: String,
        /// What is wrong and what to do.
        reason: String,
    },
}

impl Config {
    /// Reads, parses and validates a config file; stops at its first problem.
    pub fn load(file: &Path) -> Result<Config, ConfigError> {
        let (config, problems) = Config::load_all(file)?;
        first_problem(config, problems)
    }

    /// Reads and parses a config file and runs every check, without stopping at the
    /// first problem: returns the config as parsed and every problem found, none when it
    /// is valid. A config with problems must not be served; `wsgate check` lists them.
    /// Fails at once when the file cannot be read or does not fit the schema (the TOML
    /// parser reports one error).
    pub fn load_all(file: &Path) -> Result<(Config, Vec<ConfigError>), ConfigError> {
        let text = std::fs::read_to_string(file).map_err(|source| ConfigError::Read {
            file: file.to_owned(),
            source,
        })?;
        let base_dir = file
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_else(|| PathBuf::from("."));
        Config::parse_all(&text, file, &base_dir)
    }

    /// Parses and validates config text; `file` is used in messages, `base_dir` to
    /// resolve plugin paths. Stops at the first problem.
    pub fn parse(text: &str, file: &Path, base_dir: &Path) -> Result<Config, ConfigError> {
        let (config, problems) = Config::parse_all(text, file, base_dir)?;
        first_problem(config, problems)
    }

    /// As [`Config::parse`], returning every problem validation finds along with the
    /// config as parsed (see [`Config::load_all`]).
    pub fn parse_all(
        text: &str,
        file: &Path,
        base_dir: &Path,
    ) -> Result<(Config, Vec<ConfigError>), ConfigError> {
        let mut config: Config = toml::from_str(text).map_err(|source| ConfigError::Parse {
            file: file.to_owned(),
            source: Box::new(without_secrets(text, source)),
        })?;
        config.file = file.to_owned();
        config.base_dir = base_dir.to_owned();
        let problems = config.validate();
        config.admin.tenant_hosts = config
            .tenants
            .iter()
            .filter(|(_, tenant)| !tenant.hosts.is_empty())
            .map(|(id, tenant)| (id.clone(), tenant.hosts.clone()))
            .collect();
        Ok((config, problems))
    }

    /// The absolute or working-directory-relative path of a plugin file.
    pub fn plugin_path(&self, plugin: &PluginConfig) -> PathBuf {
        self.base_dir.join(&plugin.path)
    }

    /// A [`ConfigError::Invalid`] for this file.
    pub fn invalid(&self, key: impl Into<String>, reason: impl Into<String>) -> ConfigError {
        ConfigError::Invalid {
            file: self.file.clone(),
            key: key.into(),
            reason: reason.into(),
        }
    }
}

/// The config if validation found nothing, else the first problem (the one start-up
/// has always reported).
fn first_problem(config: Config, problems: Vec<ConfigError>) -> Result<Config, ConfigError> {
    match problems.into_iter().next() {
        Some(first) => Err(first),
        None => Ok(config),
    }
}

/// Helpers shared by the unit tests of the submodules.
#[cfg(test)]
mod testing {
    use std::path::Path;

    use super::{Config, ConfigError};

    /// Parses and validates `text`, with plugin paths resolved against the package.
    pub(super) fn parse(text: &str) -> Result<Config, ConfigError> {
        // Cargo.toml exists in the package directory and stands in for a plugin file.
        let base = Path::new(env!("CARGO_MANIFEST_DIR"));
        Config::parse(text, Path::new("test.toml"), base)
    }

    /// The message of the error `text` is refused with.
    pub(super) fn error(text: &str) -> String {
        parse(text)
            .expect_err("config should be refused")
            .to_string()
    }

    /// The smallest valid config: one tenant, one plugin, one route.
    pub(super) const MINIMAL: &str = r#"
        [tenants.demo.plugins.echo]
        path = "Cargo.toml"
        [tenants.demo.routes."/echo"]
        plugin = "echo"
    "#;
}

/// Words in a key whose value may be a secret (`bearer_keys`, `secret_access_key`,
/// `redis_url = "redis://:password@…"`, a plugin's `token`).
const SECRET_WORDS: &[&str] = &[
    "key",
    "secret",
    "password",
    "token",
    "redis_url",
    "credential",
];

/// `error` as it may be logged and answered to a reload: the parser quotes the
/// offending line and often the value, so when that line's key may hold a secret, the
/// line is left out and quoted strings in the message read `"[redacted]"`.
fn without_secrets(text: &str, error: toml::de::Error) -> toml::de::Error {
    let Some(span) = error.span() else {
        return error;
    };
    let start = span.start.min(text.len());
    let line_start = text[..start].rfind('\n').map_or(0, |i| i + 1);
    let line_end = text[start..].find('\n').map_or(text.len(), |i| start + i);
    let line = text[line_start..line_end].to_ascii_lowercase();
    // The key part of the line, or the whole line for a value that continues one
    // (an array over several lines): either way, a secret word means hiding it.
    if !SECRET_WORDS.iter().any(|word| line.contains(word)) {
        return error;
    }
    let line_number = text[..line_start].matches('\n').count() + 1;
    let column = text[line_start..start].chars().count() + 1;
    let mut message = String::new();
    let mut quoted = false;
    for part in error.message().split('"') {
        if quoted {
            message.push_str("\"[redacted]\"");
        } else {
            message.push_str(part);
        }
        quoted = !quoted;
    }
    <toml::de::Error as serde::de::Error>::custom(format!(
        "TOML parse error at line {line_number}, column {column} (the line is not shown: its key may hold a secret)\n{message}"
    ))
}

#[cfg(test)]
mod secret_tests {
    use super::*;

    fn parse_error(text: &str) -> String {
        Config::parse(text, Path::new("wsgate.toml"), Path::new("."))
            .unwrap_err()
            .to_string()
    }

    #[test]
    fn a_parse_error_on_a_secret_line_shows_neither_the_line_nor_the_value() {
        let text = "[admin]\nbearer_keys = \"hunter2-operator\"\n";
        let error = parse_error(text);
        assert!(!error.contains("hunter2"), "{error}");
        assert!(error.contains("line 2"), "{error}");
        assert!(error.contains("may hold a secret"), "{error}");
        let text = "[cluster]\nredis_url = [\"redis://:pa55word@h:6379\"\n";
        let error = parse_error(text);
        assert!(!error.contains("pa55word"), "{error}");
    }

    #[test]
    fn other_parse_errors_keep_the_line() {
        let error = parse_error("[listen]\nws = 12\n");
        assert!(error.contains("ws = 12"), "{error}");
    }
}
