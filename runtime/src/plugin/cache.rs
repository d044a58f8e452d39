//! Compiled components cached on disk, so a restart skips compilation (tens of
//! milliseconds per plugin) and deserializes instead (a fraction of a millisecond).
//!
//! An entry is named by the SHA-256 of the component's bytes and a hash of the engine's
//! compatibility (wasmtime version and configuration), so a changed plugin or a new
//! gateway version never reads a stale artifact. Entries are written to a temporary file
//! created exclusively under a random name and renamed into place, so concurrent
//! gateways never read a partial one; an entry that cannot be used is compiled again
//! and overwritten.
//!
//! Entries are native code, so whoever can write one runs code as any plugin. The
//! directory is created private (0700) and used only while it is owned by the
//! gateway's user and writable by no one else; an entry is opened without following a
//! symlink and read only when it is a regular file owned by the gateway's user and
//! writable by no one else. (A hash of the artifact itself would not help: whoever can
//! replace an entry can replace its hash too.)

use std::hash::{Hash, Hasher};
use std::io::Read;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt};
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
    /// Kept from the config in force: the same bytes were loaded before (a reload).
    Kept,
}

impl Origin {
    /// A word for logs.
    pub fn as_str(self) -> &'static str {
        match self {
            Origin::Compiled => "compiled",
            Origin::Cached => "cache",
            Origin::Kept => "kept",
        }
    }
}

/// The cache directory, if caching is on.
#[derive(Debug, Clone)]
pub struct ComponentCache {
    dir: Option<PathBuf>,
}

impl ComponentCache {
    /// A cache in `dir`, or none. The directory is created private if missing; one
    /// that others could write to is not used (with a warning), and plugins compile.
    pub fn new(dir: Option<PathBuf>) -> Self {
        let dir = dir.filter(|dir| match private_dir(dir) {
            Ok(()) => true,
            Err(why) => {
                tracing::warn!(dir = %dir.display(), "not using the compiled-component cache: {why}");
                false
            }
        });
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
        if let Some(path) = &entry {
            match read_own_file(path) {
                Ok(Some(artifact)) => {
                    // SAFETY: the entry is a regular file, not a link, owned by the
                    // gateway's user and writable by no one else, in a directory with the
                    // same guarantees: only this gateway (`store`) wrote it. Its name
                    // binds it to the source bytes and this engine's configuration, and
                    // wasmtime checks the artifact's header.
                    match unsafe { Component::deserialize(engine, &artifact) } {
                        Ok(component) => return Ok((component, Origin::Cached)),
                        Err(err) => {
                            tracing::warn!(path = %path.display(), error = %err, "unusable cache entry; compiling again")
                        }
                    }
                }
                Ok(None) => {}
                Err(why) => {
                    tracing::warn!(path = %path.display(), "refusing a cache entry ({why}); compiling again")
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

/// The gateway's effective user id.
fn own_uid() -> u32 {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() }
}

/// Creates `dir` (0700) if missing; refuses one owned by another user or writable by
/// group or others.
fn private_dir(dir: &Path) -> Result<(), String> {
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|e| format!("cannot create it: {e}"))?;
    let meta = std::fs::metadata(dir).map_err(|e| format!("cannot read it: {e}"))?;
    if meta.uid() != own_uid() {
        return Err(format!(
            "it is owned by uid {}, not the gateway's user",
            meta.uid()
        ));
    }
    if meta.mode() & 0o022 != 0 {
        return Err(format!(
            "it is writable by group or others (mode {:o}); chmod 700 it",
            meta.mode() & 0o777
        ));
    }
    Ok(())
}

/// The bytes of `path` if it exists as a regular file of the gateway's user that no one
/// else may write; `None` if it does not exist.
fn read_own_file(path: &Path) -> Result<Option<Vec<u8>>, String> {
    let mut file = match std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW)
        .open(path)
    {
        Ok(file) => file,
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(err) => return Err(format!("cannot open it without following links: {err}")),
    };
    let meta = file.metadata().map_err(|e| e.to_string())?;
    if !meta.is_file() || meta.uid() != own_uid() || meta.mode() & 0o022 != 0 {
        return Err("not a regular file of the gateway's user, private to it".into());
    }
    let mut bytes = Vec::with_capacity(meta.len() as usize);
    file.read_to_end(&mut bytes).map_err(|e| e.to_string())?;
    Ok(Some(bytes))
}

/// Writes an entry; a failure only costs the next start a compilation.
fn store(component: &Component, path: &Path) {
    let result = (|| -> anyhow::Result<()> {
        let bytes = component.serialize().map_err(|e| anyhow::anyhow!("{e}"))?;
        let dir = path.parent().expect("entries live in a directory");
        // Created exclusively (O_EXCL) under a random name, mode 0600.
        let mut temp = tempfile::Builder::new()
            .prefix(".entry-")
            .tempfile_in(dir)?;
        std::io::Write::write_all(&mut temp, &bytes)?;
        temp.persist(path)?;
        Ok(())
    })();
    if let Err(err) = result {
        tracing::warn!(path = %path.display(), error = %err, "cannot write the compiled-component cache; the next start compiles again");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn engine() -> Engine {
        let mut config = wasmtime::Config::new();
        config.wasm_component_model(true);
        Engine::new(&config).unwrap()
    }

    fn compile(engine: &Engine, bytes: &[u8]) -> Result<Component, wasmtime::Error> {
        Component::new(engine, bytes)
    }

    /// An entry replaced by a link to another plugin's entry is refused (it once ran as
    /// that plugin); the directory is created private, and one others can write to is
    /// not used at all.
    #[test]
    fn entries_and_the_directory_must_be_the_gateways_own() {
        let engine = engine();
        let echo = std::fs::read(wsgate_test_plugins::ECHO).unwrap();
        let ids = std::fs::read(wsgate_test_plugins::CONNECTION_ID).unwrap();
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("cache");
        let cache = ComponentCache::new(Some(dir.clone()));
        let mode = std::fs::metadata(&dir).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o700);

        let (_, origin) = cache
            .get_or_compile(&engine, &echo, || compile(&engine, &echo))
            .unwrap();
        assert_eq!(origin, Origin::Compiled);
        let (_, origin) = cache
            .get_or_compile(&engine, &echo, || compile(&engine, &echo))
            .unwrap();
        assert_eq!(origin, Origin::Cached);
        cache
            .get_or_compile(&engine, &ids, || compile(&engine, &ids))
            .unwrap();

        // The echo entry becomes a link to the connection-id entry.
        let echo_entry = cache.entry(&engine, &echo).unwrap();
        let ids_entry = cache.entry(&engine, &ids).unwrap();
        std::fs::remove_file(&echo_entry).unwrap();
        std::os::unix::fs::symlink(&ids_entry, &echo_entry).unwrap();
        let (_, origin) = cache
            .get_or_compile(&engine, &echo, || compile(&engine, &echo))
            .unwrap();
        assert_eq!(origin, Origin::Compiled, "a linked entry was loaded");

        // An entry others may write to is refused too.
        std::fs::set_permissions(&ids_entry, std::fs::Permissions::from_mode(0o666)).unwrap();
        let (_, origin) = cache
            .get_or_compile(&engine, &ids, || compile(&engine, &ids))
            .unwrap();
        assert_eq!(origin, Origin::Compiled);

        let open = root.path().join("open");
        std::fs::create_dir(&open).unwrap();
        std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o777)).unwrap();
        let shared = ComponentCache::new(Some(open.clone()));
        shared
            .get_or_compile(&engine, &echo, || compile(&engine, &echo))
            .unwrap();
        assert_eq!(
            std::fs::read_dir(&open).unwrap().count(),
            0,
            "a shared directory was used"
        );
    }
}
