//! What a tenant's plugins may hold together: events running at once (instances in
//! use) and linear memory across every instance, running or pooled. One tenant's
//! plugins cannot take memory or instances from another's, and a plugin cannot take all
//! of its own tenant's.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use wasmtime::{ResourceLimiter, StoreLimits};

/// Bytes of linear memory a tenant's instances may hold together.
#[derive(Debug)]
pub struct MemoryBudget {
    /// The budget.
    limit: usize,
    /// Bytes held now by the tenant's instances.
    used: AtomicUsize,
}

impl MemoryBudget {
    /// A budget of `limit` bytes, none used.
    pub fn new(limit: usize) -> MemoryBudget {
        MemoryBudget {
            limit,
            used: AtomicUsize::new(0),
        }
    }

    /// Takes `bytes` of the budget, if that many are free.
    pub fn try_reserve(&self, bytes: usize) -> bool {
        self.used
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |used| {
                used.checked_add(bytes).filter(|&total| total <= self.limit)
            })
            .is_ok()
    }

    /// Gives `bytes` back.
    pub fn release(&self, bytes: usize) {
        self.used.fetch_sub(bytes, Ordering::AcqRel);
    }

    /// Bytes held now.
    pub fn used(&self) -> usize {
        self.used.load(Ordering::Acquire)
    }

    /// The budget.
    pub fn limit(&self) -> usize {
        self.limit
    }
}

/// A tenant's shares, handed to each of its plugins.
#[derive(Debug)]
pub struct TenantQuota {
    /// Instances in use by the tenant's events at once.
    pub instances: Arc<Semaphore>,
    /// Linear memory of all the tenant's instances.
    pub memory: Arc<MemoryBudget>,
}

impl TenantQuota {
    /// A quota of `instances` running instances and `memory_bytes` of memory.
    pub fn new(instances: usize, memory_bytes: usize) -> TenantQuota {
        TenantQuota {
            instances: Arc::new(Semaphore::new(instances)),
            memory: Arc::new(MemoryBudget::new(memory_bytes)),
        }
    }
}

/// What an event holds while it runs: a place under its plugin's and its tenant's caps
/// on instances in use.
#[derive(Debug)]
pub struct Turn {
    _plugin: OwnedSemaphorePermit,
    _tenant: OwnedSemaphorePermit,
}

impl Turn {
    /// Waits for a place under both caps.
    pub async fn take(plugin: &Arc<Semaphore>, tenant: &Arc<Semaphore>) -> Turn {
        // Neither semaphore is ever closed.
        let plugin = plugin.clone().acquire_owned().await.expect("never closed");
        let tenant = tenant.clone().acquire_owned().await.expect("never closed");
        Turn {
            _plugin: plugin,
            _tenant: tenant,
        }
    }
}

/// An instance's resource limiter: the per-instance caps of wasmtime's `StoreLimits`,
/// and the tenant's memory budget, which every byte the instance's memories grow by is
/// taken from and given back to when the instance is dropped.
pub struct Limiter {
    /// Per-instance memory, table and instance caps.
    store: StoreLimits,
    /// The tenant's budget.
    budget: Arc<MemoryBudget>,
    /// Bytes this instance holds of the budget.
    held: usize,
    /// Bytes taken for a growth wasmtime has not confirmed yet.
    pending: usize,
}

impl Limiter {
    /// A limiter with `store`'s caps, drawing on `budget`.
    pub fn new(store: StoreLimits, budget: Arc<MemoryBudget>) -> Limiter {
        Limiter {
            store,
            budget,
            held: 0,
            pending: 0,
        }
    }

    /// Bytes of linear memory this instance holds.
    pub fn held(&self) -> usize {
        self.held
    }
}

impl ResourceLimiter for Limiter {
    fn memory_growing(
        &mut self,
        current: usize,
        desired: usize,
        maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        // Only a growth this call allows can fail later in `memory_grow_failed`.
        self.pending = 0;
        // The instance's own cap first; it traps with wasmtime's wording when refused.
        if !self.store.memory_growing(current, desired, maximum)? {
            return Ok(false);
        }
        let more = desired.saturating_sub(current);
        if !self.budget.try_reserve(more) {
            wasmtime::bail!(
                "forcing trap when growing memory to {desired} bytes: the tenant's plugins hold {} of their {} byte memory budget",
                self.budget.used(),
                self.budget.limit()
            );
        }
        self.held += more;
        self.pending = more;
        Ok(true)
    }

    fn memory_grow_failed(&mut self, error: wasmtime::Error) -> wasmtime::Result<()> {
        // The growth that was allowed did not happen: give its bytes back.
        let pending = std::mem::take(&mut self.pending);
        self.held = self.held.saturating_sub(pending);
        self.budget.release(pending);
        self.store.memory_grow_failed(error)
    }

    fn table_growing(
        &mut self,
        current: usize,
        desired: usize,
        maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        self.store.table_growing(current, desired, maximum)
    }

    fn table_grow_failed(&mut self, error: wasmtime::Error) -> wasmtime::Result<()> {
        self.store.table_grow_failed(error)
    }

    fn instances(&self) -> usize {
        self.store.instances()
    }

    fn tables(&self) -> usize {
        self.store.tables()
    }

    fn memories(&self) -> usize {
        self.store.memories()
    }
}

impl Drop for Limiter {
    fn drop(&mut self) {
        self.budget.release(self.held);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use wasmtime::StoreLimitsBuilder;

    fn limiter(budget: &Arc<MemoryBudget>, per_instance: usize) -> Limiter {
        let store = StoreLimitsBuilder::new()
            .memory_size(per_instance)
            .trap_on_grow_failure(true)
            .build();
        Limiter::new(store, budget.clone())
    }

    #[test]
    fn instances_share_the_tenant_budget_and_give_it_back_when_dropped() {
        let budget = Arc::new(MemoryBudget::new(100));
        let mut a = limiter(&budget, 80);
        let mut b = limiter(&budget, 80);
        assert!(a.memory_growing(0, 60, None).unwrap());
        assert_eq!(budget.used(), 60);
        // b's own cap would allow 50; the tenant's budget has 40 left.
        let refused = b.memory_growing(0, 50, None).unwrap_err();
        assert!(refused.to_string().contains("memory budget"), "{refused}");
        assert!(b.memory_growing(0, 40, None).unwrap());
        assert_eq!(budget.used(), 100);
        // The per-instance cap is checked first, with wasmtime's wording.
        let capped = a.memory_growing(60, 90, None).unwrap_err();
        assert!(capped.to_string().contains("growing memory"), "{capped}");
        drop(a);
        assert_eq!(budget.used(), 40);
        assert!(b.memory_growing(40, 80, None).unwrap());
        assert_eq!(b.held(), 80);
        drop(b);
        assert_eq!(budget.used(), 0);
    }

    #[test]
    fn a_growth_that_failed_returns_its_bytes() {
        let budget = Arc::new(MemoryBudget::new(100));
        let store = StoreLimitsBuilder::new().build();
        let mut a = Limiter::new(store, budget.clone());
        assert!(a.memory_growing(0, 30, None).unwrap());
        a.memory_grow_failed(wasmtime::Error::msg("mmap failed"))
            .unwrap();
        assert_eq!((a.held(), budget.used()), (0, 0));
    }

    #[tokio::test(start_paused = true)]
    async fn a_turn_waits_for_both_caps() {
        let plugin = Arc::new(Semaphore::new(2));
        let tenant = Arc::new(Semaphore::new(1));
        let first = Turn::take(&plugin, &tenant).await;
        let second = tokio::time::timeout(
            std::time::Duration::from_secs(1),
            Turn::take(&plugin, &tenant),
        )
        .await;
        assert!(second.is_err(), "the tenant's one place is taken");
        drop(first);
        let _again = Turn::take(&plugin, &tenant).await;
    }
}
