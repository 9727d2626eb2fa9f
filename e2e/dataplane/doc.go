// Package dataplane proves the built leanmesh.so through Envoy's real C ABI:
// two envoyhost processes play a client sidecar and a server sidecar, relay
// the headers the libraries emit, and scrape each library's exposition the
// way Prometheus reaches it (an HTTP request answered by the exposition
// filter). Benchmarks compare leanmesh with a no-op filter, the boundary
// floor and the SDK's own metric API, side by side in one run.
package dataplane
