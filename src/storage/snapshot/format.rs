//! The snapshot file: its name and its format, and the check that a file is complete and
//! intact.
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

use std::fs::{self, File};
use std::io::{ErrorKind, Read};
use std::path::{Path, PathBuf};

use super::{io_error, open_error};
use crate::error::{Error, Result};
use crate::raft::SnapshotMeta;

/// The first bytes of every snapshot file: `RLKVSNP` and the format version (1).
pub const SNAPSHOT_MAGIC: [u8; 8] = *b"RLKVSNP\x01";
/// Length of the header that precedes the data.
pub const SNAPSHOT_HEADER_LEN: u64 = 36;

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
/// file in 64 KiB pieces.
pub fn check_file(path: &Path, meta: SnapshotMeta) -> Result<Check> {
    let mut file = File::open(path).map_err(|e| open_error(path, e))?;
    check_open_file(&mut file, path, meta)
}

/// [`check_file`] of a file already open (at its start; read to its end), named `path`.
pub(super) fn check_open_file(file: &mut File, path: &Path, meta: SnapshotMeta) -> Result<Check> {
    let file_len = file.metadata().map_err(|e| io_error("cannot stat", path, e))?.len();
    check_stream(file, file_len, meta).map_err(|e| io_error("cannot read", path, e))
}

fn check_stream(
    reader: &mut dyn Read,
    file_len: u64,
    meta: SnapshotMeta,
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
    let mut buf = vec![0u8; 64 << 10];
    let mut left = data_len;
    while left > 0 {
        let n = buf.len().min(left as usize);
        reader.read_exact(&mut buf[..n])?;
        hasher.update(&buf[..n]);
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

/// The header of a snapshot file whose data is `data_len` bytes with CRC-32 `crc`.
pub(super) fn encode_header(meta: SnapshotMeta, data_len: u64, crc: u32) -> Vec<u8> {
    let mut header = Vec::with_capacity(SNAPSHOT_HEADER_LEN as usize);
    header.extend_from_slice(&SNAPSHOT_MAGIC);
    header.extend_from_slice(&meta.index.to_le_bytes());
    header.extend_from_slice(&meta.term.to_le_bytes());
    header.extend_from_slice(&data_len.to_le_bytes());
    header.extend_from_slice(&crc.to_le_bytes());
    header
}
