package hostile

import (
	"context"
	"errors"
	"fmt"
	"os"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/leanmesh/leanmesh/controller/api/v1alpha1"
	"github.com/leanmesh/leanmesh/controller/lazyxds/als"
	"github.com/leanmesh/leanmesh/controller/release"
	"github.com/leanmesh/leanmesh/e2e/cluster"
	"github.com/leanmesh/leanmesh/e2e/soak"
	"github.com/leanmesh/leanmesh/filters/pluginconfig"
)

const bookinfo = "bookinfo"

// soakPair is the traffic's client and server: pods carrying the library
// (the Envoy-version label the controller selects on) with Istio's labels.
func soakPair() (client, server cluster.Workload) {
	envoy := release.Embedded().Default().Envoy
	labels := func(app, version string) map[string]string {
		return map[string]string{"app": app, "version": version, v1alpha1.LabelEnvoyVersion: envoy, "security.istio.io/tlsMode": "istio",
			"service.istio.io/canonical-name": app, "service.istio.io/canonical-revision": version}
	}
	client = cluster.Workload{Namespace: bookinfo, Name: "productpage", PodName: "productpage-v1-6b746f74dc-9stvs", IP: "10.44.0.10",
		ServiceAccount: "bookinfo-productpage", Labels: labels("productpage", "v1"), Ports: []cluster.Port{{Name: "http", Port: 9080}}}
	server = cluster.Workload{Namespace: bookinfo, Name: "reviews", PodName: "reviews-v2-7bf8c9648f-xz4fq", IP: "10.44.0.12",
		ServiceAccount: "bookinfo-reviews", Labels: labels("reviews", "v2"), Ports: []cluster.Port{{Name: "http", Port: 9080}}}
	return client, server
}

// TestSoakMesh is the whole path under churn: the real controller binary
// (supervised, as the kubelet runs it) and a real istiod on a real
// kube-apiserver; two C test hosts loading leanmesh.so with the
// plugin_config istiod pushes over LDS (proxyAgent), relaying traffic
// productpage → reviews; while it flows, the TelemetryPolicy switches
// LeanMesh → Shadow → Istio → LeanMesh, the controller and istiod are
// restarted, and an attacker floods the controller's ALS port while an
// honest egress teaches lazy-xDS dependencies.
//
// Every request's fate is known: each side that ran leanmesh counted it
// under its config's metric prefix (Istio's names in LeanMesh mode,
// leanmesh_shadow_ in Shadow mode); a side that ran no leanmesh (Istio
// mode, or the moment a switch reached one proxy and not yet the other)
// left it to Istio's own filter, which this host cannot run. At every
// checkpoint the exposition istiod configured must hold exactly the counts
// sent per reporter and prefix: a request lost or counted twice across a
// switch or a restart fails the test. Restarts of istiod and the
// controller must not change any config a proxy runs (no reload).
//
// LEANMESH_SOAK=<duration> (make soak) runs it for that long, an event
// every 1/30 of the run (at least 15 s) and a report line per event.
// Without it (make test) it runs the six events once, 5 s apart.
func TestSoakMesh(t *testing.T) {
	quick, total, spacing := true, time.Duration(0), 5*time.Second
	if os.Getenv(soak.Env) != "" {
		quick, total = false, soak.Duration(t)
		spacing = max(total/30, 15*time.Second)
	}
	ctx := context.Background()
	begin := time.Now()
	m := newMesh(t)
	env := m.env
	istiod, err := env.StartIstiod(ctx, cluster.IstiodOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer func() {
		if err := istiod.Stop(); err != nil {
			t.Errorf("stopping istiod: %v", err)
		}
	}()
	if err := env.CreateNamespace(ctx, bookinfo, nil); err != nil {
		t.Fatal(err)
	}
	pp, rv := soakPair()
	for _, w := range []cluster.Workload{pp, rv} {
		if _, err := env.CreateWorkload(ctx, w); err != nil {
			t.Fatal(err)
		}
	}
	r := supervise(t, env, "soak", "--lazyxds-als-plaintext")
	if _, _, err := waitLeader(3*time.Minute, r); err != nil {
		t.Fatal(err)
	}
	policy := &v1alpha1.TelemetryPolicy{ObjectMeta: metav1.ObjectMeta{Namespace: bookinfo, Name: bookinfo}}
	policy.Spec.Mode = v1alpha1.ModeLeanMesh
	if err := env.Client.Create(ctx, policy); err != nil {
		t.Fatal(err)
	}
	src, dst := startProxyAgent(t, pp, istiod.XDSAddr, 2), startProxyAgent(t, rv, istiod.XDSAddr, 2)
	agents := []*proxyAgent{src, dst}
	// Envoy keeps a cluster's metadata across reconnects; so does the soak.
	var outMeta, inMeta *corev3.Metadata

	// sent[reporter][prefix]: requests each side counted with leanmesh;
	// toIstio[reporter]: requests a side passed with no leanmesh filter.
	sent := map[string]map[string]int{"source": {}, "destination": {}}
	toIstio := map[string]int{}
	requests := 0
	step := func() {
		t.Helper()
		for _, a := range agents {
			if err := a.sync(); err != nil {
				t.Fatal(err)
			}
		}
		if outMeta == nil {
			outMeta = src.ads.Snapshot().Cluster(rv.OutboundCluster(9080)).GetMetadata()
		}
		if inMeta == nil {
			inMeta = dst.ads.Snapshot().Cluster("inbound|9080||").GetMetadata()
		}
		x, err := relayOnce(src, dst, outMeta, inMeta, requests)
		if err != nil {
			t.Fatalf("request %d: %v", requests, err)
		}
		requests++
		if x.clientLean {
			sent["source"][x.clientPrefix]++
		} else {
			toIstio["source"]++
		}
		if x.serverLean {
			sent["destination"][x.serverPrefix]++
		} else {
			toIstio["destination"]++
		}
	}
	// serveUntil keeps traffic flowing (one request every ~5 ms) until cond
	// holds, so every switch and restart happens under load.
	serveUntil := func(what string, timeout time.Duration, cond func() error) time.Duration {
		t.Helper()
		start := time.Now()
		for {
			step()
			err := cond()
			if err == nil {
				return time.Since(start)
			}
			if time.Since(start) > timeout {
				t.Fatalf("%s: not after %s: %v\n--- istiod log tail ---\n%s", what, timeout, err, istiod.LogTail(20))
			}
			time.Sleep(5 * time.Millisecond)
		}
	}
	inMode := func(mode v1alpha1.Mode) func() error {
		return func() error {
			for _, a := range agents {
				if !a.synced() {
					return fmt.Errorf("%s: no LDS yet", a.w.Name)
				}
				if got := a.mode(); got != string(mode) {
					return fmt.Errorf("%s runs %s", a.w.Name, got)
				}
				// Every mode keeps the exposition listener (in Istio mode
				// it serves what leanmesh counted before the switch).
				if a.config(slotEx) == nil {
					return fmt.Errorf("%s: no exposition listener in mode %s", a.w.Name, mode)
				}
			}
			return nil
		}
	}
	d := serveUntil("LeanMesh in istiod's LDS", 3*time.Minute, inMode(v1alpha1.ModeLeanMesh))
	t.Logf("set-up %s; LeanMesh in both proxies' LDS %s after they connected", time.Since(begin).Round(time.Second), d.Round(time.Millisecond))

	// The ALS side: an attacker floods, an honest egress teaches one
	// dependency per round (as TestControllerRSSUnderALSFlood and the
	// faults test), for the whole run, across controller restarts.
	var all []dep
	for _, a := range shopWorkloads {
		for _, b := range shopWorkloads {
			if a.Name != b.Name {
				all = append(all, dep{a.Name, b.Name})
			}
		}
	}
	var alsMu sync.Mutex
	var learned []dep
	var floodRounds int
	alsErrs := make(chan error, 16)
	stopALS, alsDone := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(alsDone)
		huge := hugeMessage(15 << 20)
		atBudget := hugeMessage(als.DefaultMaxMessageBytes - 4<<10)
		for round := 0; ; round++ {
			select {
			case <-stopALS:
				return
			case <-time.After(time.Second):
			}
			p := r.proc()
			if p == nil || !serving(p.alsAddr) {
				continue // restarting
			}
			a := newAttacker()
			a.streams(p.alsAddr, plaintext, 2, 12, oneEach(huge), 2*time.Second)
			a.streams(p.alsAddr, plaintext, 4, 100, oneEach(atBudget), time.Second)
			a.streams(p.alsAddr, plaintext, 4, 4, distinctNames(20), 2*time.Second)
			a.close()
			d := all[round%len(all)]
			alsMu.Lock()
			floodRounds++
			known := slices.Contains(learned, d)
			alsMu.Unlock()
			if known || m.learn(p.alsAddr, d) != nil {
				continue // not served (a restart began): the next call teaches it
			}
			if _, err := m.waitSidecars([]dep{d}, time.Minute); err != nil {
				select {
				case alsErrs <- fmt.Errorf("ALS round %d: %s not learned: %v", round, d, err):
				default:
				}
				continue
			}
			alsMu.Lock()
			learned = append(learned, d)
			alsMu.Unlock()
		}
	}()
	defer func() {
		close(stopALS)
		<-alsDone
	}()

	var maxRSS uint64
	var firstHeap, maxHeap [2]float64
	var switches, istiodRestarts, ctrlRestarts int
	var eventLog []string
	report := func(event string) {
		t.Helper()
		var parts []string
		for i, a := range agents {
			rep := []string{"source", "destination"}[i]
			fams, size, ok, err := a.scrape()
			if err != nil {
				t.Fatalf("%s: %v", a.w.Name, err)
			}
			if !ok {
				parts = append(parts, fmt.Sprintf("%s: no exposition", a.w.Name))
				continue
			}
			heap, _, err := a.heap()
			if err != nil {
				t.Fatal(err)
			}
			if firstHeap[i] == 0 {
				firstHeap[i] = heap
			}
			maxHeap[i] = max(maxHeap[i], heap)
			var counts []string
			for _, prefix := range []string{"", pluginconfig.ShadowMetricPrefix} {
				name := prefix + "istio_requests_total"
				got, want := value(fams, name, map[string]string{"reporter": rep}), sent[rep][prefix]
				counts = append(counts, fmt.Sprintf("%s %.0f/%d", name, got, want))
				if got != float64(want) {
					fate := "counted twice"
					if got < float64(want) {
						fate = "lost"
					}
					t.Errorf("%s (%s): %s{reporter=%q} = %.0f, but %d requests were counted by leanmesh under that name: %s",
						event, a.w.Name, name, rep, got, want, fate)
				}
			}
			parts = append(parts, fmt.Sprintf("%s: Go heap %.1f MB, series %.0f, scrape %d B, counted/sent %s",
				a.w.Name, heap/1e6, value(fams, "leanmesh_series", nil), size, strings.Join(counts, ", ")))
		}
		ctrl := "controller: restarting"
		if p := r.proc(); p != nil {
			if rss, hwm, err := p.memory(); err == nil {
				maxRSS = max(maxRSS, hwm)
				if hwm > rssBudget {
					t.Errorf("%s: controller peak RSS %s over the budget %s", event, mib(hwm), mib(rssBudget))
				}
				heap, refused := "?", "?"
				if fams, _, err := p.scrape(); err == nil {
					heap = mib(uint64(value(fams, "go_memstats_heap_inuse_bytes", nil)))
					refused = fmt.Sprintf("%.0f", value(fams, "leanmesh_lazyxds_als_refused_total", nil))
				}
				ctrl = fmt.Sprintf("controller RSS %s (peak %s), Go heap %s, ALS refused %s", mib(rss), mib(hwm), heap, refused)
			}
		}
		alsMu.Lock()
		learnedNow, rounds := slices.Clone(learned), floodRounds
		alsMu.Unlock()
		_, missing, err := m.inSidecars(learnedNow)
		if err != nil {
			t.Fatal(err)
		}
		if len(missing) > 0 {
			t.Errorf("%s: learned dependencies lost from Sidecars: %v", event, missing)
		}
		t.Logf("%7s %-34s requests %6d (Istio's filter only: client %d, server %d); %s; %s; ALS rounds %d, learned %d, lost %d; reloads %d/%d",
			time.Since(begin).Round(time.Second), event, requests, toIstio["source"], toIstio["destination"], strings.Join(parts, "; "),
			ctrl, rounds, len(learnedNow), len(missing), src.reloadCount(), dst.reloadCount())
	}
	select {
	case err := <-alsErrs:
		t.Error(err)
	default:
	}
	report("start (LeanMesh)")

	setMode := func(mode v1alpha1.Mode) {
		t.Helper()
		p := &v1alpha1.TelemetryPolicy{}
		if err := env.Client.Get(ctx, client.ObjectKeyFromObject(policy), p); err != nil {
			t.Fatal(err)
		}
		orig := p.DeepCopy()
		p.Spec.Mode = mode
		if err := env.Client.Patch(ctx, p, client.MergeFrom(orig)); err != nil {
			t.Fatal(err)
		}
	}
	noReload := func(what string, before int) {
		t.Helper()
		if after := src.reloadCount() + dst.reloadCount(); after != before {
			t.Errorf("%s changed the config the proxies run: %d reloads\n%s", what, after-before, strings.Join(append(src.changes, dst.changes...), "\n"))
		}
	}
	modes := []v1alpha1.Mode{v1alpha1.ModeShadow, v1alpha1.ModeIstio, v1alpha1.ModeLeanMesh}
	mode := v1alpha1.ModeLeanMesh
	runEvent := func(i int) string {
		t.Helper()
		before := src.reloadCount() + dst.reloadCount()
		switch {
		case i%2 == 1: // a mode switch, in the order Shadow, Istio, LeanMesh
			mode = modes[(i/2)%len(modes)]
			setMode(mode)
			d := serveUntil("mode "+string(mode), 2*time.Minute, inMode(mode))
			switches++
			return fmt.Sprintf("switch → %s in LDS %.1fs", mode, d.Seconds())
		case (i/2)%2 == 0: // istiod restart
			done := make(chan error, 1)
			start := time.Now()
			go func() {
				if err := istiod.Stop(); err != nil {
					done <- fmt.Errorf("stopping istiod for a restart: %w", err)
					return
				}
				ni, err := env.StartIstiod(ctx, cluster.IstiodOptions{})
				if err == nil {
					istiod = ni
				}
				done <- err
			}()
			var restartErr error
			serveUntil("istiod restart", 3*time.Minute, func() error {
				select {
				case restartErr = <-done:
					return nil
				default:
					return errors.New("istiod restarting")
				}
			})
			if restartErr != nil {
				t.Fatal(restartErr)
			}
			for _, a := range agents {
				if err := a.connect(istiod.XDSAddr); err != nil {
					t.Fatal(err)
				}
			}
			serveUntil("LDS from the new istiod", 2*time.Minute, inMode(mode))
			istiodRestarts++
			noReload("restarting istiod", before)
			return fmt.Sprintf("istiod restarted, LDS again %.1fs", time.Since(start).Seconds())
		default: // controller restart (SIGTERM; the supervisor starts it again)
			n := len(r.restarts())
			start := time.Now()
			p := r.proc()
			go p.stop(t)
			serveUntil("controller back", 3*time.Minute, func() error {
				if len(r.restarts()) == n || !r.leading() {
					return errors.New("controller restarting")
				}
				return nil
			})
			back := time.Since(start)
			// What the new process reconciles lands within seconds.
			serveUntil("controller settled", time.Minute, func() error {
				if time.Since(start) < back+5*time.Second {
					return errors.New("settling")
				}
				return inMode(mode)()
			})
			ctrlRestarts++
			noReload("restarting the controller", before)
			return fmt.Sprintf("controller restarted, leads %.1fs", back.Seconds())
		}
	}
	loopStart, next := time.Now(), time.Now().Add(spacing)
	for i := 0; (quick && i < 6) || (!quick && time.Since(loopStart)+spacing <= total); i++ {
		serveUntil("next event", spacing+time.Minute, func() error {
			if time.Now().Before(next) {
				return errors.New("waiting")
			}
			return nil
		})
		next = time.Now().Add(spacing)
		ev := runEvent(i)
		eventLog = append(eventLog, ev)
		select {
		case err := <-alsErrs:
			t.Error(err)
		default:
		}
		report(ev)
	}
	t.Logf("soak %s (%d events: %d mode switches, %d istiod restarts, %d controller restarts; %d supervisor restarts in all): "+
		"%d requests, counted by leanmesh client %v server %v, Istio's filter only client %d server %d; "+
		"proxy live Go heap client %.1f→max %.1f MB, server %.1f→max %.1f MB; controller peak RSS %s (budget %s, chart limit %s)",
		time.Since(begin).Round(time.Second), len(eventLog), switches, istiodRestarts, ctrlRestarts, len(r.restarts()),
		requests, sent["source"], sent["destination"], toIstio["source"], toIstio["destination"],
		firstHeap[0]/1e6, maxHeap[0]/1e6, firstHeap[1]/1e6, maxHeap[1]/1e6, mib(maxRSS), mib(rssBudget), mib(chartMemoryLimit))
	for i := range agents {
		if maxHeap[i]-firstHeap[i] > 64e6 {
			t.Errorf("%s: live Go heap grew %.1f MB during the soak", agents[i].w.Name, (maxHeap[i]-firstHeap[i])/1e6)
		}
	}
	if switches == 0 || istiodRestarts == 0 || ctrlRestarts == 0 {
		t.Errorf("too short to run every event: %d switches, %d istiod restarts, %d controller restarts (LEANMESH_SOAK ≥ %s)",
			switches, istiodRestarts, ctrlRestarts, 6*spacing)
	}
}
