# leanmesh — make build | test | bench | so-matrix | demo
SHELL := /bin/bash
GO ?= go
BIN := $(CURDIR)/bin
# The default target release comes from the version matrix (the row marked "default").
MATRIX := envoy-build/versions.tsv
ISTIO_VERSION ?= $(shell awk '!/^\#/ && $$9=="default" {print $$1}' $(MATRIX))
ENVOY_VERSION ?= $(shell awk '!/^\#/ && $$9=="default" {print $$2}' $(MATRIX))
GOFLAGS_SO := -buildmode=c-shared -trimpath -ldflags "-s -w"
TEST_TIMEOUT ?= 45m

.PHONY: all build so controller demo cluster-binaries generate manifests test unit-test vet bench bench-filters bench-dataplane bench-scale clean fmt

all: build

include e2e/envoyhost/host.mk

build: so controller bin/envoyhost

CONTROLLER_GEN ?= $(GO) run sigs.k8s.io/controller-tools/cmd/controller-gen@v0.23.0

# Regenerates deepcopy, CRD and RBAC YAML (committed; a test checks the chart's copies).
generate:
	cp envoy-build/versions.tsv controller/release/versions.tsv
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

vet:
	@unformatted=$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go')); \
	  if [ -n "$$unformatted" ]; then echo "gofmt needed:"; echo "$$unformatted"; exit 1; fi
	$(GO) vet ./...

# Every test that can run on this machine. Pure packages run under -race.
# etcd (Debian), kube-apiserver and istiod built from their Go modules (~19 min cold on 2 cores),
# cached by version under ~/.cache/leanmesh; a warm run takes well under a second.
cluster-binaries:
	e2e/cluster/build-binaries.sh

test: vet build cluster-binaries
	$(GO) run ./controller/cmd/leanmesh render --out envoyfilters -check
	$(GO) test -race -count=1 ./filters/...
	$(GO) test -count=1 -timeout $(TEST_TIMEOUT) $$($(GO) list ./... | grep -v '/filters/')

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

# Lazy xDS against a real istiod with LEANMESH_SCALE_SERVICES services (default 1000).
bench-scale: cluster-binaries
	$(GO) test -run '^$$' -bench LazyXDSScale -benchtime=1x -timeout 40m ./e2e/scale/

# Side by side through the C ABI host: floor, no-op filter, leanmesh, SDK metrics.
bench-dataplane:
	$(GO) test -run '^$$' -bench DataPlane -benchtime=1x -timeout 30m ./e2e/dataplane/

fmt:
	gofmt -w $$(git ls-files '*.go')

clean:
	rm -rf $(BIN)
