package workloadtable

import (
	"context"
	"errors"
	"io"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/leanmesh/leanmesh/e2e/grpcserver"
	"github.com/leanmesh/leanmesh/filters/workloads"
)

// fakeReviewer accepts one token.
type fakeReviewer struct{ token, user string }

func (f fakeReviewer) Review(_ context.Context, token string) (string, error) {
	if token != f.token {
		return "", errors.New("unknown token")
	}
	return f.user, nil
}

func serve(t *testing.T, x *Index, r TokenReviewer) string {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	s := NewGRPCServer(ctx, x.Cache(), r)
	grpcserver.Run(t, "workload-table", s, lis)
	t.Cleanup(cancel) // before the server stops
	return lis.Addr().String()
}

func writeToken(t *testing.T, token string) string {
	p := filepath.Join(t.TempDir(), "istio-token")
	if err := os.WriteFile(p, []byte(token), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestStreamAuthentication(t *testing.T) {
	x := NewIndex()
	if err := x.Set("pod/shop/frontend", []string{"10.0.0.1"}, workloads.Workload{Name: "frontend", Namespace: "shop"}); err != nil {
		t.Fatal(err)
	}
	addr := serve(t, x, fakeReviewer{token: "sa-token", user: "system:serviceaccount:shop:frontend"})

	cases := []struct {
		name    string
		token   string // "" = no authorization metadata at all
		raw     string // raw authorization value, overrides token
		wantErr bool
	}{
		{name: "valid token", token: "sa-token"},
		{name: "no token", wantErr: true},
		{name: "wrong token", token: "forged", wantErr: true},
		{name: "not bearer", raw: "Basic c2EtdG9rZW4=", wantErr: true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
			if err != nil {
				t.Fatal(err)
			}
			defer conn.Close()
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			switch {
			case tc.raw != "":
				ctx = metadata.AppendToOutgoingContext(ctx, "authorization", tc.raw)
			case tc.token != "":
				ctx = metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer "+tc.token)
			}
			st, err := discoveryv3.NewAggregatedDiscoveryServiceClient(conn).DeltaAggregatedResources(ctx)
			if err != nil {
				t.Fatal(err)
			}
			// io.EOF from Send means the server has already ended the
			// stream (a refused token can be answered before the request
			// is read); Recv then returns its status.
			if err := st.Send(&discoveryv3.DeltaDiscoveryRequest{TypeUrl: workloads.TypeURL, ResourceNamesSubscribe: []string{"*"}}); err != nil && !errors.Is(err, io.EOF) {
				t.Fatal(err)
			}
			resp, err := st.Recv()
			if tc.wantErr {
				if status.Code(err) != codes.PermissionDenied || resp != nil {
					t.Fatalf("got %v, %v; want PermissionDenied and nothing", resp, err)
				}
				return
			}
			if err != nil || len(resp.GetResources()) != 1 || resp.GetResources()[0].GetName() != "10.0.0.1" {
				t.Fatalf("got %v, %v", resp, err)
			}
		})
	}
}

// The library's client against this server: the whole stream, both ends
// real, with the token read from a file as in a sidecar.
func TestLibraryClientAgainstServer(t *testing.T) {
	x := NewIndex()
	addr := serve(t, x, fakeReviewer{token: "sa-token", user: "system:serviceaccount:shop:frontend"})
	c, err := workloads.NewClient(workloads.ClientOptions{Address: addr, Plaintext: true, TokenPath: writeToken(t, "sa-token\n"),
		MinBackoff: 10 * time.Millisecond}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Start(); err != nil {
		t.Fatal(err)
	}
	defer c.Stop()
	if err := x.Set("pod/shop/frontend", []string{"10.0.0.1", "fd00::1"}, workloads.Workload{Name: "frontend", Namespace: "shop"}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "add", func() bool { return lookup(c, "fd00::1") == "frontend" })
	if err := x.Delete("pod/shop/frontend"); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "delete", func() bool { return lookup(c, "10.0.0.1") == "" && c.Table().Len() == 0 })
}

func lookup(c *workloads.Client, ip string) string {
	if w := c.Table().Lookup(netip.MustParseAddr(ip)); w != nil {
		return w.Name
	}
	return ""
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestCallerIsAuthenticatedUser(t *testing.T) {
	md := metadata.New(map[string]string{"authorization": "Bearer tok"})
	user, err := authenticate(metadata.NewIncomingContext(context.Background(), md), fakeReviewer{token: "tok", user: "u"})
	if err != nil || user != "u" {
		t.Fatalf("%q %v", user, err)
	}
	_, err = authenticate(metadata.NewIncomingContext(context.Background(), md), fakeReviewer{token: "other", user: "u"})
	if status.Code(err) != codes.PermissionDenied || strings.Contains(err.Error(), "unknown token") {
		t.Errorf("error %v leaks the reason or has the wrong code", err)
	}
}
