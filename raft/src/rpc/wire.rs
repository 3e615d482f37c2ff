//! The inter-broker RPC's frames. No I/O here: encoding, and decoding that refuses anything
//! malformed without panicking or allocating more than the frame's own length.
//!
//! ```text
//! frame  = length:u32 (of what follows, ≤ RPC_MAX_FRAME_BYTES)
//!          magic:u16 version:u8 kind:u8  body (postcard)
//! kinds  = Hello { node id }           first frame each way: who is on the other end
//!          Requests [Envelope]         many groups' messages to one broker, one frame
//!          Responses [(id, answer)]    their answers, batched the same way
//! ```
//!
//! Batching is what keeps idle traffic flat: every group's heartbeat to a peer that is due in
//! one ticker pass leaves in one `Requests` frame, so frames per second between two brokers
//! follow the tick rate, not the partition count.

use serde::{Deserialize, Serialize};

use crate::network::{RaftRequest, RaftResponse};

/// Length prefix bytes.
pub const LENGTH_BYTES: usize = 4;
/// magic, version, kind.
const HEADER_BYTES: usize = 4;
const MAGIC: u16 = 0x534c; // "SL"
/// The wire version this build speaks; a frame of another version closes the connection.
pub const VERSION: u8 = 1;
/// Largest frame accepted: a full append of `MAX_APPEND_ENTRIES` maximal batches plus slack.
pub const RPC_MAX_FRAME_BYTES: usize = 64 << 20;

const KIND_HELLO: u8 = 1;
const KIND_REQUESTS: u8 = 2;
const KIND_RESPONSES: u8 = 3;

/// A group's message to its replica on the receiving broker. `id` pairs it with its answer.
#[derive(Debug, Serialize, Deserialize)]
pub struct Envelope {
    pub id: u64,
    pub group: u64,
    pub request: RaftRequest,
}

#[derive(Debug)]
pub enum Frame {
    Hello { node_id: u64 },
    Requests(Vec<Envelope>),
    Responses(Vec<(u64, RaftResponse)>),
}

/// Why a frame was refused; the connection that sent it is closed.
#[derive(Debug, thiserror::Error)]
pub enum WireError {
    #[error("frame of {0} bytes exceeds the {RPC_MAX_FRAME_BYTES}-byte limit")]
    TooLarge(usize),
    #[error("frame of {0} bytes is shorter than its header")]
    TooShort(usize),
    #[error("bad magic {0:#06x}")]
    Magic(u16),
    #[error("wire version {0}, this broker speaks {VERSION}")]
    Version(u8),
    #[error("unknown frame kind {0}")]
    Kind(u8),
    #[error("undecodable body: {0}")]
    Body(String),
}

/// The body length a frame's 4-byte prefix announces, checked against the limit before
/// anything is allocated for it.
pub fn frame_length(prefix: [u8; LENGTH_BYTES]) -> Result<usize, WireError> {
    let n = u32::from_be_bytes(prefix) as usize;
    if n > RPC_MAX_FRAME_BYTES {
        return Err(WireError::TooLarge(n));
    }
    if n < HEADER_BYTES {
        return Err(WireError::TooShort(n));
    }
    Ok(n)
}

/// Appends the whole frame, length prefix included, to `out`.
pub fn encode(frame: &Frame, out: &mut Vec<u8>) -> Result<(), WireError> {
    let start = out.len();
    out.extend_from_slice(&[0; LENGTH_BYTES]);
    out.extend_from_slice(&MAGIC.to_be_bytes());
    out.push(VERSION);
    let body = match frame {
        Frame::Hello { node_id } => {
            out.push(KIND_HELLO);
            postcard::to_extend(node_id, std::mem::take(out))
        }
        Frame::Requests(r) => {
            out.push(KIND_REQUESTS);
            postcard::to_extend(r, std::mem::take(out))
        }
        Frame::Responses(r) => {
            out.push(KIND_RESPONSES);
            postcard::to_extend(r, std::mem::take(out))
        }
    };
    *out = body.map_err(|e| WireError::Body(e.to_string()))?;
    let len = out.len() - start - LENGTH_BYTES;
    if len > RPC_MAX_FRAME_BYTES {
        out.truncate(start);
        return Err(WireError::TooLarge(len));
    }
    out[start..start + LENGTH_BYTES].copy_from_slice(&(len as u32).to_be_bytes());
    Ok(())
}

/// Decodes a frame's bytes after its length prefix.
pub fn decode(b: &[u8]) -> Result<Frame, WireError> {
    if b.len() < HEADER_BYTES {
        return Err(WireError::TooShort(b.len()));
    }
    let magic = u16::from_be_bytes([b[0], b[1]]);
    if magic != MAGIC {
        return Err(WireError::Magic(magic));
    }
    if b[2] != VERSION {
        return Err(WireError::Version(b[2]));
    }
    let body = &b[HEADER_BYTES..];
    let bad = |e: postcard::Error| WireError::Body(e.to_string());
    // postcard reads sequence lengths as counts and grows vectors element by element, so a
    // forged count fails at the end of the body rather than allocating for it up front.
    let frame = match b[3] {
        KIND_HELLO => Frame::Hello {
            node_id: postcard::from_bytes(body).map_err(bad)?,
        },
        KIND_REQUESTS => Frame::Requests(postcard::from_bytes(body).map_err(bad)?),
        KIND_RESPONSES => Frame::Responses(postcard::from_bytes(body).map_err(bad)?),
        k => return Err(WireError::Kind(k)),
    };
    Ok(frame)
}

#[cfg(test)]
mod tests {
    use openraft::entry::RaftEntry;
    use openraft::raft::{AppendEntriesRequest, AppendEntriesResponse, VoteRequest};

    use super::*;
    use crate::types::{log_id, Batch, Entry, Vote};

    fn roundtrip(f: &Frame) -> Frame {
        let mut b = Vec::new();
        encode(f, &mut b).unwrap();
        let n = frame_length(b[..4].try_into().unwrap()).unwrap();
        assert_eq!(n, b.len() - 4);
        decode(&b[4..]).unwrap()
    }

    #[test]
    fn every_kind_survives_the_wire() {
        let append = AppendEntriesRequest {
            vote: Vote::new_committed(3, 1),
            prev_log_id: Some(log_id(2, 9)),
            entries: vec![
                Entry::new_blank(log_id(3, 10)),
                Entry::new_normal(log_id(3, 11), Batch(bytes::Bytes::from_static(b"batch"))),
            ],
            leader_commit: Some(log_id(2, 9)),
        };
        let f = roundtrip(&Frame::Requests(vec![
            Envelope {
                id: 7,
                group: 42,
                request: RaftRequest::Append(append),
            },
            Envelope {
                id: 8,
                group: 43,
                request: RaftRequest::Vote(VoteRequest::new(Vote::new(4, 2), Some(log_id(3, 11)))),
            },
        ]));
        let Frame::Requests(r) = f else {
            panic!("{f:?}")
        };
        assert_eq!((r[0].id, r[0].group, r[1].group), (7, 42, 43));
        let RaftRequest::Append(a) = &r[0].request else {
            panic!()
        };
        assert_eq!(a.entries.len(), 2);
        assert_eq!(a.entries[1].log_id, log_id(3, 11));
        let f = roundtrip(&Frame::Responses(vec![(
            7,
            RaftResponse::Append(AppendEntriesResponse::Success),
        )]));
        assert!(matches!(&f, Frame::Responses(r) if r.len() == 1 && r[0].0 == 7));
        assert!(matches!(
            roundtrip(&Frame::Hello { node_id: 3 }),
            Frame::Hello { node_id: 3 }
        ));
    }

    #[test]
    fn malformed_frames_are_refused_without_panicking() {
        assert!(matches!(
            frame_length((RPC_MAX_FRAME_BYTES as u32 + 1).to_be_bytes()),
            Err(WireError::TooLarge(_))
        ));
        assert!(matches!(
            frame_length(2u32.to_be_bytes()),
            Err(WireError::TooShort(2))
        ));
        let mut good = Vec::new();
        encode(&Frame::Hello { node_id: 1 }, &mut good).unwrap();
        let body = &good[4..];
        let mut bad_magic = body.to_vec();
        bad_magic[0] ^= 0xff;
        assert!(matches!(decode(&bad_magic), Err(WireError::Magic(_))));
        let mut bad_version = body.to_vec();
        bad_version[2] = VERSION + 1;
        assert!(matches!(decode(&bad_version), Err(WireError::Version(_))));
        let mut bad_kind = body.to_vec();
        bad_kind[3] = 99;
        assert!(matches!(decode(&bad_kind), Err(WireError::Kind(99))));
        // A request batch claiming a huge count, and every truncation of a real frame.
        let mut huge = vec![0x53, 0x4c, VERSION, KIND_REQUESTS];
        huge.extend_from_slice(&[0xff, 0xff, 0xff, 0xff, 0x0f]);
        assert!(matches!(decode(&huge), Err(WireError::Body(_))));
        let mut frame = Vec::new();
        let append = AppendEntriesRequest::<crate::PartitionRaft> {
            vote: Vote::new_committed(1, 1),
            prev_log_id: None,
            entries: vec![Entry::new_normal(
                log_id(1, 0),
                Batch(bytes::Bytes::from(vec![7u8; 300])),
            )],
            leader_commit: None,
        };
        encode(
            &Frame::Requests(vec![Envelope {
                id: 1,
                group: 1,
                request: RaftRequest::Append(append),
            }]),
            &mut frame,
        )
        .unwrap();
        for cut in 0..frame.len() - 4 {
            assert!(decode(&frame[4..4 + cut]).is_err(), "truncated at {cut}");
        }
        // Random bytes after a valid header never panic.
        let mut x: u64 = 0x9e3779b97f4a7c15;
        for _ in 0..2000 {
            let mut b = vec![0x53, 0x4c, VERSION, KIND_REQUESTS + (x % 2) as u8];
            for _ in 0..(x % 64) {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                b.push(x as u8);
            }
            let _ = decode(&b);
        }
    }
}
