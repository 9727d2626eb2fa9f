package hostile

import (
	"context"
	"fmt"
	"runtime"
	"sync"
	"testing"
	"time"

	accesslogv3 "github.com/envoyproxy/go-control-plane/envoy/service/accesslog/v3"
	dto "github.com/prometheus/client_model/go"
	"google.golang.org/grpc"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/leanmesh/leanmesh/controller/api/v1alpha1"
	"github.com/leanmesh/leanmesh/controller/lazyxds"
	"github.com/leanmesh/leanmesh/controller/lazyxds/als"
)

// chartMemoryLimit is charts/leanmesh/values.yaml's resources.limits.memory.
const chartMemoryLimit = 256 << 20

// rssBudget is what docs/security.md promises for the whole controller
// process under any ALS flood: the ALS worst case (~32 MiB, every budget
// full) on top of the idle process, with room for the Go runtime's GC
// headroom. Well under the chart's limit.
const rssBudget = 160 << 20

// sampler polls a process's RSS while an attack runs.
type sampler struct {
	p    *proc
	stop chan struct{}
	done chan struct{}
	mu   sync.Mutex
	max  uint64
}

func sample(p *proc) *sampler {
	s := &sampler{p: p, stop: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(s.done)
		t := time.NewTicker(20 * time.Millisecond)
		defer t.Stop()
		for {
			if rss, _, err := p.memory(); err == nil {
				s.mu.Lock()
				s.max = max(s.max, rss)
				s.mu.Unlock()
			}
			select {
			case <-s.stop:
				return
			case <-t.C:
			}
		}
	}()
	return s
}

func (s *sampler) end() uint64 {
	close(s.stop)
	<-s.done
	return s.max
}

// flood is one attack on the ALS port.
type flood struct {
	name string
	run  func(a *attacker, addr string)
	// refused: the refusal reasons it must raise, and by at least how much.
	refused map[string]float64
}

// runFloods runs each flood against p, prints RSS before/peak/after, and
// checks the refusals on the controller's own /metrics.
func runFloods(t *testing.T, p *proc, floods []flood) (worst uint64) {
	t.Helper()
	settle := func() uint64 {
		time.Sleep(3 * time.Second)
		rss, _, err := p.memory()
		if err != nil {
			t.Fatal(err)
		}
		return rss
	}
	for _, f := range floods {
		before := settle()
		fams, _, err := p.scrape()
		if err != nil {
			t.Fatal(err)
		}
		s := sample(p)
		a := newAttacker()
		start := time.Now()
		f.run(a, p.alsAddr)
		peak := s.end()
		took := time.Since(start)
		// While the attacker still holds everything open.
		held, _, err := p.scrape()
		if err != nil {
			t.Fatal(err)
		}
		active := value(held, "leanmesh_lazyxds_als_streams_active", nil)
		if active > als.DefaultMaxStreams {
			t.Errorf("%s: %.0f streams active, budget %d", f.name, active, als.DefaultMaxStreams)
		}
		codes := a.close()
		after := settle()
		fams2, _, err := p.scrape()
		if err != nil {
			t.Fatal(err)
		}
		var got []string
		for reason, min := range f.refused {
			d := value(fams2, "leanmesh_lazyxds_als_refused_total", map[string]string{"reason": reason}) -
				value(fams, "leanmesh_lazyxds_als_refused_total", map[string]string{"reason": reason})
			got = append(got, fmt.Sprintf("%s+%.0f", reason, d))
			if d < min {
				t.Errorf("%s: refused{reason=%s} grew by %.0f, want ≥ %.0f", f.name, reason, d, min)
			}
		}
		heap := func(f map[string]*dto.MetricFamily) string {
			return mib(uint64(value(f, "go_memstats_heap_inuse_bytes", nil)))
		}
		t.Logf("%-58s RSS before %s, peak %s (%+.1f MiB), after close %s (Go heap in use %s → %s); %s; streams %v; refused %v; active at the end %.0f",
			f.name, mib(before), mib(peak), float64(int64(peak)-int64(before))/(1<<20), mib(after), heap(fams), heap(fams2),
			took.Round(time.Millisecond), codes, got, active)
		worst = max(worst, peak)
		if peak > rssBudget {
			t.Errorf("%s: peak RSS %s over the documented budget %s", f.name, mib(peak), mib(rssBudget))
		}
	}
	_, hwm, err := p.memory()
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("%s: kernel high-water mark (VmHWM) since start %s; chart limit %s, documented budget %s", p.name, mib(hwm), mib(chartMemoryLimit), mib(rssBudget))
	if hwm > rssBudget {
		t.Errorf("VmHWM %s over the budget %s", mib(hwm), mib(rssBudget))
	}
	return max(worst, hwm)
}

// oneEach is n streams with the same messages.
func oneEach(msgs ...*accesslogv3.StreamAccessLogsMessage) func(int) []*accesslogv3.StreamAccessLogsMessage {
	return func(int) []*accesslogv3.StreamAccessLogsMessage { return msgs }
}

// distinctNames: messages of 200 entries whose cluster and authority are
// new 400-byte strings (the interner's and the queue's worst case).
func distinctNames(msgs int) func(int) []*accesslogv3.StreamAccessLogsMessage {
	return func(stream int) []*accesslogv3.StreamAccessLogsMessage {
		out := make([]*accesslogv3.StreamAccessLogsMessage, msgs)
		pad := fmt.Sprintf("%0380d", 0)
		for m := range out {
			b := batch(m == 0)
			for e := range 200 {
				name := fmt.Sprintf("s%d-m%d-e%d-%s", stream, m, e, pad)
				b.GetHttpLogs().LogEntry = append(b.GetHttpLogs().LogEntry,
					logEntry("10.244.1.11", "outbound|80||"+name+".svc.cluster.local", name+":80"))
			}
			out[m] = b
		}
		return out
	}
}

// TestControllerRSSUnderALSFlood replays issue #18's ALS attack and its
// variants against the real controller binary (built from
// controller/cmd/leanmesh, run as a child process against a real
// kube-apiserver) and reads the kernel's RSS of that process: before, the
// peak while the attack runs, and after the attacker closes. Issue #18
// measured 74 MB → 761 MB, staying there after close.
//
// Plaintext ALS (--lazyxds-als-plaintext) is the worst case for memory:
// every byte reaches the budgets. With mutual TLS (the default) callers
// without the egress's certificate never get past the handshake.
func TestControllerRSSUnderALSFlood(t *testing.T) {
	env := startEnv(t)
	huge := hugeMessage(15 << 20)
	atBudget := hugeMessage(als.DefaultMaxMessageBytes - 4<<10)
	common := func(creds grpc.DialOption) []flood {
		return []flood{
			{name: "12 idle streams × one 15 MiB message (issue #18)", refused: map[string]float64{"message_too_large": 12},
				run: func(a *attacker, addr string) { a.streams(addr, creds, 12, 12, oneEach(huge), 5*time.Second) }},
			{name: "12 × 15 MiB on one connection, 10 rounds", refused: map[string]float64{"message_too_large": 120},
				run: func(a *attacker, addr string) {
					for range 10 {
						a.streams(addr, creds, 1, 12, oneEach(huge), 5*time.Second)
					}
				}},
			{name: "200 idle streams × one message at the budget (248 KiB)", refused: map[string]float64{"stream_limit": 200 - 64},
				run: func(a *attacker, addr string) { a.streams(addr, creds, 4, 200, oneEach(atBudget), 3*time.Second) }},
			{name: "1,000 connections × one idle stream",
				// 256 connections held (4 × the stream budget), 64 streams admitted on them.
				refused: map[string]float64{"connection_limit": 1000 - als.DefaultMaxConnections, "stream_limit": 100},
				run: func(a *attacker, addr string) {
					var wg sync.WaitGroup
					for range 10 {
						wg.Add(1)
						go func() { defer wg.Done(); a.streams(addr, creds, 100, 100, oneEach(batch(true)), 10*time.Second) }()
					}
					wg.Wait()
				}},
			{name: "8 streams × 100 messages × 200 distinct 400 B names", refused: nil,
				run: func(a *attacker, addr string) { a.streams(addr, creds, 8, 8, distinctNames(100), 10*time.Second) }},
		}
	}

	t.Run("plaintext", func(t *testing.T) {
		p := startController(t, env, "plaintext", "--lazyxds-als-plaintext")
		p.waitALS(t, 120*time.Second)
		runFloods(t, p, common(plaintext))
		p.stop(t)
	})

	t.Run("mutualTLS", func(t *testing.T) {
		ca := newMeshCA(t)
		// A LazyXDS makes its egress's identity the one admitted.
		if err := env.CreateNamespace(context.Background(), "shop", nil); err != nil {
			t.Fatal(err)
		}
		if err := env.Client.Create(context.Background(), &v1alpha1.LazyXDS{ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: "lazy"}}); err != nil {
			t.Fatal(err)
		}
		p := startController(t, env, "mtls", "--lazyxds-als-mesh-root", ca.rootFile(t))
		p.waitALS(t, 120*time.Second)
		egNS, egSA := lazyxds.Egress{}.ServiceAccount()
		egress := ca.workload(t, egNS, egSA)
		other := ca.workload(t, "shop", "default")
		stranger := newMeshCA(t).workload(t, egNS, egSA)
		floods := []flood{
			{name: "100 connections without a client certificate × 15 MiB", refused: map[string]float64{"no_client_certificate": 100},
				run: func(a *attacker, addr string) { a.streams(addr, mtls(nil), 100, 100, oneEach(huge), 5*time.Second) }},
			{name: "100 connections, egress identity from another CA × 15 MiB", refused: map[string]float64{"untrusted_certificate": 100},
				run: func(a *attacker, addr string) {
					a.streams(addr, mtls(&stranger), 100, 100, oneEach(huge), 5*time.Second)
				}},
			{name: "100 streams, mesh certificate of shop/default × 15 MiB", refused: map[string]float64{"forbidden_identity": 100},
				run: func(a *attacker, addr string) { a.streams(addr, mtls(&other), 10, 100, oneEach(huge), 5*time.Second) }},
		}
		// The egress's own certificate (stolen, or a compromised egress) gets the budgets.
		floods = append(floods, common(mtls(&egress))...)
		runFloods(t, p, floods)
		p.stop(t)
	})
	runtime.KeepAlive(huge)
}
