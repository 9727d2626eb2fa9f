package main

import (
	"bytes"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"

	"github.com/leanmesh/leanmesh/controller/manifests"
	"github.com/leanmesh/leanmesh/controller/release"
)

// runRender writes (or with -check, verifies) the plain manifests.
func runRender(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("render", flag.ContinueOnError)
	fs.SetOutput(stderr)
	out := fs.String("out", "envoyfilters", "directory to write the manifest sets into")
	istio := fs.String("istio-release", "", "Istio release from the version matrix (default: the matrix default)")
	check := fs.Bool("check", false, "write nothing; exit 1 if the files differ from what would be written")
	file := fs.String("f", "", "render this TelemetryPolicy file to stdout instead (dry run, the controller's validation)")
	root := fs.String("root-namespace", "istio-system", "Istio's root namespace (with -f)")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if *file != "" {
		return renderFile(*file, *root, stdout, stderr)
	}
	files, err := manifests.Files(release.Embedded(), *istio)
	if err != nil {
		fmt.Fprintln(stderr, "leanmesh render:", err)
		return 1
	}
	names := make([]string, 0, len(files))
	for n := range files {
		names = append(names, n)
	}
	sort.Strings(names)
	drift := 0
	for _, n := range names {
		p := filepath.Join(*out, filepath.FromSlash(n))
		if *check {
			got, err := os.ReadFile(p)
			if err != nil || !bytes.Equal(got, files[n]) {
				fmt.Fprintf(stderr, "out of date: %s\n", p)
				drift++
			}
			continue
		}
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			fmt.Fprintln(stderr, "leanmesh render:", err)
			return 1
		}
		if err := os.WriteFile(p, files[n], 0o644); err != nil {
			fmt.Fprintln(stderr, "leanmesh render:", err)
			return 1
		}
		fmt.Fprintln(stdout, "wrote", p)
	}
	if drift > 0 {
		fmt.Fprintf(stderr, "%d file(s) out of date: run make manifests\n", drift)
		return 1
	}
	return 0
}
