#!/usr/bin/env bash
# Builds the sluice OCI image FROM scratch with buildah: nothing is pulled. The image holds
# the release `sluice` binary, the shared libraries `ldd` lists for it and the dynamic
# loader, an /etc/passwd naming the non-root user 65532 (the chart's runAsUser), and an
# empty /var/lib/sluice for the data volume. There is no shell.
#
#   bash tests/image/build.sh [IMAGE]      # default IMAGE: localhost/sluice:dev
#
# SLUICE_BIN picks another binary (default: target/release/sluice, built if missing).
set -euo pipefail
cd "$(dirname "$0")/../.."

command -v buildah >/dev/null 2>&1 || {
    echo "tests/image/build.sh: buildah is missing: apt-get install -y buildah podman" >&2
    exit 1
}
image=${1:-localhost/sluice:dev}
bin=${SLUICE_BIN:-target/release/sluice}
if [ -z "${SLUICE_BIN:-}" ]; then
    cargo build --release -p sluice-broker
fi
[ -x "$bin" ] || { echo "tests/image/build.sh: no binary at $bin" >&2; exit 1; }

root=target/image/rootfs
rm -rf "$root"
mkdir -p "$root/usr/bin" "$root/etc/sluice" "$root/var/lib/sluice" "$root/tmp"
# Debug info stays out of the image (it is most of the binary's size); symbols stay in,
# so a panic's backtrace still names functions.
objcopy --strip-debug "$bin" "$root/usr/bin/sluice"

# Every library the binary links, and the loader, at the paths the binary asks for.
libs=$(ldd "$bin" | awk '$2 == "=>" && $3 ~ /^\// { print $3 } $1 ~ /^\// { print $1 }' | sort -u)
[ -n "$libs" ] || { echo "tests/image/build.sh: ldd listed no libraries for $bin" >&2; exit 1; }
for lib in $libs; do
    mkdir -p "$root$(dirname "$lib")"
    cp -L "$lib" "$root$lib"
done

cat >"$root/etc/passwd" <<'PASSWD'
root:x:0:0:root:/:/nonexistent
sluice:x:65532:65532:sluice:/var/lib/sluice:/nonexistent
PASSWD
cat >"$root/etc/group" <<'GROUP'
root:x:0:
sluice:x:65532:
GROUP
# glibc reads hosts from files, then DNS (its own default puts DNS first).
echo 'hosts: files dns' >"$root/etc/nsswitch.conf"

ctr=$(buildah from scratch)
trap 'buildah rm "$ctr" >/dev/null 2>&1 || true' EXIT
buildah copy --quiet "$ctr" "$root" / >/dev/null
buildah copy --quiet --chown 65532:65532 "$ctr" "$root/var/lib/sluice" /var/lib/sluice >/dev/null
buildah config \
    --user 65532:65532 \
    --workingdir /var/lib/sluice \
    --entrypoint '["/usr/bin/sluice"]' \
    --cmd 'start --listen 0.0.0.0:9092 --admin-listen 0.0.0.0:9644 --data-dir /var/lib/sluice/data' \
    --port 9092 --port 9644 --port 33145 \
    --volume /var/lib/sluice \
    --label org.opencontainers.image.title=sluice \
    --label org.opencontainers.image.description="Kafka-wire-compatible streaming broker" \
    "$ctr"
buildah commit --quiet --rm "$ctr" "$image" >/dev/null
trap - EXIT
echo "built $image ($(du -sh "$root" | cut -f1) unpacked: sluice + $(echo "$libs" | wc -l) libraries)"
