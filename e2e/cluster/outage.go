package cluster

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// KillAPIServer SIGKILLs kube-apiserver and leaves etcd running: an API
// server outage as the controllers see it (connections refused, watches
// broken, leases not renewed). A crash rather than a graceful stop: with
// watches open, kube-apiserver's SIGTERM shutdown outlived envtest's 60 s
// stop timeout on the loaded test machine. StartAPIServer ends the outage.
func (e *Env) KillAPIServer() error {
	if e.testEnv == nil || e.testEnv.ControlPlane.APIServer == nil {
		return errors.New("no API server")
	}
	pid := 0
	for _, p := range e.Processes() {
		cmdline, _ := os.ReadFile(filepath.Join("/proc", strconv.Itoa(p), "cmdline"))
		if strings.Contains(string(cmdline), "kube-apiserver") {
			pid = p
		}
	}
	if pid == 0 {
		return errors.New("kube-apiserver process not found")
	}
	if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
		return fmt.Errorf("killing kube-apiserver (pid %d): %w", pid, err)
	}
	for deadline := time.Now().Add(30 * time.Second); ; {
		if _, err := os.Stat(filepath.Join("/proc", strconv.Itoa(pid))); os.IsNotExist(err) || isZombie(pid) {
			break
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("kube-apiserver (pid %d) still running 30s after SIGKILL", pid)
		}
		time.Sleep(10 * time.Millisecond)
	}
	// Let envtest see the exit, so StartAPIServer starts a new process.
	if err := e.testEnv.ControlPlane.APIServer.Stop(); err != nil {
		return fmt.Errorf("after killing kube-apiserver: %w", err)
	}
	e.logf("kube-apiserver killed (pid %d); etcd keeps running", pid)
	return nil
}

// StartAPIServer starts kube-apiserver again after KillAPIServer, on the
// same address with the same serving certificates and client CA (envtest
// keeps them in the cert dir), so existing kubeconfigs and clients
// reconnect. It returns once /healthz answers.
func (e *Env) StartAPIServer() error {
	if e.testEnv == nil || e.testEnv.ControlPlane.APIServer == nil {
		return errors.New("no API server")
	}
	start := time.Now()
	if err := e.testEnv.ControlPlane.APIServer.Start(); err != nil {
		return fmt.Errorf("restarting kube-apiserver: %w", err)
	}
	e.logf("kube-apiserver restarted in %s", time.Since(start).Round(time.Millisecond))
	return nil
}
