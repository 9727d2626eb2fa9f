package hostile

import (
	"slices"
	"testing"
	"time"

	"github.com/leanmesh/leanmesh/controller/lazyxds/als"
	"github.com/leanmesh/leanmesh/e2e/soak"
)

// TestSoakController runs the real controller binary (supervised, as the
// kubelet would) against a real kube-apiserver for LEANMESH_SOAK while an
// attacker floods its ALS port (huge messages, streams over the limit,
// distinct names) and an honest egress keeps teaching dependencies; the
// controller is restarted (SIGTERM) every fifth of the run. Every
// interval it prints the controller's RSS, peak RSS, Go heap, /metrics
// size, refusals and learned dependencies, and checks none was lost.
func TestSoakController(t *testing.T) {
	total := soak.Duration(t)
	interval := soak.Interval(total)
	m := newMesh(t)
	r := supervise(t, m.env, "soak", "--lazyxds-als-plaintext")
	if _, _, err := waitLeader(3*time.Minute, r); err != nil {
		t.Fatal(err)
	}
	var all []dep
	for _, a := range shopWorkloads {
		for _, b := range shopWorkloads {
			if a.Name != b.Name {
				all = append(all, dep{a.Name, b.Name})
			}
		}
	}
	huge := hugeMessage(15 << 20)
	atBudget := hugeMessage(als.DefaultMaxMessageBytes - 4<<10)
	var learned []dep
	var maxRSS uint64
	start, next, nextRestart := time.Now(), time.Now(), time.Now().Add(total/5)
	for round := 0; time.Since(start) < total; round++ {
		p := r.proc()
		if !serving(p.alsAddr) {
			if _, _, err := waitLeader(2*time.Minute, r); err != nil {
				t.Fatal(err)
			}
			p = r.proc()
		}
		a := newAttacker()
		a.streams(p.alsAddr, plaintext, 2, 12, oneEach(huge), 2*time.Second)
		a.streams(p.alsAddr, plaintext, 4, 100, oneEach(atBudget), time.Second)
		a.streams(p.alsAddr, plaintext, 4, 4, distinctNames(20), 2*time.Second)
		a.close()
		// Honest learning: one new dependency per round, then again from the start.
		d := all[round%len(all)]
		if err := m.learn(p.alsAddr, d); err == nil && !slices.Contains(learned, d) {
			if _, err := m.waitSidecars([]dep{d}, time.Minute); err != nil {
				t.Errorf("round %d: %s not learned: %v", round, d, err)
			} else {
				learned = append(learned, d)
			}
		}
		if time.Now().After(nextRestart) {
			nextRestart = time.Now().Add(total / 5)
			p.stop(t) // the supervisor starts it again
		}
		if time.Now().Before(next) {
			continue
		}
		next = time.Now().Add(interval)
		p = r.proc()
		rss, hwm, err := p.memory()
		if err != nil {
			continue // between restarts
		}
		maxRSS = max(maxRSS, hwm)
		fams, size, err := p.scrape()
		if err != nil {
			continue
		}
		_, missing, err := m.inSidecars(learned)
		if err != nil {
			t.Fatal(err)
		}
		t.Logf("%6s round %4d: controller RSS %s (peak %s), Go heap %s, /metrics %6d B; refused %5.0f; learned %2d, lost %d; restarts %d",
			time.Since(start).Round(time.Second), round, mib(rss), mib(hwm), mib(uint64(value(fams, "go_memstats_heap_inuse_bytes", nil))),
			size, value(fams, "leanmesh_lazyxds_als_refused_total", nil), len(learned), len(missing), len(r.restarts()))
		if len(missing) > 0 {
			t.Errorf("lost %v", missing)
		}
		if hwm > rssBudget {
			t.Errorf("peak RSS %s over the budget %s", mib(hwm), mib(rssBudget))
		}
	}
	t.Logf("soak %s: peak controller RSS %s (budget %s, chart limit %s); %d dependencies learned, none lost; %d restarts",
		total, mib(maxRSS), mib(rssBudget), mib(chartMemoryLimit), len(learned), len(r.restarts()))
}
