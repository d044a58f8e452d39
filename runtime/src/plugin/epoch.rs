//! What happens at each epoch tick while a guest runs: interrupt it past its deadline,
//! make it wait for one of its tenant's event permits once it runs long, and yield to
//! the reactor. (Whether its plugin is CPU-heavy is measured around the whole call,
//! by `heavy::metered`: ticks are wall-clock time and cannot tell compute from waits.)

use std::time::Instant;

use wasmtime::{StoreContextMut, UpdateDeadline};

use super::state::HostState;

/// The store's epoch-deadline callback.
pub fn on_tick(ctx: StoreContextMut<'_, HostState>) -> wasmtime::Result<UpdateDeadline> {
    let state = ctx.data();
    let now = Instant::now();
    if now >= state.event.deadline {
        return Ok(UpdateDeadline::Interrupt);
    }
    let starting = state.event.starting_until.is_some_and(|until| now < until);
    if !starting && let Some(wait) = wait_for_turn(state) {
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
