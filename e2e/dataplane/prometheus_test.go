package dataplane

import (
	"bytes"
	"encoding/json"
	"fmt"
	"math"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/leanmesh/leanmesh/filters/pluginconfig"

	"github.com/prometheus/common/model"
	networkingv1alpha3 "istio.io/client-go/pkg/apis/networking/v1alpha3"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/yaml"

	"github.com/leanmesh/leanmesh/controller/api/v1alpha1"
	"github.com/leanmesh/leanmesh/controller/release"
	"github.com/leanmesh/leanmesh/controller/render"
	"github.com/leanmesh/leanmesh/e2e/envoyhost"
	lmprom "github.com/leanmesh/leanmesh/e2e/prometheus"
	"github.com/leanmesh/leanmesh/envoy-build/podpatch"
	"github.com/leanmesh/leanmesh/monitoring"
)

// TestPrometheusScrapesShippedConfig: a real Prometheus (Debian v2.42)
// scrapes two test hosts' exposition, served on real TCP ports, through the
// shipped scrape job (monitoring/prometheus/scrape-config.yaml) and through
// the config prometheus-operator's own generator makes for the chart's PodMonitor. The
// pods are shaped as Istio injects them after the library-install patch.
// Debian's Prometheus is built without Kubernetes discovery, so the pods'
// targets are written as file_sd groups carrying exactly the labels
// Prometheus' pod discovery would give them (podTargets); the jobs'
// relabeling then runs unchanged in the real server.
func TestPrometheusScrapesShippedConfig(t *testing.T) {
	client := startSidecar(t, productpage, 1, nil)
	server := startSidecar(t, reviews, 1, nil)
	rel := release.Embedded().Default()

	// Each pod gets its own loopback address (127.R.0.N) so every exposition
	// listens on the real port 15095, as in a pod.
	base := 10 + rand.IntN(200)
	ip := func(n int) string { return fmt.Sprintf("127.%d.0.%d", base, n) }
	pods := []*corev1.Pod{
		injectedPod("productpage-v1-6b746f74dc-9stvs", ip(11), rel.Envoy, corev1.PodRunning),
		injectedPod("reviews-v2-7bf8c9648f-xz4fq", ip(12), rel.Envoy, corev1.PodRunning),
		injectedPod("ratings-v1-b6994bb9-gl5kx", ip(13), "", corev1.PodRunning),            // no library: no target
		injectedPod("reviews-v2-7bf8c9648f-old00", ip(14), rel.Envoy, corev1.PodSucceeded), // finished: dropped
	}
	// The scrape listener's filter as the controller renders it.
	exposition := renderedConfigs(t, v1alpha1.ModeIstio).exposition
	for i, s := range []*sidecar{client, server} {
		s.ex = loadConfig(t, s, exposition)
		serveExposition(t, s, pods[i].Status.PodIP)
	}

	dir := t.TempDir()
	sdFile := filepath.Join(dir, "pods.json")
	writeTargets(t, sdFile, pods)
	shipped := jobWithFileSD(t, monitoring.Proxies.ScrapeConfig(), sdFile)
	operatorJob, operatorJobName := podMonitorScrapeConfig(t)
	operator := jobWithFileSD(t, operatorJob, sdFile)
	// A 3s scrape interval (and timeout): at 1s a scrape through the C host
	// timed out on a machine shared by many test runs (load ~26 on 2 cores),
	// which this test would read as a target down.
	srv := lmprom.StartT(t, lmprom.Options{ScrapeConfigs: []string{shipped, operator}, ScrapeInterval: 3 * time.Second})

	// Exactly one target per pod with the library, for both configs.
	for _, job := range []string{monitoring.Proxies.Job, operatorJobName} {
		targets := srv.WaitScrapedT(t, job, time.Now())
		var urls []string
		for _, tg := range targets {
			urls = append(urls, tg.ScrapeURL)
		}
		want := []string{"http://" + ip(11) + ":15095/stats/prometheus", "http://" + ip(12) + ":15095/stats/prometheus"}
		if strings.Join(urls, " ") != strings.Join(want, " ") {
			t.Fatalf("job %s scrapes %v, want one target per pod with the library: %v", job, urls, want)
		}
	}
	// From here on one job, as a user runs one of them.
	if err := srv.Reload(t.Context(), []string{shipped}, nil); err != nil {
		t.Fatal(err)
	}
	waitTargets(t, srv, 2)

	// Istio → LeanMesh → Shadow → Istio. The exposition object renders the
	// same in every mode, so the listener (and the target) never changes;
	// the traffic filters come and go.
	sent := 0.0
	var leanEnd time.Time
	for _, mode := range []v1alpha1.Mode{v1alpha1.ModeIstio, v1alpha1.ModeLeanMesh, v1alpha1.ModeShadow, v1alpha1.ModeIstio} {
		cfgs := renderedConfigs(t, mode)
		if string(cfgs.exposition) != string(exposition) {
			t.Fatalf("%s: the exposition changed with the mode:\n%s\nvs\n%s", mode, cfgs.exposition, exposition)
		}
		if mode != v1alpha1.ModeIstio {
			for _, s := range []*sidecar{client, server} {
				s.inbound = loadConfig(t, s, cfgs.inbound)
				s.outbound = loadConfig(t, s, cfgs.outbound)
			}
			// Istio's HTTP exchange runs beside leanmesh in Shadow mode only
			// (LeanMesh mode removes it; leanmesh exchanges itself).
			client.istioMX, server.istioMX = nil, nil
			if mode == v1alpha1.ModeShadow {
				client.istioMX, server.istioMX = newIstioMX(t, productpage, client.id), newIstioMX(t, reviews, server.id)
			}
			for i := 0; i < 5; i++ {
				relay(t, client, server, reviewsExchange(fmt.Sprintf("/%s/%d", mode, i)))
			}
			sent += 5
		}
		if mode == v1alpha1.ModeLeanMesh {
			srv.WaitScrapedT(t, monitoring.Proxies.Job, time.Now())
			sent += checkIstioDashboards(t, srv, client, server)
			sent += checkBytesAndMessages(t, srv, client, server)
			sent += checkMalformedPeer(t, srv, server, pods[1].Name)
			leanEnd = time.Now()
		}
		if mode == v1alpha1.ModeShadow {
			sent += checkShadowCountsOnce(t, srv, client, server, leanEnd, 5)
		}
		targets := srv.WaitScrapedT(t, monitoring.Proxies.Job, time.Now()) // fails on a target down
		if len(targets) != 2 {
			t.Fatalf("%s: %d targets, want 2", mode, len(targets))
		}
		if v := srv.QueryVectorT(t, `min_over_time(up{job="leanmesh-proxies"}[1h])`); len(v) != 2 || v[0].Value != 1 || v[1].Value != 1 {
			t.Fatalf("%s: a target was down at some scrape: %v", mode, v)
		}
		// The families Istio's own filter keeps reporting in every mode
		// (istio_build from any istio.stats config, istio_tcp_* from the TCP
		// chains) never come from leanmesh's targets: summed with Istio's
		// :15020 they would double.
		if v := srv.QueryVectorT(t, `count by (__name__) ({__name__=~"istio_build|istio_tcp_.+",job="leanmesh-proxies"})`); len(v) != 0 {
			t.Errorf("%s: leanmesh's targets serve families Istio reports itself: %v", mode, v)
		}
		t.Logf("mode %-8s targets up: %d; requests sent so far %v", mode, len(targets), sent)
	}
	t.Logf("%v requests sent through LeanMesh and Shadow; no target down at any scrape", sent)
}

// checkIstioDashboards sends known traffic in LeanMesh mode and runs the
// PromQL of Istio's workload dashboard (monitoring/istio/dashboards.json,
// verbatim) against the real Prometheus, comparing with what was sent. It
// returns the number of requests sent.
//
// Every series exists before the measured batch (a warm-up request per
// response code), and the queries are evaluated at the timestamp of the
// first scrape after the batch: Istio's panels use irate, which then sees
// exactly the two samples around the batch, so counts, ratios and quantiles
// are exact.
func checkIstioDashboards(t *testing.T, srv *lmprom.Server, client, server *sidecar) float64 {
	t.Helper()
	send := func(i int, code string, d time.Duration) {
		x := reviewsExchange(fmt.Sprintf("/dash/%d", i))
		x.respHeaders = envoyhost.H(":status", code, "content-type", "application/json")
		x.serverReq.Info.RequestDuration = d
		relay(t, client, server, x)
	}
	send(-1, "200", 4*time.Millisecond)
	send(-2, "503", 30*time.Millisecond)

	// The batch: 20 requests, 10 at 4ms (bucket (1,5]) and 10 at 30ms
	// (bucket (25,50]), 5 of them answered 503.
	const n = 20
	ok200 := func(r string) string {
		return `istio_requests_total{reporter="` + r + `",destination_workload="reviews-v2",response_code="200"}`
	}
	batches := sendBetweenScrapes(t, srv, func(int) {
		for i := 0; i < n; i++ {
			code, d := "200", 4*time.Millisecond
			if i%2 == 1 {
				d = 30 * time.Millisecond
				if i%4 == 3 {
					code = "503"
				}
			}
			send(i, code, d)
		}
	}, 15, ok200("destination"), ok200("source"))

	// t1: the first sample with the batch; t0: the sample before it.
	raw, err := srv.Query(t.Context(), `istio_requests_total{reporter="destination",destination_workload="reviews-v2",response_code="200"}[2m]`)
	if err != nil {
		t.Fatal(err)
	}
	m, ok := raw.(model.Matrix)
	if !ok || len(m) != 1 {
		t.Fatalf("raw samples: %v", raw)
	}
	var t0, t1 model.Time
	var before model.SampleValue
	final := m[0].Values[len(m[0].Values)-1].Value
	for i, v := range m[0].Values {
		if v.Value == final && i > 0 {
			t0, t1, before = m[0].Values[i-1].Timestamp, v.Timestamp, m[0].Values[i-1].Value
			break
		}
	}
	if t1 == 0 || final-before != 15 {
		t.Fatalf("200 counter samples %v, want one step of 15 (the batch's 200s)", m[0].Values)
	}
	dt := t1.Sub(t0).Seconds()

	_, queries, err := monitoring.IstioQueries("../../monitoring/istio/dashboards.json")
	if err != nil {
		t.Fatal(err)
	}
	vars := strings.NewReplacer("$qrep", "destination", "$namespace", "bookinfo", "$workload", "reviews-v2",
		"$srcwl", "productpage-v1", "$srcns", "bookinfo", "$dstsvc", ".*", "$__rate_interval", "1m")
	round := func(v float64) float64 { return math.Round(v/0.001) * 0.001 }
	checks := []struct {
		panel, contains string
		want            float64
	}{
		{"Incoming Request Volume", "", round(n / dt)},
		{"Incoming Success Rate (non-5xx responses)", "", 15.0 / 20},
		{"Request Duration", "histogram_quantile(0.50,", 0.005},
		{"Request Duration", "histogram_quantile(0.90,", 0.045},
		{"Request Duration", "histogram_quantile(0.99,", 0.0495},
		{"Incoming Success Rate (non-5xx responses) By Source", `connection_security_policy="mutual_tls"`, 0.75},
		{"Incoming Request Duration By Source", `histogram_quantile(0.99, sum(irate(istio_request_duration_milliseconds_bucket{reporter=~"$qrep", connection_security_policy="mutual_tls"`, 0.0495},
	}
	for _, c := range checks {
		var expr string
		for _, q := range queries {
			if q.Dashboard == "istio-workload-dashboard.json" && q.Panel == c.panel && strings.Contains(q.Expr, c.contains) {
				expr = q.Expr
				break
			}
		}
		if expr == "" {
			t.Fatalf("no query for panel %q containing %q in monitoring/istio/dashboards.json", c.panel, c.contains)
		}
		v, err := srv.QueryAt(t.Context(), vars.Replace(expr), t1.Time())
		if err != nil {
			t.Fatal(err)
		}
		vec, ok := v.(model.Vector)
		if !ok || len(vec) != 1 {
			t.Errorf("%s: %v, want one sample %v\n%s", c.panel, v, c.want, vars.Replace(expr))
			continue
		}
		if got := float64(vec[0].Value); math.Abs(got-c.want) > 1e-9*math.Max(1, c.want) {
			t.Errorf("%s = %v, want %v (sent %d requests in %.3fs between scrapes)\n%s", c.panel, got, c.want, n, dt, vars.Replace(expr))
		} else {
			t.Logf("%-52s = %-8v (sent: %v)", c.panel, got, c.want)
		}
	}
	// Kiali's graph queries (monitoring/kiali) see the edge productpage-v1 →
	// reviews-v2 once per response code from each side, with every label
	// Kiali requires (it skips a sample lacking one).
	_, grouping, kqs, err := monitoring.KialiQueries("../../monitoring/kiali/graph-queries.json")
	if err != nil {
		t.Fatal(err)
	}
	kvars := strings.NewReplacer("$namespace", "bookinfo", "$duration", "60")
	// The two reporters are scraped at different moments: read the edges once
	// both scrapes hold the batch (t1 is the destination's).
	_, t1src := batchScrapes(t, srv, `istio_requests_total{reporter="source",destination_workload="reviews-v2",response_code="200"}`, 15)
	kialiAt := max(t1, t1src)
	for _, name := range []string{"http-incoming", "http-outgoing"} {
		var expr string
		for _, q := range kqs {
			if q.Name == name {
				expr = kvars.Replace(q.Expr)
			}
		}
		v, err := srv.QueryAt(t.Context(), expr, kialiAt.Time())
		if err != nil {
			t.Fatal(err)
		}
		vec, _ := v.(model.Vector)
		codes := map[string]bool{}
		for _, s := range vec {
			for _, l := range grouping {
				if _, ok := s.Metric[model.LabelName(l)]; !ok && l != "grpc_response_status" {
					t.Errorf("kiali %s: sample %v lacks %s", name, s.Metric, l)
				}
			}
			if s.Metric["source_workload"] == "productpage-v1" && s.Metric["destination_workload"] == "reviews-v2" && s.Value > 0 {
				codes[string(s.Metric["response_code"])] = true
			}
		}
		if !codes["200"] || !codes["503"] {
			t.Errorf("kiali %s: edge productpage-v1 → reviews-v2 by code %v, want 200 and 503\n%v", name, codes, vec)
		} else {
			t.Logf("kiali %-13s: %d edge samples, productpage-v1 → reviews-v2 for 200 and 503", name, len(vec))
		}
	}
	return float64(batches*n + 2)
}

// injectedPod is a pod as Istio's injector leaves it after the
// library-install patch: istio-init, the app, and istio-proxy with Envoy's
// own port plus the patch's leanmesh-prom. envoy "" is a pod without the
// library (no label, no port).
func injectedPod(name, ip, envoy string, phase corev1.PodPhase) *corev1.Pod {
	proxyPorts := []corev1.ContainerPort{{Name: "http-envoy-prom", ContainerPort: 15090, Protocol: corev1.ProtocolTCP}}
	labels := map[string]string{"app": strings.SplitN(name, "-", 2)[0], "security.istio.io/tlsMode": "istio"}
	if envoy != "" {
		proxyPorts = append(proxyPorts, corev1.ContainerPort{Name: podpatch.MetricsPortName, ContainerPort: podpatch.MetricsPort, Protocol: corev1.ProtocolTCP})
		labels[v1alpha1.LabelEnvoyVersion] = envoy
	}
	return &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "bookinfo", Labels: labels,
			Annotations: map[string]string{podpatch.AnnotationExcludeInboundPorts: "15095", "prometheus.io/port": "15020"}},
		Spec: corev1.PodSpec{
			InitContainers: []corev1.Container{{Name: "istio-init", Image: "docker.io/istio/proxyv2:1.31.1"}},
			Containers: []corev1.Container{
				{Name: "app", Image: "app", Ports: []corev1.ContainerPort{{Name: "http", ContainerPort: 9080, Protocol: corev1.ProtocolTCP}}},
				{Name: podpatch.ProxyContainer, Image: "docker.io/istio/proxyv2:1.31.1", Ports: proxyPorts},
			},
		},
		Status: corev1.PodStatus{Phase: phase, PodIP: ip},
	}
}

// podTargets mirrors Prometheus' Kubernetes pod discovery
// (discovery/kubernetes/pod.go, buildPod and podLabels): one target per
// container port, one per container without ports, init containers included
// with __meta_kubernetes_pod_container_init; pod labels, label-present
// markers, annotations, phase and namespace on every target.
func podTargets(pod *corev1.Pod) map[string]any {
	group := map[string]string{
		"__meta_kubernetes_namespace": pod.Namespace,
		"__meta_kubernetes_pod_name":  pod.Name,
		"__meta_kubernetes_pod_ip":    pod.Status.PodIP,
		"__meta_kubernetes_pod_phase": string(pod.Status.Phase),
		"__meta_kubernetes_pod_ready": "true",
	}
	for k, v := range pod.Labels {
		group["__meta_kubernetes_pod_label_"+sanitizeLabel(k)] = v
		group["__meta_kubernetes_pod_labelpresent_"+sanitizeLabel(k)] = "true"
	}
	for k, v := range pod.Annotations {
		group["__meta_kubernetes_pod_annotation_"+sanitizeLabel(k)] = v
		group["__meta_kubernetes_pod_annotationpresent_"+sanitizeLabel(k)] = "true"
	}
	var targets []string
	var perTarget []map[string]string
	all := append(append([]corev1.Container{}, pod.Spec.Containers...), pod.Spec.InitContainers...)
	for i, c := range all {
		init := strconv.FormatBool(i >= len(pod.Spec.Containers))
		if len(c.Ports) == 0 {
			targets = append(targets, pod.Status.PodIP)
			perTarget = append(perTarget, map[string]string{"__meta_kubernetes_pod_container_name": c.Name, "__meta_kubernetes_pod_container_init": init})
			continue
		}
		for _, p := range c.Ports {
			port := strconv.Itoa(int(p.ContainerPort))
			targets = append(targets, net.JoinHostPort(pod.Status.PodIP, port))
			perTarget = append(perTarget, map[string]string{
				"__meta_kubernetes_pod_container_name": c.Name, "__meta_kubernetes_pod_container_init": init,
				"__meta_kubernetes_pod_container_port_name": p.Name, "__meta_kubernetes_pod_container_port_number": port,
				"__meta_kubernetes_pod_container_port_protocol": string(p.Protocol),
			})
		}
	}
	return map[string]any{"group": group, "targets": targets, "perTarget": perTarget}
}

func sanitizeLabel(k string) string {
	return strings.Map(func(r rune) rune {
		if r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '_' {
			return r
		}
		return '_'
	}, k)
}

// writeTargets writes the file_sd groups: file_sd labels a whole group, so
// each discovered target becomes a group of one.
func writeTargets(t *testing.T, file string, pods []*corev1.Pod) {
	t.Helper()
	var groups []map[string]any
	for _, p := range pods {
		pt := podTargets(p)
		for i, addr := range pt["targets"].([]string) {
			labels := map[string]string{}
			for k, v := range pt["group"].(map[string]string) {
				labels[k] = v
			}
			for k, v := range pt["perTarget"].([]map[string]string)[i] {
				labels[k] = v
			}
			groups = append(groups, map[string]any{"targets": []string{addr}, "labels": labels})
		}
	}
	b, err := json.Marshal(groups)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(file, b, 0o644); err != nil {
		t.Fatal(err)
	}
}

// jobWithFileSD swaps the job's kubernetes_sd_configs for file_sd and keeps
// everything else as shipped.
func jobWithFileSD(t *testing.T, doc, file string) string {
	t.Helper()
	var job map[string]any
	if err := yaml.Unmarshal([]byte(doc), &job); err != nil {
		t.Fatal(err)
	}
	if _, ok := job["kubernetes_sd_configs"]; !ok {
		t.Fatalf("job %v does not discover pods", job["job_name"])
	}
	delete(job, "kubernetes_sd_configs")
	job["file_sd_configs"] = []any{map[string]any{"files": []any{file}, "refresh_interval": "1s"}}
	b, err := yaml.Marshal(job)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// podMonitorScrapeConfig is the job prometheus-operator's own config
// generator makes for the shipped PodMonitor
// (monitoring/prometheus-operator/podmonitor.scrape-config.yaml, written and
// kept current by e2e/promoperator), with $(SHARD) set to 0 as
// prometheus-config-reloader does for an unsharded Prometheus (the operator
// puts SHARD in the reloader's environment, pkg/operator/config_reloader.go,
// and the reloader expands $(VAR) when it writes the config).
func podMonitorScrapeConfig(t *testing.T) (job, name string) {
	t.Helper()
	b, err := os.ReadFile("../../monitoring/prometheus-operator/podmonitor.scrape-config.yaml")
	if err != nil {
		t.Fatal(err)
	}
	var jobs []map[string]any
	if err := yaml.Unmarshal(bytes.ReplaceAll(b, []byte("$(SHARD)"), []byte("0")), &jobs); err != nil {
		t.Fatal(err)
	}
	if len(jobs) != 1 {
		t.Fatalf("the operator made %d jobs for one PodMonitor endpoint", len(jobs))
	}
	out, err := yaml.Marshal(jobs[0])
	if err != nil {
		t.Fatal(err)
	}
	name, _ = jobs[0]["job_name"].(string)
	return string(out), name
}

// serveExposition serves the host's exposition filter on ip:15095 over real
// TCP: each GET becomes a request through the scrape listener's filter.
func serveExposition(t *testing.T, s *sidecar, ip string) {
	t.Helper()
	l, err := net.Listen("tcp", net.JoinHostPort(ip, strconv.Itoa(podpatch.MetricsPort)))
	if err != nil {
		t.Fatalf("listen on the pod address: %v", err)
	}
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		res, err := s.h.Run(&envoyhost.Request{Config: s.ex, NoResponse: true,
			Headers: envoyhost.H(":method", r.Method, ":path", r.URL.RequestURI(), ":authority", r.Host, ":scheme", "http")})
		if err != nil || res.LocalReply == nil {
			http.Error(w, fmt.Sprintf("host: %v %+v", err, res), http.StatusBadGateway)
			return
		}
		for _, kv := range res.Downstream.Headers {
			if !strings.HasPrefix(kv[0], ":") {
				w.Header().Add(kv[0], kv[1])
			}
		}
		w.WriteHeader(res.LocalReply.Code)
		_, _ = w.Write(res.LocalReply.Body)
	})
	srv := &http.Server{Handler: h}
	go func() { _ = srv.Serve(l) }()
	t.Cleanup(func() { srv.Close() })
}

func waitTargets(t *testing.T, srv *lmprom.Server, n int) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		all, err := srv.Targets(t.Context(), "")
		if err == nil && len(all) == n {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("want %d targets after reload, have %d (%v)", n, len(all), err)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

type modeConfigs struct{ inbound, outbound, exposition []byte }

// renderedConfigs renders a namespace policy in mode and returns the
// plugin_config values of its filters as the controller would install them.
func renderedConfigs(t *testing.T, mode v1alpha1.Mode) modeConfigs {
	t.Helper()
	p := &v1alpha1.TelemetryPolicy{ObjectMeta: metav1.ObjectMeta{Name: "bookinfo", Namespace: "bookinfo"}, Spec: v1alpha1.TelemetryPolicySpec{Mode: mode}}
	out, err := render.Render(render.Input{Policy: p, RootNamespace: "istio-system", Matrix: release.Embedded()})
	if err != nil {
		t.Fatal(err)
	}
	var c modeConfigs
	for _, o := range out.Objects {
		ef, ok := o.(*networkingv1alpha3.EnvoyFilter)
		if !ok {
			continue
		}
		for _, cp := range ef.Spec.ConfigPatches {
			v := cp.Patch.Value.AsMap()
			if strings.HasSuffix(ef.Name, "-exposition") {
				fc := v["filter_chains"].([]any)[0].(map[string]any)["filters"].([]any)[0].(map[string]any)
				v = fc["typed_config"].(map[string]any)["http_filters"].([]any)[0].(map[string]any)
				c.exposition = pluginValue(t, v)
				continue
			}
			if v["name"] != pluginconfig.PluginHTTP {
				continue
			}
			switch cp.Match.Context.String() {
			case "SIDECAR_INBOUND":
				c.inbound = pluginValue(t, v)
			case "SIDECAR_OUTBOUND":
				c.outbound = pluginValue(t, v)
			}
		}
	}
	if c.exposition == nil || (mode != v1alpha1.ModeIstio && (c.inbound == nil || c.outbound == nil)) {
		t.Fatalf("%s: rendered configs incomplete: %+v", mode, c)
	}
	return c
}

func pluginValue(t *testing.T, filter map[string]any) []byte {
	t.Helper()
	v := filter["typed_config"].(map[string]any)["plugin_config"].(map[string]any)["value"]
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// loadConfig gives the host the rendered plugin_config, with the pod-labels
// file the fixture wrote (the only field the test host needs changed).
func loadConfig(t *testing.T, s *sidecar, value []byte) uint64 {
	t.Helper()
	var fields map[string]any
	if err := json.Unmarshal(value, &fields); err != nil {
		t.Fatal(err)
	}
	fields["local_identity"] = map[string]any{"pod_labels_path": s.labels}
	a, err := envoyhost.TypedStruct("type.googleapis.com/leanmesh.Config", fields)
	if err != nil {
		t.Fatal(err)
	}
	id, err := s.h.Config(pluginconfig.PluginHTTP, a)
	if err != nil {
		t.Fatal(err)
	}
	return id
}
