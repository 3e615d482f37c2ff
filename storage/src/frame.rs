//! The on-disk frame around every log entry.
//!
//! A segment file is a run of frames: a 32-byte header then the payload, back to back, with
//! zero padding after the last one up to the direct-I/O block. The header carries what Kafka's
//! batch header cannot: the dense Raft index, the term, the entry kind, and a CRC32C over the
//! header and the whole payload, so recovery can tell a torn or stale tail from a real entry.
//!
//! Layout (little endian): magic u32, payload_len u32, raft_index u64, term u64, kind u8,
//! 3 reserved zero bytes, crc u32 (over bytes 0..28 and the payload).

use crate::types::{EntryKind, RaftIndex, Term};

pub const FRAME_HEADER_BYTES: usize = 32;
/// "SLCF": lets a scan stop at zero padding or foreign bytes without trusting a length.
const FRAME_MAGIC: u32 = 0x46434c53;
const CRC_AT: usize = 28;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FrameHeader {
    pub payload_len: u32,
    pub raft_index: RaftIndex,
    pub term: Term,
    pub kind: EntryKind,
}

impl FrameHeader {
    pub fn frame_len(&self) -> usize {
        FRAME_HEADER_BYTES + self.payload_len as usize
    }
}

/// Writes header + payload into `out`, letting `patch` edit the payload in place before the
/// CRC is taken (the log sets the batch's base offset and epoch there), so the payload is
/// copied once.
pub fn encode(
    out: &mut Vec<u8>,
    raft_index: RaftIndex,
    term: Term,
    kind: EntryKind,
    payload: &[u8],
    patch: impl FnOnce(&mut [u8]),
) -> FrameHeader {
    let start = out.len();
    out.extend_from_slice(&FRAME_MAGIC.to_le_bytes());
    out.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    out.extend_from_slice(&raft_index.0.to_le_bytes());
    out.extend_from_slice(&term.0.to_le_bytes());
    out.extend_from_slice(&[kind.to_byte(), 0, 0, 0, 0, 0, 0, 0]);
    out.extend_from_slice(payload);
    patch(&mut out[start + FRAME_HEADER_BYTES..]);
    let crc = crc32c::crc32c_append(
        crc32c::crc32c(&out[start..start + CRC_AT]),
        &out[start + FRAME_HEADER_BYTES..],
    );
    out[start + CRC_AT..start + FRAME_HEADER_BYTES].copy_from_slice(&crc.to_le_bytes());
    FrameHeader {
        payload_len: payload.len() as u32,
        raft_index,
        term,
        kind,
    }
}

/// Outcome of looking at the bytes where a frame should start.
#[derive(Debug, PartialEq, Eq)]
pub enum Decoded {
    /// A whole, checksummed frame.
    Frame(FrameHeader),
    /// A plausible header whose frame extends past the bytes given: read more.
    NeedMore(usize),
    /// Not a frame (padding, torn write, corruption): the log ends here.
    Invalid(&'static str),
}

/// Decodes the frame at the start of `b`. `max_payload` bounds the length a header may claim,
/// so a garbled length can't make the reader allocate or read without limit.
pub fn decode(b: &[u8], max_payload: usize) -> Decoded {
    if b.len() < FRAME_HEADER_BYTES {
        return Decoded::NeedMore(FRAME_HEADER_BYTES);
    }
    let u32_at = |at: usize| u32::from_le_bytes(b[at..at + 4].try_into().expect("4 bytes"));
    let u64_at = |at: usize| u64::from_le_bytes(b[at..at + 8].try_into().expect("8 bytes"));
    if u32_at(0) != FRAME_MAGIC {
        return Decoded::Invalid("no frame magic");
    }
    let payload_len = u32_at(4);
    if payload_len as usize > max_payload {
        return Decoded::Invalid("frame length over the limit");
    }
    let Some(kind) = EntryKind::from_byte(b[24]) else {
        return Decoded::Invalid("unknown entry kind");
    };
    let header = FrameHeader {
        payload_len,
        raft_index: RaftIndex(u64_at(8)),
        term: Term(u64_at(16)),
        kind,
    };
    let total = header.frame_len();
    if b.len() < total {
        return Decoded::NeedMore(total);
    }
    let crc = crc32c::crc32c_append(crc32c::crc32c(&b[..CRC_AT]), &b[FRAME_HEADER_BYTES..total]);
    if crc != u32_at(CRC_AT) {
        return Decoded::Invalid("frame CRC32C mismatch");
    }
    Decoded::Frame(header)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_defects() {
        let mut v = Vec::new();
        let h0 = encode(
            &mut v,
            RaftIndex(7),
            Term(3),
            EntryKind::Data,
            b"hello",
            |_| {},
        );
        let Decoded::Frame(h) = decode(&v, 100) else {
            panic!("frame expected")
        };
        assert_eq!(h, h0);
        assert_eq!(h.raft_index, RaftIndex(7));
        assert_eq!(h.term, Term(3));
        assert_eq!(h.frame_len(), v.len());
        assert_eq!(decode(&v[..v.len() - 1], 100), Decoded::NeedMore(v.len()));
        assert!(matches!(decode(&v, 2), Decoded::Invalid(_)));
        assert!(matches!(decode(&[0u8; 64], 100), Decoded::Invalid(_)));
        let mut flipped = v.clone();
        flipped[FRAME_HEADER_BYTES + 1] ^= 0x10;
        assert!(matches!(decode(&flipped, 100), Decoded::Invalid(_)));
        let mut term = v;
        term[16] ^= 1;
        assert!(matches!(decode(&term, 100), Decoded::Invalid(_)));
    }
}
