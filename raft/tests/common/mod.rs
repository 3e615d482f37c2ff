//! Helpers shared by the raft crate's integration tests.

use bytes::Bytes;

/// A valid uncompressed RecordBatch v2 of `n` records whose record area is `tag` (storage
/// never parses records).
pub fn batch(n: i32, tag: &[u8]) -> Bytes {
    let mut b = vec![0u8; 61];
    b[16] = 2;
    b[23..27].copy_from_slice(&(n - 1).to_be_bytes());
    b[43..51].copy_from_slice(&(-1i64).to_be_bytes());
    b[51..53].copy_from_slice(&(-1i16).to_be_bytes());
    b[53..57].copy_from_slice(&(-1i32).to_be_bytes());
    b[57..61].copy_from_slice(&n.to_be_bytes());
    b.extend_from_slice(tag);
    let len = (b.len() - 12) as i32;
    b[8..12].copy_from_slice(&len.to_be_bytes());
    let crc = crc32c::crc32c(&b[21..]);
    b[17..21].copy_from_slice(&crc.to_be_bytes());
    b.into()
}
