//! The inter-broker RPC listener of a running `sluice` and the start-up contract around it
//! (`--rpc-listen`, `--advertised-rpc-listener`, `--seeds`): a one-node cluster names itself
//! as its only seed and serves; junk on the RPC port closes that connection only; seeds
//! that cannot form this broker's cluster are refused at start with a message saying why.

mod common;

use std::process::Command;
use std::time::Duration;

use common::*;

/// A broker that listens for RPC on a free port and is its own only seed.
fn one_node_cluster() -> (Broker, u16) {
    let (rpc, _) = free_port_pair();
    let addr = format!("127.0.0.1:{rpc}");
    let broker = Broker::start_with(BrokerOpts {
        extra_args: vec![
            "--rpc-listen".into(),
            addr.clone(),
            "--advertised-rpc-listener".into(),
            addr.clone(),
            "--seeds".into(),
            addr,
        ],
        ..BrokerOpts::default()
    });
    (broker, rpc)
}

#[test]
fn a_one_node_cluster_serves_and_junk_on_its_rpc_port_closes_only_that_connection() {
    run_bounded("rpc_junk", Duration::from_secs(120), || {
        let (broker, rpc) = one_node_cluster();
        let topic = unique_name("rpc");
        create_topic(broker.bootstrap(), &topic, 2, &[]);
        rdkafka_round_trip(broker.bootstrap(), &topic);
        // A frame length past the RPC limit, an HTTP request, and a well-framed body with
        // the wrong magic: each connection is closed by the broker.
        for junk in [
            &[0xFF, 0xFF, 0xFF, 0xFF, 1, 2, 3][..],
            b"GET / HTTP/1.1\r\nHost: sluice\r\n\r\n",
            &[0, 0, 0, 8, b'X', b'Y', 1, 0, 0, 0, 0, 0][..],
        ] {
            let addr = format!("127.0.0.1:{rpc}").parse().unwrap();
            let mut s = connect(addr, Duration::from_secs(10)).expect("connect to the RPC port");
            write_tolerant(&mut s, junk);
            wait_closed(&mut s, Duration::from_secs(20))
                .unwrap_or_else(|e| panic!("RPC junk {junk:?} left the connection open: {e}"));
        }
        broker.assert_alive();
        rdkafka_round_trip(broker.bootstrap(), &topic);
    });
}

fn start_fails(args: &[&str]) -> String {
    let dir = tempfile::tempdir().unwrap();
    let (port, rpc) = free_port_pair();
    let out = Command::new(env!("CARGO_BIN_EXE_sluice"))
        .args(["start", "--data-dir"])
        .arg(dir.path())
        .args(["--listen", &format!("127.0.0.1:{port}")])
        .args(["--rpc-listen", &format!("127.0.0.1:{rpc}")])
        .args(args)
        .output()
        .expect("run sluice");
    assert_eq!(
        out.status.code(),
        Some(2),
        "start must fail with a usage error"
    );
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn seeds_that_are_not_addresses_are_refused_at_start() {
    let bad = start_fails(&["--seeds", "not-an-address"]);
    assert!(bad.contains("not HOST:PORT"), "{bad}");
}
