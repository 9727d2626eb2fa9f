package hostile

import (
	"context"
	"fmt"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	networkingv1 "istio.io/client-go/pkg/apis/networking/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/leanmesh/leanmesh/controller/api/v1alpha1"
	"github.com/leanmesh/leanmesh/controller/lazyxds"
	"github.com/leanmesh/leanmesh/controller/lazyxdsctl"
	"github.com/leanmesh/leanmesh/e2e/cluster"
)

const shop = "shop"

// shopWorkloads: callers and callees of the learned dependencies.
var shopWorkloads = []cluster.Workload{
	{Namespace: shop, Name: "productpage", IP: "10.244.1.11", Ports: []cluster.Port{{Name: "http", Port: 9080}}},
	{Namespace: shop, Name: "reviews", IP: "10.244.1.12", Ports: []cluster.Port{{Name: "http", Port: 9080}}},
	{Namespace: shop, Name: "ratings", IP: "10.244.1.14", Ports: []cluster.Port{{Name: "http", Port: 9080}}},
	{Namespace: shop, Name: "details", IP: "10.244.1.15", Ports: []cluster.Port{{Name: "http", Port: 9080}}},
	{Namespace: shop, Name: "reviews-v2", IP: "10.244.1.16", Ports: []cluster.Port{{Name: "http", Port: 9080}}},
	{Namespace: shop, Name: "ratings-v2", IP: "10.244.1.17", Ports: []cluster.Port{{Name: "http", Port: 9080}}},
}

func ipOf(name string) string {
	for _, w := range shopWorkloads {
		if w.Name == name {
			return w.IP
		}
	}
	panic(name)
}

// dep is caller → service, as the egress logs it.
type dep struct{ from, to string }

func (d dep) String() string { return d.from + "→" + d.to }

// mesh is the cluster side of the fault tests: workloads, a LazyXDS and the
// reads that say what was learned.
type mesh struct {
	t   *testing.T
	env *cluster.Env
	c   client.Client
}

func newMesh(t *testing.T) *mesh {
	env := startEnv(t)
	ctx := context.Background()
	for _, ns := range []string{"istio-system", shop} {
		if err := env.CreateNamespace(ctx, ns, nil); err != nil {
			t.Fatal(err)
		}
	}
	for _, w := range shopWorkloads {
		if _, err := env.CreateWorkload(ctx, w); err != nil {
			t.Fatal(err)
		}
	}
	if err := env.Client.Create(ctx, &v1alpha1.LazyXDS{ObjectMeta: metav1.ObjectMeta{Namespace: shop, Name: "lazy"}}); err != nil {
		t.Fatal(err)
	}
	return &mesh{t: t, env: env, c: env.Client}
}

// learn sends one access-log entry per dependency to the ALS at addr.
func (m *mesh) learn(addr string, deps ...dep) error {
	a := newAttacker() // the same client, used honestly
	defer a.close()
	conn, err := a.dial(addr, plaintext)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	st, err := newALSClient(ctx, conn)
	if err != nil {
		return err
	}
	for i, d := range deps {
		fqdn := d.to + ".shop.svc.cluster.local"
		if err := st.Send(batch(i == 0, logEntry(ipOf(d.from), "outbound|9080||"+fqdn, d.to+":9080"))); err != nil {
			return err
		}
	}
	_, err = st.CloseAndRecv()
	return err
}

// inSidecars reports which deps the callers' Sidecars hold now.
func (m *mesh) inSidecars(deps []dep) (have, missing []dep, err error) {
	for _, d := range deps {
		var sc networkingv1.Sidecar
		err := m.c.Get(context.Background(), client.ObjectKey{Namespace: shop, Name: "leanmesh-lazy-" + d.from + "-0"}, &sc)
		if err != nil && !apierrors.IsNotFound(err) {
			return nil, nil, err
		}
		found := false
		for _, e := range sc.Spec.Egress {
			found = found || slices.Contains(e.Hosts, shop+"/"+d.to+".shop.svc.cluster.local")
		}
		if found {
			have = append(have, d)
		} else {
			missing = append(missing, d)
		}
	}
	return have, missing, nil
}

// persisted reads the acknowledged dependencies from the snapshot ConfigMap.
func (m *mesh) persisted() ([]dep, error) {
	var cm corev1.ConfigMap
	if err := m.c.Get(context.Background(), client.ObjectKey{Namespace: controllerNS, Name: lazyxdsctl.DefaultConfigMapName}, &cm); err != nil {
		if apierrors.IsNotFound(err) {
			return nil, nil
		}
		return nil, err
	}
	snap, err := lazyxds.UnmarshalSnapshot(cm.BinaryData[lazyxdsctl.SnapshotKey])
	if err != nil {
		return nil, err
	}
	var out []dep
	for _, w := range snap.Deps {
		_, name, _ := strings.Cut(w.Workload, "/")
		name = strings.TrimSuffix(name, "-0")
		for _, d := range w.Deps {
			to, _, _ := strings.Cut(snap.Hosts[d[0]], ".")
			out = append(out, dep{name, to})
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].String() < out[j].String() })
	return out, nil
}

// waitSidecars waits until every dep is in its caller's Sidecar.
func (m *mesh) waitSidecars(deps []dep, timeout time.Duration) (time.Duration, error) {
	start := time.Now()
	for {
		_, missing, err := m.inSidecars(deps)
		if err == nil && len(missing) == 0 {
			return time.Since(start), nil
		}
		if time.Since(start) > timeout {
			return 0, fmt.Errorf("after %s: missing %v (%v)", timeout, missing, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// supervisor restarts a replica whenever it exits, as the kubelet restarts
// the controller's container: after restartDelay (the kubelet's first
// crash back-off is 10 s and doubles; a fixed delay keeps the test short).
type supervisor struct {
	t       *testing.T
	name    string
	mu      sync.Mutex
	cur     *proc
	exits   []time.Time
	stopped chan struct{}
	done    chan struct{}
}

func supervise(t *testing.T, env *cluster.Env, name string, extra ...string) *supervisor {
	bin := controllerBinary(t)
	logPath := filepath.Join(t.TempDir(), name+".log")
	s := &supervisor{t: t, name: name, stopped: make(chan struct{}), done: make(chan struct{})}
	first := make(chan error, 1)
	go func() {
		defer close(s.done)
		for i := 0; ; i++ {
			// Fresh ports on every restart: the old ones were free for
			// restartDelay, long enough for another listener to take
			// them (the kubelet restarts into the pod's own IP instead).
			a, err := pickAddrs()
			var p *proc
			if err == nil {
				p, err = launch(bin, env, name, a, logPath, extra...)
			}
			if i == 0 {
				first <- err
			}
			if err != nil {
				return
			}
			s.mu.Lock()
			s.cur = p
			s.mu.Unlock()
			select {
			case <-p.exited:
				s.mu.Lock()
				s.exits = append(s.exits, time.Now())
				s.mu.Unlock()
			case <-s.stopped:
				p.kill()
				return
			}
			select {
			case <-time.After(restartDelay):
			case <-s.stopped:
				return
			}
		}
	}()
	if err := <-first; err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		s.stop()
		if t.Failed() {
			t.Logf("--- %s log tail ---\n%s", name, tail(logPath, 60))
		}
	})
	return s
}

func (s *supervisor) proc() *proc {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.cur
}

func (s *supervisor) restarts() []time.Time {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.exits)
}

func (s *supervisor) stop() {
	select {
	case <-s.stopped:
	default:
		close(s.stopped)
	}
	<-s.done
}

// leading reports whether the replica serves ALS now (the loop opens it
// only as the leader, after its informers synced).
func (s *supervisor) leading() bool {
	p := s.proc()
	return p != nil && serving(p.alsAddr)
}

// waitLeader waits until one of replicas leads and returns it.
func waitLeader(timeout time.Duration, replicas ...*supervisor) (*supervisor, time.Duration, error) {
	start := time.Now()
	for time.Since(start) < timeout {
		for _, r := range replicas {
			if r.leading() {
				return r, time.Since(start), nil
			}
		}
		time.Sleep(20 * time.Millisecond)
	}
	return nil, 0, fmt.Errorf("no leader after %s", timeout)
}

const restartDelay = 5 * time.Second

var (
	firstDeps  = []dep{{"productpage", "reviews"}, {"productpage", "details"}, {"reviews", "ratings"}}
	secondDeps = []dep{{"productpage", "ratings"}, {"details", "reviews"}}
	thirdDeps  = []dep{{"reviews", "details"}, {"ratings", "details"}}
	fourthDeps = []dep{{"details", "ratings"}, {"reviews-v2", "ratings-v2"}}
)

// TestControllerFaults runs two replicas of the real controller binary
// against a real kube-apiserver and breaks things while they learn:
// leader handover on SIGTERM (rollout) and on SIGKILL (node loss), and an
// API server outage mid-learning, with a supervisor restarting each
// process when it exits, as the kubelet does. It measures the time to a
// serving leader and checks that no acknowledged dependency is lost
// (acknowledged: in the snapshot ConfigMap, hence in a Sidecar).
func TestControllerFaults(t *testing.T) {
	m := newMesh(t)
	a := supervise(t, m.env, "replica-a", "--lazyxds-als-plaintext")
	b := supervise(t, m.env, "replica-b", "--lazyxds-als-plaintext")
	leader, d, err := waitLeader(3*time.Minute, a, b)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("%s leads and serves ALS %s after start", leader.name, d.Round(time.Millisecond))
	var acked []dep
	learnAcked := func(t *testing.T, l *supervisor, deps []dep) {
		t.Helper()
		start := time.Now()
		if err := m.learn(l.proc().alsAddr, deps...); err != nil {
			t.Fatal(err)
		}
		if _, err := m.waitSidecars(deps, 60*time.Second); err != nil {
			t.Fatal(err)
		}
		acked = append(acked, deps...)
		t.Logf("learned %v through %s: in Sidecars after %s", deps, l.name, time.Since(start).Round(time.Millisecond))
	}
	checkNoLoss := func(t *testing.T, when string) {
		t.Helper()
		have, missing, err := m.inSidecars(acked)
		if err != nil {
			t.Fatal(err)
		}
		snap, err := m.persisted()
		if err != nil {
			t.Fatal(err)
		}
		var notPersisted []dep
		for _, d := range acked {
			if !slices.Contains(snap, d) {
				notPersisted = append(notPersisted, d)
			}
		}
		t.Logf("%s: %d of %d acknowledged dependencies in Sidecars, %d in the snapshot; lost: Sidecars %v, snapshot %v",
			when, len(have), len(acked), len(acked)-len(notPersisted), missing, notPersisted)
		if len(missing) > 0 || len(notPersisted) > 0 {
			t.Errorf("%s: lost %v (Sidecars) %v (snapshot)", when, missing, notPersisted)
		}
	}

	t.Run("handover on SIGTERM", func(t *testing.T) {
		learnAcked(t, leader, firstDeps)
		leader.proc().stop(t) // the supervisor starts it again after restartDelay
		nl, d, err := waitLeader(2*time.Minute, a, b)
		if err != nil {
			t.Fatal(err)
		}
		t.Logf("%s stopped (SIGTERM, lease released): %s serves ALS %s later", leader.name, nl.name, d.Round(time.Millisecond))
		leader = nl
		checkNoLoss(t, "after the SIGTERM handover")
		learnAcked(t, leader, secondDeps)
	})

	t.Run("handover on SIGKILL", func(t *testing.T) {
		// Mid-learning: the entries are sent and the leader killed at once,
		// so some may not be acknowledged yet; those are re-learned from
		// the next call (the caller still goes through the egress).
		if err := m.learn(leader.proc().alsAddr, thirdDeps...); err != nil {
			t.Fatal(err)
		}
		leader.proc().kill()
		nl, d, err := waitLeader(2*time.Minute, a, b)
		if err != nil {
			t.Fatal(err)
		}
		t.Logf("%s killed (SIGKILL, lease not released): %s serves ALS %s later (lease duration 15s)", leader.name, nl.name, d.Round(time.Millisecond))
		leader = nl
		checkNoLoss(t, "after the SIGKILL handover")
		have, _, _ := m.inSidecars(thirdDeps)
		t.Logf("sent right before the kill: %d of %d already acknowledged", len(have), len(thirdDeps))
		learnAcked(t, leader, thirdDeps) // the next calls
	})

	t.Run("API server outage", func(t *testing.T) {
		before := map[string]int{a.name: len(a.restarts()), b.name: len(b.restarts())}
		if err := m.learn(leader.proc().alsAddr, fourthDeps[:1]...); err != nil {
			t.Fatal(err)
		}
		stop := time.Now()
		if err := m.env.KillAPIServer(); err != nil {
			t.Fatal(err)
		}
		// Learning goes on during the outage: the leader keeps its graph
		// until it loses the lease.
		_ = m.learn(leader.proc().alsAddr, fourthDeps[1:]...)
		const outage = 30 * time.Second
		time.Sleep(outage)
		exited := map[string]int{a.name: len(a.restarts()) - before[a.name], b.name: len(b.restarts()) - before[b.name]}
		restart := time.Now()
		if err := m.env.StartAPIServer(); err != nil {
			t.Fatal(err)
		}
		up := time.Since(restart)
		nl, d, err := waitLeader(3*time.Minute, a, b)
		if err != nil {
			t.Fatal(err)
		}
		t.Logf("API server killed, down %s (controller process exits meanwhile: %v); kube-apiserver's own restart took %s (healthz); "+
			"%s leads and serves ALS %s after the restart began (%s after healthz)",
			outage, exited, up.Round(time.Millisecond), nl.name, time.Since(restart).Round(time.Millisecond), d.Round(time.Millisecond))
		leader = nl
		checkNoLoss(t, "after the outage")
		have, _, _ := m.inSidecars(fourthDeps)
		t.Logf("sent just before/during the outage: %d of %d kept (unacknowledged ones are re-learned from the next call)", len(have), len(fourthDeps))
		learnAcked(t, leader, fourthDeps)
		t.Logf("recovered: stop → dependencies learned again %s", time.Since(stop).Round(time.Millisecond))
		checkNoLoss(t, "at the end")
	})
}
