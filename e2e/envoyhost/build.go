package envoyhost

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
)

// envoyModule is the SDK module whose api.h the host compiles against.
const envoyModule = "github.com/envoyproxy/envoy"

// RepoRoot returns the repository root (the directory holding go.mod).
func RepoRoot() (string, error) {
	_, file, _, ok := runtime.Caller(0)
	if ok {
		dir := filepath.Dir(file)
		for d := dir; d != filepath.Dir(d); d = filepath.Dir(d) {
			if _, err := os.Stat(filepath.Join(d, "go.mod")); err == nil {
				return d, nil
			}
		}
	}
	out, err := exec.Command("go", "env", "GOMOD").Output()
	if err != nil || strings.TrimSpace(string(out)) == "" {
		return "", fmt.Errorf("envoyhost: cannot find the repository root")
	}
	return filepath.Dir(strings.TrimSpace(string(out))), nil
}

func run(dir string, name string, args ...string) error {
	cmd := exec.Command(name, args...)
	cmd.Dir = dir
	var out bytes.Buffer
	cmd.Stdout = &out
	cmd.Stderr = &out
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out.String())
	}
	return nil
}

// APIInclude returns the directory of the SDK's api.h for the pinned
// envoy module version (from the module cache; no network needed).
func APIInclude(root string) (string, error) {
	cmd := exec.Command("go", "list", "-m", "-f", "{{.Dir}}", envoyModule)
	cmd.Dir = root
	out, err := cmd.Output()
	if err != nil {
		return "", fmt.Errorf("envoyhost: go list -m %s: %v", envoyModule, err)
	}
	return filepath.Join(strings.TrimSpace(string(out)), "contrib", "golang", "common", "go", "api"), nil
}

// BuildHost compiles e2e/envoyhost/host.c (which includes the other .c parts) into out with the system gcc
// (same command as host.mk).
func BuildHost(out string) error {
	root, err := RepoRoot()
	if err != nil {
		return err
	}
	inc, err := APIInclude(root)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Dir(out), 0o755); err != nil {
		return err
	}
	return run(root, "gcc", "-O2", "-g", "-Wall", "-rdynamic", "-I"+inc, "-o", out,
		filepath.Join(root, "e2e", "envoyhost", "host.c"), "-ldl", "-lpthread")
}

// BuildPlugin builds a Go extension main package (e.g.
// "./e2e/envoyhost/plugins/noop") as a c-shared library at out.
func BuildPlugin(pkg, out string) error {
	root, err := RepoRoot()
	if err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Dir(out), 0o755); err != nil {
		return err
	}
	cmd := exec.Command("go", "build", "-buildmode=c-shared", "-o", out, pkg)
	cmd.Dir = root
	cmd.Env = append(os.Environ(), "CGO_ENABLED=1")
	var buf bytes.Buffer
	cmd.Stdout = &buf
	cmd.Stderr = &buf
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("go build -buildmode=c-shared %s: %v\n%s", pkg, err, buf.String())
	}
	return nil
}
