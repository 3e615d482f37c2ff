//! Bad input over raw TCP: each case sends something a broker must survive, checks the
//! broker's answer (a Kafka error code or a closed connection, DESIGN.md §7), and then
//! proves the broker still serves: it is alive, answers ApiVersions on a new raw connection,
//! and a real rdkafka client can produce and consume.
//!
//! Run against any broker with `SLUICE_BOOTSTRAP=host:port`; see `common/mod.rs`.

mod common;

use std::io::Write;
use std::net::TcpStream;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use common::*;
use kafka_protocol::messages::{ApiVersionsResponse, ProduceResponse};
use kafka_protocol::protocol::Encodable;
use rdkafka::Message;

const TEST_LIMIT: Duration = Duration::from_secs(60);
/// How long the broker may take to close a connection after bad input.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(10);
/// Kafka's default `socket.request.max.bytes`.
const SOCKET_REQUEST_MAX_BYTES: i32 = 100 * 1024 * 1024;
/// Kafka's default `message.max.bytes` (1 MiB + 12).
const MESSAGE_MAX_BYTES: usize = 1_048_588;

const UNSUPPORTED_VERSION: i16 = 35;
const CORRUPT_MESSAGE: i16 = 2;
const MESSAGE_TOO_LARGE: i16 = 10;
const INVALID_RECORD: i16 = 87;

/// A started broker plus a 2-partition topic for the round-trip check.
struct Fixture {
    broker: Broker,
    topic: String,
}

impl Fixture {
    fn new(name: &str) -> Fixture {
        let broker = Broker::start();
        let topic = unique_name(&format!("bad-{name}"));
        create_topic(broker.bootstrap(), &topic, 2, &[]);
        Fixture { broker, topic }
    }

    fn connect(&self) -> TcpStream {
        connect(self.broker.addr(), Duration::from_secs(10)).expect("connect")
    }

    /// The broker process lives, answers ApiVersions on a new connection, and serves a real
    /// client.
    fn assert_still_serves(&self) {
        self.broker.assert_alive();
        assert_api_versions_ok(self.broker.addr());
        rdkafka_round_trip(self.broker.bootstrap(), &self.topic);
        self.broker.assert_alive();
    }
}

/// Sends `bytes` on a fresh connection and asserts the broker closes it.
fn expect_close_after(fx: &Fixture, what: &str, bytes: &[u8]) -> Closed {
    let mut s = fx.connect();
    write_tolerant(&mut s, bytes);
    match wait_closed(&mut s, CLOSE_TIMEOUT) {
        Ok(c) => c,
        Err(e) => panic!("{what}: broker did not close the connection: {e}"),
    }
}

/// error code and base offset per partition of the one topic in a Produce response.
fn partition_results(resp: &ProduceResponse, topic: &str) -> Vec<(i32, i16, i64)> {
    assert_eq!(resp.responses.len(), 1, "one topic in the response");
    let t = &resp.responses[0];
    assert_eq!(t.name.0.as_str(), topic);
    let mut v: Vec<_> = t
        .partition_responses
        .iter()
        .map(|p| (p.index, p.error_code, p.base_offset))
        .collect();
    v.sort();
    if v.iter().any(|(_, e, _)| *e != 0) {
        for p in &t.partition_responses {
            eprintln!(
                "partition {}: error {} {:?} record errors {:?}",
                p.index,
                p.error_code,
                p.error_message.as_ref().map(|m| m.as_str()),
                p.record_errors
                    .iter()
                    .map(|r| (
                        r.batch_index,
                        r.batch_index_error_message
                            .as_ref()
                            .map(|m| m.as_str().to_string())
                    ))
                    .collect::<Vec<_>>()
            );
        }
    }
    v
}

#[test]
fn garbage_bytes() {
    run_bounded("garbage_bytes", TEST_LIMIT, || {
        let fx = Fixture::new("garbage");
        // An HTTP request: its first four bytes read as a ~1.1 GiB frame length.
        expect_close_after(
            &fx,
            "HTTP request",
            b"GET / HTTP/1.1\r\nHost: sluice\r\n\r\n",
        );
        // A well-sized frame of junk: api key 0xABAB (negative, unknown).
        expect_close_after(&fx, "junk frame", &frame(&[0xAB; 64]));
        // Pseudo-random bytes, then our side closes; whatever the broker made of them,
        // it must go on serving.
        let mut x: u32 = 0x1234_5678;
        let junk: Vec<u8> = (0..64 * 1024)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 17;
                x ^= x << 5;
                x as u8
            })
            .collect();
        let mut s = fx.connect();
        write_tolerant(&mut s, &junk);
        drop(s);
        // Garbage after a valid request on the same connection: the valid one is answered.
        let mut s = fx.connect();
        let r: ApiVersionsResponse = send_request(&mut s, &api_versions_request(), 3);
        assert_eq!(r.error_code, 0);
        write_tolerant(&mut s, &frame(&[0xAB; 64]));
        wait_closed(&mut s, CLOSE_TIMEOUT).expect("junk after a valid request closes");
        fx.assert_still_serves();
    });
}

#[test]
fn negative_frame_length() {
    run_bounded("negative_frame_length", TEST_LIMIT, || {
        let fx = Fixture::new("negative");
        for len in [-1i32, -16, i32::MIN] {
            let mut b = len.to_be_bytes().to_vec();
            b.extend_from_slice(&[0u8; 32]);
            expect_close_after(&fx, &format!("frame length {len}"), &b);
        }
        fx.assert_still_serves();
    });
}

#[test]
fn oversized_frame_length() {
    run_bounded("oversized_frame_length", TEST_LIMIT, || {
        let fx = Fixture::new("oversized");
        for len in [SOCKET_REQUEST_MAX_BYTES + 1, 200 * 1024 * 1024, i32::MAX] {
            // Only the length and a few bytes: the broker must refuse without waiting for
            // (or allocating) the rest.
            let mut b = len.to_be_bytes().to_vec();
            b.extend_from_slice(&[0, 0, 0, 0, 0, 1, 0, 0, 0, 1]);
            let c = expect_close_after(&fx, &format!("frame length {len}"), &b);
            assert_eq!(
                c.bytes_before_close, 0,
                "frame length {len}: no response expected"
            );
        }
        fx.assert_still_serves();
    });
}

#[test]
fn truncated_header() {
    run_bounded("truncated_header", TEST_LIMIT, || {
        let fx = Fixture::new("truncated");
        // A frame of 3 bytes: not even api key + version + correlation id.
        expect_close_after(&fx, "3-byte frame", &[0, 0, 0, 3, 0, 18, 0]);
        // An empty frame.
        expect_close_after(&fx, "0-byte frame", &[0, 0, 0, 0]);
        // A header whose client id claims more bytes than the frame holds.
        let mut h = Vec::new();
        h.extend_from_slice(&18i16.to_be_bytes()); // ApiVersions
        h.extend_from_slice(&1i16.to_be_bytes()); // v1, header v1
        h.extend_from_slice(&5i32.to_be_bytes()); // correlation id
        h.extend_from_slice(&200i16.to_be_bytes()); // client id length 200 ...
        h.extend_from_slice(b"abc"); // ... but only 3 bytes
        expect_close_after(&fx, "client id past the frame end", &frame(&h));
        fx.assert_still_serves();
    });
}

#[test]
fn unknown_api_key() {
    run_bounded("unknown_api_key", TEST_LIMIT, || {
        let fx = Fixture::new("unknown-api");
        for key in [999i16, 32767, -1] {
            let f = raw_request_frame(key, 0, 11, 1, &[]);
            expect_close_after(&fx, &format!("api key {key}"), &f);
        }
        fx.assert_still_serves();
    });
}

#[test]
fn unsupported_produce_version() {
    run_bounded("unsupported_produce_version", TEST_LIMIT, || {
        let fx = Fixture::new("produce-v99");
        let batch = encode_batch(&records(1, 16));
        let req = produce_request(&fx.topic, vec![(0, batch)]);
        let mut body = BytesMut::new();
        req.encode(&mut body, 9).unwrap();
        // Produce v99 with a flexible (v2) header: the broker cannot parse the body, so it
        // closes the connection (Kafka may send an error response first).
        let f = raw_request_frame(0, 99, 12, 2, &body);
        let c = expect_close_after(&fx, "Produce v99", &f);
        if c.bytes_before_close > 0 {
            eprintln!(
                "note: {} bytes answered to Produce v99 before the close",
                c.bytes_before_close
            );
        }
        // Nothing was written.
        assert_eq!(watermarks(fx.broker.bootstrap(), &fx.topic, 0), (0, 0));
        fx.assert_still_serves();
    });
}

#[test]
fn api_versions_unsupported_version() {
    run_bounded("api_versions_unsupported_version", TEST_LIMIT, || {
        let fx = Fixture::new("apiversions-v99");
        let mut s = fx.connect();
        let mut body = BytesMut::new();
        api_versions_request().encode(&mut body, 3).unwrap();
        s.write_all(&raw_request_frame(18, 99, 4242, 2, &body))
            .unwrap();
        // Kafka answers an ApiVersions request of a version it does not know with a v0
        // response (v0 response header): UNSUPPORTED_VERSION and its supported ranges.
        let f = read_frame(&mut s).expect("ApiVersions v99 is answered");
        let (corr, r) = decode_response::<ApiVersionsResponse>(f, 0);
        assert_eq!(corr, 4242, "correlation id");
        assert_eq!(r.error_code, UNSUPPORTED_VERSION, "error code");
        assert!(
            !r.api_keys.is_empty(),
            "the answer lists the supported APIs"
        );
        // Kafka lists only ApiVersions itself here; listing every API is fine too.
        let av = r
            .api_keys
            .iter()
            .find(|k| k.api_key == 18)
            .expect("ApiVersions listed");
        assert!(
            av.min_version == 0 && av.max_version >= 3,
            "ApiVersions range {}..{}",
            av.min_version,
            av.max_version
        );
        // The connection stays usable: the client retries with a version from the list.
        let r: ApiVersionsResponse = send_request(&mut s, &api_versions_request(), 3);
        assert_eq!(r.error_code, 0);
        fx.assert_still_serves();
    });
}

#[test]
fn corrupt_crc_fails_only_that_partition() {
    run_bounded("corrupt_crc_fails_only_that_partition", TEST_LIMIT, || {
        let fx = Fixture::new("crc");
        let recs = records(3, 40);
        let good = encode_batch(&recs);
        let mut bad = good.to_vec();
        // Flip a byte in the last record's value: covered by the CRC (which starts at the
        // attributes, byte 21), not by any length field.
        let last = bad.len() - 3;
        bad[last] ^= 0x5A;
        let req = produce_request(&fx.topic, vec![(0, good), (1, Bytes::from(bad))]);
        let mut s = fx.connect();
        let resp = send_request(&mut s, &req, 9);
        let res = partition_results(&resp, &fx.topic);
        assert_eq!(res.len(), 2, "{res:?}");
        assert_eq!(
            (res[0].0, res[0].1),
            (0, 0),
            "the good partition succeeds: {res:?}"
        );
        assert_eq!(res[0].2, 0, "base offset of the good batch");
        assert_eq!(
            (res[1].0, res[1].1),
            (1, CORRUPT_MESSAGE),
            "the corrupt partition: {res:?}"
        );
        // The connection stays open for the next request.
        let r: ApiVersionsResponse = send_request(&mut s, &api_versions_request(), 3);
        assert_eq!(r.error_code, 0);
        let bs = fx.broker.bootstrap();
        assert_eq!(watermarks(bs, &fx.topic, 0), (0, 3), "good batch stored");
        assert_eq!(
            watermarks(bs, &fx.topic, 1),
            (0, 0),
            "corrupt batch not stored"
        );
        let read = read_to_end(bs, &fx.topic, 2, Duration::from_secs(30));
        let got: Vec<_> = read[&0]
            .iter()
            .map(|m| (m.offset(), m.payload().map(|p| p.to_vec())))
            .collect();
        let want: Vec<_> = recs
            .iter()
            .enumerate()
            .map(|(i, r)| (i as i64, r.value.as_ref().map(|v| v.to_vec())))
            .collect();
        assert_eq!(got, want, "good batch reads back");
        fx.assert_still_serves();
    });
}

#[test]
fn two_batches_in_one_partition() {
    run_bounded("two_batches_in_one_partition", TEST_LIMIT, || {
        let fx = Fixture::new("two-batches");
        // Produce v3+ allows exactly one batch per partition: INVALID_RECORD (87).
        let mut two = encode_batch(&records(2, 10)).to_vec();
        two.extend_from_slice(&encode_batch(&records(2, 10)));
        let one = encode_batch(&records(1, 10));
        let req = produce_request(&fx.topic, vec![(0, Bytes::from(two)), (1, one)]);
        let mut s = fx.connect();
        let resp = send_request(&mut s, &req, 9);
        let res = partition_results(&resp, &fx.topic);
        assert_eq!(
            (res[0].0, res[0].1),
            (0, INVALID_RECORD),
            "two batches: {res:?}"
        );
        assert_eq!(
            (res[1].0, res[1].1, res[1].2),
            (1, 0, 0),
            "one batch: {res:?}"
        );
        let bs = fx.broker.bootstrap();
        assert_eq!(
            watermarks(bs, &fx.topic, 0),
            (0, 0),
            "nothing stored from the two batches"
        );
        assert_eq!(watermarks(bs, &fx.topic, 1), (0, 1));
        fx.assert_still_serves();
    });
}

#[test]
fn batch_over_message_max_bytes() {
    run_bounded("batch_over_message_max_bytes", TEST_LIMIT, || {
        let fx = Fixture::new("too-large");
        let big = encode_batch(&records(1, MESSAGE_MAX_BYTES + 512 * 1024));
        assert!(big.len() > MESSAGE_MAX_BYTES);
        let small = encode_batch(&records(2, 10));
        let req = produce_request(&fx.topic, vec![(0, big), (1, small)]);
        let mut s = fx.connect();
        let resp = send_request(&mut s, &req, 9);
        let res = partition_results(&resp, &fx.topic);
        assert_eq!(
            (res[0].0, res[0].1),
            (0, MESSAGE_TOO_LARGE),
            "the big batch: {res:?}"
        );
        assert_eq!(
            (res[1].0, res[1].1, res[1].2),
            (1, 0, 0),
            "the small batch: {res:?}"
        );
        let bs = fx.broker.bootstrap();
        assert_eq!(watermarks(bs, &fx.topic, 0), (0, 0), "big batch not stored");
        assert_eq!(watermarks(bs, &fx.topic, 1), (0, 2), "small batch stored");
        fx.assert_still_serves();
    });
}

#[test]
fn connection_flood() {
    run_bounded("connection_flood", TEST_LIMIT, || {
        const CONNS: usize = 500;
        let fx = Fixture::new("flood");
        let addr = fx.broker.addr();
        // Open them all before using any.
        let start = Instant::now();
        let mut conns: Vec<TcpStream> = (0..CONNS)
            .map(|i| {
                connect(addr, Duration::from_secs(20))
                    .unwrap_or_else(|e| panic!("connection {i}: {e}"))
            })
            .collect();
        eprintln!(
            "{CONNS} connections open in {:?} ({} fds)",
            start.elapsed(),
            open_fds()
        );
        // Every one of them is served.
        let req = api_versions_request();
        for (i, s) in conns.iter_mut().enumerate() {
            s.write_all(&request_frame(&req, 0, i as i32))
                .unwrap_or_else(|e| panic!("write {i}: {e}"));
        }
        for (i, s) in conns.iter_mut().enumerate() {
            let f = read_frame(s)
                .unwrap_or_else(|e| panic!("connection {i}: no ApiVersions answer: {e}"));
            let (corr, r) = decode_response::<ApiVersionsResponse>(f, 0);
            assert_eq!((corr, r.error_code), (i as i32, 0), "connection {i}");
        }
        drop(conns);
        // Another wave that is opened and dropped at once, half of them mid-request.
        let half = frame(&[0, 18, 0, 3]); // claims 4 bytes, then a partial header follows
        let wave: Vec<TcpStream> = (0..CONNS)
            .map(|i| {
                let mut s = connect(addr, Duration::from_secs(20))
                    .unwrap_or_else(|e| panic!("connection {i}: {e}"));
                if i % 2 == 0 {
                    write_tolerant(&mut s, &half[..6]);
                }
                s
            })
            .collect();
        drop(wave);
        fx.assert_still_serves();
    });
}
