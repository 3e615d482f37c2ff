#!/usr/bin/env bash
# The image, run with podman as a new user would on this kind of machine:
#  1. under the chart's own seccomp profile (helm/sluice/files/seccomp-sluice.json), with the
#     chart's restrictions (non-root, read-only root, no capabilities, no new privileges) and
#     a cpuset of the last CPU only (as the static CPU manager may give a pod), it
#     serves a produce/consume round trip: records go in through the host's `sluice` CLI and
#     come back through the image's own CLI (`podman exec`, no shell involved);
#  2. SIGTERM stops it with exit code 0;
#  3. under podman's default seccomp profile, which blocks io_uring, it exits non-zero at
#     once with a diagnostic naming seccomp and the fix (it used to panic in glommio on a
#     shard thread and then hang).
#
#   bash tests/image/run.sh            # builds the image first (tests/image/build.sh)
#
# SLUICE_IMAGE=name skips the build and tests that image. Podman needs `--runtime runc
# --cgroup-manager cgroupfs` and explicit ulimits in this VM (crun and its default limits fail).
set -euo pipefail
cd "$(dirname "$0")/../.."

for tool in podman runc buildah curl; do
    command -v "$tool" >/dev/null 2>&1 || {
        echo "tests/image/run.sh: $tool is missing: apt-get install -y buildah podman runc curl" >&2
        exit 1
    }
done

[ "$(id -u)" = 0 ] || {
    echo "tests/image/run.sh: run it as root (rootful podman; the data directory is handed to the image's user 65532)" >&2
    exit 1
}

image=${SLUICE_IMAGE:-}
if [ -z "$image" ]; then
    image=localhost/sluice:dev
    bash tests/image/build.sh "$image"
fi
cli=${SLUICE_BIN:-target/release/sluice}
[ -x "$cli" ] || { echo "tests/image/run.sh: no host sluice CLI at $cli" >&2; exit 1; }

podman=(podman --runtime runc --cgroup-manager cgroupfs)
run=(run --network host --ulimit nofile=4096:4096 --ulimit nproc=4096:4096)
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }

work=$(mktemp -d -p "$PWD/target" image-test.XXXXXX)
name=sluice-image-test-$$
cleanup() {
    "${podman[@]}" rm -f "$name" "$name-default" >/dev/null 2>&1 || true
    rm -rf "$work"
}
trap cleanup EXIT
fail() {
    echo "tests/image/run.sh: FAIL: $*" >&2
    "${podman[@]}" logs "$name" 2>&1 | tail -20 >&2 || true
    exit 1
}

# 1. The chart's profile: a round trip.
mkdir -p "$work/data"
chown 65532:65532 "$work/data"   # the chart's fsGroup does this on Kubernetes
kafka=$(free_port)
admin=$(free_port)
# Given only the last CPU, as the static CPU manager gives a Guaranteed pod CPUs that need
# not include CPU 0: the shard must be pinned inside its cpuset.
last_cpu=$(( $(nproc --all) - 1 ))
"${podman[@]}" "${run[@]}" -d --name "$name" --cpuset-cpus "$last_cpu" \
    --security-opt seccomp=helm/sluice/files/seccomp-sluice.json \
    --security-opt no-new-privileges --cap-drop ALL --read-only --user 65532:65532 \
    -v "$work/data:/var/lib/sluice" \
    "$image" start --listen "127.0.0.1:$kafka" --admin-listen "127.0.0.1:$admin" \
    --data-dir /var/lib/sluice/data --cores 1 >/dev/null
for _ in $(seq 1 100); do
    curl -sf "http://127.0.0.1:$admin/ready" >/dev/null && break
    [ "$("${podman[@]}" inspect -f '{{.State.Running}}' "$name")" = true ] || fail "the broker exited under the chart's seccomp profile"
    sleep 0.2
done
curl -sf "http://127.0.0.1:$admin/ready" >/dev/null || fail "not ready after 20 s under the chart's seccomp profile"
echo "image: ready under the chart's seccomp profile, pinned inside a cpuset of CPU $last_cpu"

brokers="127.0.0.1:$kafka"
printf 'k1:one\nk2:two\nk3:three\n' >"$work/records.txt"
"$cli" --brokers "$brokers" topic create image-test -p 1 >/dev/null
"$cli" --brokers "$brokers" topic produce image-test --key-delim : --input "$work/records.txt" >/dev/null
got=$("${podman[@]}" exec "$name" /usr/bin/sluice --brokers "$brokers" topic consume image-test -n 3 \
    | cut -f 4,5 | tr '\t' ':')
want=$(cat "$work/records.txt")
[ "$got" = "$want" ] || fail "round trip: consumed
$got
want
$want"
echo "image: produce/consume round trip through the image's broker and the image's CLI"

# 2. SIGTERM drains and exits 0.
"${podman[@]}" stop -t 30 "$name" >/dev/null
code=$("${podman[@]}" inspect -f '{{.State.ExitCode}}' "$name")
[ "$code" = 0 ] || fail "exit code $code after SIGTERM, want 0"
echo "image: SIGTERM stopped it with exit code 0"

# 3. podman's default seccomp profile: a diagnostic and a non-zero exit, not a hang.
mkdir -p "$work/data2"
chown 65532:65532 "$work/data2"
set +e
out=$(timeout 60 "${podman[@]}" "${run[@]}" --name "$name-default" --user 65532:65532 \
    -v "$work/data2:/var/lib/sluice" "$image" start --listen "127.0.0.1:$(free_port)" \
    --data-dir /var/lib/sluice/data --cores 1 2>&1)
code=$?
set -e
[ "$code" != 124 ] || fail "still running 60 s after start under the default seccomp profile (hang)"
[ "$code" != 0 ] || fail "exit code 0 under the default seccomp profile; want a failure
$out"
for word in seccomp io_uring Unconfined seccomp-sluice.json; do
    grep -q "$word" <<<"$out" || fail "the diagnostic does not name $word:
$out"
done
echo "image: under podman's default seccomp profile it exits $code, saying:"
echo "  $out"
