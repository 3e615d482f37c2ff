#!/usr/bin/env bash
# Builds helm v3.22.0 from the Go module proxy into target/tools/helm-v3.22.0/ (once: about
# 1.5 min on 2 cores) and prints the binary's path. tests/run.sh and .ci/run use it.
set -euo pipefail
cd "$(dirname "$0")/../.."
version=v3.22.0
dir="$PWD/target/tools/helm-$version"
if [ ! -x "$dir/helm" ]; then
    command -v go >/dev/null 2>&1 || {
        echo "tests/helm/install-helm.sh: go is missing: install Go (helm is built from the Go module proxy)" >&2
        exit 1
    }
    echo "building helm $version into $dir" >&2
    GOBIN="$dir" GOFLAGS=-buildvcs=false go install "helm.sh/helm/v3/cmd/helm@$version" >&2
fi
echo "$dir/helm"
