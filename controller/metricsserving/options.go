// Package metricsserving decides how the controller serves /metrics: over
// HTTPS with every request authenticated (TokenReview) and authorized
// (SubjectAccessReview for GET /metrics) by the API server, through
// controller-runtime's secure-serving filter as kubebuilder projects do, or
// on plain HTTP where the operator chooses that explicitly.
package metricsserving

import (
	"crypto/tls"

	"sigs.k8s.io/controller-runtime/pkg/metrics/filters"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"
)

// What the secure filter asks the API server for each scrape. `make generate`
// writes config/rbac/metrics-auth/role.yaml from these markers; the chart
// grants it only with metrics.secure.
//
// +kubebuilder:rbac:groups=authentication.k8s.io,resources=tokenreviews,verbs=create
// +kubebuilder:rbac:groups=authorization.k8s.io,resources=subjectaccessreviews,verbs=create

// Config is the command line's choice.
type Config struct {
	// BindAddress of the endpoint; "0" disables it.
	BindAddress string
	// Secure serves HTTPS with authentication and authorization.
	Secure bool
	// CertDir holds tls.crt and tls.key; empty: a self-signed certificate
	// generated at start (Prometheus then needs insecureSkipVerify).
	CertDir string
}

// Options returns the manager's metrics server options.
func (c Config) Options() metricsserver.Options {
	o := metricsserver.Options{BindAddress: c.BindAddress}
	if !c.Secure {
		return o
	}
	o.SecureServing = true
	o.FilterProvider = filters.WithAuthenticationAndAuthorization
	o.CertDir = c.CertDir
	// HTTP/2 off: CVE-2023-44487/CVE-2023-39325 (rapid reset), as kubebuilder's scaffold does.
	o.TLSOpts = []func(*tls.Config){func(t *tls.Config) { t.NextProtos = []string{"http/1.1"} }}
	return o
}
