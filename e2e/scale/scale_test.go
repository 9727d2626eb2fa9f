package scale

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"os"
	"strconv"
	"sync"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	accesslogdatav3 "github.com/envoyproxy/go-control-plane/envoy/data/accesslog/v3"
	alsv3 "github.com/envoyproxy/go-control-plane/envoy/service/accesslog/v3"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/leanmesh/leanmesh/controller/lazyxds"
	"github.com/leanmesh/leanmesh/controller/lazyxds/als"
	"github.com/leanmesh/leanmesh/controller/lazyxds/seed"
	"github.com/leanmesh/leanmesh/e2e/cluster"
	"github.com/leanmesh/leanmesh/e2e/grpcserver"
	lmprom "github.com/leanmesh/leanmesh/e2e/prometheus"
)

// Envoy's per-cluster memory cost (envoy stats_integration_test, see
// shared/reference/LAZY-XDS.md): ~47 KB per cluster.
const envoyBytesPerCluster = 47 * 1024

type counts struct {
	resources map[string]int
	bytes     map[string]int
	pushes    map[string]int
}

func measure(s cluster.Snapshot) counts {
	c := counts{map[string]int{}, map[string]int{}, map[string]int{}}
	for _, typ := range []string{cluster.TypeCluster, cluster.TypeEndpoint, cluster.TypeListener, cluster.TypeRoute} {
		t := s.Types[typ]
		c.resources[typ], c.bytes[typ], c.pushes[typ] = len(t.Resources), t.Bytes, t.Pushes
	}
	return c
}

func short(typ string) string {
	switch typ {
	case cluster.TypeCluster:
		return "CDS"
	case cluster.TypeEndpoint:
		return "EDS"
	case cluster.TypeListener:
		return "LDS"
	}
	return "RDS"
}

// settle waits until the sidecar's resource counts and sizes stop changing
// (EDS and RDS follow CDS and LDS), at most a minute.
func settle(b *testing.B, sc *cluster.Sidecar) counts {
	var last counts
	stable := 0
	for deadline := time.Now().Add(time.Minute); time.Now().Before(deadline) && stable < 4; {
		c := measure(sc.Snapshot())
		if fmt.Sprint(c.resources, c.bytes) == fmt.Sprint(last.resources, last.bytes) {
			stable++
		} else {
			stable = 0
		}
		last = c
		time.Sleep(500 * time.Millisecond)
	}
	if stable < 4 {
		b.Logf("xDS still changing after a minute: %v", last.resources)
	}
	return last
}

// BenchmarkLazyXDSScale: run with -benchtime=1x (make bench-scale).
// LEANMESH_SCALE_SERVICES sets the mesh size (default 1000).
func BenchmarkLazyXDSScale(b *testing.B) {
	n := 1000
	if v, err := strconv.Atoi(os.Getenv("LEANMESH_SCALE_SERVICES")); err == nil && v > 0 {
		n = v
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Minute)
	defer cancel()
	const namespaces = 10
	names := []string{"client"}
	for i := range namespaces {
		names = append(names, fmt.Sprintf("ns%d", i))
	}
	env, istiod := cluster.StartIstiodT(b, ctx, cluster.Options{}, names...)
	start := time.Now()
	svcs := make([]cluster.Workload, n)
	var wg sync.WaitGroup
	errs := make(chan error, n)
	sem := make(chan struct{}, 16)
	for i := range svcs {
		svcs[i] = cluster.Workload{Namespace: fmt.Sprintf("ns%d", i%namespaces), Name: fmt.Sprintf("svc-%d", i),
			IP: fmt.Sprintf("10.%d.%d.%d", 100+i/65536, (i/256)%256, i%256+0), Labels: map[string]string{"app": fmt.Sprintf("svc-%d", i)},
			Ports: []cluster.Port{{Name: "http", Port: 8080}}}
		wg.Add(1)
		go func(w cluster.Workload) {
			defer wg.Done()
			sem <- struct{}{}
			defer func() { <-sem }()
			if _, err := env.CreateWorkload(ctx, w); err != nil {
				errs <- err
			}
		}(svcs[i])
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		b.Fatal(err)
	}
	b.Logf("created %d services in %v", n, time.Since(start).Round(time.Millisecond))

	mk := func(name, ip string) *cluster.WorkloadObjects {
		w, err := env.CreateWorkload(ctx, cluster.Workload{Namespace: "client", Name: name, IP: ip,
			Labels: map[string]string{"app": name}, Ports: []cluster.Port{{Name: "http", Port: 9090}}})
		if err != nil {
			b.Fatal(err)
		}
		return w
	}
	connect := func(w *cluster.WorkloadObjects) *cluster.Sidecar {
		sc, err := cluster.ConnectSidecar(ctx, istiod.XDSAddr, cluster.SidecarFor(w))
		if err != nil {
			b.Fatal(err)
		}
		b.Cleanup(func() { sc.Close() })
		return sc
	}

	// The lazy pipeline, in process: graph + ALS server on loopback.
	g := lazyxds.NewGraph(lazyxds.Options{})
	for _, s := range svcs {
		g.UpsertService(lazyxds.Service{Namespace: s.Namespace, Host: s.Host(), Ports: []lazyxds.Port{{Number: 8080, HTTP: true}}})
	}
	lazyW := mk("lazy", "10.250.0.2")
	fullW := mk("full", "10.250.0.3")
	lazyKey := lazyxds.WorkloadKey{Namespace: "client", Name: "lazy"}
	g.UpsertWorkload(lazyxds.Workload{Namespace: "client", Name: "lazy", Labels: lazyW.Workload.Labels,
		IPs: []netip.Addr{netip.MustParseAddr(lazyW.Workload.IP)}, Lazy: true})
	g.UpsertWorkload(lazyxds.Workload{Namespace: "client", Name: "full", Labels: fullW.Workload.Labels,
		IPs: []netip.Addr{netip.MustParseAddr(fullW.Workload.IP)}})
	// Three dependencies learned earlier.
	for _, i := range []int{1, 2, 3} {
		g.Learn(lazyKey, svcs[i].Host(), time.Now())
	}
	writes := 0
	flush := func() {
		for _, ch := range g.Drain() {
			if ch.Delete {
				continue
			}
			sc, err := lazyxds.RenderSidecar(ch.Input)
			if err != nil {
				b.Fatal(err)
			}
			sc.SetGroupVersionKind(sc.GroupVersionKind())
			existing := sc.DeepCopy()
			if err := env.Client.Get(ctx, client.ObjectKeyFromObject(sc), existing); err == nil {
				sc.ResourceVersion = existing.ResourceVersion
				err = env.Client.Update(ctx, sc)
				if err != nil {
					b.Fatal(err)
				}
			} else if err := env.Client.Create(ctx, sc); err != nil {
				b.Fatal(err)
			}
			writes++
		}
	}
	flush()
	// The lazy proxy starts after its Sidecar exists, as a pod of a lazy
	// workload does once the policy is in place.
	time.Sleep(time.Second)
	lazySC, fullSC := connect(lazyW), connect(fullW)

	waitCDS := func(sc *cluster.Sidecar, cond func(int) bool) cluster.Snapshot {
		s, err := sc.WaitFor(ctx, func(s cluster.Snapshot) bool { return cond(len(s.Types[cluster.TypeCluster].Resources)) })
		if err != nil {
			b.Fatal(err)
		}
		return s
	}
	waitCDS(fullSC, func(c int) bool { return c >= n })
	waitCDS(lazySC, func(c int) bool { return c > 0 })
	full, lazy := settle(b, fullSC), settle(b, lazySC)

	// Churn: change min(50, n/2) services (a label and the port) over ~5 s;
	// count the pushes each sidecar gets.
	before := [2]counts{full, lazy}
	churn := min(50, n/2)
	for i := 0; i < churn; i++ {
		s := svcs[n/2+i]
		svc := &corev1.Service{}
		if err := env.Client.Get(ctx, client.ObjectKey{Namespace: s.Namespace, Name: s.Name}, svc); err != nil {
			b.Fatal(err)
		}
		svc.Labels["churn"] = strconv.Itoa(i)
		svc.Spec.Ports[0].Port = 8081
		if err := env.Client.Update(ctx, svc); err != nil {
			b.Fatal(err)
		}
		time.Sleep(100 * time.Millisecond)
	}
	time.Sleep(3 * time.Second)
	after := [2]counts{measure(fullSC.Snapshot()), measure(lazySC.Snapshot())}

	// First call through the egress → cluster pushed to the lazy sidecar.
	srv := als.NewServer(g, als.Options{})
	alsCtx, alsStop := context.WithCancel(ctx)
	defer alsStop()
	go srv.Run(alsCtx)
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	gs := grpc.NewServer()
	srv.Register(gs)
	grpcserver.Run(b, "ALS", gs, lis)
	stopFlush := make(chan struct{})
	flushDone := make(chan struct{})
	go func() { // the controller's flush loop
		defer close(flushDone)
		t := time.NewTicker(100 * time.Millisecond)
		defer t.Stop()
		for {
			select {
			case <-stopFlush:
				return
			case <-t.C:
				flush()
			}
		}
	}()
	conn, err := grpc.NewClient(lis.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		b.Fatal(err)
	}
	defer conn.Close()
	stream, err := alsv3.NewAccessLogServiceClient(conn).StreamAccessLogs(ctx)
	if err != nil {
		b.Fatal(err)
	}
	target := svcs[n/4]
	fullPushesBefore := fullSC.Snapshot().Pushes(cluster.TypeCluster)
	newCluster := target.OutboundCluster(8080)
	t0 := time.Now()
	err = stream.Send(&alsv3.StreamAccessLogsMessage{
		Identifier: &alsv3.StreamAccessLogsMessage_Identifier{Node: &corev3.Node{Id: "router~10.250.9.9~lazy-egress.istio-system~istio-system.svc.cluster.local"}, LogName: "leanmesh-lazy"},
		LogEntries: &alsv3.StreamAccessLogsMessage_HttpLogs{HttpLogs: &alsv3.StreamAccessLogsMessage_HTTPAccessLogEntries{LogEntry: []*accesslogdatav3.HTTPAccessLogEntry{{
			CommonProperties: &accesslogdatav3.AccessLogCommon{
				DownstreamRemoteAddress: &corev3.Address{Address: &corev3.Address_SocketAddress{SocketAddress: &corev3.SocketAddress{Address: lazyW.Workload.IP, PortSpecifier: &corev3.SocketAddress_PortValue{PortValue: 43210}}}},
				UpstreamCluster:         newCluster,
			},
			Request: &accesslogdatav3.HTTPRequestProperties{Authority: target.Name + "." + target.Namespace + ":8080"},
		}}}},
	})
	if err != nil {
		b.Fatal(err)
	}
	if _, err := lazySC.WaitFor(ctx, func(s cluster.Snapshot) bool { return s.Has(cluster.TypeCluster, newCluster) }); err != nil {
		b.Fatal(err)
	}
	firstCall := time.Since(t0)
	close(stopFlush)
	<-flushDone
	time.Sleep(time.Second) // a push to the other sidecar would land by now
	fullPushes := fullSC.Snapshot().Pushes(cluster.TypeCluster) - fullPushesBefore
	lazyAfter := measure(lazySC.Snapshot())

	// First call after enabling, with seeding: a workload whose edges a real
	// Prometheus already holds becomes lazy; its first Sidecar carries them,
	// so the proxy's first lazy CDS has the clusters and no call detours.
	seededW := mk("seeded", "10.250.0.4")
	called := []cluster.Workload{svcs[5], svcs[6], svcs[7]}
	reg := prometheus.NewRegistry()
	reqs := prometheus.NewCounterVec(prometheus.CounterOpts{Name: "istio_requests_total", Help: "h"},
		[]string{"reporter", "source_workload", "source_workload_namespace", "destination_service"})
	reg.MustRegister(reqs)
	for _, s := range called {
		reqs.WithLabelValues("source", "seeded", "client", s.Host()).Add(3)
	}
	plis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	phs := &http.Server{Handler: promhttp.HandlerFor(reg, promhttp.HandlerOpts{})}
	go func() { _ = phs.Serve(plis) }()
	defer phs.Close()
	prom := lmprom.StartT(b, lmprom.Options{ScrapeConfigs: []string{lmprom.StaticJob("mesh", plis.Addr().String())}})
	prom.WaitScrapedT(b, "mesh", time.Now())
	alsBefore := srv.Stats().Received
	seededKey := lazyxds.WorkloadKey{Namespace: "client", Name: "seeded"}
	enabled := time.Now()
	g.UpsertWorkload(lazyxds.Workload{Namespace: "client", Name: "seeded", Labels: seededW.Workload.Labels,
		IPs: []netip.Addr{netip.MustParseAddr(seededW.Workload.IP)}, Lazy: true})
	sres, err := seed.Fetch(ctx, seed.Config{URL: prom.URL, LookBack: time.Hour, Namespaces: []string{"client"}}, time.Now())
	if err != nil {
		b.Fatal(err)
	}
	applied := g.Seed(sres.Edges, time.Now(), func(k lazyxds.WorkloadKey) bool { return k == seededKey })
	flush()
	toSidecar := time.Since(enabled)
	seededSC := connect(seededW)
	// Its first lazy CDS (a push istiod computed before it saw the Sidecar would be the full mesh).
	first, err := seededSC.WaitFor(ctx, func(s cluster.Snapshot) bool {
		return s.Pushes(cluster.TypeCluster) > 0 && len(s.Types[cluster.TypeCluster].Resources) < n
	})
	if err != nil {
		b.Fatal(err)
	}
	inFirst := 0
	for _, s := range called {
		if first.Has(cluster.TypeCluster, s.OutboundCluster(8080)) {
			inFirst++
		}
	}
	seededCDS := len(first.Types[cluster.TypeCluster].Resources)
	detours := srv.Stats().Received - alsBefore

	fmt.Printf("\nlazy xDS at scale: %d services in %d namespaces, real istiod %s\n", n, namespaces, cluster.IstioVersion)
	fmt.Printf("%-4s %12s %12s %14s %14s %12s %12s\n", "type", "full res", "lazy res", "full bytes", "lazy bytes", "full churn", "lazy churn")
	for _, typ := range []string{cluster.TypeCluster, cluster.TypeEndpoint, cluster.TypeListener, cluster.TypeRoute} {
		fmt.Printf("%-4s %12d %12d %14d %14d %12d %12d\n", short(typ), full.resources[typ], lazy.resources[typ], full.bytes[typ], lazy.bytes[typ],
			after[0].pushes[typ]-before[0].pushes[typ], after[1].pushes[typ]-before[1].pushes[typ])
	}
	deps := 3
	cdsRatio := float64(lazy.bytes[cluster.TypeCluster]) / float64(full.bytes[cluster.TypeCluster])
	saved := float64(full.resources[cluster.TypeCluster]-lazy.resources[cluster.TypeCluster]) * envoyBytesPerCluster
	fmt.Printf("lazy CDS %d clusters for %d dependencies (target <= deps+10 = %d); lazy/full CDS bytes = %.2f%% (target <= 5%%)\n",
		lazy.resources[cluster.TypeCluster], deps, deps+10, 100*cdsRatio)
	fmt.Printf("first ALS entry -> new cluster in the lazy sidecar's CDS: %v (target <= 2s); lazy CDS now %d; CDS pushes to the other sidecar meanwhile: %d; Sidecar writes %d\n",
		firstCall.Round(time.Millisecond), lazyAfter.resources[cluster.TypeCluster], fullPushes, writes)
	fmt.Printf("first call after enabling, with seeding: %d/%d previously observed edges in the caller's first lazy CDS (%d clusters); egress detours (access logs) %d; enable -> Sidecar written %v (query %v, %d edges, %d added)\n",
		inFirst, len(called), seededCDS, detours, toSidecar.Round(time.Millisecond), sres.Took.Round(time.Millisecond), len(sres.Edges), applied.Added)
	fmt.Printf("estimated Envoy memory saved on the lazy sidecar: %.1f MB (%d clusters x ~47 KB)\n", saved/1e6, full.resources[cluster.TypeCluster]-lazy.resources[cluster.TypeCluster])
	b.ReportMetric(float64(lazy.resources[cluster.TypeCluster]), "lazy-clusters")
	b.ReportMetric(float64(full.resources[cluster.TypeCluster]), "full-clusters")
	b.ReportMetric(100*cdsRatio, "lazy/full-CDS-bytes-%")
	b.ReportMetric(float64(firstCall.Milliseconds()), "first-call-to-cluster-ms")
	b.ReportMetric(float64(detours), "seeded-first-call-detours")
	if inFirst != len(called) || detours != 0 {
		b.Errorf("seeded workload: %d/%d edges in its first CDS, %d detours", inFirst, len(called), detours)
	}
	if lazy.resources[cluster.TypeCluster] > deps+10 || cdsRatio > 0.05 || firstCall > 2*time.Second {
		b.Errorf("targets missed")
	}
}
