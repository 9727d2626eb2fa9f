package lazyxds

import (
	"net/netip"
	"time"
)

// The graph's vocabulary: what it is fed (workloads, services, VirtualServices,
// observations) and what it hands out (dependencies, Sidecar inputs).

// WorkloadKey names a workload (a Deployment, StatefulSet, … — not a pod).
type WorkloadKey struct {
	Namespace string
	Name      string
}

func (k WorkloadKey) String() string { return k.Namespace + "/" + k.Name }

// Workload is what the graph needs to know about one workload.
type Workload struct {
	Namespace string
	Name      string
	// Labels are the pod template labels; the Sidecar selects on them.
	Labels map[string]string
	// IPs are the current pod IPs; callers are found by them.
	IPs []netip.Addr
	// Lazy is the policy decision for this workload (the reconciler's job);
	// Options.NeverLazyNamespaces overrides it.
	Lazy bool
}

func (w Workload) Key() WorkloadKey { return WorkloadKey{w.Namespace, w.Name} }

// Port is one service port.
type Port struct {
	Number uint32
	HTTP   bool
}

// Service is a Kubernetes Service or one host of a ServiceEntry.
type Service struct {
	// Namespace is where the Service/ServiceEntry lives: the "<ns>/" of Sidecar hosts.
	Namespace string
	// Host is the FQDN ("reviews.bookinfo.svc.cluster.local" or "api.example.com").
	Host         string
	Ports        []Port
	Addresses    []netip.Addr // cluster IPs / ServiceEntry addresses, for IP authorities
	ServiceEntry bool
}

// lazy reports whether the service can be hidden until first use: every port
// must be HTTP, because only HTTP traffic reaches the catch-all route that
// redirects to the egress. Anything else stays visible to everyone.
func (s *Service) lazy() bool {
	if len(s.Ports) == 0 {
		return false
	}
	for _, p := range s.Ports {
		if !p.HTTP {
			return false
		}
	}
	return true
}

// VirtualService is the part of an Istio VirtualService that changes visibility:
// a caller that depends on one of Hosts must also see every Destinations host.
type VirtualService struct {
	Namespace    string
	Name         string
	Hosts        []string // as written; short names are resolved in Namespace
	Destinations []string // route destination hosts, as written
}

// Origin says where a dependency was first learned.
type Origin uint8

const (
	// OriginAccessLog: a call through the lazy egress (ALS).
	OriginAccessLog Origin = iota
	// OriginTelemetry: an istio_requests_total edge (seedFromTelemetry).
	OriginTelemetry
)

func (o Origin) String() string {
	if o == OriginTelemetry {
		return "telemetry"
	}
	return "access_log"
}

// Dependency is one learned edge workload → service host.
type Dependency struct {
	Host      string
	FirstSeen time.Time
	LastSeen  time.Time
	Origin    Origin
}

// Observation is one access-log entry reduced to what the graph needs.
type Observation struct {
	Caller    netip.Addr // downstream remote IP at the egress
	PeerIP    netip.Addr // caller IP from peer metadata, used when Caller is unknown
	Cluster   string     // upstream_cluster, "outbound|port|subset|fqdn"
	Authority string     // request authority, used when Cluster is not usable
	At        time.Time
}

// RecordResult counts what Record did with a batch.
type RecordResult struct {
	Learned        int // new dependencies
	Refreshed      int // known dependencies, last-seen updated
	UnknownCaller  int // no workload owns the caller IP
	UnknownService int // neither cluster nor authority names a known service
	NotLazy        int // caller is not lazy (or in a never-lazy namespace)
}

// Options configure a Graph. Zero values get the documented defaults.
type Options struct {
	ClusterDomain string // default "cluster.local"
	RootNamespace string // default "istio-system"; "<root>/*" is in every Sidecar
	// EgressHost is the lazy egress gateway as a Sidecar host,
	// default "istio-system/leanmesh-lazy-egress.istio-system.svc.cluster.local".
	EgressHost string
	// ExtraHosts are Sidecar hosts ("ns/host") every lazy workload always sees.
	ExtraHosts []string
	// NeverLazyNamespaces never get a Sidecar; kube-system and RootNamespace are always included.
	NeverLazyNamespaces []string
	// Expiry drops dependencies not seen for this long; 0 keeps them forever.
	// Note that once a dependency is visible its traffic bypasses the egress,
	// so only other sources of Record (or re-learning after expiry) refresh it.
	Expiry time.Duration
	Now    func() time.Time
}

func (o Options) withDefaults() Options {
	if o.ClusterDomain == "" {
		o.ClusterDomain = "cluster.local"
	}
	if o.RootNamespace == "" {
		o.RootNamespace = "istio-system"
	}
	if o.EgressHost == "" {
		o.EgressHost = o.RootNamespace + "/" + DefaultEgressName + "." + o.RootNamespace + ".svc." + o.ClusterDomain
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	return o
}

// SidecarInput is everything RenderSidecar needs for one workload.
type SidecarInput struct {
	Workload Workload
	// Peers are the other workloads of the namespace; the selector must not match them.
	Peers []Workload
	// Hosts are the Sidecar egress hosts, sorted and unique.
	Hosts []string
	// Deps are the learned dependencies, sorted by host.
	Deps []Dependency
}

// SidecarChange is one entry of Drain: write Input's Sidecar, or delete it.
type SidecarChange struct {
	Workload WorkloadKey
	Delete   bool
	Input    SidecarInput // zero when Delete
}

type depTimes struct {
	first, last int64 // unix nanoseconds
	origin      Origin
}

type vsKey struct{ ns, name string }

type vsEntry struct {
	ns    string
	hosts []string // FQDNs
	dests []string // FQDNs
}
