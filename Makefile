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
GOFLAGS_SO := -buildmode=c-shared -trimpath -ldflags "-s -w"
TEST_TIMEOUT ?= 45m

.PHONY: all build so controller demo cluster-binaries generate manifests test unit-test vet bench bench-filters bench-dataplane bench-scale clean fmt fuzz soak

all: build

include e2e/envoyhost/host.mk

build: so controller bin/envoyhost

CONTROLLER_GEN ?= $(GO) run sigs.k8s.io/controller-tools/cmd/controller-gen@v0.23.0

# Regenerates deepcopy, CRD and RBAC YAML (committed; a test checks the chart's copies).
generate:
	$(CONTROLLER_GEN) object paths=./controller/api/... crd:allowDangerousTypes=true \
	  rbac:roleName=leanmesh-controller paths=./controller/install/... paths=./controller/cmd/... \
	  output:crd:artifacts:config=config/crd/bases output:rbac:artifacts:config=config/rbac
	cp config/crd/bases/*.yaml charts/leanmesh/crds/

# Plain EnvoyFilter manifests for users without the controller; a no-op on a clean tree.
manifests:
	$(GO) run ./controller/cmd/leanmesh render --out envoyfilters

controller: $(BIN)/leanmesh
$(BIN)/leanmesh: go.mod go.sum envoy-build/versions.tsv $(shell find controller -name '*.go' -not -name '*_test.go')
	@mkdir -p $(BIN)
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags "-s -w" -o $@ ./controller/cmd/leanmesh

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
LEANMESH_VERSION ?= $(shell awk '$$1=="appVersion:" {gsub(/"/,"",$$2); print $$2}' charts/leanmesh/Chart.yaml)
PROXY_IMAGE ?= $(IMAGE_REPO)/proxyv2:$(ISTIO_VERSION)-leanmesh$(LEANMESH_VERSION)
LIBRARY_IMAGE ?= $(IMAGE_REPO)/leanmesh-library:$(LEANMESH_VERSION)-envoy$(ENVOY_VERSION)
LIBRARY_INIT_IMAGE ?= $(LIBRARY_IMAGE)-init
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

print-images:
	@$(check-row)echo "PROXY_IMAGE=$(PROXY_IMAGE)"; echo "LIBRARY_IMAGE=$(LIBRARY_IMAGE)"; echo "LIBRARY_INIT_IMAGE=$(LIBRARY_INIT_IMAGE)"

# The pod-template patch for stock sidecars: make pod-patch ISTIO_VERSION=1.31.1 MODE=imageVolume|initContainer|image
MODE ?= imageVolume
pod-patch:
	@$(check-row)$(GO) run ./envoy-build/cmd/podpatch -istio $(ISTIO_VERSION) -mode $(MODE) \
	  -image $(if $(filter image,$(MODE)),$(PROXY_IMAGE),$(if $(filter initContainer,$(MODE)),$(LIBRARY_INIT_IMAGE),$(LIBRARY_IMAGE)))

vet:
	@unformatted=$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go')); \
	  if [ -n "$$unformatted" ]; then echo "gofmt needed:"; echo "$$unformatted"; exit 1; fi
	$(GO) vet ./...

# Every test that can run on this machine. Pure packages run under -race.
# etcd (Debian), kube-apiserver and istiod built from their Go modules (~19 min cold on 2 cores),
# cached by version under ~/.cache/leanmesh; a warm run takes well under a second.
cluster-binaries:
	e2e/cluster/build-binaries.sh

test: vet build so-matrix cluster-binaries
	$(GO) run ./controller/cmd/leanmesh render --out envoyfilters -check
	cd e2e/promoperator && $(GO) test -count=1 ./...
	$(GO) test -race -count=1 ./filters/...
	LEANMESH_REQUIRE_SO_MATRIX=1 $(GO) test -count=1 -timeout $(TEST_TIMEOUT) $$($(GO) list ./... | grep -v '/filters/')

unit-test:
	$(GO) test -race ./filters/...

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

# Soak (not part of make test): honest and hostile traffic through two libraries in the C host
# (e2e/dataplane TestSoakProxy) and against the real controller binary's ALS, with restarts
# (e2e/hostile TestSoakController), for SOAK; both print memory, series and loss over time.
# docs/security.md records a 30-minute run.
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
