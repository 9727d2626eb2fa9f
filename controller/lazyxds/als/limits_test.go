package als

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	accesslogdatav3 "github.com/envoyproxy/go-control-plane/envoy/data/accesslog/v3"
	accesslogv3 "github.com/envoyproxy/go-control-plane/envoy/service/accesslog/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"

	"github.com/leanmesh/leanmesh/controller/lazyxds"
	"github.com/leanmesh/leanmesh/e2e/grpcserver"
)

// bigMessage is one ALS message of about n bytes: an entry whose authority
// is n bytes long (what issue #18's flood sent, 15 MiB each).
func bigMessage(n int) *accesslogv3.StreamAccessLogsMessage {
	e := entry("10.0.0.1", "", strings.Repeat("a", n))
	return &accesslogv3.StreamAccessLogsMessage{LogEntries: &accesslogv3.StreamAccessLogsMessage_HttpLogs{
		HttpLogs: &accesslogv3.StreamAccessLogsMessage_HTTPAccessLogEntries{LogEntry: []*accesslogdatav3.HTTPAccessLogEntry{e}}}}
}

func heapInUse() uint64 {
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return ms.HeapInuse
}

// TestHugeMessagesRefused replays the attack from issue #18 (twelve streams,
// one 15 MiB message each) against the fast path: every message is refused
// from its length prefix, counted, and the server's heap does not grow by
// the messages' size. The attacker runs in a child process so its own
// buffers are not measured.
func TestHugeMessagesRefused(t *testing.T) {
	h := start(t, newGraph(), Options{}, true)
	before := heapInUse()
	cmd := exec.Command(os.Args[0], "-test.run=^TestFloodClient$", "-test.v")
	cmd.Env = append(os.Environ(), "ALS_FLOOD_ADDR="+h.addr)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("flood client: %v\n%s", err, out)
	}
	grew := int64(heapInUse()) - int64(before)
	st := h.srv.Stats()
	t.Logf("%d streams × %d MiB messages: refused message_too_large=%d; server heap growth %+d KiB (cap %d KiB per message)",
		floodStreams, floodSize>>20, st.Refused["message_too_large"], grew>>10, DefaultMaxMessageBytes>>10)
	if !strings.Contains(string(out), "all refused with ResourceExhausted") {
		t.Errorf("client: %s", out)
	}
	if st.Refused["message_too_large"] != floodStreams {
		t.Errorf("message_too_large = %d, want %d", st.Refused["message_too_large"], floodStreams)
	}
	if grew > 4<<20 {
		t.Errorf("heap grew %d MiB after refused messages", grew>>20)
	}
}

const floodStreams, floodSize = 12, 15 << 20

// TestFloodClient is the attacker of TestHugeMessagesRefused (skipped
// unless run by it).
func TestFloodClient(t *testing.T) {
	addr := os.Getenv("ALS_FLOOD_ADDR")
	if addr == "" {
		t.Skip("child process of TestHugeMessagesRefused")
	}
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithDefaultCallOptions(grpc.MaxCallSendMsgSize(64<<20)))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	msg := bigMessage(floodSize)
	var wg sync.WaitGroup
	codesSeen := make([]codes.Code, floodStreams)
	for i := range floodStreams {
		wg.Add(1)
		go func() {
			defer wg.Done()
			ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
			defer cancel()
			st, err := accesslogv3.NewAccessLogServiceClient(conn).StreamAccessLogs(ctx)
			if err != nil {
				codesSeen[i] = status.Code(err)
				return
			}
			_ = st.Send(msg)
			_, err = st.CloseAndRecv()
			codesSeen[i] = status.Code(err)
		}()
	}
	wg.Wait()
	for _, c := range codesSeen {
		if c != codes.ResourceExhausted {
			t.Fatalf("codes %v", codesSeen)
		}
	}
	fmt.Println("all refused with ResourceExhausted")
}

// TestMessageAtBudgetAccepted: the cap still admits what an access-log batch
// needs (a 16 KiB buffer plus one entry with 60 KiB of headers).
func TestMessageAtBudgetAccepted(t *testing.T) {
	h := start(t, newGraph(), Options{}, true)
	st, err := send(context.Background(), dial(t, h.addr), []*accesslogdatav3.HTTPAccessLogEntry{
		entry("10.0.0.1", "outbound|9080||reviews.bookinfo.svc.cluster.local", "reviews:9080"),
	})
	if err != nil {
		t.Fatal(err)
	}
	big := bigMessage(76 << 10)
	if err := st.Send(big); err != nil {
		t.Fatal(err)
	}
	if _, err := st.CloseAndRecv(); err != nil {
		t.Fatalf("76 KiB message refused: %v", err)
	}
	s := h.srv.Stats()
	if s.Refused["message_too_large"] != 0 || s.Received != 2 {
		t.Fatalf("stats %+v", s)
	}
	t.Logf("76 KiB message accepted; its %d-byte authority dropped as bad_destination (%d)", 76<<10, s.Dropped["bad_destination"])
}

func TestStreamLimit(t *testing.T) {
	for _, p := range paths {
		t.Run(p.name, func(t *testing.T) {
			h := start(t, newGraph(), Options{MaxStreams: 3}, p.fast)
			c := dial(t, h.addr)
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			var open []accesslogv3.AccessLogService_StreamAccessLogsClient
			for range 3 {
				st, err := send(ctx, c, []*accesslogdatav3.HTTPAccessLogEntry{entry("10.0.0.1", "outbound|9080||reviews.bookinfo.svc.cluster.local", "")})
				if err != nil {
					t.Fatal(err)
				}
				open = append(open, st)
			}
			waitFor(t, func() bool { return h.srv.Stats().Active == 3 })
			st, err := c.StreamAccessLogs(ctx)
			if err == nil {
				_, err = st.CloseAndRecv()
			}
			if status.Code(err) != codes.ResourceExhausted {
				t.Fatalf("4th stream: %v, want ResourceExhausted", err)
			}
			if n := h.srv.Stats().Refused["stream_limit"]; n != 1 {
				t.Fatalf("stream_limit = %d", n)
			}
			// A closed stream frees its slot.
			if _, err := open[0].CloseAndRecv(); err != nil {
				t.Fatal(err)
			}
			waitFor(t, func() bool { return h.srv.Stats().Active == 2 })
			if _, err := send(ctx, c, nil); err != nil {
				t.Fatal(err)
			}
			t.Logf("MaxStreams=3: 4th refused (stream_limit=1), admitted again after one closed")
		})
	}
}

func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(5 * time.Millisecond) {
		if cond() {
			return
		}
	}
	t.Fatal("condition not met in 10s")
}

// TestInternerBoundedByBytes: long distinct names stop being interned at
// the byte budget, however many arrive.
func TestInternerBoundedByBytes(t *testing.T) {
	in := newInterner(DefaultInternerBytes)
	name := make([]byte, 400)
	for i := range 100000 {
		copy(name, fmt.Sprintf("%08d", i))
		in.str(name)
	}
	t.Logf("100,000 distinct 400-byte names: %d interned, %d bytes accounted (budget %d)", len(in.m), in.bytes, in.max)
	if in.bytes > in.max || len(in.m)*(400+internEntryOverhead) > in.max {
		t.Fatalf("interner holds %d bytes, budget %d", in.bytes, in.max)
	}
	if s := in.str(name[:8]); s != string(name[:8]) {
		t.Fatal("un-interned lookups must still return the string")
	}
}

// TestQueueBytesBudget: with the graph not draining, queued observations
// stop at the byte budget and the rest is counted as queue_full.
func TestQueueBytesBudget(t *testing.T) {
	srv := NewServer(newGraph(), Options{QueueBytes: 64 << 10})
	obs := observations(100, 400)
	for range 10 {
		srv.enqueue(obs)
	}
	st := srv.Stats()
	t.Logf("10 batches of 100 × 400-byte authorities, QueueBytes=64 KiB: queued %d bytes, queue_full=%d", srv.queuedBytes.Load(), st.Dropped["queue_full"])
	if srv.queuedBytes.Load() > 64<<10 || st.Dropped["queue_full"] == 0 {
		t.Fatalf("queued %d bytes, dropped %d", srv.queuedBytes.Load(), st.Dropped["queue_full"])
	}
}

func observations(n, authorityLen int) []lazyxds.Observation {
	out := make([]lazyxds.Observation, n)
	for i := range out {
		out[i] = lazyxds.Observation{Authority: strings.Repeat("a", authorityLen)}
	}
	return out
}

// ---- mutual TLS ----

type testCA struct {
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
	pem  []byte
}

func newCA(t *testing.T, name string) *testCA {
	t.Helper()
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{Organization: []string{name}},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour), IsCA: true, BasicConstraintsValid: true,
		KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	c, _ := x509.ParseCertificate(der)
	return &testCA{cert: c, key: key, pem: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})}
}

// workload issues a certificate shaped like Istio's (URI SAN only).
func (ca *testCA) workload(t *testing.T, spiffe string) tls.Certificate {
	t.Helper()
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	u, _ := url.Parse(spiffe)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(time.Now().UnixNano()), NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth}, URIs: []*url.URL{u}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, &key.PublicKey, ca.key)
	if err != nil {
		t.Fatal(err)
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}
}

// StartMTLS serves srv on the fast path behind MeshTLS with root as the mesh root.
func startMTLS(t *testing.T, root []byte, allow Identity) (*Server, string) {
	t.Helper()
	dir := t.TempDir()
	rootFile := filepath.Join(dir, "root-cert.pem")
	if err := os.WriteFile(rootFile, root, 0o600); err != nil {
		t.Fatal(err)
	}
	var srv *Server
	m := &MeshTLS{RootFile: rootFile, OnReject: func(r Refusal) { srv.Refuse(r, "") }}
	srv = NewServer(newGraph(), Options{Authorize: func(id Identity) bool {
		return id.Namespace == allow.Namespace && id.ServiceAccount == allow.ServiceAccount
	}})
	creds, err := m.Credentials()
	if err != nil {
		t.Fatal(err)
	}
	gs := srv.NewGRPCServer(grpc.Creds(creds))
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	go srv.Run(ctx)
	grpcserver.Run(t, "ALS", gs, lis)
	t.Cleanup(cancel) // before the server stops
	return srv, lis.Addr().String()
}

func TestMutualTLS(t *testing.T) {
	mesh, other := newCA(t, "mesh"), newCA(t, "attacker")
	egress := Identity{TrustDomain: "cluster.local", Namespace: "istio-system", ServiceAccount: "leanmesh-lazy-egress"}
	srv, addr := startMTLS(t, mesh.pem, egress)

	cases := []struct {
		name   string
		cert   *tls.Certificate
		want   codes.Code
		reason string
	}{
		{"egress identity from the mesh CA", ptr(mesh.workload(t, egress.String())), codes.OK, ""},
		{"no client certificate", nil, codes.Unavailable, "no_client_certificate"},
		{"egress identity from another CA", ptr(other.workload(t, egress.String())), codes.Unavailable, "untrusted_certificate"},
		{"mesh CA, not a SPIFFE ID", ptr(mesh.workload(t, "https://example.com/egress")), codes.Unavailable, "untrusted_certificate"},
		{"mesh CA, another workload", ptr(mesh.workload(t, "spiffe://cluster.local/ns/default/sa/sleep")), codes.PermissionDenied, "forbidden_identity"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			before := srv.Stats().Refused[tc.reason]
			cfg := &tls.Config{InsecureSkipVerify: true} // the server's self-signed certificate; the client is what is checked
			if tc.cert != nil {
				cfg.Certificates = []tls.Certificate{*tc.cert}
			}
			conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(credentials.NewTLS(cfg)))
			if err != nil {
				t.Fatal(err)
			}
			defer conn.Close()
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			st, err := send(ctx, accesslogv3.NewAccessLogServiceClient(conn), []*accesslogdatav3.HTTPAccessLogEntry{
				entry("10.0.0.1", "outbound|9080||reviews.bookinfo.svc.cluster.local", "reviews:9080")})
			if err == nil {
				_, err = st.CloseAndRecv()
			}
			if got := status.Code(err); got != tc.want {
				t.Fatalf("code %v (%v), want %v", got, err, tc.want)
			}
			if tc.reason != "" {
				if got := srv.Stats().Refused[tc.reason] - before; got < 1 {
					t.Fatalf("refused[%s] did not grow", tc.reason)
				}
			}
			t.Logf("%s: %v, refused %v", tc.name, status.Code(err), srv.Stats().Refused)
		})
	}
	if got := srv.Stats().Received; got != 1 {
		t.Fatalf("entries received = %d, want 1 (only the egress's)", got)
	}
}

func ptr[T any](v T) *T { return &v }

// TestConnectionLimit: past MaxConnections a connection is closed at
// accept and counted; closing one admits the next. Idle connections cost
// memory without opening a stream, so streams alone do not bound them.
func TestConnectionLimit(t *testing.T) {
	h := start(t, newGraph(), Options{MaxConnections: 3}, true)
	closedByServer := func(c net.Conn) bool {
		// An admitted connection gets the server's SETTINGS frame and then
		// waits for our preface; a refused one is closed (EOF or reset).
		_ = c.SetReadDeadline(time.Now().Add(300 * time.Millisecond))
		buf := make([]byte, 512)
		for {
			if _, err := c.Read(buf); err != nil {
				var ne net.Error
				return !errors.As(err, &ne) || !ne.Timeout()
			}
		}
	}
	var conns []net.Conn
	for range 5 {
		c, err := net.Dial("tcp", h.addr)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		conns = append(conns, c)
	}
	var open, closed int
	for _, c := range conns {
		if closedByServer(c) {
			closed++
		} else {
			open++
		}
	}
	if open != 3 || closed != 2 || h.srv.Stats().Refused["connection_limit"] != 2 {
		t.Fatalf("open %d closed %d refused %v; want 3, 2 and connection_limit=2", open, closed, h.srv.Stats().Refused)
	}
	// Freeing a slot admits a real egress stream again.
	for _, c := range conns {
		c.Close()
	}
	deadline := time.Now().Add(5 * time.Second)
	for {
		st, err := send(context.Background(), dial(t, h.addr), []*accesslogdatav3.HTTPAccessLogEntry{
			entry("10.0.0.1", "outbound|9080||reviews.bookinfo.svc.cluster.local", "reviews:9080")})
		if err == nil {
			if _, err = st.CloseAndRecv(); err == nil {
				break
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("stream after the flood: %v", err)
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Logf("MaxConnections=3: 5 connections → 3 held, 2 closed at accept (refused %v); a stream goes through once they close",
		h.srv.Stats().Refused)
}
