#!/usr/bin/env bash
# Shared settings for the kind scripts (sourced).
set -euo pipefail
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
CLUSTER=${CLUSTER:-leanmesh}
NS=${NS:-bookinfo}
MATRIX="$REPO/envoy-build/versions.tsv"
ISTIO_VERSION=${ISTIO_VERSION:-$(awk '!/^#/ && $9=="default" {print $1}' "$MATRIX")}
ENVOY_VERSION=$(awk -v v="$ISTIO_VERSION" '!/^#/ && $1==v {print $2}' "$MATRIX")
PROXY_IMAGE=${PROXY_IMAGE:-leanmesh/proxyv2:${ISTIO_VERSION}-leanmesh}
# make controller-image's tag (the chart's default image, from its appVersion) unless overridden.
CONTROLLER_IMAGE=${CONTROLLER_IMAGE:-$(make -s -C "$REPO" print-images ISTIO_VERSION="$ISTIO_VERSION" | sed -n 's/^CONTROLLER_IMAGE=//p')}
export REPO CLUSTER NS ISTIO_VERSION ENVOY_VERSION PROXY_IMAGE CONTROLLER_IMAGE

need() {
  local tool
  for tool in "$@"; do
    command -v "$tool" >/dev/null 2>&1 || { echo "missing: $tool" >&2; exit 1; }
  done
}

log() { printf '[kind %s] %s\n' "$(date +%H:%M:%S)" "$*"; }
