package dataplane

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"

	"github.com/leanmesh/leanmesh/controller/workloadtable"
	"github.com/leanmesh/leanmesh/e2e/envoyhost"
	"github.com/leanmesh/leanmesh/e2e/grpcserver"
	"github.com/leanmesh/leanmesh/filters/workloads"
)

// The leanmesh-tcp network filter through the real leanmesh.so, with its
// peer table fed over the real workload stream (delta xDS from an
// in-process controller/workloadtable server, bearer token checked by a
// fake TokenReviewer), observed through the HTTP exposition of the same
// host. It also pins the v1.39 blocker: Envoy drains every read buffer
// after the Go filter's OnData, so not one byte would reach tcp_proxy; the
// controller refuses to install the filter for that reason (docs/tcp.md).

const (
	tcpToken  = "bookinfo-reviews-token"
	tcpPeriod = 100 * time.Millisecond // the smallest tcp_reporting_duration pluginconfig accepts
)

var (
	// The table's two workloads: the inbound peer (by remote IP) and the
	// outbound peer (by original destination = the connection's local IP).
	productpageWL = workloads.Workload{Name: "productpage-v1", Namespace: "bookinfo", CanonicalService: "productpage",
		CanonicalRevision: "v1", App: "productpage", Version: "v1", Cluster: "Kubernetes", ServiceAccount: "bookinfo-productpage"}
	ratingsWL = workloads.Workload{Name: "ratings-v1", Namespace: "bookinfo", CanonicalService: "ratings",
		CanonicalRevision: "v1", App: "ratings", Version: "v1", Cluster: "Kubernetes", ServiceAccount: "bookinfo-ratings"}
	ratingsIP = "10.1.0.13"
)

type tokenReviewer struct{}

func (tokenReviewer) Review(_ context.Context, token string) (string, error) {
	if token != tcpToken {
		return "", errors.New("unknown token")
	}
	return "system:serviceaccount:bookinfo:bookinfo-reviews", nil
}

// workloadServer serves productpage and ratings on a plaintext 127.0.0.1
// listener, as the controller's workload table would.
func workloadServer(t *testing.T) string {
	t.Helper()
	x := workloadtable.NewIndex()
	if err := x.Set("pod/bookinfo/"+productpage.name, []string{productpage.ip}, productpageWL); err != nil {
		t.Fatal(err)
	}
	if err := x.Set("pod/bookinfo/ratings-v1-5d4c8b7f9-qw2er", []string{ratingsIP}, ratingsWL); err != nil {
		t.Fatal(err)
	}
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	srv := workloadtable.NewGRPCServer(ctx, x.Cache(), tokenReviewer{})
	grpcserver.Run(t, "workload-table", srv, lis)
	t.Cleanup(cancel) // before the server stops
	return lis.Addr().String()
}

// tcpSidecar is the reviews sidecar with the HTTP configs of startSidecar
// (for the exposition) plus leanmesh-tcp inbound and outbound configs.
type tcpSidecar struct {
	*sidecar
	tcpIn, tcpOut uint64
}

func startTCPSidecar(t *testing.T, p pod, stream string) *tcpSidecar {
	t.Helper()
	s := &tcpSidecar{sidecar: startSidecar(t, p, 1, nil)}
	dir := t.TempDir()
	token := filepath.Join(dir, "istio-token")
	labels := filepath.Join(dir, "labels")
	if err := os.WriteFile(token, []byte(tcpToken+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	content := "app=\"" + p.app + "\"\nversion=\"" + p.version + "\"\nservice.istio.io/canonical-name=\"" + p.app +
		"\"\nservice.istio.io/canonical-revision=\"" + p.version + "\"\n"
	if err := os.WriteFile(labels, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
	mk := func(direction string) uint64 {
		a, err := envoyhost.TypedStruct("type.googleapis.com/leanmesh.Config", map[string]interface{}{
			"direction":              direction,
			"tcp_reporting_duration": tcpPeriod.String(),
			"local_identity":         map[string]interface{}{"pod_labels_path": labels},
			"tcp": map[string]interface{}{"workload_discovery": map[string]interface{}{
				"address": stream, "token_path": token, "plaintext": true,
			}},
		})
		if err != nil {
			t.Fatal(err)
		}
		id, err := s.h.NetConfig("leanmesh", a)
		if err != nil {
			t.Fatal(err)
		}
		return id
	}
	s.tcpIn, s.tcpOut = mk("inbound"), mk("outbound")
	return s
}

// tcpCounts is one label set's four TCP counters.
type tcpCounts struct{ opened, closed, sent, received float64 }

var tcpFamilies = []string{"istio_tcp_connections_opened_total", "istio_tcp_connections_closed_total",
	"istio_tcp_sent_bytes_total", "istio_tcp_received_bytes_total"}

// tcpSeries returns the counters of the one series per family matching sel
// (zero when absent).
func tcpSeries(t *testing.T, fams map[string]*dto.MetricFamily, sel map[string]string) tcpCounts {
	t.Helper()
	var c tcpCounts
	dst := []*float64{&c.opened, &c.closed, &c.sent, &c.received}
	for i, f := range tcpFamilies {
		ms := series(fams, f, sel)
		if len(ms) > 1 {
			t.Fatalf("%s: %d series match %v, want at most 1", f, len(ms), sel)
		}
		if len(ms) == 1 {
			*dst[i] = ms[0].GetCounter().GetValue()
		}
	}
	return c
}

func (c tcpCounts) minus(o tcpCounts) tcpCounts {
	return tcpCounts{c.opened - o.opened, c.closed - o.closed, c.sent - o.sent, c.received - o.received}
}

// waitCounts scrapes until sel's counters minus base equal want (the
// scheduler reports on its own goroutine), failing with the last values.
func (s *tcpSidecar) waitCounts(t *testing.T, what string, sel map[string]string, base, want tcpCounts) {
	t.Helper()
	var got tcpCounts
	for deadline := time.Now().Add(10 * time.Second); ; {
		c := tcpSeries(t, s.scrape(t), sel)
		if got = c.minus(base); got == want {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: counters %+v, want %+v", what, got, want)
		}
		time.Sleep(tcpPeriod / 4)
	}
}

// drained checks the connection's buffer accounting before it closes: the
// filter saw every byte, Envoy v1.39.1's Filter::onData left none of them
// for tcp_proxy, and writes went on intact.
func drained(t *testing.T, what string, c *envoyhost.Conn, in, out uint64) {
	t.Helper()
	st, err := c.State()
	if err != nil {
		t.Fatal(err)
	}
	if st.ReadIn != in || st.ReadForwarded != 0 {
		t.Errorf("%s: read_in %d read_forwarded %d; want %d and 0 (golang.cc Filter::onData drains the read buffer)", what, st.ReadIn, st.ReadForwarded, in)
	}
	if st.WriteIn != out || st.WriteForwarded != out {
		t.Errorf("%s: write_in %d write_forwarded %d; want %d and %d (Filter::onWrite does not drain)", what, st.WriteIn, st.WriteForwarded, out, out)
	}
}

func mustStatus(t *testing.T, what string, st int, err error) {
	t.Helper()
	if err != nil || st != envoyhost.NetContinue {
		t.Fatalf("%s: status %d, %v", what, st, err)
	}
}

func TestTCPThroughLibrary(t *testing.T) {
	s := startTCPSidecar(t, reviews, workloadServer(t))

	// The library subscribes when the configs are parsed; wait until it has
	// applied the initial response (both workloads in one message).
	for deadline := time.Now().Add(15 * time.Second); ; {
		fams := s.scrape(t)
		if u := series(fams, "leanmesh_workload_discovery_updates_total", nil); len(u) == 1 && u[0].GetCounter().GetValue() >= 1 {
			break
		}
		if time.Now().After(deadline) {
			e := series(fams, "leanmesh_workload_discovery_errors_total", nil)
			var errs []string
			for _, m := range e {
				errs = append(errs, fmt.Sprintf("%v=%v", labelsOf(m), m.GetCounter().GetValue()))
			}
			t.Fatalf("the library never applied a workload update (errors: %v)", errs)
		}
		time.Sleep(50 * time.Millisecond)
	}
	if r := series(s.scrape(t), "leanmesh_config_rejected_total", nil); len(r) == 1 && r[0].GetCounter().GetValue() != 0 {
		t.Fatalf("a leanmesh-tcp config was rejected (the filter would pass through unobserved)")
	}

	inSel := map[string]string{"reporter": "destination", "source_workload": "productpage-v1"}
	outSel := map[string]string{"reporter": "source", "destination_workload": "ratings-v1"}
	unknownSel := map[string]string{"reporter": "destination", "source_workload": "unknown"}
	const local, worker = "10.1.0.12:9080", 0

	t.Run("short", func(t *testing.T) {
		base := tcpSeries(t, s.scrape(t), inSel)
		c, st, err := s.h.NewConn(s.tcpIn, "leanmesh-tcp", local, productpage.ip+":43210", worker)
		mustStatus(t, "open", st, err)
		st, err = c.Data([]byte("hello"), false)
		mustStatus(t, "data", st, err)
		st, err = c.Write([]byte("world!!"), false)
		mustStatus(t, "write", st, err)
		st, err = c.Data([]byte("bye"), false)
		mustStatus(t, "data", st, err)
		drained(t, "short", c, 8, 7)
		if err := c.Event(envoyhost.EventRemoteClose); err != nil {
			t.Fatal(err)
		}
		s.waitCounts(t, "short connection", inSel, base, tcpCounts{opened: 1, closed: 1, sent: 7, received: 8})
	})

	t.Run("long-lived", func(t *testing.T) {
		// Outbound from reviews (10.1.0.12) to ratings: the connection's
		// local address is the original destination, the peer's address.
		base := tcpSeries(t, s.scrape(t), outSel)
		c, st, err := s.h.NewConn(s.tcpOut, "leanmesh-tcp", ratingsIP+":9080", reviews.ip+":51000", worker)
		mustStatus(t, "open", st, err)
		st, err = c.Data(make([]byte, 100), false)
		mustStatus(t, "data", st, err)
		time.Sleep(3 * tcpPeriod)
		// Reported while open: opened at the first report, bytes so far.
		s.waitCounts(t, "after period 1", outSel, base, tcpCounts{opened: 1, received: 100})
		st, err = c.Write(make([]byte, 200), false)
		mustStatus(t, "write", st, err)
		time.Sleep(3 * tcpPeriod)
		s.waitCounts(t, "after period 2", outSel, base, tcpCounts{opened: 1, sent: 200, received: 100})
		st, err = c.Data(make([]byte, 50), false)
		mustStatus(t, "data", st, err)
		st, err = c.Write(make([]byte, 25), false)
		mustStatus(t, "write", st, err)
		time.Sleep(3 * tcpPeriod)
		s.waitCounts(t, "after period 3", outSel, base, tcpCounts{opened: 1, sent: 225, received: 150})
		drained(t, "long-lived", c, 150, 225)
		if err := c.Event(envoyhost.EventLocalClose); err != nil {
			t.Fatal(err)
		}
		s.waitCounts(t, "closed", outSel, base, tcpCounts{opened: 1, closed: 1, sent: 225, received: 150})
	})

	t.Run("reset before data", func(t *testing.T) {
		// From an address the table does not know: its own series.
		base := tcpSeries(t, s.scrape(t), unknownSel)
		c, st, err := s.h.NewConn(s.tcpIn, "leanmesh-tcp", local, "10.1.0.99:40000", worker)
		mustStatus(t, "open", st, err)
		if err := c.Event(envoyhost.EventRemoteClose); err != nil {
			t.Fatal(err)
		}
		s.waitCounts(t, "reset", unknownSel, base, tcpCounts{opened: 1, closed: 1})
	})

	t.Run("half-close", func(t *testing.T) {
		base := tcpSeries(t, s.scrape(t), inSel)
		c, st, err := s.h.NewConn(s.tcpIn, "leanmesh-tcp", local, productpage.ip+":43211", worker)
		mustStatus(t, "open", st, err)
		st, err = c.Data([]byte("request"), true) // the client shuts down its write side
		mustStatus(t, "data end", st, err)
		st, err = c.Write([]byte("response"), false)
		mustStatus(t, "write", st, err)
		st, err = c.Write(nil, true)
		mustStatus(t, "write end", st, err)
		// Half-closed both ways is not closed: no closed count yet.
		time.Sleep(3 * tcpPeriod)
		s.waitCounts(t, "half-closed", inSel, base, tcpCounts{opened: 1, sent: 8, received: 7})
		drained(t, "half-close", c, 7, 8)
		if err := c.Event(envoyhost.EventRemoteClose); err != nil {
			t.Fatal(err)
		}
		s.waitCounts(t, "closed", inSel, base, tcpCounts{opened: 1, closed: 1, sent: 8, received: 7})
	})

	// Every label of every series, value by value.
	fams := s.scrape(t)
	reviewsLocal := map[string]string{
		"workload": "reviews-v2", "namespace": "bookinfo", "canonical_service": "reviews", "canonical_revision": "v2",
		"app": "reviews", "version": "v2", "cluster": "Kubernetes",
	}
	common := map[string]string{"request_protocol": "tcp", "response_flags": "-", "connection_security_policy": "unknown"}
	cases := []struct {
		name   string
		sel    map[string]string
		want   map[string]string
		counts tcpCounts
	}{
		{"inbound from productpage (by remote IP)", inSel, map[string]string{
			"reporter":        "destination",
			"source_workload": "productpage-v1", "source_canonical_service": "productpage", "source_canonical_revision": "v1",
			"source_workload_namespace": "bookinfo", "source_principal": "unknown", "source_app": "productpage",
			"source_version": "v1", "source_cluster": "Kubernetes",
			"destination_workload": reviewsLocal["workload"], "destination_workload_namespace": "bookinfo",
			"destination_principal": "unknown", "destination_app": "reviews", "destination_version": "v2",
			"destination_service": "reviews", "destination_canonical_service": "reviews", "destination_canonical_revision": "v2",
			"destination_service_name": "reviews", "destination_service_namespace": "bookinfo", "destination_cluster": "Kubernetes",
		}, tcpCounts{opened: 2, closed: 2, sent: 15, received: 15}},
		{"outbound to ratings (by original destination)", outSel, map[string]string{
			"reporter":        "source",
			"source_workload": "reviews-v2", "source_canonical_service": "reviews", "source_canonical_revision": "v2",
			"source_workload_namespace": "bookinfo", "source_principal": "unknown", "source_app": "reviews",
			"source_version": "v2", "source_cluster": "Kubernetes",
			"destination_workload": "ratings-v1", "destination_workload_namespace": "bookinfo",
			"destination_principal": "unknown", "destination_app": "ratings", "destination_version": "v1",
			// The Go network API shows no upstream cluster: no service.
			"destination_service": "unknown", "destination_canonical_service": "ratings", "destination_canonical_revision": "v1",
			"destination_service_name": "unknown", "destination_service_namespace": "bookinfo", "destination_cluster": "Kubernetes",
		}, tcpCounts{opened: 1, closed: 1, sent: 225, received: 150}},
		{"inbound from an address not in the table", unknownSel, map[string]string{
			"reporter":        "destination",
			"source_workload": "unknown", "source_canonical_service": "unknown", "source_canonical_revision": "latest",
			"source_workload_namespace": "unknown", "source_principal": "unknown", "source_app": "unknown",
			"source_version": "unknown", "source_cluster": "unknown",
			"destination_workload": "reviews-v2", "destination_workload_namespace": "bookinfo",
			"destination_principal": "unknown", "destination_app": "reviews", "destination_version": "v2",
			"destination_service": "reviews", "destination_canonical_service": "reviews", "destination_canonical_revision": "v2",
			"destination_service_name": "reviews", "destination_service_namespace": "bookinfo", "destination_cluster": "Kubernetes",
		}, tcpCounts{opened: 1, closed: 1}},
	}
	for _, tc := range cases {
		for k, v := range common {
			tc.want[k] = v
		}
		if len(tc.want) != 23 {
			t.Fatalf("%s: the expectation has %d labels, want the 23 TCP labels", tc.name, len(tc.want))
		}
		got := tcpSeries(t, fams, tc.sel)
		if got != tc.counts {
			t.Errorf("%s: counters %+v, want %+v", tc.name, got, tc.counts)
		}
		for _, f := range tcpFamilies {
			ms := series(fams, f, tc.sel)
			if len(ms) != 1 {
				t.Errorf("%s: %s has %d series", tc.name, f, len(ms))
				continue
			}
			if l := labelsOf(ms[0]); !equalLabels(l, tc.want) {
				t.Errorf("%s: %s labels differ:\n%s", tc.name, f, labelDiff(l, tc.want))
			}
		}
	}
	// The drain is why the controller does not install the filter: log it
	// where a reader of the test output sees it.
	t.Log("Envoy v1.39.1 golang.cc Filter::onData drains every read buffer: read_forwarded == 0 for every connection above")
}

func equalLabels(a, b map[string]string) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if w, ok := b[k]; !ok || w != v {
			return false
		}
	}
	return true
}

func labelDiff(got, want map[string]string) string {
	var out []string
	for k, v := range want {
		if g, ok := got[k]; !ok || g != v {
			out = append(out, fmt.Sprintf("  %s: got %q, want %q", k, g, v))
		}
	}
	for k, v := range got {
		if _, ok := want[k]; !ok {
			out = append(out, fmt.Sprintf("  %s: unexpected %q", k, v))
		}
	}
	return strings.Join(out, "\n")
}
