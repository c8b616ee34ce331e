//! The state machine's snapshot encoding (its layout is in the docs of
//! [`KvStore::encode_snapshot`]), written to and read from a stream: a snapshot of a million keys
//! is ~140 MB, and neither taking nor loading one holds those bytes in memory whole.

use std::io::{self, BufRead, Read, Write};

use super::idempotency::{Record, Table};
use super::{KeyValue, KvStore, Pages, Rec};
use crate::error::{Error, Result};
use crate::raft::{Index, Term};

/// Version tag of the snapshot encoding.
const SNAPSHOT_FORMAT: &str = "raftlabkv-kv-3";

/// The encoding before the idempotency table (still read).
const SNAPSHOT_FORMAT_V2: &str = "raftlabkv-kv-2";

/// The encoding before revisions (still read).
const SNAPSHOT_FORMAT_V1: &str = "raftlabkv-kv-1";

/// Writes the keys of `walk` (in order) and `table` after a header line.
pub(super) fn encode<'a>(
    walk: impl Iterator<Item = (&'a str, Rec<'a>)>,
    keys: usize,
    (index, term, revision): (Index, Term, u64),
    table: &Table,
    cluster: &serde_json::Value,
    out: &mut dyn Write,
) -> io::Result<()> {
    let header = serde_json::json!({
        "format": SNAPSHOT_FORMAT,
        "index": index,
        "term": term,
        "revision": revision,
        "cluster": cluster,
        "keys": keys,
        "clock_ms": table.clock_ms(),
        "idempotency": table.len(),
    });
    out.write_all(header.to_string().as_bytes())?;
    out.write_all(b"\n")?;
    // One key at a time through a small buffer: `out` may be a file.
    let mut buf = Vec::with_capacity(1024);
    for (k, v) in walk {
        let (value, (c, m, n)) = (v.value(), v.revisions());
        buf.clear();
        buf.extend_from_slice(&(k.len() as u32).to_le_bytes());
        buf.extend_from_slice(k.as_bytes());
        buf.extend_from_slice(&(value.len() as u32).to_le_bytes());
        buf.extend_from_slice(value.as_bytes());
        for n in [c, m, n] {
            buf.extend_from_slice(&n.to_le_bytes());
        }
        out.write_all(&buf)?;
    }
    for record in table.records() {
        // A record of strings and numbers always serialises.
        let json = serde_json::to_vec(&record).unwrap_or_default();
        out.write_all(&(json.len() as u32).to_le_bytes())?;
        out.write_all(&json)?;
    }
    Ok(())
}

/// The `cluster` field of a snapshot's header (what [`KvStore::encode_snapshot`] was given), if
/// the snapshot has one.
pub fn snapshot_cluster(bytes: &[u8]) -> Option<serde_json::Value> {
    let newline = bytes.iter().position(|&b| b == b'\n')?;
    let header: serde_json::Value = serde_json::from_slice(&bytes[..newline]).ok()?;
    cluster_of(header)
}

fn cluster_of(mut header: serde_json::Value) -> Option<serde_json::Value> {
    Some(header.get_mut("cluster")?.take()).filter(|v| !v.is_null())
}

/// The snapshot read from `input`, and its header's `cluster`; errors name the byte offset.
pub(super) fn decode(input: &mut dyn BufRead) -> Result<(KvStore, Option<serde_json::Value>)> {
    let mut r = Input { input, at: 0, buf: Vec::new() };
    let mut line = Vec::new();
    r.input.read_until(b'\n', &mut line).map_err(|e| bad(0, &format!("cannot read: {e}")))?;
    if line.pop() != Some(b'\n') {
        return Err(bad(0, "no header"));
    }
    r.at = line.len() as u64 + 1;
    let header: serde_json::Value =
        serde_json::from_slice(&line).map_err(|e| bad(0, &format!("bad header: {e}")))?;
    let version = match header["format"].as_str() {
        Some(SNAPSHOT_FORMAT) => 3,
        Some(SNAPSHOT_FORMAT_V2) => 2,
        Some(SNAPSHOT_FORMAT_V1) => 1,
        _ => return Err(bad(0, &format!("unknown format {}", header["format"]))),
    };
    let field = |name: &str| header[name].as_u64().ok_or_else(|| bad(0, &format!("no {name}")));
    let (applied_index, applied_term, keys) = (field("index")?, field("term")?, field("keys")?);
    let revision = if version >= 2 { field("revision")? } else { 1 };
    let (clock_ms, records) =
        if version >= 3 { (field("clock_ms")?, field("idempotency")?) } else { (0, 0) };
    // Built in order, each page filled (inserting them one by one would leave pages half full),
    // and with no copy of the records on the side.
    let mut data = Pages::builder();
    let mut count = 0u64;
    let (mut key, mut value, mut previous) = (String::new(), String::new(), None::<String>);
    // Up to kv-2 the keys run to the end; from kv-3 the header counts them.
    while if version >= 3 { count < keys } else { !r.at_end()? } {
        let start = r.at;
        key.clear();
        key.push_str(r.text()?);
        // Written from a walk of the map, so strictly increasing; anything else is damage.
        if previous.as_deref().is_some_and(|last| last >= key.as_str()) {
            return Err(bad(start, &format!("key {key:?} out of order")));
        }
        let kv = if version >= 2 {
            // The revisions follow the value: keep it aside, then build the record once.
            value.clear();
            value.push_str(r.text()?);
            let start = r.at;
            let (create_revision, mod_revision, version) =
                (r.u64("revision")?, r.u64("revision")?, r.u64("revision")?);
            if create_revision == 0
                || create_revision > mod_revision
                || mod_revision > revision
                || version == 0
            {
                return Err(bad(start, "impossible revisions"));
            }
            KeyValue::new(&key, &value, create_revision, mod_revision, version)
        } else {
            KeyValue::new(&key, r.text()?, 1, 1, 1)
        };
        data.push(&kv);
        count += 1;
        let last = previous.get_or_insert_with(String::new);
        last.clear();
        last.push_str(&key);
    }
    if count != keys {
        return Err(bad(r.at, &format!("header says {keys} keys, found {count}")));
    }
    let mut table = Vec::new();
    for _ in 0..records {
        let start = r.at;
        let record: Record = serde_json::from_slice(r.bytes()?)
            .map_err(|e| bad(start, &format!("bad idempotency record: {e}")))?;
        table.push(record);
    }
    if !r.at_end()? {
        return Err(bad(r.at, "unexpected bytes after the last record"));
    }
    let data = data.finish();
    let len = data.len();
    let kv = KvStore {
        base: std::sync::Arc::new(data),
        overlay: None,
        revision,
        len,
        applied_index,
        applied_term,
        idempotency: Table::restore(clock_ms, table),
    };
    Ok((kv, cluster_of(header)))
}

fn bad(at: u64, what: &str) -> Error {
    Error::Storage(format!("snapshot data, byte {at}: {what}"))
}

/// The input with the offset of what is read next.
struct Input<'a> {
    input: &'a mut dyn BufRead,
    at: u64,
    buf: Vec<u8>,
}

impl Input<'_> {
    /// `n` bytes, or an error naming `what` was cut short. Read as they come (never sized up
    /// front by a length the file claims).
    fn exact(&mut self, n: u64, what: &str) -> Result<&[u8]> {
        self.buf.clear();
        let start = self.at;
        let got = (&mut self.input)
            .take(n)
            .read_to_end(&mut self.buf)
            .map_err(|e| bad(start, &format!("cannot read: {e}")))?;
        if (got as u64) < n {
            return Err(bad(start, &format!("truncated {what}")));
        }
        self.at += n;
        Ok(&self.buf)
    }

    fn u32(&mut self, what: &str) -> Result<u32> {
        let b = self.exact(4, what)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }

    fn u64(&mut self, what: &str) -> Result<u64> {
        let b = self.exact(8, what)?;
        Ok(u64::from_le_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]]))
    }

    /// `[u32 LE length][bytes]`.
    fn bytes(&mut self) -> Result<&[u8]> {
        let start = self.at;
        let len = self.u32("length")?;
        self.exact(u64::from(len), "string").map_err(|_| bad(start, "truncated string"))
    }

    /// `[u32 LE length][UTF-8]`.
    fn text(&mut self) -> Result<&str> {
        let start = self.at;
        std::str::from_utf8(self.bytes()?).map_err(|_| bad(start, "not UTF-8"))
    }

    fn at_end(&mut self) -> Result<bool> {
        let at = self.at;
        Ok(self.input.fill_buf().map_err(|e| bad(at, &format!("cannot read: {e}")))?.is_empty())
    }
}
