//! Snapshots sent between nodes in chunks.
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
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::PathBuf;

use super::format::{Check, SNAPSHOT_HEADER_LEN, check_file, snapshot_file_name};
use super::{SYNC_EVERY, SnapshotStore, io_error, open_error};
use crate::error::{Error, Result};
use crate::raft::SnapshotMeta;

/// The transfer being received: its file so far.
pub(super) struct Receiving {
    meta: SnapshotMeta,
    total: u64,
    received: u64,
    /// Bytes written since the last flush (see [`SYNC_EVERY`]).
    unsynced: u64,
    file: File,
    path: PathBuf,
}

/// The offset a refused chunk's error asks the sender to resume from (see the module docs).
pub fn expected_offset(error: &Error) -> Option<u64> {
    let Error::BadRequest(message) = error else { return None };
    let (_, rest) = message.split_once("expected offset ")?;
    let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
    digits.parse().ok()
}

fn refused(expected: u64, why: String) -> Error {
    Error::BadRequest(format!("snapshot chunk refused: expected offset {expected} ({why})"))
}

fn describe(meta: SnapshotMeta) -> String {
    format!("snapshot (index {}, term {})", meta.index, meta.term)
}

impl SnapshotStore {
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
            match check_file(&r.path, meta)? {
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
