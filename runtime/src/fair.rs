//! Sharing the gateway between tenants. tokio shares the cores between tasks, that is
//! between connections: a tenant with 200 busy connections would get 50 times the CPU
//! of one with 4. So every message also takes a turn of its tenant's, and a tenant has
//! one turn per core: however many of its connections are busy, at most that many of
//! its messages compute at once, and the others wait without reading their sockets
//! (TCP slows their clients down), leaving the rest of the cores to other tenants.
//!
//! A turn covers a message's first poll only: the synchronous part of its event, which
//! for a quick plugin is the whole of it. An event that yields (it waits on a backend,
//! or computes past an epoch tick) gives its turn back there: waiting is not computing,
//! and long computing is already shared by the tenant's event permits
//! (`max_concurrent_events`).
//!
//! On top of that, optional quotas (`tenant_message_rate`, `tenant_bytes_rate`) hold a
//! tenant's readers back once it sends more than it may, again by not reading.

use std::future::Future;
use std::num::NonZeroU32;
use std::pin::pin;
use std::sync::Arc;

use arc_swap::ArcSwap;
use governor::clock::{Clock, DefaultClock};
use governor::{DefaultDirectRateLimiter, Quota as GovernorQuota, RateLimiter};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::config::TenantLimits;

/// A tenant's share of the gateway; it outlives config snapshots.
#[derive(Debug)]
pub struct TenantShare {
    /// Its messages in their first poll at once: one per core.
    turns: Arc<Semaphore>,
    /// Its quotas, replaced when a reload changes them.
    quota: ArcSwap<Quota>,
    /// One reader at a time waits on the quotas, the others queue behind it (in
    /// order): with all of them sleeping on the limiter, every cell let through would
    /// wake them all.
    queue: tokio::sync::Mutex<()>,
}

/// A tenant's message and byte quotas.
#[derive(Debug, Default)]
struct Quota {
    /// The settings they were made from, to tell whether a reload changed them.
    settings: QuotaSettings,
    messages: Option<DefaultDirectRateLimiter>,
    bytes: Option<DefaultDirectRateLimiter>,
    /// New connections per second (checked, not waited for: a refusal is a 429).
    connects: Option<DefaultDirectRateLimiter>,
}

/// The limits a [`Quota`] is made from.
type QuotaSettings = (
    Option<u32>,
    Option<u32>,
    Option<u32>,
    usize,
    Option<u32>,
    Option<u32>,
);

impl Quota {
    fn new(limits: &TenantLimits) -> Quota {
        let settings = (
            limits.tenant_message_rate,
            limits.tenant_message_burst,
            limits.tenant_bytes_rate,
            limits.max_message_bytes,
            limits.new_connections_per_second,
            limits.new_connections_burst,
        );
        let limiter = |rate: u32, burst: u32| {
            let rate = NonZeroU32::new(rate).unwrap_or(NonZeroU32::MIN);
            let burst = NonZeroU32::new(burst).unwrap_or(rate);
            RateLimiter::direct(GovernorQuota::per_second(rate).allow_burst(burst))
        };
        Quota {
            settings,
            messages: limits
                .tenant_message_rate
                .map(|rate| limiter(rate, limits.tenant_message_burst.unwrap_or(rate))),
            // One second's worth, and never less than one message of the largest size,
            // which could otherwise never pass.
            bytes: limits.tenant_bytes_rate.map(|rate| {
                let max = u32::try_from(limits.max_message_bytes).unwrap_or(u32::MAX);
                limiter(rate, rate.max(max))
            }),
            connects: limits
                .new_connections_per_second
                .map(|rate| limiter(rate, limits.new_connections_burst.unwrap_or(rate))),
        }
    }
}

/// A message's turn: held for its first poll (see [`TenantShare::run`]).
#[derive(Debug)]
pub struct Turn {
    _permit: OwnedSemaphorePermit,
}

/// Turns per tenant: the cores the gateway runs on.
fn turns_per_tenant() -> usize {
    std::thread::available_parallelism().map_or(2, |n| n.get())
}

impl TenantShare {
    /// A share under `limits`' quotas.
    pub fn new(limits: &TenantLimits) -> TenantShare {
        TenantShare {
            turns: Arc::new(Semaphore::new(turns_per_tenant())),
            quota: ArcSwap::from_pointee(Quota::new(limits)),
            queue: tokio::sync::Mutex::new(()),
        }
    }

    /// Applies `limits`' quotas from now on; unchanged quotas keep their state.
    pub fn update(&self, limits: &TenantLimits) {
        let quota = Quota::new(limits);
        if quota.settings != self.quota.load().settings {
            self.quota.store(Arc::new(quota));
        }
    }

    /// Takes a new connection under the tenant's `new_connections_per_second`, or says
    /// how long until one may be.
    pub fn connect(&self) -> Result<(), std::time::Duration> {
        let quota = self.quota.load();
        match &quota.connects {
            Some(limiter) => limiter
                .check()
                .map_err(|not_until| not_until.wait_time_from(DefaultClock::default().now())),
            None => Ok(()),
        }
    }

    /// Waits until the tenant's quotas let a message of `bytes` through, then for one
    /// of its turns.
    pub async fn admit(&self, bytes: usize) -> Turn {
        let quota = self.quota.load_full();
        if quota.messages.is_some() || quota.bytes.is_some() {
            let _first_in_line = self.queue.lock().await;
            if let Some(messages) = &quota.messages {
                wait_for(messages, NonZeroU32::MIN).await;
            }
            if let Some(limiter) = &quota.bytes {
                let n = u32::try_from(bytes.max(1)).unwrap_or(u32::MAX);
                wait_for(limiter, NonZeroU32::new(n).unwrap_or(NonZeroU32::MIN)).await;
            }
        }
        let permit = self.turns.clone().acquire_owned().await;
        Turn {
            _permit: permit.expect("the turns semaphore is never closed"),
        }
    }

    /// Runs `event` holding `turn` for its first poll only (see the module's doc).
    pub async fn run<F: Future>(turn: Turn, event: F) -> F::Output {
        let mut event = pin!(event);
        let mut turn = Some(turn);
        std::future::poll_fn(move |cx| {
            let polled = event.as_mut().poll(cx);
            if polled.is_pending() {
                drop(turn.take());
            }
            polled
        })
        .await
    }
}

/// Waits until `limiter` lets `n` cells through. `n` is within the limiter's burst by
/// construction; if it were not, it is let through rather than held for ever.
async fn wait_for(limiter: &DefaultDirectRateLimiter, n: NonZeroU32) {
    loop {
        match limiter.check_n(n) {
            Ok(Ok(())) | Err(_) => return,
            Ok(Err(not_until)) => {
                let wait = not_until.wait_time_from(DefaultClock::default().now());
                tokio::time::sleep(wait).await;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn new_connections_are_rated_per_tenant() {
        let share = TenantShare::new(&TenantLimits {
            new_connections_per_second: Some(2),
            ..TenantLimits::default()
        });
        assert!(share.connect().is_ok() && share.connect().is_ok());
        let wait = share.connect().unwrap_err();
        assert!(wait > Duration::ZERO && wait <= Duration::from_secs(1));
    }

    fn limits(rate: Option<u32>, burst: Option<u32>, bytes: Option<u32>) -> TenantLimits {
        TenantLimits {
            tenant_message_rate: rate,
            tenant_message_burst: burst,
            tenant_bytes_rate: bytes,
            max_message_bytes: 1000,
            ..TenantLimits::default()
        }
    }

    #[tokio::test]
    async fn a_tenant_has_one_turn_per_core_and_a_waiting_event_gives_its_turn_back() {
        let share = TenantShare::new(&limits(None, None, None));
        let cores = turns_per_tenant();
        let mut held = Vec::new();
        for _ in 0..cores {
            held.push(share.admit(1).await);
        }
        let next = tokio::time::timeout(Duration::from_millis(50), share.admit(1)).await;
        assert!(next.is_err(), "a turn past one per core");
        drop(held);

        // An event that waits gives its turn back at its first pending poll.
        let turn = share.admit(1).await;
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let waiting = tokio::spawn(TenantShare::run(turn, rx));
        let mut others = Vec::new();
        for _ in 0..cores {
            let turn = tokio::time::timeout(Duration::from_secs(5), share.admit(1))
                .await
                .expect("the waiting event still holds its turn");
            others.push(turn);
        }
        tx.send(()).unwrap();
        waiting.await.unwrap().unwrap();
    }

    // Governor keeps real time, so these run on the real clock: only lower bounds on
    // waits are asserted (a loaded machine makes things slower, never faster), and the
    // burst's bound is loose.
    #[tokio::test]
    async fn the_message_quota_lets_the_burst_through_then_the_rate() {
        let share = TenantShare::new(&limits(Some(10), Some(5), None));
        let started = std::time::Instant::now();
        for _ in 0..5 {
            drop(share.admit(1).await);
        }
        assert!(
            started.elapsed() < Duration::from_millis(90),
            "the burst waited"
        );
        for _ in 0..3 {
            drop(share.admit(1).await);
        }
        assert!(
            started.elapsed() >= Duration::from_millis(250),
            "3 more at 10/s"
        );
    }

    #[tokio::test]
    async fn the_byte_quota_passes_a_maximal_message_and_holds_the_rest() {
        let share = TenantShare::new(&limits(None, None, Some(100)));
        let started = std::time::Instant::now();
        // Larger than the rate, within the maximal message: let through at once.
        drop(share.admit(1000).await);
        assert!(started.elapsed() < Duration::from_millis(90));
        drop(share.admit(50).await);
        assert!(
            started.elapsed() >= Duration::from_millis(400),
            "50 more bytes at 100/s"
        );
    }

    #[test]
    fn a_reload_replaces_only_changed_quotas() {
        let share = TenantShare::new(&limits(Some(10), None, None));
        let before = share.quota.load_full();
        share.update(&limits(Some(10), None, None));
        assert!(Arc::ptr_eq(&before, &share.quota.load_full()));
        share.update(&limits(Some(20), None, None));
        assert!(!Arc::ptr_eq(&before, &share.quota.load_full()));
    }
}
