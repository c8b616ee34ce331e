//! [`SnapshotStore`]: state-machine snapshots as files in a directory, written atomically, verified
//! when read, and sent between nodes in chunks.
//!
//! The snapshot's *contents* are opaque here (the key-value state machine serializes itself); this
//! module only makes sure that a snapshot file is either complete and intact or absent.
//!
//! | file | job |
//! |---|---|
//! | `mod.rs` | [`SnapshotStore`]: the directory, writing atomically, reading back verified |
//! | `format.rs` | the file names and the file format (header, CRC; its docs draw it), [`check_file`] |
//! | `transfer.rs` | the chunked transfer between nodes, sending and receiving side (its docs say the rules) |
//! | `tests.rs` | the tests |
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

use std::fs::{self, File, OpenOptions};
use std::io::{BufReader, ErrorKind, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use parking_lot::Mutex;

use crate::error::{Error, Result};
use crate::raft::SnapshotMeta;

mod format;
#[cfg(test)]
mod tests;
mod transfer;

use format::encode_header;
pub use format::{
    Check, SNAPSHOT_HEADER_LEN, SNAPSHOT_MAGIC, check_file, list_snapshot_files,
    parse_snapshot_file_name, snapshot_file_name,
};
use transfer::Receiving;
pub use transfer::expected_offset;

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
        match check_file(&path, meta)? {
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
        self.write_with(meta, |w| w.write_all(data))
    }

    /// [`SnapshotStore::write`] for data that `fill` writes in pieces, so that a large state is
    /// never held in memory whole: the bytes go to the temporary file as they come (hashed and
    /// counted on the way), and the header, which names their length and CRC, is written last
    /// at the start of the file, before the fsync. An error from `fill` is the write's error.
    pub fn write_with(
        &self,
        meta: SnapshotMeta,
        fill: impl FnOnce(&mut dyn Write) -> std::io::Result<()>,
    ) -> Result<()> {
        let n = self.inner.tmp_counter.fetch_add(1, Ordering::Relaxed);
        let tmp = self.inner.dir.join(format!("{}.{n}.tmp", snapshot_file_name(meta)));
        let result = (|| {
            let mut file = OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(&tmp)
                .map_err(|e| io_error("cannot create", &tmp, e))?;
            // Room for the header, filled in once the data's length and CRC are known.
            file.write_all(&[0; SNAPSHOT_HEADER_LEN as usize])
                .map_err(|e| io_error("cannot write", &tmp, e))?;
            let mut data = DataWriter::new(&mut file, self.inner.fsync);
            fill(&mut data)
                .and_then(|()| data.flush())
                .map_err(|e| io_error("cannot write", &tmp, e))?;
            let header = encode_header(meta, data.len, data.crc.finalize());
            file.seek(SeekFrom::Start(0))
                .and_then(|_| file.write_all(&header))
                .map_err(|e| io_error("cannot write", &tmp, e))?;
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

    /// The data of the snapshot through `meta` to read as a stream, after checking the whole
    /// file (its CRC) through the same open file, so what is read is what was checked. Errors
    /// as [`SnapshotStore::read`].
    pub fn read_stream(&self, meta: SnapshotMeta) -> Result<BufReader<File>> {
        let path = self.path(meta);
        let mut file = File::open(&path).map_err(|e| open_error(&path, e))?;
        match format::check_open_file(&mut file, &path, meta)? {
            Check::Valid { .. } => {}
            Check::Damaged { offset, reason } => {
                return Err(self.corruption(&path, offset, &reason));
            }
        }
        file.seek(SeekFrom::Start(SNAPSHOT_HEADER_LEN))
            .map_err(|e| io_error("cannot seek in", &path, e))?;
        Ok(BufReader::with_capacity(1 << 20, file))
    }

    /// The data of the snapshot through `meta`, after checking it. [`Error::NotFound`] if there is
    /// no such file (a newer snapshot replaced it), [`Error::Storage`] if it is damaged.
    pub fn read(&self, meta: SnapshotMeta) -> Result<Vec<u8>> {
        let mut data = Vec::new();
        self.read_stream(meta)?
            .read_to_end(&mut data)
            .map_err(|e| io_error("cannot read", &self.path(meta), e))?;
        Ok(data)
    }
}

/// The data part of a snapshot file being written: buffers, hashes and counts what passes
/// through, and flushes the file to disk every [`SYNC_EVERY`] bytes. One fsync of a whole large
/// file makes the filesystem's journal commit wait for all of it, and every WAL fsync of the node
/// (its write path) waits behind that commit; bounding the dirty data bounds that wait (see
/// "Write pauses" in the docs of `server::snapshot`).
struct DataWriter<'a> {
    file: &'a mut File,
    fsync: bool,
    buf: Vec<u8>,
    crc: crc32fast::Hasher,
    len: u64,
    unsynced: usize,
}

impl<'a> DataWriter<'a> {
    /// Bytes gathered before each write to the file.
    const BUF: usize = 256 << 10;

    fn new(file: &'a mut File, fsync: bool) -> Self {
        let buf = Vec::with_capacity(Self::BUF);
        DataWriter { file, fsync, buf, crc: crc32fast::Hasher::new(), len: 0, unsynced: 0 }
    }
}

impl Write for DataWriter<'_> {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        if self.buf.len() + bytes.len() > Self::BUF {
            self.flush()?;
        }
        if bytes.len() >= Self::BUF {
            self.crc.update(bytes);
            self.file.write_all(bytes)?;
            self.len += bytes.len() as u64;
            self.unsynced += bytes.len();
        } else {
            self.buf.extend_from_slice(bytes);
        }
        if self.fsync && self.unsynced >= SYNC_EVERY {
            self.file.sync_data()?;
            self.unsynced = 0;
        }
        Ok(bytes.len())
    }

    /// Writes the buffer to the file (not to disk: the caller fsyncs at the end).
    fn flush(&mut self) -> std::io::Result<()> {
        if !self.buf.is_empty() {
            self.crc.update(&self.buf);
            self.file.write_all(&self.buf)?;
            self.len += self.buf.len() as u64;
            self.unsynced += self.buf.len();
            self.buf.clear();
        }
        Ok(())
    }
}
