//! Failed authentications per source address: a burst, then a rate (governor's GCRA),
//! after which every request from that address is answered 429 without its
//! credentials being checked, so whoever guesses keys gets a handful of guesses a
//! second per address instead of tens of thousands.
//!
//! The state is one theoretical-arrival time per source, in a map this module owns
//! (governor's [`StateStore`]), because two things need more than governor's own
//! keyed stores give:
//! - a look that records nothing: a request is admitted or throttled before its
//!   credentials are checked, and only a failure costs a cell, so a backend that never
//!   fails is never limited however fast it calls;
//! - a hard bound: sources that have stopped failing are dropped (`retain_recent`) every
//!   [`SWEEP_EVERY`] failures, and when `max_sources` are tracked anyway (an attacker
//!   with many addresses), the least limited half is forgotten. Sources deep in debt stay
//!   throttled, and memory stays at about `max_sources` entries whatever the number of
//!   addresses. An IPv6 source is its /64 network, the block one host usually has.

use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use dashmap::DashMap;
use governor::clock::{Clock, DefaultClock};
use governor::middleware::NoOpMiddleware;
use governor::nanos::Nanos;
use governor::state::StateStore;
use governor::state::keyed::ShrinkableKeyedStateStore;
use governor::{Quota, RateLimiter};

/// Failures between two sweeps of sources that stopped failing.
const SWEEP_EVERY: u64 = 1024;

/// A source as it is limited, in 64 bits: an IPv6 address's /64 network prefix, or an
/// IPv4 address placed in `ffff::/16`, multicast space that no TCP peer has.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Source(u64);

impl From<IpAddr> for Source {
    fn from(ip: IpAddr) -> Source {
        match ip.to_canonical() {
            IpAddr::V4(v4) => Source((0xffff << 48) | u64::from(u32::from(v4))),
            IpAddr::V6(v6) => Source((u128::from(v6) >> 64) as u64),
        }
    }
}

/// A question to the state store: whether `source` may fail once more, and whether
/// to record that failure (`record`) or only look (`!record`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct Probe {
    source: Source,
    record: bool,
}

/// Each tracked source's theoretical arrival time, in nanoseconds since the limiter
/// started (governor's [`Nanos`]).
#[derive(Debug, Default, Clone)]
struct Sources(Arc<DashMap<Source, u64>>);

impl StateStore for Sources {
    type Key = Probe;

    fn measure_and_replace<T, F, E>(&self, probe: &Probe, f: F) -> Result<T, E>
    where
        F: Fn(Option<Nanos>) -> Result<(T, Nanos), E>,
    {
        if !probe.record {
            // A look: what the next failure would meet, with nothing stored, so a
            // source that never fails never takes an entry.
            let current = self.0.get(&probe.source).map(|tat| Nanos::from(*tat));
            return f(current).map(|(outcome, _)| outcome);
        }
        match self.0.entry(probe.source) {
            dashmap::Entry::Occupied(mut entry) => {
                let (outcome, next) = f(Some(Nanos::from(*entry.get())))?;
                *entry.get_mut() = next.as_u64();
                Ok(outcome)
            }
            dashmap::Entry::Vacant(entry) => {
                let (outcome, next) = f(None)?;
                entry.insert(next.as_u64());
                Ok(outcome)
            }
        }
    }
}

impl ShrinkableKeyedStateStore<Probe> for Sources {
    fn retain_recent(&self, drop_below: Nanos) {
        let drop_below = drop_below.as_u64();
        self.0.retain(|_, tat| *tat > drop_below);
    }

    fn shrink_to_fit(&self) {
        self.0.shrink_to_fit();
    }

    fn len(&self) -> usize {
        self.0.len()
    }

    fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// Failed authentications per source address, within a burst and a rate.
pub struct FailureLimiter<C: Clock = DefaultClock> {
    limiter: RateLimiter<Probe, Sources, C, NoOpMiddleware<C::Instant>>,
    /// The same map the limiter holds, for eviction.
    sources: Sources,
    /// Most sources tracked at once.
    max_sources: usize,
    /// Failures recorded, to sweep every [`SWEEP_EVERY`].
    failures: AtomicU64,
}

impl FailureLimiter {
    /// `quota` (a burst, then a rate) of failures for each of at most `max_sources`
    /// sources, on the real clock.
    pub fn new(quota: Quota, max_sources: usize) -> FailureLimiter {
        FailureLimiter::with_clock(quota, max_sources, DefaultClock::default())
    }
}

impl<C: Clock> FailureLimiter<C> {
    /// As [`FailureLimiter::new`], on `clock`.
    pub fn with_clock(quota: Quota, max_sources: usize, clock: C) -> FailureLimiter<C> {
        let sources = Sources::default();
        FailureLimiter {
            limiter: RateLimiter::new(quota, sources.clone(), clock),
            sources,
            max_sources: max_sources.max(2),
            failures: AtomicU64::new(0),
        }
    }

    /// `None` while `ip` may still try credentials; else how long until it may again.
    pub fn throttled(&self, ip: IpAddr) -> Option<Duration> {
        let probe = Probe {
            source: ip.into(),
            record: false,
        };
        let refused = self.limiter.check_key(&probe).err()?;
        Some(refused.wait_time_from(self.limiter.clock().now()))
    }

    /// Records a failed authentication from `ip`.
    pub fn failed(&self, ip: IpAddr) {
        self.make_room();
        let probe = Probe {
            source: ip.into(),
            record: true,
        };
        // Refused means the source is past its limit already: its state stays as it is.
        let _ = self.limiter.check_key(&probe);
    }

    /// Sources tracked now.
    pub fn tracked(&self) -> usize {
        self.sources.0.len()
    }

    /// An upper estimate of the heap the tracked sources take, in bytes.
    pub fn heap_bytes(&self) -> usize {
        // A hashbrown bucket per slot (key, value) plus one control byte.
        let slot = std::mem::size_of::<(Source, u64)>() + 1;
        self.sources.0.capacity() * 8 / 7 * slot
    }

    /// Drops sources that stopped failing, every [`SWEEP_EVERY`] failures and whenever
    /// `max_sources` are tracked; if that is not enough, forgets the least limited half.
    fn make_room(&self) {
        let failures = self.failures.fetch_add(1, Ordering::Relaxed);
        let full = self.tracked() >= self.max_sources;
        if !full && !failures.is_multiple_of(SWEEP_EVERY) {
            return;
        }
        self.limiter.retain_recent();
        if self.tracked() >= self.max_sources {
            self.forget_least_limited(self.max_sources / 2);
        }
        if self.sources.0.capacity() > 4 * self.tracked().max(1024) {
            self.limiter.shrink_to_fit();
        }
    }

    /// Keeps the `keep` sources furthest in debt (latest arrival times).
    fn forget_least_limited(&self, keep: usize) {
        let mut times: Vec<u64> = self.sources.0.iter().map(|entry| *entry.value()).collect();
        if times.len() <= keep {
            return;
        }
        let cut = times.len() - keep;
        let (_, threshold, _) = times.select_nth_unstable(cut);
        let threshold = *threshold;
        self.sources.0.retain(|_, tat| *tat > threshold);
        self.limiter.shrink_to_fit();
    }
}

#[cfg(test)]
mod tests {
    use std::net::{Ipv4Addr, Ipv6Addr};

    use std::num::NonZeroU32;

    use governor::clock::FakeRelativeClock;

    use super::*;

    fn limiter(max_sources: usize) -> (FailureLimiter<FakeRelativeClock>, FakeRelativeClock) {
        let clock = FakeRelativeClock::default();
        let quota = Quota::per_second(NonZeroU32::new(5).unwrap())
            .allow_burst(NonZeroU32::new(20).unwrap());
        let limiter = FailureLimiter::with_clock(quota, max_sources, clock.clone());
        (limiter, clock)
    }

    fn v4(n: u32) -> IpAddr {
        IpAddr::V4(Ipv4Addr::from(n))
    }

    /// A burst of 20 failures, then one per 200 ms; looking records nothing.
    #[test]
    fn a_source_gets_its_burst_then_its_rate() {
        let (limiter, clock) = limiter(1024);
        let attacker = v4(1);
        for _ in 0..20 {
            assert_eq!(limiter.throttled(attacker), None);
            limiter.failed(attacker);
        }
        let wait = limiter.throttled(attacker).expect("past the burst");
        assert!(wait <= Duration::from_millis(200), "{wait:?}");
        // Looking a thousand times neither throttles nor tracks a source that never failed.
        for _ in 0..1000 {
            assert_eq!(limiter.throttled(v4(2)), None);
        }
        assert_eq!(limiter.tracked(), 1);
        clock.advance(Duration::from_millis(200));
        assert_eq!(limiter.throttled(attacker), None, "one more after 200 ms");
        limiter.failed(attacker);
        assert!(limiter.throttled(attacker).is_some());
    }

    /// All addresses of one IPv6 /64 are one source; IPv4-mapped addresses are IPv4.
    #[test]
    fn an_ipv6_network_is_one_source() {
        let (limiter, _clock) = limiter(1024);
        for host in 0..20u128 {
            let ip = Ipv6Addr::from((0x2001_0db8_0000_0001u128 << 64) | (host * 7919));
            limiter.failed(IpAddr::V6(ip));
        }
        let other_host = Ipv6Addr::from((0x2001_0db8_0000_0001u128 << 64) | 0xdead_beef);
        assert!(limiter.throttled(IpAddr::V6(other_host)).is_some());
        assert_eq!(limiter.tracked(), 1);
        let mapped = IpAddr::V6(Ipv4Addr::new(10, 0, 0, 1).to_ipv6_mapped());
        assert_eq!(Source::from(mapped), Source::from(v4(0x0a00_0001)));
    }

    /// The attack on the limiter itself: a million addresses failing once each, all
    /// within one instant (so none has gone stale), keep at most `max_sources` entries,
    /// and a source that failed past its limit before the flood is still throttled
    /// after it. Without the bound, the map would hold a million entries.
    #[test]
    fn a_million_addresses_cannot_grow_the_state_past_its_bound() {
        let max_sources = 65_536;
        let (limiter, _clock) = limiter(max_sources);
        let persistent = v4(u32::MAX);
        for _ in 0..25 {
            limiter.failed(persistent);
        }
        let (mut most, mut most_bytes) = (0, 0);
        for n in 0..1_000_000 {
            limiter.failed(v4(n));
            most = most.max(limiter.tracked());
            most_bytes = most_bytes.max(limiter.heap_bytes());
        }
        assert!(most <= max_sources, "{most} sources tracked");
        assert!(
            limiter.throttled(persistent).is_some(),
            "the persistent failer was forgotten"
        );
        println!("failure limiter: at most {most} sources, at most {most_bytes} heap bytes");
        assert!(
            most_bytes <= 3 << 20,
            "{most_bytes} bytes for {max_sources} sources"
        );
    }

    /// Sources that stopped failing are dropped at the next sweep.
    #[test]
    fn quiet_sources_are_swept() {
        let (limiter, clock) = limiter(1 << 20);
        // The first failure sweeps (an empty map); the next sweep is SWEEP_EVERY later.
        for n in 0..SWEEP_EVERY as u32 {
            limiter.failed(v4(n));
        }
        assert_eq!(limiter.tracked(), SWEEP_EVERY as usize);
        clock.advance(Duration::from_secs(10));
        limiter.failed(v4(u32::MAX));
        assert_eq!(limiter.tracked(), 1, "only the newest failure is left");
    }
}
