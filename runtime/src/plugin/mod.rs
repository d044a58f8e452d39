//! The plugin host: one wasmtime `Engine`, each plugin compiled and pre-linked once, and
//! a warm pool of instances per plugin that events borrow one at a time.
//!
//! - `bindings`: the one `bindgen!`.
//! - `engine`: the engine, its linker and the epoch ticker ([`Host`]).
//! - `loader`: plugins from the config, each component compiled once ([`Loader`]).
//! - `runner`: a loaded [`Plugin`]: its instance pool and the one event runner.
//! - `epoch`: what each epoch tick does to a running guest.
//! - `heavy`: the low-priority lane for CPU-heavy plugins.
//! - `state`: what a `Store` holds (plugin scope, event scope, WASI, limits).
//! - `grants`: what a plugin may reach ([`Grants`]).
//! - `quota`: a tenant's caps on instances in use and on memory across its instances.
//! - `call`: the wrapper every import goes through (budget, metrics).
//! - `connections_impl`, `log_impl`, `config_impl`, `http_client_impl`: the host API,
//!   one file per WIT interface.
//! - `convert`: WIT types to and from the runtime's.
//! - `output`: guest stdout/stderr into the log.
//! - `outbound`: plugins' HTTP calls (`wasi:http`, and `http-client` through the same
//!   path): the allow-list, the pooled client, caps and timeouts.
//! - `wait`: a guest's waits (`wasi:io/poll`, wrapped): waiting is not computing.
//! - `cache`, `function_cache`: compiled components on disk; shared functions compiled
//!   once while loading.
//!
//! An instance is used by one event at a time and returned to the pool afterwards; an
//! instance whose call failed (trap, timeout, limit) is dropped, because wasmtime
//! refuses further calls into it. Every call runs under an epoch deadline: the guest
//! yields to the reactor at each tick and is interrupted past its timeout.

mod bindings;
mod cache;
mod call;
mod compat;
mod config_impl;
mod connections_impl;
mod convert;
mod engine;
mod epoch;
mod function_cache;
mod grants;
mod heavy;
mod http_client_impl;
mod loader;
mod log_impl;
mod outbound;
mod output;
mod quota;
mod runner;
mod state;
mod wait;

use std::time::Duration;

pub use bindings::types::{ConnectResponse, Message};
pub use cache::Origin;
pub use compat::{WIT_PACKAGE, compat_line, supported_wit_versions, wit_version};
pub use convert::{guest_message, payload};
pub use engine::{Digest, EngineError, Host};
pub use function_cache::FunctionCacheStats;
pub use grants::Grants;
pub use loader::{Loaded, Loader};
pub use outbound::Outbound;
pub use quota::{MemoryBudget, TenantQuota};
pub use runner::Plugin;
pub use state::PluginScope;

use crate::metrics::FailureKind;

/// Why a plugin could not be loaded.
#[derive(Debug, thiserror::Error)]
#[error("{reason}")]
pub struct LoadError {
    /// What failed, e.g. "not a WebAssembly component: …".
    pub reason: String,
}

/// Why a plugin event failed. The event fails; the connection and the gateway go on.
#[derive(Debug, thiserror::Error)]
pub enum PluginError {
    /// The guest ran past its time limit and was interrupted.
    #[error("the plugin ran past its {0:?} time limit and was interrupted")]
    Timeout(Duration),
    /// The guest hit its memory limit.
    #[error("the plugin exceeded its memory limit of {0} bytes")]
    Memory(usize),
    /// The guest recursed past the wasm stack limit.
    #[error("the plugin overflowed its wasm stack")]
    Stack,
    /// The guest made more host calls in one event than its limit allows.
    #[error("{0}")]
    HostCalls(String),
    /// No instance was free under the plugin's or the tenant's cap within the event's
    /// time limit.
    #[error(
        "no instance of the plugin was free within its {0:?} time limit (limits.max_instances of the plugin or its tenant)"
    )]
    Busy(Duration),
    /// The guest's waits on HTTP calls ran past its `outbound_timeout`.
    #[error("the plugin waited on HTTP calls past its {0:?} outbound_timeout and was stopped")]
    WaitTimeout(Duration),
    /// The plugin failed expensively too often in a row and is suspended.
    #[error("the plugin is suspended for {0:?} after repeated timeouts or memory failures")]
    Suspended(Duration),
    /// The guest trapped (a panic, an unreachable, an out-of-bounds access…).
    #[error("the plugin trapped: {0}")]
    Trap(String),
}

impl PluginError {
    /// The failure's label for logs and metrics.
    pub fn kind(&self) -> FailureKind {
        match self {
            PluginError::Timeout(_) | PluginError::WaitTimeout(_) => FailureKind::Timeout,
            PluginError::Memory(_) => FailureKind::Memory,
            PluginError::Stack => FailureKind::Stack,
            PluginError::HostCalls(_) => FailureKind::HostCalls,
            PluginError::Busy(_) => FailureKind::Instances,
            PluginError::Suspended(_) => FailureKind::Suspended,
            PluginError::Trap(_) => FailureKind::Trap,
        }
    }
}
