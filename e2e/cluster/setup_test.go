package cluster

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// dpkgFrontendLock is the lock every apt-get, apt and unattended-upgrade run
// holds: apt-pkg's debSystem::Lock takes it with GetLock, an fcntl F_SETLK
// write lock over the whole file (apt-pkg/contrib/fileutl.cc), before dpkg's
// own /var/lib/dpkg/lock.
const dpkgFrontendLock = "/var/lib/dpkg/lock-frontend"

// holdAptLock takes the dpkg frontend lock the way apt does, so that to apt
// this test process is another package manager at work. The lock belongs to
// the process (fcntl), so a child's apt-get really waits for it. A lock
// already held by a real apt run is waited for first.
func holdAptLock(t *testing.T) (release func()) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skipf("taking %s needs root (apt itself runs as root here)", dpkgFrontendLock)
	}
	if _, err := exec.LookPath("apt-get"); err != nil {
		t.Skip("no apt-get: not a Debian-family machine")
	}
	f, err := os.OpenFile(dpkgFrontendLock, os.O_RDWR|os.O_CREATE, 0o640)
	if err != nil {
		t.Fatal(err)
	}
	lk := syscall.Flock_t{Type: syscall.F_WRLCK, Whence: io.SeekStart}
	deadline := time.Now().Add(10 * time.Minute)
	for {
		err = syscall.FcntlFlock(f.Fd(), syscall.F_SETLK, &lk)
		if err == nil {
			break
		}
		if !errors.Is(err, syscall.EAGAIN) && !errors.Is(err, syscall.EACCES) || time.Now().After(deadline) {
			f.Close()
			t.Fatalf("locking %s: %v", dpkgFrontendLock, err)
		}
		time.Sleep(time.Second) // a real apt run holds it: wait our turn
	}
	var once sync.Once
	release = func() {
		once.Do(func() {
			unlock := syscall.Flock_t{Type: syscall.F_UNLCK, Whence: io.SeekStart}
			_ = syscall.FcntlFlock(f.Fd(), syscall.F_SETLK, &unlock)
			f.Close()
		})
	}
	t.Cleanup(release)
	return release
}

// runSetup starts `build-binaries.sh debian` with apt forced to run
// (LEANMESH_APT_ALWAYS: the packages are installed already, so without it the
// script would not call apt at all), sending each output line to lines.
func runSetup(t *testing.T, ctx context.Context, aptTimeout string, lines chan<- string) *exec.Cmd {
	t.Helper()
	script, err := BuildScript()
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.CommandContext(ctx, "bash", script, "debian")
	cmd.Env = append(os.Environ(), "LEANMESH_APT_ALWAYS=1", "APT_LOCK_TIMEOUT="+aptTimeout,
		"LEANMESH_CACHE="+t.TempDir()) // its own artifact locks: never waits for another caller's
	pr, pw := io.Pipe()
	cmd.Stdout, cmd.Stderr = pw, pw
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		sc := bufio.NewScanner(pr)
		for sc.Scan() {
			lines <- sc.Text()
		}
		close(lines)
	}()
	go func() { _ = cmd.Wait(); pw.Close() }()
	return cmd
}

// TestSetupWaitsForDpkgLock: with another process holding the dpkg lock, the
// set-up script's apt-get waits (saying which lock and which process), and
// succeeds once it is released; with a lock held past APT_LOCK_TIMEOUT it
// fails naming the holder instead of hanging or blaming the package lists.
func TestSetupWaitsForDpkgLock(t *testing.T) {
	t.Run("waits and succeeds", func(t *testing.T) {
		const hold = 6 * time.Second
		release := holdAptLock(t)
		holder := fmt.Sprintf("held by process %d", os.Getpid())
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
		defer cancel()
		lines := make(chan string, 100)
		start := time.Now()
		cmd := runSetup(t, ctx, "300", lines)
		var out []string
		var waitingAt, releasedAt time.Duration
		var aptWaiting bool
		timer := time.NewTimer(time.Minute)
		defer timer.Stop()
		tick := time.NewTicker(100 * time.Millisecond)
		defer tick.Stop()
	read:
		for {
			select {
			case l, ok := <-lines:
				if !ok {
					break read
				}
				out = append(out, l)
				if waitingAt == 0 && strings.Contains(l, "waiting for the apt/dpkg lock, "+dpkgFrontendLock+" "+holder) {
					// The script saw the holder.
					waitingAt = time.Since(start)
				}
			case <-tick.C:
				// apt's own "Waiting for cache lock" line reaches the pipe
				// only when its wait ends, so the hold is timed from the
				// moment apt-get runs (it tries the lock before anything
				// else): on a busy machine that may be seconds after the
				// script's line.
				if waitingAt != 0 && releasedAt == 0 && !aptWaiting && processRunning("apt-get") {
					aptWaiting = true
					timer.Reset(hold)
				}
			case <-timer.C:
				if waitingAt == 0 {
					release()
					t.Fatalf("the script never said it was waiting for %s (%s) within a minute:\n%s", dpkgFrontendLock, holder, strings.Join(out, "\n"))
				}
				if releasedAt == 0 {
					release()
					releasedAt = time.Since(start)
				}
			}
		}
		done := time.Since(start)
		all := strings.Join(out, "\n")
		if cmd.ProcessState == nil || !cmd.ProcessState.Success() {
			t.Fatalf("build-binaries.sh debian failed (%v) after %s:\n%s", cmd.ProcessState, done, all)
		}
		if releasedAt == 0 {
			t.Fatalf("the script finished after %s while the lock was still held (it did not wait):\n%s", done, all)
		}
		// apt's own wait, naming this process, passed through.
		if !strings.Contains(all, "Waiting for cache lock: Could not get lock "+dpkgFrontendLock+". It is "+holder) {
			t.Errorf("apt's 'Waiting for cache lock' line naming %s is missing:\n%s", holder, all)
		}
		for _, want := range []string{"0 newly installed", "debian: etcd"} {
			if !strings.Contains(all, want) {
				t.Errorf("output lacks %q:\n%s", want, all)
			}
		}
		t.Logf("waiting reported after %s, lock released at %s, set-up done at %s", waitingAt.Round(time.Millisecond),
			releasedAt.Round(time.Millisecond), done.Round(time.Millisecond))
	})

	t.Run("gives up with the holder's name", func(t *testing.T) {
		holdAptLock(t) // held past the 2 s timeout
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		defer cancel()
		lines := make(chan string, 100)
		cmd := runSetup(t, ctx, "2", lines)
		var out []string
		for l := range lines {
			out = append(out, l)
		}
		all := strings.Join(out, "\n")
		if cmd.ProcessState == nil || cmd.ProcessState.Success() {
			t.Fatalf("build-binaries.sh debian succeeded while the dpkg lock was held past APT_LOCK_TIMEOUT:\n%s", all)
		}
		want := fmt.Sprintf("held the lock for more than 2s (%s held by process %d", dpkgFrontendLock, os.Getpid())
		if !strings.Contains(all, want) {
			t.Errorf("the error does not say %q:\n%s", want, all)
		}
		if strings.Contains(all, "apt-get update") {
			t.Errorf("a lock timeout must not be taken for stale package lists (apt-get update ran):\n%s", all)
		}
	})
}

// TestSetupFinishesInterruptedDpkg: a set-up stopped mid-install (Ctrl-C, a
// killed CI job) leaves dpkg "interrupted", and apt then refuses every install
// until `dpkg --configure -a`. The script runs it, as apt asks, and installs
// again; when dpkg itself fails it stops with what to run by hand. apt-get and
// dpkg are stand-ins on PATH that keep dpkg's state in a file and print what
// apt 2.6 prints (the real sequence was run in a fresh Debian root: see
// README.md).
func TestSetupFinishesInterruptedDpkg(t *testing.T) {
	script, err := BuildScript()
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name          string
		configureFail bool
		wantOK        bool
		want          []string
	}{
		{name: "configures and installs", wantOK: true, want: []string{
			"an earlier install was interrupted; running dpkg --configure -a",
			"dpkg --configure -a: Setting up etcd-server",
			"apt-get install: 0 upgraded, 0 newly installed",
			"debian: etcd",
		}},
		{name: "dpkg fails", configureFail: true, want: []string{
			"dpkg --configure -a: dpkg: error processing package etcd-server (--configure)",
			"ERROR: dpkg --configure -a failed; run it by hand, then re-run",
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			bin, state := t.TempDir(), filepath.Join(t.TempDir(), "interrupted")
			if err := os.WriteFile(state, nil, 0o644); err != nil {
				t.Fatal(err)
			}
			configure := "echo 'Setting up etcd-server (3.4.23-4+b6) ...'; rm " + state
			if tc.configureFail {
				configure = "echo 'dpkg: error processing package etcd-server (--configure):'; exit 1"
			}
			for name, body := range map[string]string{
				"apt-get": `[ -e ` + state + ` ] && { echo "E: dpkg was interrupted, you must manually run 'dpkg --configure -a' to correct the problem."; exit 100; }
echo "0 upgraded, 0 newly installed, 0 to remove and 0 not upgraded."`,
				"dpkg": `[ "$*" = "--configure -a" ] || exit 2
` + configure,
				"sudo": `exec "$@"`,
			} {
				if err := os.WriteFile(filepath.Join(bin, name), []byte("#!/bin/sh\n"+body+"\n"), 0o755); err != nil {
					t.Fatal(err)
				}
			}
			cmd := exec.Command("bash", script, "debian")
			cmd.Env = append(os.Environ(), "PATH="+bin+":"+os.Getenv("PATH"), "LEANMESH_APT_ALWAYS=1",
				"APT_LOCK_TIMEOUT=5", "LEANMESH_CACHE="+t.TempDir())
			out, err := cmd.CombinedOutput()
			if (err == nil) != tc.wantOK {
				t.Fatalf("build-binaries.sh debian: err=%v, want success=%v:\n%s", err, tc.wantOK, out)
			}
			for _, w := range tc.want {
				if !strings.Contains(string(out), w) {
					t.Errorf("output lacks %q:\n%s", w, out)
				}
			}
		})
	}
}

// processRunning reports whether a process named comm runs on this machine.
func processRunning(comm string) bool {
	dirs, _ := filepath.Glob("/proc/[0-9]*/comm")
	for _, d := range dirs {
		if b, err := os.ReadFile(d); err == nil && strings.TrimSpace(string(b)) == comm {
			return true
		}
	}
	return false
}
