#!/usr/bin/env bash
# The whole test suite, as the README gives it: lint, the Rust tests (unit, property,
# crash, the broker's rdkafka/bad-input/durability suites, and the differential harness
# against Apache Kafka), then the real-client suites in Go, Python and Java against a
# `sluice` each suite starts itself and again against a 3-broker cluster, then the Helm
# chart and the container image.
# .ci/run calls this after installing what a fresh machine lacks.
set -euo pipefail
cd "$(dirname "$0")/.."

need() {
    command -v "$1" >/dev/null 2>&1 || { echo "tests/run.sh: '$1' is missing: $2" >&2; exit 1; }
}
need cargo "install Rust (rustup)"
need go "install Go (the Go suite drives kafka-go and franz-go)"
need python3 "install Python 3 (the Python suite drives confluent-kafka and kafka-python)"
need mvn "install Maven and a JDK 17+ (the Java suite drives kafka-clients and the Kafka tools)"
need buildah "apt-get install -y buildah podman runc (the image is built FROM scratch with buildah)"
need podman "apt-get install -y buildah podman runc (the image test runs it with podman)"
need runc "apt-get install -y runc (podman runs containers with --runtime runc here; crun fails in this VM)"
need curl "apt-get install -y curl (the image test polls the admin port)"
python3 -c 'import pytest, confluent_kafka, kafka, prometheus_client' 2>/dev/null \
    || { echo "tests/run.sh: Python packages missing: pip install -r tests/python/requirements.txt" >&2; exit 1; }

need java "install a JDK 17+ (the differential harness runs Apache Kafka as the reference)"
# The differential harness (broker/tests/differential.rs) runs Apache Kafka from these jars.
bash benches/kafka/kafka.sh fetch

cargo fmt --all -- --check
cargo clippy --workspace --all-targets -- -D warnings
cargo test --workspace -- --skip sluice_answers_as_kafka_does
# Speed changes timing and load: the storage crash test once hit EMFILE only in release.
# It runs before the steps that start Apache Kafka, so no JVM shares its cores.
cargo test --release -p sluice-storage --test crash --test descriptors
# Apart, so that its cases per API show in the output.
cargo test -p sluice-broker --test differential -- --nocapture
# The admin CLI against Apache Kafka: the same commands give the same answers (one at a
# time: the tests share one Kafka).
SLUICE_TEST_KAFKA_SH="$PWD/benches/kafka/kafka.sh" \
    cargo test -p sluice-broker --test cli -- --test-threads=1

# The client suites start this broker themselves, on free loopback ports.
cargo build -p sluice-broker
export SLUICE_BIN="$PWD/target/debug/sluice"
unset SLUICE_BOOTSTRAP
(cd tests/go && go test -count=1 ./...)
python3 -m pytest tests/python -q
mvn -B -f tests/java/pom.xml test

# The same suites against a 3-broker cluster on loopback, every topic replicated on all
# three. Release build: three brokers and a client share two cores.
cargo build --release -p sluice-broker
release_bin="$PWD/target/release/sluice"
cluster_dir=$(mktemp -d)
trap 'bash tests/cluster/cluster.sh stop --dir "$cluster_dir"' EXIT
SLUICE_BOOTSTRAP=$(bash tests/cluster/cluster.sh start --dir "$cluster_dir" --bin "$release_bin")
SLUICE_ADMIN=$(paste -sd, "$cluster_dir/admin")
export SLUICE_BOOTSTRAP SLUICE_ADMIN SLUICE_TEST_REPLICATION_FACTOR=3
cargo test -p sluice-broker --test rdkafka_compat
(cd tests/go && go test -count=1 ./...)
python3 -m pytest tests/python -q
mvn -B -f tests/java/pom.xml test
bash tests/cluster/cluster.sh stop --dir "$cluster_dir"
trap - EXIT
unset SLUICE_BOOTSTRAP SLUICE_ADMIN SLUICE_TEST_REPLICATION_FACTOR
# The fault suite: a cluster of its own under idempotent writers, readers and a committing
# group while brokers are killed and paused on a seeded schedule (12 events, about 2 min;
# SLUICE_FAULT_EVENTS runs a longer one). A failure prints the seed that replays it.
(cd tests/faults && SLUICE_BIN="$release_bin" go test -count=1 ./...)

# The Helm chart: lint and render every values file of the matrix, then decode what it
# renders strictly into the k8s.io/api types and check it (tests/helm).
helm_bin=$(bash tests/helm/install-helm.sh)
for values in helm/sluice/ci/*.yaml; do
    "$helm_bin" lint --strict helm/sluice -f "$values" --kube-version 1.33.0
    "$helm_bin" template sluice helm/sluice -f "$values" --kube-version 1.33.0 >/dev/null
done
(cd tests/helm && HELM="$helm_bin" go test -count=1 -run 'TestChartMatrix|TestSeccompProfile|TestSchemaRejectsBadValues' ./...)
# The image, built FROM scratch with buildah around the binary above, run with podman under
# the chart's seccomp profile (a round trip) and podman's default one (the diagnostic).
bash tests/image/run.sh
# The rendered cluster runs: the StatefulSet helm renders, started here as the kubelet would
# (mount namespaces, a private /etc/hosts; needs root), then the chart's helm test pod and
# the rdkafka suite through the client Service: the chart's default three replicas, then
# five (two brokers beyond the seeds join), at one CPU a pod to fit this machine.
(cd tests/helm && HELM="$helm_bin" SLUICE_BIN="$release_bin" SLUICE_RDKAFKA_SUITE=1 go test -count=1 -run TestRenderedClusterRuns ./...)
(cd tests/helm && HELM="$helm_bin" SLUICE_BIN="$release_bin" SLUICE_RDKAFKA_SUITE=1 \
    SLUICE_HELM_RUN_VALUES=ci/5-replicas-values.yaml SLUICE_HELM_RUN_SET=resources.cpu=1,resources.memory=2Gi \
    go test -count=1 -run TestRenderedClusterRuns ./...)
