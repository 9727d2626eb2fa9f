#!/usr/bin/env bash
# Sends load to productpage from inside the mesh with fortio.
set -euo pipefail
# shellcheck source=lib.sh
source "$(dirname "$0")/lib.sh"
need kubectl
DURATION=${DURATION:-60s}
QPS=${QPS:-50}
kubectl run -n "$NS" fortio --image=fortio/fortio --restart=Never --rm -i -- \
  load -qps "$QPS" -t "$DURATION" -c 4 "http://productpage.$NS:9080/productpage"
