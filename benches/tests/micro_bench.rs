//! `micro-bench` runs every case and writes well-formed JSON. Only the structure is checked,
//! never speed.

use std::process::Command;

use serde_json::Value;

#[test]
fn every_case_runs_and_reports() {
    let dir = tempfile::tempdir().expect("tempdir");
    let json = dir.path().join("micro.json");
    let out = Command::new(env!("CARGO_BIN_EXE_micro-bench"))
        .args(["--reps", "1", "--min-ms", "1", "--dir"])
        .arg(dir.path().join("data"))
        .arg("--json")
        .arg(&json)
        .output()
        .expect("run micro-bench");
    assert!(
        out.status.success(),
        "micro-bench failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Value =
        serde_json::from_slice(&std::fs::read(&json).expect("json written")).expect("valid JSON");
    let results = v["results"].as_array().expect("results array");
    let names: Vec<&str> = results.iter().filter_map(|r| r["name"].as_str()).collect();
    for want in [
        "decode Produce",
        "decode Fetch",
        "encode Fetch",
        "crc32c",
        "append",
    ] {
        assert!(
            names.iter().any(|n| n.contains(want)),
            "no {want} case in {names:?}"
        );
    }
    for r in results {
        let ns = r["ns_per_op"].as_f64().expect("ns_per_op");
        assert!(ns > 0.0 && ns.is_finite(), "{r}");
        // Recording metrics moves no payload: that case alone reports 0 bytes.
        let moves_bytes = !r["name"]
            .as_str()
            .is_some_and(|n| n.starts_with("metrics:"));
        assert!(
            r["bytes_per_op"]
                .as_u64()
                .is_some_and(|b| b > 0 || !moves_bytes),
            "{r}"
        );
    }
}
