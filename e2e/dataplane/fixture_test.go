package dataplane

import (
	"bytes"
	"os"
	"path/filepath"
	"sync"
	"testing"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/leanmesh/leanmesh/e2e/envoyhost"
)

var (
	buildOnce sync.Once
	buildErr  error
	art       struct{ dir, host, leanmesh, noop, sdkstats string }
)

// artifacts builds the host and the libraries fresh, once per test binary.
func artifacts(tb testing.TB) {
	tb.Helper()
	buildOnce.Do(func() {
		art.dir, buildErr = os.MkdirTemp("", "leanmesh-dataplane-")
		if buildErr != nil {
			return
		}
		art.host = filepath.Join(art.dir, "envoyhost")
		art.leanmesh = filepath.Join(art.dir, "leanmesh.so")
		art.noop = filepath.Join(art.dir, "noop.so")
		art.sdkstats = filepath.Join(art.dir, "sdkstats.so")
		steps := []func() error{
			func() error { return envoyhost.BuildHost(art.host) },
			func() error { return envoyhost.BuildPlugin("./filters/cmd/leanmesh", art.leanmesh) },
			func() error { return envoyhost.BuildPlugin("./e2e/envoyhost/plugins/noop", art.noop) },
			func() error { return envoyhost.BuildPlugin("./e2e/envoyhost/plugins/sdkstats", art.sdkstats) },
		}
		for _, s := range steps {
			if buildErr = s(); buildErr != nil {
				return
			}
		}
	})
	if buildErr != nil {
		tb.Fatalf("build: %v", buildErr)
	}
}

func TestMain(m *testing.M) {
	code := m.Run()
	if art.dir != "" {
		os.RemoveAll(art.dir)
	}
	os.Exit(code)
}

// sidecar is one proxy: a host process with leanmesh.so loaded, the
// identity Istio's injector would give the pod, and its filter configs.
type sidecar struct {
	h                     *envoyhost.Host
	id                    string
	ip                    string
	inbound, outbound, ex uint64
	labels                string // the pod-labels file local_identity reads
	// istioMX, when set, is Istio's own HTTP exchange running in the
	// sidecar's chains beside leanmesh (Shadow mode); nil as in LeanMesh
	// mode, where the controller removes it.
	istioMX *istioMX
}

type pod struct {
	name, ns, workload, app, version, ip, sa string
}

func (p pod) env() []string {
	return []string{
		"POD_NAME=" + p.name, "POD_NAMESPACE=" + p.ns, "INSTANCE_IP=" + p.ip, "SERVICE_ACCOUNT=" + p.sa,
		"ISTIO_META_WORKLOAD_NAME=" + p.workload, "ISTIO_META_CLUSTER_ID=Kubernetes", "ISTIO_META_MESH_ID=cluster.local",
		"ISTIO_META_ISTIO_VERSION=1.31.1", "ISTIO_META_OWNER=kubernetes://apis/apps/v1/namespaces/" + p.ns + "/deployments/" + p.workload,
	}
}

func (p pod) spiffe() string { return "spiffe://cluster.local/ns/" + p.ns + "/sa/" + p.sa }

var (
	productpage = pod{"productpage-v1-6b746f74dc-9stvs", "bookinfo", "productpage-v1", "productpage", "v1", "10.1.0.11", "bookinfo-productpage"}
	reviews     = pod{"reviews-v2-7bf8c9648f-xz4fq", "bookinfo", "reviews-v2", "reviews", "v2", "10.1.0.12", "bookinfo-reviews"}
)

// startSidecar starts a host for p with the given workers and configures
// inbound, outbound and exposition filters as the controller renders them.
func startSidecar(t testing.TB, p pod, workers int, extra map[string]interface{}) *sidecar {
	t.Helper()
	return startSidecarEnv(t, p, workers, extra, nil)
}

// startSidecarEnv is startSidecar with extra environment for the host.
func startSidecarEnv(t testing.TB, p pod, workers int, extra map[string]interface{}, env []string) *sidecar {
	t.Helper()
	return startSidecarWith(t, p, workers, extra, env, "")
}

// startSidecarSO is startSidecar with another build of the library.
func startSidecarSO(t testing.TB, p pod, workers int, so string) *sidecar {
	t.Helper()
	return startSidecarWith(t, p, workers, nil, nil, so)
}

func startSidecarWith(t testing.TB, p pod, workers int, extra map[string]interface{}, env []string, so string) *sidecar {
	t.Helper()
	return startSidecarTuned(t, p, workers, extra, env, so, nil)
}

// startSidecarTuned is startSidecarWith with tune applied to the host's
// options before it starts (nil: none).
func startSidecarTuned(t testing.TB, p pod, workers int, extra map[string]interface{}, env []string, so string, tune func(*envoyhost.Options)) *sidecar {
	t.Helper()
	artifacts(t)
	dir := t.TempDir()
	labels := filepath.Join(dir, "labels")
	content := "app=\"" + p.app + "\"\nversion=\"" + p.version + "\"\nservice.istio.io/canonical-name=\"" + p.app +
		"\"\nservice.istio.io/canonical-revision=\"" + p.version + "\"\n"
	if err := os.WriteFile(labels, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
	if so == "" {
		so = art.leanmesh
	}
	opts := envoyhost.Options{HostBin: art.host, SO: so, Workers: workers, Env: append(p.env(), env...), LogLevel: 3}
	if tune != nil {
		tune(&opts)
	}
	h, err := envoyhost.Start(opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { h.Close() })
	s := &sidecar{h: h, ip: p.ip, labels: labels, id: "sidecar~" + p.ip + "~" + p.name + "." + p.ns + "~" + p.ns + ".svc.cluster.local"}
	mk := func(fields map[string]interface{}) uint64 {
		fields["local_identity"] = map[string]interface{}{"pod_labels_path": labels}
		for k, v := range extra {
			fields[k] = v
		}
		a, err := envoyhost.TypedStruct("type.googleapis.com/leanmesh.Config", fields)
		if err != nil {
			t.Fatal(err)
		}
		id, err := h.Config("leanmesh", a)
		if err != nil {
			t.Fatal(err)
		}
		return id
	}
	s.inbound = mk(map[string]interface{}{"direction": "inbound"})
	s.outbound = mk(map[string]interface{}{"direction": "outbound"})
	exa, _ := envoyhost.TypedStruct("type.googleapis.com/leanmesh.Config", map[string]interface{}{"exposition": map[string]interface{}{"enabled": true}})
	if s.ex, err = h.Config("leanmesh", exa); err != nil {
		t.Fatal(err)
	}
	return s
}

// scrape fetches the exposition as Prometheus would: GET /stats/prometheus
// on the exposition listener, answered by the filter's local reply.
func (s *sidecar) scrape(t testing.TB) map[string]*dto.MetricFamily {
	t.Helper()
	p := expfmt.NewTextParser(model.UTF8Validation)
	body := s.scrapeText(t)
	fams, err := p.TextToMetricFamilies(bytes.NewReader(body))
	if err != nil {
		t.Fatalf("exposition does not parse: %v\n%s", err, body)
	}
	return fams
}

// scrapeText is the exposition's text as served.
func (s *sidecar) scrapeText(t testing.TB) []byte {
	t.Helper()
	res, err := s.h.Run(&envoyhost.Request{Config: s.ex, NoResponse: true,
		Headers: envoyhost.H(":method", "GET", ":path", "/stats/prometheus", ":authority", s.ip+":15095", ":scheme", "http")})
	if err != nil {
		t.Fatal(err)
	}
	if res.LocalReply == nil || res.LocalReply.Code != 200 {
		t.Fatalf("scrape: %+v (error %q)", res.LocalReply, res.Error)
	}
	if ct, _ := res.Downstream.Headers.Get("content-type"); ct != "" && ct != "text/plain; version=0.0.4; charset=utf-8" {
		t.Errorf("content-type %q", ct)
	}
	return []byte(res.LocalReply.Body)
}

func labelsOf(m *dto.Metric) map[string]string {
	out := map[string]string{}
	for _, lp := range m.GetLabel() {
		out[lp.GetName()] = lp.GetValue()
	}
	return out
}

// series returns the samples of family whose labels include sel.
func series(fams map[string]*dto.MetricFamily, family string, sel map[string]string) []*dto.Metric {
	var out []*dto.Metric
	for _, m := range fams[family].GetMetric() {
		ls := labelsOf(m)
		ok := true
		for k, v := range sel {
			if ls[k] != v {
				ok = false
			}
		}
		if ok {
			out = append(out, m)
		}
	}
	return out
}

func meshCluster(svc, ns string, port string) (string, *corev3.Metadata) {
	host := svc + "." + ns + ".svc.cluster.local"
	return "outbound|" + port + "||" + host, envoyhost.IstioClusterMetadata(host, svc, ns)
}
