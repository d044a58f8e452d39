//! The plugin host: one wasmtime `Engine`, each plugin compiled and pre-linked once, and
//! a warm pool of instances per plugin that events borrow one at a time.
//!
//! - `bindings`: the one `bindgen!`.
//! - `cache`: compiled components on disk, by content hash.
//! - `state`: what a `Store` holds (plugin scope, event scope, WASI, limits).
//! - `host`: the host API impls (connections, log, config).
//! - `convert`: WIT types to and from the runtime's.
//! - `output`: guest stdout/stderr into the log.
//!
//! An instance is used by one event at a time and returned to the pool afterwards; an
//! instance whose call failed (trap, timeout, limit) is dropped, because wasmtime
//! refuses further calls into it. Every call runs under an epoch deadline: the guest
//! yields to the reactor at each tick and is interrupted past its timeout.

mod bindings;
mod cache;
mod convert;
mod function_cache;
mod heavy;
mod host;
mod output;
mod state;

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use wasmtime::component::{Component, HasSelf, Linker};
use wasmtime::{Engine, Store, Trap, UpdateDeadline};

pub use bindings::types::{ConnectResponse, Message};
pub use cache::{Origin, default_dir as default_cache_dir};
pub use convert::{message_from_ws, message_to_ws};
pub use function_cache::FunctionCacheStats;
pub use state::PluginScope;

use bindings::{RouteHandler, RouteHandlerPre};
use state::{EventScope, HostState};

use crate::registry::ConnectionMeta;

/// How often the engine's epoch advances: the granularity of timeouts and of yielding.
const EPOCH_TICK: Duration = Duration::from_millis(1);

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
    /// The plugin failed expensively too often in a row and is suspended.
    #[error("the plugin is suspended for {0:?} after repeated timeouts or memory failures")]
    Suspended(Duration),
    /// The guest trapped (a panic, an unreachable, an out-of-bounds access…).
    #[error("the plugin trapped: {0}")]
    Trap(String),
}

impl PluginError {
    /// A short label for logs and metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            PluginError::Timeout(_) => "timeout",
            PluginError::Memory(_) => "memory",
            PluginError::Stack => "stack",
            PluginError::HostCalls(_) => "host_calls",
            PluginError::Suspended(_) => "suspended",
            PluginError::Trap(_) => "trap",
        }
    }
}

/// The process-wide engine, its linker, and the thread that ticks its epoch.
pub struct Host {
    engine: Engine,
    linker: Linker<HostState>,
    cache: cache::ComponentCache,
    /// The per-function compilation cache, when on; emptied once plugins are loaded.
    functions: Option<Arc<function_cache::FunctionCache>>,
}

impl Host {
    /// Creates the engine, with `max_wasm_stack` bytes of wasm stack per call, the
    /// on-disk component cache in `cache_dir` and, when `function_cache`, Cranelift's
    /// per-function cache for loading; starts the epoch ticker (which lives as long as
    /// the engine).
    pub fn new(
        max_wasm_stack: usize,
        cache_dir: Option<std::path::PathBuf>,
        function_cache: bool,
    ) -> anyhow::Result<Host> {
        let mut config = wasmtime::Config::new();
        config.epoch_interruption(true);
        config.wasm_component_model(true);
        config.max_wasm_stack(max_wasm_stack);
        // The async fiber stack must hold the wasm stack plus host frames.
        config.async_stack_size(max_wasm_stack + (1 << 20));
        let functions = function_cache.then(Arc::<function_cache::FunctionCache>::default);
        if let Some(functions) = &functions {
            config
                .enable_incremental_compilation(functions.clone())
                .map_err(|e| anyhow::anyhow!("cannot enable the function cache: {e}"))?;
        }
        let engine = Engine::new(&config)
            .map_err(|e| anyhow::anyhow!("cannot create the wasm engine: {e}"))?;
        let mut linker = Linker::new(&engine);
        // A Rust std guest imports wasi:io and wasi:cli even when unused; the context
        // behind them grants nothing.
        wasmtime_wasi::p2::add_to_linker_async(&mut linker)
            .map_err(|e| anyhow::anyhow!("cannot link WASI: {e}"))?;
        RouteHandler::add_to_linker::<HostState, HasSelf<HostState>>(&mut linker, |s| s)
            .map_err(|e| anyhow::anyhow!("cannot link the host API: {e}"))?;
        let weak = engine.weak();
        thread::Builder::new()
            .name("wsgate-epoch".into())
            .spawn(move || {
                while let Some(engine) = weak.upgrade() {
                    engine.increment_epoch();
                    drop(engine);
                    thread::sleep(EPOCH_TICK);
                }
            })?;
        Ok(Host {
            engine,
            linker,
            cache: cache::ComponentCache::new(cache_dir),
            functions,
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

    /// Ends loading: frees the function cache (nothing compiles after start-up) and
    /// reports what it saved, if it was on.
    pub fn loaded(&self) -> Option<FunctionCacheStats> {
        self.functions.as_ref().map(|cache| cache.finish())
    }

    /// Links a compiled component as a plugin with `scope`, checking that it
    /// implements the `route-handler` world.
    pub fn link(&self, component: &Component, scope: PluginScope) -> Result<Plugin, LoadError> {
        let pre = self.linker.instantiate_pre(component).map_err(|e| LoadError {
            reason: format!("the component imports something the gateway does not provide ({e:#}); plugins may import only the wsgate:plugin world and WASI"),
        })?;
        let pre = RouteHandlerPre::new(pre).map_err(|e| LoadError {
            reason: format!("the component does not export the wsgate:plugin/handler interface ({e:#}); build it with wsgate-sdk's export! macro"),
        })?;
        Ok(Plugin {
            engine: self.engine.clone(),
            pre,
            idle: Mutex::new(Vec::new()),
            scope: Arc::new(scope),
            expensive_failures: AtomicU32::new(0),
            suspended_until_ms: AtomicU64::new(0),
        })
    }
}

/// A live instance and its store.
struct Instance {
    store: Store<HostState>,
    handler: RouteHandler,
}

/// A loaded plugin: compiled, pre-linked, with its pool of warm instances.
pub struct Plugin {
    engine: Engine,
    pre: RouteHandlerPre<HostState>,
    /// Instances not in use. Never two events on one instance at once.
    idle: Mutex<Vec<Instance>>,
    scope: Arc<PluginScope>,
    /// Timeouts and memory failures in a row; reset by any success.
    expensive_failures: AtomicU32,
    /// While now (ms since the epoch) is before this, events fail without running.
    suspended_until_ms: AtomicU64,
}

impl std::fmt::Debug for Plugin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Plugin")
            .field("scope", &self.scope)
            .finish_non_exhaustive()
    }
}

impl Plugin {
    /// The plugin's name in the config.
    pub fn name(&self) -> &str {
        &self.scope.plugin
    }

    /// Counts a failure in the metrics.
    pub fn record_failure(&self, kind: &'static str) {
        self.scope
            .metrics
            .plugin_failure(&self.scope.tenant, &self.scope.plugin, kind);
    }

    /// Takes a warm instance or makes one, and points it at `event`.
    async fn checkout(
        &self,
        connection: &Arc<str>,
        route: &Arc<str>,
    ) -> Result<Instance, PluginError> {
        if crate::registry::now_ms() < self.suspended_until_ms.load(Ordering::Relaxed) {
            self.record_failure("suspended");
            return Err(PluginError::Suspended(self.scope.limits.suspend_for));
        }
        let pooled = self.idle.lock().unwrap_or_else(|e| e.into_inner()).pop();
        let mut instance = match pooled {
            Some(instance) => instance,
            None => self.instantiate().await?,
        };
        let deadline = Instant::now() + self.scope.limits.timeout;
        instance.store.data().stderr.clear_recent();
        instance.store.data_mut().host_calls = 0;
        instance.store.data_mut().event = EventScope {
            connection: connection.clone(),
            route: route.clone(),
            deadline,
            ticks: 0,
            calls_at_tick: 0,
        };
        instance.store.set_epoch_deadline(1);
        Ok(instance)
    }

    async fn instantiate(&self) -> Result<Instance, PluginError> {
        let mut store = Store::new(&self.engine, HostState::new(self.scope.clone()));
        store.limiter(|state| &mut state.limits);
        store.epoch_deadline_callback(|mut ctx| {
            let state = ctx.data_mut();
            if Instant::now() >= state.event.deadline {
                return Ok(UpdateDeadline::Interrupt);
            }
            if state.host_calls == state.event.calls_at_tick {
                state.event.ticks += 1;
            } else {
                state.event.ticks = 1;
                state.event.calls_at_tick = state.host_calls;
            }
            if state.event.ticks >= heavy::HEAVY_TICKS && !heavy::on_lane() {
                // Whole ticks of guest compute: the plugin's next events go to the
                // low-priority lane.
                let heavy_until = crate::registry::now_ms() + heavy::HEAVY_FOR.as_millis() as u64;
                state
                    .scope
                    .heavy_until_ms
                    .store(heavy_until, Ordering::Relaxed);
            }
            let state = ctx.data();
            // The event has run past a tick: from here on it needs one of the tenant's
            // permits, so one tenant's CPU-heavy events cannot hold every core. Short
            // events never get here and pay nothing.
            let mut turn = state.turn.lock().unwrap_or_else(|e| e.into_inner());
            if turn.is_none() {
                match state.scope.events.clone().try_acquire_owned() {
                    Ok(permit) => *turn = Some(permit),
                    Err(_) => {
                        // Wait suspended, not spinning, until a permit frees up.
                        let events = state.scope.events.clone();
                        let slot = state.turn.clone();
                        return Ok(UpdateDeadline::YieldCustom(
                            1,
                            Box::pin(async move {
                                if let Ok(permit) = events.acquire_owned().await {
                                    *slot.lock().unwrap_or_else(|e| e.into_inner()) = Some(permit);
                                }
                            }),
                        ));
                    }
                }
            }
            // tokio's yield_now lets the worker poll the I/O driver before it runs the
            // guest again; a plain self-wake would keep a spinning guest runnable and
            // starve other connections' socket events for a whole event interval.
            Ok(UpdateDeadline::YieldCustom(
                1,
                Box::pin(tokio::task::yield_now()),
            ))
        });
        // Instantiation runs guest start code, so it gets the event's budget too.
        store.data_mut().event.deadline = Instant::now() + self.scope.limits.timeout;
        store.set_epoch_deadline(1);
        let handler = match self.pre.instantiate_async(&mut store).await {
            Ok(handler) => handler,
            Err(err) => return Err(self.failed(err, store.data().stderr.take_recent())),
        };
        Ok(Instance { store, handler })
    }

    /// Returns a healthy instance to the pool, or maps the failure and drops it.
    fn finish<R>(&self, instance: Instance, result: wasmtime::Result<R>) -> Result<R, PluginError> {
        instance
            .store
            .data()
            .turn
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        match result {
            Ok(value) => {
                self.expensive_failures.store(0, Ordering::Relaxed);
                let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
                if idle.len() < self.scope.limits.pool_size {
                    idle.push(instance);
                }
                Ok(value)
            }
            Err(err) => Err(self.failed(err, instance.store.data().stderr.take_recent())),
        }
    }

    /// Classifies and counts a failure; suspends the plugin after too many expensive
    /// ones in a row. Traps are cheap (the instance is dropped, a new one costs tens of
    /// microseconds), so they never suspend; timeouts burn a whole time budget each.
    fn failed(&self, err: wasmtime::Error, stderr: Vec<String>) -> PluginError {
        let error = self.classify(err, stderr);
        self.record_failure(error.kind());
        if matches!(error, PluginError::Timeout(_) | PluginError::Memory(_)) {
            let failures = self.expensive_failures.fetch_add(1, Ordering::Relaxed) + 1;
            let limits = &self.scope.limits;
            if failures >= limits.suspend_after {
                self.expensive_failures.store(0, Ordering::Relaxed);
                let until = crate::registry::now_ms() + limits.suspend_for.as_millis() as u64;
                self.suspended_until_ms.store(until, Ordering::Relaxed);
                tracing::warn!(
                    tenant = %self.scope.tenant,
                    plugin = %self.scope.plugin,
                    failures,
                    "plugin suspended for {:?} after repeated timeouts or memory failures",
                    limits.suspend_for
                );
            }
        }
        error
    }

    /// Names the cause of a failed call. A trap's message is one line: the trap, then
    /// what the guest printed to stderr during the event (a panic message). The full
    /// wasm backtrace goes to the debug log.
    fn classify(&self, err: wasmtime::Error, stderr: Vec<String>) -> PluginError {
        tracing::debug!(plugin = %self.scope.plugin, error = ?err, "plugin call failed");
        if let Some(limit) = err.downcast_ref::<state::HostCallLimit>() {
            return PluginError::HostCalls(limit.to_string());
        }
        let trap = err.downcast_ref::<Trap>();
        match trap {
            Some(Trap::Interrupt) => return PluginError::Timeout(self.scope.limits.timeout),
            Some(Trap::StackOverflow) => return PluginError::Stack,
            _ => {}
        }
        let text = format!("{err:#}");
        // wasmtime's two wordings for a growth refused by the store's limiter.
        if text.contains("forcing trap when growing memory")
            || text.contains("forcing a memory growth failure")
        {
            return PluginError::Memory(self.scope.limits.memory_bytes);
        }
        let mut text = match trap {
            Some(trap) => trap.to_string(),
            None => err.to_string(),
        };
        if !stderr.is_empty() {
            text.push_str("; guest stderr: ");
            text.push_str(&stderr.join(" | "));
        }
        PluginError::Trap(text)
    }

    /// Whether the plugin's recent events ran past an epoch tick.
    fn is_heavy(&self) -> bool {
        crate::registry::now_ms() < self.scope.heavy_until_ms.load(Ordering::Relaxed)
    }

    /// Runs `event` on the low-priority lane (for a CPU-heavy plugin).
    async fn on_heavy_lane<T, F>(&self, event: F) -> Result<T, PluginError>
    where
        F: Future<Output = Result<T, PluginError>> + Send + 'static,
        T: Send + 'static,
    {
        self.scope
            .metrics
            .heavy_event(&self.scope.tenant, &self.scope.plugin);
        heavy::run(event).await.unwrap_or_else(|err| {
            Err(PluginError::Trap(format!(
                "the event's task on the low-priority lane failed: {err}"
            )))
        })
    }

    /// Runs `$connect`.
    pub async fn on_connect(
        self: &Arc<Self>,
        route: &Arc<str>,
        meta: &ConnectionMeta,
    ) -> Result<ConnectResponse, PluginError> {
        let info = convert::info(meta, meta.connected_at);
        if !self.is_heavy() {
            return self.connect_event(route, &meta.id, &info).await;
        }
        let (this, route, id) = (self.clone(), route.clone(), meta.id.clone());
        self.on_heavy_lane(async move { this.connect_event(&route, &id, &info).await })
            .await
    }

    async fn connect_event(
        &self,
        route: &Arc<str>,
        id: &Arc<str>,
        info: &bindings::wsgate::plugin::types::ConnectionInfo,
    ) -> Result<ConnectResponse, PluginError> {
        let mut instance = self.checkout(id, route).await?;
        let result = instance
            .handler
            .wsgate_plugin_handler()
            .call_on_connect(&mut instance.store, info)
            .await;
        self.finish(instance, result)
    }

    /// Runs a message event; the result is the reply, if any.
    pub async fn on_message(
        self: &Arc<Self>,
        route: &Arc<str>,
        connection: &Arc<str>,
        route_key: &str,
        message: &Message,
    ) -> Result<Option<Message>, PluginError> {
        if !self.is_heavy() {
            return self
                .message_event(route, connection, route_key, message)
                .await;
        }
        let (this, route, connection) = (self.clone(), route.clone(), connection.clone());
        let (key, message) = (route_key.to_owned(), message.clone());
        self.on_heavy_lane(async move {
            this.message_event(&route, &connection, &key, &message)
                .await
        })
        .await
    }

    async fn message_event(
        &self,
        route: &Arc<str>,
        connection: &Arc<str>,
        route_key: &str,
        message: &Message,
    ) -> Result<Option<Message>, PluginError> {
        let mut instance = self.checkout(connection, route).await?;
        let result = instance
            .handler
            .wsgate_plugin_handler()
            .call_on_message(&mut instance.store, connection, route_key, message)
            .await;
        self.finish(instance, result)
    }

    /// Runs `$disconnect`.
    pub async fn on_disconnect(
        self: &Arc<Self>,
        route: &Arc<str>,
        connection: &Arc<str>,
        code: u16,
        reason: &str,
    ) -> Result<(), PluginError> {
        if !self.is_heavy() {
            return self.disconnect_event(route, connection, code, reason).await;
        }
        let (this, route, connection) = (self.clone(), route.clone(), connection.clone());
        let reason = reason.to_owned();
        self.on_heavy_lane(async move {
            this.disconnect_event(&route, &connection, code, &reason)
                .await
        })
        .await
    }

    async fn disconnect_event(
        &self,
        route: &Arc<str>,
        connection: &Arc<str>,
        code: u16,
        reason: &str,
    ) -> Result<(), PluginError> {
        let mut instance = self.checkout(connection, route).await?;
        let result = instance
            .handler
            .wsgate_plugin_handler()
            .call_on_disconnect(&mut instance.store, connection, code, reason)
            .await;
        self.finish(instance, result)
    }
}
