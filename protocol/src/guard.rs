//! A read buffer that keeps kafka-protocol's decoders from reserving memory for lengths the
//! frame cannot hold.
//!
//! # The problem (kafka-protocol 0.18.0)
//!
//! Its array decoders read an element count from the wire and call
//! `Vec::with_capacity(count)` *before* decoding any element: `Array` takes an `i32` count
//! (up to 2^31 - 1), `CompactArray` an unsigned varint (up to 2^32 - 2). With elements of a
//! few dozen bytes in memory, a request of about ten bytes asks the allocator for tens or
//! hundreds of GiB. When the allocator refuses (on Linux, any single request larger than RAM
//! plus swap under the default overcommit policy), Rust aborts the whole process; this is not
//! a panic and cannot be caught. Strings and byte fields are safe: they check the remaining
//! bytes before slicing, and every string or bytes field in 0.18.0's messages is a zero-copy
//! `StrBytes`/`Bytes`, never a `Vec<u8>`/`String` that would be zero-filled up front.
//!
//! # The guard
//!
//! Every element of every array in a Kafka request takes at least one byte on the wire, so a
//! count larger than the bytes left after it can never decode. The decoders are generic over
//! the buffer, and every count passes through one of two reads, which this buffer overrides:
//!
//! - `try_get_u8`, the only way kafka-protocol reads unsigned varints (compact array, string
//!   and bytes lengths; tagged-field counts, tags and sizes) and booleans. Before handing out
//!   a byte, the guard decodes the varint that would start there, exactly as kafka-protocol
//!   would, and fails the read if its value is above `remaining + 1` (a compact length is the
//!   count plus one) and above [`UNCHECKED_DECLARED_LENGTH_MAX`]. It checks at every byte, not
//!   only where it believes a varint starts, because an `Int8`/`Boolean` byte with its high
//!   bit set can sit right before a real varint; a varint's tail is never larger than the
//!   varint, so legitimate varints pass at every position. A well-formed request trips this
//!   only with an unknown tag number above that constant near its end, or a boolean byte
//!   other than 0 or 1 followed by bytes that read as a huge varint; clients send neither.
//! - `try_get_i32`, used for `Int32` fields and for the `i32` lengths of arrays and byte
//!   fields in non-flexible versions. A value there may be a timeout or a `max_bytes`, which
//!   legitimately exceed the bytes left, so the guard cannot refuse it. Instead, in
//!   non-flexible versions, it hands the decoder `max(remaining + 1,
//!   UNCHECKED_DECLARED_LENGTH_MAX)` in place of any larger value and counts the substitution.
//!   If that value was a length, the decode now fails (too few bytes), as the real one would
//!   have, but without the huge reservation. If it was a field, nothing else changes, because
//!   kafka-protocol's decoders branch only on the version, on lengths and on tags, never on a
//!   field's value; the caller then decodes again with the real bytes, now known to be safe.
//!
//! These facts about kafka-protocol 0.18.0 were checked over the request header, all 87
//! request types and the 201 structs they contain, at every version (682 struct-versions),
//! by a script that walked the generated decoders:
//! no decoder branches on anything but the version; flexible versions never use an `i32`
//! length (the request header's `client_id`, an `i16`-length string, is the only non-compact
//! length there), so flexible requests need no `i32` substitution and decode once; and no
//! array element reachable from a request decodes to zero bytes. The dependency is pinned
//! with `=0.18.0`, and these facts must be re-checked on any upgrade (or the guard dropped if
//! upstream bounds its pre-allocation itself; see the `hostile_input` test).
//!
//! The cost: flexible versions (what current clients use) decode once. A non-flexible
//! request with an `Int32` field above `max(bytes left + 1, UNCHECKED_DECLARED_LENGTH_MAX)`
//! (Produce v3-8 `timeout_ms`, Fetch v4-11 `max_bytes`, ...) decodes twice.
//!
//! The result: the largest reservation a request can force is
//! `max(frame bytes, UNCHECKED_DECLARED_LENGTH_MAX) × element size`, virtual and untouched,
//! the same order as what a valid request of that size needs anyway.

use bytes::{Buf, Bytes, TryGetError};
use kafka_protocol::protocol::buf::ByteBuf;

/// Declared lengths up to this many elements are let through even when they exceed the bytes
/// left (the decoder then fails on its own after reserving at most this many elements).
///
/// It keeps small values away from the guard entirely: unknown tagged-field numbers, and
/// `Int32` fields such as partition indexes and epochs near the end of a request, which would
/// otherwise force a second decoding pass. It bounds the worst-case reservation from a short
/// request to this many elements (well under a MiB for Kafka's largest request structs).
pub(crate) const UNCHECKED_DECLARED_LENGTH_MAX: usize = 4096;

/// The longest unsigned varint kafka-protocol reads: it stops after five bytes.
const VARINT_BYTES_MAX: usize = 5;

/// A length that could not fit in what was left of the frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct LengthViolation {
    pub(crate) declared: u32,
    pub(crate) remaining_bytes: usize,
}

/// The buffer kafka-protocol's decoders read a request body through; see the module docs.
pub(crate) struct GuardedBuf {
    inner: Bytes,
    /// True for non-flexible versions, where `i32` values may be lengths.
    substitute_large_i32: bool,
    substituted_reads: u32,
    violation: Option<LengthViolation>,
}

impl GuardedBuf {
    pub(crate) fn new(inner: Bytes, flexible_version: bool) -> Self {
        Self {
            inner,
            substitute_large_i32: !flexible_version,
            substituted_reads: 0,
            violation: None,
        }
    }

    /// How many `i32` values were replaced; if any, the decoded message is not the request's
    /// and must be decoded again from the original bytes.
    pub(crate) fn substituted_reads(&self) -> u32 {
        self.substituted_reads
    }

    /// The length that made the guard fail the decode, if it did.
    pub(crate) fn violation(&self) -> Option<LengthViolation> {
        self.violation
    }

    fn not_enough(&self, requested: usize) -> TryGetError {
        TryGetError {
            requested,
            available: self.inner.len(),
        }
    }
}

/// The unsigned varint at the start of `bytes`, read with kafka-protocol's rules (at most
/// five bytes, bits past 32 dropped), and how many bytes it takes. `None` if the bytes end
/// first: the decoder then fails before it can use the value.
fn peek_unsigned_varint(bytes: &[u8]) -> Option<(u32, usize)> {
    let mut value: u32 = 0;
    for (index, &byte) in bytes.iter().take(VARINT_BYTES_MAX).enumerate() {
        // Shifts are at most 28 bits; bits shifted past 32 are dropped, as in kafka-protocol.
        value |= u32::from(byte & 0x7f) << (7 * index);
        if byte < 0x80 || index + 1 == VARINT_BYTES_MAX {
            return Some((value, index + 1));
        }
    }
    None
}

impl Buf for GuardedBuf {
    fn remaining(&self) -> usize {
        self.inner.len()
    }

    fn chunk(&self) -> &[u8] {
        &self.inner
    }

    fn advance(&mut self, cnt: usize) {
        // `Bytes::advance` panics past the end; kafka-protocol only advances after checking,
        // but a decoder of hostile input must not be one bug away from a panic.
        self.inner.advance(cnt.min(self.inner.len()));
    }

    fn try_get_u8(&mut self) -> Result<u8, TryGetError> {
        if let Some((declared, varint_bytes)) = peek_unsigned_varint(&self.inner) {
            let remaining_bytes = self.inner.len() - varint_bytes;
            let allowed = (remaining_bytes + 1).max(UNCHECKED_DECLARED_LENGTH_MAX);
            if usize::try_from(declared).map_or(true, |declared| declared > allowed) {
                self.violation = Some(LengthViolation {
                    declared,
                    remaining_bytes,
                });
                return Err(self.not_enough(allowed));
            }
        }
        let Some(&byte) = self.inner.first() else {
            return Err(self.not_enough(1));
        };
        self.inner.advance(1);
        Ok(byte)
    }

    fn try_get_i32(&mut self) -> Result<i32, TryGetError> {
        let Some(bytes) = self.inner.first_chunk::<4>() else {
            return Err(self.not_enough(4));
        };
        let value = i32::from_be_bytes(*bytes);
        self.inner.advance(4);
        if self.substitute_large_i32 {
            let ceiling = (self.inner.len() + 1).max(UNCHECKED_DECLARED_LENGTH_MAX);
            let ceiling = i32::try_from(ceiling).unwrap_or(i32::MAX);
            if value > ceiling {
                self.substituted_reads += 1;
                return Ok(ceiling);
            }
        }
        Ok(value)
    }
}

impl ByteBuf for GuardedBuf {
    fn peek_bytes(&mut self, r: std::ops::Range<usize>) -> Bytes {
        // Only `decode_request_header_from_buffer` peeks, and this crate does not call it
        // with this buffer; clip rather than panic all the same.
        let end = r.end.min(self.inner.len());
        self.inner.slice(r.start.min(end)..end)
    }

    fn get_bytes(&mut self, size: usize) -> Bytes {
        // Reached through `try_get_bytes`, which checks `remaining()` first.
        self.inner.split_to(size.min(self.inner.len()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn guarded(bytes: &[u8], flexible_version: bool) -> GuardedBuf {
        GuardedBuf::new(Bytes::copy_from_slice(bytes), flexible_version)
    }

    #[test]
    fn peeks_varints_like_kafka_protocol() {
        assert_eq!(peek_unsigned_varint(&[0x00]), Some((0, 1)));
        assert_eq!(peek_unsigned_varint(&[0x7f, 0xff]), Some((127, 1)));
        assert_eq!(peek_unsigned_varint(&[0xac, 0x02]), Some((300, 2)));
        assert_eq!(
            peek_unsigned_varint(&[0xff, 0xff, 0xff, 0xff, 0x0f]),
            Some((u32::MAX, 5))
        );
        // Five continuation bytes: kafka-protocol stops anyway, dropping the high bits.
        assert_eq!(
            peek_unsigned_varint(&[0xff, 0xff, 0xff, 0xff, 0xff, 0x01]),
            Some((u32::MAX, 5))
        );
        assert_eq!(peek_unsigned_varint(&[0x80, 0x80]), None);
        assert_eq!(peek_unsigned_varint(&[]), None);
    }

    #[test]
    fn lets_varints_through_when_they_fit() {
        // 3 elements (varint 4) followed by 3 bytes.
        let mut buf = guarded(&[0x04, 1, 2, 3], true);
        assert_eq!(buf.try_get_u8().unwrap(), 0x04);
        assert_eq!(buf.violation(), None);
        // Small values pass even with nothing after them.
        let mut buf = guarded(&[0x90, 0x01], true); // 144
        assert_eq!(buf.try_get_u8().unwrap(), 0x90);
        assert_eq!(buf.try_get_u8().unwrap(), 0x01);
    }

    #[test]
    fn refuses_varints_that_cannot_fit() {
        // A compact length of 2^32 - 1 in a five-byte body.
        let mut buf = guarded(&[0xff, 0xff, 0xff, 0xff, 0x0f], true);
        assert!(buf.try_get_u8().is_err());
        assert_eq!(
            buf.violation(),
            Some(LengthViolation {
                declared: u32::MAX,
                remaining_bytes: 0
            })
        );
        assert_eq!(buf.remaining(), 5, "a refused read consumes nothing");
    }

    #[test]
    fn substitutes_large_i32_only_in_non_flexible_versions() {
        let body = [0x7f, 0xff, 0xff, 0xff, 0, 0];
        let mut buf = guarded(&body, false);
        assert_eq!(
            buf.try_get_i32().unwrap(),
            UNCHECKED_DECLARED_LENGTH_MAX as i32
        );
        assert_eq!(buf.substituted_reads(), 1);

        let mut buf = guarded(&body, true);
        assert_eq!(buf.try_get_i32().unwrap(), i32::MAX);
        assert_eq!(buf.substituted_reads(), 0);

        // Values that fit, and negative ones (null markers), pass untouched.
        let mut buf = guarded(&[0, 0, 0, 2, 0xff, 0xff, 0xff, 0xff], false);
        assert_eq!(buf.try_get_i32().unwrap(), 2);
        assert_eq!(buf.try_get_i32().unwrap(), -1);
        assert_eq!(buf.substituted_reads(), 0);
    }

    #[test]
    fn short_reads_fail_without_panicking() {
        let mut buf = guarded(&[1, 2], false);
        assert!(buf.try_get_i32().is_err());
        assert_eq!(buf.remaining(), 2);
        assert!(buf.try_get_bytes(3).is_err());
        assert_eq!(buf.peek_bytes(1..9), Bytes::from_static(&[2]));
        buf.advance(10);
        assert_eq!(buf.remaining(), 0);
        assert!(buf.try_get_u8().is_err());
    }
}
