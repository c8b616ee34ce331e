//! [`SnapshotStore`]: state-machine snapshots as files in a directory, written atomically, verified
//! when read, and sent between nodes in chunks.
//!
//! The snapshot's *contents* are opaque here (the key-value state machine serializes itself); this
//! module only makes sure that a snapshot file is either complete and intact or absent.
//!
//! # Files
//!
//! ```text
//! snapshots/
//!   snap-00000000000000004096-00000000000000000007.snap    index 4096, term 7
//!   snap-00000000000000008192-00000000000000000009.snap.3.tmp   a write in progress (or left by a crash)
//!   snap-00000000000000009000-00000000000000000009.snap.recv.tmp   a transfer from the leader in progress
//! ```
//!
//! A snapshot file is named after the last log entry it covers, both numbers zero-padded to 20
//! digits so that names sort by index. Normally there is exactly one: writing a newer snapshot
//! removes the older ones. Names ending in `.tmp` are never read; [`SnapshotStore::open`] deletes
//! them (they are what a crash in the middle of a write or a transfer leaves behind).
//!
//! # File format
//!
//! All integers are little-endian.
//!
//! ```text
//! offset  size  field
//!      0     8  magic "RLKVSNP" + format version:u8 (1)
//!      8     8  index:u64     last log entry covered (must match the file name)
//!     16     8  term:u64      its term (must match the file name)
//!     24     8  data_len:u64  the file is exactly 36 + data_len bytes
//!     32     4  crc:u32       CRC-32 (IEEE, as computed by `crc32fast`) of the data bytes
//!     36     …  data          the state machine's snapshot, opaque
//! ```
//!
//! Every single-bit flip is detected: in the magic (bad magic or version), in the index or term
//! (they disagree with the file name), in the length (it disagrees with the file size), in the CRC
//! or in the data (the CRC does not match). A truncated file disagrees with its length field.
//!
//! # Writing atomically
//!
//! [`SnapshotStore::write`]:
//!
//! 1. writes header and data to a new temporary file `snap-….snap.<n>.tmp`;
//! 2. fsyncs it, so the bytes are on disk before the name is;
//! 3. renames it to `snap-….snap` (atomic: readers see the old state or the whole new file);
//! 4. fsyncs the directory, so the rename itself survives a power cut;
//! 5. removes the snapshot files older than the new one (not fsynced: an old file that comes
//!    back after a crash is harmless, the newest one wins).
//!
//! A crash before step 3 leaves only a `.tmp` file, ignored and deleted at the next open; a crash
//! after it leaves the complete new file. A snapshot file that is present but fails verification
//! was therefore damaged *after* it was written, and [`SnapshotStore::latest`] refuses it with an
//! error naming the file, the byte offset and the way out (wipe the data dir).
//!
//! # Chunked transfer
//!
//! A leader sends a follower the raw bytes of its snapshot *file* (header included) in chunks of
//! about a megabyte: [`SnapshotStore::file_len`] and [`SnapshotStore::read_chunk`] on the sending
//! side, [`SnapshotStore::receive_chunk`] and [`SnapshotStore::finish_receive`] on the receiving
//! side, which checks the whole file (header against the snapshot's metadata, CRC of the data) only
//! at the end, then installs it with the same fsync/rename/fsync sequence as a local write.
//!
//! The receiver holds one transfer at a time, in memory and in a `.recv.tmp` file (a restart
//! drops it and the sender starts over). A chunk must start exactly where the received bytes end;
//! any other offset is refused with [`Error::BadRequest`] saying `expected offset N`, which the
//! sender reads back with [`expected_offset`] and resumes from. A chunk at offset 0 always (re)starts
//! a transfer, replacing whatever was in progress, so a sender that switches to a newer snapshot
//! simply starts at 0. A stale or duplicated chunk therefore never corrupts anything: it is
//! refused (the sender is told where to go on), or, at offset 0, it restarts the transfer.

use std::fs::{self, File, OpenOptions};
use std::io::{ErrorKind, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use parking_lot::Mutex;

use crate::error::{Error, Result};
use crate::raft::SnapshotMeta;

/// The first bytes of every snapshot file: `RLKVSNP` and the format version (1).
pub const SNAPSHOT_MAGIC: [u8; 8] = *b"RLKVSNP\x01";
/// Length of the header that precedes the data.
pub const SNAPSHOT_HEADER_LEN: u64 = 36;

/// A snapshot file is written, and a received one flushed, this many bytes at a time.
const SYNC_EVERY: usize = 4 << 20;

/// Snapshot files in a directory. Cheap to clone: clones share the directory and the transfer in
/// progress, so the server can keep one outside the Raft lock (writing a large snapshot must not
/// hold up the consensus core).
#[derive(Clone)]
pub struct SnapshotStore {
    inner: Arc<Inner>,
}

struct Inner {
    dir: PathBuf,
    fsync: bool,
    /// The transfer being received, if any.
    receiving: Mutex<Option<Receiving>>,
    /// Held while a finished snapshot is renamed into place and older ones are removed.
    install: Mutex<()>,
    /// Makes temporary file names unique within this process.
    tmp_counter: AtomicU64,
}

struct Receiving {
    meta: SnapshotMeta,
    total: u64,
    received: u64,
    /// Bytes written since the last flush (see [`SYNC_EVERY`]).
    unsynced: u64,
    file: File,
    path: PathBuf,
}

/// The file name of the snapshot through `meta`.
pub fn snapshot_file_name(meta: SnapshotMeta) -> String {
    format!("snap-{:020}-{:020}.snap", meta.index, meta.term)
}

/// The snapshot metadata encoded in a file name, if it is a snapshot file name.
pub fn parse_snapshot_file_name(name: &str) -> Option<SnapshotMeta> {
    let middle = name.strip_prefix("snap-")?.strip_suffix(".snap")?;
    let (index, term) = middle.split_once('-')?;
    let number = |s: &str| {
        (s.len() == 20 && s.bytes().all(|b| b.is_ascii_digit())).then(|| s.parse().ok()).flatten()
    };
    Some(SnapshotMeta { index: number(index)?, term: number(term)? })
}

/// The snapshot files in `dir`, oldest first (an absent directory has none). Temporary files and
/// other files are ignored, except ones that look like snapshot files but are misnamed.
pub fn list_snapshot_files(dir: &Path) -> Result<Vec<(SnapshotMeta, PathBuf)>> {
    let read = match fs::read_dir(dir) {
        Ok(read) => read,
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(io_error("cannot list snapshot dir", dir, e)),
    };
    let mut files = Vec::new();
    for item in read {
        let item = item.map_err(|e| io_error("cannot list snapshot dir", dir, e))?;
        let name = item.file_name();
        let Some(name) = name.to_str() else { continue };
        if let Some(meta) = parse_snapshot_file_name(name) {
            files.push((meta, item.path()));
        } else if name.starts_with("snap-") && name.ends_with(".snap") {
            return Err(Error::Storage(format!(
                "unexpected file {} in the snapshot dir: it looks like a snapshot but its name is \
                 not snap-<20 digits>-<20 digits>.snap; move it away",
                item.path().display()
            )));
        }
    }
    files.sort_by_key(|(meta, _)| (meta.index, meta.term));
    Ok(files)
}

/// The outcome of checking a snapshot file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Check {
    /// Header and CRC are good; the data is this many bytes.
    Valid {
        /// Length of the data (the file minus its header).
        data_len: u64,
    },
    /// The file is damaged.
    Damaged {
        /// Byte offset of the first field found wrong.
        offset: u64,
        /// What is wrong.
        reason: String,
    },
}

/// Checks the snapshot file at `path` against `meta` (normally parsed from its name): magic and
/// version, index and term, length against the file size, and the CRC of the data, reading the
/// file in 64 KiB pieces. With `keep`, the data is also appended to it.
pub fn check_file(path: &Path, meta: SnapshotMeta, keep: Option<&mut Vec<u8>>) -> Result<Check> {
    let mut file = File::open(path).map_err(|e| open_error(path, e))?;
    let file_len = file.metadata().map_err(|e| io_error("cannot stat", path, e))?.len();
    check_stream(&mut file, file_len, meta, keep).map_err(|e| io_error("cannot read", path, e))
}

fn check_stream(
    reader: &mut dyn Read,
    file_len: u64,
    meta: SnapshotMeta,
    keep: Option<&mut Vec<u8>>,
) -> std::io::Result<Check> {
    let damaged = |offset: u64, reason: String| Ok(Check::Damaged { offset, reason });
    let mut header = [0u8; SNAPSHOT_HEADER_LEN as usize];
    let have = file_len.min(SNAPSHOT_HEADER_LEN) as usize;
    reader.read_exact(&mut header[..have])?;
    let magic_len = have.min(SNAPSHOT_MAGIC.len() - 1);
    if header[..magic_len] != SNAPSHOT_MAGIC[..magic_len] {
        return damaged(0, "not a snapshot file (bad magic)".to_string());
    }
    if have < SNAPSHOT_HEADER_LEN as usize {
        return damaged(
            file_len,
            format!(
                "file cut short: {file_len} bytes, less than the {SNAPSHOT_HEADER_LEN}-byte header"
            ),
        );
    }
    if header[7] != SNAPSHOT_MAGIC[7] {
        return damaged(
            7,
            format!(
                "unsupported snapshot format version {} (this build reads version {})",
                header[7], SNAPSHOT_MAGIC[7]
            ),
        );
    }
    let u64_at = |at: usize| {
        let mut a = [0; 8];
        a.copy_from_slice(&header[at..at + 8]);
        u64::from_le_bytes(a)
    };
    let (index, term, data_len) = (u64_at(8), u64_at(16), u64_at(24));
    let mut crc = [0; 4];
    crc.copy_from_slice(&header[32..36]);
    let stored_crc = u32::from_le_bytes(crc);
    if index != meta.index {
        return damaged(8, format!("header says index {index} where {} was expected", meta.index));
    }
    if term != meta.term {
        return damaged(16, format!("header says term {term} where {} was expected", meta.term));
    }
    if SNAPSHOT_HEADER_LEN.checked_add(data_len) != Some(file_len) {
        return damaged(
            24,
            format!(
                "header says {data_len} data bytes, so the file should be {} bytes, but it is \
                 {file_len} (cut short, or a damaged length)",
                SNAPSHOT_HEADER_LEN.saturating_add(data_len)
            ),
        );
    }
    let mut hasher = crc32fast::Hasher::new();
    let mut keep = keep;
    if let Some(keep) = keep.as_deref_mut() {
        keep.reserve(data_len as usize);
    }
    let mut buf = vec![0u8; 64 << 10];
    let mut left = data_len;
    while left > 0 {
        let n = buf.len().min(left as usize);
        reader.read_exact(&mut buf[..n])?;
        hasher.update(&buf[..n]);
        if let Some(keep) = keep.as_deref_mut() {
            keep.extend_from_slice(&buf[..n]);
        }
        left -= n as u64;
    }
    let computed = hasher.finalize();
    if computed != stored_crc {
        return damaged(
            SNAPSHOT_HEADER_LEN,
            format!(
                "CRC mismatch over the {data_len} data bytes (stored {stored_crc:#010x}, computed \
                 {computed:#010x})"
            ),
        );
    }
    Ok(Check::Valid { data_len })
}

fn encode_header(meta: SnapshotMeta, data: &[u8]) -> Vec<u8> {
    let mut header = Vec::with_capacity(SNAPSHOT_HEADER_LEN as usize);
    header.extend_from_slice(&SNAPSHOT_MAGIC);
    header.extend_from_slice(&meta.index.to_le_bytes());
    header.extend_from_slice(&meta.term.to_le_bytes());
    header.extend_from_slice(&(data.len() as u64).to_le_bytes());
    header.extend_from_slice(&crc32fast::hash(data).to_le_bytes());
    header
}

/// The offset a refused chunk's error asks the sender to resume from (see the module docs).
pub fn expected_offset(error: &Error) -> Option<u64> {
    let Error::BadRequest(message) = error else { return None };
    let (_, rest) = message.split_once("expected offset ")?;
    let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
    digits.parse().ok()
}

fn io_error(action: &str, path: &Path, e: std::io::Error) -> Error {
    Error::Storage(format!("{action} {}: {e}", path.display()))
}

fn open_error(path: &Path, e: std::io::Error) -> Error {
    if e.kind() == ErrorKind::NotFound {
        Error::NotFound(format!("snapshot file {} does not exist", path.display()))
    } else {
        io_error("cannot open snapshot file", path, e)
    }
}

fn refused(expected: u64, why: String) -> Error {
    Error::BadRequest(format!("snapshot chunk refused: expected offset {expected} ({why})"))
}

fn describe(meta: SnapshotMeta) -> String {
    format!("snapshot (index {}, term {})", meta.index, meta.term)
}

/// Fsyncs a directory, so that the names created, renamed or removed in it are durable.
pub(crate) fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir).and_then(|d| d.sync_all()).map_err(|e| io_error("fsync of directory", dir, e))
}

impl SnapshotStore {
    /// Opens (creating if needed) the snapshot directory `dir`, fsyncing files and directory, and
    /// deletes leftover temporary files.
    pub fn open(dir: &Path) -> Result<SnapshotStore> {
        SnapshotStore::open_with(dir, true)
    }

    /// Like [`SnapshotStore::open`]; with `fsync` false nothing is ever fsynced (tests, and nodes
    /// run with fsync off: a machine crash can then lose or damage a snapshot).
    pub fn open_with(dir: &Path, fsync: bool) -> Result<SnapshotStore> {
        fs::create_dir_all(dir).map_err(|e| io_error("cannot create snapshot dir", dir, e))?;
        let read = fs::read_dir(dir).map_err(|e| io_error("cannot list snapshot dir", dir, e))?;
        for item in read {
            let item = item.map_err(|e| io_error("cannot list snapshot dir", dir, e))?;
            if item.file_name().to_str().is_some_and(|n| n.ends_with(".tmp")) {
                log::info!("removing leftover temporary snapshot file {}", item.path().display());
                fs::remove_file(item.path())
                    .map_err(|e| io_error("cannot remove", &item.path(), e))?;
            }
        }
        Ok(SnapshotStore {
            inner: Arc::new(Inner {
                dir: dir.to_path_buf(),
                fsync,
                receiving: Mutex::new(None),
                install: Mutex::new(()),
                tmp_counter: AtomicU64::new(0),
            }),
        })
    }

    /// The directory.
    pub fn dir(&self) -> &Path {
        &self.inner.dir
    }

    /// The path of the snapshot file for `meta` (whether or not it exists).
    pub fn path(&self, meta: SnapshotMeta) -> PathBuf {
        self.inner.dir.join(snapshot_file_name(meta))
    }

    /// The snapshot files present, oldest first, without checking their contents.
    pub fn list(&self) -> Result<Vec<SnapshotMeta>> {
        Ok(list_snapshot_files(&self.inner.dir)?.into_iter().map(|(m, _)| m).collect())
    }

    /// The newest snapshot, after checking its whole file (this reads it). `None` if there is no
    /// snapshot file. A damaged newest file is an [`Error::Storage`] naming it, the byte offset
    /// and the way out.
    pub fn latest(&self) -> Result<Option<SnapshotMeta>> {
        let Some((meta, path)) = list_snapshot_files(&self.inner.dir)?.pop() else {
            return Ok(None);
        };
        match check_file(&path, meta, None)? {
            Check::Valid { .. } => Ok(Some(meta)),
            Check::Damaged { offset, reason } => Err(self.corruption(&path, offset, &reason)),
        }
    }

    fn corruption(&self, path: &Path, offset: u64, reason: &str) -> Error {
        Error::Storage(format!(
            "snapshot file {} is corrupt at byte offset {offset}: {reason}. It was complete when it \
             was written (snapshots are fsynced before they are renamed into place), so this is \
             damage. To recover, wipe the node's data dir (the one holding {}) and restart it; it \
             will catch up from the leader (the rest of the cluster must still have a quorum)",
            path.display(),
            self.inner.dir.display()
        ))
    }

    /// Writes the snapshot through `meta` atomically (temporary file, fsync, rename, fsync of the
    /// directory), then removes older snapshot files. Rewriting an existing snapshot replaces it.
    pub fn write(&self, meta: SnapshotMeta, data: &[u8]) -> Result<()> {
        let n = self.inner.tmp_counter.fetch_add(1, Ordering::Relaxed);
        let tmp = self.inner.dir.join(format!("{}.{n}.tmp", snapshot_file_name(meta)));
        let result = (|| {
            let mut file = OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(&tmp)
                .map_err(|e| io_error("cannot create", &tmp, e))?;
            file.write_all(&encode_header(meta, data))
                .map_err(|e| io_error("cannot write", &tmp, e))?;
            // In pieces, each flushed before the next is written: one fsync of a whole large
            // file makes the filesystem's journal commit wait for all of it, and every WAL
            // fsync of the node (its write path) waits behind that commit. Bounding the dirty
            // data bounds that wait (see "Write pauses" in the docs of `server::snapshot`).
            for piece in data.chunks(SYNC_EVERY) {
                file.write_all(piece).map_err(|e| io_error("cannot write", &tmp, e))?;
                if self.inner.fsync {
                    file.sync_data().map_err(|e| io_error("fsync of", &tmp, e))?;
                }
            }
            if self.inner.fsync {
                file.sync_all().map_err(|e| io_error("fsync of", &tmp, e))?;
            }
            drop(file);
            self.install(&tmp, meta)
        })();
        if result.is_err() {
            let _ = fs::remove_file(&tmp);
        }
        result
    }

    /// Renames a complete, synced temporary file into place, fsyncs the directory, removes older
    /// snapshots.
    fn install(&self, tmp: &Path, meta: SnapshotMeta) -> Result<()> {
        let _one_at_a_time = self.inner.install.lock();
        let path = self.path(meta);
        fs::rename(tmp, &path).map_err(|e| io_error("cannot rename into place", tmp, e))?;
        if self.inner.fsync {
            sync_dir(&self.inner.dir)?;
        }
        for (old, old_path) in list_snapshot_files(&self.inner.dir)? {
            if (old.index, old.term) < (meta.index, meta.term) {
                match fs::remove_file(&old_path) {
                    Ok(()) => log::debug!("removed old snapshot {}", old_path.display()),
                    Err(e) if e.kind() == ErrorKind::NotFound => {}
                    Err(e) => log::warn!("cannot remove old snapshot {}: {e}", old_path.display()),
                }
            }
        }
        Ok(())
    }

    /// The data of the snapshot through `meta`, after checking it. [`Error::NotFound`] if there is
    /// no such file (a newer snapshot replaced it), [`Error::Storage`] if it is damaged.
    pub fn read(&self, meta: SnapshotMeta) -> Result<Vec<u8>> {
        let path = self.path(meta);
        let mut data = Vec::new();
        match check_file(&path, meta, Some(&mut data))? {
            Check::Valid { .. } => Ok(data),
            Check::Damaged { offset, reason } => Err(self.corruption(&path, offset, &reason)),
        }
    }

    /// The size of the snapshot file through `meta` (header included): what a transfer sends.
    pub fn file_len(&self, meta: SnapshotMeta) -> Result<u64> {
        let path = self.path(meta);
        Ok(fs::metadata(&path).map_err(|e| open_error(&path, e))?.len())
    }

    /// Up to `max` bytes of the snapshot file through `meta`, from byte `offset` (fewer at the end
    /// of the file, none at its end). [`Error::NotFound`] once a newer snapshot has replaced it:
    /// the sender then starts over with the newest one.
    pub fn read_chunk(&self, meta: SnapshotMeta, offset: u64, max: usize) -> Result<Vec<u8>> {
        let path = self.path(meta);
        let mut file = File::open(&path).map_err(|e| open_error(&path, e))?;
        let len = file.metadata().map_err(|e| io_error("cannot stat", &path, e))?.len();
        if offset > len {
            return Err(Error::BadRequest(format!(
                "offset {offset} is past the end of {} ({len} bytes)",
                path.display()
            )));
        }
        file.seek(SeekFrom::Start(offset)).map_err(|e| io_error("cannot seek in", &path, e))?;
        let want = (len - offset).min(max as u64);
        let mut chunk = Vec::with_capacity(want as usize);
        file.take(want).read_to_end(&mut chunk).map_err(|e| io_error("cannot read", &path, e))?;
        Ok(chunk)
    }

    /// Receives bytes `offset ..` of the snapshot file through `meta`, which is `total` bytes
    /// long, and returns how many bytes of it have been received so far. Offset 0 (re)starts a
    /// transfer, replacing any in progress; otherwise the chunk must continue the transfer of this
    /// same snapshot exactly where it stands, or it is refused with an [`Error::BadRequest`] that
    /// says `expected offset N` (see [`expected_offset`]) and changes nothing.
    pub fn receive_chunk(
        &self,
        meta: SnapshotMeta,
        offset: u64,
        total: u64,
        bytes: &[u8],
    ) -> Result<u64> {
        if total < SNAPSHOT_HEADER_LEN {
            return Err(Error::BadRequest(format!(
                "a snapshot file of {total} bytes is shorter than its {SNAPSHOT_HEADER_LEN}-byte \
                 header"
            )));
        }
        let end = offset.checked_add(bytes.len() as u64).filter(|&end| end <= total);
        let Some(end) = end else {
            return Err(Error::BadRequest(format!(
                "a chunk of {} bytes at offset {offset} goes past the end of the {total}-byte \
                 snapshot file",
                bytes.len()
            )));
        };
        let mut receiving = self.inner.receiving.lock();
        if offset == 0 {
            if let Some(old) = receiving.take() {
                discard(old);
            }
            let path = self.inner.dir.join(format!("{}.recv.tmp", snapshot_file_name(meta)));
            let file = OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .open(&path)
                .map_err(|e| io_error("cannot create", &path, e))?;
            *receiving = Some(Receiving { meta, total, received: 0, unsynced: 0, file, path });
        }
        let r = match receiving.as_mut() {
            Some(r) if r.meta == meta && r.total == total => r,
            Some(r) if r.meta == meta => {
                return Err(refused(
                    0,
                    format!(
                        "the {} in progress is {} bytes, not {total}; start over",
                        describe(meta),
                        r.total
                    ),
                ));
            }
            Some(r) => {
                return Err(refused(
                    0,
                    format!(
                        "the transfer in progress is of the {}, not the {}; offset 0 starts a new \
                         one",
                        describe(r.meta),
                        describe(meta)
                    ),
                ));
            }
            None => {
                return Err(refused(
                    0,
                    format!("no transfer of the {} in progress", describe(meta)),
                ));
            }
        };
        if offset != r.received {
            return Err(refused(
                r.received,
                format!("got a chunk at offset {offset}, {} bytes received so far", r.received),
            ));
        }
        r.unsynced += bytes.len() as u64;
        // Flushed as it comes, a few MiB at a time (see `write`): the final fsync then has little
        // left to do, and the node's WAL fsyncs never wait behind a whole snapshot's.
        let flush = self.inner.fsync && r.unsynced >= SYNC_EVERY as u64;
        let written = r.file.write_all(bytes).and_then(|()| match flush {
            true => r.file.sync_data(),
            false => Ok(()),
        });
        if let Err(e) = written {
            let error = io_error("cannot write", &r.path, e);
            if let Some(r) = receiving.take() {
                discard(r);
            }
            return Err(error);
        }
        if flush {
            r.unsynced = 0;
        }
        r.received = end;
        Ok(end)
    }

    /// Completes the transfer of the snapshot through `meta`: if the whole file has arrived and
    /// checks out (header matches `meta`, CRC good), fsyncs it, renames it into place, fsyncs the
    /// directory and removes older snapshots. An incomplete transfer is kept (the error says the
    /// offset to continue from); a damaged one is discarded (no snapshot file is left for it).
    pub fn finish_receive(&self, meta: SnapshotMeta) -> Result<()> {
        let mut receiving = self.inner.receiving.lock();
        let Some(r) = receiving.take_if(|r| r.meta == meta) else {
            return Err(refused(0, format!("no transfer of the {} in progress", describe(meta))));
        };
        if r.received < r.total {
            let error = refused(
                r.received,
                format!(
                    "the {} is incomplete: {} of {} bytes received",
                    describe(meta),
                    r.received,
                    r.total
                ),
            );
            *receiving = Some(r);
            return Err(error);
        }
        drop(receiving);
        let result = (|| {
            match check_file(&r.path, meta, None)? {
                Check::Valid { .. } => {}
                Check::Damaged { offset, reason } => {
                    return Err(Error::BadRequest(format!(
                        "the received {} is damaged at byte offset {offset}: {reason}; discarded \
                         it, send it again (expected offset 0)",
                        describe(meta)
                    )));
                }
            }
            if self.inner.fsync {
                r.file.sync_all().map_err(|e| io_error("fsync of", &r.path, e))?;
            }
            self.install(&r.path, meta)
        })();
        if result.is_err() {
            let _ = fs::remove_file(&r.path);
        }
        result
    }

    /// The transfer in progress, if any: which snapshot, and how many bytes have arrived.
    pub fn receiving(&self) -> Option<(SnapshotMeta, u64)> {
        self.inner.receiving.lock().as_ref().map(|r| (r.meta, r.received))
    }
}

fn discard(r: Receiving) {
    drop(r.file);
    if let Err(e) = fs::remove_file(&r.path) {
        log::warn!("cannot remove {}: {e}", r.path.display());
    }
}

#[cfg(test)]
mod tests {
    use tempfile::TempDir;

    use super::*;

    fn meta(index: u64, term: u64) -> SnapshotMeta {
        SnapshotMeta { index, term }
    }

    fn data(len: usize, seed: u8) -> Vec<u8> {
        (0..len).map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed)).collect()
    }

    fn store(dir: &Path) -> SnapshotStore {
        SnapshotStore::open_with(dir, false).unwrap()
    }

    fn files(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> = fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        names.sort();
        names
    }

    fn storage_message(result: Result<impl std::fmt::Debug>) -> String {
        match result {
            Err(Error::Storage(m)) => m,
            other => panic!("expected a storage error, got {other:?}"),
        }
    }

    #[test]
    fn names_round_trip_and_sort() {
        let m = meta(4096, 7);
        assert_eq!(snapshot_file_name(m), "snap-00000000000000004096-00000000000000000007.snap");
        assert_eq!(parse_snapshot_file_name(&snapshot_file_name(m)), Some(m));
        let max = meta(u64::MAX, u64::MAX);
        assert_eq!(parse_snapshot_file_name(&snapshot_file_name(max)), Some(max));
        assert_eq!(parse_snapshot_file_name("snap-1-2.snap"), None);
        assert_eq!(parse_snapshot_file_name(&format!("{}.0.tmp", snapshot_file_name(m))), None);
        assert!(snapshot_file_name(meta(9, 5)) < snapshot_file_name(meta(10, 1)));
    }

    #[test]
    fn write_read_round_trip_and_older_ones_are_removed() {
        let dir = TempDir::new().unwrap();
        let s = SnapshotStore::open(dir.path()).unwrap();
        assert_eq!(s.latest().unwrap(), None);
        assert!(matches!(s.read(meta(1, 1)), Err(Error::NotFound(_))));
        for (i, len) in [0usize, 1, 100, 200_000].into_iter().enumerate() {
            let m = meta(10 * (i as u64 + 1), 2);
            let d = data(len, i as u8);
            s.write(m, &d).unwrap();
            assert_eq!(s.latest().unwrap(), Some(m));
            assert_eq!(s.read(m).unwrap(), d);
            assert_eq!(s.file_len(m).unwrap(), SNAPSHOT_HEADER_LEN + len as u64);
            assert_eq!(files(dir.path()), vec![snapshot_file_name(m)], "older ones removed");
        }
        // An older snapshot written after a newer one does not remove the newer one.
        s.write(meta(5, 1), b"old").unwrap();
        assert_eq!(s.list().unwrap(), vec![meta(5, 1), meta(40, 2)]);
        assert_eq!(s.latest().unwrap(), Some(meta(40, 2)));
        // Rewriting the same snapshot replaces it.
        s.write(meta(40, 2), b"again").unwrap();
        assert_eq!(s.read(meta(40, 2)).unwrap(), b"again");
        // A reopened store sees the same.
        drop(s);
        assert_eq!(store(dir.path()).latest().unwrap(), Some(meta(40, 2)));
    }

    #[test]
    fn leftover_temporary_files_are_ignored_and_removed() {
        let dir = TempDir::new().unwrap();
        let s = store(dir.path());
        s.write(meta(10, 1), b"ten").unwrap();
        // What a crash in the middle of writing snapshot 20 (or receiving 30) leaves behind.
        let tmp_write = format!("{}.0.tmp", snapshot_file_name(meta(20, 1)));
        let tmp_recv = format!("{}.recv.tmp", snapshot_file_name(meta(30, 1)));
        fs::write(dir.path().join(&tmp_write), b"RLKVSNP\x01 half a snapshot").unwrap();
        fs::write(dir.path().join(&tmp_recv), b"").unwrap();
        assert_eq!(s.latest().unwrap(), Some(meta(10, 1)), "temporary files are not snapshots");
        drop(s);
        let s = store(dir.path());
        assert_eq!(files(dir.path()), vec![snapshot_file_name(meta(10, 1))]);
        assert_eq!(s.read(meta(10, 1)).unwrap(), b"ten");
        // Other files are left alone; misnamed snapshot files are an error.
        fs::write(dir.path().join("README"), b"notes").unwrap();
        assert_eq!(s.latest().unwrap(), Some(meta(10, 1)));
        fs::write(dir.path().join("snap-12-1.snap"), b"").unwrap();
        assert!(storage_message(s.latest()).contains("snap-12-1.snap"));
    }

    #[test]
    fn every_bit_flip_and_every_truncation_is_detected() {
        let dir = TempDir::new().unwrap();
        let s = store(dir.path());
        let m = meta(77, 3);
        let d = data(300, 9);
        s.write(m, &d).unwrap();
        let path = s.path(m);
        let good = fs::read(&path).unwrap();
        assert_eq!(good.len(), 336);
        let bad = |bytes: &[u8]| {
            fs::write(&path, bytes).unwrap();
            let msg = storage_message(s.latest());
            assert!(msg.contains(&path.display().to_string()), "{msg}");
            assert!(msg.contains("wipe the node's data dir"), "{msg}");
            assert!(s.read(m).is_err());
            msg
        };
        for i in 0..good.len() {
            for bit in [0, 3, 7] {
                let mut flipped = good.clone();
                flipped[i] ^= 1 << bit;
                let msg = bad(&flipped);
                let expected_offset = match i {
                    0..=6 => 0,
                    7 => 7,
                    8..=15 => 8,
                    16..=23 => 16,
                    24..=31 => 24,
                    _ => 36,
                };
                assert!(
                    msg.contains(&format!("byte offset {expected_offset}:")),
                    "byte {i}: {msg}"
                );
            }
        }
        for len in 0..good.len() {
            let msg = bad(&good[..len]);
            assert!(msg.contains("cut short") || msg.contains("bad magic"), "{len}: {msg}");
        }
        let mut longer = good.clone();
        longer.push(0);
        bad(&longer);
        fs::write(&path, &good).unwrap();
        assert_eq!(s.latest().unwrap(), Some(m));
        assert_eq!(s.read(m).unwrap(), d);
    }

    /// Sends the snapshot file of `from` to `to` in chunks of `chunk` bytes, obeying refusals.
    fn transfer(from: &SnapshotStore, to: &SnapshotStore, m: SnapshotMeta, chunk: usize) {
        let total = from.file_len(m).unwrap();
        let mut offset = 0;
        while offset < total {
            let bytes = from.read_chunk(m, offset, chunk).unwrap();
            offset = match to.receive_chunk(m, offset, total, &bytes) {
                Ok(received) => received,
                Err(e) => expected_offset(&e).unwrap_or_else(|| panic!("{e}")),
            };
        }
        to.finish_receive(m).unwrap();
    }

    #[test]
    fn chunked_transfer_round_trips() {
        let (a, b) = (TempDir::new().unwrap(), TempDir::new().unwrap());
        let (leader, follower) = (store(a.path()), store(b.path()));
        follower.write(meta(3, 1), b"the follower's own old snapshot").unwrap();
        let m = meta(1000, 4);
        let d = data(10_000, 1);
        leader.write(m, &d).unwrap();
        assert_eq!(leader.read_chunk(m, 0, 8).unwrap(), SNAPSHOT_MAGIC);
        assert_eq!(leader.read_chunk(m, 10_036, 100).unwrap(), Vec::<u8>::new());
        assert!(leader.read_chunk(m, 10_037, 100).is_err());
        transfer(&leader, &follower, m, 1 << 20);
        assert_eq!(follower.read(m).unwrap(), d);
        assert_eq!(files(b.path()), vec![snapshot_file_name(m)], "old one removed, no temp left");
        assert_eq!(follower.receiving(), None);
        // Small chunks, including ones that split the header.
        let (c, m2) = (TempDir::new().unwrap(), meta(2000, 5));
        leader.write(m2, &d).unwrap();
        assert!(matches!(leader.read_chunk(m, 0, 8), Err(Error::NotFound(_))), "replaced");
        let other = store(c.path());
        transfer(&leader, &other, m2, 7);
        assert_eq!(other.read(m2).unwrap(), d);
    }

    #[test]
    fn an_interrupted_transfer_resumes_and_stale_chunks_are_harmless() {
        let (a, b) = (TempDir::new().unwrap(), TempDir::new().unwrap());
        let (leader, follower) = (store(a.path()), store(b.path()));
        let m = meta(500, 2);
        let d = data(5000, 7);
        leader.write(m, &d).unwrap();
        let total = leader.file_len(m).unwrap();
        let chunk = |offset: u64| leader.read_chunk(m, offset, 1000).unwrap();

        assert_eq!(follower.receive_chunk(m, 0, total, &chunk(0)).unwrap(), 1000);
        assert_eq!(follower.receive_chunk(m, 1000, total, &chunk(1000)).unwrap(), 2000);
        // The sender loses track (a timeout, a lost response) and sends a later chunk: refused,
        // with the offset to resume from.
        let err = follower.receive_chunk(m, 3000, total, &chunk(3000)).unwrap_err();
        assert_eq!(expected_offset(&err), Some(2000), "{err}");
        assert_eq!(err.code(), "bad_request");
        // A duplicate of an earlier chunk (delivered twice): refused, nothing changes.
        let err = follower.receive_chunk(m, 1000, total, &chunk(1000)).unwrap_err();
        assert_eq!(expected_offset(&err), Some(2000));
        // Finishing early: refused, the transfer is kept.
        let err = follower.finish_receive(m).unwrap_err();
        assert_eq!(expected_offset(&err), Some(2000), "{err}");
        assert_eq!(follower.receiving(), Some((m, 2000)));
        // A chunk of a different snapshot in the middle: refused, the transfer in progress kept.
        let err = follower.receive_chunk(meta(400, 2), 2000, total, &chunk(2000)).unwrap_err();
        assert_eq!(expected_offset(&err), Some(0));
        // The same snapshot with a different size: refused.
        let err = follower.receive_chunk(m, 2000, total + 1, &chunk(2000)).unwrap_err();
        assert_eq!(expected_offset(&err), Some(0));
        // Chunks past the stated size are refused outright.
        assert!(follower.receive_chunk(m, 2000, 2500, &chunk(2000)).is_err());
        assert!(follower.receive_chunk(m, 0, 10, b"").is_err());
        assert_eq!(follower.receiving(), Some((m, 2000)));
        // Resume where it stands.
        let mut offset = 2000;
        while offset < total {
            offset = follower.receive_chunk(m, offset, total, &chunk(offset)).unwrap();
        }
        // A duplicate of the last chunk after the end: refused.
        assert_eq!(
            expected_offset(&follower.receive_chunk(m, 5000, total, &chunk(5000)).unwrap_err()),
            Some(total)
        );
        follower.finish_receive(m).unwrap();
        assert_eq!(follower.read(m).unwrap(), d);
        // Finishing twice, or a late chunk afterwards: nothing in progress, the snapshot stays.
        assert_eq!(expected_offset(&follower.finish_receive(m).unwrap_err()), Some(0));
        let err = follower.receive_chunk(m, 1000, total, &chunk(1000)).unwrap_err();
        assert_eq!(expected_offset(&err), Some(0));
        assert_eq!(follower.latest().unwrap(), Some(m));
    }

    #[test]
    fn offset_zero_restarts_and_a_new_snapshot_replaces_the_transfer() {
        let (a, b) = (TempDir::new().unwrap(), TempDir::new().unwrap());
        let (leader, follower) = (store(a.path()), store(b.path()));
        let (m1, m2) = (meta(100, 1), meta(200, 2));
        leader.write(m1, &data(3000, 1)).unwrap();
        let first = leader.read_chunk(m1, 0, 1000).unwrap();
        let total1 = leader.file_len(m1).unwrap();
        follower.receive_chunk(m1, 0, total1, &first).unwrap();
        follower
            .receive_chunk(m1, 1000, total1, &leader.read_chunk(m1, 1000, 1000).unwrap())
            .unwrap();
        // Offset 0 again: a restart of the same transfer.
        assert_eq!(follower.receive_chunk(m1, 0, total1, &first).unwrap(), 1000);
        // The leader moves on to a newer snapshot: offset 0 of m2 replaces the m1 transfer.
        let d2 = data(2500, 2);
        leader.write(m2, &d2).unwrap();
        let total2 = leader.file_len(m2).unwrap();
        follower.receive_chunk(m2, 0, total2, &leader.read_chunk(m2, 0, 1000).unwrap()).unwrap();
        assert_eq!(follower.receiving(), Some((m2, 1000)));
        let temps: Vec<String> =
            files(b.path()).into_iter().filter(|n| n.ends_with(".tmp")).collect();
        assert_eq!(temps, vec![format!("{}.recv.tmp", snapshot_file_name(m2))], "m1's is gone");
        // A late chunk of m1 does not disturb it.
        assert!(follower.receive_chunk(m1, 1000, total1, &first).is_err());
        transfer(&leader, &follower, m2, 1000);
        assert_eq!(follower.read(m2).unwrap(), d2);
        assert_eq!(files(b.path()), vec![snapshot_file_name(m2)]);
    }

    #[test]
    fn a_damaged_transfer_fails_and_leaves_no_snapshot() {
        let (a, b) = (TempDir::new().unwrap(), TempDir::new().unwrap());
        let (leader, follower) = (store(a.path()), store(b.path()));
        let m = meta(100, 3);
        leader.write(m, &data(4000, 3)).unwrap();
        let good = fs::read(leader.path(m)).unwrap();
        let total = good.len() as u64;
        // What, which byte to flip (if any), and the metadata the sender claims.
        let cases = [
            ("a flipped data bit", Some(2000), m),
            ("a flipped CRC bit", Some(33), m),
            ("the wrong snapshot's bytes", None, meta(101, 3)),
        ];
        for (what, flip, claimed) in cases {
            let mut bytes = good.clone();
            if let Some(at) = flip {
                bytes[at] ^= 4;
            }
            let mut offset = 0;
            for piece in bytes.chunks(1500) {
                offset = follower.receive_chunk(claimed, offset, total, piece).unwrap();
            }
            let err = follower.finish_receive(claimed).unwrap_err();
            assert!(err.message().contains("damaged"), "{what}: {err}");
            assert_eq!(expected_offset(&err), Some(0), "{what}: {err}");
            assert_eq!(files(b.path()), Vec::<String>::new(), "{what}: nothing left behind");
            assert_eq!(follower.latest().unwrap(), None);
            assert_eq!(follower.receiving(), None);
        }
    }
}
