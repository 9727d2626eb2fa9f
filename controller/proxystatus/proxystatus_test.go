package proxystatus

import (
	"strings"
	"testing"
)

// A /debug/syncz body as istiod's Syncz writes it (pilot/pkg/xds/debug.go
// SyncStatus; "proxy" is model.Proxy.ID, "<pod>.<ns>", as the real istiod
// returned in TestNACKSurfacesOnIstiod), one proxy NACKing LDS, one ACKed,
// one ztunnel.
const syncz = `[
 {"cluster_id":"Kubernetes","proxy":"pay-0.pay","proxy_type":"sidecar","istio_version":"1.32.0",
  "cluster_sent":"c1","cluster_acked":"c1","listener_sent":"l2","listener_acked":"l1",
  "resources":{"type.googleapis.com/envoy.config.listener.v3.Listener":{"sent":"l2","acked":"l1","sentTime":"2026-12-01T08:00:00Z","lastError":"Error adding/updating listener(s) virtualInbound: leanmesh: could not load /etc/leanmesh/leanmesh.so"}}},
 {"proxy":"web.v1.shop","proxy_type":"sidecar","istio_version":"1.31.1","listener_sent":"a","listener_acked":"a"},
 {"proxy":"ztunnel-abc.istio-system","proxy_type":"ztunnel","istio_version":"1.31.1"}
]`

func TestParseSyncz(t *testing.T) {
	ps, err := ParseSyncz(strings.NewReader(syncz), "http://istiod:15014")
	if err != nil {
		t.Fatal(err)
	}
	if len(ps) != 2 {
		t.Fatalf("got %d proxies, want 2 (ztunnel skipped): %+v", len(ps), ps)
	}
	for _, tc := range []struct {
		i                   int
		ns, pod, ver, state string
		leanmesh            bool
	}{
		{0, "pay", "pay-0", "1.32.0", "NACKED", true},
		{1, "shop", "web.v1", "1.31.1", "ACKED", false},
	} {
		p := ps[tc.i]
		if p.Namespace != tc.ns || p.Pod != tc.pod || p.IstioVersion != tc.ver || p.ACKState() != tc.state || MentionsLeanmesh(p.ListenerError) != tc.leanmesh {
			t.Errorf("proxy %d: %+v (state %s)", tc.i, p, p.ACKState())
		}
	}
	if _, err := ParseSyncz(strings.NewReader("<html>"), ""); err == nil {
		t.Error("malformed body accepted")
	}
}

func TestPodOf(t *testing.T) {
	for _, tc := range []struct {
		id, ns, pod string
		ok          bool
	}{
		{"sidecar~10.0.0.1~a.b~b.svc.cluster.local", "b", "a", true},
		{"router~10.0.0.1~gw-1.istio-system~istio-system.svc.cluster.local", "istio-system", "gw-1", true},
		{"sidecar~10.0.0.1~nodot~x.svc.cluster.local", "", "", false},
		{"istioctl-abc", "", "", false},
		{"reviews-0.shop", "shop", "reviews-0", true},
	} {
		ns, pod, ok := PodOf(tc.id)
		if ns != tc.ns || pod != tc.pod || ok != tc.ok {
			t.Errorf("PodOf(%q) = %q %q %v", tc.id, ns, pod, ok)
		}
	}
}
