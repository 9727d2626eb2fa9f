package tcpstats

import (
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/envoyproxy/envoy/contrib/golang/common/go/api"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/structpb"

	"github.com/leanmesh/leanmesh/filters/httpstats"
	"github.com/leanmesh/leanmesh/filters/internal/sdkfake"
	"github.com/leanmesh/leanmesh/filters/pluginconfig"
	"github.com/leanmesh/leanmesh/filters/telemetry"
	"github.com/leanmesh/leanmesh/filters/workloads"
)

// step drives one connection; "expect" checks the registry at that point.
type step struct {
	op     string // new, data, write, tick, local, remote, connected, expect
	n      int    // bytes for data/write, seconds after t0 for tick
	expect tcpTotals
}

func TestAccounting(t *testing.T) {
	cases := []struct {
		name  string
		steps []step
	}{
		{"reset before any data", []step{
			{op: "new"}, {op: "remote"},
			{op: "expect", expect: tcpTotals{opened: 1, closed: 1}},
		}},
		{"local close before any data", []step{
			{op: "new"}, {op: "local"},
			{op: "expect", expect: tcpTotals{opened: 1, closed: 1}},
		}},
		{"short connection reports once at close", []step{
			{op: "new"}, {op: "data", n: 10}, {op: "write", n: 300}, {op: "tick", n: 1},
			{op: "expect", expect: tcpTotals{}}, // period (5s) not elapsed
			{op: "remote"},
			{op: "expect", expect: tcpTotals{opened: 1, closed: 1, received: 10, sent: 300}},
		}},
		{"periodic deltas then close", []step{
			{op: "new"}, {op: "data", n: 100}, {op: "write", n: 1000},
			{op: "tick", n: 5},
			{op: "expect", expect: tcpTotals{opened: 1, received: 100, sent: 1000}},
			{op: "tick", n: 6}, // within the period: no report
			{op: "data", n: 1}, {op: "tick", n: 7},
			{op: "expect", expect: tcpTotals{opened: 1, received: 100, sent: 1000}},
			{op: "tick", n: 10},
			{op: "expect", expect: tcpTotals{opened: 1, received: 101, sent: 1000}},
			{op: "tick", n: 15}, // nothing new: nothing recorded, nothing lost
			{op: "write", n: 5}, {op: "local"},
			{op: "expect", expect: tcpTotals{opened: 1, closed: 1, received: 101, sent: 1005}},
		}},
		{"half close (end of stream) is not a close", []step{
			{op: "new"}, {op: "data", n: 7}, {op: "data", n: 0}, // FIN from the downstream
			{op: "write", n: 9}, {op: "tick", n: 5},
			{op: "expect", expect: tcpTotals{opened: 1, received: 7, sent: 9}},
			{op: "write", n: 1}, {op: "remote"},
			{op: "expect", expect: tcpTotals{opened: 1, closed: 1, received: 7, sent: 10}},
		}},
		{"closed once on local then remote", []step{
			{op: "new"}, {op: "connected"}, {op: "data", n: 3}, {op: "local"}, {op: "remote"}, {op: "local"},
			{op: "tick", n: 30},
			{op: "expect", expect: tcpTotals{opened: 1, closed: 1, received: 3}},
		}},
		{"close racing the scheduler", []step{
			{op: "new"}, {op: "data", n: 3}, {op: "tick", n: 5}, {op: "remote"}, {op: "tick", n: 10},
			{op: "expect", expect: tcpTotals{opened: 1, closed: 1, received: 3}},
		}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			cfg, sched := testConfig(t, "inbound", workloads.NewTable(0))
			var f api.DownstreamFilter
			for i, s := range tc.steps {
				switch s.op {
				case "new":
					f = cfg.CreateFilter(newCB("10.0.0.2:8080", "10.0.0.1:40000"))
					if st := f.OnNewConnection(); st != api.NetworkFilterContinue {
						t.Fatalf("OnNewConnection = %v", st)
					}
				case "data":
					if st := f.OnData(make([]byte, s.n), s.n == 0); st != api.NetworkFilterContinue {
						t.Fatalf("OnData = %v", st)
					}
				case "write":
					if st := f.OnWrite(make([]byte, s.n), false); st != api.NetworkFilterContinue {
						t.Fatalf("OnWrite = %v", st)
					}
				case "tick":
					sched.Tick(t0.Add(time.Duration(s.n) * time.Second))
				case "local":
					f.OnEvent(api.LocalClose)
				case "remote":
					f.OnEvent(api.RemoteClose)
				case "connected":
					f.OnEvent(api.Connected)
				case "expect":
					if got := totals(t, cfg); got != s.expect {
						t.Fatalf("step %d: totals %+v, want %+v", i, got, s.expect)
					}
				}
			}
			if sched.Live() != 0 {
				t.Errorf("%d connections still tracked after close", sched.Live())
			}
		})
	}
}

var (
	client = workloads.Workload{Name: "frontend", Namespace: "shop", CanonicalService: "frontend", CanonicalRevision: "v1", App: "frontend", Version: "v1", Cluster: "Kubernetes", ServiceAccount: "frontend"}
	server = workloads.Workload{Name: "reviews-v2", Namespace: "shop", CanonicalService: "reviews", CanonicalRevision: "v2", App: "reviews", Version: "v2", Cluster: "Kubernetes", ServiceAccount: "reviews"}
)

func tableWith(t testing.TB, kv ...interface{}) *workloads.Table {
	tab := workloads.NewTable(0)
	var d workloads.Delta
	for i := 0; i < len(kv); i += 2 {
		d.Updates = append(d.Updates, workloads.Update{Name: kv[i].(string), Workload: kv[i+1].(workloads.Workload)})
	}
	if err := tab.Apply(d); err != nil {
		t.Fatal(err)
	}
	return tab
}

func TestPeerIdentity(t *testing.T) {
	tab := tableWith(t, "10.0.0.1", client, "10.0.0.2", server)
	cases := []struct {
		name, direction, local, remote string
		want                           []string
	}{
		{"inbound: peer by remote IP, local by local IP", "inbound", "10.0.0.2:9080", "10.0.0.1:51000", []string{
			`reporter="destination"`, `source_workload="frontend"`, `source_workload_namespace="shop"`,
			`source_canonical_revision="v1"`, `destination_workload="reviews-v2"`, `destination_canonical_service="reviews"`,
			`source_principal="unknown"`, `request_protocol="tcp"`,
		}},
		{"outbound: peer by original destination", "outbound", "10.0.0.2:9080", "10.0.0.1:51000", []string{
			`reporter="source"`, `source_workload="frontend"`, `destination_workload="reviews-v2"`,
			`destination_canonical_revision="v2"`, `destination_service="unknown"`, `connection_security_policy="unknown"`,
		}},
		{"IPv4-mapped IPv6 addresses", "outbound", "[::ffff:10.0.0.2]:9080", "[::ffff:10.0.0.1]:51000", []string{
			`source_workload="frontend"`, `destination_workload="reviews-v2"`,
		}},
		{"unknown peer", "outbound", "192.0.2.9:443", "10.0.0.1:51000", []string{
			`source_workload="frontend"`, `destination_workload="unknown"`, `destination_canonical_service="unknown"`,
			`destination_canonical_revision="latest"`,
		}},
		{"unparsable addresses", "inbound", "envoy://internal", "", []string{
			`source_workload="unknown"`, `destination_workload=""`,
		}},
		{"gateway knows no peer", "gateway", "10.0.0.2:8443", "10.0.0.1:51000", []string{
			`reporter="source"`, `source_workload="reviews-v2"`, `destination_workload="unknown"`,
		}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			cfg, _ := testConfig(t, tc.direction, tab)
			f := cfg.CreateFilter(newCB(tc.local, tc.remote))
			f.OnNewConnection()
			f.OnData([]byte("hello"), false)
			f.OnEvent(api.RemoteClose)
			if got := totals(t, cfg, tc.want...); got != (tcpTotals{opened: 1, closed: 1, received: 5}) {
				t.Errorf("series with %v: %+v\n%s", tc.want, got, exposition(cfg))
			}
		})
	}
}

// A peer the table learns after the connection opened is used, as long as
// the connection has not been reported yet (Istio reads the peer until then).
func TestPeerLearnedBeforeFirstReport(t *testing.T) {
	tab := workloads.NewTable(0)
	cfg, sched := testConfig(t, "outbound", tab)
	f := cfg.CreateFilter(newCB("10.0.0.2:9080", "10.0.0.1:51000"))
	f.OnNewConnection()
	if err := tab.Apply(workloads.Delta{Updates: []workloads.Update{{Name: "10.0.0.2", Workload: server}}}); err != nil {
		t.Fatal(err)
	}
	sched.Tick(t0.Add(5 * time.Second))
	f.OnEvent(api.LocalClose)
	if got := totals(t, cfg, `destination_workload="reviews-v2"`); got.opened != 1 || got.closed != 1 {
		t.Errorf("%+v\n%s", got, exposition(cfg))
	}
}

func anyJSON(t testing.TB, js string) *anypb.Any {
	s := &structpb.Struct{}
	if err := s.UnmarshalJSON([]byte(js)); err != nil {
		t.Fatal(err)
	}
	a, err := anypb.New(s)
	if err != nil {
		t.Fatal(err)
	}
	return a
}

func TestParseConfig(t *testing.T) {
	rejected := telemetry.Self.Counter("leanmesh_config_rejected_total", "", "")
	cases := []struct {
		name        string
		any         *anypb.Any
		passThrough bool
	}{
		{"valid", anyJSON(t, `{"direction":"inbound"}`), false},
		{"nil", nil, true},
		{"missing direction", anyJSON(t, `{}`), true},
		{"unknown field", anyJSON(t, `{"direction":"inbound","nope":1}`), true},
		{"bad discovery", anyJSON(t, `{"direction":"inbound","tcp":{"workload_discovery":{"address":"x"}}}`), true},
		{"wrong type", &anypb.Any{TypeUrl: "type.googleapis.com/google.protobuf.Duration"}, true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			before := rejected.Load()
			cfg := Parser{}.ParseConfig(tc.any)
			f := Factory{}.CreateFactoryFromConfig(cfg).CreateFilter(newCB("10.0.0.2:1", "10.0.0.1:2"))
			_, isPass := f.(*api.EmptyDownstreamFilter)
			if isPass != tc.passThrough {
				t.Fatalf("pass-through = %v, want %v", isPass, tc.passThrough)
			}
			if d := rejected.Load() - before; (d == 1) != tc.passThrough {
				t.Errorf("rejected counter moved by %d", d)
			}
			// The filter never stops a connection.
			if f.OnNewConnection() != api.NetworkFilterContinue || f.OnData([]byte("x"), false) != api.NetworkFilterContinue ||
				f.OnWrite([]byte("y"), true) != api.NetworkFilterContinue {
				t.Error("a callback did not continue")
			}
			f.OnEvent(api.RemoteClose)
		})
	}
	if (Factory{}).CreateFactoryFromConfig("garbage") == nil {
		t.Error("nil factory for a foreign config")
	}
}

func TestPanicsAreRecovered(t *testing.T) {
	cfg, sched := testConfig(t, "inbound", workloads.NewTable(0))
	panics := telemetry.Self.Counter("leanmesh_panics_total", "callback", "tcp.OnNewConnection")
	before := panics.Load()
	f := cfg.CreateFilter(&sdkfake.Conn{Info: &sdkfake.ConnInfo{PanicAddr: true}})
	if st := f.OnNewConnection(); st != api.NetworkFilterContinue {
		t.Fatalf("status %v", st)
	}
	if panics.Load() != before+1 {
		t.Error("panic not counted")
	}
	// A connection whose setup failed must still be safe to drive.
	f.OnData([]byte("abc"), false)
	f.OnEvent(api.RemoteClose)
	sched.Tick(t0.Add(time.Minute))
	if sched.Live() != 0 {
		t.Errorf("live = %d", sched.Live())
	}
}

func TestBoundAndStale(t *testing.T) {
	cfg, _ := testConfig(t, "inbound", workloads.NewTable(0))
	sched := NewScheduler(2, time.Hour)
	sched.Tick(t0)
	cfg.sched = sched
	var fs []api.DownstreamFilter
	for i := 0; i < 3; i++ {
		f := cfg.CreateFilter(newCB("10.0.0.2:80", fmt.Sprintf("10.0.0.1:%d", 1000+i)))
		f.OnNewConnection()
		f.OnData([]byte("ab"), false)
		fs = append(fs, f)
	}
	if sched.Live() != 2 {
		t.Fatalf("live = %d, want the bound 2", sched.Live())
	}
	sched.Tick(t0.Add(5 * time.Second))
	// Untracked connections are reported at close only; tracked ones periodically.
	if got := totals(t, cfg); got != (tcpTotals{opened: 2, received: 4}) {
		t.Errorf("after tick: %+v", got)
	}
	// Silent for an hour: they leave the set...
	sched.Tick(t0.Add(time.Hour + 5*time.Second))
	if sched.Live() != 0 {
		t.Fatalf("stale connections still tracked: %d", sched.Live())
	}
	// ...and a byte brings one back.
	fs[0].OnData([]byte("c"), false)
	if sched.Live() != 1 {
		t.Fatalf("revived connection not tracked: %d", sched.Live())
	}
	for _, f := range fs {
		f.OnEvent(api.LocalClose)
	}
	if got := totals(t, cfg); got != (tcpTotals{opened: 3, closed: 3, received: 7}) {
		t.Errorf("final: %+v", got)
	}
	if sched.Live() != 0 {
		t.Errorf("live = %d after close", sched.Live())
	}
}

// The TCP filter records into the HTTP filter's registry, so one scrape has
// both and families appear once.
func TestSharesRegistryWithHTTPFilter(t *testing.T) {
	c, err := pluginconfig.FromJSON([]byte(`{"direction":"inbound","max_series":4242}`))
	if err != nil {
		t.Fatal(err)
	}
	tcp, err := NewConfig(c, Options{Scheduler: NewScheduler(0, 0), Table: workloads.NewTable(0)})
	if err != nil {
		t.Fatal(err)
	}
	if http := httpstats.NewConfig(c); http.Registry() != tcp.Registry() {
		t.Error("HTTP and TCP configs with equal metric settings use different registries")
	}
}

// Concurrent callbacks, ticks and closes: run under -race.
func TestConcurrentConnectionsAndTicks(t *testing.T) {
	tab := tableWith(t, "10.0.0.1", client, "10.0.0.2", server)
	cfg, sched := testConfig(t, "inbound", tab)
	const workers, conns = 4, 200
	done := make(chan struct{})
	stop := make(chan struct{})
	go func() {
		defer close(done)
		for i := 1; ; i++ {
			select {
			case <-stop:
				return
			default:
				sched.Tick(t0.Add(time.Duration(i) * time.Second))
			}
		}
	}()
	var wg sync.WaitGroup
	for range workers {
		wg.Go(func() {
			for i := 0; i < conns; i++ {
				f := cfg.CreateFilter(newCB("10.0.0.2:80", "10.0.0.1:1"))
				f.OnNewConnection()
				for j := 0; j < 10; j++ {
					f.OnData(make([]byte, 3), false)
					f.OnWrite(make([]byte, 5), false)
				}
				f.OnEvent(api.ConnectionEvent(i % 2)) // remote or local close
			}
		})
	}
	wg.Wait()
	close(stop)
	<-done
	want := tcpTotals{opened: workers * conns, closed: workers * conns, received: workers * conns * 30, sent: workers * conns * 50}
	if got := totals(t, cfg, `source_workload="frontend"`); got != want {
		t.Errorf("%+v, want %+v", got, want)
	}
	if !strings.Contains(exposition(cfg), `destination_workload="reviews-v2"`) {
		t.Error("local identity missing")
	}
}
