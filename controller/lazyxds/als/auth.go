package als

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"fmt"
	"math/big"
	"os"
	"strings"
	"sync"
	"time"

	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/peer"
)

// Callers authenticate with mutual TLS and their Istio workload certificate:
// the lazy egress is a mesh proxy, so istio-agent already hands its Envoy a
// certificate (SDS secret "default") for spiffe://<td>/ns/<ns>/sa/<sa>,
// signed by the mesh CA. The controller checks the chain against Istio's
// root (the istio-ca-root-cert ConfigMap istiod writes into every namespace,
// mounted as a file) and the identity against the egresses its policies
// name. Nothing else can open a stream: no token travels, and the egress
// needs no extra secret. See docs/security.md.

// Identity is an Istio workload identity (a SPIFFE ID).
type Identity struct {
	TrustDomain, Namespace, ServiceAccount string
}

func (id Identity) String() string {
	return "spiffe://" + id.TrustDomain + "/ns/" + id.Namespace + "/sa/" + id.ServiceAccount
}

// ParseSPIFFE parses Istio's form spiffe://<td>/ns/<ns>/sa/<sa>.
func ParseSPIFFE(uri string) (Identity, error) {
	rest, ok := strings.CutPrefix(uri, "spiffe://")
	if !ok {
		return Identity{}, fmt.Errorf("%q is not a SPIFFE ID", uri)
	}
	parts := strings.Split(rest, "/")
	if len(parts) != 5 || parts[0] == "" || parts[1] != "ns" || parts[2] == "" || parts[3] != "sa" || parts[4] == "" {
		return Identity{}, fmt.Errorf("%q is not an Istio workload identity (spiffe://<td>/ns/<ns>/sa/<sa>)", uri)
	}
	return Identity{TrustDomain: parts[0], Namespace: parts[2], ServiceAccount: parts[4]}, nil
}

// certIdentity returns the one SPIFFE URI SAN of a workload certificate.
func certIdentity(c *x509.Certificate) (Identity, error) {
	var ids []Identity
	for _, u := range c.URIs {
		if id, err := ParseSPIFFE(u.String()); err == nil {
			ids = append(ids, id)
		}
	}
	if len(ids) != 1 {
		return Identity{}, fmt.Errorf("certificate carries %d Istio identities, want 1", len(ids))
	}
	return ids[0], nil
}

// PeerIdentity returns the identity of a stream's caller, or false when the
// connection carries no client certificate (plaintext server). It is only
// an authentication with MeshTLS's credentials, whose VerifyConnection has
// checked the chain on every handshake (crypto/tls leaves VerifiedChains
// empty when verification is done there).
func PeerIdentity(ctx context.Context) (Identity, bool) {
	p, ok := peer.FromContext(ctx)
	if !ok {
		return Identity{}, false
	}
	info, ok := p.AuthInfo.(credentials.TLSInfo)
	if !ok || len(info.State.PeerCertificates) == 0 {
		return Identity{}, false
	}
	id, err := certIdentity(info.State.PeerCertificates[0])
	return id, err == nil
}

// MeshTLS is the server side of the mutual TLS.
type MeshTLS struct {
	// RootFile is a PEM bundle of the mesh's root certificate(s) (Istio's
	// root-cert.pem). Re-read when it changes: kubelet updates a mounted
	// ConfigMap in place when Istio's root rotates.
	RootFile string
	// ServerCert, when set, supplies the server certificate (IstioCert: one
	// Istio's CA issued for the controller's identity, which the egress
	// verifies). Otherwise CertFile/KeyFile, and without them a self-signed
	// one made at start, which an egress that verifies its server refuses.
	ServerCert        func(*tls.ClientHelloInfo) (*tls.Certificate, error)
	CertFile, KeyFile string
	// OnReject is called (counting) for each refused handshake.
	OnReject func(Refusal)

	mu      sync.Mutex
	rootMod time.Time
	roots   *x509.CertPool
	selfCrt *tls.Certificate
	certMod time.Time
	cert    *tls.Certificate
}

// Credentials returns gRPC transport credentials that require a client
// certificate chaining to the mesh root. Failing handshakes are counted as
// RefusedNoClientCert or RefusedUntrustedCert and the connection is closed
// before any gRPC frame is read.
func (m *MeshTLS) Credentials() (credentials.TransportCredentials, error) {
	if _, err := m.rootPool(); err != nil { // fail at start, not at the first egress
		return nil, err
	}
	if m.ServerCert == nil { // Istio's CA may not answer yet: asked at the first handshake
		if _, err := m.certificate(nil); err != nil {
			return nil, err
		}
	}
	cfg := &tls.Config{
		MinVersion:     tls.VersionTLS12,
		GetCertificate: m.certificate,
		// Verified in VerifyConnection against the current root, so that a
		// rotated root needs no restart and failures can be counted.
		ClientAuth:       tls.RequestClientCert,
		VerifyConnection: m.verify,
		NextProtos:       []string{"h2"},
	}
	return credentials.NewTLS(cfg), nil
}

func (m *MeshTLS) reject(r Refusal, err error) error {
	if m.OnReject != nil {
		m.OnReject(r)
	}
	return err
}

func (m *MeshTLS) verify(cs tls.ConnectionState) error {
	if len(cs.PeerCertificates) == 0 {
		return m.reject(RefusedNoClientCert, errors.New("als: client certificate required"))
	}
	roots, err := m.rootPool()
	if err != nil {
		return m.reject(RefusedUntrustedCert, err)
	}
	inter := x509.NewCertPool()
	for _, c := range cs.PeerCertificates[1:] {
		inter.AddCert(c)
	}
	leaf := cs.PeerCertificates[0]
	if _, err := leaf.Verify(x509.VerifyOptions{Roots: roots, Intermediates: inter, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}); err != nil {
		return m.reject(RefusedUntrustedCert, fmt.Errorf("als: client certificate: %w", err))
	}
	if _, err := certIdentity(leaf); err != nil {
		return m.reject(RefusedUntrustedCert, fmt.Errorf("als: client certificate: %w", err))
	}
	return nil
}

// rootPool returns the mesh roots, re-reading the file when it changed.
// A read failure after a good read keeps the last good pool (mid-rotation).
func (m *MeshTLS) rootPool() (*x509.CertPool, error) {
	fi, err := os.Stat(m.RootFile)
	m.mu.Lock()
	defer m.mu.Unlock()
	if err == nil && m.roots != nil && fi.ModTime().Equal(m.rootMod) {
		return m.roots, nil
	}
	var pem []byte
	if err == nil {
		pem, err = os.ReadFile(m.RootFile)
	}
	if err == nil {
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			err = fmt.Errorf("no PEM certificate in %s", m.RootFile)
		} else {
			m.roots, m.rootMod = pool, fi.ModTime()
			return pool, nil
		}
	}
	if m.roots != nil {
		return m.roots, nil
	}
	return nil, fmt.Errorf("als: mesh root certificate: %w", err)
}

func (m *MeshTLS) certificate(hello *tls.ClientHelloInfo) (*tls.Certificate, error) {
	if m.ServerCert != nil {
		return m.ServerCert(hello)
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.CertFile == "" {
		if m.selfCrt == nil {
			c, err := selfSigned()
			if err != nil {
				return nil, err
			}
			m.selfCrt = c
		}
		return m.selfCrt, nil
	}
	fi, err := os.Stat(m.CertFile)
	if err == nil && m.cert != nil && fi.ModTime().Equal(m.certMod) {
		return m.cert, nil
	}
	if err == nil {
		var c tls.Certificate
		if c, err = tls.LoadX509KeyPair(m.CertFile, m.KeyFile); err == nil {
			m.cert, m.certMod = &c, fi.ModTime()
			return m.cert, nil
		}
	}
	if m.cert != nil {
		return m.cert, nil
	}
	return nil, fmt.Errorf("als: server certificate: %w", err)
}

func selfSigned() (*tls.Certificate, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 120))
	if err != nil {
		return nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber: serial,
		Subject:      pkix.Name{CommonName: "leanmesh-controller-als"},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(10 * 365 * 24 * time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return nil, err
	}
	return &tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}, nil
}
