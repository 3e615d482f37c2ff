//! Workloads: a TOML file, overridden field by field from the command line.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// How producers key their messages.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Keys {
    /// No key: librdkafka's partitioner spreads messages over the partitions.
    None,
    /// Each producer cycles through keys `0..n`.
    RoundRobin(u64),
    /// A fresh random 8-byte key per message.
    Random,
}

impl FromStr for Keys {
    type Err = String;

    fn from_str(s: &str) -> Result<Keys, String> {
        let s = s.trim();
        match s {
            "none" => Ok(Keys::None),
            "random" => Ok(Keys::Random),
            _ => {
                let n = s.strip_prefix("round-robin:").ok_or_else(|| {
                    format!("keys: expected none, random or round-robin:N, got {s:?}")
                })?;
                let n: u64 = n
                    .parse()
                    .map_err(|e| format!("keys: bad key count in {s:?}: {e}"))?;
                if n == 0 {
                    return Err("keys: round-robin needs at least one key".into());
                }
                Ok(Keys::RoundRobin(n))
            }
        }
    }
}

impl fmt::Display for Keys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Keys::None => write!(f, "none"),
            Keys::RoundRobin(n) => write!(f, "round-robin:{n}"),
            Keys::Random => write!(f, "random"),
        }
    }
}

impl Serialize for Keys {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_string())
    }
}

impl<'de> Deserialize<'de> for Keys {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Keys, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// One workload. Every field has a default, so a file may set only what it changes.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Workload {
    /// A label for reports.
    pub name: String,
    /// Topic to produce to; empty = `sluice-bench-<name>-<unix seconds>`, fresh per run.
    pub topic: String,
    pub partitions: i32,
    /// Bytes of value per message (at least 8: the intended send time is in the first 8).
    pub message_size: usize,
    pub keys: Keys,
    /// Producer clients, each on its own thread with its own share of the rate.
    pub producers: usize,
    /// Consumer clients; the partitions are dealt out among them (assign, no group).
    pub consumers: usize,
    /// Total target rate over all producers, messages per second.
    pub rate: f64,
    /// Seconds measured, after the warm-up.
    pub duration_secs: f64,
    /// Seconds of traffic before measuring starts (sent, not recorded).
    pub warmup_secs: f64,
    /// Producer `acks`: "all", "1" or "0".
    pub acks: String,
    /// Producer `compression.type`: none, gzip, snappy, lz4, zstd.
    pub compression: String,
    pub linger_ms: f64,
    /// Producer `batch.size` in bytes.
    pub batch_size: u64,
    /// Extra librdkafka properties for producers (applied last).
    pub producer_config: BTreeMap<String, String>,
    /// Extra librdkafka properties for consumers (applied last).
    pub consumer_config: BTreeMap<String, String>,
}

impl Default for Workload {
    fn default() -> Workload {
        Workload {
            name: "default".into(),
            topic: String::new(),
            partitions: 1,
            message_size: 1024,
            keys: Keys::None,
            producers: 1,
            consumers: 1,
            rate: 1000.0,
            duration_secs: 10.0,
            warmup_secs: 2.0,
            acks: "all".into(),
            compression: "none".into(),
            linger_ms: 1.0,
            batch_size: 131_072,
            producer_config: BTreeMap::new(),
            consumer_config: BTreeMap::new(),
        }
    }
}

impl Workload {
    pub fn from_toml(text: &str) -> Result<Workload, String> {
        toml::from_str(text).map_err(|e| e.to_string())
    }

    pub fn validate(&self) -> Result<(), String> {
        let mut bad = Vec::new();
        if self.partitions < 1 {
            bad.push("partitions must be ≥ 1");
        }
        if self.message_size < 8 {
            bad.push("message_size must be ≥ 8 (the payload carries an 8-byte timestamp)");
        }
        if self.producers < 1 {
            bad.push("producers must be ≥ 1");
        }
        if self.consumers < 1 {
            bad.push("consumers must be ≥ 1");
        }
        if !(self.rate > 0.0 && self.rate.is_finite()) {
            bad.push("rate must be > 0");
        }
        if !(self.duration_secs > 0.0 && self.duration_secs.is_finite()) {
            bad.push("duration_secs must be > 0");
        }
        if !(self.warmup_secs >= 0.0 && self.warmup_secs.is_finite()) {
            bad.push("warmup_secs must be ≥ 0");
        }
        if !["all", "-1", "0", "1"].contains(&self.acks.as_str()) {
            bad.push("acks must be all, -1, 0 or 1");
        }
        if bad.is_empty() {
            Ok(())
        } else {
            Err(bad.join("; "))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_parse_and_print() {
        for s in ["none", "random", "round-robin:7"] {
            assert_eq!(s.parse::<Keys>().unwrap().to_string(), s);
        }
        assert!("round-robin:0".parse::<Keys>().is_err());
        assert!("sticky".parse::<Keys>().is_err());
    }

    #[test]
    fn shipped_workloads_parse() {
        for text in [
            include_str!("../../../workloads/smoke.toml"),
            include_str!("../../../workloads/omb-1topic-16p-1kb.toml"),
        ] {
            let w = Workload::from_toml(text).unwrap();
            w.validate().unwrap();
        }
        let w = Workload::from_toml("partitions = 3\nkeys = \"round-robin:4\"").unwrap();
        assert_eq!(w.partitions, 3);
        assert_eq!(w.keys, Keys::RoundRobin(4));
        assert_eq!(w.producers, 1);
        assert!(Workload::from_toml("partitons = 3").is_err());
    }
}
