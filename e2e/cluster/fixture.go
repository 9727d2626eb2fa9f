package cluster

import (
	"context"
	"fmt"
	"strings"
	"testing"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
)

// The set-up most tests on a real istiod share, with failures failing the
// test: one control plane, its namespaces, workloads and their proxies.

// StartIstiodT is StartT plus one istiod (default options) and the given
// namespaces.
func StartIstiodT(t testing.TB, ctx context.Context, opts Options, namespaces ...string) (*Env, *Istiod) {
	t.Helper()
	env := StartT(t, opts)
	istiod, err := env.StartIstiod(ctx, IstiodOptions{})
	if err != nil {
		t.Fatal(err)
	}
	for _, ns := range namespaces {
		if err := env.CreateNamespace(ctx, ns, nil); err != nil {
			t.Fatal(err)
		}
	}
	return env, istiod
}

// WorkloadT is CreateWorkload for tests.
func (e *Env) WorkloadT(t testing.TB, ctx context.Context, w Workload) *WorkloadObjects {
	t.Helper()
	o, err := e.CreateWorkload(ctx, w)
	if err != nil {
		t.Fatal(err)
	}
	return o
}

// ConnectT is ConnectSidecar to this istiod for tests; the connection closes
// when the test ends.
func (i *Istiod) ConnectT(t testing.TB, ctx context.Context, opts SidecarOptions) *Sidecar {
	t.Helper()
	sc, err := ConnectSidecar(ctx, i.XDSAddr, opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := sc.Close(); err != nil {
			t.Errorf("closing %s's ADS connection: %v", opts.PodName, err)
		}
	})
	return sc
}

// GatewayFor returns options impersonating a gateway pod (node type router).
func GatewayFor(o *WorkloadObjects) SidecarOptions {
	opts := SidecarFor(o)
	opts.Router = true
	return opts
}

// Route is one server of an ingress Gateway and the Service port its
// VirtualService sends the server's traffic to.
type Route struct {
	Port     int32  // the gateway's port
	Protocol string // "HTTP" or "TCP"
	To       *WorkloadObjects
	ToPort   int32
}

// CreateGateway creates in ns a Gateway named name on the pods labelled
// istio=<istio> (e.g. ingressgateway), one server (all hosts) per route, and a
// VirtualService of the same name bound to it that sends each server's
// traffic to its route's workload.
func (e *Env) CreateGateway(ctx context.Context, ns, name, istio string, routes ...Route) error {
	var servers, httpRoutes, tcpRoutes []any
	for _, r := range routes {
		servers = append(servers, map[string]any{"hosts": []any{"*"},
			"port": map[string]any{"number": int64(r.Port), "name": fmt.Sprintf("%s-%d", strings.ToLower(r.Protocol), r.Port), "protocol": r.Protocol}})
		route := map[string]any{"match": []any{map[string]any{"port": int64(r.Port)}},
			"route": []any{map[string]any{"destination": map[string]any{"host": r.To.Workload.Host(), "port": map[string]any{"number": int64(r.ToPort)}}}}}
		switch r.Protocol {
		case "HTTP":
			httpRoutes = append(httpRoutes, route)
		case "TCP":
			tcpRoutes = append(tcpRoutes, route)
		default:
			return fmt.Errorf("gateway %s/%s: protocol %q, want HTTP or TCP", ns, name, r.Protocol)
		}
	}
	vs := map[string]any{"hosts": []any{"*"}, "gateways": []any{name}}
	if httpRoutes != nil {
		vs["http"] = httpRoutes
	}
	if tcpRoutes != nil {
		vs["tcp"] = tcpRoutes
	}
	for _, o := range []map[string]any{
		{"apiVersion": "networking.istio.io/v1", "kind": "Gateway", "metadata": map[string]any{"name": name, "namespace": ns},
			"spec": map[string]any{"selector": map[string]any{"istio": istio}, "servers": servers}},
		{"apiVersion": "networking.istio.io/v1", "kind": "VirtualService", "metadata": map[string]any{"name": name, "namespace": ns},
			"spec": vs},
	} {
		if err := e.Client.Create(ctx, &unstructured.Unstructured{Object: o}); err != nil {
			return fmt.Errorf("create %s %s/%s: %w", o["kind"], ns, name, err)
		}
	}
	return nil
}
