package workloadtable

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	networkingv1 "istio.io/client-go/pkg/apis/networking/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller"
	"sigs.k8s.io/controller-runtime/pkg/manager"
)

// Options configure the workload table service.
type Options struct {
	ClusterID string // the `cluster` of every workload (Istio's CLUSTER_ID)
	// Address to listen on (e.g. ":15020"), unless Listener is set.
	Address  string
	Listener net.Listener
	// TLS serves the stream over TLS; nil means plaintext (tests, or behind a
	// TLS-terminating hop). Clients send bearer tokens: use TLS in production.
	TLS      *tls.Config
	Audience string        // token audience, default DefaultAudience
	Reviewer TokenReviewer // default KubeTokenReviewer with the manager's client
	// WorkloadEntries also serves Istio WorkloadEntries (needs their CRD).
	WorkloadEntries bool
}

// Service is the running table: reconcilers feeding the index, and the gRPC
// server. It runs on every replica (not only the leader): each serves its
// own proxies from its own informer cache.
type Service struct {
	opts  Options
	index *Index
}

// Setup registers the reconcilers and the server with mgr.
func Setup(mgr ctrl.Manager, opts Options) (*Service, error) {
	if opts.Listener == nil && opts.Address == "" {
		return nil, errors.New("workloadtable: Address or Listener is required")
	}
	if opts.Reviewer == nil {
		opts.Reviewer = &CachedReviewer{Next: KubeTokenReviewer{Client: mgr.GetClient(), Audience: opts.Audience}}
	}
	s := &Service{opts: opts, index: NewIndex()}
	everyReplica := controller.Options{NeedLeaderElection: ptrTo(false)}
	err := ctrl.NewControllerManagedBy(mgr).Named("workloadtable-pods").For(&corev1.Pod{}).
		WithOptions(everyReplica).Complete(&podReconciler{c: mgr.GetClient(), s: s})
	if err != nil {
		return nil, err
	}
	if opts.WorkloadEntries {
		err = ctrl.NewControllerManagedBy(mgr).Named("workloadtable-workloadentries").For(&networkingv1.WorkloadEntry{}).
			WithOptions(everyReplica).Complete(&weReconciler{c: mgr.GetClient(), s: s})
		if err != nil {
			return nil, err
		}
	}
	if err := mgr.Add(s); err != nil {
		return nil, err
	}
	return s, nil
}

// Index is the service's address index (tests, debugging).
func (s *Service) Index() *Index { return s.index }

// NeedLeaderElection: serve on every replica.
func (s *Service) NeedLeaderElection() bool { return false }

// Start serves the stream until ctx ends (manager.Runnable).
func (s *Service) Start(ctx context.Context) error {
	lis := s.opts.Listener
	if lis == nil {
		var err error
		if lis, err = net.Listen("tcp", s.opts.Address); err != nil {
			return fmt.Errorf("workloadtable: %w", err)
		}
	}
	var opts []grpc.ServerOption
	if s.opts.TLS != nil {
		opts = append(opts, grpc.Creds(credentials.NewTLS(s.opts.TLS)))
	}
	srv := NewGRPCServer(ctx, s.index.Cache(), s.opts.Reviewer, opts...)
	go func() {
		<-ctx.Done()
		srv.Stop() // streams are long-lived: GracefulStop would wait for all proxies to leave
	}()
	if err := srv.Serve(lis); err != nil && !errors.Is(err, grpc.ErrServerStopped) {
		return err
	}
	return nil
}

var _ manager.LeaderElectionRunnable = (*Service)(nil)

type podReconciler struct {
	c client.Reader
	s *Service
}

func (r *podReconciler) Reconcile(ctx context.Context, req ctrl.Request) (ctrl.Result, error) {
	key := "pod/" + req.String()
	var pod corev1.Pod
	if err := r.c.Get(ctx, req.NamespacedName, &pod); err != nil {
		if apierrors.IsNotFound(err) {
			return ctrl.Result{}, r.s.index.Delete(key)
		}
		return ctrl.Result{}, err
	}
	ips, w, ok := FromPod(&pod, r.s.opts.ClusterID)
	if !ok {
		return ctrl.Result{}, r.s.index.Delete(key)
	}
	return ctrl.Result{}, r.s.index.Set(key, ips, w)
}

type weReconciler struct {
	c client.Reader
	s *Service
}

func (r *weReconciler) Reconcile(ctx context.Context, req ctrl.Request) (ctrl.Result, error) {
	key := "workloadentry/" + req.String()
	var we networkingv1.WorkloadEntry
	if err := r.c.Get(ctx, req.NamespacedName, &we); err != nil {
		if apierrors.IsNotFound(err) {
			return ctrl.Result{}, r.s.index.Delete(key)
		}
		return ctrl.Result{}, err
	}
	ips, w, ok := FromWorkloadEntry(&we, r.s.opts.ClusterID)
	if !ok {
		return ctrl.Result{}, r.s.index.Delete(key)
	}
	return ctrl.Result{}, r.s.index.Set(key, ips, w)
}

func ptrTo[T any](v T) *T { return &v }
