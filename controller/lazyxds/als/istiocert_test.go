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
	"math/big"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	securityapi "istio.io/api/security/v1alpha1"

	"github.com/leanmesh/leanmesh/e2e/grpcserver"
)

// fakeCA is istiod's CreateCertificate as far as IstioCert relies on it:
// TLS with a serving certificate for istiod.istio-system.svc, a bearer
// token, and a chain ending with the root. It signs what the CSR asks for.
type fakeCA struct {
	securityapi.UnimplementedIstioCertificateServiceServer
	root    *x509.Certificate
	key     *ecdsa.PrivateKey
	mu      sync.Mutex
	now     time.Time
	calls   atomic.Int64
	failing atomic.Bool
	tokens  []string
	signAs  *url.URL // sign this identity instead of the CSR's
}

func newFakeCA(t *testing.T) (*fakeCA, string, string) {
	t.Helper()
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{Organization: []string{"cluster.local"}},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour), IsCA: true, BasicConstraintsValid: true,
		KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	root, _ := x509.ParseCertificate(der)
	ca := &fakeCA{root: root, key: key, now: time.Now()}
	// istiod's serving certificate, signed by the root.
	skey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	sder, err := x509.CreateCertificate(rand.Reader, &x509.Certificate{SerialNumber: big.NewInt(2), DNSNames: []string{"istiod.istio-system.svc"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour), ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}},
		root, &skey.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := grpc.NewServer(grpc.Creds(credentials.NewTLS(&tls.Config{Certificates: []tls.Certificate{{Certificate: [][]byte{sder}, PrivateKey: skey}}})))
	securityapi.RegisterIstioCertificateServiceServer(srv, ca)
	grpcserver.Run(t, "Istio CA", srv, lis)
	dir := t.TempDir()
	rootFile := filepath.Join(dir, "root-cert.pem")
	if err := os.WriteFile(rootFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	return ca, lis.Addr().String(), rootFile
}

func (ca *fakeCA) CreateCertificate(ctx context.Context, req *securityapi.IstioCertificateRequest) (*securityapi.IstioCertificateResponse, error) {
	ca.calls.Add(1)
	if ca.failing.Load() {
		return nil, status.Error(codes.Unavailable, "CA down")
	}
	md, _ := metadata.FromIncomingContext(ctx)
	ca.mu.Lock()
	ca.tokens = append(ca.tokens, md.Get("authorization")...)
	now := ca.now
	ca.mu.Unlock()
	b, _ := pem.Decode([]byte(req.Csr))
	csr, err := x509.ParseCertificateRequest(b.Bytes)
	if err != nil {
		return nil, err
	}
	uris := csr.URIs
	if ca.signAs != nil {
		uris = []*url.URL{ca.signAs}
	}
	der, err := x509.CreateCertificate(rand.Reader, &x509.Certificate{SerialNumber: big.NewInt(ca.calls.Load() + 10), URIs: uris,
		NotBefore: now, NotAfter: now.Add(time.Duration(req.ValidityDuration) * time.Second),
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth}}, ca.root, csr.PublicKey, ca.key)
	if err != nil {
		return nil, err
	}
	return &securityapi.IstioCertificateResponse{CertChain: []string{
		string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})),
		string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: ca.root.Raw})),
	}}, nil
}

// TestIstioCertRenewal: the certificate comes from the CA with the
// identity asked for and the token file's token; it is reused until half
// its lifetime, then renewed; a CA that fails a renewal leaves the current
// certificate in service until it expires, and only then is there an error.
func TestIstioCertRenewal(t *testing.T) {
	ca, addr, rootFile := newFakeCA(t)
	tokenFile := filepath.Join(t.TempDir(), "istio-token")
	if err := os.WriteFile(tokenFile, []byte("tok-1\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	const id = "spiffe://cluster.local/ns/leanmesh-system/sa/leanmesh"
	var failures []bool // OnError's serving, per failed request
	c := &IstioCert{CAAddress: addr, CAServerName: "istiod.istio-system.svc", RootFile: rootFile, TokenFile: tokenFile,
		Identity: id, Validity: time.Hour, Now: func() time.Time { return now },
		OnError: func(_ error, serving bool) { failures = append(failures, serving) }}
	first, err := c.GetCertificate(nil)
	if err != nil {
		t.Fatal(err)
	}
	if u := first.Leaf.URIs; len(u) != 1 || u[0].String() != id {
		t.Fatalf("identity %v", u)
	}
	for range 10 {
		if again, _ := c.GetCertificate(nil); again != first {
			t.Fatal("renewed before half its lifetime")
		}
	}
	if n := ca.calls.Load(); n != 1 {
		t.Fatalf("%d CSRs for 11 handshakes, want 1", n)
	}
	// Half-way: renewed, with the token as the file holds it now.
	if err := os.WriteFile(tokenFile, []byte("tok-2"), 0o600); err != nil {
		t.Fatal(err)
	}
	now = now.Add(31 * time.Minute)
	ca.mu.Lock()
	ca.now = now
	ca.mu.Unlock()
	second, err := c.GetCertificate(nil)
	if err != nil || second == first || ca.calls.Load() != 2 {
		t.Fatalf("at half-life: %v, renewed %v, CSRs %d", err, second != first, ca.calls.Load())
	}
	if ca.tokens[0] != "Bearer tok-1" || ca.tokens[1] != "Bearer tok-2" {
		t.Fatalf("tokens sent %v", ca.tokens)
	}
	// The CA fails: the current certificate keeps serving until it expires.
	ca.failing.Store(true)
	now = now.Add(45 * time.Minute) // past renewal, before expiry
	if got, err := c.GetCertificate(nil); err != nil || got != second {
		t.Fatalf("CA down before expiry: %v (same certificate %v)", err, got == second)
	}
	calls := ca.calls.Load()
	now = now.Add(10 * time.Second)
	if got, err := c.GetCertificate(nil); err != nil || got != second || ca.calls.Load() != calls {
		t.Fatalf("10 s after a failed renewal: %v, same %v, CSRs +%d (want none: retried after 30 s)", err, got == second, ca.calls.Load()-calls)
	}
	now = now.Add(20 * time.Minute) // expired
	if _, err := c.GetCertificate(nil); err == nil {
		t.Fatal("an expired certificate was served")
	}
	ca.failing.Store(false)
	if _, err := c.GetCertificate(nil); err != nil {
		t.Fatalf("CA back: %v", err)
	}
	if want := []bool{true, false}; !slices.Equal(failures, want) {
		t.Errorf("OnError heard serving=%v, want %v (the failed renewal while serving, then the failure at expiry)", failures, want)
	}
	t.Logf("CSRs %d: at start, at half-life, a failed renewal (the current certificate served on, no retry for 30 s), at expiry (failed: error), CA back", ca.calls.Load())

	// A certificate for another identity than asked is not served.
	ca.signAs, _ = url.Parse("spiffe://cluster.local/ns/leanmesh-system/sa/other")
	fresh := &IstioCert{CAAddress: addr, CAServerName: "istiod.istio-system.svc", RootFile: rootFile, TokenFile: tokenFile, Identity: id}
	if _, err := fresh.GetCertificate(nil); err == nil {
		t.Fatal("served a certificate for another identity")
	} else {
		t.Logf("CA signed another identity: %v", err)
	}
	ca.signAs = nil
	// The CA's serving certificate must be for the name checked.
	badName := &IstioCert{CAAddress: addr, CAServerName: "evil.example", RootFile: rootFile, TokenFile: tokenFile, Identity: id}
	if _, err := badName.GetCertificate(nil); err == nil {
		t.Fatal("a CA serving a certificate for another name was trusted")
	} else {
		t.Logf("CA certificate for another name: %v", err)
	}
}
