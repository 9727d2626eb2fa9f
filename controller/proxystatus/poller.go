package proxystatus

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"os"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/go-logr/logr"
)

// Poller reads /debug/syncz from each istiod (one per revision) every
// Interval and keeps the latest view per pod. A change of a pod's LDS
// ACK/NACK state or version is reported to OnChange, so the policies
// selecting it are reconciled at once rather than at the next resync.
type Poller struct {
	// URLs are istiods' debug bases, e.g. http://istiod.istio-system.svc:15014
	// (istiod serves /debug/* on its monitoring port).
	URLs []string
	// TokenPath, when set, is a service-account token sent as a bearer
	// token: istiod authenticates non-loopback debug requests like xDS (the
	// istio-ca audience) and, with ENABLE_DEBUG_ENDPOINT_AUTH (the default),
	// serves syncz only to the system namespace and the namespaces listed in
	// DEBUG_ENDPOINT_AUTH_ALLOWED_NAMESPACES.
	TokenPath string
	// Interval between polls (default 2s: a NACK is on the policy within
	// Interval + one reconcile).
	Interval time.Duration
	Client   *http.Client
	// OnChange receives the pods whose state changed in a poll.
	OnChange func(changed []Proxy)
	Log      logr.Logger

	mu     sync.RWMutex
	byPod  map[string]Proxy // ns/pod → proxy
	polled bool
	err    error
}

// Start polls until ctx ends (a controller-runtime Runnable).
func (p *Poller) Start(ctx context.Context) error {
	interval := p.Interval
	if interval <= 0 {
		interval = 2 * time.Second
	}
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		p.Poll(ctx)
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
	}
}

// NeedLeaderElection: only the leader reconciles, so only it needs the view.
func (p *Poller) NeedLeaderElection() bool { return true }

// Poll reads every istiod once and publishes the result.
func (p *Poller) Poll(ctx context.Context) {
	next := map[string]Proxy{}
	var errs []error
	for _, u := range p.URLs {
		proxies, err := p.fetch(ctx, u)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		for _, px := range proxies {
			next[px.Namespace+"/"+px.Pod] = px
		}
	}
	err := errors.Join(errs...)
	p.mu.Lock()
	prev := p.byPod
	if err != nil && len(next) == 0 {
		// Keep the last view rather than forget every NACK on one failed read.
		p.err = err
		p.mu.Unlock()
		p.Log.V(1).Info("reading istiod's proxy status failed", "error", err.Error())
		return
	}
	p.byPod, p.polled, p.err = next, true, err
	p.mu.Unlock()

	var changed []Proxy
	for k, px := range next {
		if old, ok := prev[k]; !ok || old.ListenerError != px.ListenerError || old.IstioVersion != px.IstioVersion || old.ACKState() != px.ACKState() {
			changed = append(changed, px)
		}
	}
	for k, px := range prev {
		if _, ok := next[k]; !ok {
			changed = append(changed, px)
		}
	}
	if len(changed) > 0 && p.OnChange != nil {
		sort.Slice(changed, func(i, j int) bool { return changed[i].ID < changed[j].ID })
		p.OnChange(changed)
	}
}

func (p *Poller) fetch(ctx context.Context, base string) ([]Proxy, error) {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, strings.TrimSuffix(base, "/")+"/debug/syncz", nil)
	if err != nil {
		return nil, err
	}
	if p.TokenPath != "" {
		tok, err := os.ReadFile(p.TokenPath) // re-read: projected tokens rotate
		if err != nil {
			return nil, err
		}
		req.Header.Set("Authorization", "Bearer "+strings.TrimSpace(string(tok)))
	}
	c := p.Client
	if c == nil {
		c = http.DefaultClient
	}
	resp, err := c.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("%s: %s", req.URL, resp.Status)
	}
	return ParseSyncz(resp.Body, base)
}

// Lookup returns istiod's view of a pod's proxy.
func (p *Poller) Lookup(ns, pod string) (Proxy, bool) {
	p.mu.RLock()
	defer p.mu.RUnlock()
	px, ok := p.byPod[ns+"/"+pod]
	return px, ok
}

// Known reports whether a poll succeeded, and the last error if any.
func (p *Poller) Known() (bool, error) {
	p.mu.RLock()
	defer p.mu.RUnlock()
	return p.polled, p.err
}
