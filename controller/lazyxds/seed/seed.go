// Package seed reads a mesh's call graph from Prometheus: the edges source
// workload → destination service of Istio's standard request counter
// (istio_requests_total{reporter="source"}), which Istio's telemetry and
// leanmesh's exposition both write with the same names and labels. The lazy
// xDS loop feeds them to lazyxds.Graph.Seed so workloads start warm.
//
// One query per policy, bounded three ways: topk(MaxEdges) server side, a
// timeout passed to Prometheus and to the HTTP client, and a cap on the
// response bytes read.
package seed

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/prometheus/client_golang/api"
	promv1 "github.com/prometheus/client_golang/api/prometheus/v1"
	"github.com/prometheus/common/config"
	"github.com/prometheus/common/model"

	"github.com/leanmesh/leanmesh/controller/lazyxds"
)

// Defaults of Config.
const (
	DefaultLookBack = 24 * time.Hour
	DefaultMaxEdges = 200_000
	DefaultTimeout  = time.Minute
	DefaultInterval = 10 * time.Minute
	// bytesPerEdge bounds the response: one vector sample of the query's
	// three labels is ~200 bytes of JSON; the cap leaves room for long names.
	bytesPerEdge = 1024
)

// Config is one policy's query.
type Config struct {
	// URL of the Prometheus server (a path prefix is kept).
	URL string
	// HTTP carries auth and TLS (prometheus/common's client config, as
	// Prometheus itself uses for scrapes).
	HTTP config.HTTPClientConfig
	// LookBack is the window an edge must have been called in.
	LookBack time.Duration
	// MinRate: requests per second averaged over LookBack; 0 keeps any edge
	// with a sample in the window.
	MinRate float64
	// MaxEdges bounds the result (topk by rate).
	MaxEdges int
	// Timeout of the whole query.
	Timeout time.Duration
	// Namespaces, when set, keeps only callers in them; otherwise
	// ExcludeNamespaces drops callers in them (a root-namespace policy).
	Namespaces        []string
	ExcludeNamespaces []string
}

func (c Config) withDefaults() Config {
	if c.LookBack <= 0 {
		c.LookBack = DefaultLookBack
	}
	if c.MaxEdges <= 0 {
		c.MaxEdges = DefaultMaxEdges
	}
	if c.Timeout <= 0 {
		c.Timeout = DefaultTimeout
	}
	return c
}

// Result is one query's outcome.
type Result struct {
	Query    string
	Edges    []lazyxds.SeedEdge
	Rates    []float64 // per edge, requests per second over the window
	Dropped  int       // samples without a usable workload or service label
	Warnings []string
	// Truncated: the result reached MaxEdges, so quieter edges may be missing.
	Truncated bool
	Took      time.Duration
	Bytes     int64 // response bytes read
}

// Query is the PromQL for cfg. The selector drops Istio's "unknown"
// placeholders; sum by the three edge labels merges pods, versions and
// response codes into one sample per edge.
func Query(cfg Config) string {
	cfg = cfg.withDefaults()
	sel := []string{`reporter="source"`, `source_workload!="unknown"`, `source_workload!=""`, `destination_service!="unknown"`, `destination_service!=""`}
	if len(cfg.Namespaces) > 0 {
		sel = append(sel, `source_workload_namespace=~"`+alternation(cfg.Namespaces)+`"`)
	} else if len(cfg.ExcludeNamespaces) > 0 {
		sel = append(sel, `source_workload_namespace!~"`+alternation(cfg.ExcludeNamespaces)+`"`)
	}
	series := "istio_requests_total{" + strings.Join(sel, ",") + "}"
	window := "[" + model.Duration(cfg.LookBack).String() + "]"
	const by = "sum by (source_workload_namespace, source_workload, destination_service) "
	rate := by + "(rate(" + series + window + "))"
	var expr string
	if cfg.MinRate > 0 {
		expr = rate + " >= " + strconv.FormatFloat(cfg.MinRate, 'g', -1, 64)
	} else {
		// rate() needs two samples with an increase; an edge whose series
		// appeared once in the window (one scrape, or calls only before the
		// first scrape) still counts, with rate 0.
		expr = rate + " or " + by + "(0 * last_over_time(" + series + window + "))"
	}
	return "topk(" + strconv.Itoa(cfg.MaxEdges) + ", " + expr + ")"
}

func alternation(names []string) string {
	q := make([]string, len(names))
	for i, n := range names {
		// PromQL string escaping of the RE2 escaping.
		q[i] = strings.ReplaceAll(regexp.QuoteMeta(n), `\`, `\\`)
	}
	return strings.Join(q, "|")
}

// Fetch runs the query at now.
func Fetch(ctx context.Context, cfg Config, now time.Time) (Result, error) {
	cfg = cfg.withDefaults()
	res := Result{Query: Query(cfg)}
	rt, err := config.NewRoundTripperFromConfig(cfg.HTTP, "leanmesh-lazyxds-seed")
	if err != nil {
		return res, fmt.Errorf("seed: prometheus client config: %w", err)
	}
	lim := &limitedTransport{next: rt, max: int64(cfg.MaxEdges)*bytesPerEdge + 64<<10}
	client, err := api.NewClient(api.Config{Address: cfg.URL, RoundTripper: lim})
	if err != nil {
		return res, fmt.Errorf("seed: %w", err)
	}
	ctx, cancel := context.WithTimeout(ctx, cfg.Timeout)
	defer cancel()
	start := time.Now()
	val, warns, err := promv1.NewAPI(client).Query(ctx, res.Query, now, promv1.WithTimeout(cfg.Timeout))
	res.Took, res.Warnings, res.Bytes = time.Since(start), warns, lim.read
	if err != nil {
		if lim.exceeded {
			return res, fmt.Errorf("seed: response over %d bytes (maxEdges %d): %w", lim.max, cfg.MaxEdges, err)
		}
		return res, fmt.Errorf("seed: query %s: %w", cfg.URL, err)
	}
	vec, ok := val.(model.Vector)
	if !ok {
		return res, fmt.Errorf("seed: query returned %s, want a vector", val.Type())
	}
	res.Edges = make([]lazyxds.SeedEdge, 0, len(vec))
	res.Rates = make([]float64, 0, len(vec))
	for _, s := range vec {
		ns, wl := string(s.Metric["source_workload_namespace"]), string(s.Metric["source_workload"])
		svc := string(s.Metric["destination_service"])
		if ns == "" || wl == "" || svc == "" {
			res.Dropped++
			continue
		}
		res.Edges = append(res.Edges, lazyxds.SeedEdge{Workload: lazyxds.WorkloadKey{Namespace: ns, Name: wl}, Service: svc})
		res.Rates = append(res.Rates, float64(s.Value))
	}
	res.Truncated = len(vec) >= cfg.MaxEdges
	return res, nil
}

// limitedTransport fails a response body that grows past max, so a huge
// answer cannot exhaust the controller's memory.
type limitedTransport struct {
	next     http.RoundTripper
	max      int64
	read     int64
	exceeded bool
}

func (t *limitedTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	resp, err := t.next.RoundTrip(r)
	if err != nil {
		return nil, err
	}
	resp.Body = &limitedBody{rc: resp.Body, t: t}
	return resp, nil
}

type limitedBody struct {
	rc io.ReadCloser
	t  *limitedTransport
}

var errTooLarge = errors.New("response too large")

func (b *limitedBody) Read(p []byte) (int, error) {
	if b.t.read >= b.t.max {
		b.t.exceeded = true
		_ = b.rc.Close() // drop the connection: the rest is never read
		return 0, errTooLarge
	}
	if rest := b.t.max - b.t.read; int64(len(p)) > rest {
		p = p[:rest]
	}
	n, err := b.rc.Read(p)
	b.t.read += int64(n)
	return n, err
}

func (b *limitedBody) Close() error { return b.rc.Close() }
