package demo

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"github.com/leanmesh/leanmesh/filters/pluginconfig"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"google.golang.org/protobuf/types/known/anypb"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/leanmesh/leanmesh/controller/api/v1alpha1"
	"github.com/leanmesh/leanmesh/controller/render"
	"github.com/leanmesh/leanmesh/e2e/cluster"
	"github.com/leanmesh/leanmesh/e2e/envoyhost"
	"github.com/leanmesh/leanmesh/e2e/layout"
)

// The sample mesh: a bookinfo-like topology.
var bookinfo = []cluster.Workload{
	{Namespace: "bookinfo", Name: "productpage", PodName: "productpage-v1-6b746f74dc-9stvs", IP: "10.44.0.10", ServiceAccount: "bookinfo-productpage",
		Labels: map[string]string{"app": "productpage", "version": "v1"}, Ports: []cluster.Port{{Name: "http", Port: 9080}}},
	{Namespace: "bookinfo", Name: "details", PodName: "details-v1-79f774bdb9-kq2wd", IP: "10.44.0.11", ServiceAccount: "bookinfo-details",
		Labels: map[string]string{"app": "details", "version": "v1"}, Ports: []cluster.Port{{Name: "http", Port: 9080}}},
	{Namespace: "bookinfo", Name: "reviews", PodName: "reviews-v2-7bf8c9648f-xz4fq", IP: "10.44.0.12", ServiceAccount: "bookinfo-reviews",
		Labels: map[string]string{"app": "reviews", "version": "v2"}, Ports: []cluster.Port{{Name: "http", Port: 9080}}},
	{Namespace: "bookinfo", Name: "ratings", PodName: "ratings-v1-b6994bb9-gl5kx", IP: "10.44.0.13", ServiceAccount: "bookinfo-ratings",
		Labels: map[string]string{"app": "ratings", "version": "v1"}, Ports: []cluster.Port{{Name: "http", Port: 9080}}},
}

type proxy struct {
	w      cluster.Workload
	ads    *cluster.Sidecar
	host   *envoyhost.Host
	cfgIn  uint64
	cfgOut uint64
	cfgEx  uint64
}

func (r *run) sampleMesh() error {
	r.section("Create a bookinfo-like mesh: Services, EndpointSlices and Pods (labelled as carrying leanmesh.so)")
	r.proxies = map[string]*proxy{}
	for _, w := range bookinfo {
		extra := map[string]string{
			v1alpha1.LabelEnvoyVersion: r.rel.Envoy, "security.istio.io/tlsMode": "istio",
			"service.istio.io/canonical-name": w.Labels["app"], "service.istio.io/canonical-revision": w.Labels["version"],
		}
		if w.Name == "ratings" {
			// ratings' proxy does not carry the library: leanmesh must leave it alone.
			delete(extra, v1alpha1.LabelEnvoyVersion)
		}
		w.Labels = withLabels(w.Labels, extra)
		objs, err := r.env.CreateWorkload(r.ctx, w)
		if err != nil {
			return err
		}
		p := &proxy{w: objs.Workload}
		r.proxies[w.Name] = p
		r.say("  %-12s pod %s ip %s", w.Name, w.PodName, w.IP)
	}
	for _, name := range []string{"productpage", "reviews", "ratings"} {
		p := r.proxies[name]
		sc, err := cluster.ConnectSidecar(r.ctx, r.istiod.XDSAddr, cluster.SidecarFor(&cluster.WorkloadObjects{Workload: p.w}))
		if err != nil {
			return err
		}
		p.ads = sc
		r.cleanup = append(r.cleanup, sc.Close)
	}
	return r.waitFor("productpage sees every service", time.Minute, func() error {
		s := r.proxies["productpage"].ads.Snapshot()
		for _, w := range bookinfo {
			if !s.Has(cluster.TypeCluster, w.OutboundCluster(9080)) {
				return fmt.Errorf("no %s yet", w.OutboundCluster(9080))
			}
		}
		return nil
	})
}

func withLabels(a, b map[string]string) map[string]string {
	out := map[string]string{}
	for k, v := range a {
		out[k] = v
	}
	for k, v := range b {
		out[k] = v
	}
	return out
}

func (r *run) setMode(mode v1alpha1.Mode) error {
	p := &v1alpha1.TelemetryPolicy{ObjectMeta: metav1.ObjectMeta{Namespace: "bookinfo", Name: "bookinfo"}}
	err := r.env.Client.Get(r.ctx, client.ObjectKeyFromObject(p), p)
	if err != nil {
		p.Spec.Mode = mode
		return r.env.Client.Create(r.ctx, p)
	}
	p.Spec.Mode = mode
	return r.env.Client.Update(r.ctx, p)
}

// chains returns productpage's outbound HTTP filters on port 9080 and
// reviews' inbound HTTP filters for port 9080, as istiod serves them.
func (r *run) chains() (out, in []string) {
	for _, ch := range r.proxies["productpage"].ads.Snapshot().HTTPFilterChains("0.0.0.0_9080") {
		out = ch.HTTPFilters
	}
	for _, ch := range r.proxies["reviews"].ads.Snapshot().HTTPFilterChains("virtualInbound") {
		if ch.ChainName == "0.0.0.0_9080" {
			in = ch.HTTPFilters
		}
	}
	return out, in
}

func (r *run) install() error {
	r.section("Install leanmesh for the namespace: TelemetryPolicy mode LeanMesh")
	if err := r.setMode(v1alpha1.ModeLeanMesh); err != nil {
		return err
	}
	err := r.waitFor("istiod serves leanmesh first and no istio.stats", time.Minute, func() error {
		out, in := r.chains()
		for _, c := range [][]string{out, in} {
			if len(c) == 0 || c[0] != pluginconfig.PluginHTTP || contains(c, "istio.stats") || contains(c, "istio.metadata_exchange") {
				return fmt.Errorf("outbound %v inbound %v", out, in)
			}
		}
		if !r.proxies["reviews"].ads.Snapshot().Has(cluster.TypeListener, render.ExpositionListener) {
			return fmt.Errorf("no %s listener", render.ExpositionListener)
		}
		return nil
	})
	if err != nil {
		return err
	}
	out, in := r.chains()
	r.say("  productpage outbound :9080  %s", joinShort(out))
	r.say("  reviews inbound :9080       %s", joinShort(in))
	r.say("  reviews listeners include %s (the scrape endpoint on :15095)", render.ExpositionListener)

	// The pod without the library is reported, not patched.
	var ratingsIn []string
	for _, ch := range r.proxies["ratings"].ads.Snapshot().HTTPFilterChains("virtualInbound") {
		if ch.ChainName == "0.0.0.0_9080" {
			ratingsIn = ch.HTTPFilters
		}
	}
	if contains(ratingsIn, pluginconfig.PluginHTTP) || !contains(ratingsIn, "istio.stats") {
		return fmt.Errorf("ratings (no library) was patched: %v", ratingsIn)
	}
	p := &v1alpha1.TelemetryPolicy{}
	if err := r.env.Client.Get(r.ctx, client.ObjectKey{Namespace: "bookinfo", Name: "bookinfo"}, p); err != nil {
		return err
	}
	r.say("  ratings' proxy lacks the library: untouched (%s), reported in status.workloadsMissingLibrary: %v",
		joinShort(ratingsIn), p.Status.WorkloadsMissingLibrary)
	return nil
}

// startHost starts a test host for p's sidecar with its pod identity and
// the configs istiod served to it.
func (r *run) startHost(p *proxy) error {
	dir := filepath.Join(r.env.Dir, "pod-"+p.w.Name)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	var labels strings.Builder
	keys := make([]string, 0, len(p.w.Labels))
	for k := range p.w.Labels {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		fmt.Fprintf(&labels, "%s=%q\n", k, p.w.Labels[k])
	}
	if err := os.WriteFile(filepath.Join(dir, "labels"), []byte(labels.String()), 0o644); err != nil {
		return err
	}
	env := []string{"POD_NAME=" + p.w.PodName, "POD_NAMESPACE=" + p.w.Namespace, "INSTANCE_IP=" + p.w.IP,
		"SERVICE_ACCOUNT=" + p.w.ServiceAccount, "ISTIO_META_WORKLOAD_NAME=" + p.w.Name, "ISTIO_META_CLUSTER_ID=" + cluster.ClusterID,
		"ISTIO_META_ISTIO_VERSION=" + cluster.DefaultIstioProxyVersion, "ISTIO_META_MESH_ID=cluster.local"}
	hostLog, err := os.Create(filepath.Join(dir, "envoyhost.log"))
	if err != nil {
		return err
	}
	r.cleanup = append(r.cleanup, hostLog.Close)
	h, err := envoyhost.Start(envoyhost.Options{HostBin: r.bin.host, SO: r.bin.so, Env: env, LogLevel: 3, Stderr: hostLog})
	if err != nil {
		return err
	}
	p.host = h
	r.cleanup = append(r.cleanup, h.Close)
	s := p.ads.Snapshot()
	// The served config names the labels file at its in-pod path; point it
	// at this pod's copy (the only field the demo changes).
	load := func(a *anypb.Any) (uint64, error) {
		return h.Config(pluginconfig.PluginHTTP, withLabelsPath(a, filepath.Join(dir, "labels")))
	}
	out, err := layout.PluginConfig(s.HTTPFilterChains("0.0.0.0_9080"), "")
	if err != nil {
		return err
	}
	in, err := layout.PluginConfig(s.HTTPFilterChains("virtualInbound"), "0.0.0.0_9080")
	if err != nil {
		return err
	}
	ex, err := layout.PluginConfig(s.HTTPFilterChains(render.ExpositionListener), "")
	if err != nil {
		return err
	}
	if p.cfgOut, err = load(out); err != nil {
		return err
	}
	if p.cfgIn, err = load(in); err != nil {
		return err
	}
	p.cfgEx, err = h.Config(pluginconfig.PluginHTTP, ex)
	return err
}

func (r *run) scrape(p *proxy) (map[string]*dto.MetricFamily, []byte, error) {
	res, err := p.host.Run(&envoyhost.Request{Config: p.cfgEx, NoResponse: true,
		Headers: envoyhost.H(":method", "GET", ":path", "/stats/prometheus", ":authority", p.w.IP+":15095", ":scheme", "http")})
	if err != nil {
		return nil, nil, err
	}
	if res.LocalReply == nil || res.LocalReply.Code != 200 {
		return nil, nil, fmt.Errorf("scrape of %s: %+v %s", p.w.Name, res.LocalReply, res.Error)
	}
	parser := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := parser.TextToMetricFamilies(bytes.NewReader(res.LocalReply.Body))
	return fams, res.LocalReply.Body, err
}

func (r *run) telemetry() error {
	r.section("Drive traffic productpage → reviews through two test hosts loading leanmesh.so with istiod's config")
	pp, rv := r.proxies["productpage"], r.proxies["reviews"]
	for _, p := range []*proxy{pp, rv} {
		if err := r.startHost(p); err != nil {
			return err
		}
	}
	outCluster := rv.w.OutboundCluster(9080)
	ppSnap, rvSnap := pp.ads.Snapshot(), rv.ads.Snapshot()
	outMeta := ppSnap.Cluster(outCluster).GetMetadata()
	inMeta := rvSnap.Cluster("inbound|9080||").GetMetadata()
	spiffe := func(w cluster.Workload) string {
		return "spiffe://cluster.local/ns/" + w.Namespace + "/sa/" + w.ServiceAccount
	}
	const n = demoRequests
	for i := 0; i < n; i++ {
		part, held, err := pp.host.RunRequest(&envoyhost.Request{Config: pp.cfgOut,
			Headers: envoyhost.H(":method", "GET", ":path", fmt.Sprintf("/reviews/%d", i), ":authority", "reviews:9080", ":scheme", "http"),
			Info:    envoyhost.StreamInfo{Protocol: "HTTP/1.1", UpstreamCluster: outCluster, RequestDuration: time.Duration(5+i) * time.Millisecond},
			Cluster: outMeta,
			Props: []envoyhost.Prop{{Path: "upstream.uri_san_peer_certificate", Value: []byte(spiffe(rv.w))},
				{Path: "upstream.uri_san_local_certificate", Value: []byte(spiffe(pp.w))}}})
		if err != nil {
			return err
		}
		sres, err := rv.host.Run(&envoyhost.Request{Config: rv.cfgIn, Headers: part.Upstream.Headers,
			Info: envoyhost.StreamInfo{Protocol: "HTTP/1.1", UpstreamCluster: "inbound|9080||", RequestDuration: time.Duration(demoDuration(i)) * time.Millisecond,
				TLS: &envoyhost.TLS{PeerCertificatePresented: true, PeerCertificateValidated: true, URISANPeer: []string{spiffe(pp.w)}, URISANLocal: []string{spiffe(rv.w)}}},
			Cluster: inMeta, ResponseHeaders: envoyhost.H(":status", "200", "content-type", "application/json")})
		if err != nil || sres.Error != "" {
			return fmt.Errorf("server side: %v %s", err, sres.Error)
		}
		if _, ok := sres.Upstream.Headers.Get("x-envoy-peer-metadata"); ok {
			return fmt.Errorf("the reviews app saw metadata-exchange headers")
		}
		cres, err := held.FinishWith(sres)
		if err != nil || cres.Error != "" {
			return fmt.Errorf("client side: %v %s", err, cres.Error)
		}
	}
	r.say("  %d requests relayed; the apps never saw x-envoy-peer-metadata", n)
	for _, side := range []struct {
		p        *proxy
		reporter string
		peer     string
	}{{pp, "source", "destination_workload"}, {rv, "destination", "source_workload"}} {
		fams, _, err := r.scrape(side.p)
		if err != nil {
			return err
		}
		var found *dto.Metric
		for _, m := range fams["istio_requests_total"].GetMetric() {
			found = m
		}
		if found == nil || len(fams["istio_requests_total"].GetMetric()) != 1 || found.GetCounter().GetValue() != n {
			return fmt.Errorf("%s: istio_requests_total = %v", side.p.w.Name, fams["istio_requests_total"])
		}
		ls := map[string]string{}
		var parts []string
		for _, lp := range found.GetLabel() {
			ls[lp.GetName()] = lp.GetValue()
			parts = append(parts, fmt.Sprintf("%s=%q", lp.GetName(), lp.GetValue()))
		}
		want := map[string]string{"reporter": side.reporter, "source_workload": "productpage", "destination_workload": "reviews",
			"destination_service": "reviews.bookinfo.svc.cluster.local", "destination_version": "v2", "source_app": "productpage"}
		for k, v := range want {
			if ls[k] != v {
				return fmt.Errorf("%s: %s = %q, want %q", side.p.w.Name, k, ls[k], v)
			}
		}
		r.say("  %s scrape (:15095/stats/prometheus):\n    istio_requests_total{%s} %v", side.p.w.Name, strings.Join(parts, ","), found.GetCounter().GetValue())
		h := fams["istio_request_duration_milliseconds"].GetMetric()[0].GetHistogram()
		r.say("    istio_request_duration_milliseconds count=%d sum=%v; families: %s", h.GetSampleCount(), h.GetSampleSum(), familyNames(fams))
	}
	return nil
}

func familyNames(fams map[string]*dto.MetricFamily) string {
	var names []string
	for n := range fams {
		names = append(names, n)
	}
	sort.Strings(names)
	return strings.Join(names, " ")
}

func (r *run) abSwitch() error {
	r.section("A/B: switch the namespace between Istio's telemetry and leanmesh's, as istiod serves it")
	for _, step := range []struct {
		mode  v1alpha1.Mode
		check func(out, in []string) error
	}{
		{v1alpha1.ModeIstio, func(out, in []string) error {
			if contains(out, pluginconfig.PluginHTTP) || contains(in, pluginconfig.PluginHTTP) || !contains(out, "istio.stats") || !contains(in, "istio.metadata_exchange") {
				return fmt.Errorf("outbound %v inbound %v", out, in)
			}
			return nil
		}},
		{v1alpha1.ModeShadow, func(out, in []string) error {
			if !contains(out, pluginconfig.PluginHTTP) || !contains(out, "istio.stats") || len(in) == 0 || in[0] != pluginconfig.PluginHTTP || !contains(in, "istio.stats") {
				return fmt.Errorf("outbound %v inbound %v", out, in)
			}
			return nil
		}},
		{v1alpha1.ModeLeanMesh, func(out, in []string) error {
			if len(out) == 0 || out[0] != pluginconfig.PluginHTTP || contains(out, "istio.stats") || contains(in, "istio.stats") {
				return fmt.Errorf("outbound %v inbound %v", out, in)
			}
			return nil
		}},
	} {
		start := time.Now()
		if err := r.setMode(step.mode); err != nil {
			return err
		}
		if err := r.waitFor(fmt.Sprintf("mode %s in istiod's LDS", step.mode), time.Minute, func() error { return step.check(r.chains()) }); err != nil {
			return err
		}
		out, in := r.chains()
		r.say("  mode %-8s (in LDS after %v)\n    productpage outbound: %s\n    reviews inbound:      %s", step.mode, time.Since(start).Round(10*time.Millisecond), joinShort(out), joinShort(in))
		var sum string
		if err := r.waitFor(fmt.Sprintf("mode %s: every HTTP and TCP chain as the mode promises", step.mode), time.Minute, func() (err error) {
			sum, err = r.layout(step.mode)
			return err
		}); err != nil {
			return err
		}
		r.say("    every chain checked (TCP chains keep istio.stats in every mode): %s", sum)
	}
	return nil
}

// layout checks every HTTP and TCP filter chain of both test sidecars with the
// checker the real-istiod layout test uses (e2e/layout): leanmesh owns HTTP in
// LeanMesh mode, Istio's istio.stats stays on every TCP chain in every mode.
func (r *run) layout(mode v1alpha1.Mode) (string, error) {
	var sums []string
	for _, name := range []string{"productpage", "reviews"} {
		rep, err := layout.Check(r.proxies[name].ads.Snapshot(), false, mode, layout.Want{Contexts: []layout.Context{layout.Inbound, layout.Outbound}})
		if err != nil {
			return "", fmt.Errorf("%s: %w", name, err)
		}
		sums = append(sums, name+" "+rep.Summary())
	}
	return strings.Join(sums, "; "), nil
}

func withLabelsPath(a *anypb.Any, path string) *anypb.Any {
	ts, err := envoyhost.DecodeTypedStruct(a)
	if err != nil {
		return a
	}
	ts["local_identity"] = map[string]interface{}{"pod_labels_path": path}
	out, err := envoyhost.TypedStruct("type.googleapis.com/leanmesh", ts)
	if err != nil {
		return a
	}
	return out
}
