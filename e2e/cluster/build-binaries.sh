#!/usr/bin/env bash
# build-binaries.sh — builds (once) and caches the real control-plane binaries
# the e2e/cluster package runs: kube-apiserver (k8s.io/kubernetes),
# pilot-discovery (istio.io/istio), plus etcd from Debian and Istio's CRDs.
#
# Idempotent: every artifact is cached by version outside the repo and only
# rebuilt when missing. Scratch Go modules live in the cache too, so the
# project's go.mod is never touched.
#
# Layout (CACHE = ${LEANMESH_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/leanmesh}):
#   $CACHE/bin/kube-apiserver-<ver>/kube-apiserver
#   $CACHE/bin/pilot-discovery-<ver>/pilot-discovery
#   $CACHE/bin/kubectl-<ver>/kubectl          (only when built, see below)
#   $CACHE/crds/istio-api-<ver>/customresourcedefinitions.gen.yaml
#   $CACHE/src/<component>-<ver>/            (scratch modules)
#
# Usage: build-binaries.sh [all|etcd|tools|kube-apiserver|pilot-discovery|kubectl|crds|paths]...
# Env:   K8S_VERSION, ISTIO_VERSION, ISTIO_API_VERSION override versions;
#        LEANMESH_BUILD_KUBECTL=1 builds kubectl when none is installed.
set -euo pipefail

K8S_VERSION="${K8S_VERSION:-v1.37.0}"
ISTIO_VERSION="${ISTIO_VERSION:-v0.0.0-20260827124520-eed52ebb66ad}"
ISTIO_API_VERSION="${ISTIO_API_VERSION:-v1.31.1}"
CACHE="${LEANMESH_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/leanmesh}"

# Scratch modules must not see the project's go.mod / go.work or its GOFLAGS.
export GOWORK=off GOFLAGS=-mod=mod GO111MODULE=on
export GOTOOLCHAIN="${GOTOOLCHAIN:-local}"

log() { printf '[build-binaries %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

command -v go >/dev/null || die "go not found in PATH"
mkdir -p "$CACHE/bin" "$CACHE/src" "$CACHE/crds"

# One build at a time per cache: parallel `go test` packages may all call us.
if [[ -z "${LEANMESH_BUILD_LOCKED:-}" ]] && command -v flock >/dev/null; then
	export LEANMESH_BUILD_LOCKED=1
	log "waiting for lock $CACHE/.build.lock"
	exec flock "$CACHE/.build.lock" "$0" "$@"
fi

k8s_minor() { local v="${1#v}"; v="${v#*.}"; echo "${v%%.*}"; }

# --- etcd (Debian) ----------------------------------------------------------
apt_updated=""
apt_install() {
	command -v apt-get >/dev/null || die "apt-get not available; install $* manually"
	local sudo=""
	[[ $(id -u) -ne 0 ]] && sudo="sudo"
	if [[ -z "$apt_updated" ]]; then
		log "apt-get update (waits up to 10 min for another apt/dpkg process to release its lock)"
		$sudo apt-get -o DPkg::Lock::Timeout=600 update -qq >&2
		apt_updated=1
	fi
	log "apt-get install $*"
	DEBIAN_FRONTEND=noninteractive $sudo apt-get -o DPkg::Lock::Timeout=600 install -y -qq "$@" >&2
}

build_etcd() {
	if [[ -x /usr/bin/etcd ]] && command -v etcdctl >/dev/null; then
		log "etcd: present ($(/usr/bin/etcd --version 2>/dev/null | head -1))"
		return
	fi
	apt_install etcd-server etcd-client
	[[ -x /usr/bin/etcd ]] || die "etcd-server installed but /usr/bin/etcd missing"
	log "etcd: installed ($(/usr/bin/etcd --version | head -1))"
}

# --- tools the tests run (Debian): shellcheck, Prometheus server + promtool ----
build_tools() {
	local missing=()
	command -v shellcheck >/dev/null || missing+=(shellcheck)
	{ command -v prometheus >/dev/null && command -v promtool >/dev/null; } || missing+=(prometheus)
	if [[ ${#missing[@]} -eq 0 ]]; then
		log "tools: present (shellcheck, $(prometheus --version 2>/dev/null | head -1))"
		return
	fi
	apt_install "${missing[@]}"
	# Debian's package enables a system service; the tests start their own servers.
	if command -v systemctl >/dev/null; then systemctl disable --now prometheus >/dev/null 2>&1 || true; fi
}

# --- kubernetes scratch module (kube-apiserver, kubectl) ----------------------
# kubernetes' go.mod replaces every k8s.io/<staging> module with ./staging/...,
# which `go install pkg@ver` refuses. Mirror those replaces with the published
# v0.X.Y versions in a scratch module instead.
k8s_scratch() {
	local dir="$CACHE/src/kubernetes-$K8S_VERSION"
	if [[ -f "$dir/.ready" ]]; then echo "$dir"; return; fi
	log "kubernetes $K8S_VERSION: preparing scratch module in $dir"
	rm -rf "$dir" && mkdir -p "$dir"
	local gomod staging goline
	gomod=$(go mod download -json "k8s.io/kubernetes@$K8S_VERSION" | sed -n 's/^[[:space:]]*"GoMod": "\(.*\)",$/\1/p')
	[[ -f "$gomod" ]] || die "cannot download k8s.io/kubernetes@$K8S_VERSION (is it served by the module proxy?)"
	staging="v0.${K8S_VERSION#v1.}"
	goline=$(grep -m1 -E '^go [0-9]' "$gomod")
	{
		echo "module leanmesh.local/kubernetes-build"
		echo
		echo "$goline"
		echo
		echo "require k8s.io/kubernetes $K8S_VERSION"
		echo
		echo "replace ("
		# "	k8s.io/api => ./staging/src/k8s.io/api" -> published staging version
		grep -E '^[[:space:]]*k8s\.io/[^ ]+ => \./staging/' "$gomod" |
			awk -v v="$staging" '{print "\t" $1 " => " $1 " " v}'
		echo ")"
	} >"$dir/go.mod"
	log "kubernetes $K8S_VERSION: $(grep -c '=>' "$dir/go.mod") staging replaces"
	cat >"$dir/tools.go" <<-'EOF'
		//go:build tools

		package tools

		import (
			_ "k8s.io/kubernetes/cmd/kube-apiserver"
			_ "k8s.io/kubernetes/cmd/kubectl"
		)
	EOF
	log "kubernetes $K8S_VERSION: go mod tidy (downloads modules)"
	(cd "$dir" && go mod tidy -e >&2) || die "go mod tidy failed for kubernetes scratch module"
	touch "$dir/.ready"
	echo "$dir"
}

k8s_build() { # $1 = command name (kube-apiserver|kubectl)
	local name="$1" out="$CACHE/bin/$1-$K8S_VERSION"
	if [[ -x "$out/$name" ]]; then log "$name $K8S_VERSION: cached at $out/$name"; return; fi
	local dir minor start
	dir=$(k8s_scratch)
	minor=$(k8s_minor "$K8S_VERSION")
	log "$name $K8S_VERSION: go build (takes ~8 min cold on 2 cores)"
	start=$(date +%s)
	mkdir -p "$out"
	(cd "$dir" && go build -trimpath -ldflags "-s -w \
		-X k8s.io/component-base/version.gitVersion=$K8S_VERSION \
		-X k8s.io/component-base/version.gitMajor=1 \
		-X k8s.io/component-base/version.gitMinor=$minor \
		-X k8s.io/client-go/pkg/version.gitVersion=$K8S_VERSION" \
		-o "$out/$name.tmp" "k8s.io/kubernetes/cmd/$name" >&2) || die "go build $name $K8S_VERSION failed"
	mv "$out/$name.tmp" "$out/$name" # atomic: a partial binary never looks cached
	log "$name $K8S_VERSION: built in $(($(date +%s) - start))s -> $out/$name"
}

build_kubectl() {
	if command -v kubectl >/dev/null; then
		log "kubectl: present at $(command -v kubectl) (envtest only needs it for optional helpers)"
		return
	fi
	if [[ "${LEANMESH_BUILD_KUBECTL:-}" == 1 ]]; then
		k8s_build kubectl
	else
		log "kubectl: not installed, Debian has no package; skipping (envtest runs without it; LEANMESH_BUILD_KUBECTL=1 builds it)"
	fi
}

# --- pilot-discovery ----------------------------------------------------------
build_pilot() {
	local out="$CACHE/bin/pilot-discovery-$ISTIO_VERSION" dir="$CACHE/src/istio-$ISTIO_VERSION"
	if [[ -x "$out/pilot-discovery" ]]; then log "pilot-discovery $ISTIO_VERSION: cached at $out/pilot-discovery"; return; fi
	if [[ ! -f "$dir/.ready" ]]; then
		log "pilot-discovery $ISTIO_VERSION: preparing scratch module in $dir"
		rm -rf "$dir" && mkdir -p "$dir"
		local gomod goline
		gomod=$(go mod download -json "istio.io/istio@$ISTIO_VERSION" | sed -n 's/^[[:space:]]*"GoMod": "\(.*\)",$/\1/p')
		[[ -f "$gomod" ]] || die "cannot download istio.io/istio@$ISTIO_VERSION"
		goline=$(grep -m1 -E '^go [0-9]' "$gomod")
		# Istio pins pseudo-versions the proxy refuses; these served ones build.
		cat >"$dir/go.mod" <<-EOF
			module leanmesh.local/istio-build

			$goline

			require istio.io/istio $ISTIO_VERSION

			replace (
				github.com/envoyproxy/go-control-plane/contrib => github.com/envoyproxy/go-control-plane/contrib v1.36.1-0.20260729145720-a2d8c7492908
				github.com/envoyproxy/go-control-plane/envoy => github.com/envoyproxy/go-control-plane/envoy v1.39.0
				istio.io/api => istio.io/api $ISTIO_API_VERSION
				istio.io/client-go => istio.io/client-go $ISTIO_API_VERSION
			)
		EOF
		cat >"$dir/tools.go" <<-'EOF'
			//go:build tools

			package tools

			import _ "istio.io/istio/pilot/cmd/pilot-discovery"
		EOF
		log "pilot-discovery: go mod tidy (downloads modules)"
		(cd "$dir" && go mod tidy -e >&2) || die "go mod tidy failed for istio scratch module"
		touch "$dir/.ready"
	fi
	log "pilot-discovery $ISTIO_VERSION: go build (takes ~5-9 min cold on 2 cores)"
	local start
	start=$(date +%s)
	mkdir -p "$out"
	(cd "$dir" && go build -trimpath -ldflags '-s -w' -o "$out/pilot-discovery.tmp" istio.io/istio/pilot/cmd/pilot-discovery >&2) ||
		die "go build pilot-discovery failed"
	mv "$out/pilot-discovery.tmp" "$out/pilot-discovery"
	log "pilot-discovery $ISTIO_VERSION: built in $(($(date +%s) - start))s -> $out/pilot-discovery"
}

# --- Istio CRDs -----------------------------------------------------------------
fetch_crds() {
	local out="$CACHE/crds/istio-api-$ISTIO_API_VERSION"
	if [[ -s "$out/customresourcedefinitions.gen.yaml" ]]; then log "istio CRDs $ISTIO_API_VERSION: cached"; return; fi
	local moddir
	moddir=$(go mod download -json "istio.io/api@$ISTIO_API_VERSION" | sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p')
	[[ -f "$moddir/kubernetes/customresourcedefinitions.gen.yaml" ]] || die "istio.io/api@$ISTIO_API_VERSION has no kubernetes/customresourcedefinitions.gen.yaml"
	mkdir -p "$out"
	cp "$moddir/kubernetes/customresourcedefinitions.gen.yaml" "$out/.tmp.yaml"
	chmod 0644 "$out/.tmp.yaml"
	mv "$out/.tmp.yaml" "$out/customresourcedefinitions.gen.yaml"
	log "istio CRDs $ISTIO_API_VERSION: $out/customresourcedefinitions.gen.yaml"
}

paths() {
	echo "CACHE=$CACHE"
	echo "KUBE_APISERVER=$CACHE/bin/kube-apiserver-$K8S_VERSION/kube-apiserver"
	echo "PILOT_DISCOVERY=$CACHE/bin/pilot-discovery-$ISTIO_VERSION/pilot-discovery"
	echo "ETCD=/usr/bin/etcd"
	echo "ISTIO_CRDS=$CACHE/crds/istio-api-$ISTIO_API_VERSION/customresourcedefinitions.gen.yaml"
}

[[ $# -eq 0 ]] && set -- all
for what in "$@"; do
	case "$what" in
	all) build_etcd; build_tools; fetch_crds; build_kubectl; k8s_build kube-apiserver; build_pilot ;;
	etcd) build_etcd ;;
	tools) build_tools ;;
	kube-apiserver) k8s_build kube-apiserver ;;
	kubectl) k8s_build kubectl ;;
	pilot-discovery) build_pilot ;;
	crds) fetch_crds ;;
	paths) paths ;;
	*) die "unknown target $what" ;;
	esac
done
log "done"
