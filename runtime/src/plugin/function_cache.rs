//! Cranelift's per-function compilation cache, held in memory while the gateway loads
//! its plugins.
//!
//! Plugins built with the same toolchain and SDK share many functions (the standard
//! library, the bindings, the allocator): between the example and testing plugins half
//! to four fifths of each one's functions are already known once the first is
//! compiled. Cranelift keys each function by its code after translation, so a function
//! met before is reused instead of being optimised and register-allocated again. The
//! whole-component cache on disk (`cache.rs`) serves restarts; this one serves the
//! first start. It is emptied once loading is done, since nothing compiles after.

use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

/// Compiled functions by Cranelift's cache key.
#[derive(Debug, Default)]
pub struct FunctionCache {
    entries: Mutex<HashMap<Vec<u8>, Vec<u8>>>,
    hits: AtomicU64,
    misses: AtomicU64,
}

/// What the cache did while plugins loaded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FunctionCacheStats {
    /// Functions taken from the cache instead of being compiled.
    pub reused: u64,
    /// Functions compiled (and stored).
    pub compiled: u64,
    /// Bytes the cache held at its fullest.
    pub bytes: usize,
}

impl FunctionCache {
    /// Empties the cache and reports what it did.
    pub fn finish(&self) -> FunctionCacheStats {
        let mut entries = self.entries.lock().unwrap();
        let bytes = entries.iter().map(|(k, v)| k.len() + v.len()).sum();
        *entries = HashMap::new();
        FunctionCacheStats {
            reused: self.hits.load(Ordering::Relaxed),
            compiled: self.misses.load(Ordering::Relaxed),
            bytes,
        }
    }
}

impl wasmtime::CacheStore for FunctionCache {
    fn get(&self, key: &[u8]) -> Option<Cow<'_, [u8]>> {
        let found = self.entries.lock().unwrap().get(key).cloned();
        let counter = if found.is_some() {
            &self.hits
        } else {
            &self.misses
        };
        counter.fetch_add(1, Ordering::Relaxed);
        found.map(Cow::Owned)
    }

    fn insert(&self, key: &[u8], value: Vec<u8>) -> bool {
        self.entries.lock().unwrap().insert(key.to_vec(), value);
        true
    }
}
