package demo

import (
	"context"
	"testing"
	"time"
)

// TestDemoOnce runs `make demo --once`: every step checks what it shows, so
// this is the end-to-end test of controller → EnvoyFilter → istiod → LDS →
// leanmesh.so → exposition.
func TestDemoOnce(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	if err := Run(ctx, Options{Once: true, Out: testWriter{t}, BinDir: t.TempDir()}); err != nil {
		t.Fatal(err)
	}
}

type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(string(p))
	return len(p), nil
}
