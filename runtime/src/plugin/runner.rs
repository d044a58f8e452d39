//! A loaded plugin: its pool of warm instances and the one runner every event goes
//! through (lane choice, checkout, the call, and return to the pool or failure).

use std::borrow::Cow;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use wasmtime::{Engine, Store, Trap};

use super::bindings::types::{ConnectResponse, ConnectionInfo, Message};
use super::bindings::{RouteHandler, RouteHandlerPre};
use super::call::HostCallLimit;
use super::quota::Turn;
use super::state::{EventScope, HostState, PluginScope};

/// How far past its time limit a call may run in wall time before it is cut: a
/// computing guest is interrupted at the next epoch tick (1 ms) after its deadline, so
/// this only ever cuts guests blocked in a host wait.
const WALL_GRACE: std::time::Duration = std::time::Duration::from_millis(20);
use super::{PluginError, convert, epoch, heavy};
use crate::metrics::{EventKind, FailureKind};
use crate::registry::{ConnectionMeta, now_ms};

/// A live instance and its store.
struct Instance {
    store: Store<HostState>,
    handler: RouteHandler,
}

/// An event for a plugin, owning what the guest gets, so it can move to the
/// low-priority lane.
enum Event {
    /// Boxed: the connection's whole description is six times the other events.
    Connect(Box<ConnectionInfo>),
    Message {
        route_key: Cow<'static, str>,
        message: Message,
    },
    Disconnect {
        code: u16,
        reason: String,
    },
}

/// What an event returned.
enum Outcome {
    /// The answer, and the context the guest set for the connection.
    Connect(ConnectResponse, Option<String>),
    Message(Option<Message>),
    Disconnect,
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
    pub(super) fn new(
        engine: Engine,
        pre: RouteHandlerPre<HostState>,
        scope: PluginScope,
    ) -> Plugin {
        Plugin {
            engine,
            pre,
            idle: Mutex::new(Vec::new()),
            scope: Arc::new(scope),
            expensive_failures: AtomicU32::new(0),
            suspended_until_ms: AtomicU64::new(0),
        }
    }

    /// The plugin's name in the config.
    pub fn name(&self) -> &str {
        &self.scope.plugin
    }

    /// Counts a failure found outside the event runner (a reply over the tenant's size
    /// limit) in the metrics, and keeps it in the tenant's execution log.
    pub fn record_failure(&self, kind: FailureKind) {
        self.scope.metrics.failure(kind);
        let what = match kind {
            FailureKind::ReplyTooLarge => {
                "the plugin's reply was over the tenant's max_message_bytes and was dropped"
            }
            _ => "the plugin's event failed",
        };
        let message = format!("{what} ({kind})");
        self.scope
            .execution_log
            .failure(&self.scope.plugin, "", "", &message);
    }

    /// Keeps a failed event in the tenant's execution log, where the tenant sees why
    /// its clients got an error (the runner has counted it in the metrics).
    fn log_failure(&self, route: &str, connection: &str, error: &PluginError) {
        let message = format!("the event failed ({}): {error}", error.kind());
        self.scope
            .execution_log
            .failure(&self.scope.plugin, route, connection, &message);
    }

    /// Runs `$connect`.
    pub async fn on_connect(
        self: &Arc<Self>,
        route: &Arc<str>,
        meta: &ConnectionMeta,
    ) -> Result<(ConnectResponse, Option<String>), PluginError> {
        let info = convert::info(meta, meta.connected_at);
        match self
            .run(route, &meta.id, Event::Connect(Box::new(info)))
            .await?
        {
            Outcome::Connect(response, context) => Ok((response, context)),
            _ => unreachable!("a connect event answers a connect response"),
        }
    }

    /// Runs a message event; the result is the reply, if any.
    pub async fn on_message(
        self: &Arc<Self>,
        route: &Arc<str>,
        connection: &Arc<str>,
        route_key: Cow<'static, str>,
        message: Message,
    ) -> Result<Option<Message>, PluginError> {
        // `$default`, the usual key, is borrowed: no allocation per message.
        let event = Event::Message { route_key, message };
        match self.run(route, connection, event).await? {
            Outcome::Message(reply) => Ok(reply),
            _ => unreachable!("a message event answers a reply"),
        }
    }

    /// Runs `$disconnect`.
    pub async fn on_disconnect(
        self: &Arc<Self>,
        route: &Arc<str>,
        connection: &Arc<str>,
        code: u16,
        reason: &str,
    ) -> Result<(), PluginError> {
        let event = Event::Disconnect {
            code,
            reason: reason.to_owned(),
        };
        self.run(route, connection, event).await.map(|_| ())
    }

    /// Runs an event on the normal lane, or on the low-priority lane while the plugin
    /// is CPU-heavy.
    async fn run(
        self: &Arc<Self>,
        route: &Arc<str>,
        connection: &Arc<str>,
        event: Event,
    ) -> Result<Outcome, PluginError> {
        let kind = match &event {
            Event::Connect(_) => EventKind::Connect,
            Event::Message { .. } => EventKind::Message,
            Event::Disconnect { .. } => EventKind::Disconnect,
        };
        let started = Instant::now();
        let outcome = self.run_on_lane(route, connection, event).await;
        if let Err(error) = &outcome {
            self.log_failure(route, connection, error);
        }
        self.scope
            .metrics
            .event_ran(kind, started.elapsed().as_secs_f64());
        outcome
    }

    /// Runs an event on its lane (see [`Plugin::run`]).
    async fn run_on_lane(
        self: &Arc<Self>,
        route: &Arc<str>,
        connection: &Arc<str>,
        event: Event,
    ) -> Result<Outcome, PluginError> {
        if !self.is_heavy() {
            return self.call(route, connection, event).await;
        }
        self.scope.metrics.heavy_event();
        let (this, route, connection) = (self.clone(), route.clone(), connection.clone());
        // A task on the lane's runtime starts outside any span: take the connection's
        // along, so the event's log lines (the guest's output, a suspension) name it.
        let event = async move { this.call(&route, &connection, event).await };
        heavy::run(tracing::Instrument::in_current_span(event))
            .await
            .unwrap_or_else(|err| {
                Err(PluginError::Trap(format!(
                    "the event's task on the low-priority lane failed: {err}"
                )))
            })
    }

    /// Waits for a turn under the instance caps, checks out an instance, calls the
    /// guest, and finishes. The wait counts against the event's time limit.
    async fn call(
        &self,
        route: &Arc<str>,
        connection: &Arc<str>,
        event: Event,
    ) -> Result<Outcome, PluginError> {
        if now_ms() < self.suspended_until_ms.load(Ordering::Relaxed) {
            self.scope.metrics.failure(FailureKind::Suspended);
            return Err(PluginError::Suspended(self.scope.limits.suspend_for));
        }
        let started = Instant::now();
        let deadline = started + self.scope.limits.timeout;
        // A plugin that may call out may wait, in all, its outbound_timeout.
        let waits = match self.scope.outbound.reach {
            Some(_) => self.scope.limits.outbound_timeout,
            None => std::time::Duration::ZERO,
        };
        let turn = self.turn(deadline).await?;
        // A start-up blocked in a host wait (a clock's pollable) runs no wasm, so no tick
        // interrupts it: bounded in wall time too, as the call below is. The new instance
        // is dropped with the future, and the timeout counts as one.
        let startup_bound =
            Instant::now() + self.scope.limits.timeout + waits + super::wait::MARGIN + WALL_GRACE;
        let checkout = self.checkout(connection, route, deadline, started + waits);
        let (mut instance, first_event) =
            match tokio::time::timeout_at(startup_bound.into(), checkout).await {
                Ok(checked_out) => checked_out?,
                Err(_) => {
                    return Err(self.failed(wasmtime::Error::new(Trap::Interrupt), Vec::new()));
                }
            };
        instance.store.data_mut().place = Some(turn);
        // Later for a new instance (see `checkout`).
        let deadline = instance.store.data().event.deadline;
        let handler = instance.handler.wsgate_plugin_handler();
        let store = &mut instance.store;
        // Measured, so that a plugin whose guest computes long is marked heavy.
        let call = async {
            match &event {
                Event::Connect(info) => {
                    store.data_mut().event.connecting = true;
                    let response = handler.call_on_connect(&mut *store, info).await;
                    let context = store.data_mut().event.context.take();
                    response.map(|response| Outcome::Connect(response, context))
                }
                Event::Message { route_key, message } => handler
                    .call_on_message(store, connection, route_key, message)
                    .await
                    .map(Outcome::Message),
                Event::Disconnect { code, reason } => handler
                    .call_on_disconnect(store, connection, *code, reason)
                    .await
                    .map(|()| Outcome::Disconnect),
            }
        };
        // A guest blocked in a host wait (a clock's pollable, say) runs no wasm, so no
        // epoch tick can interrupt it: the call is bounded in wall time too. Cut there,
        // the call's future is dropped mid-call and `finish` drops the instance with it.
        let bound = deadline + waits + super::wait::MARGIN + WALL_GRACE;
        let result =
            tokio::time::timeout_at(bound.into(), heavy::metered(&self.scope, first_event, call))
                .await
                .unwrap_or_else(|_| Err(wasmtime::Error::new(Trap::Interrupt)));
        self.finish(instance, result)
    }

    /// Waits, until `deadline`, for a place under the plugin's and the tenant's caps on
    /// instances in use.
    async fn turn(&self, deadline: Instant) -> Result<Turn, PluginError> {
        let take = Turn::take(&self.scope.instances, &self.scope.quota.instances);
        match tokio::time::timeout_at(deadline.into(), take).await {
            Ok(turn) => Ok(turn),
            Err(_) => {
                self.scope.metrics.failure(FailureKind::Instances);
                Err(PluginError::Busy(self.scope.limits.timeout))
            }
        }
    }

    /// Takes a warm instance or makes one, and points it at the event; says whether
    /// the instance is new (this is its first event).
    async fn checkout(
        &self,
        connection: &Arc<str>,
        route: &Arc<str>,
        mut deadline: Instant,
        waits_until: Instant,
    ) -> Result<(Instance, bool), PluginError> {
        let pooled = self.idle.lock().unwrap_or_else(|e| e.into_inner()).pop();
        let (mut instance, first_event) = match pooled {
            Some(instance) => (instance, false),
            // The event's own limit starts once its instance is ready.
            None => {
                let instance = self.instantiate().await?;
                deadline = deadline.max(Instant::now() + self.scope.limits.timeout);
                (instance, true)
            }
        };
        instance.store.data().stderr.clear_recent();
        // The budgets were reset as the instance's last event ended (`end_event`); a new
        // instance's start code counts toward this event.
        let state = instance.store.data_mut();
        state.event = EventScope {
            connection: connection.clone(),
            route: route.clone(),
            deadline,
            waits_until,
            context: None,
            connecting: false,
            starting_until: None,
        };
        state.hooks.waits_until = waits_until;
        // Two ticks: the first may come a microsecond after the event starts, and an
        // event that merely straddled it would count as long (and wait for a permit);
        // from the second on, it has run for a whole tick at least.
        instance.store.set_epoch_deadline(2);
        Ok((instance, first_event))
    }

    async fn instantiate(&self) -> Result<Instance, PluginError> {
        /// How long a start-up may compute without one of the tenant's permits.
        const STARTUP_WITHOUT_PERMIT: std::time::Duration = std::time::Duration::from_millis(10);
        let mut store = Store::new(&self.engine, HostState::new(self.scope.clone()));
        store.limiter(|state| &mut state.limits);
        store.epoch_deadline_callback(epoch::on_tick);
        // Instantiation runs the guest's start code under a time limit of its own, not
        // the event's: an interpreter's start-up (1.5-3 ms for componentize-js and
        // componentize-py) is paid once per instance, and counted in the event's limit
        // it made a burst of new connections on an empty pool time out one after
        // another. For its first STARTUP_WITHOUT_PERMIT it needs none of the tenant's
        // permits either: queued behind them, start-ups held instances while the pool
        // ran dry, which made every event start an instance (bounding how many start-ups
        // at once may skip the permits, to one per core, brought that back: 16,000 →
        // 660 JavaScript echoes a second over 100 connections). Past it, a start-up that
        // computes waits its turn as any long event does; instances are capped by
        // `max_instances`, and the call's wall-clock bound covers the start-up too.
        let event = &mut store.data_mut().event;
        event.deadline = Instant::now() + self.scope.limits.timeout;
        event.starting_until = Some(Instant::now() + STARTUP_WITHOUT_PERMIT);
        store.set_epoch_deadline(2);
        let started = self.pre.instantiate_async(&mut store).await;
        let handler = match started {
            Ok(handler) => handler,
            Err(err) => {
                let stderr = store.data().stderr.take_recent();
                store.data().end_event();
                return Err(self.failed(err, stderr));
            }
        };
        Ok(Instance { store, handler })
    }

    /// Ends the event's budgets (`HostState::end_event`), then returns a healthy
    /// instance to the pool (unless its memory grew past `pool_memory_bytes`, since a
    /// pooled instance keeps what it grew to, or the tenant's memory budget is half
    /// spent), or maps the failure and drops it.
    fn finish<R>(
        &self,
        mut instance: Instance,
        result: wasmtime::Result<R>,
    ) -> Result<R, PluginError> {
        let state = instance.store.data_mut();
        state.turn.lock().unwrap_or_else(|e| e.into_inner()).take();
        state.place.take();
        state.waiting.take();
        // A failed event's unfinished stderr line is written first, within its budget.
        let stderr = result
            .is_err()
            .then(|| instance.store.data().stderr.take_recent());
        instance.store.data().end_event();
        match result {
            Ok(value) => {
                self.expensive_failures.store(0, Ordering::Relaxed);
                // Warm instances hold part of the tenant's memory budget: keep one only
                // while it is small and the budget is not half spent, so idle instances
                // never crowd out running ones.
                let budget = &self.scope.quota.memory;
                // An instance still holding a response body would hand the backend's
                // connection and a call's place to its next event.
                let small = instance.store.data().limits.held()
                    <= self.scope.limits.pool_memory_bytes
                    && budget.used() <= budget.limit() / 2
                    && instance.store.data().hooks.open.none();
                let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
                if small && idle.len() < self.scope.limits.pool_size {
                    idle.push(instance);
                }
                Ok(value)
            }
            Err(err) => Err(self.failed(err, stderr.unwrap_or_default())),
        }
    }

    /// Classifies and counts a failure; suspends the plugin after too many expensive
    /// ones in a row. Traps are cheap (the instance is dropped, a new one costs tens of
    /// microseconds), so they never suspend; timeouts burn a whole time budget each.
    fn failed(&self, err: wasmtime::Error, stderr: Vec<String>) -> PluginError {
        let error = self.classify(err, stderr);
        self.scope.metrics.failure(error.kind());
        if matches!(error, PluginError::Timeout(_) | PluginError::Memory(_)) {
            let failures = self.expensive_failures.fetch_add(1, Ordering::Relaxed) + 1;
            let limits = &self.scope.limits;
            if failures >= limits.suspend_after {
                self.expensive_failures.store(0, Ordering::Relaxed);
                let until = now_ms() + limits.suspend_for.as_millis() as u64;
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
        if let Some(limit) = err.downcast_ref::<HostCallLimit>() {
            return PluginError::HostCalls(limit.to_string());
        }
        if let Some(limit) = err.downcast_ref::<super::wait::WaitLimit>() {
            return PluginError::WaitTimeout(limit.0);
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

    /// Whether one of the plugin's recent events computed long (`heavy::metered`).
    fn is_heavy(&self) -> bool {
        now_ms() < self.scope.heavy_until_ms.load(Ordering::Relaxed)
    }
}
