// Package lazyxds is the pure core of leanmesh's lazy-xDS loop.
//
// Access logs from the lazy egress gateway become Observations; a Graph turns
// them into learned dependencies (workload → service host) and, on Drain,
// reports the workloads whose desired Sidecar changed. Render* functions turn
// graph output into Istio and Kubernetes objects without touching a cluster,
// so the reconciler only has to apply them. See DESIGN.md for the redirect.
package lazyxds
