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
pub use validate::websocket_origin;

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
            source: Box::new(source),
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
