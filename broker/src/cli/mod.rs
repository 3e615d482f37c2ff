//! The `sluice topic|group|cluster` commands: an admin and console client that speaks the
//! Kafka protocol to any broker (Sluice or Apache Kafka) over blocking sockets.
//!
//! This module knows nothing of the broker's internals: it must never use shards, storage or
//! glommio, only `kafka-protocol` on the wire, so it works the same against any cluster.

mod client;
mod cluster;
mod group;
mod output;
mod topic;

use clap::{Args, Subcommand, ValueEnum};

use client::{CliError, Client, Result};

/// Used when neither `--brokers` nor `$SLUICE_BROKERS` is given.
const DEFAULT_BROKERS: &str = "127.0.0.1:9092";
/// The environment variable that gives the default `--brokers`.
const BROKERS_ENV: &str = "SLUICE_BROKERS";

/// Flags every client command takes (before or after the subcommand).
#[derive(Args)]
pub struct ClientArgs {
    /// Brokers to bootstrap from, HOST:PORT,... [default: $SLUICE_BROKERS, then 127.0.0.1:9092].
    #[arg(long, global = true, value_name = "H:P,...")]
    pub brokers: Option<String>,
    /// Output format: human tables, or JSON for scripts [default: text].
    #[arg(long, global = true, value_enum)]
    pub format: Option<Format>,
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Format {
    Text,
    Json,
}

/// The client commands, flattened into the binary's top-level subcommands.
#[derive(Subcommand)]
pub enum ClientCommand {
    /// Create, inspect, alter, delete topics; produce and consume records.
    #[command(subcommand)]
    Topic(topic::TopicCommand),
    /// List, describe, delete consumer groups and move their committed offsets.
    #[command(subcommand)]
    Group(group::GroupCommand),
    /// The cluster's brokers, controller and id, and whether it is healthy.
    #[command(subcommand)]
    Cluster(cluster::ClusterCommand),
}

/// Runs one client command; returns the process exit status.
pub fn run(args: ClientArgs, command: ClientCommand) -> i32 {
    let brokers = args
        .brokers
        .or_else(|| {
            std::env::var(BROKERS_ENV)
                .ok()
                .filter(|s| !s.trim().is_empty())
        })
        .unwrap_or_else(|| DEFAULT_BROKERS.to_string());
    let bootstrap: Vec<String> = brokers
        .split(',')
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .collect();
    let format = args.format.unwrap_or(Format::Text);
    let mut client = Client::new(bootstrap);
    let result: Result<()> = match command {
        ClientCommand::Topic(c) => topic::run(&mut client, format, c),
        ClientCommand::Group(c) => group::run(&mut client, format, c),
        ClientCommand::Cluster(c) => cluster::run(&mut client, format, c),
    };
    match result {
        Ok(()) => 0,
        // The reader went away (`| head`): stop quietly, as Unix tools do.
        Err(CliError::Local { source, .. }) if source.kind() == std::io::ErrorKind::BrokenPipe => 0,
        Err(e) => {
            eprintln!("sluice: {e}");
            1
        }
    }
}

/// Where a consumer or a group seek starts, as `-o`/`--to` give it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StartAt {
    Start,
    End,
    Offset(i64),
    /// The first record with a timestamp at or after this many ms since the epoch.
    Time(i64),
}

impl std::str::FromStr for StartAt {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s {
            "start" => Ok(StartAt::Start),
            "end" => Ok(StartAt::End),
            _ => {
                let bad = || format!("{s:?}: expected start, end, an offset, or @UNIX_MS");
                if let Some(ms) = s.strip_prefix('@') {
                    ms.parse().map(StartAt::Time).map_err(|_| bad())
                } else {
                    match s.parse::<i64>() {
                        Ok(o) if o >= 0 => Ok(StartAt::Offset(o)),
                        _ => Err(bad()),
                    }
                }
            }
        }
    }
}

/// `key=value`, as `-c` and `--set` take it.
pub fn parse_key_value(s: &str) -> std::result::Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok((k.to_string(), v.to_string())),
        _ => Err(format!("{s:?}: expected key=value")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn start_at_parses_every_form() {
        assert_eq!("start".parse(), Ok(StartAt::Start));
        assert_eq!("end".parse(), Ok(StartAt::End));
        assert_eq!("42".parse(), Ok(StartAt::Offset(42)));
        assert_eq!(
            "@1700000000000".parse(),
            Ok(StartAt::Time(1_700_000_000_000))
        );
        assert!("-1".parse::<StartAt>().is_err());
        assert!("@soon".parse::<StartAt>().is_err());
        assert!("middle".parse::<StartAt>().is_err());
    }

    #[test]
    fn key_values_split_at_the_first_equals() {
        assert_eq!(
            parse_key_value("a=b=c"),
            Ok(("a".to_string(), "b=c".to_string()))
        );
        assert!(parse_key_value("=x").is_err());
        assert!(parse_key_value("novalue").is_err());
    }
}
