package cluster

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"sort"
	"sync"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	statuspb "google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/protobuf/types/known/structpb"
)

// xDS type URLs (SotW, v3).
const (
	TypeCluster  = "type.googleapis.com/envoy.config.cluster.v3.Cluster"
	TypeListener = "type.googleapis.com/envoy.config.listener.v3.Listener"
	TypeRoute    = "type.googleapis.com/envoy.config.route.v3.RouteConfiguration"
	TypeEndpoint = "type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment"
)

// DefaultIstioProxyVersion is sent as ISTIO_VERSION; istiod gates features
// on it, so claim the version matching the istio.io/api we build against.
const DefaultIstioProxyVersion = "1.31.1"

// SidecarOptions identify the pod the observer impersonates. Istio looks the
// pod up by IP (from the node id) in CLUSTER_ID, so it must exist (see
// CreateWorkload) for workload selectors and inbound config to apply.
type SidecarOptions struct {
	Namespace      string
	PodName        string
	IP             string
	Labels         map[string]string
	WorkloadName   string // default: Labels["app"] or PodName
	ServiceAccount string // default "default"
	ClusterID      string // default ClusterID
	IstioVersion   string // default DefaultIstioProxyVersion
	// ExtraMetadata is merged over the generated node metadata.
	ExtraMetadata map[string]any
	// Router connects as a gateway (node type "router", as proxyv2 in router
	// mode does) instead of a sidecar: istiod then serves the Gateways and
	// VirtualServices bound to it.
	Router bool
	// Review, when set, sees every response in order, before it is applied;
	// a non-empty return NACKs it as Envoy does when a listener fails to
	// load (ErrorDetail with the message, VersionInfo of the last accepted
	// config) and the rejected config is not recorded.
	Review func(TypeSnapshot) (nack string)
}

// SidecarFor returns options impersonating a workload's pod.
func SidecarFor(o *WorkloadObjects) SidecarOptions {
	w := o.Workload
	return SidecarOptions{
		Namespace: w.Namespace, PodName: w.PodName, IP: w.IP, Labels: w.Labels,
		WorkloadName: w.Name, ServiceAccount: w.ServiceAccount,
	}
}

// NodeID is Istio's node id: sidecar~<ip>~<pod>.<ns>~<ns>.svc.cluster.local
// (router~… for a gateway).
func (o SidecarOptions) NodeID() string {
	typ := "sidecar"
	if o.Router {
		typ = "router"
	}
	return fmt.Sprintf("%s~%s~%s.%s~%s.svc.cluster.local", typ, o.IP, o.PodName, o.Namespace, o.Namespace)
}

// Node builds the Envoy node with metadata as istio-proxy (pilot-agent) sends
// it for an injected pod.
func (o SidecarOptions) Node() (*corev3.Node, error) {
	if o.ClusterID == "" {
		o.ClusterID = ClusterID
	}
	if o.IstioVersion == "" {
		o.IstioVersion = DefaultIstioProxyVersion
	}
	if o.ServiceAccount == "" {
		o.ServiceAccount = "default"
	}
	if o.WorkloadName == "" {
		o.WorkloadName = o.Labels["app"]
		if o.WorkloadName == "" {
			o.WorkloadName = o.PodName
		}
	}
	labels := map[string]any{}
	for k, v := range o.Labels {
		labels[k] = v
	}
	md := map[string]any{
		"NAMESPACE":             o.Namespace,
		"NAME":                  o.PodName,
		"LABELS":                labels,
		"WORKLOAD_NAME":         o.WorkloadName,
		"OWNER":                 fmt.Sprintf("kubernetes://apis/apps/v1/namespaces/%s/deployments/%s", o.Namespace, o.WorkloadName),
		"CLUSTER_ID":            o.ClusterID,
		"MESH_ID":               "cluster.local",
		"ISTIO_VERSION":         o.IstioVersion,
		"INTERCEPTION_MODE":     "REDIRECT",
		"SERVICE_ACCOUNT":       o.ServiceAccount,
		"INSTANCE_IPS":          o.IP,
		"APP_CONTAINERS":        "app",
		"PILOT_SAN":             []any{"istiod.istio-system.svc"},
		"ENVOY_PROMETHEUS_PORT": 15090.0,
		"ENVOY_STATUS_PORT":     15021.0,
		"AUTO_REGISTER_GROUP":   "",
	}
	for k, v := range o.ExtraMetadata {
		md[k] = v
	}
	st, err := structpb.NewStruct(md)
	if err != nil {
		return nil, fmt.Errorf("node metadata: %w", err)
	}
	return &corev3.Node{
		Id:            o.NodeID(),
		Cluster:       o.WorkloadName + "." + o.Namespace,
		Metadata:      st,
		UserAgentName: "envoy",
		Locality:      &corev3.Locality{},
	}, nil
}

// Sidecar is an ADS (SotW) client that impersonates an Istio sidecar: it
// subscribes CDS and LDS (wildcard), then EDS for EDS clusters and RDS for
// the route configs listeners reference, ACKs everything and records the
// latest resources per type.
type Sidecar struct {
	opts      SidecarOptions
	conn      *grpc.ClientConn
	cancel    context.CancelFunc
	done      chan struct{}
	closeOnce sync.Once
	closeErr  error

	mu      sync.Mutex
	state   map[string]*TypeSnapshot
	subs    map[string][]string // current explicit subscriptions (EDS, RDS)
	err     error               // stream error, once the stream ended
	changed chan struct{}       // closed and replaced on every update
	nacks   int
}

// ConnectSidecar dials istiod's plaintext xDS address (Istiod.XDSAddr) and
// starts the stream. Close it when done (Env.Stop does not know about it).
func ConnectSidecar(ctx context.Context, xdsAddr string, opts SidecarOptions) (*Sidecar, error) {
	node, err := opts.Node()
	if err != nil {
		return nil, err
	}
	conn, err := grpc.NewClient(xdsAddr,
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(64<<20)))
	if err != nil {
		return nil, err
	}
	sctx, cancel := context.WithCancel(context.Background())
	stream, err := discoveryv3.NewAggregatedDiscoveryServiceClient(conn).StreamAggregatedResources(sctx)
	if err != nil {
		cancel()
		conn.Close()
		return nil, fmt.Errorf("open ADS stream to %s: %w", xdsAddr, err)
	}
	s := &Sidecar{
		opts: opts, conn: conn, cancel: cancel, done: make(chan struct{}),
		state: map[string]*TypeSnapshot{}, subs: map[string][]string{},
		changed: make(chan struct{}),
	}
	// CDS before LDS, as Envoy does: istiod expects that order.
	for _, t := range []string{TypeCluster, TypeListener} {
		if err := stream.Send(&discoveryv3.DiscoveryRequest{Node: node, TypeUrl: t}); err != nil {
			cancel()
			conn.Close()
			return nil, fmt.Errorf("send initial %s request: %w", t, err)
		}
	}
	go s.run(stream, node)
	_ = ctx // dialing is lazy; ctx is kept for API symmetry with other Start* calls
	return s, nil
}

func (s *Sidecar) run(stream discoveryv3.AggregatedDiscoveryService_StreamAggregatedResourcesClient, node *corev3.Node) {
	defer close(s.done)
	for {
		resp, err := stream.Recv()
		if err != nil {
			s.mu.Lock()
			s.err = fmt.Errorf("ADS stream ended: %w", err)
			s.notifyLocked()
			s.mu.Unlock()
			return
		}
		ts := decodeResponse(resp)
		if s.opts.Review != nil {
			if msg := s.opts.Review(*ts); msg != "" {
				if err := s.nack(stream, node, resp, msg); err != nil {
					return
				}
				continue
			}
		}

		s.mu.Lock()
		if prev := s.state[resp.TypeUrl]; prev != nil {
			ts.Pushes = prev.Pushes + 1
		} else {
			ts.Pushes = 1
		}
		s.state[resp.TypeUrl] = ts
		ack := &discoveryv3.DiscoveryRequest{
			Node: node, TypeUrl: resp.TypeUrl, VersionInfo: resp.VersionInfo,
			ResponseNonce: resp.Nonce, ResourceNames: s.subs[resp.TypeUrl],
		}
		// Follow-up subscriptions derived from what just arrived.
		var follow []*discoveryv3.DiscoveryRequest
		switch resp.TypeUrl {
		case TypeCluster:
			follow = s.resubscribeLocked(node, TypeEndpoint, ts.edsNames())
		case TypeListener:
			follow = s.resubscribeLocked(node, TypeRoute, ts.rdsNames())
		}
		s.notifyLocked()
		s.mu.Unlock()

		for _, req := range append([]*discoveryv3.DiscoveryRequest{ack}, follow...) {
			if err := stream.Send(req); err != nil {
				s.mu.Lock()
				s.err = fmt.Errorf("ADS send: %w", err)
				s.notifyLocked()
				s.mu.Unlock()
				return
			}
		}
	}
}

// nack rejects resp as envoy's GrpcMuxImpl::onDiscoveryResponse does on a
// config update failure: the last accepted version, the rejected nonce and
// an INTERNAL error detail with the message.
func (s *Sidecar) nack(stream discoveryv3.AggregatedDiscoveryService_StreamAggregatedResourcesClient, node *corev3.Node, resp *discoveryv3.DiscoveryResponse, msg string) error {
	s.mu.Lock()
	req := &discoveryv3.DiscoveryRequest{
		Node: node, TypeUrl: resp.TypeUrl, ResponseNonce: resp.Nonce, ResourceNames: s.subs[resp.TypeUrl],
		ErrorDetail: &statuspb.Status{Code: int32(codes.Internal), Message: msg},
	}
	if prev := s.state[resp.TypeUrl]; prev != nil {
		req.VersionInfo = prev.Version
	}
	s.nacks++
	s.notifyLocked()
	s.mu.Unlock()
	if err := stream.Send(req); err != nil {
		s.mu.Lock()
		s.err = fmt.Errorf("ADS send: %w", err)
		s.notifyLocked()
		s.mu.Unlock()
		return err
	}
	return nil
}

// NACKs counts the responses Review rejected.
func (s *Sidecar) NACKs() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.nacks
}

// resubscribeLocked returns a request when the names for typ changed. It
// carries the last nonce of typ: istiod ignores requests with stale nonces.
func (s *Sidecar) resubscribeLocked(node *corev3.Node, typ string, names []string) []*discoveryv3.DiscoveryRequest {
	sort.Strings(names)
	names = slices.Compact(names)
	if slices.Equal(names, s.subs[typ]) {
		return nil
	}
	_, subscribed := s.subs[typ]
	if len(names) == 0 && !subscribed {
		return nil
	}
	s.subs[typ] = names
	req := &discoveryv3.DiscoveryRequest{Node: node, TypeUrl: typ, ResourceNames: names}
	if prev := s.state[typ]; prev != nil {
		req.VersionInfo, req.ResponseNonce = prev.Version, prev.Nonce
	}
	return []*discoveryv3.DiscoveryRequest{req}
}

func (s *Sidecar) notifyLocked() {
	close(s.changed)
	s.changed = make(chan struct{})
}

// Snapshot returns a copy of the latest state.
func (s *Sidecar) Snapshot() Snapshot {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.snapshotLocked()
}

func (s *Sidecar) snapshotLocked() Snapshot {
	snap := Snapshot{Types: make(map[string]TypeSnapshot, len(s.state)), Err: s.err}
	for k, v := range s.state {
		snap.Types[k] = *v // resources are replaced, never mutated, so sharing them is safe
	}
	return snap
}

// WaitFor blocks until cond holds for the latest snapshot, the stream fails
// or ctx ends. The error describes the last snapshot, to debug timeouts.
func (s *Sidecar) WaitFor(ctx context.Context, cond func(Snapshot) bool) (Snapshot, error) {
	for {
		s.mu.Lock()
		snap := s.snapshotLocked()
		ch := s.changed
		s.mu.Unlock()
		if cond(snap) {
			return snap, nil
		}
		if snap.Err != nil {
			return snap, snap.Err
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return snap, fmt.Errorf("%w; last xDS state: %s", ctx.Err(), snap.Summary())
		}
	}
}

// WaitForPush waits until typ has been pushed more than after times: use it
// with Snapshot().Pushes(typ) taken before a change to see the next push.
func (s *Sidecar) WaitForPush(ctx context.Context, typ string, after int) (Snapshot, error) {
	return s.WaitFor(ctx, func(sn Snapshot) bool { return sn.Pushes(typ) > after })
}

// Close ends the stream and connection. Idempotent.
func (s *Sidecar) Close() error {
	s.closeOnce.Do(func() {
		s.cancel()
		s.closeErr = s.conn.Close()
		<-s.done
	})
	return s.closeErr
}

// NodeMetadataJSON is the node metadata as JSON, for logs.
func (s *Sidecar) NodeMetadataJSON() string {
	n, err := s.opts.Node()
	if err != nil {
		return err.Error()
	}
	b, _ := json.Marshal(n.Metadata.AsMap())
	return string(b)
}

// Err returns the stream error once the stream has ended.
func (s *Sidecar) Err() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.err
}
