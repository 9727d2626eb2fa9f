// Package telemetry holds leanmesh's metric model: Istio's standard metric
// families and label rules, a registry of series owned by the library (not by
// Envoy's stats store), and the Prometheus text exposition.
//
// The data path reads top-down: a filter describes one request as a Key (the
// inputs of Istio's label rules, mostly interned pointers and short strings) and
// an Observation (values); Registry.RecordHTTP resolves the Key to a series in
// the calling worker's shard with one map lookup and updates atomic counters.
// Label values are derived from the Key only when a series is created, and the
// text is rendered only at scrape time.
//
// This package imports neither cgo nor the Envoy SDK, so it is tested directly.
package telemetry
