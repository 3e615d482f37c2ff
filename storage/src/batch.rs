//! Kafka RecordBatch v2 header: validation of what a client sent and the fields the log sets.
//!
//! Layout (big endian): baseOffset i64 @0, batchLength i32 @8, partitionLeaderEpoch i32 @12,
//! magic i8 @16, crc u32 @17 (CRC32C over attributes..end), attributes i16 @21,
//! lastOffsetDelta i32 @23, baseTimestamp i64 @27, maxTimestamp i64 @35, producerId i64 @43,
//! producerEpoch i16 @51, baseSequence i32 @53, recordsCount i32 @57, records @61.

use thiserror::Error;

/// Size of the v2 batch header that precedes the records.
pub const HEADER_BYTES: usize = 61;
/// Bytes before `partitionLeaderEpoch` that `batchLength` does not count.
const LENGTH_PREFIX_BYTES: usize = 12;
const CRC_START: usize = 21;

/// Why a batch was refused. Nothing is written when append returns one of these.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum BatchError {
    #[error("batch of {0} bytes is shorter than the {HEADER_BYTES}-byte v2 header")]
    TooShort(usize),
    #[error("batchLength {declared} does not match the {actual} bytes given")]
    LengthMismatch { declared: i64, actual: usize },
    #[error("magic {0} is not 2; only RecordBatch v2 is stored")]
    BadMagic(i8),
    #[error("CRC32C mismatch: header says {stored:#010x}, data gives {computed:#010x}")]
    BadCrc { stored: u32, computed: u32 },
    #[error("recordsCount {0} is not positive")]
    NoRecords(i32),
    #[error("lastOffsetDelta {last_offset_delta} does not fit recordsCount {records}")]
    BadLastOffsetDelta {
        last_offset_delta: i32,
        records: i32,
    },
    #[error("batch of {size} bytes exceeds the {max}-byte limit")]
    TooLarge { size: usize, max: usize },
    #[error("compression codec {0} is none of Kafka's (0 to {COMPRESSION_CODEC_MAX})")]
    UnknownCompression(i16),
}

/// The header fields the log and its callers care about.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BatchHeader {
    pub base_offset: i64,
    pub partition_leader_epoch: i32,
    pub attributes: i16,
    pub last_offset_delta: i32,
    pub base_timestamp: i64,
    pub max_timestamp: i64,
    pub producer_id: i64,
    pub producer_epoch: i16,
    pub base_sequence: i32,
    pub records_count: i32,
}

impl BatchHeader {
    /// Control batches (transaction markers) carry no user records.
    pub fn is_control(&self) -> bool {
        self.attributes & 0x20 != 0
    }

    pub fn is_transactional(&self) -> bool {
        self.attributes & 0x10 != 0
    }

    /// Offsets this batch covers.
    pub fn offset_count(&self) -> u64 {
        self.last_offset_delta as u64 + 1
    }
}

fn be_i64(b: &[u8], at: usize) -> i64 {
    i64::from_be_bytes(b[at..at + 8].try_into().expect("8 bytes"))
}
fn be_i32(b: &[u8], at: usize) -> i32 {
    i32::from_be_bytes(b[at..at + 4].try_into().expect("4 bytes"))
}
fn be_i16(b: &[u8], at: usize) -> i16 {
    i16::from_be_bytes(b[at..at + 2].try_into().expect("2 bytes"))
}

/// Reads the header without checking the CRC; the caller knows `b` holds one whole batch.
pub fn parse_header(b: &[u8]) -> Result<BatchHeader, BatchError> {
    if b.len() < HEADER_BYTES {
        return Err(BatchError::TooShort(b.len()));
    }
    Ok(BatchHeader {
        base_offset: be_i64(b, 0),
        partition_leader_epoch: be_i32(b, 12),
        attributes: be_i16(b, 21),
        last_offset_delta: be_i32(b, 23),
        base_timestamp: be_i64(b, 27),
        max_timestamp: be_i64(b, 35),
        producer_id: be_i64(b, 43),
        producer_epoch: be_i16(b, 51),
        base_sequence: be_i32(b, 53),
        records_count: be_i32(b, 57),
    })
}

/// Total length of the batch starting at `b`, from its header, if enough bytes are present.
pub fn batch_len(b: &[u8]) -> Option<i64> {
    (b.len() >= LENGTH_PREFIX_BYTES).then(|| be_i32(b, 8) as i64 + LENGTH_PREFIX_BYTES as i64)
}

/// Validates one whole client batch: magic, length against the buffer, CRC32C, record count,
/// last offset delta and size limit.
pub fn validate(b: &[u8], max_bytes: usize) -> Result<BatchHeader, BatchError> {
    if b.len() > max_bytes {
        return Err(BatchError::TooLarge {
            size: b.len(),
            max: max_bytes,
        });
    }
    if b.len() < HEADER_BYTES {
        return Err(BatchError::TooShort(b.len()));
    }
    let declared = batch_len(b).unwrap_or(0);
    if declared != b.len() as i64 {
        return Err(BatchError::LengthMismatch {
            declared,
            actual: b.len(),
        });
    }
    let magic = b[16] as i8;
    if magic != 2 {
        return Err(BatchError::BadMagic(magic));
    }
    let stored = u32::from_be_bytes(b[17..21].try_into().expect("4 bytes"));
    let computed = crc32c::crc32c(&b[CRC_START..]);
    if stored != computed {
        return Err(BatchError::BadCrc { stored, computed });
    }
    let h = parse_header(b)?;
    // A codec no consumer can decode would make the batch unreadable forever.
    let codec = h.attributes & COMPRESSION_MASK;
    if codec > COMPRESSION_CODEC_MAX {
        return Err(BatchError::UnknownCompression(codec));
    }
    if h.records_count < 1 {
        return Err(BatchError::NoRecords(h.records_count));
    }
    if h.last_offset_delta != h.records_count - 1 {
        return Err(BatchError::BadLastOffsetDelta {
            last_offset_delta: h.last_offset_delta,
            records: h.records_count,
        });
    }
    Ok(h)
}

/// Sets the two fields a broker owns and the CRC does not cover.
pub(crate) fn set_base_offset_and_epoch(b: &mut [u8], base_offset: u64, epoch: i32) {
    b[0..8].copy_from_slice(&(base_offset as i64).to_be_bytes());
    b[12..16].copy_from_slice(&epoch.to_be_bytes());
}

/// Bits of `attributes` naming the compression codec (0 = none).
pub const COMPRESSION_MASK: i16 = 0x07;
/// The highest codec Kafka defines (4, zstd); 5 to 7 are unassigned.
pub const COMPRESSION_CODEC_MAX: i16 = 4;

/// One record inside a batch's (uncompressed) records section, as compaction needs it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct RecordRef<'a> {
    /// The whole record, length prefix included, so it can be copied verbatim.
    pub bytes: &'a [u8],
    pub offset_delta: i32,
    /// `None` for a null key.
    pub key: Option<&'a [u8]>,
    /// A tombstone: the value is null.
    pub null_value: bool,
}

/// Zigzag varint (Kafka's `varint`/`varlong`) at `b[*at..]`; at most 10 bytes.
fn read_varlong(b: &[u8], at: &mut usize) -> Option<i64> {
    let mut v: u64 = 0;
    for shift in (0..70).step_by(7) {
        let byte = *b.get(*at)?;
        *at += 1;
        v |= ((byte & 0x7f) as u64) << shift;
        if byte & 0x80 == 0 {
            return Some((v >> 1) as i64 ^ -((v & 1) as i64));
        }
    }
    None
}

/// Splits an uncompressed records section into records. `None` if it is malformed.
pub(crate) fn records(b: &[u8]) -> Option<Vec<RecordRef<'_>>> {
    let mut out = Vec::new();
    let mut at = 0usize;
    while at < b.len() {
        let start = at;
        let len = usize::try_from(read_varlong(b, &mut at)?).ok()?;
        let end = at.checked_add(len).filter(|e| *e <= b.len())?;
        let body = &b[..end];
        at += 1; // attributes
        read_varlong(body, &mut at)?; // timestamp delta
        let offset_delta = i32::try_from(read_varlong(body, &mut at)?).ok()?;
        let key_len = read_varlong(body, &mut at)?;
        let key = if key_len < 0 {
            None
        } else {
            let k_end = at.checked_add(usize::try_from(key_len).ok()?)?;
            let k = body.get(at..k_end)?;
            at = k_end;
            Some(k)
        };
        let null_value = read_varlong(body, &mut at)? < 0;
        out.push(RecordRef {
            bytes: &b[start..end],
            offset_delta,
            key,
            null_value,
        });
        at = end;
    }
    Some(out)
}

/// A copy of `batch` holding only `kept` of its records, uncompressed, with its offsets,
/// timestamps, producer fields and `lastOffsetDelta` unchanged (so the batch still ends where
/// it did) and a fresh length and CRC. Zero records is allowed: Kafka keeps such an empty
/// batch to remember a producer's last sequence.
pub(crate) fn rebuild(batch: &[u8], kept: &[RecordRef<'_>]) -> Vec<u8> {
    let len = HEADER_BYTES + kept.iter().map(|r| r.bytes.len()).sum::<usize>();
    let mut out = Vec::with_capacity(len);
    out.extend_from_slice(&batch[..HEADER_BYTES]);
    for r in kept {
        out.extend_from_slice(r.bytes);
    }
    let batch_length = (len - LENGTH_PREFIX_BYTES) as i32;
    out[8..12].copy_from_slice(&batch_length.to_be_bytes());
    let attributes = be_i16(batch, 21) & !COMPRESSION_MASK;
    out[21..23].copy_from_slice(&attributes.to_be_bytes());
    out[57..61].copy_from_slice(&(kept.len() as i32).to_be_bytes());
    let crc = crc32c::crc32c(&out[CRC_START..]);
    out[17..21].copy_from_slice(&crc.to_be_bytes());
    out
}
