package lazyxdsctl

import (
	"context"
	"fmt"
	"strconv"
	"time"

	"github.com/prometheus/common/config"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/leanmesh/leanmesh/controller/api/v1alpha1"
	"github.com/leanmesh/leanmesh/controller/lazyxds"
	"github.com/leanmesh/leanmesh/controller/lazyxds/seed"
)

// Seeding from telemetry (spec.seedFromTelemetry). A policy's query runs on
// its own goroutine — when the policy appears or its spec changes, when the
// controller starts and every interval — and hands its edges to the flush
// goroutine, which feeds them to the graph: from there they are persisted and
// written like any learned dependency. Until a policy's first query of this
// process has finished (success or failure, bounded by its timeout), its
// workloads' Sidecar changes wait, so a newly lazy workload's first Sidecar
// already holds what it was calling; they keep their full config meanwhile.

// seedState is the flush goroutine's view of one policy's seeding.
type seedState struct {
	generation int64     // spec generation of the last query started
	running    bool      // a query is in flight
	done       bool      // a query of this process finished (gate lifted)
	next       time.Time // next periodic query
	lastQuery  time.Time
	lastOK     time.Time
	err        string
	edges      int // returned by the last successful query
	truncated  bool
	applied    lazyxds.SeedResult
}

// seedOutcome is what a query goroutine hands back.
type seedOutcome struct {
	key        types.NamespacedName
	generation int64
	res        seed.Result
	err        error
	at         time.Time
}

// scheduleSeeds starts the queries that are due and applies finished ones.
// It runs at the start of each flush, before Drain.
func (l *Loop) scheduleSeeds(ctx context.Context, now time.Time) {
	for {
		select {
		case o := <-l.seedDone:
			l.applySeed(o)
			continue
		default:
		}
		break
	}
	l.mu.Lock()
	var due []*v1alpha1.LazyXDS
	for key, p := range l.policies {
		st := l.seeds[key]
		if p.Spec.SeedFromTelemetry == nil || !p.DeletionTimestamp.IsZero() {
			if st != nil && !st.running {
				delete(l.seeds, key)
			}
			continue
		}
		if st == nil {
			st = &seedState{}
			l.seeds[key] = st
		}
		if st.running || (st.done && st.generation == p.Generation && now.Before(st.next)) {
			continue
		}
		st.running, st.generation = true, p.Generation
		due = append(due, p)
	}
	l.mu.Unlock()
	for _, p := range due {
		go l.runSeed(ctx, p)
	}
}

// seedGate reports whether a workload's Sidecar changes must wait for its
// policy's first query.
func (l *Loop) seedGate(k lazyxds.WorkloadKey) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	ws := l.workloads[k]
	if ws == nil || !ws.lazy() {
		return false
	}
	p := l.policies[ws.policy]
	if p == nil || p.Spec.SeedFromTelemetry == nil {
		return false
	}
	st := l.seeds[ws.policy]
	return st == nil || !st.done
}

func (l *Loop) runSeed(ctx context.Context, p *v1alpha1.LazyXDS) {
	key := types.NamespacedName{Namespace: p.Namespace, Name: p.Name}
	out := seedOutcome{key: key, generation: p.Generation}
	cfg, err := l.seedConfig(ctx, p)
	if err == nil {
		out.res, err = seed.Fetch(ctx, cfg, time.Now())
	}
	out.err, out.at = err, time.Now()
	select {
	case l.seedDone <- out:
	case <-ctx.Done():
	}
}

// applySeed feeds a finished query to the graph (flush goroutine).
func (l *Loop) applySeed(o seedOutcome) {
	l.mu.Lock()
	st := l.seeds[o.key]
	p := l.policies[o.key]
	if st != nil && (p == nil || p.Spec.SeedFromTelemetry == nil) {
		delete(l.seeds, o.key) // deleted or no longer seeding: a re-created policy starts over
	}
	l.mu.Unlock()
	if st == nil || p == nil || p.Spec.SeedFromTelemetry == nil {
		return
	}
	interval := seed.DefaultInterval
	if d := p.Spec.SeedFromTelemetry.Interval; d != nil && d.Duration > 0 {
		interval = d.Duration
	}
	var applied lazyxds.SeedResult
	if o.err == nil {
		// The policy's workloads, read first: handlers take l.mu then the
		// graph's lock, so the graph's callback must not take l.mu.
		mine := map[lazyxds.WorkloadKey]bool{}
		l.mu.Lock()
		for k, ws := range l.workloads {
			if ws.policy == o.key {
				mine[k] = true
			}
		}
		l.mu.Unlock()
		applied = l.graph.Seed(o.res.Edges, o.at, func(k lazyxds.WorkloadKey) bool { return mine[k] })
	}
	l.metrics.seedQuery(o.err, o.res, applied)
	if o.err != nil {
		l.opts.Logger.Error(o.err, "seeding from telemetry", "policy", o.key.String())
	} else {
		l.opts.Logger.Info("seeded from telemetry", "policy", o.key.String(), "edges", len(o.res.Edges), "added", applied.Added,
			"skipped", applied.Skipped(), "truncated", o.res.Truncated, "took", o.res.Took.Round(time.Millisecond))
	}
	l.mu.Lock()
	prevErr := st.err
	st.running, st.done, st.lastQuery, st.next = false, true, o.at, o.at.Add(interval)
	if o.generation != p.Generation {
		st.next = time.Time{} // the spec changed meanwhile: query again now
	}
	if o.err != nil {
		st.err = o.err.Error()
	} else {
		st.err, st.lastOK, st.edges, st.truncated, st.applied = "", o.at, len(o.res.Edges), o.res.Truncated, applied
	}
	l.statusDirty = true
	l.mu.Unlock()
	if o.err != nil && prevErr == "" {
		l.event(p, corev1.EventTypeWarning, v1alpha1.ReasonSeedQueryFailed, "Seed", o.err.Error())
	}
}

// seedConfig turns the policy's spec into a query, reading Secrets from the
// policy's namespace with the uncached reader (get only: the controller
// never lists or watches Secrets).
func (l *Loop) seedConfig(ctx context.Context, p *v1alpha1.LazyXDS) (seed.Config, error) {
	s := p.Spec.SeedFromTelemetry
	cfg := seed.Config{URL: s.Prometheus.URL, MaxEdges: int(s.MaxEdges)}
	if s.LookBack != nil {
		cfg.LookBack = s.LookBack.Duration
	}
	if s.Timeout != nil {
		cfg.Timeout = s.Timeout.Duration
	}
	if s.MinRate != "" {
		r, err := strconv.ParseFloat(s.MinRate, 64)
		if err != nil || r < 0 {
			return cfg, fmt.Errorf("seedFromTelemetry.minRate %q: not a non-negative number", s.MinRate)
		}
		cfg.MinRate = r
	}
	if p.Namespace == l.opts.RootNamespace {
		cfg.ExcludeNamespaces = append([]string{"kube-system", l.opts.RootNamespace}, p.Spec.NeverLazyNamespaces...)
	} else {
		cfg.Namespaces = []string{p.Namespace}
	}
	read := func(sel *v1alpha1.SecretKeySelector) (string, error) {
		var sec corev1.Secret
		if err := l.api.Get(ctx, client.ObjectKey{Namespace: p.Namespace, Name: sel.Name}, &sec); err != nil {
			return "", fmt.Errorf("seedFromTelemetry: Secret %s/%s: %w", p.Namespace, sel.Name, err)
		}
		v, ok := sec.Data[sel.Key]
		if !ok {
			return "", fmt.Errorf("seedFromTelemetry: Secret %s/%s has no key %q", p.Namespace, sel.Name, sel.Key)
		}
		return string(v), nil
	}
	ep := s.Prometheus
	if ep.BearerTokenSecret != nil {
		tok, err := read(ep.BearerTokenSecret)
		if err != nil {
			return cfg, err
		}
		cfg.HTTP.Authorization = &config.Authorization{Type: "Bearer", Credentials: config.Secret(tok)}
	}
	if ep.BasicAuth != nil {
		u, err := read(&ep.BasicAuth.Username)
		if err != nil {
			return cfg, err
		}
		pw, err := read(&ep.BasicAuth.Password)
		if err != nil {
			return cfg, err
		}
		cfg.HTTP.BasicAuth = &config.BasicAuth{Username: u, Password: config.Secret(pw)}
	}
	if t := ep.TLS; t != nil {
		cfg.HTTP.TLSConfig.ServerName, cfg.HTTP.TLSConfig.InsecureSkipVerify = t.ServerName, t.InsecureSkipVerify
		if t.CA != nil {
			v, err := read(t.CA)
			if err != nil {
				return cfg, err
			}
			cfg.HTTP.TLSConfig.CA = v
		}
		if (t.Cert == nil) != (t.Key == nil) {
			return cfg, fmt.Errorf("seedFromTelemetry.prometheus.tls: cert and key go together")
		}
		if t.Cert != nil {
			c, err := read(t.Cert)
			if err != nil {
				return cfg, err
			}
			k, err := read(t.Key)
			if err != nil {
				return cfg, err
			}
			cfg.HTTP.TLSConfig.Cert, cfg.HTTP.TLSConfig.Key = c, config.Secret(k)
		}
	}
	if err := cfg.HTTP.Validate(); err != nil {
		return cfg, fmt.Errorf("seedFromTelemetry.prometheus: %w", err)
	}
	return cfg, nil
}
