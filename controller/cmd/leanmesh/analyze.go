package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	"k8s.io/apimachinery/pkg/runtime"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/leanmesh/leanmesh/controller/api/v1alpha1"
	"github.com/leanmesh/leanmesh/controller/install"
	"github.com/leanmesh/leanmesh/controller/proxystatus"
	"github.com/leanmesh/leanmesh/controller/release"
	"github.com/leanmesh/leanmesh/controller/render"
	"github.com/leanmesh/leanmesh/controller/scope"
)

// runAnalyze: `leanmesh analyze [-n ns]` prints, per injected pod, which
// policy governs it (Istio's Telemetry API precedence, controller/scope),
// whether it carries the library that policy needs, the Istio version and
// LDS ACK state istiod reports for its proxy, and whether its scrape
// target answers; then the policies that do not apply and why.
func runAnalyze(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("analyze", flag.ContinueOnError)
	fs.SetOutput(stderr)
	ns := fs.String("n", "", "namespace to analyze (default: the whole mesh)")
	root := fs.String("root-namespace", "istio-system", "Istio's config root namespace")
	istiod := fs.String("istiod-debug-url", "", "comma-separated istiod debug bases (e.g. http://localhost:15014 after kubectl port-forward): proxy versions and ACK/NACK")
	scrape := fs.Bool("scrape", false, "GET each pod's exposition listener (needs a route to pod IPs, e.g. run in the cluster)")
	timeout := fs.Duration("timeout", 30*time.Second, "overall deadline")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	scheme := runtime.NewScheme()
	for _, add := range []func(*runtime.Scheme) error{clientgoscheme.AddToScheme, v1alpha1.AddToScheme} {
		if err := add(scheme); err != nil {
			fmt.Fprintln(stderr, err)
			return 1
		}
	}
	cfg, err := ctrl.GetConfig()
	if err != nil {
		fmt.Fprintln(stderr, "leanmesh analyze:", err)
		return 1
	}
	c, err := client.New(cfg, client.Options{Scheme: scheme})
	if err != nil {
		fmt.Fprintln(stderr, "leanmesh analyze:", err)
		return 1
	}
	ctx, cancel := context.WithTimeout(context.Background(), *timeout)
	defer cancel()
	a := analyzer{c: c, root: *root, ns: *ns, matrix: release.Embedded()}
	if *istiod != "" {
		p := &proxystatus.Poller{URLs: strings.Split(*istiod, ",")}
		p.Poll(ctx)
		if known, err := p.Known(); !known {
			fmt.Fprintln(stderr, "leanmesh analyze: reading istiod:", err)
			return 1
		}
		a.proxies = p
	}
	if *scrape {
		a.probe = httpProbe
	}
	if err := a.run(ctx, stdout); err != nil {
		fmt.Fprintln(stderr, "leanmesh analyze:", err)
		return 1
	}
	return 0
}

type analyzer struct {
	c       client.Reader
	root    string
	ns      string
	matrix  release.Matrix
	proxies install.ProxyView
	// probe GETs a scrape target and says how it answered.
	probe func(ctx context.Context, url string) string
}

func (a *analyzer) run(ctx context.Context, w io.Writer) error {
	var pl v1alpha1.TelemetryPolicyList
	if err := a.c.List(ctx, &pl); err != nil {
		return err
	}
	var pods corev1.PodList
	var opts []client.ListOption
	if a.ns != "" {
		opts = append(opts, client.InNamespace(a.ns))
	}
	if err := a.c.List(ctx, &pods, opts...); err != nil {
		return err
	}
	res := scope.New(a.root, pl.Items)
	byKey := map[scope.Key]*v1alpha1.TelemetryPolicy{}
	for i := range pl.Items {
		byKey[scope.Key{Namespace: pl.Items[i].Namespace, Name: pl.Items[i].Name}] = &pl.Items[i]
	}
	sort.Slice(pods.Items, func(i, j int) bool {
		a, b := pods.Items[i], pods.Items[j]
		return a.Namespace+"/"+a.Name < b.Namespace+"/"+b.Name
	})
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "POD\tPOLICY\tMODE\tLIBRARY\tPROXY\tLDS\tSCRAPE")
	for i := range pods.Items {
		pod := &pods.Items[i]
		if _, injected := pod.Annotations["sidecar.istio.io/status"]; !injected && pod.Labels["security.istio.io/tlsMode"] == "" {
			continue
		}
		row := []string{pod.Namespace + "/" + pod.Name, "-", "Istio", "-", "-", "-", "-"}
		var spec v1alpha1.TelemetryPolicySpec
		var rel release.Release
		key, ok := res.Governor(scope.Pod{Namespace: pod.Namespace, Name: pod.Name, Labels: pod.Labels})
		if ok {
			p := byKey[key]
			spec = render.Defaults(p.Spec)
			row[1], row[2] = key.String(), string(spec.Mode)
			rel, _ = a.matrix.Find(spec.IstioRelease)
			switch lib := pod.Labels[v1alpha1.LabelEnvoyVersion]; {
			case spec.Mode == v1alpha1.ModeIstio:
				row[3] = "not needed"
			case lib == rel.Envoy:
				row[3] = "ok (" + lib + ")"
			case lib == "":
				row[3] = "MISSING (want " + rel.Envoy + "): Istio's telemetry"
			default:
				row[3] = "MISMATCH " + lib + " (want " + rel.Envoy + "): Istio's telemetry"
			}
		}
		if a.proxies != nil {
			if px, found := a.proxies.Lookup(pod.Namespace, pod.Name); found {
				row[4] = px.IstioVersion
				if ok && spec.Mode != v1alpha1.ModeIstio {
					pv := spec.ProxyVersion
					if pv == "" {
						pv = rel.ProxyVersionRegex()
					}
					if re, err := regexp.Compile(pv); err == nil && !re.MatchString(px.IstioVersion) {
						row[4] += " SKEW (policy matches " + pv + "): Istio's telemetry"
					}
				}
				row[5] = px.ACKState()
				if px.Rejected() {
					row[5] += ": " + truncateText(px.ListenerError, 120)
				}
			} else {
				row[4], row[5] = "not connected", "-"
			}
		}
		if a.probe != nil && pod.Status.PodIP != "" {
			port, path := int32(15095), "/stats/prometheus"
			if ok {
				port, path = spec.Exposition.Port, spec.Exposition.Path
			}
			row[6] = a.probe(ctx, "http://"+net.JoinHostPort(pod.Status.PodIP, strconv.Itoa(int(port)))+path)
		}
		fmt.Fprintln(tw, strings.Join(row, "\t"))
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	// Policies that do not apply, and why.
	var notes []string
	for i := range pl.Items {
		p := &pl.Items[i]
		if a.ns != "" && p.Namespace != a.ns && p.Namespace != a.root {
			continue
		}
		k := scope.Key{Namespace: p.Namespace, Name: p.Name}
		if cs := res.Conflicts(k); len(cs) > 0 {
			names := make([]string, len(cs))
			for j, c := range cs {
				names[j] = c.String()
			}
			notes = append(notes, fmt.Sprintf("policy %s: Conflict with older %s of the same scope; it applies to nothing", k, strings.Join(names, ", ")))
		}
		for _, t := range []string{v1alpha1.ConditionReady, v1alpha1.ConditionTelemetryCarriedOver, v1alpha1.ConditionConfigAccepted, v1alpha1.ConditionProxyVersionMatch} {
			if c := meta.FindStatusCondition(p.Status.Conditions, t); c != nil && c.Status == "False" {
				notes = append(notes, fmt.Sprintf("policy %s: %s=False %s: %s", k, t, c.Reason, truncateText(c.Message, 240)))
			}
		}
	}
	if len(notes) > 0 {
		fmt.Fprintln(w)
		for _, n := range notes {
			fmt.Fprintln(w, n)
		}
	}
	return nil
}

func httpProbe(ctx context.Context, url string) string {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return "error: " + err.Error()
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return "DOWN: " + err.Error()
	}
	defer resp.Body.Close()
	n, _ := io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<20))
	return fmt.Sprintf("%s (%d bytes)", resp.Status, n)
}

func truncateText(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n-3] + "..."
}
