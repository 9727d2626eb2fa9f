#!/usr/bin/env bash
# Compares Istio's and leanmesh's series for the same traffic (Shadow mode) on
# one pod: exits non-zero when series are missing or values differ.
set -euo pipefail
# shellcheck source=lib.sh
source "$(dirname "$0")/lib.sh"
need kubectl go
POD=${POD:-$(kubectl get pod -n "$NS" -l app=reviews -o jsonpath='{.items[0].metadata.name}')}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
kubectl exec -n "$NS" "$POD" -c istio-proxy -- curl -s localhost:15020/stats/prometheus >"$tmp/istio.txt"
kubectl exec -n "$NS" "$POD" -c istio-proxy -- curl -s localhost:15095/stats/prometheus >"$tmp/leanmesh.txt"
(cd "$REPO" && go run ./controller/cmd/leanmesh compare -prefix istio_ -tolerance 0.02 \
  -istio "$tmp/istio.txt" -leanmesh "$tmp/leanmesh.txt")
