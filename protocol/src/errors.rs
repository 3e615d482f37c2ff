//! Kafka error codes, as sent in the `error_code: i16` fields of responses.
//!
//! kafka-protocol's [`ResponseError`] already names every code up to Kafka 4.1 (with
//! `code()`, `try_from_code()` and `is_retriable()`), so this module re-exports it instead of
//! keeping a second list that could drift. The only addition is [`NONE`]: `ResponseError`
//! has no variant for success, because it only describes errors.
//!
//! Map a broker failure to a code once, at the edge, with `ResponseError::X.code()`.

pub use kafka_protocol::ResponseError;

/// The `error_code` of a successful response (Kafka's `NONE`).
pub const NONE: i16 = 0;

#[cfg(test)]
mod tests {
    use super::*;

    /// The codes the broker is known to send, checked against Kafka's numbering so a renamed
    /// or renumbered variant in a kafka-protocol upgrade is caught here.
    #[test]
    fn codes_the_broker_uses_have_kafkas_numbers() {
        let expected = [
            (ResponseError::OffsetOutOfRange, 1),
            (ResponseError::CorruptMessage, 2),
            (ResponseError::UnknownTopicOrPartition, 3),
            (ResponseError::InvalidFetchSize, 4),
            (ResponseError::LeaderNotAvailable, 5),
            (ResponseError::NotLeaderOrFollower, 6),
            (ResponseError::RequestTimedOut, 7),
            (ResponseError::MessageTooLarge, 10),
            (ResponseError::InvalidTopicException, 17),
            (ResponseError::RecordListTooLarge, 18),
            (ResponseError::NotEnoughReplicas, 19),
            (ResponseError::InvalidRequiredAcks, 21),
            (ResponseError::UnsupportedVersion, 35),
            (ResponseError::TopicAlreadyExists, 36),
            (ResponseError::InvalidPartitions, 37),
            (ResponseError::InvalidReplicationFactor, 38),
            (ResponseError::InvalidConfig, 40),
            (ResponseError::InvalidRequest, 42),
            (ResponseError::UnsupportedForMessageFormat, 43),
            (ResponseError::PolicyViolation, 44),
            (ResponseError::OutOfOrderSequenceNumber, 45),
            (ResponseError::DuplicateSequenceNumber, 46),
            (ResponseError::InvalidProducerEpoch, 47),
            (ResponseError::KafkaStorageError, 56),
            (ResponseError::UnknownProducerId, 59),
            (ResponseError::InvalidRecord, 87),
            (ResponseError::UnknownTopicId, 100),
            (ResponseError::InconsistentTopicId, 103),
        ];
        for (error, code) in expected {
            assert_eq!(error.code(), code, "{error:?}");
            assert_eq!(ResponseError::try_from_code(code), Some(error));
        }
        assert_eq!(ResponseError::try_from_code(NONE), None);
    }

    #[test]
    fn retriable_codes_match_kafka() {
        // Clients retry these on their own; sending a non-retriable code by mistake turns a
        // transient condition (leader moving, disk briefly full) into a failed produce.
        assert!(ResponseError::NotLeaderOrFollower.is_retriable());
        assert!(ResponseError::NotEnoughReplicas.is_retriable());
        assert!(ResponseError::KafkaStorageError.is_retriable());
        // Kafka's CorruptRecordException is retriable too: the client may resend the batch.
        assert!(ResponseError::CorruptMessage.is_retriable());
        assert!(!ResponseError::InvalidRecord.is_retriable());
        assert!(!ResponseError::MessageTooLarge.is_retriable());
    }
}
