//! Sluice's Kafka wire layer: turns request bytes into typed requests and typed responses
//! into bytes, and nothing else.
//!
//! It owns:
//! - [`framing`]: the `i32` length prefix of every frame, checked against
//!   `socket.request.max.bytes` before a body is read;
//! - [`request`]: request headers (whose version depends on the API and version) and bodies,
//!   decoded without panicking or reserving unbounded memory on any input;
//! - [`response`]: response headers and bodies, framed and ready for the socket;
//! - [`versions`]: the table of supported API versions, and the ApiVersions answers built
//!   from it, so what the broker advertises is exactly what it decodes;
//! - [`errors`]: Kafka's error codes.
//!
//! It must never know about sockets or any I/O (the connection loop reads the bytes and calls
//! in here), async runtimes, storage, Raft, shards, or the broker's handlers (the broker
//! registers each handler's version range in a [`VersionTable`]; this crate sees only the
//! table). Message types come from kafka-protocol, re-exported as [`kafka_protocol`] so the
//! broker uses the very version this crate was checked against.
//!
//! A request's life here:
//!
//! ```text
//! 4 bytes  --framing::request_body_len-->  body length (or FrameError: close)
//! body     --request::decode_request--->  Request { api_key, api_version, header, body }
//!                                         (or DecodeError: answer ApiVersions, else close)
//! handler builds a ResponseKind
//! response --response::encode_response-->  Bytes with length prefix, for the socket
//! ```

#![forbid(unsafe_code)]
#![deny(missing_docs)]

mod apis;
pub mod errors;
pub mod framing;
mod guard;
pub mod request;
pub mod response;
pub mod versions;

pub use kafka_protocol;
pub use kafka_protocol::messages::{ApiKey, RequestHeader, RequestKind, ResponseKind};

pub use errors::ResponseError;
pub use framing::{request_body_len, FrameError, SOCKET_REQUEST_MAX_BYTES_DEFAULT};
pub use request::{decode_request, DecodeError, MalformedReason, Request};
pub use response::{encode_response, encode_response_message, EncodeError};
pub use versions::{codec_versions, VersionRange, VersionTable, VersionTableError};
