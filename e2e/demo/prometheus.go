package demo

import (
	"context"
	"fmt"
	"math"
	"math/rand/v2"
	"net"
	"net/http"
	"strings"
	"time"

	"github.com/leanmesh/leanmesh/e2e/envoyhost"
	lmprom "github.com/leanmesh/leanmesh/e2e/prometheus"
	"github.com/leanmesh/leanmesh/filters/telemetry"
	"github.com/leanmesh/leanmesh/monitoring"
)

// demoRequests and demoDuration describe what telemetry() sends: n requests
// productpage → reviews, the i-th taking 3+i ms on the reviews side.
const demoRequests = 20

func demoDuration(i int) float64 { return float64(3 + i) }

// prometheus serves both proxies' exposition on real TCP ports, lets the
// real Prometheus (Debian's server) scrape them and prints the answer of
// Istio's dashboard queries next to what telemetry() sent.
func (r *run) prometheus() error {
	r.section("Prometheus scrapes both proxies' :15095 and answers Istio's dashboard queries")
	base := 10 + rand.IntN(200)
	var addrs []string
	for i, name := range []string{"productpage", "reviews"} {
		p := r.proxies[name]
		hs, addr, err := serveExposition(p, fmt.Sprintf("127.%d.0.%d", base, 10+i))
		if err != nil {
			return err
		}
		r.cleanup = append(r.cleanup, hs.Close)
		addrs = append(addrs, addr)
		r.say("  %-12s exposition on http://%s/stats/prometheus (the pod's :15095)", name, addr)
	}
	// The exposition answers on its own path only, as the shipped jobs scrape it.
	job := lmprom.StaticJob(monitoring.Proxies.Job, addrs...) + "metrics_path: " + monitoring.Proxies.Path + "\n"
	srv, err := lmprom.Start(r.ctx, lmprom.Options{ScrapeConfigs: []string{job}})
	if err != nil {
		return err
	}
	r.cleanup = append(r.cleanup, srv.Stop)
	ctx, cancel := context.WithTimeout(r.ctx, time.Minute)
	defer cancel()
	targets, err := srv.WaitScraped(ctx, monitoring.Proxies.Job, time.Now())
	if err != nil {
		return err
	}
	if down := lmprom.Down(targets); len(down) > 0 {
		return fmt.Errorf("targets down: %s", strings.Join(down, "; "))
	}
	r.say("  Prometheus %s: %d targets up (job %s)", srv.URL, len(targets), monitoring.Proxies.Job)

	var sent []float64
	for i := 0; i < demoRequests; i++ {
		sent = append(sent, demoDuration(i))
	}
	// Istio's "Request Duration" and "Incoming Request Volume" panels, over
	// the whole run (sum of the counters instead of irate over 1m: the demo
	// sent its traffic in one burst before Prometheus started).
	for _, q := range []struct {
		what, query string
		want        float64
		sent        string
	}{
		{"requests by destination workload (reporter=destination)",
			`sum by (destination_workload) (istio_requests_total{reporter="destination",destination_workload="reviews"})`,
			demoRequests, fmt.Sprintf("%d requests", demoRequests)},
		{"P99 request duration, ms (histogram_quantile over Envoy's buckets)",
			`histogram_quantile(0.99, sum by (le) (istio_request_duration_milliseconds_bucket{reporter="destination",destination_workload="reviews"}))`,
			bucketQuantile(0.99, sent, telemetry.DefaultBuckets),
			fmt.Sprintf("durations %v..%v ms; their P99 is %v ms, which Prometheus interpolates in its bucket", sent[0], sent[len(sent)-1], sent[len(sent)-1])},
	} {
		v, err := srv.QueryVector(ctx, q.query)
		if err != nil {
			return err
		}
		if len(v) != 1 || math.Abs(float64(v[0].Value)-q.want) > 1e-9 {
			return fmt.Errorf("%s: Prometheus answered %v, want %v\n%s", q.what, v, q.want, q.query)
		}
		r.say("  %s:\n    %s\n    Prometheus: %v   sent: %s (expected %v)", q.what, q.query, float64(v[0].Value), q.sent, q.want)
	}
	return nil
}

// bucketQuantile is what histogram_quantile answers for values observed into
// buckets with upper bounds les: linear interpolation inside the bucket
// holding rank q*count (promql/quantile.go, bucketQuantile).
func bucketQuantile(q float64, values, les []float64) float64 {
	counts := make([]float64, len(les))
	for _, v := range values {
		for i, le := range les {
			if v <= le {
				counts[i]++
				break
			}
		}
	}
	rank := q * float64(len(values))
	cum, lower := 0.0, 0.0
	for i, c := range counts {
		if cum+c >= rank && c > 0 {
			return lower + (les[i]-lower)*(rank-cum)/c
		}
		cum += c
		lower = les[i]
	}
	return math.NaN()
}

// serveExposition answers GET /stats/prometheus on addr:15095 through the
// proxy's scrape-listener filter in its test host.
func serveExposition(p *proxy, ip string) (*http.Server, string, error) {
	l, err := net.Listen("tcp", net.JoinHostPort(ip, "15095"))
	if err != nil {
		return nil, "", fmt.Errorf("exposition of %s: %w", p.w.Name, err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		res, err := p.host.Run(&envoyhost.Request{Config: p.cfgEx, NoResponse: true,
			Headers: envoyhost.H(":method", req.Method, ":path", req.URL.RequestURI(), ":authority", req.Host, ":scheme", "http")})
		if err != nil || res.LocalReply == nil {
			http.Error(w, fmt.Sprintf("host: %v", err), http.StatusBadGateway)
			return
		}
		for _, kv := range res.Downstream.Headers {
			if !strings.HasPrefix(kv[0], ":") {
				w.Header().Add(kv[0], kv[1])
			}
		}
		w.WriteHeader(res.LocalReply.Code)
		_, _ = w.Write(res.LocalReply.Body)
	})}
	go func() { _ = srv.Serve(l) }()
	return srv, l.Addr().String(), nil
}
