//! How tenants share the gateway.
//!
//! **Turns, when a crowd of one tenant's connections meets other tenants.** Every
//! connection is a task, and the scheduler gives each runnable task a turn: a tenant
//! with 200 busy connections would get 50 turns for each one of a tenant with 4. So
//! messages and sending connections are counted per [`WINDOW`], and a tenant more than
//! [`CROWD`] of whose connections sent in the last one, while other tenants sent too,
//! takes turns: each of its messages waits for the tenant's turn (one per tenant,
//! granted in order and held across one yield to the scheduler), and the connection's
//! next message is read in its turn too. Its other readers wait for the turn off the
//! run queue, reading nothing (so TCP holds their clients back): it gets about one
//! message read per scheduling round however many connections it floods from, and the
//! other tenants' messages run in between without waiting. The turn is never held
//! across a plugin's event, so a plugin that waits on a backend holds none. A tenant
//! alone on the gateway, or with few connections sending, never takes turns.
//!
//! **Quotas, when configured.** `tenant_message_rate` and `tenant_bytes_rate` hold a
//! tenant's readers back once it sends more than it may (they read nothing more until
//! the quota lets the message through, so TCP slows the clients down and nothing is
//! dropped), and `new_connections_per_second` refuses upgrades.

use std::num::NonZeroU32;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use governor::clock::{Clock, DefaultClock};
use governor::{DefaultDirectRateLimiter, Quota as GovernorQuota, RateLimiter};

use crate::config::TenantLimits;

/// Messages and sending connections are counted per window of this length.
pub const WINDOW: Duration = Duration::from_millis(50);

/// A tenant takes turns when more of its connections than this sent in the last window
/// and other tenants sent too.
pub const CROWD: u64 = 8;

/// Messages read per window, gateway-wide.
#[derive(Debug)]
pub struct Contention {
    epoch: Instant,
    /// Counts of the current window (see [`Counts`]).
    counts: Counts,
}

impl Default for Contention {
    fn default() -> Self {
        Contention {
            epoch: Instant::now(),
            counts: Counts::default(),
        }
    }
}

/// Reads in the current window and in the one before it. A new window is started by
/// the first read in it; counts racing with that may land in either window, which
/// only blurs the figures a little.
#[derive(Debug, Default)]
struct Counts {
    window: AtomicU64,
    current: AtomicU64,
    previous: AtomicU64,
}

impl Counts {
    /// Counts one read in window `now`; returns the count of the window before it.
    fn add(&self, now: u64) -> u64 {
        let window = self.window.load(Ordering::Relaxed);
        // Only forward: a reader that read the clock before a rotation must not undo it.
        if window < now
            && self
                .window
                .compare_exchange(window, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            let ended = self.current.swap(0, Ordering::Relaxed);
            let previous = if now == window + 1 { ended } else { 0 };
            self.previous.store(previous, Ordering::Relaxed);
        }
        self.current.fetch_add(1, Ordering::Relaxed);
        self.previous(now)
    }

    /// The count of the window before `now`.
    fn previous(&self, now: u64) -> u64 {
        match now.checked_sub(self.window.load(Ordering::Relaxed)) {
            Some(0) => self.previous.load(Ordering::Relaxed),
            Some(1) => self.current.load(Ordering::Relaxed),
            _ => 0,
        }
    }
}

impl Contention {
    fn window(&self) -> u64 {
        (self.epoch.elapsed().as_micros() / WINDOW.as_micros()) as u64
    }
}

/// A tenant's share: its turn and quotas; it outlives config snapshots.
#[derive(Debug)]
pub struct TenantShare {
    /// Its quotas, replaced when a reload changes them.
    quota: ArcSwap<Quota>,
    /// One reader at a time waits on the quotas, the others queue behind it (in
    /// order): with all of them sleeping on the limiter, every cell let through would
    /// wake them all.
    queue: tokio::sync::Mutex<()>,
    /// Messages read by every tenant.
    contention: Arc<Contention>,
    /// Messages read by this one.
    reads: Counts,
    /// Its connections that sent in a window.
    senders: Counts,
    /// The tenant's turn, granted in the order it is asked for.
    turn: tokio::sync::Semaphore,
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
    /// A share under `limits`' quotas, among the gateway's `contention`.
    pub fn new(limits: &TenantLimits, contention: Arc<Contention>) -> TenantShare {
        TenantShare {
            quota: ArcSwap::from_pointee(Quota::new(limits)),
            queue: tokio::sync::Mutex::new(()),
            contention,
            reads: Counts::default(),
            senders: Counts::default(),
            turn: tokio::sync::Semaphore::new(1),
        }
    }

    /// Counts a message the tenant read on a connection that last sent in window
    /// `last_sent` (updated); says whether the tenant should take turns (more than
    /// [`CROWD`] of its connections sent in the last window, and other tenants sent
    /// too), in which case the message waits for [`TenantShare::turn`] (unless it was
    /// read in one) and the connection's next message is read in one.
    pub fn read(&self, last_sent: &mut u64) -> bool {
        self.read_in(self.contention.window(), last_sent)
    }

    /// [`TenantShare::read`] in window `now`.
    fn read_in(&self, now: u64, last_sent: &mut u64) -> bool {
        let all = self.contention.counts.add(now);
        let mine = self.reads.add(now);
        let senders = if *last_sent == now {
            self.senders.previous(now)
        } else {
            *last_sent = now;
            self.senders.add(now)
        };
        senders > CROWD && all > mine
    }

    /// Whether the tenant takes turns (as [`TenantShare::read`] says, counting nothing).
    pub fn heavy(&self) -> bool {
        self.heavy_in(self.contention.window())
    }

    /// [`TenantShare::heavy`] in window `now`.
    fn heavy_in(&self, now: u64) -> bool {
        let all = self.contention.counts.previous(now);
        let mine = self.reads.previous(now);
        self.senders.previous(now) > CROWD && all > mine
    }

    /// Waits for the tenant's turn, runs `read` and holds the turn across one yield to
    /// the scheduler, so the tenant's other connections wait off the run queue
    /// meanwhile (see the module's documentation).
    pub async fn turn<T>(&self, read: impl FnOnce() -> T) -> T {
        // The semaphore is never closed.
        let _turn = self.turn.acquire().await.ok();
        let value = read();
        tokio::task::yield_now().await;
        value
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
        // A guard, not an `Arc`: most tenants have no quota, and every message asks.
        let quota = self.quota.load();
        if quota.messages.is_some() || quota.bytes.is_some() {
            // Owned across the waits: a guard is not meant to be held long.
            let quota = arc_swap::Guard::into_inner(quota);
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
        let share = TenantShare::new(
            &TenantLimits {
                new_connections_per_second: Some(2),
                ..TenantLimits::default()
            },
            Arc::default(),
        );
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
        let share = TenantShare::new(&limits(Some(10), Some(5), None), Arc::default());
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
        let share = TenantShare::new(&limits(None, None, Some(100)), Arc::default());
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
    fn a_crowd_of_one_tenant_takes_turns_while_others_send() {
        let contention = Arc::new(Contention::default());
        let crowd = TenantShare::new(&TenantLimits::default(), contention.clone());
        let few = TenantShare::new(&TenantLimits::default(), contention.clone());
        // Each connection remembers the window it last sent in.
        let mut crowd_connections = vec![0; 2 * CROWD as usize];
        let mut few_connections = vec![0; 2];
        let send_all = |share: &TenantShare, window: u64, connections: &mut Vec<u64>| {
            connections
                .iter_mut()
                .map(|c| share.read_in(window, c))
                .collect::<Vec<_>>()
        };
        // Alone, the crowd never takes turns.
        for window in 1..4 {
            let turns = send_all(&crowd, window, &mut crowd_connections);
            assert!(turns.iter().all(|t| !t), "alone: {turns:?}");
        }
        // With another tenant sending, it does from the next window on.
        send_all(&few, 4, &mut few_connections);
        send_all(&crowd, 4, &mut crowd_connections);
        assert!(crowd.heavy_in(5));
        assert!(
            send_all(&crowd, 5, &mut crowd_connections)
                .iter()
                .all(|t| *t)
        );
        assert!(!few.heavy_in(5), "two connections are no crowd");
        assert!(send_all(&few, 5, &mut few_connections).iter().all(|t| !t));
        // A reader whose clock is a window behind changes nothing.
        send_all(&crowd, 4, &mut crowd_connections);
        assert!(crowd.heavy_in(6), "the late reader rotated nothing back");
        // Once the others are quiet for a window, no more turns.
        send_all(&crowd, 6, &mut crowd_connections);
        assert!(!crowd.heavy_in(7), "the others were quiet for a window");
        // Nothing read for longer: nothing counts.
        assert!(!crowd.heavy_in(20));
    }

    #[tokio::test]
    async fn a_turn_is_held_across_one_yield_and_granted_in_order() {
        let share = Arc::new(TenantShare::new(&TenantLimits::default(), Arc::default()));
        let order = Arc::new(std::sync::Mutex::new(Vec::new()));
        let tasks: Vec<_> = (0..3)
            .map(|i| {
                let (share, order) = (share.clone(), order.clone());
                tokio::spawn(async move {
                    share
                        .turn(|| order.lock().unwrap().push(format!("in {i}")))
                        .await;
                    order.lock().unwrap().push(format!("out {i}"));
                })
            })
            .collect();
        for task in tasks {
            task.await.unwrap();
        }
        let order = order.lock().unwrap();
        // Nobody enters while another holds the turn: every "in" is followed by its
        // own "out" before the next "in".
        for pair in order.chunks(2) {
            assert_eq!(pair[0].replace("in", "out"), pair[1], "{order:?}");
        }
    }

    #[test]
    fn a_reload_replaces_only_changed_quotas() {
        let share = TenantShare::new(&limits(Some(10), None, None), Arc::default());
        let before = share.quota.load_full();
        share.update(&limits(Some(10), None, None));
        assert!(Arc::ptr_eq(&before, &share.quota.load_full()));
        share.update(&limits(Some(20), None, None));
        assert!(!Arc::ptr_eq(&before, &share.quota.load_full()));
    }
}
