#!/usr/bin/env bash
# build-binaries.sh — the one set-up script: installs (once) every tool the
# tests run and caches the real control-plane binaries. `make test` (target
# `setup`) and .ci/run both call it; the Go tests call it for what they miss.
#   Debian: etcd, shellcheck, Prometheus (server + promtool), gcc
#   Go modules, built and cached by version: kube-apiserver (k8s.io/kubernetes),
#   pilot-discovery (istio.io/istio), helm (helm.sh/helm/v3), golangci-lint,
#   controller-gen; Istio's CRDs from istio.io/api.
#
# Idempotent and resumable: every artifact is cached by version outside the
# repo, written under a temporary name and renamed when complete, so an
# interrupted run resumes where it stopped (Go's build cache keeps compiled
# packages). Scratch Go modules live in the cache, so the project's go.mod is
# never touched. Each artifact has its own lock: concurrent callers (parallel
# `go test` packages) wait only for the artifact they need, and `all` builds
# independent artifacts at the same time.
#
# Layout (CACHE = ${LEANMESH_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/leanmesh}):
#   $CACHE/bin/kube-apiserver-<ver>/kube-apiserver
#   $CACHE/bin/pilot-discovery-<ver>/pilot-discovery
#   $CACHE/bin/kubectl-<ver>/kubectl          (only when built, see below)
#   $CACHE/bin/helm-<ver>/helm
#   $CACHE/bin/golangci-lint-<ver>/golangci-lint
#   $CACHE/bin/controller-gen-<ver>/controller-gen
#   $CACHE/crds/istio-api-<ver>/customresourcedefinitions.gen.yaml
#   $CACHE/crds/prometheus-operator-<ver>/      (ServiceMonitor, PodMonitor CRDs)
#   $CACHE/src/<component>-<ver>/            (scratch modules)
#
# Usage: build-binaries.sh [all|cluster|debian|etcd|tools|kube-apiserver|pilot-discovery|kubectl|crds|monitoring-crds|helm|golangci-lint|controller-gen|paths]...
# Env:   K8S_VERSION, ISTIO_VERSION, ISTIO_API_VERSION, HELM_VERSION,
#        GOLANGCI_LINT_VERSION, CONTROLLER_GEN_VERSION, PROMETHEUS_OPERATOR_VERSION
#        override versions;
#        LEANMESH_BUILD_KUBECTL=1 builds kubectl when none is installed;
#        APT_LOCK_TIMEOUT (seconds, default 1200) bounds the wait for another
#        apt/dpkg process (the script names the lock and its holder);
#        LEANMESH_APT_ALWAYS=1 runs apt-get install even when every Debian
#        package is present (a no-op that still takes apt's locks; tests).
set -euo pipefail

K8S_VERSION="${K8S_VERSION:-v1.37.0}"
ISTIO_VERSION="${ISTIO_VERSION:-v0.0.0-20260827124520-eed52ebb66ad}"
ISTIO_API_VERSION="${ISTIO_API_VERSION:-v1.31.1}"
HELM_VERSION="${HELM_VERSION:-v3.22.0}"
GOLANGCI_LINT_VERSION="${GOLANGCI_LINT_VERSION:-v2.15.0}"
CONTROLLER_GEN_VERSION="${CONTROLLER_GEN_VERSION:-v0.23.0}"
PROMETHEUS_OPERATOR_VERSION="${PROMETHEUS_OPERATOR_VERSION:-v0.85.0}"
APT_LOCK_TIMEOUT="${APT_LOCK_TIMEOUT:-1200}"
CACHE="${LEANMESH_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/leanmesh}"

# Scratch modules must not see the project's go.mod / go.work or its GOFLAGS.
export GOWORK=off GOFLAGS=-mod=mod GO111MODULE=on
export GOTOOLCHAIN="${GOTOOLCHAIN:-local}"

log() { printf '[build-binaries %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

command -v go >/dev/null || die "go not found in PATH"
mkdir -p "$CACHE/bin" "$CACHE/src" "$CACHE/crds"

# locked NAME CMD...: runs CMD holding $CACHE/.lock.NAME, so two callers never
# build the same artifact while different artifacts build side by side.
locked() {
	local name="$1"
	shift
	if ! command -v flock >/dev/null; then "$@"; return; fi
	(
		if ! flock -n 9; then
			log "$name: another build-binaries.sh is building it; waiting for $CACHE/.lock.$name"
			flock 9
		fi
		"$@"
	) 9>"$CACHE/.lock.$name"
}

k8s_minor() { local v="${1#v}"; v="${v#*.}"; echo "${v%%.*}"; }

# --- Debian packages: etcd, shellcheck, Prometheus (server + promtool), gcc --
# debian_missing: the packages whose commands are absent. gcc builds
# leanmesh.so and the C test host (cgo); make itself must exist to run make.
debian_missing() {
	{ [[ -x /usr/bin/etcd ]] && command -v etcdctl >/dev/null; } || echo "etcd-server etcd-client"
	command -v shellcheck >/dev/null || echo shellcheck
	{ command -v prometheus >/dev/null && command -v promtool >/dev/null; } || echo prometheus
	command -v gcc >/dev/null || echo gcc
}

# The locks apt and dpkg take (fcntl write locks, apt-pkg's GetLock): the
# frontend lock every apt-get install/apt/unattended-upgrade holds for its
# whole run and dpkg's own; apt-get update takes the package lists' instead.
DPKG_LOCKS="/var/lib/dpkg/lock-frontend /var/lib/dpkg/lock"
LISTS_LOCK=/var/lib/apt/lists/lock

# apt_lock_holders [LOCK...]: "<lock> held by process <pid> (<command>)" for
# each of these locks (default: all of them) that is held, nothing when free
# (lslocks, util-linux: essential on Debian).
apt_lock_holders() {
	command -v lslocks >/dev/null || return 0
	local locks="${*:-$DPKG_LOCKS $LISTS_LOCK}"
	lslocks -n -o PID,COMMAND,PATH 2>/dev/null | awk -v locks="$locks" '
		BEGIN { n = split(locks, l, " "); for (i = 1; i <= n; i++) want[l[i]] = 1 }
		want[$NF] { print $NF " held by process " $1 " (" $2 ")" }'
}

# apt_get ARGS...: apt-get that waits up to APT_LOCK_TIMEOUT for another
# apt/dpkg process (a fresh machine often runs unattended upgrades) instead of
# failing on its lock. It says what it waits for: the holder before it starts,
# then apt's own "Waiting for cache lock: ... held by process N (name)" lines,
# one every 30 s (apt prints one a second). Output goes to stderr and to
# $APT_OUT (the caller tells a lock timeout from other failures with it).
apt_get() {
	local apt=(env DEBIAN_FRONTEND=noninteractive apt-get -q -o "DPkg::Lock::Timeout=$APT_LOCK_TIMEOUT")
	[[ $(id -u) -ne 0 ]] && apt=(sudo "${apt[@]}")
	local holders=""
	# apt-get update does not wait for its lock (apt_install retries it).
	# shellcheck disable=SC2086 # two paths
	[[ "$1" == update ]] || holders=$(apt_lock_holders $DPKG_LOCKS)
	if [[ -n "$holders" ]]; then
		while read -r h; do
			log "apt-get $1: waiting for the apt/dpkg lock, $h (up to ${APT_LOCK_TIMEOUT}s, APT_LOCK_TIMEOUT)"
		done <<<"$holders"
	fi
	"${apt[@]}" "$@" 2>&1 | tee "$APT_OUT" | awk -v tag="[build-binaries] apt-get $1:" '
		{ sub(/\r+$/, ""); n = split($0, p, "\r"); $0 = p[n] } # dpkg redraws its progress with CR: the last one
		/^Waiting for cache lock/ { if (waits++ % 30 == 0) print tag, $0, "(" waits "s)"; fflush(); next }
		{ print tag, $0; fflush() }' >&2
	return "${PIPESTATUS[0]}"
}

# apt_lock_timed_out: the last apt_get failed because the lock stayed held.
apt_lock_timed_out() {
	grep -qE 'Could not get lock|Unable to acquire the dpkg frontend lock|Unable to lock' "$APT_OUT"
}

# apt_install PKG...: apt-get install, waiting for a busy lock (apt_get).
# --no-upgrade: a package already installed is left as it is. apt-get update's
# lists lock has no timeout option in apt 2.6, so update is retried while
# another process holds it.
apt_install() {
	command -v apt-get >/dev/null || die "apt-get not available; install $* manually"
	APT_OUT="$CACHE/.apt-output.$$"
	log "apt-get install $* (if another apt/dpkg process holds the lock, waits up to ${APT_LOCK_TIMEOUT}s and names it)"
	if apt_get install -y --no-upgrade "$@"; then rm -f "$APT_OUT"; return; fi
	# A set-up stopped mid-install (Ctrl-C, a killed CI job) leaves dpkg
	# "interrupted": apt refuses every install until dpkg --configure -a.
	if grep -q "dpkg was interrupted" "$APT_OUT"; then
		dpkg_configure_pending
		if apt_get install -y --no-upgrade "$@"; then rm -f "$APT_OUT"; return; fi
	fi
	apt_lock_timed_out && die "apt-get install $*: another apt/dpkg process held the lock for more than ${APT_LOCK_TIMEOUT}s ($(apt_lock_holders | paste -sd';' || true)); wait for it to finish or raise APT_LOCK_TIMEOUT, then re-run"
	# Usually empty package lists on a fresh machine: update, then retry.
	local deadline=$((SECONDS + APT_LOCK_TIMEOUT))
	until apt_get update; do
		if apt_lock_timed_out && ((SECONDS < deadline)); then
			log "apt-get update: another process held the apt lists lock ($(apt_lock_holders "$LISTS_LOCK" | paste -sd';' | grep . || echo "released since")); apt-get update cannot wait for it itself: retrying in 10s"
			sleep 10
			continue
		fi
		die "apt-get update failed"
	done
	apt_get install -y --no-upgrade "$@" || die "apt-get install $* failed$(apt_lock_timed_out && echo ": the apt/dpkg lock stayed held for more than ${APT_LOCK_TIMEOUT}s")"
	rm -f "$APT_OUT"
}

# dpkg_configure_pending: finish what an interrupted dpkg run left unpacked,
# as apt asks. dpkg has no lock timeout of its own, so while another apt/dpkg
# process holds the lock it is retried, naming the holder, up to APT_LOCK_TIMEOUT.
dpkg_configure_pending() {
	local dpkg=(env DEBIAN_FRONTEND=noninteractive dpkg --configure -a)
	[[ $(id -u) -ne 0 ]] && dpkg=(sudo "${dpkg[@]}")
	local deadline=$((SECONDS + APT_LOCK_TIMEOUT)) holders
	log "apt-get install: an earlier install was interrupted; running dpkg --configure -a (as apt asks), then installing again"
	# pipefail: the loop sees dpkg's status, not sed's.
	until "${dpkg[@]}" 2>&1 | sed -u 's/^/[build-binaries] dpkg --configure -a: /' >&2; do
		# shellcheck disable=SC2086 # two paths
		holders=$(apt_lock_holders $DPKG_LOCKS | paste -sd';')
		if [[ -z "$holders" ]] || ((SECONDS >= deadline)); then
			die "dpkg --configure -a failed${holders:+ ($holders)}; run it by hand, then re-run"
		fi
		log "dpkg --configure -a: waiting for the apt/dpkg lock, $holders; retrying in 10s"
		sleep 10
	done
}

build_debian() {
	local missing
	read -r -a missing <<<"$(debian_missing | tr '\n' ' ')"
	# LEANMESH_APT_ALWAYS=1 runs the install even when nothing is missing (a
	# no-op for apt that still takes its locks: the dpkg-lock test uses it).
	if [[ ${#missing[@]} -eq 0 && "${LEANMESH_APT_ALWAYS:-}" == 1 ]]; then
		apt_install etcd-server etcd-client shellcheck prometheus gcc
	elif [[ ${#missing[@]} -gt 0 ]]; then
		apt_install "${missing[@]}"
		# Debian's package enables a system service; the tests start their own servers.
		if command -v systemctl >/dev/null && [[ " ${missing[*]} " == *" prometheus "* ]]; then
			systemctl disable --now prometheus >/dev/null 2>&1 || true
		fi
		missing=()
		read -r -a missing <<<"$(debian_missing | tr '\n' ' ')"
		[[ ${#missing[@]} -eq 0 ]] || die "installed but still missing: ${missing[*]}"
	fi
	log "debian: etcd $(/usr/bin/etcd --version 2>/dev/null | awk 'NR==1{print $3}'), shellcheck $(shellcheck --version | awk '/^version/{print $2}'), $(prometheus --version 2>&1 | awk 'NR==1{print $3}') prometheus + promtool, gcc $(gcc -dumpfullversion)"
}

# go_install NAME MODULE_PATH/cmd VERSION LDFLAGS: a module that builds with
# `go install pkg@version` (no replace directives), into $CACHE/bin/NAME-VERSION.
go_install() {
	local name="$1" pkg="$2" ver="$3" ldflags="$4" out="$CACHE/bin/$1-$3"
	if [[ -x "$out/$name" ]]; then log "$name $ver: cached at $out/$name"; return; fi
	log "$name $ver: go install $pkg@$ver"
	local start tmp
	start=$(date +%s)
	tmp=$(mktemp -d "$CACHE/bin/.$name-XXXXXX")
	GOBIN="$tmp" go install -trimpath -ldflags "$ldflags" "$pkg@$ver" >&2 || { rm -rf "$tmp"; die "go install $pkg@$ver failed"; }
	mkdir -p "$out"
	mv "$tmp/$name" "$out/$name" && rm -rf "$tmp" # atomic: a partial binary never looks cached
	log "$name $ver: built in $(($(date +%s) - start))s -> $out/$name"
}

# helm: the CLI users run, so the chart tests see Helm's real renderer, lint
# rules and schema validation. Its default Kubernetes version is set the way
# Helm's Makefile sets it (from its client-go requirement): without it, it
# assumes 1.20 and refuses the chart's kubeVersion.
build_helm() {
	local gomod minor
	gomod=$(go mod download -json "helm.sh/helm/v3@$HELM_VERSION" | sed -n 's/^[[:space:]]*"GoMod": "\(.*\)",$/\1/p')
	[[ -f "$gomod" ]] || die "cannot download helm.sh/helm/v3@$HELM_VERSION"
	minor=$(awk '$1=="k8s.io/client-go" {split($2, v, "."); print v[2]}' "$gomod")
	[[ -n "$minor" ]] || die "helm $HELM_VERSION: no k8s.io/client-go requirement in its go.mod"
	go_install helm helm.sh/helm/v3/cmd/helm "$HELM_VERSION" "-s -w \
		-X helm.sh/helm/v3/internal/version.version=$HELM_VERSION -X helm.sh/helm/v3/internal/version.gitTreeState=clean \
		-X helm.sh/helm/v3/pkg/lint/rules.k8sVersionMajor=1 -X helm.sh/helm/v3/pkg/lint/rules.k8sVersionMinor=$minor \
		-X helm.sh/helm/v3/pkg/chartutil.k8sVersionMajor=1 -X helm.sh/helm/v3/pkg/chartutil.k8sVersionMinor=$minor"
}

build_golangci_lint() {
	go_install golangci-lint github.com/golangci/golangci-lint/v2/cmd/golangci-lint "$GOLANGCI_LINT_VERSION" \
		"-s -w -X main.version=${GOLANGCI_LINT_VERSION#v}"
}

build_controller_gen() {
	go_install controller-gen sigs.k8s.io/controller-tools/cmd/controller-gen "$CONTROLLER_GEN_VERSION" "-s -w"
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
	log "$name $K8S_VERSION: go build (~8 min cold on 2 idle cores, far longer on a busy machine)"
	start=$(date +%s)
	mkdir -p "$out"
	(cd "$dir" && go build -trimpath -ldflags "-s -w \
		-X k8s.io/component-base/version.gitVersion=$K8S_VERSION \
		-X k8s.io/component-base/version.gitMajor=1 \
		-X k8s.io/component-base/version.gitMinor=$minor \
		-X k8s.io/client-go/pkg/version.gitVersion=$K8S_VERSION" \
		-o "$out/$name.tmp.$$" "k8s.io/kubernetes/cmd/$name" >&2) || die "go build $name $K8S_VERSION failed"
	mv "$out/$name.tmp.$$" "$out/$name" # atomic: a partial binary never looks cached
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
	log "pilot-discovery $ISTIO_VERSION: go build (~5-9 min cold on 2 idle cores, far longer on a busy machine)"
	local start
	start=$(date +%s)
	mkdir -p "$out"
	(cd "$dir" && go build -trimpath -ldflags '-s -w' -o "$out/pilot-discovery.tmp.$$" istio.io/istio/pilot/cmd/pilot-discovery >&2) ||
		die "go build pilot-discovery failed"
	mv "$out/pilot-discovery.tmp.$$" "$out/pilot-discovery"
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
	cp "$moddir/kubernetes/customresourcedefinitions.gen.yaml" "$out/.tmp.$$.yaml"
	chmod 0644 "$out/.tmp.$$.yaml"
	mv "$out/.tmp.$$.yaml" "$out/customresourcedefinitions.gen.yaml"
	log "istio CRDs $ISTIO_API_VERSION: $out/customresourcedefinitions.gen.yaml"
}

# prometheus-operator's ServiceMonitor and PodMonitor CRDs, as its releases
# ship them, so charts using them are checked by the real API server.
fetch_monitoring_crds() {
	local out="$CACHE/crds/prometheus-operator-$PROMETHEUS_OPERATOR_VERSION" f
	if [[ -s "$out/monitoring.coreos.com_servicemonitors.yaml" && -s "$out/monitoring.coreos.com_podmonitors.yaml" ]]; then
		log "prometheus-operator CRDs $PROMETHEUS_OPERATOR_VERSION: cached"
		return
	fi
	local moddir
	moddir=$(go mod download -json "github.com/prometheus-operator/prometheus-operator@$PROMETHEUS_OPERATOR_VERSION" | sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p')
	[[ -d "$moddir/example/prometheus-operator-crd" ]] || die "cannot download github.com/prometheus-operator/prometheus-operator@$PROMETHEUS_OPERATOR_VERSION"
	mkdir -p "$out"
	for f in monitoring.coreos.com_servicemonitors.yaml monitoring.coreos.com_podmonitors.yaml; do
		cp "$moddir/example/prometheus-operator-crd/$f" "$out/.$f.$$"
		chmod 0644 "$out/.$f.$$"
		mv "$out/.$f.$$" "$out/$f"
	done
	log "prometheus-operator CRDs $PROMETHEUS_OPERATOR_VERSION: $out"
}

paths() {
	echo "CACHE=$CACHE"
	echo "KUBE_APISERVER=$CACHE/bin/kube-apiserver-$K8S_VERSION/kube-apiserver"
	echo "PILOT_DISCOVERY=$CACHE/bin/pilot-discovery-$ISTIO_VERSION/pilot-discovery"
	echo "ETCD=/usr/bin/etcd"
	echo "ISTIO_CRDS=$CACHE/crds/istio-api-$ISTIO_API_VERSION/customresourcedefinitions.gen.yaml"
	echo "MONITORING_CRDS=$CACHE/crds/prometheus-operator-$PROMETHEUS_OPERATOR_VERSION"
	echo "HELM=$CACHE/bin/helm-$HELM_VERSION/helm"
	echo "GOLANGCI_LINT=$CACHE/bin/golangci-lint-$GOLANGCI_LINT_VERSION/golangci-lint"
	echo "CONTROLLER_GEN=$CACHE/bin/controller-gen-$CONTROLLER_GEN_VERSION/controller-gen"
}

# one TARGET: builds one artifact under its own lock.
one() {
	case "$1" in
	debian | etcd | tools) locked debian build_debian ;;
	# Both build from one scratch module: one lock.
	kube-apiserver) locked kubernetes k8s_build kube-apiserver ;;
	kubectl) locked kubernetes build_kubectl ;;
	pilot-discovery) locked pilot-discovery build_pilot ;;
	crds) locked crds fetch_crds ;;
	monitoring-crds) locked monitoring-crds fetch_monitoring_crds ;;
	helm) locked helm build_helm ;;
	golangci-lint) locked golangci-lint build_golangci_lint ;;
	controller-gen) locked controller-gen build_controller_gen ;;
	paths) paths ;;
	*) die "unknown target $1" ;;
	esac
}

# parallel TARGET...: independent artifacts build side by side (downloads
# overlap compiles; apt waits for its lock without holding up the Go builds).
# Every failed target is named at the end.
parallel() {
	local t i pids=() names=() failed=()
	for t in "$@"; do
		one "$t" &
		pids+=($!)
		names+=("$t")
	done
	for i in "${!pids[@]}"; do
		wait "${pids[$i]}" || failed+=("${names[$i]}")
	done
	[[ ${#failed[@]} -eq 0 ]] || die "failed: ${failed[*]} (re-run to resume; finished artifacts stay cached)"
}

[[ $# -eq 0 ]] && set -- all
for what in "$@"; do
	case "$what" in
	all) parallel debian crds monitoring-crds kubectl helm golangci-lint controller-gen kube-apiserver pilot-discovery ;;
	# What e2e/cluster's Start needs.
	cluster) parallel debian crds kube-apiserver pilot-discovery ;;
	*) one "$what" ;;
	esac
done
[[ " $* " == *" paths "* ]] || log "done"
