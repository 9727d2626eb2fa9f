package hostile

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
	"net"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/protobuf/proto"
	networkingv1alpha3 "istio.io/client-go/pkg/apis/networking/v1alpha3"
	appsv1 "k8s.io/api/apps/v1"
	authenticationv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/leanmesh/leanmesh/controller/lazyxds"
	"github.com/leanmesh/leanmesh/e2e/cluster"
)

// alsServerCheck is what the egress's Envoy checks on the ALS server with
// the UpstreamTlsContext the controller rendered: the chain must verify
// against the mesh root (what SDS ROOTCA serves) and some SAN of the leaf
// must equal one of match_subject_alt_names' exact values (Envoy's
// DefaultCertValidator: any SAN type; no hostname check otherwise).
type alsServerCheck struct {
	roots *x509.CertPool
	sans  []string
	sni   string
}

func (c alsServerCheck) tlsConfig(clientCert tls.Certificate) *tls.Config {
	return &tls.Config{
		Certificates: []tls.Certificate{clientCert}, ServerName: c.sni, NextProtos: []string{"h2"},
		InsecureSkipVerify: true, // replaced by VerifyPeerCertificate: Envoy's rules, not Go's hostname check
		VerifyPeerCertificate: func(raw [][]byte, _ [][]*x509.Certificate) error {
			if len(raw) == 0 {
				return errors.New("no server certificate")
			}
			certs := make([]*x509.Certificate, len(raw))
			for i, r := range raw {
				var err error
				if certs[i], err = x509.ParseCertificate(r); err != nil {
					return err
				}
			}
			inter := x509.NewCertPool()
			for _, ic := range certs[1:] {
				inter.AddCert(ic)
			}
			if _, err := certs[0].Verify(x509.VerifyOptions{Roots: c.roots, Intermediates: inter, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}); err != nil {
				return fmt.Errorf("CERTIFICATE_VERIFY_FAILED: %w", err)
			}
			var have []string
			for _, u := range certs[0].URIs {
				have = append(have, u.String())
			}
			have = append(append(have, certs[0].DNSNames...), certs[0].EmailAddresses...)
			for _, ip := range certs[0].IPAddresses {
				have = append(have, ip.String())
			}
			for _, s := range c.sans {
				if slices.Contains(have, s) {
					return nil
				}
			}
			return fmt.Errorf("SAN mismatch: server presents %v, want %v", have, c.sans)
		},
	}
}

// TestALSServerIdentityVerifiedByEgress: with --lazyxds-als-istio-ca the
// real controller binary gets its ALS server certificate from a real
// istiod's CA for its own SPIFFE ID (a CSR authenticated by its
// service-account token, as istio-agent does), and renders the lazy
// egress's ALS cluster to verify that identity as istiod has a proxy
// verify an ISTIO_MUTUAL peer. Checked: istiod accepts the EnvoyFilter and
// serves the cluster to an egress pod with the same ROOTCA secret config
// as its own mesh clusters; an egress following that config (its istiod
// certificate, the mesh root, the SAN) reaches the controller and teaches
// a dependency; and it refuses servers presenting a self-signed
// certificate (the old default), another workload's mesh certificate, or
// the controller's identity signed by another CA.
func TestALSServerIdentityVerifiedByEgress(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 6*time.Minute)
	defer cancel()
	m := newMesh(t)
	env := m.env
	istiod, err := env.StartIstiod(ctx, cluster.IstiodOptions{})
	if err != nil {
		t.Fatal(err)
	}
	const controllerSA = "leanmesh"
	identity := "spiffe://cluster.local/ns/" + controllerNS + "/sa/" + controllerSA
	if err := env.Client.Create(ctx, &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Namespace: controllerNS, Name: controllerSA}}); err != nil {
		t.Fatal(err)
	}
	cs, err := kubernetes.NewForConfig(env.Config)
	if err != nil {
		t.Fatal(err)
	}
	// The projected istio-token the chart mounts (audience istio-ca).
	tr, err := cs.CoreV1().ServiceAccounts(controllerNS).CreateToken(ctx, controllerSA, &authenticationv1.TokenRequest{
		Spec: authenticationv1.TokenRequestSpec{Audiences: []string{"istio-ca"}}}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	tokenFile, rootFile := filepath.Join(dir, "istio-token"), filepath.Join(dir, "root-cert.pem")
	if err := os.WriteFile(tokenFile, []byte(tr.Status.Token), 0o600); err != nil {
		t.Fatal(err)
	}
	// The root istiod writes into every namespace (istio-ca-root-cert).
	var root []byte
	for deadline := time.Now().Add(time.Minute); ; time.Sleep(200 * time.Millisecond) {
		var cm corev1.ConfigMap
		if err := env.Client.Get(ctx, client.ObjectKey{Namespace: controllerNS, Name: "istio-ca-root-cert"}, &cm); err == nil {
			root = []byte(cm.Data["root-cert.pem"])
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("no istio-ca-root-cert in the controller's namespace")
		}
	}
	if err := os.WriteFile(rootFile, root, 0o600); err != nil {
		t.Fatal(err)
	}
	roots := x509.NewCertPool()
	roots.AppendCertsFromPEM(root)

	p := startController(t, env, "als-identity", "--leader-elect=false", "--lazyxds-als-mesh-root="+rootFile,
		"--lazyxds-als-istio-ca="+istiod.SecureXDSAddr, "--lazyxds-als-istio-ca-server-name=istiod.istio-system.svc",
		"--lazyxds-als-istio-token="+tokenFile, "--lazyxds-als-identity="+identity)
	p.waitALS(t, 3*time.Minute)

	// The egress objects as the controller applied them.
	eg := lazyxds.Egress{}
	egNS, egName := eg.ServiceAccount()
	var ef networkingv1alpha3.EnvoyFilter
	var egDep appsv1.Deployment
	for deadline := time.Now().Add(time.Minute); ; time.Sleep(200 * time.Millisecond) {
		err1 := env.Client.Get(ctx, client.ObjectKey{Namespace: egNS, Name: egName}, &ef)
		err2 := env.Client.Get(ctx, client.ObjectKey{Namespace: egNS, Name: egName}, &egDep)
		if err1 == nil && err2 == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("egress objects: %v %v", err1, err2)
		}
	}

	// istiod translates the patch for an egress pod: the ALS cluster it serves.
	if _, err := env.CreateWorkload(ctx, cluster.Workload{Namespace: egNS, Name: "lazy-egress-pod", IP: "10.244.9.9",
		ServiceAccount: egName, Labels: egDep.Spec.Template.Labels, Ports: []cluster.Port{{Name: "http", Port: 8080}}}); err != nil {
		t.Fatal(err)
	}
	opts := cluster.SidecarFor(&cluster.WorkloadObjects{Workload: cluster.Workload{Namespace: egNS, Name: "lazy-egress-pod",
		PodName: "lazy-egress-pod-0", IP: "10.244.9.9", ServiceAccount: egName, Labels: egDep.Spec.Template.Labels}})
	opts.Router = true
	gw, err := cluster.ConnectSidecar(ctx, istiod.XDSAddr, opts)
	if err != nil {
		t.Fatal(err)
	}
	defer gw.Close()
	meshCluster := "outbound|9080||" + shopWorkloads[0].Name + ".shop.svc.cluster.local"
	snap, err := gw.WaitFor(ctx, func(s cluster.Snapshot) bool {
		return s.Cluster("leanmesh-als") != nil && s.Cluster(meshCluster) != nil
	})
	if err != nil {
		t.Fatalf("istiod did not serve the ALS cluster to the egress: %v", err)
	}
	served := upstreamTLS(t, snap.Cluster("leanmesh-als").GetTransportSocket().GetTypedConfig().GetValue())
	cvc := served.GetCommonTlsContext().GetCombinedValidationContext()
	var sans []string
	// The field Istio's own ISTIO_MUTUAL clusters set (and the egress mirrors),
	// deprecated in Envoy's API but what istiod serves.
	for _, mt := range cvc.GetDefaultValidationContext().GetMatchSubjectAltNames() { //nolint:staticcheck // SA1019: see above

		sans = append(sans, mt.GetExact())
	}
	if !slices.Equal(sans, []string{identity}) {
		t.Fatalf("served ALS cluster verifies SANs %v, want [%s]", sans, identity)
	}
	// Istio's own mesh cluster on the same proxy (auto mTLS: the istio
	// transport socket match) gets its root the same way.
	var istioRoot *tlsv3.SdsSecretConfig
	for _, tm := range snap.Cluster(meshCluster).GetTransportSocketMatches() {
		if tm.GetName() == "tlsMode-istio" {
			istioRoot = upstreamTLS(t, tm.GetTransportSocket().GetTypedConfig().GetValue()).GetCommonTlsContext().
				GetCombinedValidationContext().GetValidationContextSdsSecretConfig()
		}
	}
	if istioRoot == nil || !proto.Equal(istioRoot, cvc.GetValidationContextSdsSecretConfig()) {
		t.Fatalf("the ALS cluster's root %v differs from Istio's mesh cluster's %v", cvc.GetValidationContextSdsSecretConfig(), istioRoot)
	}
	t.Logf("istiod serves %s to the egress: SAN exact %v, root from SDS %q as on Istio's own %s",
		"leanmesh-als", sans, cvc.GetValidationContextSdsSecretConfig().GetName(), meshCluster)

	check := alsServerCheck{roots: roots, sans: sans, sni: served.GetSni()}
	egressCert, _, err := istiod.WorkloadCertificate(ctx, env, egNS, egName)
	if err != nil {
		t.Fatal(err)
	}
	dial := func(addr string) (*tls.ConnectionState, error) {
		// The timeout covers the handshake, and the controller's first
		// handshake waits for its certificate from istiod (CSR, TokenReview,
		// signing): slow on a busy machine.
		c, err := tls.DialWithDialer(&net.Dialer{Timeout: 30 * time.Second}, "tcp", addr, check.tlsConfig(egressCert))
		if err != nil {
			return nil, err
		}
		defer c.Close()
		st := c.ConnectionState()
		return &st, nil
	}

	// The controller: accepted, and an access log teaches a dependency.
	st, err := dial(p.alsAddr)
	if err != nil {
		t.Fatalf("the egress refuses the controller's certificate: %v", err)
	}
	leaf := st.PeerCertificates[0]
	t.Logf("controller's ALS certificate: %v, issued by %q, valid %s → %s: accepted", leaf.URIs, leaf.Issuer.CommonName,
		leaf.NotBefore.Format(time.DateTime), leaf.NotAfter.Format(time.DateTime))
	conn, err := grpc.NewClient(p.alsAddr, grpc.WithTransportCredentials(credentials.NewTLS(check.tlsConfig(egressCert))))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	cctx, ccancel := context.WithTimeout(ctx, 20*time.Second)
	defer ccancel()
	stream, err := newALSClient(cctx, conn)
	if err != nil {
		t.Fatal(err)
	}
	d := dep{"productpage", "reviews"}
	if err := stream.Send(batch(true, logEntry(ipOf(d.from), "outbound|9080||reviews.shop.svc.cluster.local", "reviews:9080"))); err != nil {
		t.Fatal(err)
	}
	if _, err := stream.CloseAndRecv(); err != nil {
		t.Fatal(err)
	}
	took, err := m.waitSidecars([]dep{d}, time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("an access log over the verified connection taught %s, in its Sidecar %s later", d, took.Round(time.Millisecond))

	// Servers the egress must refuse.
	selfSigned := func() tls.Certificate {
		key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "leanmesh-controller-als"},
			NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
			KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}
		der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
		if err != nil {
			t.Fatal(err)
		}
		return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}
	}
	other, _, err := istiod.WorkloadCertificate(ctx, env, shop, "default")
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		name string
		cert tls.Certificate
	}{
		{"self-signed (the controller's default without a CA)", selfSigned()},
		{"istiod's certificate for shop/default", other},
		{"the controller's identity from another CA", newMeshCA(t).workload(t, controllerNS, controllerSA)},
	} {
		lis, err := tls.Listen("tcp", "127.0.0.1:0", &tls.Config{Certificates: []tls.Certificate{c.cert}, NextProtos: []string{"h2"}})
		if err != nil {
			t.Fatal(err)
		}
		go func() {
			for {
				conn, err := lis.Accept()
				if err != nil {
					return
				}
				_ = conn.(*tls.Conn).Handshake()
				conn.Close()
			}
		}()
		_, err = dial(lis.Addr().String())
		lis.Close()
		if err == nil {
			t.Errorf("%s: the egress accepted it", c.name)
			continue
		}
		t.Logf("%-52s refused: %v", c.name, err)
	}
}

func upstreamTLS(t *testing.T, raw []byte) *tlsv3.UpstreamTlsContext {
	t.Helper()
	u := &tlsv3.UpstreamTlsContext{}
	if err := proto.Unmarshal(raw, u); err != nil {
		t.Fatal(err)
	}
	return u
}
