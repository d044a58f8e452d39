//! A guest's waits: `wasi:io/poll`, wrapped. Every wait of a guest on the network (an
//! HTTP answer, a body chunk) goes through `poll` or `pollable.block`, and while it waits
//! no wasm runs, so no epoch tick can see it. The wrapper is where waiting is told from
//! computing:
//!
//! - the event's CPU time limit (`limits.timeout`) moves out by the time waited, so a
//!   guest waiting on a slow backend is not interrupted for it;
//! - the tenant's CPU permit is given back for the wait (the next tick takes one again);
//! - the event's place under the instance caps (`max_instances`) is traded for a place
//!   among the plugin's waiting events (`max_outbound_requests`), so events waiting on
//!   a slow backend leave the compute places to the route's other connections; the
//!   instance stays alive and its memory stays charged to the tenant's budget;
//! - all of an event's waits together end by `limits.outbound_timeout`.
//!
//! Plugins granted no outbound origin have nothing to wait on: their waits are not
//! accounted and stay bounded by the event's time limit, as before.

use std::time::{Duration, Instant};

use wasmtime::component::{HasData, Linker, Resource, ResourceTable};
use wasmtime_wasi::p2::DynPollable;
use wasmtime_wasi_io::bindings::wasi::io::poll;

use super::quota::Turn;
use super::state::{EventScope, HostState, PluginScope};

/// How long past the end of an event's waits the wait itself is cut: a call's own
/// deadline is the end of the waits, so the guest sees the call time out (an error it
/// can handle) rather than being stopped.
pub const MARGIN: Duration = Duration::from_millis(50);

/// What cut an event's waits: it waited on HTTP calls past its `outbound_timeout`, or
/// no instance place freed up for it before that.
#[derive(Debug, thiserror::Error)]
#[error("the plugin waited on HTTP calls past its {0:?} outbound_timeout")]
pub struct WaitLimit(pub Duration);

/// Links the wrapped `wasi:io/poll` over the one wasmtime-wasi linked.
pub fn add_to_linker(linker: &mut Linker<HostState>) -> wasmtime::Result<()> {
    linker.allow_shadowing(true);
    let linked = poll::add_to_linker::<HostState, Waits>(linker, |state| Waiter::of(state));
    linker.allow_shadowing(false);
    linked
}

struct Waits;

impl HasData for Waits {
    type Data<'a> = Waiter<'a>;
}

/// The store's state as the poll wrapper sees it.
pub struct Waiter<'a> {
    table: &'a mut ResourceTable,
    event: &'a mut EventScope,
    place: &'a mut Option<Turn>,
    waiting: &'a mut Option<tokio::sync::OwnedSemaphorePermit>,
    cpu: &'a std::sync::Arc<std::sync::Mutex<Option<tokio::sync::OwnedSemaphorePermit>>>,
    scope: &'a std::sync::Arc<PluginScope>,
}

impl<'a> Waiter<'a> {
    /// The store's state as a wait sees it: for the poll wrapper, and for a host call
    /// that waits itself (`http-client.send`).
    pub fn of(state: &'a mut HostState) -> Waiter<'a> {
        Waiter {
            table: &mut state.table,
            event: &mut state.event,
            place: &mut state.place,
            waiting: &mut state.waiting,
            cpu: &state.turn,
            scope: &state.scope,
        }
    }
}

impl Waiter<'_> {
    /// Whether this plugin's waits are accounted (it may call out).
    fn accounted(&self) -> bool {
        self.scope.outbound.reach.is_some()
    }

    /// Gives back the CPU permit and trades the instance place for a waiting place,
    /// if one is free (otherwise the event keeps its place: it is still bounded).
    pub fn begin(&mut self) -> Instant {
        self.cpu.lock().unwrap_or_else(|e| e.into_inner()).take();
        if self.place.is_some()
            && let Some(reach) = &self.scope.outbound.reach
            && let Ok(permit) = reach.waiting.clone().try_acquire_owned()
        {
            *self.waiting = Some(permit);
            self.place.take();
        }
        Instant::now()
    }

    /// Moves the CPU deadline out by the time waited and takes an instance place
    /// again, by the end of the event's waits at the latest.
    pub async fn end(&mut self, started: Instant) -> wasmtime::Result<()> {
        if self.place.is_none() {
            let take = Turn::take(&self.scope.instances, &self.scope.quota.instances);
            match tokio::time::timeout_at((self.event.waits_until + MARGIN).into(), take).await {
                Ok(turn) => *self.place = Some(turn),
                Err(_) => return Err(self.limit()),
            }
        }
        self.waiting.take();
        self.event.deadline += started.elapsed();
        Ok(())
    }

    fn limit(&self) -> wasmtime::Error {
        let timeout = self.scope.limits.outbound_timeout;
        wasmtime::Error::new(WaitLimit(timeout))
    }
}

impl poll::Host for Waiter<'_> {
    async fn poll(&mut self, list: Vec<Resource<DynPollable>>) -> wasmtime::Result<Vec<u32>> {
        if !self.accounted() {
            return poll::Host::poll(&mut *self.table, list).await;
        }
        let started = self.begin();
        let until = self.event.waits_until + MARGIN;
        let ready =
            tokio::time::timeout_at(until.into(), poll::Host::poll(&mut *self.table, list)).await;
        self.end(started).await?;
        ready.map_err(|_| self.limit())?
    }
}

impl poll::HostPollable for Waiter<'_> {
    async fn block(&mut self, pollable: Resource<DynPollable>) -> wasmtime::Result<()> {
        // Ready already (a body chunk that came with the answer): no wait to account.
        let ready = Resource::new_borrow(pollable.rep());
        if !self.accounted() || poll::HostPollable::ready(&mut *self.table, ready).await? {
            return poll::HostPollable::block(&mut *self.table, pollable).await;
        }
        let started = self.begin();
        let until = self.event.waits_until + MARGIN;
        let ready = tokio::time::timeout_at(
            until.into(),
            poll::HostPollable::block(&mut *self.table, pollable),
        )
        .await;
        self.end(started).await?;
        ready.map_err(|_| self.limit())?
    }

    async fn ready(&mut self, pollable: Resource<DynPollable>) -> wasmtime::Result<bool> {
        poll::HostPollable::ready(&mut *self.table, pollable).await
    }

    fn drop(&mut self, pollable: Resource<DynPollable>) -> wasmtime::Result<()> {
        poll::HostPollable::drop(&mut *self.table, pollable)
    }
}
