# leanmesh — make build | test | bench | so-matrix | demo
SHELL := /bin/bash
GO ?= go
BIN := $(CURDIR)/bin
# The default target release comes from the version matrix (the row marked "default").
MATRIX := envoy-build/versions.tsv
ISTIO_VERSION ?= $(shell awk '!/^\#/ && $$9=="default" {print $$1}' $(MATRIX))
# $(call row,N): column N of ISTIO_VERSION's row (2 envoy, 3 sdk_module, 4 build_tag, 5 go_builder_image,
# 7 proxyv2_image); empty when the release is not in the matrix.
row = $(shell awk -v istio='$(ISTIO_VERSION)' '!/^\#/ && $$1==istio {print $$$(1)}' $(MATRIX))
ENVOY_VERSION ?= $(call row,2)
# The one version of leanmesh: the chart's appVersion (images, the controller's version, chart defaults).
LEANMESH_VERSION ?= $(shell awk '$$1=="appVersion:" {gsub(/"/,"",$$2); print $$2}' charts/leanmesh/Chart.yaml)
GOFLAGS_SO := -buildmode=c-shared -trimpath -ldflags "-s -w"
TEST_TIMEOUT ?= 45m

.PHONY: all build so controller demo setup cluster-binaries generate manifests verify test unit-test integration-test vet lint bench bench-filters bench-dataplane bench-scale clean fmt controller-image fuzz soak

all: build

include e2e/envoyhost/host.mk

build: so controller bin/envoyhost

# The one set-up script: Debian tools (etcd, shellcheck, prometheus, gcc; waits for a busy dpkg lock) and Go-built tools cached by version
# (kube-apiserver, istiod, helm, golangci-lint, controller-gen). Idempotent; `make test` runs it first.
SETUP := e2e/cluster/build-binaries.sh
# $(call tool,NAME): the cached path of a tool the set-up script builds (HELM, GOLANGCI_LINT, CONTROLLER_GEN).
tool = $(shell $(SETUP) paths 2>/dev/null | awk -F= '$$1=="$(1)" {print $$2}')
CONTROLLER_GEN ?= $(call tool,CONTROLLER_GEN)
GOLANGCI_LINT ?= $(call tool,GOLANGCI_LINT)

# RBAC per feature: config/rbac/<feature>/role.yaml holds what the markers in one package ask for; the
# chart grants a feature's file only when the feature is on (charts/leanmesh/files/rbac are copies).
# config/rbac/role.yaml is every feature together.
RBAC_FEATURES := core=./controller/install/... leader-election=./controller/cmd/leanmesh metrics-auth=./controller/metricsserving \
	lazyxds=./controller/lazyxdsctl workload-table=./controller/workloadtable

# Regenerates deepcopy, CRD and RBAC YAML and the chart's copies (all committed; `make verify` checks them).
generate:
	@$(SETUP) controller-gen
	$(CONTROLLER_GEN) object paths=./controller/api/... crd:allowDangerousTypes=true paths=./controller/api/... \
	  output:crd:artifacts:config=config/crd/bases
	$(CONTROLLER_GEN) rbac:roleName=leanmesh-controller $(foreach f,$(RBAC_FEATURES),paths=$(word 2,$(subst =, ,$(f)))) \
	  output:rbac:artifacts:config=config/rbac
	@mkdir -p charts/leanmesh/files/rbac
	$(foreach f,$(RBAC_FEATURES),$(CONTROLLER_GEN) rbac:roleName=leanmesh-controller-$(word 1,$(subst =, ,$(f))) \
	  paths=$(word 2,$(subst =, ,$(f))) output:rbac:artifacts:config=config/rbac/$(word 1,$(subst =, ,$(f))) && \
	  cp config/rbac/$(word 1,$(subst =, ,$(f)))/role.yaml charts/leanmesh/files/rbac/$(word 1,$(subst =, ,$(f))).yaml && ) true
	cp config/crd/bases/*.yaml charts/leanmesh/crds/

# Plain EnvoyFilter manifests for users without the controller; a no-op on a clean tree.
manifests:
	$(GO) run ./controller/cmd/leanmesh render --out envoyfilters

controller: $(BIN)/leanmesh
$(BIN)/leanmesh: go.mod go.sum envoy-build/versions.tsv $(shell find controller -name '*.go' -not -name '*_test.go')
	@mkdir -p $(BIN)
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags "-s -w -X main.version=$(LEANMESH_VERSION)" -o $@ ./controller/cmd/leanmesh

so: $(BIN)/leanmesh.so

# Rebuilt whenever any Go file under filters/ or go.mod changes.
$(BIN)/leanmesh.so: go.mod go.sum $(shell find filters -name '*.go' -not -name '*_test.go')
	@mkdir -p $(BIN)
	CGO_ENABLED=1 $(GO) build $(GOFLAGS_SO) -o $@ ./filters/cmd/leanmesh

# leanmesh.so for every matrix row whose SDK the module proxy serves: bin/leanmesh-envoy<envoy>.so, each
# with its row's build tag and an alternate modfile (bin/sdk/go.<tag>.mod); bin/so-matrix.tsv lists what
# was built or skipped and why. envoy-build's TestSoMatrix checks each file's ABI, links and glibc.
so-matrix:
	GO=$(GO) BIN=$(BIN) envoy-build/so-matrix.sh

# Images (need Docker with BuildKit; `docker` alone is not enough without an engine). Names follow the
# row: the proxy image per Istio release, the library images per Envoy version.
IMAGE_REPO ?= ghcr.io/leanmesh
PROXY_IMAGE ?= $(IMAGE_REPO)/proxyv2:$(ISTIO_VERSION)-leanmesh$(LEANMESH_VERSION)
LIBRARY_IMAGE ?= $(IMAGE_REPO)/leanmesh-library:$(LEANMESH_VERSION)-envoy$(ENVOY_VERSION)
LIBRARY_INIT_IMAGE ?= $(LIBRARY_IMAGE)-init
# The chart's default image.repository:appVersion (a chart test keeps them equal).
CONTROLLER_IMAGE ?= $(IMAGE_REPO)/leanmesh:$(LEANMESH_VERSION)
DOCKER ?= docker
DOCKER_BUILD = $(DOCKER) build -f envoy-build/Dockerfile \
	--build-arg GO_BUILDER_IMAGE=$(call row,5) --build-arg PROXYV2_IMAGE=$(call row,7) \
	--build-arg ISTIO_VERSION=$(ISTIO_VERSION) --build-arg ENVOY_VERSION=$(call row,2) \
	--build-arg SDK_MODULE=$(call row,3) --build-arg BUILD_TAG=$(call row,4) \
	--build-arg LEANMESH_VERSION=$(LEANMESH_VERSION)
# Expands to nothing, or stops make with the known releases (also under make -n).
check-row = $(if $(call row,1),,$(error ISTIO_VERSION=$(ISTIO_VERSION) is not a row of $(MATRIX); known: $(shell awk '!/^\#/ && NF>=9 {printf "%s ", $$1}' $(MATRIX))))

docker-check:
	@$(check-row)command -v $(DOCKER) >/dev/null 2>&1 || { echo "make: '$(DOCKER)' not found. Building images needs Docker (BuildKit) or DOCKER=<compatible CLI>; without it use make so-matrix and the pre-built images (docs/install.md)." >&2; exit 1; }
	@$(DOCKER) info >/dev/null 2>&1 || { echo "make: '$(DOCKER) info' fails: no usable container engine here (daemon not running or not reachable). Images cannot be built on this machine; make so-matrix builds the libraries, and envoy-build's TestDockerfile checks the Dockerfile statically." >&2; exit 1; }

# istio/proxyv2:<ISTIO_VERSION> + /etc/leanmesh/leanmesh.so, e.g. make image ISTIO_VERSION=1.29.2
image: docker-check
	$(check-row)$(DOCKER_BUILD) --target proxyv2 -t $(PROXY_IMAGE) .

# The library-only image (image volumes) and its init-container variant, for stock proxyv2 sidecars.
library-image: docker-check
	$(check-row)$(DOCKER_BUILD) --target library -t $(LIBRARY_IMAGE) .
	$(DOCKER_BUILD) --target library-init -t $(LIBRARY_INIT_IMAGE) .

# The controller: a static binary on distroless, non-root (stages controller-build and controller).
controller-image: docker-check
	$(DOCKER) build -f envoy-build/Dockerfile --target controller --build-arg GO_BUILDER_IMAGE=$(call row,5) \
	  --build-arg LEANMESH_VERSION=$(LEANMESH_VERSION) -t $(CONTROLLER_IMAGE) .

print-images:
	@$(check-row)echo "PROXY_IMAGE=$(PROXY_IMAGE)"; echo "LIBRARY_IMAGE=$(LIBRARY_IMAGE)"; echo "LIBRARY_INIT_IMAGE=$(LIBRARY_INIT_IMAGE)"; echo "CONTROLLER_IMAGE=$(CONTROLLER_IMAGE)"

# The pod-template patch for stock sidecars: make pod-patch ISTIO_VERSION=1.31.1 MODE=imageVolume|initContainer|image
MODE ?= imageVolume
pod-patch:
	@$(check-row)$(GO) run ./envoy-build/cmd/podpatch -istio $(ISTIO_VERSION) -mode $(MODE) \
	  -image $(if $(filter image,$(MODE)),$(PROXY_IMAGE),$(if $(filter initContainer,$(MODE)),$(LIBRARY_INIT_IMAGE),$(LIBRARY_IMAGE)))

# gofmt, file length (a file over MAX_GO_LINES is usually two concepts), go vet, then golangci-lint:
# `make test` fails on any finding.
MAX_GO_LINES := 600
vet:
	@unformatted=$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go')); \
	  if [ -n "$$unformatted" ]; then echo "gofmt needed:"; echo "$$unformatted"; exit 1; fi
	@long=$$(git ls-files -co --exclude-standard '*.go' | grep -v 'zz_generated' | xargs wc -l | \
	  awk '$$2 != "total" && $$1 > $(MAX_GO_LINES) {print $$2}' | while read -r f; do \
	    head -n 10 "$$f" | grep -q 'Long file:' || echo "  $$f ($$(wc -l <"$$f") lines)"; done); \
	  if [ -n "$$long" ]; then echo "Go files over $(MAX_GO_LINES) lines (split at a seam, or give the reason in a 'Long file:' comment in the first 10 lines):"; echo "$$long"; exit 1; fi
	$(GO) vet ./...
	cd e2e/promoperator && $(GO) vet ./...
	@$(MAKE) --no-print-directory lint

# golangci-lint, pinned in the set-up script (which `make setup` runs; installed here too when missing),
# linters in .golangci.yml; the nested module e2e/promoperator is linted with the same config.
lint:
	@$(SETUP) golangci-lint
	$(GOLANGCI_LINT) run ./...
	cd e2e/promoperator && $(GOLANGCI_LINT) run ./...

# Generated files that must equal what the generators write (kubebuilder's verify step): regenerates
# them and fails, naming each file, when anything changed. The tree is left regenerated: commit it.
GENERATED := controller/api/v1alpha1/zz_generated.deepcopy.go config/crd config/rbac charts/leanmesh/crds \
	charts/leanmesh/files/rbac envoyfilters
verify:
	@sum() { find $(GENERATED) -type f 2>/dev/null | LC_ALL=C sort | xargs sha256sum; }; \
	  before=$$(sum); \
	  $(MAKE) -s generate manifests >/dev/null || exit 1; \
	  changed=$$(diff <(echo "$$before") <(sum) | awk '/^[<>]/ {print $$3}' | sort -u); \
	  if [ -n "$$changed" ]; then \
	    echo "make verify: generated files were stale (now regenerated; review and commit them):" >&2; \
	    echo "$$changed" | sed 's/^/  /' >&2; exit 1; \
	  fi; echo "verify: generated files are up to date"

# Tools and binaries every test needs, installed or built once (see SETUP).
setup:
	$(SETUP) all
cluster-binaries:
	$(SETUP) cluster

# Pure packages (no real cluster, C test host, helm or built libraries): run under -race.
UNIT_PKGS = $(shell $(GO) list -f '{{.ImportPath}} {{join .Imports " "}} {{join .TestImports " "}} {{join .XTestImports " "}}' ./... | \
	awk '$$1 !~ /\/(e2e|charts)\// && $$1 !~ /\/(envoy-build|config)$$/ && !/\/e2e\/(cluster|envoyhost)/ {print $$1}')

# Every test that can run on this machine: set-up, generated files, lint, the pure packages under -race,
# then everything else (etcd, kube-apiserver and istiod on loopback, the C host, helm, the so-matrix).
test: setup verify vet build so-matrix
	$(MAKE) unit-test
	$(MAKE) integration-test

unit-test:
	$(GO) test -race -count=1 $(UNIT_PKGS)

# e2e/promoperator is a nested module (prometheus-operator's own config generator): not in ./...
integration-test:
	cd e2e/promoperator && $(GO) test -count=1 ./...
	LEANMESH_REQUIRE_SO_MATRIX=1 $(GO) test -count=1 -timeout $(TEST_TIMEOUT) $(filter-out $(UNIT_PKGS),$(shell $(GO) list ./...))

# The main job: etcd + kube-apiserver + istiod on loopback, the controller, a sample mesh, two test
# hosts loading leanmesh.so with istiod's config. Ctrl-C cleans up; `make demo DEMO_FLAGS=--once` exits.
demo: cluster-binaries
	$(GO) run ./e2e/demo/cmd/leanmesh-demo $(DEMO_FLAGS)

# Benchmarks; docs/performance.md records their output.
bench: bench-filters bench-dataplane bench-scale

bench-filters:
	$(GO) test -run '^$$' -bench . -benchmem ./filters/...

# Lazy xDS against a real istiod with LEANMESH_SCALE_SERVICES services (default 1000), then seeding from a
# real Prometheus at LEANMESH_SEED_SERVICES / LEANMESH_SEED_EDGES (default 10,000 / 100,000).
bench-scale: cluster-binaries
	$(GO) test -run '^$$' -bench 'LazyXDSScale|SeedScale' -benchtime=1x -timeout 40m ./e2e/scale/

# Side by side through the C ABI host: floor, no-op filter, leanmesh, SDK metrics.
bench-dataplane:
	$(GO) test -run '^$$' -bench DataPlane -benchtime=1x -timeout 30m ./e2e/dataplane/

# Every fuzz target in the repository, each for FUZZTIME (not part of make test). Targets are found by
# name, so a new Fuzz function is picked up without editing this file; docs/security.md records a run.
FUZZTIME ?= 1m
fuzz:
	@set -e; n=0; for dir in $$(grep -rl --include='*_test.go' '^func Fuzz' filters controller e2e | xargs -n1 dirname | sort -u); do \
	  for t in $$(grep -h '^func Fuzz' $$dir/*_test.go | sed 's/^func \(Fuzz[A-Za-z0-9_]*\).*/\1/'); do \
	    echo "== ./$$dir $$t ($(FUZZTIME))"; n=$$((n+1)); \
	    $(GO) test -run '^$$' -fuzz "^$$t\$$" -fuzztime $(FUZZTIME) ./$$dir; \
	  done; done; echo "fuzz: $$n targets passed, $(FUZZTIME) each"

# Soak: e2e/dataplane TestSoakProxy (honest and hostile traffic through two libraries in the C host) and
# e2e/hostile TestSoakMesh (the real controller and istiod on a real kube-apiserver, two C hosts running the
# filter config istiod pushes, while the policy switches modes, the controller and istiod restart and ALS is
# flooded), for SOAK; both print memory, series and loss over time. TestSoakMesh's one-cycle variant runs in
# make test. docs/security.md records a 30-minute run.
SOAK ?= 5m
SOAK_TIMEOUT ?= 3h
# The two packages run as two go test processes so each streams its lines as they come.
soak: cluster-binaries
	@LEANMESH_SOAK=$(SOAK) $(GO) test -count=1 -v -timeout $(SOAK_TIMEOUT) -run '^TestSoak' ./e2e/dataplane & proxy=$$!; \
	  LEANMESH_SOAK=$(SOAK) $(GO) test -count=1 -v -timeout $(SOAK_TIMEOUT) -run '^TestSoak' ./e2e/hostile; rc=$$?; \
	  wait $$proxy && exit $$rc

fmt:
	gofmt -w $$(git ls-files '*.go')

clean:
	rm -rf $(BIN)
