//! An on-disk cache of compiled modules.
//!
//! Compiling a module with Cranelift takes far longer than loading the
//! machine code wasmtime produced for it last time, so [`ModuleCache`] keeps
//! serialized modules in a directory.
//!
//! * **Key**: sha256 over the wasm bytes and the engine's
//!   [`precompile_compatibility_hash`](wasmtime::Engine::precompile_compatibility_hash)
//!   (target, compiler flags, tunables, features, wasmtime version), so an
//!   engine configured differently never loads another engine's code.
//! * **Integrity**: `Module::deserialize` is `unsafe` because it trusts its
//!   input as machine code. Each entry stores the sha256 of the artifact in
//!   its header, verified before deserializing; a truncated, corrupted or
//!   misplaced entry is recompiled and rewritten, never loaded
//!   ([`CacheOutcome::Recompiled`] says why).
//! * **Writes** are atomic: a temporary file in the same directory, synced,
//!   then renamed over the entry. Concurrent writers of the same key are
//!   harmless (both write the same bytes; the last rename wins). Temporary
//!   files older than an hour (left by a crashed writer) are removed on open.
//! * **Permissions**: the directory is created with mode 0700 and fixed to
//!   0700 if it is group- or world-accessible (refused if that is not
//!   possible); entries are 0600. The checksum guards against accidents, the
//!   permissions against other users.
//!
//! Entry layout: `magic (8) | version u32 LE | key (32) | artifact length u64
//! LE | sha256(artifact) (32) | artifact`.

use std::fmt;
use std::fs::{self, DirBuilder, Permissions};
use std::hash::{Hash, Hasher};
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};
use wasmtime::Module;

const MAGIC: &[u8; 8] = b"BNRKCWM\0";
const FORMAT_VERSION: u32 = 1;
const HEADER_LEN: usize = 8 + 4 + 32 + 8 + 32;
const ENTRY_EXTENSION: &str = "cwasm";
const TEMP_PREFIX: &str = ".tmp-";
const STALE_TEMP_AGE: std::time::Duration = std::time::Duration::from_secs(3600);

/// What [`ModuleCache::get_or_compile`] (and so `Engine::compile`) did.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum CacheOutcome {
    /// The module was loaded from a verified cache entry.
    Hit,
    /// There was no entry: the module was compiled and stored.
    Miss,
    /// The entry was unusable: the module was compiled and the entry rewritten.
    Recompiled(Corruption),
    /// No cache is configured: the module was compiled.
    Uncached,
}

/// Why a cache entry was not trusted.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Corruption {
    /// The file is shorter than its header or than the artifact it declares.
    Truncated {
        /// Bytes expected.
        expected: u64,
        /// Bytes found.
        actual: u64,
    },
    /// The file is longer than the artifact it declares.
    TrailingBytes {
        /// Bytes expected.
        expected: u64,
        /// Bytes found.
        actual: u64,
    },
    /// The magic bytes or format version are wrong.
    BadHeader,
    /// The header names a different key than the file name (a misplaced file).
    WrongKey,
    /// The artifact does not match its recorded sha256.
    ChecksumMismatch,
    /// The checksum matched but wasmtime refused the artifact.
    Rejected(String),
    /// The file exists but could not be read.
    Unreadable(io::ErrorKind),
}

impl fmt::Display for Corruption {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Corruption::Truncated { expected, actual } => {
                write!(f, "truncated: {actual} of {expected} bytes")
            }
            Corruption::TrailingBytes { expected, actual } => {
                write!(f, "{actual} bytes where {expected} were expected")
            }
            Corruption::BadHeader => f.write_str("bad magic or format version"),
            Corruption::WrongKey => f.write_str("entry stored under the wrong key"),
            Corruption::ChecksumMismatch => f.write_str("artifact checksum mismatch"),
            Corruption::Rejected(why) => write!(f, "rejected by wasmtime: {why}"),
            Corruption::Unreadable(kind) => write!(f, "unreadable: {kind}"),
        }
    }
}

/// Errors setting up the cache directory.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CacheError {
    /// An I/O operation on the cache directory failed.
    #[error("cache directory {}: {source}", path.display())]
    Io {
        /// The directory.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// The path exists but is not a directory.
    #[error("cache directory {} is not a directory", path.display())]
    NotADirectory {
        /// The path.
        path: PathBuf,
    },
    /// The directory is group- or world-accessible and could not be made 0700.
    #[error(
        "cache directory {} is accessible to group or others (mode {mode:o}) \
         and could not be changed to 0700: {source}",
        path.display()
    )]
    InsecureDirectory {
        /// The directory.
        path: PathBuf,
        /// Its permission bits.
        mode: u32,
        /// Why `chmod` failed.
        #[source]
        source: io::Error,
    },
}

/// A directory of compiled modules for one engine configuration.
#[derive(Debug, Clone)]
pub struct ModuleCache {
    dir: PathBuf,
    engine_hash: [u8; 32],
}

/// Feeds `Hash` output into sha256, so the engine's compatibility hash is
/// stable across processes (unlike `DefaultHasher`, whose algorithm may change).
struct Sha256Hasher(Sha256);

impl Hasher for Sha256Hasher {
    fn write(&mut self, bytes: &[u8]) {
        self.0.update(bytes);
    }

    fn finish(&self) -> u64 {
        let digest = self.0.clone().finalize();
        u64::from_le_bytes(digest[..8].try_into().expect("sha256 is 32 bytes"))
    }
}

enum Lookup {
    Hit(Module),
    Missing,
    Corrupt(Corruption),
}

impl ModuleCache {
    /// Opens (creating if needed, with mode 0700) the cache directory `dir`
    /// for modules compiled by `engine`.
    pub fn open(dir: impl Into<PathBuf>, engine: &wasmtime::Engine) -> Result<Self, CacheError> {
        let dir = dir.into();
        prepare_dir(&dir)?;
        remove_stale_temp_files(&dir);
        let mut hasher = Sha256Hasher(Sha256::new());
        engine.precompile_compatibility_hash().hash(&mut hasher);
        Ok(Self {
            dir,
            engine_hash: hasher.0.finalize().into(),
        })
    }

    /// The cache directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The path of the entry for `wasm` (which may not exist).
    pub fn entry_path(&self, wasm: &[u8]) -> PathBuf {
        self.path_for_key(&self.key(wasm))
    }

    fn key(&self, wasm: &[u8]) -> [u8; 32] {
        let mut h = Sha256::new();
        h.update(b"bunraku module cache\0");
        h.update(self.engine_hash);
        h.update(Sha256::digest(wasm));
        h.finalize().into()
    }

    fn path_for_key(&self, key: &[u8; 32]) -> PathBuf {
        let mut name = hex(key);
        name.push('.');
        name.push_str(ENTRY_EXTENSION);
        self.dir.join(name)
    }

    /// Loads the module for `wasm` from the cache, or calls `compile` and
    /// stores its result.
    ///
    /// Only `compile`'s error is returned: failing to write an entry is
    /// logged and the freshly compiled module is still returned.
    pub fn get_or_compile<E>(
        &self,
        engine: &wasmtime::Engine,
        wasm: &[u8],
        compile: impl FnOnce() -> Result<Module, E>,
    ) -> Result<(Module, CacheOutcome), E> {
        let key = self.key(wasm);
        let path = self.path_for_key(&key);
        let corruption = match self.lookup(engine, &key, &path) {
            Lookup::Hit(module) => return Ok((module, CacheOutcome::Hit)),
            Lookup::Missing => None,
            Lookup::Corrupt(why) => {
                tracing::warn!(path = %path.display(), %why, "ignoring corrupt module cache entry");
                Some(why)
            }
        };
        let module = compile()?;
        if let Err(e) = self.store(&key, &path, &module) {
            tracing::warn!(path = %path.display(), error = %e, "could not write module cache entry");
        }
        Ok((
            module,
            corruption.map_or(CacheOutcome::Miss, CacheOutcome::Recompiled),
        ))
    }

    fn lookup(&self, engine: &wasmtime::Engine, key: &[u8; 32], path: &Path) -> Lookup {
        let bytes = match fs::read(path) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Lookup::Missing,
            Err(e) => return Lookup::Corrupt(Corruption::Unreadable(e.kind())),
        };
        let artifact = match verify(&bytes, key) {
            Ok(artifact) => artifact,
            Err(why) => return Lookup::Corrupt(why),
        };
        // SAFETY: `artifact` is byte for byte what `Module::serialize` produced
        // for this key (sha256 checked above), written into a directory only
        // this user can access; the key covers the engine configuration.
        match unsafe { Module::deserialize(engine, artifact) } {
            Ok(module) => Lookup::Hit(module),
            Err(e) => Lookup::Corrupt(Corruption::Rejected(format!("{e:#}"))),
        }
    }

    fn store(&self, key: &[u8; 32], path: &Path, module: &Module) -> io::Result<()> {
        let artifact = module.serialize().map_err(io::Error::other)?;
        let mut header = Vec::with_capacity(HEADER_LEN);
        header.extend_from_slice(MAGIC);
        header.extend_from_slice(&FORMAT_VERSION.to_le_bytes());
        header.extend_from_slice(key);
        header.extend_from_slice(&(artifact.len() as u64).to_le_bytes());
        header.extend_from_slice(&Sha256::digest(&artifact));
        debug_assert_eq!(header.len(), HEADER_LEN);

        // `tempfile` creates the file with mode 0600; set it anyway so the
        // guarantee does not rest on a dependency's default.
        let mut tmp = tempfile::Builder::new()
            .prefix(TEMP_PREFIX)
            .tempfile_in(&self.dir)?;
        tmp.as_file()
            .set_permissions(Permissions::from_mode(0o600))?;
        tmp.write_all(&header)?;
        tmp.write_all(&artifact)?;
        tmp.as_file().sync_all()?;
        tmp.persist(path).map_err(|e| e.error)?;
        Ok(())
    }
}

/// Checks an entry's header and checksum, returning the artifact.
fn verify<'a>(bytes: &'a [u8], key: &[u8; 32]) -> Result<&'a [u8], Corruption> {
    let actual = bytes.len() as u64;
    if bytes.len() < HEADER_LEN {
        return Err(Corruption::Truncated {
            expected: HEADER_LEN as u64,
            actual,
        });
    }
    let (header, artifact) = bytes.split_at(HEADER_LEN);
    if &header[..8] != MAGIC || header[8..12] != FORMAT_VERSION.to_le_bytes() {
        return Err(Corruption::BadHeader);
    }
    if &header[12..44] != key {
        return Err(Corruption::WrongKey);
    }
    let len = u64::from_le_bytes(header[44..52].try_into().expect("8 bytes"));
    let expected = (HEADER_LEN as u64).saturating_add(len);
    if actual < expected {
        return Err(Corruption::Truncated { expected, actual });
    }
    if actual > expected {
        return Err(Corruption::TrailingBytes { expected, actual });
    }
    if Sha256::digest(artifact).as_slice() != &header[52..84] {
        return Err(Corruption::ChecksumMismatch);
    }
    Ok(artifact)
}

/// Creates `dir` with mode 0700, or makes an existing one 0700 if it is
/// accessible to group or others.
fn prepare_dir(dir: &Path) -> Result<(), CacheError> {
    let io_err = |source| CacheError::Io {
        path: dir.to_owned(),
        source,
    };
    let metadata = match fs::metadata(dir) {
        Ok(metadata) => metadata,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(dir)
                .map_err(io_err)?;
            fs::metadata(dir).map_err(io_err)?
        }
        Err(e) => return Err(io_err(e)),
    };
    if !metadata.is_dir() {
        return Err(CacheError::NotADirectory {
            path: dir.to_owned(),
        });
    }
    let mode = metadata.permissions().mode() & 0o7777;
    if mode & 0o077 != 0 {
        fs::set_permissions(dir, Permissions::from_mode(0o700)).map_err(|source| {
            CacheError::InsecureDirectory {
                path: dir.to_owned(),
                mode,
                source,
            }
        })?;
        tracing::warn!(path = %dir.display(), mode = format_args!("{mode:o}"), "module cache directory was group/world accessible; changed to 0700");
    }
    Ok(())
}

/// Removes temporary files left by writers that died before renaming them.
/// Only files older than an hour go, so live writers are not disturbed.
fn remove_stale_temp_files(dir: &Path) {
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let is_temp = entry
            .file_name()
            .as_encoded_bytes()
            .starts_with(TEMP_PREFIX.as_bytes());
        let stale = entry
            .metadata()
            .and_then(|m| m.modified())
            .is_ok_and(|t| t.elapsed().is_ok_and(|age| age > STALE_TEMP_AGE));
        if is_temp
            && stale
            && let Err(e) = fs::remove_file(entry.path())
        {
            tracing::debug!(path = %entry.path().display(), error = %e, "could not remove stale temporary file");
        }
    }
}

fn hex(bytes: &[u8]) -> String {
    use fmt::Write as _;
    bytes
        .iter()
        .fold(String::with_capacity(bytes.len() * 2), |mut s, b| {
            let _ = write!(s, "{b:02x}");
            s
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::{Engine, EngineConfig, EngineError};
    use std::os::unix::fs::MetadataExt;

    const WAT: &str = r#"(module (func (export "answer") (result i32) i32.const 42))"#;

    fn engine_with_cache(dir: &Path) -> Engine {
        Engine::new(EngineConfig {
            cache_dir: Some(dir.to_owned()),
            ..EngineConfig::default()
        })
        .unwrap()
    }

    fn answer(engine: &Engine, module: &Module) -> i32 {
        let mut store = wasmtime::Store::new(engine.wasmtime(), ());
        store.set_epoch_deadline(u64::MAX / 2);
        let instance = wasmtime::Instance::new(&mut store, module, &[]).unwrap();
        let f = instance
            .get_typed_func::<(), i32>(&mut store, "answer")
            .unwrap();
        f.call(&mut store, ()).unwrap()
    }

    fn mode(path: &Path) -> u32 {
        fs::metadata(path).unwrap().mode() & 0o777
    }

    #[test]
    fn second_compile_is_a_hit() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("nested/cache");
        let engine = engine_with_cache(&dir);
        let wasm = wat::parse_str(WAT).unwrap();
        let (module, outcome) = engine.compile(&wasm).unwrap();
        assert_eq!(outcome, CacheOutcome::Miss);
        assert_eq!(answer(&engine, &module), 42);
        let (module, outcome) = engine.compile(&wasm).unwrap();
        assert_eq!(outcome, CacheOutcome::Hit);
        assert_eq!(answer(&engine, &module), 42);

        // A second engine with the same configuration shares the entries.
        let other = engine_with_cache(&dir);
        assert_eq!(other.compile(&wasm).unwrap().1, CacheOutcome::Hit);
    }

    #[test]
    fn directory_is_0700_and_entries_0600() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("cache");
        let engine = engine_with_cache(&dir);
        let wasm = wat::parse_str(WAT).unwrap();
        engine.compile(&wasm).unwrap();
        assert_eq!(mode(&dir), 0o700);
        let entries: Vec<_> = fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        assert_eq!(
            entries.len(),
            1,
            "no temporary files left behind: {entries:?}"
        );
        assert_eq!(mode(&entries[0]), 0o600);
    }

    #[test]
    fn group_or_world_accessible_directory_is_fixed() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("cache");
        fs::create_dir(&dir).unwrap();
        fs::set_permissions(&dir, Permissions::from_mode(0o777)).unwrap();
        engine_with_cache(&dir);
        assert_eq!(mode(&dir), 0o700);
    }

    #[test]
    fn stale_temporary_files_are_removed_on_open() {
        let tmp = tempfile::tempdir().unwrap();
        let stale = tmp.path().join(".tmp-stale");
        let fresh = tmp.path().join(".tmp-fresh");
        let two_hours_ago = std::time::SystemTime::now() - std::time::Duration::from_secs(7200);
        fs::File::create(&stale)
            .unwrap()
            .set_modified(two_hours_ago)
            .unwrap();
        fs::File::create(&fresh).unwrap();
        engine_with_cache(tmp.path());
        assert!(!stale.exists());
        assert!(fresh.exists(), "a writer may still be using it");
    }

    #[test]
    fn a_file_is_not_a_cache_directory() {
        let tmp = tempfile::tempdir().unwrap();
        let file = tmp.path().join("file");
        fs::write(&file, b"").unwrap();
        let err = Engine::new(EngineConfig {
            cache_dir: Some(file),
            ..EngineConfig::default()
        })
        .unwrap_err();
        assert!(
            matches!(err, EngineError::Cache(CacheError::NotADirectory { .. })),
            "{err}"
        );
    }

    /// Corrupts the entry with `corrupt` (which returns the corruption it
    /// expects to be detected), then checks that compiling again reports it,
    /// still yields a working module, and repairs the entry.
    fn corrupted_entry_is_recompiled(corrupt: impl FnOnce(&mut Vec<u8>) -> Corruption) {
        let tmp = tempfile::tempdir().unwrap();
        let engine = engine_with_cache(tmp.path());
        let wasm = wat::parse_str(WAT).unwrap();
        engine.compile(&wasm).unwrap();
        let cache = ModuleCache::open(tmp.path(), engine.wasmtime()).unwrap();
        let path = cache.entry_path(&wasm);
        let mut bytes = fs::read(&path).unwrap();
        let expected = corrupt(&mut bytes);
        fs::write(&path, &bytes).unwrap();

        let (module, outcome) = engine.compile(&wasm).unwrap();
        assert_eq!(outcome, CacheOutcome::Recompiled(expected));
        assert_eq!(answer(&engine, &module), 42);
        assert_eq!(engine.compile(&wasm).unwrap().1, CacheOutcome::Hit);
        assert_eq!(mode(&path), 0o600);
    }

    #[test]
    fn flipped_artifact_byte_is_recompiled() {
        corrupted_entry_is_recompiled(|b| {
            let i = HEADER_LEN + (b.len() - HEADER_LEN) / 2;
            b[i] ^= 0xff;
            Corruption::ChecksumMismatch
        });
    }

    #[test]
    fn flipped_last_byte_is_recompiled() {
        corrupted_entry_is_recompiled(|b| {
            *b.last_mut().unwrap() ^= 1;
            Corruption::ChecksumMismatch
        });
    }

    #[test]
    fn flipped_checksum_byte_is_recompiled() {
        corrupted_entry_is_recompiled(|b| {
            b[HEADER_LEN - 1] ^= 1;
            Corruption::ChecksumMismatch
        });
    }

    #[test]
    fn flipped_magic_byte_is_recompiled() {
        corrupted_entry_is_recompiled(|b| {
            b[0] ^= 0xff;
            Corruption::BadHeader
        });
    }

    #[test]
    fn entry_under_wrong_name_is_recompiled() {
        corrupted_entry_is_recompiled(|b| {
            b[20] ^= 1;
            Corruption::WrongKey
        });
    }

    #[test]
    fn truncated_entry_is_recompiled() {
        corrupted_entry_is_recompiled(|b| {
            let expected = b.len() as u64;
            b.truncate(b.len() - 100);
            Corruption::Truncated {
                expected,
                actual: expected - 100,
            }
        });
    }

    #[test]
    fn extended_entry_is_recompiled() {
        corrupted_entry_is_recompiled(|b| {
            let expected = b.len() as u64;
            b.push(0);
            Corruption::TrailingBytes {
                expected,
                actual: expected + 1,
            }
        });
    }

    #[test]
    fn truncated_header_is_recompiled() {
        corrupted_entry_is_recompiled(|b| {
            b.truncate(10);
            Corruption::Truncated {
                expected: HEADER_LEN as u64,
                actual: 10,
            }
        });
    }

    #[test]
    fn empty_entry_is_recompiled() {
        corrupted_entry_is_recompiled(|b| {
            b.clear();
            Corruption::Truncated {
                expected: HEADER_LEN as u64,
                actual: 0,
            }
        });
    }

    #[test]
    fn different_engine_configuration_uses_different_entries() {
        let tmp = tempfile::tempdir().unwrap();
        let wasm = wat::parse_str(WAT).unwrap();
        let speed = engine_with_cache(tmp.path());
        assert_eq!(speed.compile(&wasm).unwrap().1, CacheOutcome::Miss);
        let none = Engine::new(EngineConfig {
            cache_dir: Some(tmp.path().to_owned()),
            opt_level: wasmtime::OptLevel::None,
            ..EngineConfig::default()
        })
        .unwrap();
        assert_eq!(none.compile(&wasm).unwrap().1, CacheOutcome::Miss);
        assert_eq!(fs::read_dir(tmp.path()).unwrap().count(), 2);
    }
}
