//! Kafka's size-delimited framing: every request and response on a Kafka connection is a
//! big-endian `i32` length followed by that many bytes.
//!
//! The length is the first thing a peer controls, so it is checked before the broker reserves
//! a single byte for the body: a negative or oversized length means the peer is not speaking
//! Kafka (or is hostile), and Kafka's answer is to close the connection.

use bytes::{BufMut, BytesMut};

/// Kafka's `socket.request.max.bytes` default: the largest request body a broker reads.
///
/// It bounds the memory one request can pin before anything else is known about it; a larger
/// length prefix closes the connection.
pub const SOCKET_REQUEST_MAX_BYTES_DEFAULT: usize = 100 * 1024 * 1024;

/// Size of the big-endian `i32` length prefix in front of every frame.
pub const FRAME_LENGTH_PREFIX_BYTES: usize = 4;

/// The part of every request header that has the same layout in every header version:
/// `request_api_key: i16`, `request_api_version: i16`, `correlation_id: i32`.
///
/// A body shorter than this cannot even be answered (there is no correlation id to answer
/// to), so it is a framing error rather than a decoding one.
pub const REQUEST_HEADER_FIXED_BYTES: usize = 8;

/// The largest payload a frame can describe: the length prefix is an `i32`.
const FRAME_PAYLOAD_MAX_BYTES: usize = i32::MAX as usize;

/// Why a length prefix was refused. Each of these closes the connection, as in Kafka.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    /// The prefix is negative: not a Kafka peer, or a corrupted stream.
    #[error("frame length {length} is negative")]
    NegativeLength {
        /// The length as sent.
        length: i32,
    },
    /// The body cannot hold the fixed part of a request header.
    #[error("frame length {length} is shorter than the {min_bytes}-byte request header")]
    TooShort {
        /// The length as sent.
        length: usize,
        /// The smallest acceptable length.
        min_bytes: usize,
    },
    /// The body is larger than the configured limit (`socket.request.max.bytes` for
    /// requests, the `i32` range for responses).
    #[error("frame length {length} is over the limit of {max_bytes} bytes")]
    TooLarge {
        /// The length as sent or as encoded.
        length: usize,
        /// The limit it broke.
        max_bytes: usize,
    },
}

/// Reads a request's length prefix and returns how many body bytes follow it.
///
/// `max_bytes` is the broker's `socket.request.max.bytes`
/// ([`SOCKET_REQUEST_MAX_BYTES_DEFAULT`] unless configured). The connection loop reads exactly
/// the returned number of bytes next and hands them to
/// [`decode_request`](crate::request::decode_request).
pub fn request_body_len(
    prefix: [u8; FRAME_LENGTH_PREFIX_BYTES],
    max_bytes: usize,
) -> Result<usize, FrameError> {
    let length = i32::from_be_bytes(prefix);
    let Ok(length_bytes) = usize::try_from(length) else {
        return Err(FrameError::NegativeLength { length });
    };
    if length_bytes < REQUEST_HEADER_FIXED_BYTES {
        return Err(FrameError::TooShort {
            length: length_bytes,
            min_bytes: REQUEST_HEADER_FIXED_BYTES,
        });
    }
    if length_bytes > max_bytes {
        return Err(FrameError::TooLarge {
            length: length_bytes,
            max_bytes,
        });
    }
    Ok(length_bytes)
}

/// Where a frame started in a buffer; proof that [`begin_frame`] reserved its length prefix.
///
/// Pass it to [`finish_frame`] once the payload is written.
#[derive(Debug)]
#[must_use = "a frame whose length prefix is never written corrupts the stream"]
pub struct FrameStart {
    prefix_at: usize,
}

/// Reserves a length prefix at the end of `buf`; write the payload after it, then call
/// [`finish_frame`].
///
/// Several frames may be written one after another into the same buffer (pipelined
/// responses), each with its own `begin_frame`/`finish_frame` pair.
pub fn begin_frame(buf: &mut BytesMut) -> FrameStart {
    let prefix_at = buf.len();
    buf.put_i32(0);
    FrameStart { prefix_at }
}

/// Writes the length prefix reserved by [`begin_frame`]: everything after it in `buf` is the
/// payload.
///
/// Fails if the payload does not fit an `i32` length; the buffer then holds a frame that must
/// not be sent.
pub fn finish_frame(buf: &mut BytesMut, start: FrameStart) -> Result<(), FrameError> {
    let payload_at = start.prefix_at + FRAME_LENGTH_PREFIX_BYTES;
    // `begin_frame` wrote the prefix, so a shorter buffer means the caller truncated it: a bug.
    assert!(
        buf.len() >= payload_at,
        "frame buffer was truncated below its length prefix"
    );
    let prefix = frame_length_prefix(buf.len() - payload_at)?;
    buf[start.prefix_at..payload_at].copy_from_slice(&prefix);
    Ok(())
}

/// The length prefix for a payload of `payload_len` bytes.
///
/// For writers that send a frame as several buffers (e.g. a response header followed by
/// record bytes that were never copied) and so cannot use [`begin_frame`].
pub fn frame_length_prefix(
    payload_len: usize,
) -> Result<[u8; FRAME_LENGTH_PREFIX_BYTES], FrameError> {
    match i32::try_from(payload_len) {
        Ok(length) => Ok(length.to_be_bytes()),
        Err(_) => Err(FrameError::TooLarge {
            length: payload_len,
            max_bytes: FRAME_PAYLOAD_MAX_BYTES,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(length: i32, max_bytes: usize) -> Result<usize, FrameError> {
        request_body_len(length.to_be_bytes(), max_bytes)
    }

    #[test]
    fn default_limit_is_kafkas() {
        assert_eq!(SOCKET_REQUEST_MAX_BYTES_DEFAULT, 104_857_600);
    }

    #[test]
    fn accepts_lengths_from_header_size_to_max() {
        let max = SOCKET_REQUEST_MAX_BYTES_DEFAULT;
        assert_eq!(check(8, max), Ok(8));
        assert_eq!(check(1234, max), Ok(1234));
        assert_eq!(check(max as i32, max), Ok(max));
    }

    #[test]
    fn refuses_negative_lengths() {
        assert_eq!(
            check(-1, 1024),
            Err(FrameError::NegativeLength { length: -1 })
        );
        assert_eq!(
            check(i32::MIN, 1024),
            Err(FrameError::NegativeLength { length: i32::MIN })
        );
    }

    #[test]
    fn refuses_lengths_too_short_for_a_header() {
        for length in 0..REQUEST_HEADER_FIXED_BYTES as i32 {
            assert_eq!(
                check(length, 1024),
                Err(FrameError::TooShort {
                    length: length as usize,
                    min_bytes: REQUEST_HEADER_FIXED_BYTES
                })
            );
        }
    }

    #[test]
    fn refuses_lengths_over_the_limit() {
        assert_eq!(
            check(1025, 1024),
            Err(FrameError::TooLarge {
                length: 1025,
                max_bytes: 1024
            })
        );
        assert_eq!(
            check(i32::MAX, SOCKET_REQUEST_MAX_BYTES_DEFAULT),
            Err(FrameError::TooLarge {
                length: i32::MAX as usize,
                max_bytes: SOCKET_REQUEST_MAX_BYTES_DEFAULT
            })
        );
    }

    #[test]
    fn finish_frame_writes_the_payload_length() {
        let mut buf = BytesMut::new();
        let first = begin_frame(&mut buf);
        buf.put_slice(b"hello");
        finish_frame(&mut buf, first).unwrap();
        let second = begin_frame(&mut buf);
        finish_frame(&mut buf, second).unwrap();
        assert_eq!(&buf[..], b"\0\0\0\x05hello\0\0\0\0");
    }

    #[test]
    fn frame_length_prefix_refuses_what_an_i32_cannot_say() {
        assert_eq!(frame_length_prefix(7), Ok([0, 0, 0, 7]));
        assert_eq!(
            frame_length_prefix(FRAME_PAYLOAD_MAX_BYTES + 1),
            Err(FrameError::TooLarge {
                length: FRAME_PAYLOAD_MAX_BYTES + 1,
                max_bytes: FRAME_PAYLOAD_MAX_BYTES
            })
        );
    }
}
