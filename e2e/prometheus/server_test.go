package prometheus_test

import (
	"context"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	lmprom "github.com/leanmesh/leanmesh/e2e/prometheus"
)

// serve exposes reg on a real loopback TCP port and returns host:port.
func serve(t *testing.T, reg *prometheus.Registry) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: promhttp.HandlerFor(reg, promhttp.HandlerOpts{})}
	go func() { _ = srv.Serve(l) }()
	t.Cleanup(func() { srv.Close() })
	return l.Addr().String()
}

func TestScrapeAndQuery(t *testing.T) {
	reg := prometheus.NewRegistry()
	requests := prometheus.NewCounterVec(prometheus.CounterOpts{Name: "test_requests_total", Help: "h"}, []string{"code"})
	reg.MustRegister(requests)
	addr := serve(t, reg)
	// A second job whose target is down: WaitScraped must report it, not hang.
	closed := func() string {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		defer l.Close()
		return l.Addr().String()
	}()
	srv := lmprom.StartT(t, lmprom.Options{ScrapeConfigs: []string{
		lmprom.StaticJob("app", addr),
		lmprom.StaticJob("gone", closed),
	}})

	requests.WithLabelValues("200").Add(7)
	requests.WithLabelValues("503").Add(2)
	since := time.Now()
	targets := srv.WaitScrapedT(t, "app", since)
	if len(targets) != 1 || string(targets[0].Labels["instance"]) != addr {
		t.Fatalf("targets = %+v, want one with instance %s", targets, addr)
	}

	for _, tc := range []struct {
		query string
		want  float64
	}{
		{`sum(test_requests_total{job="app"})`, 9},
		{`test_requests_total{code="503"}`, 2},
		{`sum(test_requests_total{code=~"2.."}) / sum(test_requests_total)`, 7.0 / 9},
		{`up{job="app"}`, 1},
		{`up{job="gone"}`, 0},
	} {
		t.Run(tc.query, func(t *testing.T) {
			v := srv.QueryVectorT(t, tc.query)
			if len(v) != 1 || float64(v[0].Value) != tc.want {
				t.Fatalf("%s = %v, want one sample %v", tc.query, v, tc.want)
			}
		})
	}

	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	gone, err := srv.WaitScraped(ctx, "gone", since)
	if err != nil {
		t.Fatal(err)
	}
	if down := lmprom.Down(gone); len(down) != 1 || !strings.Contains(down[0], "connection refused") {
		t.Fatalf("Down(gone) = %q, want the refused target", down)
	}
	if _, err := srv.QueryVector(ctx, `sum(rate(`); err == nil {
		t.Fatal("a malformed query returned no error")
	}

	// Reload drops the down job, as a user's config change would.
	if err := srv.Reload(ctx, []string{lmprom.StaticJob("app", addr)}, nil); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(20 * time.Second)
	for {
		all, err := srv.Targets(ctx, "")
		if err != nil {
			t.Fatal(err)
		}
		if len(all) == 1 && all[0].ScrapePool == "app" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("after reload, targets = %+v, want only job app", all)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// With NativeHistograms, the server negotiates the protobuf format and
// stores client_golang's native histogram as one; histogram_count reads it.
func TestNativeHistograms(t *testing.T) {
	reg := prometheus.NewRegistry()
	h := prometheus.NewHistogram(prometheus.HistogramOpts{
		Name: "test_duration_seconds", Help: "h",
		NativeHistogramBucketFactor: 1.1,
	})
	reg.MustRegister(h)
	addr := serve(t, reg)
	srv := lmprom.StartT(t, lmprom.Options{NativeHistograms: true, ScrapeConfigs: []string{lmprom.StaticJob("app", addr)}})
	for _, v := range []float64{0.01, 0.02, 0.5} {
		h.Observe(v)
	}
	srv.WaitScrapedT(t, "app", time.Now())
	v := srv.QueryVectorT(t, `histogram_count(test_duration_seconds)`)
	if len(v) != 1 || v[0].Value != 3 {
		t.Fatalf("histogram_count = %v, want 3 (a native histogram)", v)
	}
}

func TestBadConfigIsAnError(t *testing.T) {
	for name, doc := range map[string]string{
		"not yaml":   "job_name: [",
		"not a job":  "42",
		"bad config": "job_name: x\nscrape_interval: soon\nstatic_configs: [{targets: ['127.0.0.1:1']}]",
	} {
		t.Run(name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			srv, err := lmprom.Start(ctx, lmprom.Options{ScrapeConfigs: []string{doc}, StartTimeout: 15 * time.Second})
			if err == nil {
				t.Fatalf("Start accepted %q (Stop: %v)", doc, srv.Stop())
			}
		})
	}
}
