package seed

import (
	"context"
	"encoding/pem"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/common/config"

	"github.com/leanmesh/leanmesh/controller/lazyxds"
)

func TestQuery(t *testing.T) {
	tests := []struct {
		name string
		cfg  Config
		want []string // substrings
		not  []string
	}{
		{"defaults: any call in 24h, top 200000, both rate and presence", Config{Namespaces: []string{"shop"}},
			[]string{`topk(200000, sum by (source_workload_namespace, source_workload, destination_service) (rate(istio_requests_total{reporter="source",`,
				`source_workload_namespace=~"shop"`, `[1d])) or sum by`, `(0 * last_over_time(`, `destination_service!="unknown"`}, []string{">="}},
		{"min rate", Config{MinRate: 0.5, LookBack: time.Hour, MaxEdges: 10, ExcludeNamespaces: []string{"kube-system", "istio-system"}},
			[]string{`topk(10, `, `[1h])) >= 0.5)`, `source_workload_namespace!~"kube-system|istio-system"`}, []string{"last_over_time"}},
		{"namespace names are escaped", Config{Namespaces: []string{"a.b"}}, []string{`source_workload_namespace=~"a\\.b"`}, nil},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			q := Query(tc.cfg)
			for _, w := range tc.want {
				if !strings.Contains(q, w) {
					t.Errorf("query lacks %q:\n%s", w, q)
				}
			}
			for _, w := range tc.not {
				if strings.Contains(q, w) {
					t.Errorf("query has %q:\n%s", w, q)
				}
			}
		})
	}
}

// promAPI answers /api/v1/query like Prometheus with n edges, after checking
// the request's credentials.
func promAPI(t *testing.T, n int, check func(*http.Request) error) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if err := check(r); err != nil {
			http.Error(w, `{"status":"error","errorType":"unauthorized","error":"`+err.Error()+`"}`, http.StatusUnauthorized)
			return
		}
		if err := r.ParseForm(); err != nil || !strings.HasPrefix(r.Form.Get("query"), "topk(") || r.Form.Get("timeout") == "" {
			http.Error(w, "bad query", http.StatusBadRequest)
			return
		}
		var b strings.Builder
		b.WriteString(`{"status":"success","data":{"resultType":"vector","result":[`)
		for i := 0; i < n; i++ {
			if i > 0 {
				b.WriteByte(',')
			}
			fmt.Fprintf(&b, `{"metric":{"source_workload":"wl-%d","source_workload_namespace":"shop","destination_service":"svc-%d.shop.svc.cluster.local"},"value":[1700000000,"%d"]}`, i, i, i)
		}
		b.WriteString(`,{"metric":{"source_workload":"","destination_service":"x"},"value":[1700000000,"1"]}]}}`)
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write([]byte(b.String()))
	})
}

func TestFetchAuthAndTLS(t *testing.T) {
	bearer := func(r *http.Request) error {
		if r.Header.Get("Authorization") != "Bearer s3cret" {
			return fmt.Errorf("no token")
		}
		return nil
	}
	srv := httptest.NewTLSServer(promAPI(t, 3, bearer))
	defer srv.Close()
	ca := string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: srv.Certificate().Raw}))
	good := config.HTTPClientConfig{
		Authorization: &config.Authorization{Type: "Bearer", Credentials: "s3cret"},
		TLSConfig:     config.TLSConfig{CA: ca, ServerName: "example.com"}, // httptest's certificate names example.com
	}
	res, err := Fetch(context.Background(), Config{URL: srv.URL, HTTP: good}, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Edges) != 3 || res.Dropped != 1 || res.Edges[2] != (lazyxds.SeedEdge{Workload: lazyxds.WorkloadKey{Namespace: "shop", Name: "wl-2"}, Service: "svc-2.shop.svc.cluster.local"}) || res.Rates[2] != 2 || res.Truncated {
		t.Fatalf("result %+v", res)
	}
	// Without the CA, or without the token, the query fails with a clear error.
	noCA := good
	noCA.TLSConfig.CA = ""
	if _, err := Fetch(context.Background(), Config{URL: srv.URL, HTTP: noCA}, time.Now()); err == nil || !strings.Contains(err.Error(), "certificate") {
		t.Errorf("no CA: %v", err)
	}
	noTok := good
	noTok.Authorization = nil
	if _, err := Fetch(context.Background(), Config{URL: srv.URL, HTTP: noTok}, time.Now()); err == nil {
		t.Errorf("no token: accepted")
	}
}

func TestFetchBounds(t *testing.T) {
	basic := func(r *http.Request) error {
		if u, p, ok := r.BasicAuth(); !ok || u != "u" || p != "p" {
			return fmt.Errorf("no basic auth")
		}
		return nil
	}
	srv := httptest.NewServer(promAPI(t, 50, basic))
	defer srv.Close()
	auth := config.HTTPClientConfig{BasicAuth: &config.BasicAuth{Username: "u", Password: "p"}}
	res, err := Fetch(context.Background(), Config{URL: srv.URL, HTTP: auth, MaxEdges: 50}, time.Now())
	if err != nil || !res.Truncated {
		t.Fatalf("at maxEdges: truncated=%v err=%v", res.Truncated, err)
	}
	// A response far over maxEdges' byte budget is cut off, not read whole.
	big := httptest.NewServer(promAPI(t, 5000, basic))
	defer func() { big.CloseClientConnections(); big.Close() }()
	if _, err := Fetch(context.Background(), Config{URL: big.URL, HTTP: auth, MaxEdges: 1}, time.Now()); err == nil || !strings.Contains(err.Error(), "response over") {
		t.Fatalf("oversized response: %v", err)
	}
	// A server that never answers is abandoned at the timeout.
	slow := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-r.Context().Done():
		case <-time.After(2 * time.Second):
		}
	}))
	defer func() { slow.CloseClientConnections(); slow.Close() }()
	start := time.Now()
	if _, err := Fetch(context.Background(), Config{URL: slow.URL, Timeout: 300 * time.Millisecond}, time.Now()); err == nil || time.Since(start) > 5*time.Second {
		t.Fatalf("slow server: err=%v after %s", err, time.Since(start))
	}
}
