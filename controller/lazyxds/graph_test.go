package lazyxds

import (
	"net/netip"
	"reflect"
	"slices"
	"testing"
	"time"
)

var t0 = time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)

type clock struct{ now time.Time }

func (c *clock) Now() time.Time { return c.now }

func ip(s string) netip.Addr { return netip.MustParseAddr(s) }

func httpSvc(ns, name string, ports ...uint32) Service {
	s := Service{Namespace: ns, Host: name + "." + ns + ".svc.cluster.local"}
	for _, p := range ports {
		s.Ports = append(s.Ports, Port{Number: p, HTTP: true})
	}
	return s
}

// newTestGraph builds a small mesh: lazy workloads productpage (10.0.0.1) and
// ratings (10.0.0.2) in bookinfo, a non-lazy one in kube-system, HTTP services
// reviews/details, a TCP database and an external ServiceEntry.
func newTestGraph(opts Options) (*Graph, *clock) {
	c := &clock{now: t0}
	opts.Now = c.Now
	g := NewGraph(opts)
	g.UpsertWorkload(Workload{Namespace: "bookinfo", Name: "productpage", Labels: map[string]string{"app": "productpage", "pod-template-hash": "abc"}, IPs: []netip.Addr{ip("10.0.0.1")}, Lazy: true})
	g.UpsertWorkload(Workload{Namespace: "bookinfo", Name: "ratings", Labels: map[string]string{"app": "ratings"}, IPs: []netip.Addr{ip("10.0.0.2")}, Lazy: true})
	g.UpsertWorkload(Workload{Namespace: "kube-system", Name: "coredns", Labels: map[string]string{"k8s-app": "kube-dns"}, IPs: []netip.Addr{ip("10.0.0.9")}, Lazy: true})
	rev := httpSvc("bookinfo", "reviews", 9080)
	rev.Addresses = []netip.Addr{ip("10.96.0.10")}
	g.UpsertService(rev)
	g.UpsertService(httpSvc("bookinfo", "details", 9080))
	g.UpsertService(Service{Namespace: "data", Host: "mysql.data.svc.cluster.local", Ports: []Port{{Number: 3306}}})
	g.UpsertService(Service{Namespace: "bookinfo", Host: "api.example.com", Ports: []Port{{Number: 80, HTTP: true}}, ServiceEntry: true})
	g.Drain()
	return g, c
}

func TestRecordResolution(t *testing.T) {
	pp := WorkloadKey{"bookinfo", "productpage"}
	tests := []struct {
		name string
		obs  Observation
		want RecordResult
		dep  string // expected learned host for productpage, if any
	}{
		{"cluster", Observation{Caller: ip("10.0.0.1"), Cluster: "outbound|9080|v2|reviews.bookinfo.svc.cluster.local"}, RecordResult{Learned: 1}, "reviews.bookinfo.svc.cluster.local"},
		{"short authority", Observation{Caller: ip("10.0.0.1"), Cluster: "PassthroughCluster", Authority: "details:9080"}, RecordResult{Learned: 1}, "details.bookinfo.svc.cluster.local"},
		{"ns authority", Observation{Caller: ip("10.0.0.1"), Authority: "details.bookinfo"}, RecordResult{Learned: 1}, "details.bookinfo.svc.cluster.local"},
		{"svc authority", Observation{Caller: ip("10.0.0.1"), Authority: "details.bookinfo.svc:9080"}, RecordResult{Learned: 1}, "details.bookinfo.svc.cluster.local"},
		{"cluster ip authority", Observation{Caller: ip("10.0.0.1"), Authority: "10.96.0.10:9080"}, RecordResult{Learned: 1}, "reviews.bookinfo.svc.cluster.local"},
		{"service entry", Observation{Caller: ip("10.0.0.1"), Authority: "API.example.com"}, RecordResult{Learned: 1}, "api.example.com"},
		{"peer metadata fallback", Observation{Caller: ip("192.168.1.1"), PeerIP: ip("10.0.0.1"), Authority: "details:9080"}, RecordResult{Learned: 1}, "details.bookinfo.svc.cluster.local"},
		{"unknown caller", Observation{Caller: ip("10.9.9.9"), Authority: "details:9080"}, RecordResult{UnknownCaller: 1}, ""},
		{"unknown cluster and no authority", Observation{Caller: ip("10.0.0.1"), Cluster: "outbound|80||nope.svc.cluster.local"}, RecordResult{UnknownService: 1}, ""},
		{"garbage authority", Observation{Caller: ip("10.0.0.1"), Authority: "ex ample/..:x"}, RecordResult{UnknownService: 1}, ""},
		{"never-lazy namespace", Observation{Caller: ip("10.0.0.9"), Authority: "details.bookinfo"}, RecordResult{NotLazy: 1}, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			g, _ := newTestGraph(Options{})
			tt.obs.At = t0
			if got := g.Record([]Observation{tt.obs}); got != tt.want {
				t.Fatalf("Record = %+v, want %+v", got, tt.want)
			}
			var hosts []string
			for _, d := range g.Dependencies(pp) {
				hosts = append(hosts, d.Host)
			}
			if tt.dep == "" && len(hosts) != 0 || tt.dep != "" && !slices.Equal(hosts, []string{tt.dep}) {
				t.Fatalf("deps = %v, want %q", hosts, tt.dep)
			}
		})
	}
}

func TestDrainBatchesAndDedupes(t *testing.T) {
	g, c := newTestGraph(Options{})
	obs := make([]Observation, 0, 1000)
	for i := range 1000 {
		host := "reviews.bookinfo.svc.cluster.local"
		if i%2 == 1 {
			host = "details.bookinfo.svc.cluster.local"
		}
		obs = append(obs, Observation{Caller: ip("10.0.0.1"), Cluster: "outbound|9080||" + host, At: c.now.Add(time.Duration(i) * time.Millisecond)})
	}
	res := g.Record(obs)
	if res.Learned != 2 || res.Refreshed != 998 {
		t.Fatalf("Record = %+v", res)
	}
	c.now = c.now.Add(2 * time.Second)
	ch := g.Drain()
	if len(ch) != 1 || ch[0].Workload.Name != "productpage" {
		t.Fatalf("Drain = %+v, want one change for productpage", ch)
	}
	if ch := g.Drain(); len(ch) != 0 {
		t.Fatalf("second Drain = %+v, want none", ch)
	}
	// A known dependency refreshes last-seen but changes nothing.
	g.Record(obs[:10])
	if ch := g.Drain(); len(ch) != 0 {
		t.Fatalf("Drain after refresh = %+v, want none", ch)
	}
	st := g.Stats()
	if st.Learned != 2 || st.Dependencies != 2 || st.SidecarChanges < 1 || st.FlushLatencyMax < 2*time.Second {
		t.Fatalf("Stats = %+v", st)
	}
}

func TestSidecarInputHosts(t *testing.T) {
	g, c := newTestGraph(Options{ExtraHosts: []string{"monitoring/prometheus.monitoring.svc.cluster.local"}})
	pp := WorkloadKey{"bookinfo", "productpage"}
	// reviews is routed by a VirtualService in another namespace to reviews-v2.
	g.UpsertService(httpSvc("bookinfo", "reviews-v2", 9080))
	g.UpsertVirtualService(VirtualService{Namespace: "routing", Name: "reviews", Hosts: []string{"reviews.bookinfo.svc.cluster.local"},
		Destinations: []string{"reviews-v2.bookinfo.svc.cluster.local", "reviews.bookinfo.svc.cluster.local", "canary.other.svc.cluster.local"}})
	g.Learn(pp, "reviews.bookinfo.svc.cluster.local", c.now)
	in, ok := g.SidecarInput(pp)
	if !ok {
		t.Fatal("no input")
	}
	want := []string{
		"*/canary.other.svc.cluster.local",
		"bookinfo/reviews-v2.bookinfo.svc.cluster.local",
		"bookinfo/reviews.bookinfo.svc.cluster.local",
		"data/mysql.data.svc.cluster.local", // TCP: always visible
		"istio-system/*",
		"istio-system/leanmesh-lazy-egress.istio-system.svc.cluster.local",
		"monitoring/prometheus.monitoring.svc.cluster.local",
		"routing/reviews.bookinfo.svc.cluster.local",
	}
	if !slices.Equal(in.Hosts, want) {
		t.Fatalf("Hosts =\n%v\nwant\n%v", in.Hosts, want)
	}
	if len(in.Peers) != 1 || in.Peers[0].Name != "ratings" {
		t.Fatalf("Peers = %+v", in.Peers)
	}
	// Changing the VirtualService dirties its dependents.
	g.Drain()
	g.UpsertVirtualService(VirtualService{Namespace: "routing", Name: "reviews", Hosts: []string{"reviews.bookinfo.svc.cluster.local"}, Destinations: []string{"reviews.bookinfo.svc.cluster.local"}})
	if ch := g.Drain(); len(ch) != 1 || ch[0].Workload != pp {
		t.Fatalf("Drain after VS change = %+v", ch)
	}
}

func TestServiceDeletionRemovesDependencies(t *testing.T) {
	g, c := newTestGraph(Options{})
	pp, rt := WorkloadKey{"bookinfo", "productpage"}, WorkloadKey{"bookinfo", "ratings"}
	for _, k := range []WorkloadKey{pp, rt} {
		g.Learn(k, "reviews.bookinfo.svc.cluster.local", c.now)
		g.Learn(k, "details.bookinfo.svc.cluster.local", c.now)
	}
	g.Drain()
	g.DeleteService("reviews.bookinfo.svc.cluster.local")
	ch := g.Drain()
	if len(ch) != 2 {
		t.Fatalf("Drain = %+v, want both workloads", ch)
	}
	for _, k := range []WorkloadKey{pp, rt} {
		if d := g.Dependencies(k); len(d) != 1 || d[0].Host != "details.bookinfo.svc.cluster.local" {
			t.Fatalf("%s deps = %+v", k, d)
		}
	}
	if _, ok := g.Lookup(ip("10.96.0.10")); ok {
		t.Fatal("service address indexed as a workload")
	}
	if res := g.Record([]Observation{{Caller: ip("10.0.0.1"), Authority: "10.96.0.10"}}); res.UnknownService != 1 {
		t.Fatalf("deleted service address still resolves: %+v", res)
	}
	if st := g.Stats(); st.Dependencies != 2 {
		t.Fatalf("Dependencies = %d", st.Dependencies)
	}
}

func TestIPIndexFollowsPods(t *testing.T) {
	g, _ := newTestGraph(Options{})
	pp, rt := WorkloadKey{"bookinfo", "productpage"}, WorkloadKey{"bookinfo", "ratings"}
	steps := []struct {
		name  string
		apply func()
		want  map[string]WorkloadKey // ip → owner; zero key = unknown
	}{
		{"initial", func() {}, map[string]WorkloadKey{"10.0.0.1": pp, "10.0.0.2": rt}},
		{"productpage scales out", func() {
			g.UpsertWorkload(Workload{Namespace: "bookinfo", Name: "productpage", Labels: map[string]string{"app": "productpage"}, IPs: []netip.Addr{ip("10.0.0.1"), ip("10.0.0.3")}, Lazy: true})
		}, map[string]WorkloadKey{"10.0.0.1": pp, "10.0.0.3": pp}},
		{"ratings pod reuses 10.0.0.1", func() {
			g.UpsertWorkload(Workload{Namespace: "bookinfo", Name: "ratings", Labels: map[string]string{"app": "ratings"}, IPs: []netip.Addr{ip("10.0.0.1")}, Lazy: true})
		}, map[string]WorkloadKey{"10.0.0.1": rt, "10.0.0.2": {}, "10.0.0.3": pp}},
		{"stale productpage update does not unindex ratings' IP", func() {
			g.UpsertWorkload(Workload{Namespace: "bookinfo", Name: "productpage", Labels: map[string]string{"app": "productpage"}, IPs: []netip.Addr{ip("10.0.0.3")}, Lazy: true})
		}, map[string]WorkloadKey{"10.0.0.1": rt, "10.0.0.3": pp}},
		{"ratings deleted", func() { g.DeleteWorkload(rt) }, map[string]WorkloadKey{"10.0.0.1": {}, "10.0.0.3": pp}},
	}
	for _, s := range steps {
		s.apply()
		for a, want := range s.want {
			got, ok := g.Lookup(ip(a))
			if want == (WorkloadKey{}) && ok || want != (WorkloadKey{}) && got != want {
				t.Errorf("%s: Lookup(%s) = %v,%v want %v", s.name, a, got, ok, want)
			}
		}
	}
}

func TestExpiry(t *testing.T) {
	tests := []struct {
		name    string
		expiry  time.Duration
		advance time.Duration
		want    int
	}{
		{"off by default", 0, 1000 * time.Hour, 2},
		{"fresh kept", time.Hour, 30 * time.Minute, 2},
		{"stale dropped, refreshed kept", time.Hour, 90 * time.Minute, 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			g, c := newTestGraph(Options{Expiry: tt.expiry})
			pp := WorkloadKey{"bookinfo", "productpage"}
			g.Learn(pp, "reviews.bookinfo.svc.cluster.local", c.now)
			g.Learn(pp, "details.bookinfo.svc.cluster.local", c.now)
			g.Drain()
			g.Record([]Observation{{Caller: ip("10.0.0.1"), Authority: "details:9080", At: c.now.Add(tt.advance - time.Minute)}})
			c.now = c.now.Add(tt.advance)
			ch := g.Drain()
			if got := len(g.Dependencies(pp)); got != tt.want {
				t.Fatalf("deps = %d, want %d", got, tt.want)
			}
			if wantChange := tt.want != 2; (len(ch) == 1) != wantChange {
				t.Fatalf("Drain = %+v, want change=%v", ch, wantChange)
			}
		})
	}
}

func TestLazinessChanges(t *testing.T) {
	g, c := newTestGraph(Options{NeverLazyNamespaces: []string{"legacy"}})
	g.UpsertWorkload(Workload{Namespace: "legacy", Name: "old", Labels: map[string]string{"app": "old"}, IPs: []netip.Addr{ip("10.0.1.1")}, Lazy: true})
	pp := WorkloadKey{"bookinfo", "productpage"}
	g.Learn(pp, "details.bookinfo.svc.cluster.local", c.now)
	ch := g.Drain()
	if len(ch) != 1 || ch[0].Workload != pp || ch[0].Delete {
		t.Fatalf("Drain = %+v", ch)
	}
	// Turning laziness off deletes the Sidecar; deleting an unknown one is a no-op.
	g.UpsertWorkload(Workload{Namespace: "bookinfo", Name: "productpage", Labels: map[string]string{"app": "productpage"}, IPs: []netip.Addr{ip("10.0.0.1")}})
	ch = g.Drain()
	if len(ch) != 1 || !ch[0].Delete || ch[0].Workload != pp {
		t.Fatalf("Drain after lazy=false = %+v", ch)
	}
	g.DeleteWorkload(pp)
	if ch := g.Drain(); len(ch) != 0 {
		t.Fatalf("Drain after delete of non-lazy = %+v", ch)
	}
	// A new TCP service is visible to every lazy workload at once.
	g.UpsertService(Service{Namespace: "data", Host: "redis.data.svc.cluster.local", Ports: []Port{{Number: 6379}}})
	ch = g.Drain()
	if len(ch) != 1 || ch[0].Workload.Name != "ratings" || !slices.Contains(ch[0].Input.Hosts, "data/redis.data.svc.cluster.local") {
		t.Fatalf("Drain after TCP service = %+v", ch)
	}
}

func TestSnapshotRoundTrip(t *testing.T) {
	g, c := newTestGraph(Options{})
	pp, rt := WorkloadKey{"bookinfo", "productpage"}, WorkloadKey{"bookinfo", "ratings"}
	g.Learn(pp, "reviews.bookinfo.svc.cluster.local", c.now)
	g.Learn(pp, "details.bookinfo.svc.cluster.local", c.now.Add(time.Minute))
	g.Learn(rt, "details.bookinfo.svc.cluster.local", c.now.Add(2*time.Minute))
	g.Learn(rt, "details.bookinfo.svc.cluster.local", c.now.Add(time.Hour))
	snap := g.Snapshot()
	b, err := snap.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	back, err := UnmarshalSnapshot(b)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(back, snap) {
		t.Fatalf("decode mismatch:\n%+v\n%+v", back, snap)
	}
	// A fresh controller restores before its informers know anything.
	g2 := NewGraph(Options{Now: c.Now})
	if err := g2.Restore(back); err != nil {
		t.Fatal(err)
	}
	for _, k := range []WorkloadKey{pp, rt} {
		if got, want := g2.Dependencies(k), g.Dependencies(k); !reflect.DeepEqual(got, want) {
			t.Fatalf("%s: restored %+v, want %+v", k, got, want)
		}
	}
	if b2, _ := g2.Snapshot().Marshal(); string(b2) != string(b) {
		t.Fatal("snapshot of a restored graph is not byte-identical")
	}
	// Once informers sync, unknown workloads/services are dropped.
	g2.UpsertWorkload(Workload{Namespace: "bookinfo", Name: "productpage", Labels: map[string]string{"app": "productpage"}, Lazy: true})
	g2.UpsertService(httpSvc("bookinfo", "details", 9080))
	if n := g2.DropUnknown(); n != 2 {
		t.Fatalf("DropUnknown = %d, want 2", n)
	}

	bad := []struct {
		name string
		in   string
	}{
		{"future version", `{"v":2,"hosts":[],"deps":[]}`},
		{"bad index", `{"v":1,"hosts":["a"],"deps":[{"w":"ns/w","d":[[3,0,0]]}]}`},
		{"bad workload", `{"v":1,"hosts":["a"],"deps":[{"w":"nons","d":[[0,0,0]]}]}`},
		{"garbage", `{"v":`},
	}
	for _, tt := range bad {
		s, err := UnmarshalSnapshot([]byte(tt.in))
		if err == nil {
			err = NewGraph(Options{}).Restore(s)
		}
		if err == nil {
			t.Errorf("%s: accepted", tt.name)
		}
	}
}

func TestSelectorRefusal(t *testing.T) {
	tests := []struct {
		name    string
		labels  map[string]string
		peers   []map[string]string
		wantErr bool
	}{
		{"distinct", map[string]string{"app": "a"}, []map[string]string{{"app": "b"}}, false},
		{"only volatile labels", map[string]string{"pod-template-hash": "x"}, nil, true},
		{"no labels", nil, nil, true},
		{"subset of a peer", map[string]string{"app": "a"}, []map[string]string{{"app": "a", "version": "v2"}}, true},
		{"peer is subset: fine", map[string]string{"app": "a", "version": "v1"}, []map[string]string{{"app": "a"}}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			in := SidecarInput{Workload: Workload{Namespace: "ns", Name: "w", Labels: tt.labels}}
			for i, p := range tt.peers {
				in.Peers = append(in.Peers, Workload{Namespace: "ns", Name: "peer" + string(rune('0'+i)), Labels: p})
			}
			_, err := RenderSidecar(in)
			if (err != nil) != tt.wantErr {
				t.Fatalf("err = %v, wantErr %v", err, tt.wantErr)
			}
		})
	}
}

func TestNames(t *testing.T) {
	clusters := []struct {
		in   string
		host string
		ok   bool
	}{
		{"outbound|9080|v1|reviews.default.svc.cluster.local", "reviews.default.svc.cluster.local", true},
		{"outbound|80||api.example.com", "api.example.com", true},
		{"inbound|9080||", "", false},
		{"PassthroughCluster", "", false},
		{"outbound|x||a", "", false},
		{"outbound|80|", "", false},
	}
	for _, c := range clusters {
		h, _, ok := ParseCluster(c.in)
		if h != c.host || ok != c.ok {
			t.Errorf("ParseCluster(%q) = %q,%v", c.in, h, ok)
		}
	}
	auths := []struct {
		in   string
		host string
		port uint32
		ok   bool
	}{
		{"reviews:9080", "reviews", 9080, true},
		{"Reviews.Default.", "reviews.default", 0, true},
		{"[fd00::1]:80", "fd00::1", 80, true},
		{"10.0.0.1", "10.0.0.1", 0, true},
		{"", "", 0, false},
		{"a b", "", 0, false},
		{"host:99999", "", 0, false},
		{"-bad.com", "", 0, false},
		{"a..b", "", 0, false},
		{"[::1", "", 0, false},
	}
	for _, a := range auths {
		h, p, ok := SplitAuthority(a.in)
		if h != a.host || p != a.port || ok != a.ok {
			t.Errorf("SplitAuthority(%q) = %q,%d,%v", a.in, h, p, ok)
		}
	}
}
