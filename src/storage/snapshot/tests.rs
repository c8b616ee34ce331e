//! Tests of the snapshot store: names, atomic writes, damage detection, chunked transfer.

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
    let mut names: Vec<String> =
        fs::read_dir(dir).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
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
fn a_snapshot_written_in_pieces_is_the_same_file_and_a_failed_one_leaves_nothing() {
    let dir = TempDir::new().unwrap();
    // fsync on: the pieces cross the 4 MiB flush point and the 256 KiB buffer both ways
    // (small writes that fill it, and writes bigger than it).
    let s = SnapshotStore::open(dir.path()).unwrap();
    let whole = data(9 << 20, 7);
    let pieces = [1usize, 100, 300 << 10, 3, 5 << 20, 17];
    s.write_with(meta(10, 1), |w| {
        let mut rest = &whole[..];
        for n in pieces.iter().cycle() {
            let (a, b) = rest.split_at((*n).min(rest.len()));
            w.write_all(a)?;
            rest = b;
            if rest.is_empty() {
                return Ok(());
            }
        }
        Ok(())
    })
    .unwrap();
    let streamed = fs::read(s.path(meta(10, 1))).unwrap();
    s.write(meta(10, 1), &whole).unwrap();
    assert_eq!(streamed, fs::read(s.path(meta(10, 1))).unwrap(), "same bytes, header included");
    assert_eq!(s.read(meta(10, 1)).unwrap(), whole);
    // A writer that fails half-way: the error is the write's, and no file (not even a
    // temporary one) is left; the older snapshot stays the latest.
    let failed = s.write_with(meta(20, 1), |w| {
        w.write_all(&whole[..1 << 20])?;
        Err(std::io::Error::other("the state machine could not be read"))
    });
    let message = storage_message(failed);
    assert!(message.contains("could not be read"), "{message}");
    assert_eq!(files(dir.path()), vec![snapshot_file_name(meta(10, 1))]);
    assert_eq!(s.latest().unwrap(), Some(meta(10, 1)));
}

#[test]
fn a_snapshot_read_as_a_stream_is_checked_first() {
    let dir = TempDir::new().unwrap();
    let s = store(dir.path());
    let d = data(300_000, 3);
    s.write(meta(10, 1), &d).unwrap();
    let mut got = Vec::new();
    std::io::Read::read_to_end(&mut s.read_stream(meta(10, 1)).unwrap(), &mut got).unwrap();
    assert_eq!(got, d);
    // One flipped bit in the data: refused before a byte of it is handed out.
    let path = s.path(meta(10, 1));
    let mut file = fs::read(&path).unwrap();
    file[SNAPSHOT_HEADER_LEN as usize + 1234] ^= 4;
    fs::write(&path, &file).unwrap();
    let message = storage_message(s.read_stream(meta(10, 1)));
    assert!(message.contains("corrupt at byte offset") && message.contains("CRC"), "{message}");
    assert!(matches!(s.read_stream(meta(20, 1)), Err(Error::NotFound(_))));
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
            assert!(msg.contains(&format!("byte offset {expected_offset}:")), "byte {i}: {msg}");
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
    follower.receive_chunk(m1, 1000, total1, &leader.read_chunk(m1, 1000, 1000).unwrap()).unwrap();
    // Offset 0 again: a restart of the same transfer.
    assert_eq!(follower.receive_chunk(m1, 0, total1, &first).unwrap(), 1000);
    // The leader moves on to a newer snapshot: offset 0 of m2 replaces the m1 transfer.
    let d2 = data(2500, 2);
    leader.write(m2, &d2).unwrap();
    let total2 = leader.file_len(m2).unwrap();
    follower.receive_chunk(m2, 0, total2, &leader.read_chunk(m2, 0, 1000).unwrap()).unwrap();
    assert_eq!(follower.receiving(), Some((m2, 1000)));
    let temps: Vec<String> = files(b.path()).into_iter().filter(|n| n.ends_with(".tmp")).collect();
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
