package lazyxdsctl

import (
	"context"
	"net"
	"slices"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	accesslogdatav3 "github.com/envoyproxy/go-control-plane/envoy/data/accesslog/v3"
	accesslogv3 "github.com/envoyproxy/go-control-plane/envoy/service/accesslog/v3"
	"github.com/go-logr/logr/testr"
	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"
	"google.golang.org/protobuf/types/known/wrapperspb"
	networkingv1 "istio.io/client-go/pkg/apis/networking/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/client-go/rest"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"

	"github.com/leanmesh/leanmesh/controller/api/v1alpha1"
	"github.com/leanmesh/leanmesh/controller/install"
	"github.com/leanmesh/leanmesh/controller/lazyxds"
	"github.com/leanmesh/leanmesh/e2e/cluster"
)

const (
	rootNS       = "istio-system"
	controllerNS = "leanmesh-system"
	controllerSA = "leanmesh-controller"
)

// generatedRBAC is controller-gen's role.yaml: tests run the controller
// under it, so a missing RBAC marker fails them.
const generatedRBAC = "../../config/rbac/role.yaml"

// withCRDs starts the control plane with leanmesh's CRDs and types.
var withCRDs = cluster.Options{CRDPaths: []string{"../../config/crd/bases"}, Scheme: v1alpha1.AddToScheme}

// controller is one run of the manager with the loop, as `leanmesh
// controller --lazyxds` wires it (leader election, generated RBAC).
type controller struct {
	loop    *Loop
	alsAddr string
	reg     *prometheus.Registry
	cancel  context.CancelFunc
	done    chan error
	stopped bool
}

// startController runs the loop; ALS is plaintext unless a mod sets
// ALSMeshRootFile (als_mtls_test.go).
func startController(t *testing.T, cfg *rest.Config, env *cluster.Env, mods ...func(*Options)) *controller {
	t.Helper()
	mgr, err := ctrl.NewManager(cfg, ctrl.Options{
		Scheme:                        env.Scheme,
		Cache:                         install.CacheOptions(),
		Metrics:                       metricsserver.Options{BindAddress: "0"},
		HealthProbeBindAddress:        "0",
		LeaderElection:                true,
		LeaderElectionID:              "leanmesh-controller.leanmesh.io",
		LeaderElectionNamespace:       controllerNS,
		LeaderElectionReleaseOnCancel: true,
	})
	if err != nil {
		t.Fatal(err)
	}
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	reg := prometheus.NewRegistry()
	opts := Options{
		ALSListener: lis, ALSPlaintext: true, Namespace: controllerNS, RootNamespace: rootNS,
		EgressNamespaces: []string{rootNS}, // as the command's default: the generated Role's namespace
		Registry:         reg, Recorder: mgr.GetEventRecorder("leanmesh-lazyxds"), Logger: testr.New(t),
	}
	for _, m := range mods {
		m(&opts)
	}
	loop, err := Setup(mgr, opts)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	c := &controller{loop: loop, alsAddr: lis.Addr().String(), reg: reg, cancel: cancel, done: make(chan error, 1)}
	go func() { c.done <- mgr.Start(ctx) }()
	// Registered after StartT's cleanup, so it runs first.
	t.Cleanup(func() { c.stop(t) })
	select {
	case <-loop.Ready():
	case err := <-c.done:
		t.Fatalf("manager exited before the loop was ready: %v", err)
	case <-time.After(60 * time.Second):
		t.Fatal("lazy-xDS loop not ready after 60s")
	}
	return c
}

func (c *controller) stop(t *testing.T) {
	if c.stopped {
		return
	}
	c.stopped = true
	c.cancel()
	if err := <-c.done; err != nil {
		t.Errorf("manager: %v", err)
	}
}

// alsClient is Envoy's http_grpc access logger as seen on the wire: one
// StreamAccessLogs stream, the identifier in the first message only.
type alsClient struct {
	conn   *grpc.ClientConn
	stream accesslogv3.AccessLogService_StreamAccessLogsClient
	sent   int
}

var egressNode = &corev3.Node{
	Id:      "router~10.244.9.9~leanmesh-lazy-egress-7d9f-abcde.istio-system~istio-system.svc.cluster.local",
	Cluster: "leanmesh-lazy-egress.istio-system",
}

func dialALS(t *testing.T, addr string, opts ...grpc.DialOption) *alsClient {
	t.Helper()
	if len(opts) == 0 {
		opts = []grpc.DialOption{grpc.WithTransportCredentials(insecure.NewCredentials())}
	}
	conn, err := grpc.NewClient(addr, opts...)
	if err != nil {
		t.Fatal(err)
	}
	stream, err := accesslogv3.NewAccessLogServiceClient(conn).StreamAccessLogs(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	c := &alsClient{conn: conn, stream: stream}
	t.Cleanup(func() { c.close() })
	return c
}

func (c *alsClient) close() {
	if c.conn != nil {
		_, _ = c.stream.CloseAndRecv()
		c.conn.Close()
		c.conn = nil
	}
}

func sockAddr(ip string, port uint32) *corev3.Address {
	return &corev3.Address{Address: &corev3.Address_SocketAddress{SocketAddress: &corev3.SocketAddress{
		Address: ip, PortSpecifier: &corev3.SocketAddress_PortValue{PortValue: port}}}}
}

// send logs one request through the egress: caller pod IP → cluster, with
// the fields Envoy's HttpGrpcAccessLogConfig fills.
func (c *alsClient) send(t *testing.T, callerIP, cluster, authority string) {
	t.Helper()
	if err := c.sendErr(callerIP, cluster, authority); err != nil {
		t.Fatal(err)
	}
}

func (c *alsClient) sendErr(callerIP, cluster, authority string) error {
	now := time.Now()
	e := &accesslogdatav3.HTTPAccessLogEntry{
		ProtocolVersion: accesslogdatav3.HTTPAccessLogEntry_HTTP11,
		CommonProperties: &accesslogdatav3.AccessLogCommon{
			SampleRate:                    1,
			DownstreamRemoteAddress:       sockAddr(callerIP, 51234),
			DownstreamDirectRemoteAddress: sockAddr(callerIP, 51234),
			DownstreamLocalAddress:        sockAddr("10.244.9.9", 8080),
			StartTime:                     timestamppb.New(now),
			TimeToLastDownstreamTxByte:    durationpb.New(2 * time.Millisecond),
			UpstreamRemoteAddress:         sockAddr("10.244.1.12", 9080),
			UpstreamLocalAddress:          sockAddr("10.244.9.9", 40112),
			UpstreamCluster:               cluster,
			RouteName:                     "leanmesh-lazy-default",
			UpstreamRequestAttemptCount:   1,
			AccessLogType:                 accesslogdatav3.AccessLogType_DownstreamEnd,
		},
		Request: &accesslogdatav3.HTTPRequestProperties{
			RequestMethod: corev3.RequestMethod_GET, Scheme: "http", Authority: authority, Path: "/",
			RequestHeaders: map[string]string{"x-envoy-peer-metadata-id": "sidecar~" + callerIP + "~caller.shop~shop.svc.cluster.local"},
		},
		Response: &accesslogdatav3.HTTPResponseProperties{ResponseCode: wrapperspb.UInt32(200), ResponseCodeDetails: "via_upstream"},
	}
	msg := &accesslogv3.StreamAccessLogsMessage{
		LogEntries: &accesslogv3.StreamAccessLogsMessage_HttpLogs{HttpLogs: &accesslogv3.StreamAccessLogsMessage_HTTPAccessLogEntries{
			LogEntry: []*accesslogdatav3.HTTPAccessLogEntry{e},
		}},
	}
	if c.sent == 0 {
		msg.Identifier = &accesslogv3.StreamAccessLogsMessage_Identifier{Node: egressNode, LogName: "leanmesh-lazy"}
	}
	if err := c.stream.Send(msg); err != nil {
		return err
	}
	c.sent++
	return nil
}

// sidecarHostsOf reads a Sidecar's egress hosts (nil: no such Sidecar).
func sidecarHostsOf(ctx context.Context, c client.Client, ns, name string) ([]string, *networkingv1.Sidecar, error) {
	var sc networkingv1.Sidecar
	if err := c.Get(ctx, client.ObjectKey{Namespace: ns, Name: name}, &sc); err != nil {
		if apierrors.IsNotFound(err) {
			return nil, nil, nil
		}
		return nil, nil, err
	}
	var hosts []string
	for _, e := range sc.Spec.Egress {
		hosts = append(hosts, e.Hosts...)
	}
	return hosts, &sc, nil
}

// persistedDeps reads the snapshot ConfigMap: workload → hosts.
func persistedDeps(ctx context.Context, c client.Client) (map[string][]string, error) {
	var cm corev1.ConfigMap
	if err := c.Get(ctx, client.ObjectKey{Namespace: controllerNS, Name: DefaultConfigMapName}, &cm); err != nil {
		if apierrors.IsNotFound(err) {
			return map[string][]string{}, nil
		}
		return nil, err
	}
	snap, err := lazyxds.UnmarshalSnapshot(cm.BinaryData[SnapshotKey])
	if err != nil {
		return nil, err
	}
	out := map[string][]string{}
	for _, w := range snap.Deps {
		for _, d := range w.Deps {
			out[w.Workload] = append(out[w.Workload], snap.Hosts[d[0]])
		}
		slices.Sort(out[w.Workload])
	}
	return out, nil
}

// poll retries cond every 50ms until it returns nil or the timeout passes.
func poll(t *testing.T, timeout time.Duration, what string, cond func() error) time.Duration {
	t.Helper()
	start := time.Now()
	var last error
	for time.Since(start) < timeout {
		if last = cond(); last == nil {
			return time.Since(start)
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatalf("%s: not true after %s: %v", what, timeout, last)
	return 0
}
