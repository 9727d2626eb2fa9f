package workloads

import (
	"context"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	cachev3 "github.com/envoyproxy/go-control-plane/pkg/cache/types"
	linear "github.com/envoyproxy/go-control-plane/pkg/cache/v3"
	serverv3 "github.com/envoyproxy/go-control-plane/pkg/server/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/structpb"

	"github.com/leanmesh/leanmesh/e2e/grpcserver"
)

// testServer is a go-control-plane delta server over a linear cache, with
// a minimal bearer check (the real TokenReview check is tested in
// controller/workloadtable).
type testServer struct {
	addr  string
	cache *linear.LinearCache
	srv   *grpc.Server
}

const goodToken = "good-token"

func startServer(t *testing.T, addr string, cache *linear.LinearCache) *testServer {
	t.Helper()
	if cache == nil {
		cache = linear.NewLinearCache(TypeURL)
	}
	lis, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	auth := func(srv interface{}, ss grpc.ServerStream, info *grpc.StreamServerInfo, h grpc.StreamHandler) error {
		md, _ := metadata.FromIncomingContext(ss.Context())
		if v := md.Get("authorization"); len(v) != 1 || v[0] != "Bearer "+goodToken {
			return status.Error(codes.PermissionDenied, "bad token")
		}
		return h(srv, ss)
	}
	s := grpc.NewServer(grpc.StreamInterceptor(auth))
	discoveryv3.RegisterAggregatedDiscoveryServiceServer(s, serverv3.NewServer(context.Background(), cache, nil))
	grpcserver.Run(t, "workload xDS", s, lis)
	return &testServer{addr: lis.Addr().String(), cache: cache, srv: s}
}

// update changes what the server serves; a change the cache refuses fails the test.
func update(t *testing.T, cache *linear.LinearCache, set map[string]cachev3.Resource, remove ...string) {
	t.Helper()
	if err := cache.UpdateResources(set, remove); err != nil {
		t.Fatal(err)
	}
}

func wlStruct(w Workload) cachev3.Resource { return w.ToStruct() }

func tokenFile(t *testing.T, token string) string {
	p := filepath.Join(t.TempDir(), "token")
	if err := os.WriteFile(p, []byte(token+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func startClient(t *testing.T, addr, tokenPath string) *Client {
	t.Helper()
	c, err := NewClient(ClientOptions{Address: addr, TokenPath: tokenPath, Plaintext: true,
		MinBackoff: 20 * time.Millisecond, MaxBackoff: 100 * time.Millisecond}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Stop)
	return c
}

func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func has(tab *Table, ip, name string) bool {
	w := tab.Lookup(netip.MustParseAddr(ip))
	if name == "" {
		return w == nil
	}
	return w != nil && w.Name == name
}

func TestClientUpdatesAndRemovals(t *testing.T) {
	ts := startServer(t, "127.0.0.1:0", nil)
	update(t, ts.cache, map[string]cachev3.Resource{"10.0.0.1": wlStruct(wlA)})
	c := startClient(t, ts.addr, tokenFile(t, goodToken))
	tab := c.Table()
	eventually(t, "initial state", func() bool { return has(tab, "10.0.0.1", "frontend") })

	steps := []struct {
		name   string
		update map[string]cachev3.Resource
		remove []string
		want   map[string]string // ip → workload name, "" absent
	}{
		{"add", map[string]cachev3.Resource{"10.0.0.2": wlStruct(wlB), "fd00::2": wlStruct(wlB)}, nil,
			map[string]string{"10.0.0.1": "frontend", "10.0.0.2": "reviews-v2", "fd00::2": "reviews-v2"}},
		{"change", map[string]cachev3.Resource{"10.0.0.1": wlStruct(wlB)}, nil,
			map[string]string{"10.0.0.1": "reviews-v2"}},
		{"remove", nil, []string{"10.0.0.2", "fd00::2"},
			map[string]string{"10.0.0.1": "reviews-v2", "10.0.0.2": "", "fd00::2": ""}},
	}
	for _, s := range steps {
		update(t, ts.cache, s.update, s.remove...)
		eventually(t, s.name, func() bool {
			for ip, name := range s.want {
				if !has(tab, ip, name) {
					return false
				}
			}
			return true
		})
	}
	if c.Streams() != 1 {
		t.Errorf("streams = %d, want 1", c.Streams())
	}
}

func TestClientRejectsCorruptUpdateWhole(t *testing.T) {
	ts := startServer(t, "127.0.0.1:0", nil)
	update(t, ts.cache, map[string]cachev3.Resource{"10.0.0.1": wlStruct(wlA)})
	c := startClient(t, ts.addr, tokenFile(t, goodToken))
	eventually(t, "initial state", func() bool { return has(c.Table(), "10.0.0.1", "frontend") })

	bad := &structpb.Struct{Fields: map[string]*structpb.Value{FieldName: structpb.NewNumberValue(7)}}
	responses := c.Responses()
	update(t, ts.cache, map[string]cachev3.Resource{"10.0.0.2": wlStruct(wlB), "10.0.0.3": bad}, "10.0.0.1")
	eventually(t, "the corrupt response", func() bool { return c.Responses() > responses })
	// The response is counted before it is decoded and rejected; the error
	// is recorded last.
	eventually(t, "the rejection", func() bool { return c.LastError() != "" })
	if !has(c.Table(), "10.0.0.1", "frontend") || !has(c.Table(), "10.0.0.2", "") {
		t.Error("a corrupt response was partly applied")
	}
	if c.Table().Rejected() != 1 || !strings.Contains(c.LastError(), "not a string") {
		t.Errorf("rejected = %d, last error %q", c.Table().Rejected(), c.LastError())
	}
	// The stream stays up and later good updates apply.
	update(t, ts.cache, map[string]cachev3.Resource{"10.0.0.3": wlStruct(wlB)})
	eventually(t, "the next good update", func() bool { return has(c.Table(), "10.0.0.3", "reviews-v2") })
}

// The server goes away: the table keeps serving; the server comes back with
// a state that moved on meanwhile: the client resyncs (additions and the
// removals it could not hear about) on the new stream.
func TestClientStreamDownAndReconnect(t *testing.T) {
	cache := linear.NewLinearCache(TypeURL)
	update(t, cache, map[string]cachev3.Resource{"10.0.0.1": wlStruct(wlA), "10.0.0.2": wlStruct(wlB)})
	ts := startServer(t, "127.0.0.1:0", cache)
	c := startClient(t, ts.addr, tokenFile(t, goodToken))
	eventually(t, "initial state", func() bool { return has(c.Table(), "10.0.0.2", "reviews-v2") })

	ts.srv.Stop()
	eventually(t, "disconnect", func() bool { return !c.Connected() })
	time.Sleep(100 * time.Millisecond) // several failed reconnects
	if !has(c.Table(), "10.0.0.1", "frontend") || !has(c.Table(), "10.0.0.2", "reviews-v2") {
		t.Fatal("the table did not keep its last good state while the stream was down")
	}

	update(t, cache, map[string]cachev3.Resource{"10.0.0.3": wlStruct(wlA)}, "10.0.0.2")
	startServer(t, ts.addr, cache)
	eventually(t, "resync", func() bool {
		return has(c.Table(), "10.0.0.1", "frontend") && has(c.Table(), "10.0.0.2", "") && has(c.Table(), "10.0.0.3", "frontend")
	})
	if c.Streams() < 2 {
		t.Errorf("streams = %d, want a reconnect", c.Streams())
	}
}

func TestClientAuthentication(t *testing.T) {
	ts := startServer(t, "127.0.0.1:0", nil)
	update(t, ts.cache, map[string]cachev3.Resource{"10.0.0.1": wlStruct(wlA)})
	cases := []struct {
		name      string
		tokenPath string
		wantErr   string
	}{
		{"no token file", filepath.Join(t.TempDir(), "missing"), "reading token"},
		{"wrong token", tokenFile(t, "forged"), "PermissionDenied"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c := startClient(t, ts.addr, tc.tokenPath)
			// The first error recorded must already say why: a refused
			// token is PermissionDenied, never the bare EOF Send returns
			// when the server ends the stream before reading it.
			eventually(t, "an error", func() bool { return c.LastError() != "" })
			if !strings.Contains(c.LastError(), tc.wantErr) {
				t.Errorf("first error %q, want %q", c.LastError(), tc.wantErr)
			}
			if c.Table().Len() != 0 || c.Responses() != 0 {
				t.Errorf("unauthenticated client got %d entries, %d responses", c.Table().Len(), c.Responses())
			}
		})
	}
}

func TestSubscribeSharesOneClientPerAddress(t *testing.T) {
	ts := startServer(t, "127.0.0.1:0", nil)
	opts := ClientOptions{Address: ts.addr, Plaintext: true, TokenPath: tokenFile(t, goodToken)}
	a, err := Subscribe(opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(a.Stop)
	b, err := Subscribe(opts)
	if err != nil || a != b {
		t.Fatalf("second subscribe: %p %p %v", a, b, err)
	}
	if _, err := Subscribe(ClientOptions{Address: "127.0.0.1:1"}); err == nil {
		t.Error("no ca and no plaintext accepted")
	}
}
