package main

import (
	"crypto/tls"
	"errors"
	"flag"
	"fmt"
	"os"
	"sync"
	"time"

	"github.com/leanmesh/leanmesh/controller/workloadtable"
)

// workloadTableFlags configure the workload stream the leanmesh-tcp filter
// subscribes to (filters/workloads/PROTOCOL.md). Off by default: the
// controller refuses to install leanmesh-tcp while Envoy's golang network
// filter drains reads (docs/tcp.md), and the service keeps a cluster-wide
// Pod informer, which costs memory for nothing until then.
type workloadTableFlags struct {
	enabled         *bool
	address         *string
	clusterID       *string
	certFile        *string
	keyFile         *string
	plaintext       *bool
	audience        *string
	workloadEntries *bool
}

func workloadTableFlagSet(fs *flag.FlagSet) *workloadTableFlags {
	return &workloadTableFlags{
		enabled:   fs.Bool("workload-table", false, "serve the workload table (address -> workload) to the proxies' leanmesh-tcp filter"),
		address:   fs.String("workload-table-address", ":15013", "listen address of the workload stream (delta xDS over gRPC)"),
		clusterID: fs.String("cluster-id", "Kubernetes", "the cluster of every workload in the table (Istio's CLUSTER_ID)"),
		certFile:  fs.String("workload-table-tls-cert", "", "PEM certificate of the workload stream (re-read when the file changes)"),
		keyFile:   fs.String("workload-table-tls-key", "", "PEM private key of --workload-table-tls-cert"),
		plaintext: fs.Bool("workload-table-plaintext", false, "serve the workload stream without TLS: proxies' bearer tokens then travel in clear (tests only)"),
		audience:  fs.String("workload-table-audience", workloadtable.DefaultAudience, "audience the proxies' service-account tokens must carry (TokenReview)"),
		workloadEntries: fs.Bool("workload-table-workloadentries", true,
			"also serve Istio WorkloadEntries (VMs); needs the networking.istio.io WorkloadEntry CRD"),
	}
}

// options validates the flags; enabled is false when --workload-table is.
// TLS is required unless plaintext is asked for explicitly: the stream
// carries service-account tokens.
func (f *workloadTableFlags) options() (opts workloadtable.Options, enabled bool, err error) {
	if !*f.enabled {
		return opts, false, nil
	}
	if *f.address == "" {
		return opts, false, errors.New("--workload-table-address is empty")
	}
	if *f.clusterID == "" {
		return opts, false, errors.New("--cluster-id is empty")
	}
	opts = workloadtable.Options{ClusterID: *f.clusterID, Address: *f.address, Audience: *f.audience, WorkloadEntries: *f.workloadEntries}
	hasTLS := *f.certFile != "" || *f.keyFile != ""
	switch {
	case hasTLS && *f.plaintext:
		return opts, false, errors.New("--workload-table-plaintext contradicts --workload-table-tls-cert/-key")
	case hasTLS && (*f.certFile == "" || *f.keyFile == ""):
		return opts, false, errors.New("--workload-table-tls-cert and --workload-table-tls-key go together")
	case hasTLS:
		kp := &keyPair{cert: *f.certFile, key: *f.keyFile}
		if _, err := kp.get(nil); err != nil { // fail at start, not at the first proxy
			return opts, false, err
		}
		opts.TLS = &tls.Config{MinVersion: tls.VersionTLS12, GetCertificate: kp.get}
	case !*f.plaintext:
		return opts, false, errors.New("--workload-table needs --workload-table-tls-cert and --workload-table-tls-key, or --workload-table-plaintext")
	}
	return opts, true, nil
}

// keyPair reloads a certificate when its file changes (cert-manager and
// kubelet rotate mounted Secrets in place). Streams are long-lived, so a
// stat per handshake costs nothing.
type keyPair struct {
	cert, key string
	mu        sync.Mutex
	mod       time.Time
	cur       *tls.Certificate
}

func (k *keyPair) get(*tls.ClientHelloInfo) (*tls.Certificate, error) {
	fi, err := os.Stat(k.cert)
	k.mu.Lock()
	defer k.mu.Unlock()
	if err != nil {
		if k.cur != nil {
			return k.cur, nil // mid-rotation: keep serving the last good pair
		}
		return nil, fmt.Errorf("workload table certificate: %w", err)
	}
	if k.cur != nil && fi.ModTime().Equal(k.mod) {
		return k.cur, nil
	}
	c, err := tls.LoadX509KeyPair(k.cert, k.key)
	if err != nil {
		if k.cur != nil {
			return k.cur, nil
		}
		return nil, fmt.Errorf("workload table certificate: %w", err)
	}
	k.cur, k.mod = &c, fi.ModTime()
	return k.cur, nil
}
