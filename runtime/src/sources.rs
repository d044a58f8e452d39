//! Limits on new WebSocket connections per source address, checked before the upgrade
//! so that a connect flood never reaches `$connect` plugins or their backends: open
//! connections per source (`limits.max_connections_per_source`) and new ones per
//! second (`limits.new_connections_per_source`). A source is the client's address
//! (through trusted proxies, see [`crate::proxy`]), an IPv6 one its /64.

use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use arc_swap::ArcSwapOption;
use dashmap::DashMap;
use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};

use crate::admin::failures::Source;
use crate::config::GlobalLimits;

/// Checks between two sweeps of sources whose rate state is back to full.
const SWEEP_EVERY: u64 = 4096;

/// Why a source may not open a connection now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    /// It has this many open already.
    Open(usize),
    /// It opened too many too fast; it may again after this.
    Rate(Duration),
}

/// Per-source state; it outlives config snapshots.
#[derive(Debug, Default)]
pub struct SourceLimits {
    /// Open connections by source, while any is open (so bounded by open connections).
    open: Arc<DashMap<Source, usize>>,
    /// The rate limiter and the rate it was made for.
    rate: ArcSwapOption<(u32, DefaultKeyedRateLimiter<Source>)>,
    checks: AtomicU64,
}

/// A connection's place among its source's open connections; given back on drop.
#[derive(Debug)]
pub struct SourceSlot {
    open: Arc<DashMap<Source, usize>>,
    source: Source,
}

impl Drop for SourceSlot {
    fn drop(&mut self) {
        self.open.remove_if_mut(&self.source, |_, n| {
            *n -= 1;
            *n == 0
        });
    }
}

impl SourceLimits {
    /// Admits a new connection from `ip` under `limits`; the slot, when the open
    /// connections of a source are limited, must live as long as the connection.
    pub fn admit(&self, ip: IpAddr, limits: &GlobalLimits) -> Result<Option<SourceSlot>, Refused> {
        let source = Source::from(ip);
        if let Some(per_second) = limits.new_connections_per_source {
            let limiter = self.limiter(per_second);
            if let Some((_, limiter)) = limiter.as_deref()
                && let Err(not_until) = limiter.check_key(&source)
            {
                return Err(Refused::Rate(
                    not_until.wait_time_from(DefaultClock::default().now()),
                ));
            }
            if self.checks.fetch_add(1, Ordering::Relaxed) % SWEEP_EVERY == SWEEP_EVERY - 1
                && let Some((_, limiter)) = limiter.as_deref()
            {
                // Sources back to a full burst hold nothing worth keeping: so the map
                // holds only sources that connected within about a second.
                limiter.retain_recent();
                limiter.shrink_to_fit();
            }
        }
        let Some(max) = limits.max_connections_per_source else {
            return Ok(None);
        };
        let mut open = self.open.entry(source).or_insert(0);
        if *open >= max {
            let n = *open;
            drop(open);
            // An entry made just now for a refused source must not stay at zero.
            self.open.remove_if(&source, |_, n| *n == 0);
            return Err(Refused::Open(n));
        }
        *open += 1;
        Ok(Some(SourceSlot {
            open: self.open.clone(),
            source,
        }))
    }

    /// The limiter for `per_second`, made again when a reload changed the rate.
    fn limiter(&self, per_second: u32) -> Option<Arc<(u32, DefaultKeyedRateLimiter<Source>)>> {
        let current = self.rate.load_full();
        if current.as_ref().is_some_and(|r| r.0 == per_second) {
            return current;
        }
        let rate = NonZeroU32::new(per_second)?;
        let made = Arc::new((per_second, RateLimiter::keyed(Quota::per_second(rate))));
        self.rate.store(Some(made.clone()));
        Some(made)
    }

    /// Sources with open connections tracked now.
    pub fn tracked(&self) -> usize {
        self.open.len()
    }

    /// Sources the per-source rate remembers now.
    #[cfg(test)]
    fn rated(&self) -> usize {
        self.rate
            .load()
            .as_deref()
            .map_or(0, |(_, limiter)| limiter.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(open: Option<usize>, rate: Option<u32>) -> GlobalLimits {
        GlobalLimits {
            max_connections_per_source: open,
            new_connections_per_source: rate,
            ..GlobalLimits::default()
        }
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn open_connections_are_capped_per_source_and_given_back() {
        let sources = SourceLimits::default();
        let cap = limits(Some(2), None);
        let a = sources.admit(ip("192.0.2.1"), &cap).unwrap();
        let _b = sources.admit(ip("192.0.2.1"), &cap).unwrap();
        assert_eq!(
            sources.admit(ip("192.0.2.1"), &cap).unwrap_err(),
            Refused::Open(2)
        );
        // Another source is not affected; one /64 is one source.
        sources.admit(ip("192.0.2.2"), &cap).unwrap();
        let _c = sources.admit(ip("2001:db8::1"), &cap).unwrap();
        let _d = sources.admit(ip("2001:db8::2"), &cap).unwrap();
        assert!(sources.admit(ip("2001:db8::3"), &cap).is_err());
        drop(a);
        assert!(sources.admit(ip("192.0.2.1"), &cap).is_ok());
    }

    #[test]
    fn the_map_holds_only_sources_with_open_connections() {
        let sources = SourceLimits::default();
        let cap = limits(Some(1), None);
        for n in 0..1000u32 {
            let slot = sources.admit(IpAddr::from(n.to_be_bytes()), &cap).unwrap();
            drop(slot);
        }
        assert_eq!(sources.tracked(), 0);
        let _held = sources.admit(ip("192.0.2.1"), &cap).unwrap();
        assert!(sources.admit(ip("192.0.2.1"), &cap).is_err());
        assert_eq!(sources.tracked(), 1, "a refusal leaves nothing behind");
    }

    #[test]
    fn new_connections_are_rated_per_source() {
        let sources = SourceLimits::default();
        let rate = limits(None, Some(3));
        for _ in 0..3 {
            sources.admit(ip("192.0.2.1"), &rate).unwrap();
        }
        let Err(Refused::Rate(wait)) = sources.admit(ip("192.0.2.1"), &rate) else {
            panic!("a fourth connection in the same second was let in");
        };
        assert!(wait > Duration::ZERO && wait <= Duration::from_secs(1));
        sources.admit(ip("192.0.2.9"), &rate).unwrap();
    }

    #[test]
    fn the_rate_map_forgets_sources_that_stopped_connecting() {
        let sources = SourceLimits::default();
        let rate = limits(None, Some(3));
        let source = |n: u32| IpAddr::from(std::net::Ipv4Addr::from(0x0a00_0000 + n));
        // A scan from more sources than a sweep's interval...
        let scan = 2 * SWEEP_EVERY as u32;
        for n in 0..scan {
            sources.admit(source(n), &rate).unwrap();
        }
        assert_eq!(sources.rated(), scan as usize);
        // ...is forgotten by the first sweep once those sources are back to a full
        // burst (a third of a second at 3 a second; governor keeps real time).
        std::thread::sleep(Duration::from_millis(1100));
        for n in scan..scan + SWEEP_EVERY as u32 {
            sources.admit(source(n), &rate).unwrap();
        }
        assert!(
            sources.rated() <= SWEEP_EVERY as usize,
            "{} sources remembered after a sweep",
            sources.rated()
        );
    }
}
