# envoyhost: a C test host that loads an Envoy Go-extension .so through
# Envoy's real C ABI (see e2e/envoyhost/host.c). Include from the top
# Makefile:   include e2e/envoyhost/host.mk
#
# The host compiles against the SDK's own api.h of the pinned envoy module
# (taken from the module cache, no network needed).

ENVOYHOST_DIR     := e2e/envoyhost
ENVOYHOST_API_INC  = $(shell go list -m -f '{{.Dir}}' github.com/envoyproxy/envoy)/contrib/golang/common/go/api
ENVOYHOST_CC      ?= gcc
ENVOYHOST_CFLAGS  ?= -O2 -g -Wall

.PHONY: envoyhost envoyhost-plugins envoyhost-test envoyhost-bench

envoyhost: bin/envoyhost

bin/envoyhost: $(wildcard $(ENVOYHOST_DIR)/*.c) go.mod
	@mkdir -p bin
	$(ENVOYHOST_CC) $(ENVOYHOST_CFLAGS) -rdynamic -I$(ENVOYHOST_API_INC) -o $@ $(ENVOYHOST_DIR)/host.c -ldl -lpthread

# benchmark-only plugins (the tests build their own copies in a temp dir)
envoyhost-plugins: bin/envoyhost-noop.so bin/envoyhost-sdkstats.so

bin/envoyhost-noop.so: $(wildcard $(ENVOYHOST_DIR)/plugins/noop/*.go) go.mod
	@mkdir -p bin
	CGO_ENABLED=1 go build -buildmode=c-shared -o $@ ./$(ENVOYHOST_DIR)/plugins/noop

bin/envoyhost-sdkstats.so: $(wildcard $(ENVOYHOST_DIR)/plugins/sdkstats/*.go) go.mod
	@mkdir -p bin
	CGO_ENABLED=1 go build -buildmode=c-shared -o $@ ./$(ENVOYHOST_DIR)/plugins/sdkstats

envoyhost-test:
	go test ./$(ENVOYHOST_DIR)/...

envoyhost-bench:
	go test ./$(ENVOYHOST_DIR)/ -run '^$$' -bench . -benchtime 20000x
