package lazyxds

import (
	"slices"
	"testing"
	"time"
)

// TestSeedMapsEdgesLikeAccessLogs: telemetry edges go through the access-log
// resolution (FQDN, caller-relative short names, cluster IPs, ServiceEntry
// hosts) and only lazy callers and lazy services count.
func TestSeedMapsEdgesLikeAccessLogs(t *testing.T) {
	pp := WorkloadKey{"bookinfo", "productpage"}
	tests := []struct {
		name string
		edge SeedEdge
		want SeedResult
		dep  string
	}{
		{"fqdn", SeedEdge{pp, "reviews.bookinfo.svc.cluster.local"}, SeedResult{Added: 1}, "reviews.bookinfo.svc.cluster.local"},
		{"short name in the caller's namespace", SeedEdge{pp, "details"}, SeedResult{Added: 1}, "details.bookinfo.svc.cluster.local"},
		{"cluster ip", SeedEdge{pp, "10.96.0.10"}, SeedResult{Added: 1}, "reviews.bookinfo.svc.cluster.local"},
		{"service entry, any case", SeedEdge{pp, "API.example.com"}, SeedResult{Added: 1}, "api.example.com"},
		{"tcp service stays visible anyway", SeedEdge{pp, "mysql.data.svc.cluster.local"}, SeedResult{NotLazyService: 1}, ""},
		{"unknown service", SeedEdge{pp, "nope.bookinfo.svc.cluster.local"}, SeedResult{UnknownService: 1}, ""},
		{"garbage service", SeedEdge{pp, "a b"}, SeedResult{UnknownService: 1}, ""},
		{"unknown caller", SeedEdge{WorkloadKey{"bookinfo", "ghost"}, "reviews.bookinfo.svc.cluster.local"}, SeedResult{UnknownCaller: 1}, ""},
		{"never-lazy namespace", SeedEdge{WorkloadKey{"kube-system", "coredns"}, "reviews.bookinfo.svc.cluster.local"}, SeedResult{NotLazy: 1}, ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			g, _ := newTestGraph(Options{})
			got := g.Seed([]SeedEdge{tc.edge}, t0, nil)
			if got != tc.want {
				t.Fatalf("Seed = %+v, want %+v", got, tc.want)
			}
			deps := g.Dependencies(tc.edge.Workload)
			if tc.dep == "" {
				if len(deps) != 0 {
					t.Fatalf("learned %v", deps)
				}
				return
			}
			if len(deps) != 1 || deps[0].Host != tc.dep || deps[0].Origin != OriginTelemetry {
				t.Fatalf("deps %+v, want %s from telemetry", deps, tc.dep)
			}
		})
	}
}

func TestSeedOriginRefreshAcceptAndDrain(t *testing.T) {
	g, c := newTestGraph(Options{})
	pp, ra := WorkloadKey{"bookinfo", "productpage"}, WorkloadKey{"bookinfo", "ratings"}
	// Learned from an access log first: a later seed refreshes it, the origin stays.
	g.Record([]Observation{{Caller: ip("10.0.0.1"), Cluster: "outbound|9080||reviews.bookinfo.svc.cluster.local", At: t0}})
	g.Drain()
	later := t0.Add(time.Hour)
	c.now = later
	res := g.Seed([]SeedEdge{
		{pp, "reviews.bookinfo.svc.cluster.local"},
		{pp, "details.bookinfo.svc.cluster.local"},
		{ra, "details.bookinfo.svc.cluster.local"}, // refused by accept: another policy's workload
	}, later, func(k WorkloadKey) bool { return k == pp })
	if res != (SeedResult{Added: 1, Refreshed: 1, UnknownCaller: 1}) || res.Skipped() != 1 {
		t.Fatalf("Seed = %+v", res)
	}
	deps := g.Dependencies(pp)
	if len(deps) != 2 || deps[0].Host != "details.bookinfo.svc.cluster.local" || deps[0].Origin != OriginTelemetry ||
		deps[1].Origin != OriginAccessLog || !deps[1].LastSeen.Equal(later) || !deps[1].FirstSeen.Equal(t0) {
		t.Fatalf("deps %+v", deps)
	}
	// One Sidecar change for the caller, none for the refused workload.
	ch := g.Drain()
	if len(ch) != 1 || ch[0].Workload != pp || !slices.Contains(ch[0].Input.Hosts, "bookinfo/details.bookinfo.svc.cluster.local") {
		t.Fatalf("Drain = %+v", ch)
	}
	// A repeated seed changes nothing.
	g.Seed([]SeedEdge{{pp, "details.bookinfo.svc.cluster.local"}}, later, nil)
	if ch := g.Drain(); len(ch) != 0 {
		t.Fatalf("repeated seed drained %+v", ch)
	}
	st := g.Stats()
	if st.Seeded != 1 || st.SeededDependencies != 1 || st.Dependencies != 2 {
		t.Fatalf("stats %+v", st)
	}
}

// TestSnapshotKeepsOrigin: the origin survives a snapshot round trip, and a
// snapshot without it (written before origins existed) reads as access logs.
func TestSnapshotKeepsOrigin(t *testing.T) {
	g, _ := newTestGraph(Options{})
	pp := WorkloadKey{"bookinfo", "productpage"}
	g.Record([]Observation{{Caller: ip("10.0.0.1"), Cluster: "outbound|9080||reviews.bookinfo.svc.cluster.local", At: t0}})
	g.Seed([]SeedEdge{{pp, "details.bookinfo.svc.cluster.local"}, {pp, "api.example.com"}}, t0, nil)
	raw, err := g.Snapshot().Marshal()
	if err != nil {
		t.Fatal(err)
	}
	snap, err := UnmarshalSnapshot(raw)
	if err != nil {
		t.Fatal(err)
	}
	g2, _ := newTestGraph(Options{})
	if err := g2.Restore(snap); err != nil {
		t.Fatal(err)
	}
	origins := map[string]Origin{}
	for _, d := range g2.Dependencies(pp) {
		origins[d.Host] = d.Origin
	}
	want := map[string]Origin{"reviews.bookinfo.svc.cluster.local": OriginAccessLog, "details.bookinfo.svc.cluster.local": OriginTelemetry, "api.example.com": OriginTelemetry}
	for h, o := range want {
		if origins[h] != o {
			t.Errorf("%s: origin %v, want %v (all: %v)", h, origins[h], o, origins)
		}
	}
	old := `{"v":1,"base":1000,"hosts":["details.bookinfo.svc.cluster.local"],"deps":[{"w":"bookinfo/productpage","d":[[0,0,5]]}]}`
	s, err := UnmarshalSnapshot([]byte(old))
	if err != nil {
		t.Fatal(err)
	}
	g3, _ := newTestGraph(Options{})
	if err := g3.Restore(s); err != nil {
		t.Fatal(err)
	}
	if d := g3.Dependencies(pp); len(d) != 1 || d[0].Origin != OriginAccessLog {
		t.Fatalf("old snapshot: %+v", d)
	}
}
