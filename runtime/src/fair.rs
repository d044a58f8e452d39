//! A tenant's quotas across all of its connections: `tenant_message_rate` and
//! `tenant_bytes_rate` hold its readers back once it sends more than it may (they read
//! nothing more until the quota lets the message through, so TCP slows the clients
//! down and nothing is dropped), and `new_connections_per_second` refuses upgrades.
//!
//! Why there is no share of the cores by default: a per-tenant semaphore held for an
//! event's first poll was tried, and it never waits. A permit held only within one
//! poll of one task is held by at most one task per worker thread, so with one permit
//! per worker no tenant ever runs out; and most of an echo's CPU is the socket read and
//! the reply's write, outside the event anyway. Sharing the cores between tenants
//! needs the read itself to wait for a tenant's turn (README, S11).

use std::num::NonZeroU32;
use std::sync::Arc;

use arc_swap::ArcSwap;
use governor::clock::{Clock, DefaultClock};
use governor::{DefaultDirectRateLimiter, Quota as GovernorQuota, RateLimiter};

use crate::config::TenantLimits;

/// A tenant's quotas; they outlive config snapshots.
#[derive(Debug)]
pub struct TenantShare {
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

impl TenantShare {
    /// A share under `limits`' quotas.
    pub fn new(limits: &TenantLimits) -> TenantShare {
        TenantShare {
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

    /// Waits until the tenant's quotas let a message of `bytes` through.
    pub async fn admit(&self, bytes: usize) {
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

    // Governor keeps real time, so these run on the real clock: only lower bounds on
    // waits are asserted (a loaded machine makes things slower, never faster), and the
    // burst's bound is loose.
    #[tokio::test]
    async fn the_message_quota_lets_the_burst_through_then_the_rate() {
        let share = TenantShare::new(&limits(Some(10), Some(5), None));
        let started = std::time::Instant::now();
        for _ in 0..5 {
            share.admit(1).await;
        }
        assert!(
            started.elapsed() < Duration::from_millis(90),
            "the burst waited"
        );
        for _ in 0..3 {
            share.admit(1).await;
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
        share.admit(1000).await;
        assert!(started.elapsed() < Duration::from_millis(90));
        share.admit(50).await;
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
