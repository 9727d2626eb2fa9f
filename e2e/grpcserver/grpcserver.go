// Package grpcserver runs a gRPC server for a test: the ALS, workload-table
// and xDS servers the tests stand up all serve, stop and report the same way.
package grpcserver

import (
	"net"
	"testing"
)

// Server is what Run serves: a *grpc.Server.
type Server interface {
	Serve(net.Listener) error
	Stop()
}

// Run serves s on lis until the test ends, then stops it. Serve returns nil
// after Stop, so an error means the server stopped serving on its own: the
// test fails with it.
func Run(t testing.TB, name string, s Server, lis net.Listener) {
	t.Helper()
	served := make(chan error, 1)
	go func() { served <- s.Serve(lis) }()
	t.Cleanup(func() {
		s.Stop()
		if err := <-served; err != nil {
			t.Errorf("%s server on %s: %v", name, lis.Addr(), err)
		}
	})
}
