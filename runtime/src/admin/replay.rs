//! Signed writes remembered against replays, bounded per tenant.
//!
//! A SigV4 signature is valid while its `x-amz-date` is within [`MAX_SKEW`] of the
//! gateway's clock, and a replay carries the same date (it is signed). So each tenant
//! keeps one set per minute of `x-amz-date`, and a whole minute is dropped once every
//! date in it is past the skew window: no per-entry expiry time, no sweep of entries.
//! An entry is the first 16 bytes of the SHA-256 of the signature (a collision between
//! two of a tenant's signatures within ten minutes has odds of about 2^-128 per pair),
//! so a remembered signature costs its 16 bytes plus the hash set's slack. Measured for
//! a million signatures (the tests below): 26.7 bytes of heap and 31.9 resident bytes
//! per signature, against 149.6 resident bytes for the signature as a `String` key with
//! its expiry time, the cache this one replaced. The default cap of a million per
//! tenant is thus about 30 MiB at most, where the old cache grew with the write rate.
//!
//! Each tenant may have at most `max_per_tenant` signatures remembered. When that is
//! reached, its new signed writes are refused with **429** (`LimitExceededException`,
//! `Retry-After` until its oldest minute expires) rather than let through unremembered,
//! which would silently drop the replay protection, and rather than 503, since the
//! limit is the tenant's own write rate and not the gateway's health: other tenants,
//! bearer-key writes and reads are not affected, and AWS SDKs back off and retry on
//! 429 by themselves.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use dashmap::DashMap;
use sha2::{Digest as _, Sha256};

use super::auth::MAX_SKEW;

/// The remembered form of a signature.
pub type Digest = [u8; 16];

/// Remembers between two sweeps of tenants whose signatures have all expired.
const SWEEP_EVERY: u64 = 4096;

/// Where a remembered signature is, to forget it when its request failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplayKey {
    tenant: Arc<str>,
    minute: u64,
    digest: Digest,
}

impl ReplayKey {
    /// The tenant that signed.
    pub fn tenant(&self) -> &str {
        &self.tenant
    }

    /// The remembered digest in hex: its name across a cluster.
    pub fn hex(&self) -> String {
        self.digest.iter().map(|b| format!("{b:02x}")).collect()
    }
}

/// Why a signed write is not taken.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refused {
    /// The signature was used already.
    Replay,
    /// The tenant has `max_per_tenant` signatures remembered; retry after this long.
    Full(Duration),
}

/// One tenant's remembered signatures, by minute of `x-amz-date`.
#[derive(Debug, Default)]
struct Minutes {
    sets: BTreeMap<u64, HashSet<Digest>>,
    len: usize,
}

impl Minutes {
    /// Drops the minutes whose every date is past the skew window at `now` (seconds).
    fn expire(&mut self, now: u64) {
        while let Some(entry) = self.sets.first_entry() {
            if expires_at(*entry.key()) > now {
                break;
            }
            self.len -= entry.remove().len();
        }
    }
}

/// When a signature dated in `minute` can no longer be accepted, in seconds since the
/// epoch: the end of the minute plus the skew window.
fn expires_at(minute: u64) -> u64 {
    (minute + 1) * 60 + MAX_SKEW.as_secs()
}

/// Remembered signatures of every tenant.
#[derive(Debug)]
pub struct ReplayCache {
    tenants: DashMap<Arc<str>, Minutes>,
    max_per_tenant: usize,
    remembers: AtomicU64,
}

impl ReplayCache {
    /// A cache of at most `max_per_tenant` signatures per tenant.
    pub fn new(max_per_tenant: usize) -> ReplayCache {
        ReplayCache {
            tenants: DashMap::new(),
            max_per_tenant: max_per_tenant.max(1),
            remembers: AtomicU64::new(0),
        }
    }

    /// Remembers `signature` of `tenant`, dated `signed_at` (seconds since the epoch, as
    /// `x-amz-date` says and within the skew window of `now`), unless it was used.
    pub fn remember(
        &self,
        tenant: &Arc<str>,
        signature: &str,
        signed_at: u64,
        now: u64,
    ) -> Result<ReplayKey, Refused> {
        if self
            .remembers
            .fetch_add(1, Ordering::Relaxed)
            .is_multiple_of(SWEEP_EVERY)
        {
            self.sweep(now);
        }
        let digest = digest(signature);
        let minute = signed_at / 60;
        let mut minutes = self.tenants.entry(tenant.clone()).or_default();
        minutes.expire(now);
        if minutes
            .sets
            .get(&minute)
            .is_some_and(|set| set.contains(&digest))
        {
            return Err(Refused::Replay);
        }
        if minutes.len >= self.max_per_tenant {
            let oldest = minutes.sets.keys().next().copied().unwrap_or(minute);
            let wait = expires_at(oldest).saturating_sub(now).max(1);
            return Err(Refused::Full(Duration::from_secs(wait)));
        }
        minutes.sets.entry(minute).or_default().insert(digest);
        minutes.len += 1;
        Ok(ReplayKey {
            tenant: tenant.clone(),
            minute,
            digest,
        })
    }

    /// Forgets a remembered signature whose request failed, so a retry is accepted.
    pub fn forget(&self, key: &ReplayKey) {
        if let Some(mut minutes) = self.tenants.get_mut(&key.tenant)
            && let Some(set) = minutes.sets.get_mut(&key.minute)
            && set.remove(&key.digest)
        {
            minutes.len -= 1;
        }
    }

    /// Signatures remembered for `tenant`.
    pub fn len(&self, tenant: &str) -> usize {
        self.tenants.get(tenant).map_or(0, |minutes| minutes.len)
    }

    /// The heap the remembered signatures take, in bytes: each minute's hash table
    /// (hashbrown: a 16-byte slot and a control byte per bucket, 7/8 of the buckets
    /// usable, plus a group of control bytes).
    pub fn heap_bytes(&self) -> usize {
        let slot = std::mem::size_of::<Digest>() + 1;
        self.tenants
            .iter()
            .flat_map(|minutes| {
                minutes
                    .sets
                    .values()
                    .map(|set| set.capacity().div_ceil(7) * 8 * slot + 16)
                    .collect::<Vec<_>>()
            })
            .sum()
    }

    /// Drops expired minutes of every tenant, and tenants with nothing left (a tenant
    /// that stopped writing, or was removed by a reload).
    fn sweep(&self, now: u64) {
        self.tenants.retain(|_, minutes| {
            minutes.expire(now);
            minutes.len > 0
        });
    }
}

/// The first 16 bytes of the SHA-256 of `signature`.
fn digest(signature: &str) -> Digest {
    let hash = Sha256::digest(signature.as_bytes());
    let mut digest = [0u8; 16];
    digest.copy_from_slice(&hash[..16]);
    digest
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: u64 = 1_767_225_600; // 2026-01-01T00:00:00Z, a minute boundary

    fn demo() -> Arc<str> {
        "demo".into()
    }

    fn signature(n: u64) -> String {
        format!("{:064x}", u128::from(n) * 0x9e37_79b9_7f4a_7c15)
    }

    /// A signature is refused the second time, for its tenant only; a forgotten one
    /// (its request failed) is accepted again.
    #[test]
    fn a_replay_is_refused_and_a_failed_write_may_be_retried() {
        let cache = ReplayCache::new(100);
        let key = cache.remember(&demo(), &signature(1), NOW, NOW).unwrap();
        assert_eq!(
            cache.remember(&demo(), &signature(1), NOW, NOW + 10),
            Err(Refused::Replay)
        );
        assert!(
            cache
                .remember(&"acme".into(), &signature(1), NOW, NOW)
                .is_ok()
        );
        cache.forget(&key);
        assert_eq!(cache.len("demo"), 0);
        assert!(
            cache
                .remember(&demo(), &signature(1), NOW, NOW + 20)
                .is_ok()
        );
    }

    /// A minute is kept while any date in it can still be accepted, and dropped whole
    /// after: the signature could not pass the skew check any more, so forgetting it
    /// loses nothing.
    #[test]
    fn minutes_expire_whole_after_the_skew_window() {
        let cache = ReplayCache::new(100);
        let signed_at = NOW + 59; // the last second of the minute
        cache
            .remember(&demo(), &signature(1), signed_at, signed_at)
            .unwrap();
        cache
            .remember(&demo(), &signature(2), NOW + 60, NOW + 60)
            .unwrap();
        let last_valid = signed_at + MAX_SKEW.as_secs();
        assert_eq!(
            cache.remember(&demo(), &signature(1), signed_at, last_valid),
            Err(Refused::Replay),
            "still a replay at the edge of the window"
        );
        cache
            .remember(&demo(), &signature(3), NOW + 60, last_valid + 1)
            .unwrap();
        assert_eq!(cache.len("demo"), 2, "the first minute is gone");
        cache.sweep(NOW + 120 + MAX_SKEW.as_secs());
        assert_eq!(cache.len("demo"), 0);
        assert!(cache.tenants.is_empty(), "an idle tenant leaves no entry");
    }

    /// At the cap, new signed writes of that tenant are refused (not remembered-less),
    /// with the time until its oldest minute expires; other tenants are unaffected,
    /// and once the minute expires writes are taken again.
    #[test]
    fn a_full_tenant_is_refused_until_its_oldest_minute_expires() {
        let cache = ReplayCache::new(3);
        for n in 0..3 {
            cache.remember(&demo(), &signature(n), NOW, NOW).unwrap();
        }
        let refused = cache.remember(&demo(), &signature(9), NOW + 30, NOW + 30);
        assert_eq!(
            refused,
            Err(Refused::Full(Duration::from_secs(
                60 + MAX_SKEW.as_secs() - 30
            )))
        );
        assert_eq!(
            cache.remember(&demo(), &signature(1), NOW, NOW + 30),
            Err(Refused::Replay),
            "a replay is still told apart"
        );
        assert!(
            cache
                .remember(&"acme".into(), &signature(9), NOW, NOW)
                .is_ok()
        );
        let later = expires_at(NOW / 60);
        assert!(cache.remember(&demo(), &signature(9), later, later).is_ok());
        assert_eq!(cache.len("demo"), 1);
    }

    /// A million signatures of one tenant over six minutes (what the default cap
    /// holds), as they arrive at 2,800 a second.
    fn fill(cache: &ReplayCache) {
        for n in 0..1_000_000u64 {
            let signed_at = NOW + n * 360 / 1_000_000;
            cache
                .remember(&demo(), &signature(n), signed_at, signed_at)
                .unwrap();
        }
    }

    /// The figure the module docs quote: heap bytes per remembered signature, from the
    /// hash tables' capacities.
    #[test]
    fn a_remembered_signature_costs_under_40_bytes() {
        let cache = ReplayCache::new(1_000_000);
        fill(&cache);
        let per_signature = cache.heap_bytes() as f64 / 1_000_000.0;
        println!("replay cache: {per_signature:.1} heap bytes per remembered signature");
        assert!(per_signature < 40.0, "{per_signature} bytes per signature");
    }

    /// Resident memory of this process, in bytes (Linux).
    fn rss() -> usize {
        let statm = std::fs::read_to_string("/proc/self/statm").unwrap();
        let pages: usize = statm.split(' ').nth(1).unwrap().parse().unwrap();
        pages * 4096
    }

    /// The same million signatures measured by resident memory, against the cache this
    /// one replaced (the signature as a `String` key with an expiry time). Run each
    /// alone, in its own process: `cargo test --release -p wsgate --lib
    /// replay::tests::rss_ -- --ignored --exact --nocapture
    /// admin::replay::tests::rss_of_the_bucketed_cache` (and `…rss_of_the_string_cache`).
    #[test]
    #[ignore = "a measurement: run alone, in its own process"]
    fn rss_of_the_bucketed_cache() {
        let before = rss();
        let cache = ReplayCache::new(1_000_000);
        fill(&cache);
        let per_signature = (rss() - before) as f64 / 1_000_000.0;
        println!("bucketed digests: {per_signature:.1} resident bytes per signature");
        drop(cache);
    }

    /// See [`rss_of_the_bucketed_cache`].
    #[test]
    #[ignore = "a measurement: run alone, in its own process"]
    fn rss_of_the_string_cache() {
        let before = rss();
        let seen: DashMap<String, u64> = DashMap::new();
        for n in 0..1_000_000u64 {
            seen.insert(signature(n), NOW + n);
        }
        let per_signature = (rss() - before) as f64 / 1_000_000.0;
        println!("String keys: {per_signature:.1} resident bytes per signature");
        drop(seen);
    }
}
