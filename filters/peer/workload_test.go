package peer

import (
	"testing"
)

func TestWorkloadFromNilStruct(t *testing.T) {
	w, err := WorkloadFromStruct(nil)
	if err != nil || *w != (Workload{}) {
		t.Errorf("got %+v, %v", w, err)
	}
}

func TestOwnerWorkload(t *testing.T) {
	for _, tc := range []struct {
		owner, want string
	}{
		{"kubernetes://apis/apps/v1/namespaces/data/statefulsets/redis", "redis"},
		{"kubernetes://apis/apps/v1/namespaces/bookinfo/deployments/reviews-v2", "reviews-v2"},
		{"kubernetes://apis/batch/v1/namespaces/ops/jobs/backup-1", "backup-1"},
		{"kubernetes://apis/v1/namespaces/default/pods/bare", "bare"},
		{"kubernetes://apis/apps/v1/namespaces/data/statefulsets/", ""},
		{"kubernetes://apis/apps/v1/namespaces/data/statefulsets", ""},
		{"kubernetes://apis/apps/v1/namespaces//statefulsets/x", ""},
		{"kubernetes://apis/apps/v1/namespaces/a/b/c/d", ""},
		{"spiffe://cluster.local/ns/a/sa/b", ""},
		{"", ""},
	} {
		if got, ok := ownerWorkload(tc.owner); got != tc.want || ok != (tc.want != "") {
			t.Errorf("ownerWorkload(%q) = %q, %v; want %q", tc.owner, got, ok, tc.want)
		}
	}
}

func TestOwnerKind(t *testing.T) {
	for _, tc := range []struct {
		owner, workload, want string
	}{
		{"kubernetes://apis/apps/v1/namespaces/ns/deployments/web", "web", "deployment"},
		{"kubernetes://apis/batch/v1/namespaces/ns/jobs/j", "j", "job"},
		{"kubernetes://apis/batch/v1/namespaces/ns/cronjobs/c", "c", "cronjob"},
		{"kubernetes://apis/v1/namespaces/ns/pods/p", "p", "pod"},
		{"kubernetes://apis/apps/v1/namespaces/ns/statefulsets/s", "s", ""},
		{"kubernetes://apis/apps/v1/namespaces/ns/replicasets/r", "r", ""},
		{"kubernetes://apis/apps/v1/namespaces/ns/daemonsets/d", "d", ""},
		// Istio strips len(workload)+2 bytes without checking them.
		{"kubernetes://apis/apps/v1/namespaces/ns/deployments/web", "xyz", "deployment"},
		{"kubernetes://apis/apps/v1/namespaces/ns/deployments/web", "", ""},
		{"s/web", "web", ""},
		{"", "", ""},
	} {
		if got := ownerKind(tc.owner, tc.workload); got != tc.want {
			t.Errorf("ownerKind(%q, %q) = %q, want %q", tc.owner, tc.workload, got, tc.want)
		}
	}
}

func TestParseWorkloadMetadata(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want *Workload
	}{
		{"reviews-v1;bookinfo;reviews;v1;Kubernetes", &Workload{
			Name: "reviews-v1", Namespace: "bookinfo", CanonicalService: "reviews", CanonicalRevision: "v1", Cluster: "Kubernetes",
		}},
		{"w;ns;svc;rev;cluster;extra;more", &Workload{
			Name: "w", Namespace: "ns", CanonicalService: "svc", CanonicalRevision: "rev", Cluster: "cluster",
		}},
		{";;;;", &Workload{}},
		{"w;ns;;;", &Workload{Name: "w", Namespace: "ns"}},
		{"w;ns;svc;rev", nil},
		{"", nil},
		{"no separators", nil},
	} {
		got, ok := ParseWorkloadMetadata(tc.in)
		if ok != (tc.want != nil) || (ok && *got != *tc.want) {
			t.Errorf("ParseWorkloadMetadata(%q) = %+v, %v; want %+v", tc.in, got, ok, tc.want)
		}
	}
}

func TestParseSPIFFE(t *testing.T) {
	for _, tc := range []struct {
		in         string
		td, ns, sa string
		ok         bool
	}{
		{"spiffe://cluster.local/ns/bookinfo/sa/reviews", "cluster.local", "bookinfo", "reviews", true},
		{"spiffe://example.org/ns/a-b/sa/c.d", "example.org", "a-b", "c.d", true},
		{"spiffe://cluster.local/ns//sa/x", "", "", "", false},
		{"spiffe://cluster.local/ns/a/sa/", "", "", "", false},
		{"spiffe://cluster.local/ns/a/sa/b/extra", "", "", "", false},
		{"spiffe://cluster.local/sa/b/ns/a", "", "", "", false},
		{"spiffe:///ns/a/sa/b", "", "", "", false},
		{"spiffe://cluster.local", "", "", "", false},
		{"https://cluster.local/ns/a/sa/b", "", "", "", false},
		{"", "", "", "", false},
	} {
		td, ns, sa, ok := ParseSPIFFE(tc.in)
		if td != tc.td || ns != tc.ns || sa != tc.sa || ok != tc.ok {
			t.Errorf("ParseSPIFFE(%q) = %q, %q, %q, %v", tc.in, td, ns, sa, ok)
		}
	}
}

func TestPeerNamespace(t *testing.T) {
	for _, tc := range []struct {
		principal, claimed, want string
	}{
		{"spiffe://cluster.local/ns/real/sa/x", "claimed", "real"},
		{"spiffe://cluster.local/ns/real", "claimed", "real"},
		{"spiffe://cluster.local/ns//sa/x", "claimed", "claimed"},
		{"spiffe://cluster.local/sa/x", "claimed", "claimed"},
		{"", "claimed", "claimed"},
		{"", "", ""},
	} {
		if got := PeerNamespace(tc.principal, tc.claimed); got != tc.want {
			t.Errorf("PeerNamespace(%q, %q) = %q, want %q", tc.principal, tc.claimed, got, tc.want)
		}
	}
}
