#!/usr/bin/env bash
# Creates a kind cluster with Istio, the leanmesh proxy image and chart, and
# bookinfo in Shadow mode. See README.md; cannot run without Docker.
set -euo pipefail
# shellcheck source=lib.sh
source "$(dirname "$0")/lib.sh"
need docker kind kubectl helm istioctl go
[ -n "$ENVOY_VERSION" ] || { echo "Istio $ISTIO_VERSION is not in $MATRIX" >&2; exit 1; }

log "cluster $CLUSTER"
kind get clusters | grep -qx "$CLUSTER" || kind create cluster --name "$CLUSTER"

log "Istio $ISTIO_VERSION"
istioctl install -y --set profile=default --set tag="$ISTIO_VERSION"

log "proxy image $PROXY_IMAGE with leanmesh.so for Envoy $ENVOY_VERSION"
make -C "$REPO" image ISTIO_VERSION="$ISTIO_VERSION" PROXY_IMAGE="$PROXY_IMAGE"
kind load docker-image "$PROXY_IMAGE" --name "$CLUSTER"

log "leanmesh controller image $CONTROLLER_IMAGE"
make -C "$REPO" controller-image CONTROLLER_IMAGE="$CONTROLLER_IMAGE"
kind load docker-image "$CONTROLLER_IMAGE" --name "$CLUSTER"
helm upgrade --install leanmesh "$REPO/charts/leanmesh" -n leanmesh-system --create-namespace \
  --set image.repository="${CONTROLLER_IMAGE%:*}" --set image.tag="${CONTROLLER_IMAGE##*:}" --set replicas=1

log "bookinfo in $NS"
kubectl create namespace "$NS" --dry-run=client -o yaml | kubectl apply -f -
kubectl label namespace "$NS" istio-injection=enabled --overwrite
kubectl apply -n "$NS" -f "https://raw.githubusercontent.com/istio/istio/release-${ISTIO_VERSION%.*}/samples/bookinfo/platform/kube/bookinfo.yaml"
# The image path's pod patch (envoy-build/podpatch): proxy image, the label, the
# leanmesh-prom port on istio-proxy and the inbound-capture exclusion of 15095.
patch="$(mktemp)"
make -s -C "$REPO" pod-patch MODE=image ISTIO_VERSION="$ISTIO_VERSION" PROXY_IMAGE="$PROXY_IMAGE" >"$patch"
for d in $(kubectl get deploy -n "$NS" -o name); do
  kubectl patch -n "$NS" "$d" --patch-file "$patch"
done
rm -f "$patch"
kubectl rollout status -n "$NS" deploy --timeout=300s

log "TelemetryPolicy (Shadow)"
kubectl apply -n "$NS" -f - <<YAML
apiVersion: leanmesh.io/v1alpha1
kind: TelemetryPolicy
metadata: {name: bookinfo}
spec: {mode: Shadow}
YAML
kubectl wait -n "$NS" telemetrypolicy/bookinfo --for=condition=Ready --timeout=120s
log "ready: run e2e/kind/load.sh then e2e/kind/compare.sh"
