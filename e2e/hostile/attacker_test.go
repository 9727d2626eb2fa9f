package hostile

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	accesslogdatav3 "github.com/envoyproxy/go-control-plane/envoy/data/accesslog/v3"
	accesslogv3 "github.com/envoyproxy/go-control-plane/envoy/service/accesslog/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
)

var egressNode = &corev3.Node{
	Id:      "router~10.244.9.9~leanmesh-lazy-egress-7d9f-abcde.istio-system~istio-system.svc.cluster.local",
	Cluster: "leanmesh-lazy-egress.istio-system",
}

func sockAddr(ip string, port uint32) *corev3.Address {
	return &corev3.Address{Address: &corev3.Address_SocketAddress{SocketAddress: &corev3.SocketAddress{
		Address: ip, PortSpecifier: &corev3.SocketAddress_PortValue{PortValue: port}}}}
}

// logEntry is what the egress's http_grpc logger sends for one request.
func logEntry(callerIP, cluster, authority string) *accesslogdatav3.HTTPAccessLogEntry {
	return &accesslogdatav3.HTTPAccessLogEntry{
		ProtocolVersion: accesslogdatav3.HTTPAccessLogEntry_HTTP11,
		CommonProperties: &accesslogdatav3.AccessLogCommon{
			SampleRate:                    1,
			DownstreamRemoteAddress:       sockAddr(callerIP, 51234),
			DownstreamDirectRemoteAddress: sockAddr(callerIP, 51234),
			DownstreamLocalAddress:        sockAddr("10.244.9.9", 8080),
			UpstreamCluster:               cluster,
			AccessLogType:                 accesslogdatav3.AccessLogType_DownstreamEnd,
		},
		Request: &accesslogdatav3.HTTPRequestProperties{RequestMethod: corev3.RequestMethod_GET, Authority: authority, Path: "/"},
	}
}

func batch(first bool, entries ...*accesslogdatav3.HTTPAccessLogEntry) *accesslogv3.StreamAccessLogsMessage {
	m := &accesslogv3.StreamAccessLogsMessage{LogEntries: &accesslogv3.StreamAccessLogsMessage_HttpLogs{
		HttpLogs: &accesslogv3.StreamAccessLogsMessage_HTTPAccessLogEntries{LogEntry: entries}}}
	if first {
		m.Identifier = &accesslogv3.StreamAccessLogsMessage_Identifier{Node: egressNode, LogName: "leanmesh-lazy"}
	}
	return m
}

// hugeMessage is one message of about n bytes (issue #18 sent 15 MiB).
func hugeMessage(n int) *accesslogv3.StreamAccessLogsMessage {
	return batch(true, logEntry("10.244.1.11", "outbound|80||x.shop.svc.cluster.local", strings.Repeat("a", n)))
}

// attacker holds its connections and streams open until close, as the
// issue's "idle streams" did.
type attacker struct {
	mu      sync.Mutex
	conns   []*grpc.ClientConn
	cancels []context.CancelFunc
	outcome map[string]int
}

func newAttacker() *attacker { return &attacker{outcome: map[string]int{}} }

// record counts a stream's outcome: its gRPC status code, or "open" when
// the server had not ended it when the attacker stopped waiting.
func (a *attacker) record(err error, open bool) {
	a.mu.Lock()
	if open {
		a.outcome["open"]++
	} else {
		a.outcome[status.Code(err).String()]++
	}
	a.mu.Unlock()
}

func (a *attacker) dial(addr string, creds grpc.DialOption) (*grpc.ClientConn, error) {
	conn, err := grpc.NewClient(addr, creds, grpc.WithDefaultCallOptions(grpc.MaxCallSendMsgSize(64<<20)))
	if err != nil {
		return nil, err
	}
	a.mu.Lock()
	a.conns = append(a.conns, conn)
	a.mu.Unlock()
	return conn, nil
}

// streams opens n streams on conns connections (round robin), sends msgs
// on each and leaves them open; each stream's outcome is recorded once the
// server answers or after wait.
func (a *attacker) streams(addr string, creds grpc.DialOption, conns, n int, msgs func(i int) []*accesslogv3.StreamAccessLogsMessage, wait time.Duration) {
	cs := make([]*grpc.ClientConn, conns)
	for i := range cs {
		c, err := a.dial(addr, creds)
		if err != nil {
			a.record(err, false)
			return
		}
		cs[i] = c
	}
	var wg sync.WaitGroup
	for i := range n {
		ctx, cancel := context.WithCancel(context.Background())
		a.mu.Lock()
		a.cancels = append(a.cancels, cancel)
		a.mu.Unlock()
		wg.Add(1)
		go func() {
			defer wg.Done()
			st, err := accesslogv3.NewAccessLogServiceClient(cs[i%conns]).StreamAccessLogs(ctx)
			if err != nil {
				a.record(err, false)
				return
			}
			for _, m := range msgs(i) {
				if err = st.Send(m); err != nil {
					break
				}
			}
			// Idle: the stream stays open (no CloseSend); the server's
			// verdict, if any, arrives as the stream's status.
			done := make(chan error, 1)
			go func() { done <- st.RecvMsg(&accesslogv3.StreamAccessLogsResponse{}) }()
			select {
			case err = <-done:
				a.record(err, false)
			case <-time.After(wait):
				a.record(nil, true)
			}
		}()
	}
	wg.Wait()
}

func (a *attacker) close() map[string]int {
	a.mu.Lock()
	defer a.mu.Unlock()
	for _, c := range a.cancels {
		c()
	}
	for _, c := range a.conns {
		c.Close()
	}
	a.cancels, a.conns = nil, nil
	out := a.outcome
	a.outcome = map[string]int{}
	return out
}

var plaintext = grpc.WithTransportCredentials(insecure.NewCredentials())

func mtls(cert *tls.Certificate) grpc.DialOption {
	cfg := &tls.Config{InsecureSkipVerify: true} // the attacker does not care who the server is
	if cert != nil {
		cfg.Certificates = []tls.Certificate{*cert}
	}
	return grpc.WithTransportCredentials(credentials.NewTLS(cfg))
}

// meshCA stands in for istiod's CA (TestALSAdmitsOnlyTheEgressIdentity in
// controller/lazyxdsctl does the same with a real istiod's certificates;
// here only the controller's memory is measured).
type meshCA struct {
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
	pem  []byte
}

func newMeshCA(t testing.TB) *meshCA {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{Organization: []string{"cluster.local"}},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, _ := x509.ParseCertificate(der)
	return &meshCA{cert: cert, key: key, pem: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})}
}

func (ca *meshCA) rootFile(t testing.TB) string {
	p := filepath.Join(t.TempDir(), "root-cert.pem")
	if err := os.WriteFile(p, ca.pem, 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// workload issues an Istio workload certificate for ns/sa.
func (ca *meshCA) workload(t testing.TB, ns, sa string) tls.Certificate {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	u, _ := url.Parse(fmt.Sprintf("spiffe://cluster.local/ns/%s/sa/%s", ns, sa))
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(time.Now().UnixNano()), NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		URIs: []*url.URL{u}, KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth, x509.ExtKeyUsageServerAuth}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, &key.PublicKey, ca.key)
	if err != nil {
		t.Fatal(err)
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}
}

func newALSClient(ctx context.Context, conn *grpc.ClientConn) (accesslogv3.AccessLogService_StreamAccessLogsClient, error) {
	return accesslogv3.NewAccessLogServiceClient(conn).StreamAccessLogs(ctx)
}
