package cluster

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
	"net/url"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/metadata"
	securityapi "istio.io/api/security/v1alpha1"
	authenticationv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
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
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return tls.Certificate{}, nil, err
	}
	id, _ := url.Parse(fmt.Sprintf("spiffe://cluster.local/ns/%s/sa/%s", namespace, serviceAccount))
	csr, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{URIs: []*url.URL{id}}, key)
	if err != nil {
		return tls.Certificate{}, nil, err
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
	cctx = metadata.AppendToOutgoingContext(cctx, "authorization", "Bearer "+tr.Status.Token, "ClusterID", "Kubernetes")
	resp, err := securityapi.NewIstioCertificateServiceClient(conn).CreateCertificate(cctx, &securityapi.IstioCertificateRequest{
		Csr:              string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: csr})),
		ValidityDuration: 3600,
	})
	if err != nil {
		return tls.Certificate{}, nil, fmt.Errorf("istiod CSR for %s: %w", id, err)
	}
	chain := resp.GetCertChain()
	if len(chain) < 2 {
		return tls.Certificate{}, nil, errors.New("istiod returned no chain")
	}
	var out tls.Certificate
	for _, c := range chain[:len(chain)-1] {
		for rest := []byte(c); ; {
			var b *pem.Block
			if b, rest = pem.Decode(rest); b == nil {
				break
			}
			out.Certificate = append(out.Certificate, b.Bytes)
		}
	}
	out.PrivateKey = key
	return out, []byte(chain[len(chain)-1]), nil
}
