//! The process-wide wasm engine: its settings, the linker every plugin is linked
//! against, the compile caches, and the thread that ticks the epoch.

use std::sync::Arc;
use std::thread;
use std::time::Duration;

use wasmtime::Engine;
use wasmtime::component::{Component, Linker};

use super::bindings::{RouteHandler, RouteHandlerPre};
use super::call::{Calls, HostCall};
use super::compat::{LinkStage, explain_link_failure};
use super::runner::Plugin;
use super::state::{HostState, PluginScope};
use super::{FunctionCacheStats, LoadError, Origin, cache, function_cache};

/// How often the engine's epoch advances: the granularity of timeouts and of yielding.
pub const EPOCH_TICK: Duration = Duration::from_millis(1);

/// Why the engine could not start.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// wasmtime refused the engine's settings; the only one from the config is the
    /// wasm stack size.
    #[error("the wasm engine refused its settings ({0}); check limits.max_wasm_stack_bytes")]
    Settings(String),
    /// The per-function compile cache could not be turned on.
    #[error("cannot turn on the function cache ({0}); set compile.function_cache = false")]
    FunctionCache(String),
    /// Linking the host API or starting the epoch thread failed: not a config problem.
    #[error("cannot start the wasm engine: {0}")]
    Start(String),
}

/// The process-wide engine, its linker, and the thread that ticks its epoch.
pub struct Host {
    engine: Engine,
    linker: Linker<HostState>,
    cache: cache::ComponentCache,
    /// The per-function compilation cache, when on; emptied once plugins are loaded.
    functions: Option<Arc<function_cache::FunctionCache>>,
    /// The components of the config in force, by the SHA-256 of their bytes: a reload
    /// reuses an unchanged one instead of compiling or reading it again.
    resident: std::sync::Mutex<std::collections::HashMap<Digest, Component>>,
}

/// The SHA-256 of a component's bytes.
pub type Digest = [u8; 32];

impl Host {
    /// Creates the engine, with `max_wasm_stack` bytes of wasm stack per call, the
    /// on-disk component cache in `cache_dir` and, when `function_cache`, Cranelift's
    /// per-function cache for loading; starts the epoch ticker (which lives as long as
    /// the engine).
    pub fn new(
        max_wasm_stack: usize,
        cache_dir: Option<std::path::PathBuf>,
        function_cache: bool,
    ) -> Result<Host, EngineError> {
        let mut config = wasmtime::Config::new();
        config.epoch_interruption(true);
        config.wasm_component_model(true);
        config.max_wasm_stack(max_wasm_stack);
        // The async fiber stack must hold the wasm stack plus host frames.
        config.async_stack_size(max_wasm_stack + (1 << 20));
        // `perf` names guest functions from /tmp/perf-PID.map when asked: how plugin
        // time is profiled (docs/operations.md).
        if std::env::var_os("WSGATE_PERF_MAP").is_some() {
            config.profiler(wasmtime::ProfilingStrategy::PerfMap);
        }
        let functions = function_cache.then(Arc::<function_cache::FunctionCache>::default);
        if let Some(functions) = &functions {
            config
                .enable_incremental_compilation(functions.clone())
                .map_err(|e| EngineError::FunctionCache(format!("{e:#}")))?;
        }
        let engine = Engine::new(&config).map_err(|e| EngineError::Settings(format!("{e:#}")))?;
        let mut linker = Linker::new(&engine);
        // A Rust std guest imports wasi:io and wasi:cli even when unused; the context
        // behind them grants nothing.
        wasmtime_wasi::p2::add_to_linker_async(&mut linker)
            .map_err(|e| EngineError::Start(format!("cannot link WASI: {e:#}")))?;
        // wasi:http's outgoing handler, for plugins that import it; requests go through
        // `outbound::Hooks`. Then wasi:io/poll again, wrapped, to account waits.
        wasmtime_wasi_http::p2::add_only_http_to_linker_async(&mut linker)
            .map_err(|e| EngineError::Start(format!("cannot link wasi:http: {e:#}")))?;
        super::wait::add_to_linker(&mut linker).map_err(|e| {
            EngineError::Start(format!("cannot link the wasi:io/poll wrapper: {e:#}"))
        })?;
        // Every import of the host API goes through `HostCall::enter`.
        RouteHandler::add_to_linker::<HostState, Calls>(&mut linker, |state| HostCall::new(state))
            .map_err(|e| EngineError::Start(format!("cannot link the host API: {e:#}")))?;
        let weak = engine.weak();
        thread::Builder::new()
            .name("wsgate-epoch".into())
            .spawn(move || {
                while let Some(engine) = weak.upgrade() {
                    engine.increment_epoch();
                    drop(engine);
                    thread::sleep(EPOCH_TICK);
                }
            })
            .map_err(|e| EngineError::Start(format!("cannot start the epoch thread: {e}")))?;
        Ok(Host {
            engine,
            linker,
            cache: cache::ComponentCache::new(cache_dir),
            functions,
            resident: Default::default(),
        })
    }

    /// Compiles a component, or reads it from the cache. Compiling is the slow part of
    /// loading (tens of milliseconds), so a component used by several plugins is
    /// compiled once, and a restart reads it back.
    pub fn compile(&self, bytes: &[u8]) -> Result<(Component, Origin), LoadError> {
        self.cache.get_or_compile(&self.engine, bytes, || {
            Component::new(&self.engine, bytes).map_err(|e| LoadError {
                reason: format!(
                    "not a valid WebAssembly component ({e:#}); build plugins with `cargo build --target wasm32-wasip2`"
                ),
            })
        })
    }

    /// The component of the config in force whose bytes have this digest, if any.
    pub fn resident(&self, digest: &Digest) -> Option<Component> {
        let resident = self.resident.lock().unwrap_or_else(|e| e.into_inner());
        resident.get(digest).cloned()
    }

    /// Makes `components` the resident set: those of the config now in force.
    pub fn keep_resident(&self, components: std::collections::HashMap<Digest, Component>) {
        *self.resident.lock().unwrap_or_else(|e| e.into_inner()) = components;
    }

    /// Ends loading: frees the function cache (nothing compiles after start-up) and
    /// reports what it saved, if it was on.
    pub fn loaded(&self) -> Option<FunctionCacheStats> {
        self.functions.as_ref().map(|cache| cache.finish())
    }

    /// Links a compiled component as a plugin with `scope`, checking that it
    /// implements the `route-handler` world.
    pub fn link(&self, component: &Component, scope: PluginScope) -> Result<Plugin, LoadError> {
        // The explanation (which version it was built against, what it exports, which
        // import is missing, and what to do) comes from the component's own type.
        let pre = self
            .linker
            .instantiate_pre(component)
            .map_err(|e| LoadError {
                reason: explain_link_failure(component, LinkStage::Imports, &format!("{e:#}")),
            })?;
        let pre = RouteHandlerPre::new(pre).map_err(|e| LoadError {
            reason: explain_link_failure(component, LinkStage::Exports, &format!("{e:#}")),
        })?;
        Ok(Plugin::new(self.engine.clone(), pre, scope))
    }
}
