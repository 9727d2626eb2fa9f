package main

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"flag"
	"math/big"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func writePair(t *testing.T, dir, cn string, mod time.Time) (string, string) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: cn},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour)}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	kb, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	cert, keyPath := filepath.Join(dir, "tls.crt"), filepath.Join(dir, "tls.key")
	if err := os.WriteFile(cert, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(keyPath, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kb}), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Chtimes(cert, mod, mod); err != nil {
		t.Fatal(err)
	}
	return cert, keyPath
}

func TestWorkloadTableFlags(t *testing.T) {
	dir := t.TempDir()
	cert, key := writePair(t, dir, "first", time.Unix(1_700_000_000, 0))
	cases := []struct {
		args    []string
		enabled bool
		tls     bool
		err     string
	}{
		{args: nil},
		{args: []string{"-workload-table"}, err: "needs --workload-table-tls-cert"},
		{args: []string{"-workload-table", "-workload-table-plaintext"}, enabled: true},
		{args: []string{"-workload-table", "-workload-table-tls-cert", cert}, err: "go together"},
		{args: []string{"-workload-table", "-workload-table-tls-cert", cert, "-workload-table-tls-key", key, "-workload-table-plaintext"}, err: "contradicts"},
		{args: []string{"-workload-table", "-workload-table-tls-cert", cert, "-workload-table-tls-key", key}, enabled: true, tls: true},
		{args: []string{"-workload-table", "-workload-table-tls-cert", filepath.Join(dir, "missing"), "-workload-table-tls-key", key}, err: "certificate"},
		{args: []string{"-workload-table", "-workload-table-plaintext", "-cluster-id", ""}, err: "--cluster-id"},
	}
	for _, c := range cases {
		fs := flag.NewFlagSet("controller", flag.ContinueOnError)
		f := workloadTableFlagSet(fs)
		if err := fs.Parse(c.args); err != nil {
			t.Fatal(err)
		}
		opts, enabled, err := f.options()
		if c.err != "" {
			if err == nil || !strings.Contains(err.Error(), c.err) {
				t.Errorf("%v: error %v, want %q", c.args, err, c.err)
			}
			continue
		}
		if err != nil || enabled != c.enabled || (opts.TLS != nil) != c.tls {
			t.Errorf("%v: enabled %v tls %v err %v", c.args, enabled, opts.TLS != nil, err)
		}
		if enabled && (opts.Address != ":15013" || opts.ClusterID != "Kubernetes" || opts.Audience != "istio-ca" || !opts.WorkloadEntries) {
			t.Errorf("%v: defaults %+v", c.args, opts)
		}
	}
}

// A rotated certificate (the Secret's files replaced) is served from the
// next handshake on.
func TestWorkloadTableCertificateReload(t *testing.T) {
	dir := t.TempDir()
	cert, key := writePair(t, dir, "first", time.Unix(1_700_000_000, 0))
	kp := &keyPair{cert: cert, key: key}
	cn := func() string {
		c, err := kp.get(nil)
		if err != nil {
			t.Fatal(err)
		}
		x, err := x509.ParseCertificate(c.Certificate[0])
		if err != nil {
			t.Fatal(err)
		}
		return x.Subject.CommonName
	}
	if got := cn(); got != "first" {
		t.Fatalf("cn %q", got)
	}
	writePair(t, dir, "second", time.Unix(1_700_000_100, 0))
	if got := cn(); got != "second" {
		t.Errorf("after rotation cn %q, want second", got)
	}
	os.Remove(cert)
	if got := cn(); got != "second" {
		t.Errorf("mid-rotation cn %q, want the last good pair", got)
	}
}
