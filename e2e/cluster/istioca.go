package cluster

import (
	"context"
	"crypto/tls"
	"fmt"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	authenticationv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	"github.com/leanmesh/leanmesh/controller/lazyxds/als"
)

// WorkloadCertificate gets a workload certificate for namespace/serviceAccount
// from istiod's CA exactly as istio-agent does for a proxy: a CSR with the
// SPIFFE URI over istiod's secure port, authenticated by the service
// account's token for audience istio-ca (TokenRequest, as the projected
// istio-token). It returns the key pair (leaf and intermediates) and the
// root, PEM-encoded, that istiod signed with.
func (i *Istiod) WorkloadCertificate(ctx context.Context, e *Env, namespace, serviceAccount string) (tls.Certificate, []byte, error) {
	cs, err := kubernetes.NewForConfig(e.Config)
	if err != nil {
		return tls.Certificate{}, nil, err
	}
	if err := e.CreateNamespace(ctx, namespace, nil); err != nil && !apierrors.IsAlreadyExists(err) {
		return tls.Certificate{}, nil, err
	}
	_, err = cs.CoreV1().ServiceAccounts(namespace).Create(ctx, &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: serviceAccount}}, metav1.CreateOptions{})
	if err != nil && !apierrors.IsAlreadyExists(err) {
		return tls.Certificate{}, nil, err
	}
	tr, err := cs.CoreV1().ServiceAccounts(namespace).CreateToken(ctx, serviceAccount, &authenticationv1.TokenRequest{
		Spec: authenticationv1.TokenRequestSpec{Audiences: []string{"istio-ca"}},
	}, metav1.CreateOptions{})
	if err != nil {
		return tls.Certificate{}, nil, fmt.Errorf("token for %s/%s: %w", namespace, serviceAccount, err)
	}
	// istiod's serving certificate is signed by the same CA; the client side
	// of this helper only needs the response.
	conn, err := grpc.NewClient(i.SecureXDSAddr, grpc.WithTransportCredentials(credentials.NewTLS(&tls.Config{InsecureSkipVerify: true})))
	if err != nil {
		return tls.Certificate{}, nil, err
	}
	defer conn.Close()
	cctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	id := fmt.Sprintf("spiffe://cluster.local/ns/%s/sa/%s", namespace, serviceAccount)
	cert, root, err := als.RequestCertificate(cctx, conn, tr.Status.Token, id, ClusterID, time.Hour)
	if err != nil {
		return tls.Certificate{}, nil, fmt.Errorf("istiod CSR for %s: %w", id, err)
	}
	return *cert, root, nil
}
