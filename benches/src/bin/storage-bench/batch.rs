//! Kafka RecordBatch v2 bytes for the benchmark: valid for `PartitionLog::append`, with a
//! record area of pseudo-random filler (storage never parses records).

use sluice_storage::BATCH_HEADER_BYTES;

/// Records claimed per batch; storage only checks the count against `lastOffsetDelta`.
const RECORDS_PER_BATCH: i32 = 8;

/// A valid uncompressed v2 batch of exactly `size` bytes (at least the 61-byte header).
pub fn batch(size: usize) -> Vec<u8> {
    let size = size.max(BATCH_HEADER_BYTES);
    let mut b = vec![0u8; size];
    let ts: i64 = 1_700_000_000_000;
    b[16] = 2; // magic
    b[23..27].copy_from_slice(&(RECORDS_PER_BATCH - 1).to_be_bytes());
    b[27..35].copy_from_slice(&ts.to_be_bytes());
    b[35..43].copy_from_slice(&ts.to_be_bytes());
    b[43..51].copy_from_slice(&(-1i64).to_be_bytes()); // producer id
    b[51..53].copy_from_slice(&(-1i16).to_be_bytes()); // producer epoch
    b[53..57].copy_from_slice(&(-1i32).to_be_bytes()); // base sequence
    b[57..61].copy_from_slice(&RECORDS_PER_BATCH.to_be_bytes());
    // xorshift filler: not compressible, not all zeros.
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    for byte in &mut b[BATCH_HEADER_BYTES..] {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        *byte = x as u8;
    }
    let len = (size - 12) as i32;
    b[8..12].copy_from_slice(&len.to_be_bytes());
    let crc = crc32c(&b[21..]);
    b[17..21].copy_from_slice(&crc.to_be_bytes());
    b
}

/// CRC32C (Castagnoli), bitwise: computed once per batch size, so speed does not matter and
/// the bench needs no extra dependency.
fn crc32c(data: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &byte in data {
        crc ^= byte as u32;
        for _ in 0..8 {
            let mask = (crc & 1).wrapping_neg();
            crc = (crc >> 1) ^ (0x82f6_3b78 & mask);
        }
    }
    !crc
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crc32c_known_vector() {
        assert_eq!(crc32c(b"123456789"), 0xe306_9283);
    }

    #[test]
    fn batches_validate() {
        for size in [61, 100, 1024, 16 * 1024] {
            let b = batch(size);
            assert_eq!(b.len(), size);
            let h = sluice_storage::validate_batch(&b, usize::MAX).expect("valid batch");
            assert_eq!(h.records_count, RECORDS_PER_BATCH);
        }
    }
}
