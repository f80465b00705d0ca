//! The log store that ships: [`SledStore`], on sled `=0.34.7`.
//!
//! Owns the data directory: three sled trees (byte layout in
//! `events/FORMAT.md`):
//! - `log`: key = seq as 8 bytes big-endian, value = the record bytes exactly
//!   as sealed. The head is the last key: `apply_batch` cannot span trees, so
//!   a separate head key would need a transaction.
//! - `meta`: `format_version` (u32 LE, [`STORE_FORMAT_VERSION`]) and
//!   `record_domain` (the record hash domain tag).
//! - `snapshots`: key = covered seq as 8 bytes big-endian, value = snapshot
//!   bytes; the newest [`SNAPSHOTS_KEPT`] are kept.
//!
//! A batch is one `Tree::apply_batch` then one `Db::flush` (group commit);
//! never record by record, which measured here let a crash leave half a batch.
//! Opening first moves stale `snap.*.generating` files aside (a process killed
//! while sled opens can leave one, and sled then refuses to open), then opens
//! sled, checks the format and verifies the chain tail.
//!
//! Must never: use a tail it has not verified, delete a file it did not
//! create, or keep writing after a failed write or flush (it poisons itself).

use crate::faulty_store::Tamper;
use crate::record::{DOMAIN_TAG, Head, Record, Sealed};
use crate::store::{
    LogStore, StoreError, TAIL_VERIFY_RECORDS, Tail, Visit, admit_batch, admit_sealed,
    decode_stored, key_seq, verify_tail,
};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use tracing::{debug, info, warn};

/// Version of the sled layout described in the module doc, kept in `meta`.
pub const STORE_FORMAT_VERSION: u32 = 1;

/// How many projection snapshots are kept (the newest ones).
pub const SNAPSHOTS_KEPT: usize = 2;

/// The sub-directory of the data dir that stale sled snapshot files are
/// moved into. Its name must not start with `snap.`: sled treats every entry
/// of the data dir whose name does (see `RunningConfig::get_snapshot_files`)
/// as a snapshot, reads the highest-sorting one, and deletes the others.
pub const ASIDE_DIR: &str = "aside";

/// How long [`SledStore::open`] waits for sled's file lock. Within one
/// process, sled's background threads can hold a just-dropped database for a
/// moment; another process holding it keeps it for longer, and open fails.
pub const OPEN_LOCK_WAIT_MS: u64 = 5_000;

const LOG_TREE: &str = "log";
const META_TREE: &str = "meta";
const SNAPSHOTS_TREE: &str = "snapshots";
const META_FORMAT_VERSION: &[u8] = b"format_version";
const META_RECORD_DOMAIN: &[u8] = b"record_domain";

/// Counts of the sled calls a store made since open; lets tests check group
/// commit (one `apply_batch` and one flush per non-empty append).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SledStats {
    pub appends: u64,
    pub batches_applied: u64,
    pub flushes: u64,
}

/// The sled-backed [`LogStore`].
pub struct SledStore {
    dir: PathBuf,
    db: sled::Db,
    log: sled::Tree,
    snapshots: sled::Tree,
    /// The acknowledged end of the log, shared with [`SledReader`]s.
    acked: Arc<Mutex<Tail>>,
    tail: Tail,
    poisoned: Option<String>,
    /// Set by [`SledStore::open_read_only`]: why every write is refused.
    read_only: Option<String>,
    moved_aside: Vec<PathBuf>,
    stats: SledStats,
}

impl SledStore {
    /// Open (or create) the store in `dir`: move stale `snap.*.generating`
    /// files aside, open sled, check the format, verify the last
    /// [`TAIL_VERIFY_RECORDS`] records. A damaged tail is
    /// [`StoreError::Corrupt`] naming the first bad seq.
    pub fn open(dir: impl AsRef<Path>) -> Result<Self, StoreError> {
        let dir = dir.as_ref().to_path_buf();
        // Another process with the store open may be writing a snapshot
        // right now: only move files aside once sled's lock is free.
        wait_unlocked(&dir)?;
        let moved_aside = move_generating_aside(&dir)?;
        let mut store = Self::open_trees(dir, open_tail)?;
        store.moved_aside = moved_aside;
        info!(dir = %store.dir.display(), head_seq = store.tail.head.seq, head_hash = %store.tail.head.hash_hex(), "log store opened");
        Ok(store)
    }

    /// Open for read-only serving, even over a damaged log: as [`open`],
    /// but a damaged tail cuts the log (for this handle) before the first
    /// bad record instead of failing. Every append is refused; snapshots
    /// are neither stored nor read past the cut. Returns the damage found,
    /// if any, for the caller to report.
    ///
    /// [`open`]: SledStore::open
    pub fn open_read_only(dir: impl AsRef<Path>) -> Result<(Self, Option<StoreError>), StoreError> {
        let mut damage = None;
        let mut store = Self::open_trees(dir.as_ref().to_path_buf(), |log| match open_tail(log) {
            Err(e @ StoreError::Corrupt { seq, .. }) => {
                let cut = tail_before(log, seq)?;
                damage = Some(e);
                Ok(cut)
            }
            other => other,
        })?;
        let why = match &damage {
            Some(e) => format!("the log is damaged ({e}); only the records before it are served"),
            None => "opened read-only".to_owned(),
        };
        warn!(dir = %store.dir.display(), head_seq = store.tail.head.seq, %why, "log store opened read-only");
        store.read_only = Some(why);
        Ok((store, damage))
    }

    /// Open sled and its trees in `dir`, check the format and find the
    /// tail with `tail_of`.
    fn open_trees(
        dir: PathBuf,
        tail_of: impl FnOnce(&sled::Tree) -> Result<Tail, StoreError>,
    ) -> Result<Self, StoreError> {
        let db = open_sled(&dir)?;
        let log = db.open_tree(LOG_TREE)?;
        let meta = db.open_tree(META_TREE)?;
        let snapshots = db.open_tree(SNAPSHOTS_TREE)?;
        check_format(&db, &meta, &log)?;
        let tail = tail_of(&log)?;
        Ok(SledStore {
            dir,
            db,
            log,
            snapshots,
            acked: Arc::new(Mutex::new(tail)),
            tail,
            poisoned: None,
            read_only: None,
            moved_aside: Vec::new(),
            stats: SledStats::default(),
        })
    }

    /// The data directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Files moved aside at open (now under [`ASIDE_DIR`]).
    pub fn moved_aside(&self) -> &[PathBuf] {
        &self.moved_aside
    }

    /// Every stored snapshot (at most [`SNAPSHOTS_KEPT`]), oldest first,
    /// as `(covered seq, bytes)`; for inspection and tests, not for
    /// loading, which takes [`LogStore::latest_snapshot`].
    pub fn snapshots(&self) -> Result<Vec<(u64, Vec<u8>)>, StoreError> {
        self.snapshots
            .iter()
            .map(|kv| {
                let (key, value) = kv?;
                let seq = key_seq(&key).ok_or_else(|| {
                    StoreError::Format(format!("snapshot key of {} bytes", key.len()))
                })?;
                Ok((seq, value.to_vec()))
            })
            .collect()
    }

    /// sled calls made since open.
    pub fn stats(&self) -> SledStats {
        self.stats
    }

    /// A cheap, cloneable, thread-safe read handle (for catch-up readers
    /// while the writer owns the store). It sees acknowledged records only.
    pub fn reader(&self) -> SledReader {
        SledReader {
            log: self.log.clone(),
            acked: Arc::clone(&self.acked),
        }
    }

    fn usable(&self) -> Result<(), StoreError> {
        match self.poisoned.as_ref().or(self.read_only.as_ref()) {
            Some(why) => Err(StoreError::Poisoned(why.clone())),
            None => Ok(()),
        }
    }

    /// Pass a sled result through, poisoning the store on failure.
    fn guard<T>(&mut self, what: &str, result: sled::Result<T>) -> Result<T, StoreError> {
        result.map_err(|e| {
            warn!(error = %e, "{what} failed; the log store refuses further writes");
            self.poisoned = Some(format!("{what} failed: {e}"));
            StoreError::Sled(e)
        })
    }

    /// Write an admitted batch: one `apply_batch`, one flush, then publish
    /// the new tail to readers.
    fn write_batch<'b>(
        &mut self,
        records: impl Iterator<Item = &'b [u8]>,
        tail: Tail,
    ) -> Result<Head, StoreError> {
        let mut batch = sled::Batch::default();
        for (seq, bytes) in (self.tail.head.seq + 1..).zip(records) {
            batch.insert(&seq.to_be_bytes()[..], bytes);
        }
        self.stats.appends += 1;
        self.stats.batches_applied += 1;
        let result = self.log.apply_batch(batch);
        self.guard("apply_batch", result)?;
        self.flush_db()?;
        self.tail = tail;
        *self.acked.lock().unwrap_or_else(PoisonError::into_inner) = tail;
        Ok(tail.head)
    }

    fn flush_db(&mut self) -> Result<(), StoreError> {
        self.stats.flushes += 1;
        let result = self.db.flush();
        self.guard("flush", result).map(drop)
    }
}

impl LogStore for SledStore {
    fn append(&mut self, records: &[Vec<u8>]) -> Result<Head, StoreError> {
        self.usable()?;
        if records.is_empty() {
            return Ok(self.tail.head);
        }
        let tail = admit_batch(self.tail, records)?;
        self.write_batch(records.iter().map(Vec::as_slice), tail)
    }

    fn append_sealed(&mut self, records: &[Sealed]) -> Result<Head, StoreError> {
        self.usable()?;
        if records.is_empty() {
            return Ok(self.tail.head);
        }
        let tail = admit_sealed(self.tail, records)?;
        self.write_batch(records.iter().map(Sealed::bytes), tail)
    }

    fn tail(&self) -> Tail {
        self.tail
    }

    fn scan(&self, from: u64, to: u64, visit: &mut Visit<'_>) -> Result<(), StoreError> {
        scan_tree(&self.log, self.tail.head.seq, from, to, visit)
    }

    fn record(&self, seq: u64) -> Result<Option<Record>, StoreError> {
        get_record(&self.log, self.tail.head.seq, seq)
    }

    fn flush(&mut self) -> Result<(), StoreError> {
        if self.read_only.is_some() && self.poisoned.is_none() {
            return Ok(()); // nothing was written
        }
        self.usable()?;
        self.flush_db()
    }

    fn put_snapshot(&mut self, seq: u64, bytes: &[u8]) -> Result<(), StoreError> {
        if self.read_only.is_some() {
            // A snapshot is a cache of the log; a read-only handle keeps the
            // data dir as it found it.
            debug!(seq, "read-only: snapshot not stored");
            return Ok(());
        }
        self.usable()?;
        if seq > self.tail.head.seq {
            return Err(StoreError::rejected(
                seq,
                format!("snapshot is past the head {}", self.tail.head.seq),
            ));
        }
        let result = self.snapshots.insert(&seq.to_be_bytes()[..], bytes);
        self.guard("snapshot insert", result)?;
        let stale: Vec<sled::IVec> = self
            .snapshots
            .iter()
            .keys()
            .rev()
            .skip(SNAPSHOTS_KEPT)
            .collect::<sled::Result<_>>()?;
        for key in stale {
            let result = self.snapshots.remove(key);
            self.guard("snapshot prune", result)?;
        }
        self.flush_db()
    }

    fn read_only(&self) -> Option<&str> {
        self.read_only.as_deref()
    }

    fn latest_snapshot(&self) -> Result<Option<(u64, Vec<u8>)>, StoreError> {
        let Some((key, value)) = self.snapshots.last()? else {
            return Ok(None);
        };
        let seq = key_seq(&key)
            .ok_or_else(|| StoreError::Format(format!("snapshot key of {} bytes", key.len())))?;
        if seq > self.tail.head.seq {
            // Past a read-only cut: replay the valid prefix instead.
            return Ok(None);
        }
        Ok(Some((seq, value.to_vec())))
    }
}

impl Tamper for SledStore {
    /// Write `bytes` under `seq` with one raw insert and a flush, bypassing
    /// every check and leaving the in-memory head alone: reopen to see what a
    /// restart sees.
    fn tamper_put(&mut self, seq: u64, bytes: &[u8]) -> Result<(), StoreError> {
        if seq == 0 || seq > self.tail.head.seq + 1 {
            return Err(StoreError::rejected(
                seq,
                format!("cannot tamper at seq {seq}, head {}", self.tail.head.seq),
            ));
        }
        self.log.insert(&seq.to_be_bytes()[..], bytes)?;
        self.db.flush()?;
        Ok(())
    }
}

/// A read handle on a [`SledStore`]'s log, safe to use from other threads
/// while the writer appends. It sees records up to the last acknowledged
/// head only: a record in a batch whose flush has not returned is invisible.
#[derive(Clone)]
pub struct SledReader {
    log: sled::Tree,
    acked: Arc<Mutex<Tail>>,
}

impl SledReader {
    /// The last acknowledged tail.
    pub fn tail(&self) -> Tail {
        *self.acked.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub fn head(&self) -> Head {
        self.tail().head
    }

    /// As [`LogStore::scan`], bounded by the acknowledged head.
    pub fn scan(&self, from: u64, to: u64, visit: &mut Visit<'_>) -> Result<(), StoreError> {
        scan_tree(&self.log, self.head().seq, from, to, visit)
    }

    /// As [`LogStore::record`], bounded by the acknowledged head: one point
    /// read, its hash checked, decoded.
    pub fn record(&self, seq: u64) -> Result<Option<Record>, StoreError> {
        get_record(&self.log, self.head().seq, seq)
    }
}

fn get_record(log: &sled::Tree, head_seq: u64, seq: u64) -> Result<Option<Record>, StoreError> {
    if seq == 0 || seq > head_seq {
        return Ok(None);
    }
    match log.get(seq.to_be_bytes())? {
        Some(bytes) => decode_stored(seq, &bytes).map(Some),
        None => Err(StoreError::corrupt(seq, "record missing from the log")),
    }
}

fn scan_tree(
    log: &sled::Tree,
    head_seq: u64,
    from: u64,
    to: u64,
    visit: &mut Visit<'_>,
) -> Result<(), StoreError> {
    let from = from.max(1);
    let to = to.min(head_seq);
    if from > to {
        return Ok(());
    }
    let mut expected = from;
    for item in log.range(from.to_be_bytes()..=to.to_be_bytes()) {
        let (key, value) = item?;
        if key_seq(&key) != Some(expected) {
            return Err(StoreError::corrupt(expected, "record missing from the log"));
        }
        if visit(expected, &value).is_break() {
            return Ok(());
        }
        expected += 1;
    }
    if expected <= to {
        return Err(StoreError::corrupt(expected, "record missing from the log"));
    }
    Ok(())
}

/// Move every `snap.*.generating` file in `dir` (where sled 0.34.7 writes
/// them: `pagecache/snapshot.rs`, `write_snapshot`, directly in the data
/// dir) to `dir/aside/<name>.aside-<n>`, keeping it. Returns the new paths.
pub fn move_generating_aside(dir: &Path) -> Result<Vec<PathBuf>, StoreError> {
    let mut moved = Vec::new();
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(moved),
        Err(e) => return Err(e.into()),
    };
    for entry in entries {
        let entry = entry?;
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        let stale = name.starts_with("snap.") && name.ends_with(".generating");
        if !stale || !entry.file_type()?.is_file() {
            continue;
        }
        let aside_dir = dir.join(ASIDE_DIR);
        std::fs::create_dir_all(&aside_dir)?;
        let mut n = 0u32;
        let target = loop {
            let candidate = aside_dir.join(format!("{name}.aside-{n}"));
            if !candidate.exists() {
                break candidate;
            }
            n += 1;
        };
        std::fs::rename(entry.path(), &target)?;
        warn!(
            from = %entry.path().display(),
            to = %target.display(),
            "moved a stale sled snapshot file aside (left by a process killed while opening)"
        );
        moved.push(target);
    }
    Ok(moved)
}

/// Wait (as [`open_sled`] does) until no process holds sled's lock on
/// `dir/db`; taken and dropped at once, so sled can take it next.
fn wait_unlocked(dir: &Path) -> Result<(), StoreError> {
    let path = dir.join("db");
    let started = std::time::Instant::now();
    loop {
        let file = match std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(&path)
        {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(e.into()),
        };
        match file.try_lock() {
            Ok(()) => return Ok(()),
            Err(std::fs::TryLockError::WouldBlock)
                if started.elapsed() < std::time::Duration::from_millis(OPEN_LOCK_WAIT_MS) =>
            {
                std::thread::sleep(std::time::Duration::from_millis(10));
            }
            Err(std::fs::TryLockError::WouldBlock) => {
                return Err(StoreError::Sled(sled::Error::Io(std::io::Error::new(
                    std::io::ErrorKind::WouldBlock,
                    format!("{} on {path:?}", crate::store::SLED_LOCK_MESSAGE),
                ))));
            }
            Err(std::fs::TryLockError::Error(e)) => return Err(e.into()),
        }
    }
}

/// Open sled, retrying while another handle still holds its file lock.
fn open_sled(dir: &Path) -> Result<sled::Db, StoreError> {
    let started = std::time::Instant::now();
    loop {
        // Every append and snapshot flushes explicitly, so sled's background
        // flusher only competes with the writer for one of two cores; and
        // `HighThroughput` trades disk space for fewer page rewrites, worth
        // about +25% on the batch-256 append bench (see BENCHMARKS.md).
        let config = sled::Config::new()
            .path(dir)
            .flush_every_ms(None)
            .mode(sled::Mode::HighThroughput);
        match config.open() {
            Err(sled::Error::Io(e))
                if e.to_string().contains(crate::store::SLED_LOCK_MESSAGE)
                    && started.elapsed() < std::time::Duration::from_millis(OPEN_LOCK_WAIT_MS) =>
            {
                std::thread::sleep(std::time::Duration::from_millis(10));
            }
            result => return Ok(result?),
        }
    }
}

fn check_format(db: &sled::Db, meta: &sled::Tree, log: &sled::Tree) -> Result<(), StoreError> {
    match meta.get(META_FORMAT_VERSION)? {
        Some(version) => {
            let version: [u8; 4] = version.as_ref().try_into().map_err(|_| {
                StoreError::Format(format!("format_version is {} bytes, not 4", version.len()))
            })?;
            let version = u32::from_le_bytes(version);
            if version != STORE_FORMAT_VERSION {
                return Err(StoreError::Format(format!(
                    "store format version {version}, this binary reads {STORE_FORMAT_VERSION}"
                )));
            }
            let domain = meta.get(META_RECORD_DOMAIN)?;
            if domain.as_deref() != Some(DOMAIN_TAG) {
                return Err(StoreError::Format(format!(
                    "record domain is {:?}, this binary writes {:?}",
                    domain.as_deref().map(String::from_utf8_lossy),
                    String::from_utf8_lossy(DOMAIN_TAG)
                )));
            }
            Ok(())
        }
        None if log.is_empty() => {
            meta.insert(META_FORMAT_VERSION, &STORE_FORMAT_VERSION.to_le_bytes()[..])?;
            meta.insert(META_RECORD_DOMAIN, DOMAIN_TAG)?;
            db.flush()?;
            Ok(())
        }
        None => Err(StoreError::Format(
            "the log holds records but meta has no format_version".into(),
        )),
    }
}

/// The tail of the log cut just before `seq` (read-only opens): the
/// record at `seq - 1`, as stored.
fn tail_before(log: &sled::Tree, seq: u64) -> Result<Tail, StoreError> {
    if seq <= 1 {
        return Ok(Tail::EMPTY);
    }
    let prev = seq - 1;
    let bytes = log
        .get(prev.to_be_bytes())?
        .ok_or_else(|| StoreError::corrupt(prev, "missing before the damage"))?;
    let raw =
        crate::RawRecord::parse(&bytes).map_err(|e| StoreError::corrupt(prev, e.to_string()))?;
    Ok(Tail {
        head: Head {
            seq: prev,
            hash: raw.hash,
        },
        at_ms: raw.at_ms,
    })
}

/// Read the last [`TAIL_VERIFY_RECORDS`] records and verify them.
fn open_tail(log: &sled::Tree) -> Result<Tail, StoreError> {
    let first = match log.first()? {
        None => None,
        Some((key, _)) => {
            Some(key_seq(&key).ok_or_else(|| StoreError::corrupt(1, "malformed first log key"))?)
        }
    };
    let mut window: Vec<(u64, sled::IVec)> = Vec::new();
    for item in log.iter().rev().take(TAIL_VERIFY_RECORDS as usize) {
        let (key, value) = item?;
        let seq = match key_seq(&key) {
            Some(seq) => seq,
            // Name the seq after the last good key we saw (we walk backwards,
            // so that is the one just below it in the window).
            None => {
                return Err(StoreError::corrupt(
                    window.last().map_or(0, |(s, _)| s.saturating_sub(1)),
                    format!("log key of {} bytes is not an 8-byte seq", key.len()),
                ));
            }
        };
        window.push((seq, value));
    }
    window.reverse();
    verify_tail(
        first,
        window.iter().map(|(seq, bytes)| (*seq, bytes.as_ref())),
    )
}
