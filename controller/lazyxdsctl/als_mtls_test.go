package lazyxdsctl

import (
	"context"
	"crypto/tls"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	accesslogv3 "github.com/envoyproxy/go-control-plane/envoy/service/accesslog/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/leanmesh/leanmesh/controller/api/v1alpha1"
	"github.com/leanmesh/leanmesh/controller/lazyxds"
	"github.com/leanmesh/leanmesh/e2e/cluster"
)

// TestALSAdmitsOnlyTheEgressIdentity runs the loop with ALS behind mutual
// TLS against a real istiod: certificates come from istiod's CA through
// the CSR API istio-agent uses, and the controller trusts the root istiod
// wrote into its namespace (istio-ca-root-cert, as the chart mounts it).
// Only the egress's identity may teach dependencies; every other caller
// is refused before any entry is read, and counted.
func TestALSAdmitsOnlyTheEgressIdentity(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	env, istiod := cluster.StartIstiodT(t, ctx, withCRDs, rootNS, shop)
	cfg := env.ServiceAccountConfigT(t, ctx, generatedRBAC, controllerNS, controllerSA)
	c := env.Client
	for _, w := range shopWorkloads[:2] {
		if _, err := env.CreateWorkload(ctx, w); err != nil {
			t.Fatal(err)
		}
	}
	if err := c.Create(ctx, &v1alpha1.LazyXDS{ObjectMeta: metav1.ObjectMeta{Namespace: shop, Name: "lazy"}}); err != nil {
		t.Fatal(err)
	}

	// The root istiod distributes to every namespace, mounted as a file.
	var root []byte
	poll(t, 60*time.Second, "istio-ca-root-cert in the controller's namespace", func() error {
		var cm corev1.ConfigMap
		if err := c.Get(ctx, client.ObjectKey{Namespace: controllerNS, Name: "istio-ca-root-cert"}, &cm); err != nil {
			return err
		}
		root = []byte(cm.Data["root-cert.pem"])
		return nil
	})
	rootFile := filepath.Join(t.TempDir(), "root-cert.pem")
	if err := os.WriteFile(rootFile, root, 0o600); err != nil {
		t.Fatal(err)
	}
	ctl := startController(t, cfg, env, func(o *Options) { o.ALSPlaintext, o.ALSMeshRootFile = false, rootFile })

	egNS, egSA := lazyxds.Egress{}.ServiceAccount()
	egressCert, egressRoot, err := istiod.WorkloadCertificate(ctx, env, egNS, egSA)
	if err != nil {
		t.Fatal(err)
	}
	if string(egressRoot) != string(root) {
		t.Fatal("istiod signed with a root other than the one in istio-ca-root-cert")
	}
	otherCert, _, err := istiod.WorkloadCertificate(ctx, env, shop, "default")
	if err != nil {
		t.Fatal(err)
	}
	mtls := func(cert *tls.Certificate) grpc.DialOption {
		cfg := &tls.Config{InsecureSkipVerify: true} // as the egress: it does not verify the controller
		if cert != nil {
			cfg.Certificates = []tls.Certificate{*cert}
		}
		return grpc.WithTransportCredentials(credentials.NewTLS(cfg))
	}
	refused := func() map[string]uint64 { return ctl.loop.ALS().Stats().Refused }

	attempt := func(opt grpc.DialOption) error {
		conn, err := grpc.NewClient(ctl.alsAddr, opt)
		if err != nil {
			return err
		}
		defer conn.Close()
		st, err := accesslogv3.NewAccessLogServiceClient(conn).StreamAccessLogs(ctx)
		if err != nil {
			return err
		}
		a := &alsClient{stream: st}
		_ = a.sendErr(caller0IP, "outbound|9080||reviews.shop.svc.cluster.local", "reviews:9080")
		_, err = st.CloseAndRecv()
		return err
	}
	for _, tc := range []struct {
		name   string
		opt    grpc.DialOption
		want   codes.Code
		reason string
	}{
		{"plaintext", grpc.WithTransportCredentials(insecure.NewCredentials()), codes.Unavailable, ""},
		{"TLS without a client certificate", mtls(nil), codes.Unavailable, "no_client_certificate"},
		{"istiod certificate of another workload (shop/default)", mtls(&otherCert), codes.PermissionDenied, "forbidden_identity"},
	} {
		before := refused()[tc.reason]
		err := attempt(tc.opt)
		if status.Code(err) != tc.want {
			t.Errorf("%s: %v, want %v", tc.name, err, tc.want)
		}
		if tc.reason != "" && refused()[tc.reason] <= before {
			t.Errorf("%s: refused[%s] did not grow: %v", tc.name, tc.reason, refused())
		}
		t.Logf("%s: refused with %v", tc.name, status.Code(err))
	}
	if n := ctl.loop.ALS().Stats().Received; n != 0 {
		t.Fatalf("%d entries read from refused callers", n)
	}

	// The egress's own istiod certificate teaches the dependency.
	eg := dialALS(t, ctl.alsAddr, mtls(&egressCert))
	eg.send(t, caller0IP, "outbound|9080||reviews.shop.svc.cluster.local", "reviews:9080")
	d := poll(t, 30*time.Second, "dependency learned over mutual TLS", func() error {
		h, _, err := sidecarHostsOf(ctx, c, shop, "leanmesh-lazy-productpage-0")
		if err != nil {
			return err
		}
		if !slices.Contains(h, host("reviews")) {
			return fmt.Errorf("hosts %v", h)
		}
		return nil
	})
	t.Logf("egress identity %s/%s (istiod certificate): dependency in the Sidecar after %s; refused so far %v",
		egNS, egSA, d.Round(time.Millisecond), refused())
}

const caller0IP = "10.244.1.11" // shopWorkloads[0], productpage
