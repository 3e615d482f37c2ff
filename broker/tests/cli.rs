//! The `sluice topic|group|cluster` client commands, run as the real binary against a real
//! broker: what they print (text and JSON), what they change, and how they fail.
//!
//! The same tests run against Apache Kafka with
//! `SLUICE_TEST_KAFKA_SH=benches/kafka/kafka.sh cargo test -p sluice-broker --test cli`
//! (see the harness in common/mod.rs); they assert nothing Sluice-specific, except the
//! health test, which makes a partition offline by damaging Sluice's data directory and
//! does nothing under Kafka.

mod common;

use std::io::{Read, Write};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::*;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use serde_json::Value;

/// A whole test, broker start included.
const TEST_LIMIT: Duration = Duration::from_secs(180);
/// One CLI invocation; they are short unless a consume waits for records that never come.
const CLI_LIMIT: Duration = Duration::from_secs(60);

/// Runs `sluice --brokers <bs> <args>` with `stdin`, bounded by `CLI_LIMIT`.
fn sluice_in(bs: &str, args: &[&str], stdin: &str) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_sluice"))
        .arg("--brokers")
        .arg(bs)
        .args(args)
        .env_remove("SLUICE_BROKERS")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn sluice");
    let mut input = child.stdin.take().unwrap();
    let stdin = stdin.to_string();
    let writer = std::thread::spawn(move || {
        let _ = input.write_all(stdin.as_bytes());
    });
    let mut out = child.stdout.take().unwrap();
    let mut err = child.stderr.take().unwrap();
    let reader = std::thread::spawn(move || {
        let mut b = Vec::new();
        out.read_to_end(&mut b).unwrap();
        b
    });
    let err_reader = std::thread::spawn(move || {
        let mut b = Vec::new();
        err.read_to_end(&mut b).unwrap();
        b
    });
    let deadline = Instant::now() + CLI_LIMIT;
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("sluice {args:?} did not finish within {CLI_LIMIT:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    writer.join().unwrap();
    Output {
        status,
        stdout: reader.join().unwrap(),
        stderr: err_reader.join().unwrap(),
    }
}

fn sluice(bs: &str, args: &[&str]) -> Output {
    sluice_in(bs, args, "")
}

/// Runs a command that must succeed; returns its stdout.
fn ok(bs: &str, args: &[&str]) -> String {
    ok_in(bs, args, "")
}

fn ok_in(bs: &str, args: &[&str], stdin: &str) -> String {
    let o = sluice_in(bs, args, stdin);
    assert!(
        o.status.success(),
        "sluice {args:?} failed ({}): {}",
        o.status,
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8(o.stdout).expect("utf-8 stdout")
}

/// Runs a command that must fail; returns its one-line stderr.
fn fails(bs: &str, args: &[&str]) -> String {
    let o = sluice(bs, args);
    assert!(
        !o.status.success(),
        "sluice {args:?} should fail; printed {}",
        String::from_utf8_lossy(&o.stdout)
    );
    let err = String::from_utf8(o.stderr).unwrap();
    assert_eq!(err.trim_end().lines().count(), 1, "one-line message: {err}");
    err
}

fn json(bs: &str, args: &[&str]) -> Value {
    let mut a = vec!["--format", "json"];
    a.extend_from_slice(args);
    serde_json::from_str(&ok(bs, &a)).expect("one JSON document")
}

/// `consume --format json` output: one object per line.
fn json_lines(out: &str) -> Vec<Value> {
    out.lines()
        .map(|l| serde_json::from_str(l).expect("a JSON object per line"))
        .collect()
}

#[test]
fn topic_admin_commands() {
    run_bounded("topic_admin_commands", TEST_LIMIT, || {
        let b = Broker::start();
        let bs = b.bootstrap();
        let t = unique_name("cli-admin");

        let out = ok(
            bs,
            &[
                "topic",
                "create",
                &t,
                "-p",
                "2",
                "-r",
                "1",
                "-c",
                "retention.ms=3600000",
            ],
        );
        assert!(out.contains(&t) && out.contains("2 partitions"), "{out}");
        let err = fails(bs, &["topic", "create", &t, "-p", "2"]);
        assert!(err.contains("TOPIC_ALREADY_EXISTS"), "{err}");

        let list = ok(bs, &["topic", "list"]);
        let row = list.lines().find(|l| l.starts_with(&t)).expect("listed");
        assert_eq!(
            row.split_whitespace().collect::<Vec<_>>(),
            [&t[..], "2", "1"]
        );
        assert!(list.starts_with("NAME"), "a table with a header: {list}");
        let listed = json(bs, &["topic", "list"]);
        let entry = listed
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["name"] == t.as_str())
            .expect("in the JSON list");
        assert_eq!(entry["partitions"], 2);

        let d = json(bs, &["topic", "describe", &t]);
        assert_eq!(d["partitions"].as_array().unwrap().len(), 2);
        assert_eq!(d["partitions"][1]["partition"], 1);
        assert_eq!(d["partitions"][0]["high_watermark"], 0);
        assert_eq!(d["configs"]["retention.ms"]["value"], "3600000");
        assert_eq!(
            d["configs"]["retention.ms"]["source"],
            "DYNAMIC_TOPIC_CONFIG"
        );
        let text = ok(bs, &["topic", "describe", &t]);
        assert!(
            text.contains("HIGH-WATERMARK") && text.contains("retention.ms"),
            "{text}"
        );

        ok(
            bs,
            &[
                "topic",
                "alter-config",
                &t,
                "--set",
                "retention.ms=7200000",
                "cleanup.policy=compact",
            ],
        );
        let d = json(bs, &["topic", "describe", &t]);
        assert_eq!(d["configs"]["retention.ms"]["value"], "7200000");
        assert_eq!(d["configs"]["cleanup.policy"]["value"], "compact");
        ok(
            bs,
            &["topic", "alter-config", &t, "--delete", "retention.ms"],
        );
        let d = json(bs, &["topic", "describe", &t]);
        assert_ne!(
            d["configs"]["retention.ms"]["source"],
            "DYNAMIC_TOPIC_CONFIG"
        );
        assert_eq!(d["configs"]["cleanup.policy"]["value"], "compact");
        let err = fails(
            bs,
            &["topic", "alter-config", &t, "--set", "no.such.config=1"],
        );
        assert!(
            err.contains("refused by the broker: INVALID_CONFIG"),
            "{err}"
        );

        let added = json(bs, &["topic", "add-partitions", &t, "--num", "3"]);
        assert_eq!(added["partitions"], 5);
        let d = json(bs, &["topic", "describe", &t]);
        assert_eq!(d["partitions"].as_array().unwrap().len(), 5);

        let t2 = unique_name("cli-admin-second");
        ok(bs, &["topic", "create", &t2]);
        let out = ok(bs, &["topic", "delete", &t, &t2]);
        assert_eq!(out, format!("deleted topic {t}\ndeleted topic {t2}\n"));
        let deadline = Instant::now() + Duration::from_secs(30);
        while ok(bs, &["topic", "list"])
            .lines()
            .any(|l| l.starts_with(&t))
        {
            assert!(Instant::now() < deadline, "deleted topic still listed");
            std::thread::sleep(Duration::from_millis(100));
        }
        for args in [
            &["topic", "describe", &t][..],
            &["topic", "delete", &t][..],
            &["topic", "consume", &t, "-n", "1"][..],
            &["topic", "add-partitions", &t, "--num", "1"][..],
        ] {
            let err = fails(bs, args);
            assert!(
                err.contains("UNKNOWN_TOPIC_OR_PARTITION"),
                "{args:?}: {err}"
            );
        }
    });
}

#[test]
fn produce_and_consume() {
    run_bounded("produce_and_consume", TEST_LIMIT, || {
        let b = Broker::start();
        let bs = b.bootstrap();
        let t = unique_name("cli-pc");
        ok(bs, &["topic", "create", &t, "-p", "1", "-r", "1"]);

        let produced = json_in(
            bs,
            &["topic", "produce", &t, "--key-delim", ":"],
            "k0:v0\nk1:v1\nk2:with:colons\n",
        );
        assert_eq!(produced["records"], 3);
        assert_eq!(produced["partitions"][0]["first_offset"], 0);
        assert_eq!(produced["partitions"][0]["last_offset"], 2);
        let err = sluice_in(
            bs,
            &["topic", "produce", &t, "--key-delim", ":"],
            "no delimiter\n",
        );
        assert!(!err.status.success());
        assert!(String::from_utf8_lossy(&err.stderr).contains("line 1"));

        let piped = sluice(bs, &["topic", "consume", &t, "-n", "3"]);
        assert!(piped.status.success());
        assert!(
            piped.stderr.is_empty(),
            "no progress when stderr is not a terminal"
        );
        let text = String::from_utf8(piped.stdout).unwrap();
        let rows: Vec<Vec<&str>> = text.lines().map(|l| l.split('\t').collect()).collect();
        assert_eq!(rows.len(), 3, "{text}");
        for (i, r) in rows.iter().enumerate() {
            assert_eq!(r[0], "0");
            assert_eq!(r[1], i.to_string());
            assert_eq!(r[3], format!("k{i}"));
        }
        assert_eq!(rows[2][4], "with:colons");

        let before_second = now_ms();
        std::thread::sleep(Duration::from_millis(20));
        ok_in(bs, &["topic", "produce", &t, "-k", "fixed"], "a\nb\n");
        let all = json_lines(&ok(
            bs,
            &["--format", "json", "topic", "consume", &t, "-n", "5"],
        ));
        assert_eq!(all.len(), 5);
        for (i, r) in all.iter().enumerate() {
            assert_eq!(r["offset"], i as i64);
            assert_eq!(r["partition"], 0);
            assert_eq!(r["topic"], t.as_str());
            assert!(r["timestamp"].as_i64().unwrap() > 0);
            assert_eq!(r["headers"], serde_json::json!([]));
        }
        assert_eq!(all[1]["key"], "k1");
        assert_eq!(all[1]["value"], "v1");
        assert_eq!(all[3]["key"], "fixed");
        assert_eq!(all[4]["value"], "b");

        let from_3 = json_lines(&ok(
            bs,
            &[
                "--format", "json", "topic", "consume", &t, "-o", "3", "-n", "2",
            ],
        ));
        assert_eq!(
            from_3
                .iter()
                .map(|r| r["offset"].as_i64().unwrap())
                .collect::<Vec<_>>(),
            [3, 4]
        );
        let at = format!("@{before_second}");
        let by_time = json_lines(&ok(
            bs,
            &[
                "--format", "json", "topic", "consume", &t, "-o", &at, "-n", "1",
            ],
        ));
        assert_eq!(by_time[0]["offset"], 3, "first record at or after {at}");
        assert_eq!(by_time[0]["value"], "a");

        // -o end waits for what comes next: start it, then produce.
        let bs2 = bs.to_string();
        let t2 = t.clone();
        let tail = std::thread::spawn(move || {
            ok(
                &bs2,
                &[
                    "--format", "json", "topic", "consume", &t2, "-o", "end", "-n", "1",
                ],
            )
        });
        let deadline = Instant::now() + Duration::from_secs(30);
        while !tail.is_finished() {
            assert!(
                Instant::now() < deadline,
                "consume -o end never saw the new record"
            );
            ok_in(bs, &["topic", "produce", &t, "-p", "0"], "late\n");
            std::thread::sleep(Duration::from_millis(300));
        }
        let late = json_lines(&tail.join().unwrap());
        assert_eq!(late[0]["value"], "late");
        assert!(late[0]["offset"].as_i64().unwrap() >= 5);

        // Without -n it keeps following: still running after printing what came.
        let mut follower = Command::new(env!("CARGO_BIN_EXE_sluice"))
            .args(["--brokers", bs, "topic", "consume", &t, "-o", "end"])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn follower");
        let (tx, rx) = std::sync::mpsc::channel();
        let stdout = follower.stdout.take().unwrap();
        std::thread::spawn(move || {
            use std::io::BufRead;
            for line in std::io::BufReader::new(stdout).lines() {
                if tx.send(line.unwrap()).is_err() {
                    break;
                }
            }
        });
        let deadline = Instant::now() + Duration::from_secs(30);
        let line = loop {
            ok_in(bs, &["topic", "produce", &t, "-p", "0"], "followed\n");
            if let Ok(l) = rx.recv_timeout(Duration::from_millis(300)) {
                break l;
            }
            assert!(Instant::now() < deadline, "the follower printed nothing");
        };
        assert!(line.ends_with("\tfollowed"), "{line}");
        std::thread::sleep(Duration::from_millis(500));
        assert!(follower.try_wait().unwrap().is_none(), "still following");
        follower.kill().unwrap();
        follower.wait().unwrap();

        // Keys spread over partitions as Kafka's partitioner puts them; each partition in order.
        let t3 = unique_name("cli-keys");
        ok(bs, &["topic", "create", &t3, "-p", "3", "-r", "1"]);
        let lines: String = (0..30).map(|i| format!("key{}|{i}\n", i % 7)).collect();
        ok_in(bs, &["topic", "produce", &t3, "--key-delim", "|"], &lines);
        let got = json_lines(&ok(
            bs,
            &["--format", "json", "topic", "consume", &t3, "-n", "30"],
        ));
        assert_eq!(got.len(), 30);
        let mut seen = std::collections::HashMap::new();
        for r in &got {
            let key = r["key"].as_str().unwrap().to_string();
            let p = r["partition"].as_i64().unwrap();
            assert_eq!(
                *seen.entry(key.clone()).or_insert(p),
                p,
                "one partition per key"
            );
        }
        assert!(
            seen.values()
                .collect::<std::collections::HashSet<_>>()
                .len()
                > 1
        );
        for p in 0..3 {
            let offs: Vec<i64> = got
                .iter()
                .filter(|r| r["partition"] == p)
                .map(|r| r["offset"].as_i64().unwrap())
                .collect();
            assert_eq!(
                offs,
                (0..offs.len() as i64).collect::<Vec<_>>(),
                "partition {p} in order"
            );
        }
        let one = json_lines(&ok(
            bs,
            &[
                "--format", "json", "topic", "consume", &t3, "-p", "2", "-n", "1",
            ],
        ));
        assert_eq!(one[0]["partition"], 2);
        let err = fails(bs, &["topic", "consume", &t3, "-p", "7", "-n", "1"]);
        assert!(err.contains("UNKNOWN_TOPIC_OR_PARTITION"), "{err}");
    });
}

fn json_in(bs: &str, args: &[&str], stdin: &str) -> Value {
    let mut a = vec!["--format", "json"];
    a.extend_from_slice(args);
    serde_json::from_str(&ok_in(bs, &a, stdin)).expect("one JSON document")
}

fn offsets_of(describe: &Value) -> Vec<(i64, i64, i64)> {
    describe["offsets"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| {
            (
                o["committed_offset"].as_i64().unwrap(),
                o["log_end_offset"].as_i64().unwrap(),
                o["lag"].as_i64().unwrap(),
            )
        })
        .collect()
}

#[test]
fn group_commands() {
    run_bounded("group_commands", TEST_LIMIT, || {
        let b = Broker::start();
        let bs = b.bootstrap();
        let t = unique_name("cli-group");
        let g = unique_name("cli-g");
        ok(bs, &["topic", "create", &t, "-p", "1", "-r", "1"]);
        let lines: String = (0..10).map(|i| format!("r{i}\n")).collect();
        ok_in(bs, &["topic", "produce", &t], &lines);

        let first = json_lines(&ok(
            bs,
            &[
                "--format", "json", "topic", "consume", &t, "-g", &g, "-n", "4",
            ],
        ));
        assert_eq!(first.len(), 4);
        let d = json(bs, &["group", "describe", &g]);
        assert_eq!(d["group"], g.as_str());
        assert_eq!(d["members"], serde_json::json!([]));
        assert_eq!(offsets_of(&d), [(4, 10, 6)]);
        assert_eq!(d["total_lag"], 6);
        let text = ok(bs, &["group", "describe", &g]);
        let row = text
            .lines()
            .find(|l| l.starts_with(&t))
            .expect("offset row");
        assert_eq!(
            row.split_whitespace().take(5).collect::<Vec<_>>(),
            [&t[..], "0", "4", "10", "6"]
        );

        // Without -o, -g resumes where the group left off.
        let next = json_lines(&ok(
            bs,
            &[
                "--format", "json", "topic", "consume", &t, "-g", &g, "-n", "2",
            ],
        ));
        assert_eq!(next[0]["offset"], 4);
        assert_eq!(
            offsets_of(&json(bs, &["group", "describe", &g])),
            [(6, 10, 4)]
        );

        let listed = json(bs, &["group", "list"]);
        assert!(
            listed
                .as_array()
                .unwrap()
                .iter()
                .any(|e| e["group"] == g.as_str()),
            "{listed}"
        );
        assert!(ok(bs, &["group", "list"])
            .lines()
            .any(|l| l.starts_with(&g)));

        let seek = json(bs, &["group", "seek", &g, "--topic", &t, "--to", "start"]);
        assert_eq!(seek["offsets"][0]["offset"], 0);
        assert_eq!(
            offsets_of(&json(bs, &["group", "describe", &g])),
            [(0, 10, 10)]
        );
        ok(bs, &["group", "seek", &g, "--topic", &t, "--to", "end"]);
        assert_eq!(
            offsets_of(&json(bs, &["group", "describe", &g])),
            [(10, 10, 0)]
        );
        ok(bs, &["group", "seek", &g, "--topic", &t, "--to", "7"]);
        assert_eq!(
            offsets_of(&json(bs, &["group", "describe", &g])),
            [(7, 10, 3)]
        );
        let at = format!("@{}", first[2]["timestamp"].as_i64().unwrap());
        let seek = json(bs, &["group", "seek", &g, "--topic", &t, "--to", &at]);
        let o = seek["offsets"][0]["offset"].as_i64().unwrap();
        assert!(
            o <= 2,
            "the first record at or after record 2's time is at most offset 2: {o}"
        );

        // An active member: seek refuses, describe shows it and its assignment.
        let active = unique_name("cli-active");
        let c: BaseConsumer = client_config(bs)
            .set("group.id", &active)
            .set("enable.auto.commit", "false")
            .set("auto.offset.reset", "earliest")
            .create()
            .expect("consumer");
        c.subscribe(&[&t]).unwrap();
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let _ = c.poll(Duration::from_millis(100));
            // Until the consumer's join reaches it, Kafka knows no such group.
            let o = sluice(bs, &["--format", "json", "group", "describe", &active]);
            if !o.status.success() {
                let err = String::from_utf8_lossy(&o.stderr);
                assert!(err.contains("GROUP_ID_NOT_FOUND"), "{err}");
                assert!(Instant::now() < deadline, "consumer never joined: {err}");
                continue;
            }
            let d: Value = serde_json::from_slice(&o.stdout).expect("one JSON document");
            if d["state"] == "Stable" && !d["members"][0]["assigned"].as_array().unwrap().is_empty()
            {
                assert_eq!(d["members"][0]["assigned"][0]["topic"], t.as_str());
                break;
            }
            assert!(Instant::now() < deadline, "consumer never joined: {d}");
        }
        let err = fails(
            bs,
            &["group", "seek", &active, "--topic", &t, "--to", "start"],
        );
        assert!(err.contains("only works on an empty group"), "{err}");
        let err = fails(bs, &["group", "delete", &active]);
        assert!(err.contains("NON_EMPTY_GROUP"), "{err}");
        drop(c);

        let out = ok(bs, &["group", "delete", &g]);
        assert_eq!(out.trim(), format!("deleted group {g}"));
        let err = fails(bs, &["group", "describe", &g]);
        assert!(err.contains("GROUP_ID_NOT_FOUND"), "{err}");
        let err = fails(bs, &["group", "delete", &g]);
        assert!(err.contains("GROUP_ID_NOT_FOUND"), "{err}");
    });
}

#[test]
fn cluster_commands_and_connection_errors() {
    run_bounded("cluster_commands", TEST_LIMIT, || {
        let b = Broker::start();
        let bs = b.bootstrap();
        let info = json(bs, &["cluster", "info"]);
        let brokers = info["brokers"].as_array().unwrap();
        assert_eq!(brokers.len(), 1);
        assert_eq!(brokers[0]["port"], b.addr().port());
        assert_eq!(info["controller"], brokers[0]["id"]);
        assert!(!info["cluster_id"].as_str().unwrap().is_empty());
        let text = ok(bs, &["cluster", "info"]);
        assert!(text.starts_with("CLUSTER-ID"), "{text}");
        assert!(
            text.contains(&format!("127.0.0.1:{}", b.addr().port())),
            "{text}"
        );

        let health = json(bs, &["cluster", "health"]);
        assert_eq!(health["healthy"], true);
        assert_eq!(health["brokers_down"], serde_json::json!([]));
        assert!(ok(bs, &["cluster", "health"]).starts_with("HEALTHY                     true"));

        // The global flags also go after the command.
        let o = Command::new(env!("CARGO_BIN_EXE_sluice"))
            .args(["cluster", "info", "--format", "json", "--brokers", bs])
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        let after: Value = serde_json::from_slice(&o.stdout).expect("JSON");
        assert_eq!(after["cluster_id"], info["cluster_id"]);

        // $SLUICE_BROKERS is the default for --brokers.
        let o = Command::new(env!("CARGO_BIN_EXE_sluice"))
            .args(["cluster", "info"])
            .env("SLUICE_BROKERS", bs)
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));

        // Nobody listens on a port we just had and closed.
        let (dead, _) = free_port_pair();
        let addr = format!("127.0.0.1:{dead}");
        for args in [
            &["cluster", "info"][..],
            &["topic", "list"][..],
            &["group", "list"][..],
        ] {
            let err = fails(&addr, args);
            assert!(
                err.contains(&format!("cannot reach broker {addr}")),
                "{err}"
            );
        }
        // A second, dead bootstrap address is skipped.
        ok(&format!("{addr},{bs}"), &["topic", "list"]);
    });
}

#[test]
fn consume_decodes_compressed_batches() {
    run_bounded("consume_compressed", TEST_LIMIT, || {
        let b = Broker::start();
        let bs = b.bootstrap();
        let t = unique_name("cli-codecs");
        ok(bs, &["topic", "create", &t, "-p", "1", "-r", "1"]);
        let codecs = ["gzip", "snappy", "lz4", "zstd"];
        let mut want = Vec::new();
        for codec in codecs {
            let p: BaseProducer = producer_config(bs)
                .set("compression.codec", codec)
                .set("linger.ms", "50")
                .create()
                .expect("producer");
            for i in 0..5 {
                let v = format!("{codec}-{i}-{}", "x".repeat(200));
                p.send(
                    BaseRecord::<str, str>::to(&t)
                        .partition(0)
                        .key(codec)
                        .payload(&v),
                )
                .expect("enqueue");
                want.push((codec.to_string(), v));
            }
            p.flush(Duration::from_secs(30)).expect("flush");
        }
        let got = json_lines(&ok(
            bs,
            &["--format", "json", "topic", "consume", &t, "-n", "20"],
        ));
        let got: Vec<(String, String)> = got
            .iter()
            .map(|r| {
                (
                    r["key"].as_str().unwrap().into(),
                    r["value"].as_str().unwrap().into(),
                )
            })
            .collect();
        assert_eq!(got, want);
    });
}

#[test]
fn health_fails_on_a_leaderless_partition() {
    run_bounded("health_leaderless", TEST_LIMIT, || {
        let b = Broker::start();
        // An offline partition is made by damaging Sluice's own data directory; Kafka's
        // reaction to that differs (it stops the log dir), so this one is Sluice's.
        if !b.is_sluice() {
            return;
        }
        let bs = b.bootstrap().to_string();
        let t = unique_name("cli-offline");
        ok(&bs, &["topic", "create", &t, "-p", "2", "-r", "1"]);
        b.sigterm_and_wait();
        let dir = b.data_dir().join(format!("{t}-1"));
        std::fs::remove_dir_all(&dir).expect("remove partition dir");
        std::fs::write(&dir, b"not a directory").expect("plant a file");
        b.restart();

        let o = sluice(&bs, &["--format", "json", "cluster", "health"]);
        assert!(!o.status.success(), "an offline partition is unhealthy");
        let report: Value = serde_json::from_slice(&o.stdout).expect("the report still prints");
        assert_eq!(report["healthy"], false);
        assert_eq!(
            report["leaderless_partitions"],
            serde_json::json!([format!("{t}/1")])
        );
        let err = String::from_utf8(o.stderr).unwrap();
        assert_eq!(
            err.trim(),
            "sluice: cluster is unhealthy: 0 brokers down, 1 leaderless and 0 under-replicated partitions"
        );
        let d = json(&bs, &["topic", "describe", &t]);
        assert_eq!(d["partitions"][1]["leader"], -1);
        let err = fails(&bs, &["topic", "consume", &t, "-p", "1", "-n", "1"]);
        assert!(err.contains("LEADER_NOT_AVAILABLE"), "{err}");
    });
}

/// What the Helm chart's test pods need from a container without a shell: `topic create
/// --if-not-exists` succeeds on a re-run, and `topic produce --input` reads a file.
#[test]
fn create_if_not_exists_and_produce_from_a_file() {
    run_bounded(
        "create_if_not_exists_and_produce_from_a_file",
        TEST_LIMIT,
        || {
            let b = Broker::start();
            let bs = b.bootstrap();
            let t = unique_name("cli-file");
            let create = ["topic", "create", &t, "-p", "1", "--if-not-exists"];
            assert!(ok(bs, &create).contains("created topic"));
            assert!(ok(bs, &create).contains("already exists"));
            assert_eq!(json(bs, &create)["existed"], true);
            // Without the flag a second create is still refused.
            assert!(fails(bs, &["topic", "create", &t]).contains("TOPIC_ALREADY_EXISTS"));

            let dir = tempfile::tempdir().unwrap();
            let file = dir.path().join("records.txt");
            std::fs::write(&file, "k1:one\nk2:two\n").unwrap();
            let file = file.to_str().unwrap();
            // stdin has other lines: the file wins.
            let produced: Value = serde_json::from_str(&ok_in(
                bs,
                &[
                    "--format",
                    "json",
                    "topic",
                    "produce",
                    &t,
                    "--key-delim",
                    ":",
                    "--input",
                    file,
                ],
                "not:this\n",
            ))
            .unwrap();
            assert_eq!(produced["records"], 2);
            let out = ok(
                bs,
                &[
                    "--format", "json", "topic", "consume", &t, "-o", "start", "-n", "2",
                ],
            );
            let got: Vec<(String, String)> = json_lines(&out)
                .iter()
                .map(|r| {
                    (
                        r["key"].as_str().unwrap().to_string(),
                        r["value"].as_str().unwrap().to_string(),
                    )
                })
                .collect();
            assert_eq!(
                got,
                [("k1".into(), "one".into()), ("k2".into(), "two".into())]
            );
            let missing = dir.path().join("missing.txt");
            let err = fails(
                bs,
                &["topic", "produce", &t, "--input", missing.to_str().unwrap()],
            );
            assert!(err.contains("missing.txt"), "{err}");
        },
    );
}
