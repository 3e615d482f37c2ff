//! Kafka's checks of what a producer sends, before anything is appended: whole batches,
//! and the record-level rules of the topic (its log validator's).

use bytes::Bytes;
use sluice_protocol::kafka_protocol::records::RecordBatchDecoder;
use sluice_protocol::ResponseError;
use sluice_storage::BatchHeader;

use super::Refusal;

/// A record timestamp of -1: "none", which the timestamp bounds do not apply to (Kafka).
const NO_TIMESTAMP: i64 = -1;

/// Kafka's record-level rules for a topic (its log validator's), checked on produce. The
/// default checks nothing (for the broker's own logs).
#[derive(Clone, Copy, Debug)]
pub struct RecordRules {
    /// `message.timestamp.type=LogAppendTime`: the broker stamps batches, so client
    /// timestamps are not checked.
    pub log_append_time: bool,
    /// `cleanup.policy` includes `compact`: compaction is by key, so every record needs one.
    pub keys_required: bool,
    /// `message.timestamp.before.max.ms`: how far a CreateTime timestamp may lag the clock.
    pub timestamp_before_max_ms: i64,
    /// `message.timestamp.after.max.ms`: how far a CreateTime timestamp may lead the clock.
    pub timestamp_after_max_ms: i64,
}

impl Default for RecordRules {
    fn default() -> Self {
        RecordRules {
            log_append_time: false,
            keys_required: false,
            timestamp_before_max_ms: i64::MAX,
            timestamp_after_max_ms: i64::MAX,
        }
    }
}

/// Splits a produce request's records into whole batches; a torn or empty set, or more than
/// one batch, is refused.
pub(super) fn split_batches(records: &Bytes) -> Result<Vec<&[u8]>, ResponseError> {
    let mut out = Vec::new();
    let mut rest = &records[..];
    while !rest.is_empty() {
        let len = sluice_storage::batch_len(rest).ok_or(ResponseError::CorruptMessage)?;
        if len < sluice_storage::BATCH_HEADER_BYTES as i64 {
            return Err(ResponseError::CorruptMessage);
        }
        // Kafka sees no whole batch in a truncated one, and wants exactly one.
        if len > rest.len() as i64 {
            return Err(ResponseError::InvalidRecord);
        }
        let (b, r) = rest.split_at(len as usize);
        out.push(b);
        rest = r;
    }
    // Produce v3+ carries exactly one batch per partition; Kafka refuses none or more.
    match out.len() {
        1 => Ok(out),
        _ => Err(ResponseError::InvalidRecord),
    }
}

/// Kafka's record-level validation of one batch: keys on compacted topics and CreateTime
/// timestamps within the topic's bounds. Records are decoded only when a rule could fail:
/// always for a compacted topic, otherwise only when the header's max timestamp is past
/// the upper bound or a lower bound is configured.
pub(super) fn check_records(
    b: &[u8],
    h: &BatchHeader,
    rules: &RecordRules,
    now_ms: i64,
) -> Result<(), Refusal> {
    if h.is_control() {
        return Ok(());
    }
    let check_time = !rules.log_append_time;
    let too_late = now_ms.saturating_add(rules.timestamp_after_max_ms);
    let too_early = now_ms.saturating_sub(rules.timestamp_before_max_ms);
    let may_fail = rules.keys_required
        || (check_time && (h.max_timestamp > too_late || rules.timestamp_before_max_ms < i64::MAX));
    if !may_fail {
        return Ok(());
    }
    let mut buf = Bytes::copy_from_slice(b);
    let records = RecordBatchDecoder::decode(&mut buf)
        .map_err(|_| ResponseError::CorruptMessage)?
        .records;
    // One error per record, the key's first, as Kafka's validator reports them.
    let mut record_errors = Vec::new();
    let mut bad_time = false;
    for (i, r) in records.iter().enumerate() {
        let reason = if rules.keys_required && r.key.is_none() {
            "no key, and the topic is compacted by key".to_string()
        } else if check_time
            && r.timestamp != NO_TIMESTAMP
            && (r.timestamp < too_early || r.timestamp > too_late)
        {
            bad_time = true;
            format!(
                "timestamp {} outside the topic's bounds [{too_early}, {too_late}]",
                r.timestamp
            )
        } else {
            continue;
        };
        record_errors.push((i as i32, reason));
    }
    if record_errors.is_empty() {
        return Ok(());
    }
    // A timestamp error sets the partition's code even when other records lack keys.
    let (error, message) = if bad_time {
        (
            ResponseError::InvalidTimestamp,
            format!(
                "{} records refused, at least one for its timestamp",
                record_errors.len()
            ),
        )
    } else {
        (
            ResponseError::InvalidRecord,
            format!("{} records refused, without keys", record_errors.len()),
        )
    };
    Err(Refusal {
        error,
        record_errors,
        message: Some(message),
        log_start: None,
    })
}

/// For `message.timestamp.type=LogAppendTime`: the broker sets the batch's max timestamp
/// and timestamp-type bit, which the CRC covers, so the CRC is recomputed.
pub(super) fn with_log_append_time(b: &[u8], now_ms: i64) -> Vec<u8> {
    let mut v = b.to_vec();
    let attrs = i16::from_be_bytes([v[21], v[22]]) | 0x08;
    v[21..23].copy_from_slice(&attrs.to_be_bytes());
    v[35..43].copy_from_slice(&now_ms.to_be_bytes());
    let crc = crc32c::crc32c(&v[21..]);
    v[17..21].copy_from_slice(&crc.to_be_bytes());
    v
}
