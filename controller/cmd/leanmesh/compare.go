package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"strings"
	"time"

	"github.com/leanmesh/leanmesh/controller/compare"
)

// runCompare exits 0 on a match, 1 on a mismatch, 2 on usage or read errors.
func runCompare(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("compare", flag.ContinueOnError)
	fs.SetOutput(stderr)
	istio := fs.String("istio", "", "Istio's exposition: a file, - for stdin, or an http(s) URL (e.g. http://pod:15090/stats/prometheus)")
	lean := fs.String("leanmesh", "", "leanmesh's exposition: a file, - for stdin, or an http(s) URL (e.g. http://pod:15095/stats/prometheus)")
	rel := fs.Float64("tolerance", 0, "allowed relative difference, e.g. 0.01 for 1% (scrapes are not simultaneous)")
	abs := fs.Float64("abs-tolerance", 0, "allowed absolute difference")
	prefixes := fs.String("prefix", "istio_", "comma-separated family name prefixes to compare")
	ignore := fs.String("ignore-labels", "", "comma-separated labels to drop before matching (series then summed)")
	mode := fs.String("mode", "auto", "the proxy's mode: LeanMesh or Shadow (only the families leanmesh records in it are compared; "+
		"the rest are Istio-only by design), auto to detect it (Shadow series are named leanmesh_shadow_istio_*), or all")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if *istio == "" || *lean == "" || *istio == "-" && *lean == "-" {
		fmt.Fprintln(stderr, "leanmesh compare: need -istio and -leanmesh (at most one of them -)")
		return 2
	}
	left, err := open(*istio)
	if err != nil {
		fmt.Fprintln(stderr, "leanmesh compare: istio:", err)
		return 2
	}
	defer left.Close()
	right, err := open(*lean)
	if err != nil {
		fmt.Fprintln(stderr, "leanmesh compare: leanmesh:", err)
		return 2
	}
	defer right.Close()
	var m compare.Mode
	switch strings.ToLower(*mode) {
	case "auto", "":
	case "leanmesh":
		m = compare.ModeLeanMesh
	case "shadow":
		m = compare.ModeShadow
	case "all":
		m = compare.ModeAll
	default:
		fmt.Fprintf(stderr, "leanmesh compare: -mode %q is not LeanMesh, Shadow, auto or all\n", *mode)
		return 2
	}
	rep, err := compare.Compare(left, right, compare.Options{
		Prefixes: split(*prefixes), IgnoreLabels: split(*ignore), RelTolerance: *rel, AbsTolerance: *abs, Mode: m,
	})
	if err != nil {
		fmt.Fprintln(stderr, "leanmesh compare:", err)
		return 2
	}
	rep.Write(stdout, "istio", "leanmesh")
	if !rep.OK() {
		return 1
	}
	return 0
}

func split(s string) []string {
	var out []string
	for _, f := range strings.Split(s, ",") {
		if f = strings.TrimSpace(f); f != "" {
			out = append(out, f)
		}
	}
	return out
}

// responseBody reads a scrape's body; Close closes it and ends the request's
// deadline.
type responseBody struct {
	resp   *http.Response
	cancel context.CancelFunc
}

func (b *responseBody) Read(p []byte) (int, error) { return b.resp.Body.Read(p) }

func (b *responseBody) Close() error {
	defer b.cancel()
	return b.resp.Body.Close()
}

func open(src string) (io.ReadCloser, error) {
	switch {
	case src == "-":
		return io.NopCloser(os.Stdin), nil
	case strings.HasPrefix(src, "http://") || strings.HasPrefix(src, "https://"):
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, src, nil)
		if err != nil {
			cancel()
			return nil, err
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			cancel()
			return nil, err
		}
		if resp.StatusCode != http.StatusOK {
			resp.Body.Close()
			cancel()
			return nil, fmt.Errorf("GET %s: %s", src, resp.Status)
		}
		return &responseBody{resp: resp, cancel: cancel}, nil
	default:
		return os.Open(src)
	}
}
