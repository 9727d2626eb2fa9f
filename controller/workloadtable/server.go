package workloadtable

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync/atomic"
	"time"

	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	cachev3 "github.com/envoyproxy/go-control-plane/pkg/cache/v3"
	serverv3 "github.com/envoyproxy/go-control-plane/pkg/server/v3"
	"golang.org/x/time/rate"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	authenticationv1 "k8s.io/api/authentication/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"
	ctrllog "sigs.k8s.io/controller-runtime/pkg/log"
)

// DefaultAudience is the audience of the token Istio's injector projects
// into every sidecar (/var/run/secrets/tokens/istio-token).
const DefaultAudience = "istio-ca"

// TokenReviewer authenticates a bearer token, returning the caller's
// username (system:serviceaccount:<ns>:<name>).
type TokenReviewer interface {
	Review(ctx context.Context, token string) (string, error)
}

// KubeTokenReviewer asks the API server (TokenReview); the controller's
// service account needs `create` on tokenreviews.authentication.k8s.io.
type KubeTokenReviewer struct {
	Client   client.Client
	Audience string // "" means DefaultAudience
}

func (r KubeTokenReviewer) Review(ctx context.Context, token string) (string, error) {
	aud := r.Audience
	if aud == "" {
		aud = DefaultAudience
	}
	tr := &authenticationv1.TokenReview{Spec: authenticationv1.TokenReviewSpec{Token: token, Audiences: []string{aud}}}
	if err := r.Client.Create(ctx, tr); err != nil {
		return "", fmt.Errorf("token review: %w", err)
	}
	if !tr.Status.Authenticated {
		return "", fmt.Errorf("token not authenticated: %s", tr.Status.Error)
	}
	if !slices.Contains(tr.Status.Audiences, aud) {
		return "", fmt.Errorf("token not valid for audience %q", aud)
	}
	return tr.Status.User.Username, nil
}

type callerKey struct{}

// Caller returns the authenticated username of a stream's context.
func Caller(ctx context.Context) string {
	s, _ := ctx.Value(callerKey{}).(string)
	return s
}

// NewGRPCServer serves cache as delta (and state-of-the-world) ADS to
// callers that reviewer authenticates; every other caller gets
// PermissionDenied before any resource is sent.
func NewGRPCServer(ctx context.Context, cache *cachev3.LinearCache, reviewer TokenReviewer, opts ...grpc.ServerOption) *grpc.Server {
	auth := func(srv interface{}, ss grpc.ServerStream, info *grpc.StreamServerInfo, h grpc.StreamHandler) error {
		user, err := authenticate(ss.Context(), reviewer)
		if err != nil {
			return err
		}
		return h(srv, &authedStream{ServerStream: ss, ctx: context.WithValue(ss.Context(), callerKey{}, user)})
	}
	denyUnary := func(context.Context, interface{}, *grpc.UnaryServerInfo, grpc.UnaryHandler) (interface{}, error) {
		return nil, status.Error(codes.PermissionDenied, "no unary methods")
	}
	s := grpc.NewServer(append(opts, grpc.StreamInterceptor(auth), grpc.UnaryInterceptor(denyUnary))...)
	discoveryv3.RegisterAggregatedDiscoveryServiceServer(s, serverv3.NewServer(ctx, cache, nil))
	return s
}

func authenticate(ctx context.Context, reviewer TokenReviewer) (string, error) {
	md, _ := metadata.FromIncomingContext(ctx)
	vals := md.Get("authorization")
	if len(vals) != 1 {
		return "", status.Error(codes.PermissionDenied, "missing bearer token")
	}
	token, ok := strings.CutPrefix(vals[0], "Bearer ")
	if !ok || token == "" {
		return "", status.Error(codes.PermissionDenied, "authorization is not a bearer token")
	}
	user, err := reviewer.Review(ctx, token)
	if errors.Is(err, ErrReviewRateLimited) {
		return "", status.Error(codes.Unavailable, err.Error())
	}
	if err != nil {
		// Do not echo why to the caller: it would help probing. Logged at
		// most every 10s after the first few, so bad callers cannot flood
		// the log; Denials() counts them all.
		n := denials.Add(1)
		denialLog.Do(func() {
			ctrllog.Log.WithName("workloadtable").Info("workload stream denied (later denials are logged at most every 10s)",
				"reason", err.Error(), "deniedSoFar", n)
		})
		return "", status.Error(codes.PermissionDenied, "token rejected")
	}
	if user == "" {
		return "", status.Error(codes.PermissionDenied, "token rejected")
	}
	return user, nil
}

var (
	denials   atomic.Uint64
	denialLog = &rate.Sometimes{First: 5, Interval: 10 * time.Second}
)

// Denials is how many streams were refused for their token since start.
func Denials() uint64 { return denials.Load() }

type authedStream struct {
	grpc.ServerStream
	ctx context.Context
}

func (s *authedStream) Context() context.Context { return s.ctx }
