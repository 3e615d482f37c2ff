//! Sparse offset and time indexes of one segment, and their checkpoint files.
//!
//! In memory a segment keeps one entry per `index.interval.bytes` of frames. On disk they are
//! written as two files beside the segment, Kafka style: `<base>.index` (offset, Raft index,
//! position) and `<base>.timeindex` (max timestamp before the position, position). Both are
//! derivable from the segment, so they are written without fsync and carry a CRC32C; a file
//! that is missing, torn or garbled is rebuilt by scanning, never trusted.
//!
//! The `.index` file also records the segment summary it covers (the checkpoint), so opening
//! a sealed segment reads only its index, and recovery of the active one scans only the bytes
//! written after its last checkpoint.

use crate::types::{Offset, RaftIndex};

const INDEX_MAGIC: u32 = 0x58494c53; // "SLIX"
const TIME_MAGIC: u32 = 0x54494c53; // "SLIT"
const VERSION: u32 = 1;
const OFFSET_ENTRY_BYTES: usize = 24;
const TIME_ENTRY_BYTES: usize = 16;
/// Bytes one in-memory entry takes in the two checkpoint files.
pub const ENTRY_BYTES: usize = OFFSET_ENTRY_BYTES + TIME_ENTRY_BYTES;
const SUMMARY_BYTES: usize = 48;
const HEADER_BYTES: usize = 12;

/// A point in a segment where a frame starts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IndexEntry {
    /// Kafka offset of the first data batch at or after `position`.
    pub offset: Offset,
    pub raft_index: RaftIndex,
    /// Byte position of the frame in the segment.
    pub position: u32,
    /// Largest batch max-timestamp strictly before `position` (i64::MIN if none).
    pub max_ts_before: i64,
}

/// What a segment holds, as of `size` bytes; stored in the `.index` checkpoint.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SegmentSummary {
    /// Bytes of valid frames.
    pub size: u64,
    pub base_raft_index: RaftIndex,
    pub next_offset: Offset,
    pub next_raft_index: RaftIndex,
    pub max_timestamp: i64,
    pub last_term: u64,
}

/// Last entry at or before `key`, by a monotone key of the entries.
pub fn floor<K: Ord>(
    entries: &[IndexEntry],
    key: K,
    f: impl Fn(&IndexEntry) -> K,
) -> Option<IndexEntry> {
    let i = entries.partition_point(|e| f(e) <= key);
    i.checked_sub(1).map(|i| entries[i])
}

fn seal(mut v: Vec<u8>) -> Vec<u8> {
    let crc = crc32c::crc32c(&v);
    v.extend_from_slice(&crc.to_le_bytes());
    v
}

/// Encodes both files: (`.index`, `.timeindex`).
pub fn encode(summary: &SegmentSummary, entries: &[IndexEntry]) -> (Vec<u8>, Vec<u8>) {
    let mut idx =
        Vec::with_capacity(HEADER_BYTES + SUMMARY_BYTES + entries.len() * OFFSET_ENTRY_BYTES + 4);
    idx.extend_from_slice(&INDEX_MAGIC.to_le_bytes());
    idx.extend_from_slice(&VERSION.to_le_bytes());
    idx.extend_from_slice(&(entries.len() as u32).to_le_bytes());
    for v in [
        summary.size,
        summary.base_raft_index.0,
        summary.next_offset.0,
        summary.next_raft_index.0,
        summary.max_timestamp as u64,
        summary.last_term,
    ] {
        idx.extend_from_slice(&v.to_le_bytes());
    }
    let mut time = Vec::with_capacity(HEADER_BYTES + entries.len() * TIME_ENTRY_BYTES + 4);
    time.extend_from_slice(&TIME_MAGIC.to_le_bytes());
    time.extend_from_slice(&VERSION.to_le_bytes());
    time.extend_from_slice(&(entries.len() as u32).to_le_bytes());
    for e in entries {
        idx.extend_from_slice(&e.offset.0.to_le_bytes());
        idx.extend_from_slice(&e.raft_index.0.to_le_bytes());
        idx.extend_from_slice(&(e.position as u64).to_le_bytes());
        time.extend_from_slice(&e.max_ts_before.to_le_bytes());
        time.extend_from_slice(&(e.position as u64).to_le_bytes());
    }
    (seal(idx), seal(time))
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().expect("8 bytes"))
}
fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(b[at..at + 4].try_into().expect("4 bytes"))
}

/// Checks magic, version, declared count against the bytes, and the CRC; returns the body.
fn open_sealed(b: &[u8], magic: u32, fixed: usize, entry: usize) -> Option<(usize, &[u8])> {
    if b.len() < HEADER_BYTES + fixed + 4 || u32_at(b, 0) != magic || u32_at(b, 4) != VERSION {
        return None;
    }
    let count = u32_at(b, 8) as usize;
    let len = HEADER_BYTES + fixed + count.checked_mul(entry)?;
    if b.len() < len + 4 || crc32c::crc32c(&b[..len]) != u32_at(b, len) {
        return None;
    }
    Some((count, &b[HEADER_BYTES..len]))
}

/// Decodes both files; `None` if either is not a whole, matching pair.
pub fn decode(idx: &[u8], time: &[u8]) -> Option<(SegmentSummary, Vec<IndexEntry>)> {
    let (count, body) = open_sealed(idx, INDEX_MAGIC, SUMMARY_BYTES, OFFSET_ENTRY_BYTES)?;
    let (tcount, tbody) = open_sealed(time, TIME_MAGIC, 0, TIME_ENTRY_BYTES)?;
    if tcount != count {
        return None;
    }
    let summary = SegmentSummary {
        size: u64_at(body, 0),
        base_raft_index: RaftIndex(u64_at(body, 8)),
        next_offset: Offset(u64_at(body, 16)),
        next_raft_index: RaftIndex(u64_at(body, 24)),
        max_timestamp: u64_at(body, 32) as i64,
        last_term: u64_at(body, 40),
    };
    let mut entries = Vec::with_capacity(count);
    for i in 0..count {
        let e = &body[SUMMARY_BYTES + i * OFFSET_ENTRY_BYTES..];
        let t = &tbody[i * TIME_ENTRY_BYTES..];
        let position = u64_at(e, 16);
        if position != u64_at(t, 8) || position > summary.size {
            return None;
        }
        entries.push(IndexEntry {
            offset: Offset(u64_at(e, 0)),
            raft_index: RaftIndex(u64_at(e, 8)),
            position: position as u32,
            max_ts_before: u64_at(t, 0) as i64,
        });
    }
    let monotone = entries.windows(2).all(|w| {
        w[0].position < w[1].position
            && w[0].offset <= w[1].offset
            && w[0].raft_index < w[1].raft_index
    });
    monotone.then_some((summary, entries))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> (SegmentSummary, Vec<IndexEntry>) {
        let s = SegmentSummary {
            size: 9000,
            base_raft_index: RaftIndex(10),
            next_offset: Offset(500),
            next_raft_index: RaftIndex(40),
            max_timestamp: 77,
            last_term: 2,
        };
        let e = vec![
            IndexEntry {
                offset: Offset(100),
                raft_index: RaftIndex(10),
                position: 0,
                max_ts_before: i64::MIN,
            },
            IndexEntry {
                offset: Offset(300),
                raft_index: RaftIndex(20),
                position: 4200,
                max_ts_before: 50,
            },
        ];
        (s, e)
    }

    #[test]
    fn round_trip_and_floor() {
        let (s, e) = sample();
        let (a, b) = encode(&s, &e);
        let (s2, e2) = decode(&a, &b).unwrap();
        assert_eq!((s, e.clone()), (s2, e2));
        assert_eq!(floor(&e, Offset(299), |e| e.offset).unwrap().position, 0);
        assert_eq!(floor(&e, Offset(300), |e| e.offset).unwrap().position, 4200);
        assert!(floor(&e, Offset(99), |e| e.offset).is_none());
    }

    #[test]
    fn garbled_or_torn_is_refused() {
        let (s, e) = sample();
        let (a, b) = encode(&s, &e);
        for cut in [0, 10, a.len() - 1] {
            assert!(decode(&a[..cut], &b).is_none());
        }
        let mut g = a.clone();
        g[30] ^= 0xff;
        assert!(decode(&g, &b).is_none());
        let (_, other_time) = encode(&s, &e[..1]);
        assert!(decode(&a, &other_time).is_none());
    }
}
