//! The compact encoding of an AppendEntries request, the one peer message that carries bulk
//! data. Everything else a peer sends, and every answer, stays JSON (a person can read it with
//! `curl`); an AppendEntries as JSON writes each entry's command (itself a small JSON document)
//! as base64 inside JSON, which costs the leader an encoding and every follower a parse and a
//! decode of a third more bytes than the entries hold. Here they travel as they are:
//!
//! ```text
//! "RLAE" version:u8 (1)
//! from:  u16 length, UTF-8 bytes        to: u16 length, UTF-8 bytes
//! term:u64  prev_log_index:u64  prev_log_term:u64  leader_commit:u64  seq:u64
//! entries:u32, then each: index:u64  term:u64  command length:u32  command bytes
//! ```
//!
//! All integers little-endian. Sent with `Content-Type: application/x-raftlabkv-entries`
//! ([`CONTENT_TYPE`]) to the same `/raft/appendEntries` and signed like any peer request; the
//! receiver picks the decoder by that header. A body that does not decode is refused with the
//! byte offset where it went wrong, before anything reaches the core, and a decoded message
//! still goes through [`Envelope::validate`] like a JSON one.

use crate::raft::{AppendEntries, Entry, Envelope, Message};

/// The content type of the encoding.
pub const CONTENT_TYPE: &str = "application/x-raftlabkv-entries";

const MAGIC: &[u8; 5] = b"RLAE\x01";

/// The encoding of `envelope` if it is an AppendEntries (the only message encoded so).
pub fn encode(envelope: &Envelope) -> Option<Vec<u8>> {
    let Message::AppendEntries(ae) = &envelope.message else { return None };
    let size: usize = ae.entries.iter().map(|e| 20 + e.command.len()).sum();
    let mut out = Vec::with_capacity(64 + envelope.from.len() + envelope.to.len() + size);
    out.extend_from_slice(MAGIC);
    for id in [&envelope.from, &envelope.to] {
        // Member ids are at most 256 bytes (`/cluster/*` refuses longer ones); an id too long
        // for the u16 length is not encoded this way and goes as JSON.
        let len = u16::try_from(id.len()).ok()?;
        out.extend_from_slice(&len.to_le_bytes());
        out.extend_from_slice(id.as_bytes());
    }
    for n in [envelope.term, ae.prev_log_index, ae.prev_log_term, ae.leader_commit, ae.seq] {
        out.extend_from_slice(&n.to_le_bytes());
    }
    out.extend_from_slice(&u32::try_from(ae.entries.len()).ok()?.to_le_bytes());
    for e in &ae.entries {
        out.extend_from_slice(&e.index.to_le_bytes());
        out.extend_from_slice(&e.term.to_le_bytes());
        out.extend_from_slice(&u32::try_from(e.command.len()).ok()?.to_le_bytes());
        out.extend_from_slice(&e.command);
    }
    Some(out)
}

/// Decodes [`encode`]'s output; the error names the byte offset and what was wrong there.
pub fn decode(bytes: &[u8]) -> Result<Envelope, String> {
    let mut r = Reader { bytes, at: 0 };
    if r.take(MAGIC.len())? != MAGIC {
        return Err("byte 0: not a compact AppendEntries (bad magic or version)".into());
    }
    let from = r.id()?;
    let to = r.id()?;
    let [term, prev_log_index, prev_log_term, leader_commit, seq] =
        [r.u64()?, r.u64()?, r.u64()?, r.u64()?, r.u64()?];
    let count = r.u32()? as usize;
    // Each entry takes at least 20 bytes: a count the body cannot hold is refused before any
    // allocation is sized by it.
    if count > r.left() / 20 {
        return Err(format!("byte {}: {count} entries do not fit in the body", r.at - 4));
    }
    let mut entries = Vec::with_capacity(count);
    for _ in 0..count {
        let (index, term) = (r.u64()?, r.u64()?);
        let len = r.u32()? as usize;
        let command = r.take(len)?.to_vec();
        entries.push(Entry { index, term, command });
    }
    if r.left() != 0 {
        return Err(format!("byte {}: {} bytes after the last entry", r.at, r.left()));
    }
    let ae = AppendEntries { prev_log_index, prev_log_term, entries, leader_commit, seq };
    Ok(Envelope { from, to, term, message: Message::AppendEntries(ae) })
}

/// A cursor over the body whose every read is bounds-checked.
struct Reader<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    fn left(&self) -> usize {
        self.bytes.len() - self.at
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], String> {
        let end = self.at.checked_add(n).filter(|&end| end <= self.bytes.len());
        let Some(end) = end else {
            return Err(format!(
                "byte {}: cut off ({n} bytes wanted, {} left)",
                self.at,
                self.left()
            ));
        };
        let out = &self.bytes[self.at..end];
        self.at = end;
        Ok(out)
    }

    fn u64(&mut self) -> Result<u64, String> {
        let b = self.take(8)?;
        Ok(u64::from_le_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]]))
    }

    fn u32(&mut self) -> Result<u32, String> {
        let b = self.take(4)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }

    fn id(&mut self) -> Result<String, String> {
        let b = self.take(2)?;
        let len = u16::from_le_bytes([b[0], b[1]]) as usize;
        let start = self.at;
        let text = self.take(len)?;
        String::from_utf8(text.to_vec())
            .map_err(|_| format!("byte {start}: a node id not in UTF-8"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::raft::{AppendEntriesResponse, RequestVote};

    fn append(entries: Vec<Entry>) -> Envelope {
        Envelope {
            from: "node1".into(),
            to: "nöde-2".into(),
            term: 7,
            message: Message::AppendEntries(AppendEntries {
                prev_log_index: 41,
                prev_log_term: 6,
                entries,
                leader_commit: 40,
                seq: 99,
            }),
        }
    }

    fn entries() -> Vec<Entry> {
        vec![
            Entry { index: 42, term: 7, command: Vec::new() },
            Entry {
                index: 43,
                term: 7,
                command: br#"{"op":"put","key":"k","value":"v"}"#.to_vec(),
            },
            Entry { index: 44, term: 7, command: vec![0, 255, 10, 13, b'"'] },
        ]
    }

    #[test]
    fn an_append_entries_round_trips_and_nothing_else_is_encoded() {
        for e in [append(Vec::new()), append(entries())] {
            let bytes = encode(&e).expect("an AppendEntries is encoded");
            assert_eq!(decode(&bytes), Ok(e.clone()));
            // Smaller than the JSON of the same message once it carries commands.
            let json = serde_json::to_vec(&e).expect("json");
            assert!(bytes.len() < json.len(), "{} vs {} bytes", bytes.len(), json.len());
        }
        let vote = Envelope {
            message: Message::RequestVote(RequestVote {
                last_log_index: 1,
                last_log_term: 1,
                pre_vote: false,
                transfer: false,
            }),
            ..append(Vec::new())
        };
        let answer = Envelope {
            message: Message::AppendEntriesResponse(AppendEntriesResponse {
                success: true,
                match_index: 3,
                conflict_term: None,
                conflict_index: 0,
                seq: 1,
            }),
            ..append(Vec::new())
        };
        assert_eq!((encode(&vote), encode(&answer)), (None, None));
    }

    #[test]
    fn every_truncation_and_every_extra_byte_is_refused_with_its_offset() {
        let bytes = encode(&append(entries())).expect("encoded");
        for cut in 0..bytes.len() {
            let e = decode(&bytes[..cut]).expect_err("a cut body");
            assert!(e.starts_with("byte "), "cut at {cut}: {e}");
        }
        let mut longer = bytes.clone();
        longer.push(0);
        let e = decode(&longer).expect_err("a trailing byte");
        assert!(e.contains(&format!("byte {}", bytes.len())), "{e}");
    }

    #[test]
    fn forged_counts_lengths_and_ids_are_refused_without_allocating_for_them() {
        let bytes = encode(&append(entries())).expect("encoded");
        // The entry count is right after the header: 5 magic, 2+5 from, 2+7 to ("nöde-2" is
        // 7 bytes), 5 numbers.
        let count_at = 5 + 2 + 5 + 2 + 7 + 40;
        assert_eq!(&bytes[count_at..count_at + 4], &3u32.to_le_bytes());
        let mut huge = bytes.clone();
        huge[count_at..count_at + 4].copy_from_slice(&u32::MAX.to_le_bytes());
        let e = decode(&huge).expect_err("a count the body cannot hold");
        assert!(e.contains("do not fit"), "{e}");
        // A command length past the end.
        let len_at = count_at + 4 + 16;
        let mut long = bytes.clone();
        long[len_at..len_at + 4].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(decode(&long).expect_err("a command past the end").contains("cut off"));
        // An id that is not UTF-8, and a wrong magic.
        let mut bad_id = bytes.clone();
        bad_id[7] = 0xff;
        assert!(decode(&bad_id).expect_err("bad id").contains("UTF-8"));
        let mut magic = bytes;
        magic[4] = 2;
        assert!(decode(&magic).expect_err("version 2").contains("magic"));
        // Random garbage never panics.
        let mut seed = 0x2545_f491_4f6c_dd1du64;
        for len in 0..2_000 {
            let garbage: Vec<u8> = (0..len % 300)
                .map(|_| {
                    seed ^= seed << 13;
                    seed ^= seed >> 7;
                    seed ^= seed << 17;
                    seed as u8
                })
                .collect();
            let mut framed = MAGIC.to_vec();
            framed.extend_from_slice(&garbage);
            let _ = decode(&garbage);
            let _ = decode(&framed);
        }
    }
}
