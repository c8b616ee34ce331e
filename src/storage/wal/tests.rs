//! Tests of the WAL format: round trips of every record kind, framing, scanning damage.
use super::*;

fn frame(seq: u64, record: &RecordRef<'_>) -> Vec<u8> {
    let mut buf = Vec::new();
    encode_frame(&mut buf, seq, record).unwrap();
    buf
}

#[test]
fn every_record_kind_round_trips() {
    let hs = HardState { current_term: 7, voted_for: Some("node3".into()) };
    let entries = vec![
        Entry { index: 5, term: 2, command: b"set x".to_vec() },
        Entry { index: 6, term: 3, command: vec![] },
    ];
    let meta = SnapshotMeta { index: 12, term: 4 };
    let checkpoint = Checkpoint {
        hard_state: hs.clone(),
        snapshot: Some(meta),
        compacted: 10,
        compacted_term: 3,
        last_index: 20,
        membership: None,
    };
    let m = Membership::of_voters("c", [("n1".into(), "a:1".into())].into());
    let with_membership = Checkpoint { membership: Some((9, m.clone())), ..checkpoint.clone() };
    let empty = Checkpoint::default();
    let cases = [
        (RecordRef::HardState(&hs), Record::HardState(hs.clone())),
        (RecordRef::HardState(&HardState::default()), Record::HardState(HardState::default())),
        (
            RecordRef::Append { first_index: 5, entries: &entries },
            Record::Append { first_index: 5, entries: entries.clone() },
        ),
        (
            RecordRef::Append { first_index: 9, entries: &[] },
            Record::Append { first_index: 9, entries: vec![] },
        ),
        (RecordRef::Truncate(4), Record::Truncate(4)),
        (RecordRef::Snapshot(meta), Record::Snapshot(meta)),
        (RecordRef::Compact { index: 9, term: 3 }, Record::Compact { index: 9, term: 3 }),
        (
            RecordRef::InstallSnapshot { meta, kept: true },
            Record::InstallSnapshot { meta, kept: true },
        ),
        (
            RecordRef::InstallSnapshot { meta, kept: false },
            Record::InstallSnapshot { meta, kept: false },
        ),
        (RecordRef::Checkpoint(&checkpoint), Record::Checkpoint(checkpoint.clone())),
        (RecordRef::Checkpoint(&empty), Record::Checkpoint(empty.clone())),
        (RecordRef::Checkpoint(&with_membership), Record::Checkpoint(with_membership.clone())),
        (
            RecordRef::Membership { index: 9, json: &membership_json(&m) },
            Record::Membership(9, m.clone()),
        ),
    ];
    for (seq, (write, read)) in cases.iter().enumerate() {
        let buf = frame(seq as u64 + 1, write);
        assert_eq!(buf.len(), FRAME_HEADER_LEN + write.payload_len());
        let d = decode_frame(&buf, 0).unwrap();
        assert_eq!((d.seq, &d.record, d.frame_len), (seq as u64 + 1, read, buf.len()));
    }
}

#[test]
fn every_damaged_frame_is_refused() {
    let entries = vec![Entry { index: 1, term: 1, command: b"hello".to_vec() }];
    let buf = frame(1, &RecordRef::Append { first_index: 1, entries: &entries });
    for len in 0..buf.len() {
        assert!(decode_frame(&buf[..len], 0).is_err(), "prefix of {len} bytes accepted");
    }
    for i in 0..buf.len() {
        for bit in 0..8 {
            let mut bad = buf.clone();
            bad[i] ^= 1 << bit;
            assert!(decode_frame(&bad, 0).is_err(), "flip of bit {bit} of byte {i} accepted");
        }
    }
}

#[test]
fn segment_names_round_trip_and_sort() {
    assert_eq!(segment_name(42), "wal-00000000000000000042.log");
    assert_eq!(parse_segment_name(&segment_name(u64::MAX)), Some(u64::MAX));
    assert_eq!(parse_segment_name("wal-42.log"), None);
    assert_eq!(parse_segment_name("wal-0000000000000000004x.log"), None);
    assert!(segment_name(9) < segment_name(10));
}

#[test]
fn scan_tells_a_torn_tail_from_corruption() {
    let mut seg = SEGMENT_MAGIC.to_vec();
    let mut offsets = Vec::new();
    for seq in 1..=3 {
        offsets.push(seg.len());
        seg.extend(frame(seq, &RecordRef::Truncate(seq)));
    }
    let all = scan_segment(&seg, 1, |_| Ok(()));
    assert_eq!((all.end, all.records, all.valid_len), (ScanEnd::Clean, 3, seg.len()));

    let torn = scan_segment(&seg[..seg.len() - 1], 1, |_| Ok(()));
    assert!(matches!(torn.end, ScanEnd::Torn { offset, .. } if offset == offsets[2]));
    assert_eq!(torn.records, 2);

    let mut flipped = seg.clone();
    flipped[offsets[1] + 12] ^= 0x40;
    let corrupt = scan_segment(&flipped, 1, |_| Ok(()));
    assert!(matches!(corrupt.end, ScanEnd::Corrupt { offset, .. } if offset == offsets[1]));

    let wrong_start = scan_segment(&seg, 2, |_| Ok(()));
    assert!(matches!(wrong_start.end, ScanEnd::Corrupt { offset: 8, .. }));

    let refused = scan_segment(&seg, 1, |s| if s.seq == 2 { Err("no".into()) } else { Ok(()) });
    assert_eq!(refused.end, ScanEnd::Corrupt { offset: offsets[1], reason: "no".into() });
}
