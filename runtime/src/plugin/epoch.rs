//! What happens at each epoch tick while a guest runs: interrupt it past its deadline,
//! mark its plugin heavy after whole ticks of compute, make it wait for one of its
//! tenant's event permits once it runs long, and yield to the reactor.

use std::sync::atomic::Ordering;
use std::time::Instant;

use wasmtime::{StoreContextMut, UpdateDeadline};

use super::heavy;
use super::state::HostState;

/// The store's epoch-deadline callback.
pub fn on_tick(mut ctx: StoreContextMut<'_, HostState>) -> wasmtime::Result<UpdateDeadline> {
    let state = ctx.data_mut();
    if Instant::now() >= state.event.deadline {
        return Ok(UpdateDeadline::Interrupt);
    }
    count_compute(state);
    if let Some(wait) = wait_for_turn(state) {
        return Ok(wait);
    }
    // tokio's yield_now lets the worker poll the I/O driver before it runs the guest
    // again; a plain self-wake would keep a spinning guest runnable and starve other
    // connections' socket events for a whole event interval.
    Ok(UpdateDeadline::YieldCustom(
        1,
        Box::pin(tokio::task::yield_now()),
    ))
}

/// Counts ticks of guest compute (no host call since the last tick); enough of them in
/// a row mark the plugin heavy, and its next events go to the low-priority lane.
fn count_compute(state: &mut HostState) {
    if state.host_calls == state.event.calls_at_tick {
        state.event.ticks += 1;
    } else {
        state.event.ticks = 1;
        state.event.calls_at_tick = state.host_calls;
    }
    if state.event.ticks >= heavy::HEAVY_TICKS && !heavy::on_lane() {
        let heavy_until = crate::registry::now_ms() + heavy::HEAVY_FOR.as_millis() as u64;
        state
            .scope
            .heavy_until_ms
            .store(heavy_until, Ordering::Relaxed);
    }
}

/// The event has run past a tick: from here on it needs one of the tenant's permits,
/// so one tenant's CPU-heavy events cannot hold every core. Short events never get here
/// and pay nothing. Returns the wait when no permit is free; the wait ends at the
/// event's deadline at the latest, where the next tick interrupts it.
fn wait_for_turn(state: &HostState) -> Option<UpdateDeadline> {
    let mut turn = state.turn.lock().unwrap_or_else(|e| e.into_inner());
    if turn.is_some() {
        return None;
    }
    match state.scope.events.clone().try_acquire_owned() {
        Ok(permit) => {
            *turn = Some(permit);
            None
        }
        Err(_) => {
            // Wait suspended, not spinning, until a permit frees up.
            let events = state.scope.events.clone();
            let slot = state.turn.clone();
            let deadline = tokio::time::Instant::from_std(state.event.deadline);
            Some(UpdateDeadline::YieldCustom(
                1,
                Box::pin(async move {
                    let permit = tokio::time::timeout_at(deadline, events.acquire_owned());
                    if let Ok(Ok(permit)) = permit.await {
                        *slot.lock().unwrap_or_else(|e| e.into_inner()) = Some(permit);
                    }
                }),
            ))
        }
    }
}
