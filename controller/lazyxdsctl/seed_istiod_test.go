package lazyxdsctl

import (
	"context"
	"crypto/tls"
	"encoding/pem"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/watch"
	"sigs.k8s.io/controller-runtime/pkg/client"

	networkingv1 "istio.io/client-go/pkg/apis/networking/v1"

	"github.com/leanmesh/leanmesh/controller/api/v1alpha1"
	"github.com/leanmesh/leanmesh/controller/lazyxds"
	"github.com/leanmesh/leanmesh/e2e/cluster"
	"github.com/leanmesh/leanmesh/e2e/envoyhost"
	lmprom "github.com/leanmesh/leanmesh/e2e/prometheus"
)

// telemetryHost is productpage's proxy before lazy xDS: a C test host with
// leanmesh.so (outbound filter and exposition), its exposition served on a
// real TCP port for Prometheus.
type telemetryHost struct {
	h        *envoyhost.Host
	out, ex  uint64
	addr     string
	podIP    string
	workload string
}

func startTelemetryHost(t *testing.T, w cluster.Workload) *telemetryHost {
	t.Helper()
	dir := t.TempDir()
	hostBin, so := filepath.Join(dir, "envoyhost"), filepath.Join(dir, "leanmesh.so")
	if err := envoyhost.BuildHost(hostBin); err != nil {
		t.Fatal(err)
	}
	if err := envoyhost.BuildPlugin("./filters/cmd/leanmesh", so); err != nil {
		t.Fatal(err)
	}
	labels := filepath.Join(dir, "labels")
	if err := os.WriteFile(labels, []byte(fmt.Sprintf("app=%q\n", w.Name)), 0o644); err != nil {
		t.Fatal(err)
	}
	pod := w.Name + "-0"
	// A bare pod (no controller): Istio's workload name is the pod name, the
	// same name the loop gives the workload.
	env := []string{"POD_NAME=" + pod, "POD_NAMESPACE=" + w.Namespace, "INSTANCE_IP=" + w.IP, "SERVICE_ACCOUNT=default",
		"ISTIO_META_WORKLOAD_NAME=" + pod, "ISTIO_META_CLUSTER_ID=" + cluster.ClusterID, "ISTIO_META_MESH_ID=cluster.local",
		"ISTIO_META_ISTIO_VERSION=" + cluster.DefaultIstioProxyVersion}
	h, err := envoyhost.Start(envoyhost.Options{HostBin: hostBin, SO: so, Env: env, LogLevel: 3})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { h.Close() })
	th := &telemetryHost{h: h, podIP: w.IP, workload: pod}
	cfg := func(fields map[string]any) uint64 {
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
	th.out = cfg(map[string]any{"direction": "outbound", "local_identity": map[string]any{"pod_labels_path": labels}})
	th.ex = cfg(map[string]any{"exposition": map[string]any{"enabled": true}})

	// :15095/stats/prometheus as the exposition listener answers it.
	var mu sync.Mutex
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(rw http.ResponseWriter, r *http.Request) {
		mu.Lock()
		res, err := h.Run(&envoyhost.Request{Config: th.ex, NoResponse: true,
			Headers: envoyhost.H(":method", "GET", ":path", "/stats/prometheus", ":authority", r.Host, ":scheme", "http")})
		mu.Unlock()
		if err != nil || res.LocalReply == nil {
			http.Error(rw, fmt.Sprint(err), http.StatusBadGateway)
			return
		}
		if ct, ok := res.Downstream.Headers.Get("content-type"); ok {
			rw.Header().Set("Content-Type", ct)
		}
		rw.WriteHeader(int(res.LocalReply.Code))
		_, _ = rw.Write(res.LocalReply.Body)
	})}
	go func() { _ = srv.Serve(lis) }()
	t.Cleanup(func() { srv.Close() })
	th.addr = lis.Addr().String()
	return th
}

// call sends n outbound requests to svc as productpage's sidecar would.
func (th *telemetryHost) call(t *testing.T, svc cluster.Workload, n int) {
	t.Helper()
	for i := 0; i < n; i++ {
		res, err := th.h.Run(&envoyhost.Request{Config: th.out,
			Headers: envoyhost.H(":method", "GET", ":path", "/", ":authority", svc.Name+":9080", ":scheme", "http"),
			Info:    envoyhost.StreamInfo{Protocol: "HTTP/1.1", UpstreamCluster: svc.OutboundCluster(9080), RequestDuration: 2 * time.Millisecond},
			Cluster: envoyhost.IstioClusterMetadata(svc.Host(), svc.Name, svc.Namespace), ResponseHeaders: envoyhost.H(":status", "200")})
		if err != nil || res.Error != "" {
			t.Fatalf("request to %s: %v %s", svc.Name, err, res.Error)
		}
	}
}

// authProxy puts Prometheus behind TLS and a bearer token, as a secured
// Prometheus (or an authenticating proxy in front of one) is.
func authProxy(t *testing.T, target, token string) (proxyURL string, caPEM []byte) {
	u, _ := url.Parse(target)
	rp := httputil.NewSingleHostReverseProxy(u)
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Authorization") != "Bearer "+token {
			http.Error(w, "unauthorized", http.StatusUnauthorized)
			return
		}
		rp.ServeHTTP(w, r)
	}))
	srv.TLS = &tls.Config{MinVersion: tls.VersionTLS12}
	srv.StartTLS()
	t.Cleanup(srv.Close)
	return srv.URL, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: srv.Certificate().Raw})
}

// TestSeedFromTelemetryFirstCallGoesDirect: productpage's proxy (a C host
// running leanmesh.so) calls reviews and details; a real Prometheus scrapes
// its exposition. Then a LazyXDS with seedFromTelemetry (TLS + bearer token
// from Secrets) is created: productpage's first Sidecar already holds reviews
// and details, and istiod's CDS for productpage never loses their clusters —
// no access log is involved. A query failure later degrades to the
// access-log path with a condition.
func TestSeedFromTelemetryFirstCallGoesDirect(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 8*time.Minute)
	defer cancel()
	byName := map[string]cluster.Workload{}
	for _, w := range shopWorkloads {
		byName[w.Name] = w
	}

	// 1. Known traffic, scraped by a real Prometheus.
	pp := startTelemetryHost(t, byName["productpage"])
	prom := lmprom.StartT(t, lmprom.Options{ScrapeConfigs: []string{lmprom.StaticJob("leanmesh", pp.addr)}})
	pp.call(t, byName["reviews"], 10)
	pp.call(t, byName["details"], 5)
	if down := lmprom.Down(prom.WaitScrapedT(t, "leanmesh", time.Now())); len(down) > 0 {
		t.Fatalf("scrape failed: %v", down)
	}
	v := prom.QueryVectorT(t, `sum by (source_workload, destination_service) (istio_requests_total{reporter="source"})`)
	t.Logf("Prometheus holds: %v", v)
	if len(v) != 2 {
		t.Fatalf("want 2 edges in Prometheus, got %v", v)
	}
	promURL, caPEM := authProxy(t, prom.URL, "s3cret")

	// 2. The mesh, istiod, productpage's xDS with every service.
	env, istiod := cluster.StartIstiodT(t, ctx, withCRDs, rootNS, shop)
	cfg := env.ServiceAccountConfigT(t, ctx, generatedRBAC, controllerNS, controllerSA)
	c := env.Client
	objs := map[string]*cluster.WorkloadObjects{}
	for _, w := range shopWorkloads {
		o, err := env.CreateWorkload(ctx, w)
		if err != nil {
			t.Fatal(err)
		}
		objs[w.Name] = o
	}
	ads := istiod.ConnectT(t, ctx, cluster.SidecarFor(objs["productpage"]))
	reviews, details, ratings := objs["reviews"].Workload.OutboundCluster(9080), objs["details"].Workload.OutboundCluster(9080), objs["ratings"].Workload.OutboundCluster(9080)
	if _, err := ads.WaitFor(ctx, func(s cluster.Snapshot) bool { return s.Has(cluster.TypeCluster, ratings) }); err != nil {
		t.Fatal(err)
	}
	for name, data := range map[string]map[string][]byte{"prom-token": {"token": []byte("s3cret")}, "prom-ca": {"ca.crt": caPEM}} {
		if err := c.Create(ctx, &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: shop, Name: name}, Data: data}); err != nil {
			t.Fatal(err)
		}
	}
	ctl := startController(t, cfg, env)

	// Every Sidecar write of productpage, from the first.
	var scs networkingv1.SidecarList
	if err := c.List(ctx, &scs, client.InNamespace(shop)); err != nil {
		t.Fatal(err)
	}
	wc, err := client.NewWithWatch(env.Config, client.Options{Scheme: env.Scheme})
	if err != nil {
		t.Fatal(err)
	}
	w, err := wc.Watch(ctx, &networkingv1.SidecarList{}, client.InNamespace(shop), &client.ListOptions{Raw: &metav1.ListOptions{ResourceVersion: scs.ResourceVersion}})
	if err != nil {
		t.Fatal(err)
	}
	defer w.Stop()
	firstSidecar := make(chan []string, 1)
	go func() {
		for ev := range w.ResultChan() {
			sc, ok := ev.Object.(*networkingv1.Sidecar)
			if ok && ev.Type == watch.Added && sc.Name == "leanmesh-lazy-productpage-0" {
				firstSidecar <- sc.Spec.Egress[0].Hosts
				return
			}
		}
	}()

	// The whole window from enabling to the minimal CDS: reviews and details never leave.
	var gaps []string
	var gapMu sync.Mutex
	stopWatch := make(chan struct{})
	watchDone := make(chan struct{})
	go func() {
		defer close(watchDone)
		wctx, wcancel := context.WithCancel(ctx)
		go func() { <-stopWatch; wcancel() }()
		_, _ = ads.WaitFor(wctx, func(s cluster.Snapshot) bool {
			for _, cl := range []string{reviews, details} {
				if !s.Has(cluster.TypeCluster, cl) {
					gapMu.Lock()
					gaps = append(gaps, fmt.Sprintf("push %d without %s", s.Pushes(cluster.TypeCluster), cl))
					gapMu.Unlock()
				}
			}
			return false
		})
	}()

	policy := &v1alpha1.LazyXDS{ObjectMeta: metav1.ObjectMeta{Namespace: shop, Name: "lazy"},
		Spec: v1alpha1.LazyXDSSpec{SeedFromTelemetry: &v1alpha1.TelemetrySeed{
			Prometheus: v1alpha1.PrometheusEndpoint{URL: promURL,
				BearerTokenSecret: &v1alpha1.SecretKeySelector{Name: "prom-token", Key: "token"},
				TLS:               &v1alpha1.PrometheusTLS{CA: &v1alpha1.SecretKeySelector{Name: "prom-ca", Key: "ca.crt"}, ServerName: "example.com"}},
			LookBack: &metav1.Duration{Duration: time.Hour},
		}}}
	enabled := time.Now()
	if err := c.Create(ctx, policy); err != nil {
		t.Fatal(err)
	}
	select {
	case hosts := <-firstSidecar:
		t.Logf("productpage's first Sidecar, %s after enabling: %v", time.Since(enabled).Round(time.Millisecond), hosts)
		for _, h := range []string{host("reviews"), host("details")} {
			if !slices.Contains(hosts, h) {
				t.Errorf("first Sidecar lacks %s", h)
			}
		}
		if slices.Contains(hosts, host("ratings")) {
			t.Errorf("first Sidecar holds ratings, never called")
		}
	case <-ctx.Done():
		t.Fatal("no Sidecar for productpage")
	}
	minimal, err := ads.WaitFor(ctx, func(s cluster.Snapshot) bool { return !s.Has(cluster.TypeCluster, ratings) })
	if err != nil {
		t.Fatal(err)
	}
	time.Sleep(2 * time.Second) // later pushes, if any, are watched too
	close(stopWatch)
	<-watchDone
	if len(gaps) > 0 {
		t.Errorf("productpage's CDS lost a called service after enabling: %v", gaps)
	}
	t.Logf("CDS minimal %s after enabling, still with reviews and details: %v", time.Since(enabled).Round(time.Millisecond), outbound(minimal))
	// The first call goes direct: reviews has its own virtual host on 9080, so the redirect's catch-all is not reached.
	if r, ok := ads.Snapshot().Types[cluster.TypeRoute].Resources["9080"]; !ok || !r.Contains("reviews.shop.svc.cluster.local") {
		t.Errorf("no reviews virtual host in RDS 9080")
	}
	if st := ctl.loop.ALS().Stats(); st.Received != 0 {
		t.Errorf("access logs received: %+v (the seed alone must suffice)", st)
	}
	poll(t, 20*time.Second, "status: Seeded=True, 2 seeded dependencies", func() error {
		var p v1alpha1.LazyXDS
		if err := c.Get(ctx, client.ObjectKeyFromObject(policy), &p); err != nil {
			return err
		}
		cond := meta.FindStatusCondition(p.Status.Conditions, v1alpha1.ConditionSeeded)
		if cond == nil || cond.Status != metav1.ConditionTrue || p.Status.SeededDependencies != 2 || p.Status.Seed == nil || p.Status.Seed.Edges != 2 {
			return fmt.Errorf("condition %+v, seeded %d, seed %+v", cond, p.Status.SeededDependencies, p.Status.Seed)
		}
		return nil
	})
	deps, err := persistedDeps(ctx, c)
	if err != nil {
		t.Fatal(err)
	}
	if got := deps[shop+"/productpage-0"]; !slices.Equal(got, []string{"details.shop.svc.cluster.local", "reviews.shop.svc.cluster.local"}) {
		t.Errorf("snapshot: %v", got)
	}
	mfs, err := ctl.reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		for _, m := range mf.GetMetric() {
			if mf.GetName() == "leanmesh_lazyxds_dependencies" && m.GetLabel()[0].GetValue() == "telemetry" && m.GetGauge().GetValue() != 2 {
				t.Errorf("leanmesh_lazyxds_dependencies{origin=telemetry} = %v", m.GetGauge().GetValue())
			}
		}
	}

	// 3. A failing query degrades to access-log learning, with a condition.
	var p v1alpha1.LazyXDS
	if err := c.Get(ctx, client.ObjectKeyFromObject(policy), &p); err != nil {
		t.Fatal(err)
	}
	p.Spec.SeedFromTelemetry.Prometheus.BearerTokenSecret.Key = "missing"
	if err := c.Update(ctx, &p); err != nil {
		t.Fatal(err)
	}
	poll(t, 30*time.Second, "Seeded=False", func() error {
		if err := c.Get(ctx, client.ObjectKeyFromObject(policy), &p); err != nil {
			return err
		}
		cond := meta.FindStatusCondition(p.Status.Conditions, v1alpha1.ConditionSeeded)
		ready := meta.FindStatusCondition(p.Status.Conditions, v1alpha1.ConditionReady)
		if cond == nil || cond.Status != metav1.ConditionFalse || cond.Reason != v1alpha1.ReasonSeedQueryFailed || !strings.Contains(cond.Message, "missing") ||
			ready == nil || ready.Status != metav1.ConditionTrue {
			return fmt.Errorf("seeded %+v ready %+v", cond, ready)
		}
		return nil
	})
	als := dialALS(t, ctl.alsAddr)
	als.send(t, objs["productpage"].Workload.IP, ratings, "ratings:9080")
	if _, err := ads.WaitFor(ctx, func(s cluster.Snapshot) bool { return s.Has(cluster.TypeCluster, ratings) }); err != nil {
		t.Fatalf("access-log learning while seeding fails: %v", err)
	}
	for _, cl := range []string{reviews, details} {
		if !ads.Snapshot().Has(cluster.TypeCluster, cl) {
			t.Errorf("seeded %s lost after the query failure", cl)
		}
	}
	_ = lazyxds.OriginTelemetry
}

func outbound(s cluster.Snapshot) []string {
	var out []string
	for _, n := range s.Names(cluster.TypeCluster) {
		if strings.HasPrefix(n, "outbound|") {
			out = append(out, n)
		}
	}
	return out
}
