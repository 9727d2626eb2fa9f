// Package scale measures what lazy xDS saves against a real istiod: a mesh
// of N services (default 1,000), a non-lazy sidecar seeing all of them and a
// lazy sidecar scoped by the Sidecar the lazy-xDS pipeline renders, and the
// time from an access-log entry at the egress to the new cluster reaching
// the lazy sidecar (ALS gRPC → graph → Sidecar → istiod → ADS).
package scale
