package als

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"strings"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/metadata"
	securityapi "istio.io/api/security/v1alpha1"
)

// IstioCert is the ALS server's certificate, issued by Istio's CA for the
// controller's own identity, as istio-agent gets one for every proxy: a
// CSR carrying the SPIFFE URI, sent to istiod's CA (CreateCertificate on
// its :15012 port, TLS verified against the mesh root), authenticated by
// the service-account token projected for audience istio-ca. The lazy
// egress then verifies the controller as Istio verifies any mesh peer
// (root from SDS ROOTCA, SAN = the controller's SPIFFE ID), so nothing but
// the controller can read the access logs, and no certificate has to be
// distributed by hand. Renewed at half its lifetime; a failed renewal
// keeps serving the current certificate until it expires.
type IstioCert struct {
	// CAAddress is istiod's CA, e.g. istiod.istio-system.svc:15012.
	CAAddress string
	// CAServerName is the name istiod's serving certificate is checked for
	// (default: CAAddress's host).
	CAServerName string
	// RootFile is the mesh root (PEM) istiod's serving certificate chains
	// to (the istio-ca-root-cert ConfigMap; the same file MeshTLS reads).
	RootFile string
	// TokenFile is the projected service-account token, audience istio-ca;
	// re-read for every request (kubelet rotates it).
	TokenFile string
	// Identity is the SPIFFE ID asked for: spiffe://<trust domain>/ns/<ns>/sa/<sa>.
	// Istio's CA signs only the identity of the token's service account.
	Identity string
	// ClusterID is sent as istio-agent sends it (default "Kubernetes").
	ClusterID string
	// Validity asked for (default 24h, Istio's default workload TTL).
	Validity time.Duration
	Now      func() time.Time
	// OnError, if set, hears every failed request to the CA: serving says
	// whether the current certificate is still served (a failed renewal)
	// or handshakes fail until one is issued. Without it a CA that cannot
	// be reached shows only in gRPC's info-level log (grpc-go server.go:
	// "failed to create ServerTransport"), which is off by default.
	OnError func(err error, serving bool)

	mu      sync.Mutex
	cur     *tls.Certificate
	renewAt time.Time
	retryAt time.Time // after a failed renewal, not before this
	expires time.Time
}

// GetCertificate is a tls.Config.GetCertificate: the current certificate,
// renewed first when due.
func (c *IstioCert) GetCertificate(*tls.ClientHelloInfo) (*tls.Certificate, error) {
	now := time.Now()
	if c.Now != nil {
		now = c.Now()
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.cur != nil && (now.Before(c.renewAt) || now.Before(c.retryAt) && now.Before(c.expires)) {
		return c.cur, nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	crt, notBefore, notAfter, err := c.fetch(ctx)
	if err != nil {
		serving := c.cur != nil && now.Before(c.expires)
		if c.OnError != nil {
			c.OnError(err, serving)
		}
		if serving {
			// Handshakes are not held up by a CA that is down: try again
			// in 30 s, meanwhile serve the current certificate.
			c.retryAt = now.Add(30 * time.Second)
			return c.cur, nil
		}
		return nil, fmt.Errorf("als: certificate from Istio's CA: %w", err)
	}
	c.cur, c.expires = crt, notAfter
	c.renewAt = notBefore.Add(notAfter.Sub(notBefore) / 2)
	return c.cur, nil
}

func (c *IstioCert) fetch(ctx context.Context) (*tls.Certificate, time.Time, time.Time, error) {
	var zero time.Time
	id, err := url.Parse(c.Identity)
	if err != nil || id.Scheme != "spiffe" {
		return nil, zero, zero, fmt.Errorf("identity %q is not a SPIFFE ID", c.Identity)
	}
	token, err := os.ReadFile(c.TokenFile)
	if err != nil {
		return nil, zero, zero, fmt.Errorf("service-account token: %w", err)
	}
	rootPEM, err := os.ReadFile(c.RootFile)
	if err != nil {
		return nil, zero, zero, fmt.Errorf("mesh root: %w", err)
	}
	roots := x509.NewCertPool()
	if !roots.AppendCertsFromPEM(rootPEM) {
		return nil, zero, zero, fmt.Errorf("no PEM certificate in %s", c.RootFile)
	}
	serverName := c.CAServerName
	if serverName == "" {
		if serverName, _, err = net.SplitHostPort(c.CAAddress); err != nil {
			return nil, zero, zero, fmt.Errorf("CA address %q: %w", c.CAAddress, err)
		}
	}
	conn, err := grpc.NewClient(c.CAAddress, grpc.WithTransportCredentials(credentials.NewTLS(&tls.Config{
		MinVersion: tls.VersionTLS12, RootCAs: roots, ServerName: serverName})))
	if err != nil {
		return nil, zero, zero, err
	}
	defer conn.Close()
	validity := c.Validity
	if validity <= 0 {
		validity = 24 * time.Hour
	}
	out, _, err := RequestCertificate(ctx, conn, strings.TrimSpace(string(token)), c.Identity, c.ClusterID, validity)
	if err != nil {
		return nil, zero, zero, fmt.Errorf("CSR for %s at %s: %w", c.Identity, c.CAAddress, err)
	}
	return out, out.Leaf.NotBefore, out.Leaf.NotAfter, nil
}

// RequestCertificate asks Istio's CA over conn for a certificate for
// identity (a SPIFFE ID), as istio-agent does: a fresh P-256 key, a CSR
// carrying the URI, the istio-ca token as bearer and the cluster id
// ("Kubernetes" when empty) as metadata. It returns the key pair (leaf and
// intermediates, Leaf parsed and checked to carry exactly identity) and
// the root the CA ended its chain with, PEM-encoded.
func RequestCertificate(ctx context.Context, conn grpc.ClientConnInterface, token, identity, clusterID string, validity time.Duration) (*tls.Certificate, []byte, error) {
	id, err := url.Parse(identity)
	if err != nil || id.Scheme != "spiffe" {
		return nil, nil, fmt.Errorf("identity %q is not a SPIFFE ID", identity)
	}
	if clusterID == "" {
		clusterID = "Kubernetes"
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, err
	}
	csr, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{URIs: []*url.URL{id}}, key)
	if err != nil {
		return nil, nil, err
	}
	ctx = metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer "+token, "ClusterID", clusterID)
	resp, err := securityapi.NewIstioCertificateServiceClient(conn).CreateCertificate(ctx, &securityapi.IstioCertificateRequest{
		Csr:              string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: csr})),
		ValidityDuration: int64(validity.Seconds()),
	})
	if err != nil {
		return nil, nil, err
	}
	// The chain ends with the root; the leaf and intermediates are served.
	chain := resp.GetCertChain()
	if len(chain) < 2 {
		return nil, nil, errors.New("the Istio CA returned no certificate chain")
	}
	out := &tls.Certificate{PrivateKey: key}
	for _, p := range chain[:len(chain)-1] {
		for rest := []byte(p); ; {
			var b *pem.Block
			if b, rest = pem.Decode(rest); b == nil {
				break
			}
			out.Certificate = append(out.Certificate, b.Bytes)
		}
	}
	if len(out.Certificate) == 0 {
		return nil, nil, errors.New("the Istio CA returned no PEM certificate")
	}
	leaf, err := x509.ParseCertificate(out.Certificate[0])
	if err != nil {
		return nil, nil, err
	}
	if len(leaf.URIs) != 1 || leaf.URIs[0].String() != identity {
		return nil, nil, fmt.Errorf("the Istio CA signed %v, not %s", leaf.URIs, identity)
	}
	out.Leaf = leaf
	return out, []byte(chain[len(chain)-1]), nil
}
