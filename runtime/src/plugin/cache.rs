//! Compiled components cached on disk, so a restart skips compilation (tens of
//! milliseconds per plugin) and deserializes instead (a fraction of a millisecond).
//!
//! An entry is named by the SHA-256 of the component's bytes and a hash of the engine's
//! compatibility (wasmtime version and configuration), so a changed plugin or a new
//! gateway version never reads a stale artifact. Entries are written to a temporary file
//! and renamed into place, so concurrent gateways never read a partial one; an entry
//! that cannot be used is compiled again and overwritten.

use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};
use wasmtime::Engine;
use wasmtime::component::Component;

/// Where a compiled component came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    /// Compiled now (and stored, when there is a cache).
    Compiled,
    /// Read from the cache.
    Cached,
}

impl Origin {
    /// A word for logs.
    pub fn as_str(self) -> &'static str {
        match self {
            Origin::Compiled => "compiled",
            Origin::Cached => "cache",
        }
    }
}

/// The cache directory, if caching is on.
#[derive(Debug, Clone)]
pub struct ComponentCache {
    dir: Option<PathBuf>,
}

impl ComponentCache {
    /// A cache in `dir`, or none.
    pub fn new(dir: Option<PathBuf>) -> Self {
        Self { dir }
    }

    fn entry(&self, engine: &Engine, bytes: &[u8]) -> Option<PathBuf> {
        let dir = self.dir.as_ref()?;
        let mut compat = std::collections::hash_map::DefaultHasher::new();
        engine.precompile_compatibility_hash().hash(&mut compat);
        let digest = Sha256::digest(bytes);
        let name: String = digest.iter().map(|b| format!("{b:02x}")).collect();
        Some(dir.join(format!("{name}-{:016x}.cwasm", compat.finish())))
    }

    /// The compiled component for `bytes`: from the cache when a usable entry exists,
    /// else from `compile`, then stored.
    pub fn get_or_compile<E>(
        &self,
        engine: &Engine,
        bytes: &[u8],
        compile: impl FnOnce() -> Result<Component, E>,
    ) -> Result<(Component, Origin), E> {
        let entry = self.entry(engine, bytes);
        if let Some(path) = &entry
            && path.is_file()
        {
            // SAFETY: the entry was written by this gateway (`store`) into its own cache
            // directory, and its name binds it to the source bytes and to this engine's
            // configuration; wasmtime also checks the artifact's header. The directory
            // must be writable by the gateway's user only, as documented.
            match unsafe { Component::deserialize_file(engine, path) } {
                Ok(component) => return Ok((component, Origin::Cached)),
                Err(err) => {
                    tracing::warn!(path = %path.display(), error = %err, "unusable cache entry; compiling again")
                }
            }
        }
        let component = compile()?;
        if let Some(path) = &entry {
            store(&component, path);
        }
        Ok((component, Origin::Compiled))
    }
}

/// Writes an entry; a failure only costs the next start a compilation.
fn store(component: &Component, path: &Path) {
    let result = (|| -> anyhow::Result<()> {
        let bytes = component.serialize().map_err(|e| anyhow::anyhow!("{e}"))?;
        let dir = path.parent().expect("entries live in a directory");
        std::fs::create_dir_all(dir)?;
        let temp = dir.join(format!(
            ".{}.{}.tmp",
            path.file_name().unwrap().to_string_lossy(),
            std::process::id()
        ));
        std::fs::write(&temp, bytes)?;
        std::fs::rename(&temp, path)?;
        Ok(())
    })();
    if let Err(err) = result {
        tracing::warn!(path = %path.display(), error = %err, "cannot write the compiled-component cache; the next start compiles again");
    }
}
