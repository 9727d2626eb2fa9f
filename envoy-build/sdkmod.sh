#!/bin/sh
# Writes an alternate modfile pinning the Envoy Go SDK to one version of the matrix, for
# `go build -modfile=<out.mod>` (make so-matrix, Dockerfile). The main go.mod is never touched, so
# every other dependency stays what the default build uses; <out.sum> starts from go.sum plus the
# pinned hashes in envoy-build/sdk.sum (versions the checksum DB cannot confirm from here).
#
# usage (from the repository root): envoy-build/sdkmod.sh <sdk_version> <out.mod>
set -eu
sdk=$1
out=$2
case "$out" in *.mod) ;; *) echo "sdkmod.sh: output must end in .mod: $out" >&2; exit 2 ;; esac
sum="${out%.mod}.sum"
mkdir -p "$(dirname "$out")"
cp go.mod "$out"
cp go.sum "$sum"
grep -E "^github.com/envoyproxy/envoy $sdk[ /]" envoy-build/sdk.sum >>"$sum" || true
${GO:-go} mod edit -modfile="$out" -require="github.com/envoyproxy/envoy@$sdk"
