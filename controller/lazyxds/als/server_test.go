package als

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	accesslogdatav3 "github.com/envoyproxy/go-control-plane/envoy/data/accesslog/v3"
	accesslogv3 "github.com/envoyproxy/go-control-plane/envoy/service/accesslog/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/leanmesh/leanmesh/controller/lazyxds"
	"github.com/leanmesh/leanmesh/e2e/grpcserver"
	"github.com/leanmesh/leanmesh/filters/peer"
)

// egressNode is how the lazy egress identifies itself in the first message.
var egressNode = &corev3.Node{
	Id:      "router~10.0.9.9~leanmesh-lazy-egress-7d9f-abcde.istio-system~istio-system.svc.cluster.local",
	Cluster: "leanmesh-lazy-egress.istio-system",
}

func addr(ip string, port uint32) *corev3.Address {
	return &corev3.Address{Address: &corev3.Address_SocketAddress{SocketAddress: &corev3.SocketAddress{
		Address: ip, PortSpecifier: &corev3.SocketAddress_PortValue{PortValue: port}}}}
}

// entry builds an HTTPAccessLogEntry with the fields Envoy's http_grpc logger fills.
func entry(caller, cluster, authority string) *accesslogdatav3.HTTPAccessLogEntry {
	e := &accesslogdatav3.HTTPAccessLogEntry{
		ProtocolVersion: accesslogdatav3.HTTPAccessLogEntry_HTTP11,
		CommonProperties: &accesslogdatav3.AccessLogCommon{
			SampleRate:                    1,
			DownstreamLocalAddress:        addr("10.0.9.9", 8080),
			DownstreamDirectRemoteAddress: addr(caller, 51234),
			StartTime:                     timestamppb.New(time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)),
			TimeToLastRxByte:              durationpb.New(40 * time.Microsecond),
			TimeToFirstUpstreamTxByte:     durationpb.New(300 * time.Microsecond),
			TimeToLastUpstreamTxByte:      durationpb.New(310 * time.Microsecond),
			TimeToFirstUpstreamRxByte:     durationpb.New(2 * time.Millisecond),
			TimeToLastUpstreamRxByte:      durationpb.New(2100 * time.Microsecond),
			TimeToFirstDownstreamTxByte:   durationpb.New(2050 * time.Microsecond),
			TimeToLastDownstreamTxByte:    durationpb.New(2150 * time.Microsecond),
			UpstreamRemoteAddress:         addr("10.1.2.3", 9080),
			UpstreamLocalAddress:          addr("10.0.9.9", 40112),
			UpstreamCluster:               cluster,
			ResponseFlags:                 &accesslogdatav3.ResponseFlags{},
			RouteName:                     "leanmesh-lazy-default",
			Duration:                      durationpb.New(2150 * time.Microsecond),
			UpstreamRequestAttemptCount:   1,
			StreamId:                      "6b8e2f4c-1111-2222-3333-444455556666",
			AccessLogType:                 accesslogdatav3.AccessLogType_DownstreamEnd,
		},
		Request: &accesslogdatav3.HTTPRequestProperties{
			RequestMethod:       corev3.RequestMethod_GET,
			Scheme:              "http",
			Authority:           authority,
			Path:                "/reviews/0",
			UserAgent:           "python-requests/2.31.0",
			RequestId:           "2d0c5a5e-8a9b-4f7e-9d7a-0123456789ab",
			RequestHeadersBytes: 412,
			RequestHeaders:      map[string]string{peer.HeaderMetadataID: "sidecar~" + caller + "~productpage-v1-abc.bookinfo~bookinfo.svc.cluster.local"},
		},
		Response: &accesslogdatav3.HTTPResponseProperties{
			ResponseCode:         wrapperspb.UInt32(200),
			ResponseHeadersBytes: 180,
			ResponseBodyBytes:    295,
			ResponseCodeDetails:  "via_upstream",
		},
	}
	if caller != "" {
		e.CommonProperties.DownstreamRemoteAddress = addr(caller, 51234)
	}
	return e
}

func newGraph() *lazyxds.Graph {
	g := lazyxds.NewGraph(lazyxds.Options{})
	g.UpsertWorkload(lazyxds.Workload{Namespace: "bookinfo", Name: "productpage", Labels: map[string]string{"app": "productpage"},
		IPs: []netip.Addr{netip.MustParseAddr("10.0.0.1")}, Lazy: true})
	for _, n := range []string{"reviews", "details", "ratings"} {
		g.UpsertService(lazyxds.Service{Namespace: "bookinfo", Host: n + ".bookinfo.svc.cluster.local", Ports: []lazyxds.Port{{Number: 9080, HTTP: true}}})
	}
	g.Drain()
	return g
}

type harness struct {
	srv    *Server
	addr   string
	cancel context.CancelFunc
}

// paths are the two ways to serve: generated types, and the wire fast path.
var paths = []struct {
	name string
	fast bool
}{{"typed", false}, {"fast", true}}

func start(t testing.TB, rec Recorder, opts Options, fast bool) *harness {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := NewServer(rec, opts)
	var gs *grpc.Server
	if fast {
		gs = srv.NewGRPCServer()
	} else {
		gs = grpc.NewServer()
		srv.Register(gs)
	}
	ctx, cancel := context.WithCancel(context.Background())
	go srv.Run(ctx)
	grpcserver.Run(t, "ALS", gs, srv.Listener(lis))
	t.Cleanup(cancel) // before the server stops
	return &harness{srv: srv, addr: lis.Addr().String(), cancel: cancel}
}

func dial(t testing.TB, addr string) accesslogv3.AccessLogServiceClient {
	t.Helper()
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return accesslogv3.NewAccessLogServiceClient(conn)
}

// send opens a stream and sends batches the way Envoy does: the identifier
// rides on the first message only.
func send(ctx context.Context, c accesslogv3.AccessLogServiceClient, batches ...[]*accesslogdatav3.HTTPAccessLogEntry) (accesslogv3.AccessLogService_StreamAccessLogsClient, error) {
	st, err := c.StreamAccessLogs(ctx)
	if err != nil {
		return nil, err
	}
	for i, b := range batches {
		m := &accesslogv3.StreamAccessLogsMessage{LogEntries: &accesslogv3.StreamAccessLogsMessage_HttpLogs{
			HttpLogs: &accesslogv3.StreamAccessLogsMessage_HTTPAccessLogEntries{LogEntry: b}}}
		if i == 0 {
			m.Identifier = &accesslogv3.StreamAccessLogsMessage_Identifier{Node: egressNode, LogName: "leanmesh-lazy"}
		}
		if err := st.Send(m); err != nil {
			if errors.Is(err, io.EOF) { // the server ended the stream: its status says why
				_, err = st.CloseAndRecv()
			}
			return nil, err
		}
	}
	return st, nil
}

func waitProcessed(t testing.TB, s *Server, n uint64) Stats {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		st := s.Stats()
		if st.Processed+st.Dropped["queue_full"] >= n {
			return st
		}
		if time.Now().After(deadline) {
			t.Fatalf("timed out: %+v", st)
		}
		time.Sleep(time.Millisecond)
	}
}

func TestStreamLearnsAndCountsMalformed(t *testing.T) {
	for _, p := range paths {
		t.Run(p.name, func(t *testing.T) { testStreamLearnsAndCountsMalformed(t, p.fast) })
	}
}

func testStreamLearnsAndCountsMalformed(t *testing.T, fast bool) {
	g := newGraph()
	h := start(t, g, Options{}, fast)
	c := dial(t, h.addr)
	noCP := entry("10.0.0.1", "", "")
	noCP.CommonProperties = nil
	noAddr := entry("", "outbound|9080||reviews.bookinfo.svc.cluster.local", "reviews:9080")
	noAddr.Request.RequestHeaders = nil
	batch1 := []*accesslogdatav3.HTTPAccessLogEntry{
		entry("10.0.0.1", "outbound|9080|v2|reviews.bookinfo.svc.cluster.local", "reviews:9080"),
		entry("10.0.0.1", "outbound|9080|v2|reviews.bookinfo.svc.cluster.local", "reviews:9080"), // dup
		entry("10.0.0.1", "", "details:9080"),                                                    // NR: authority only
		noCP,
		noAddr,
		entry("10.0.0.1", "PassthroughCluster", "not a host!"), // garbage authority
		entry("10.0.0.1", "outbound|80||ghost.bookinfo.svc.cluster.local", ""),     // unknown cluster
		entry("10.7.7.7", "outbound|9080||ratings.bookinfo.svc.cluster.local", ""), // unknown caller
	}
	tcp := &accesslogv3.StreamAccessLogsMessage{LogEntries: &accesslogv3.StreamAccessLogsMessage_TcpLogs{
		TcpLogs: &accesslogv3.StreamAccessLogsMessage_TCPAccessLogEntries{LogEntry: []*accesslogdatav3.TCPAccessLogEntry{{}}}}}
	st, err := send(context.Background(), c, batch1)
	if err != nil {
		t.Fatal(err)
	}
	if err := st.Send(tcp); err != nil {
		t.Fatal(err)
	}
	if _, err := st.CloseAndRecv(); err != nil {
		t.Fatal(err)
	}
	stats := waitProcessed(t, h.srv, 5)
	want := map[string]uint64{
		"no_common_properties": 1, "no_caller_address": 1, "bad_destination": 1, "tcp_entry": 1,
		"queue_full": 0, "unknown_caller": 1, "unknown_service": 1, "not_lazy": 0,
	}
	for k, v := range want {
		if stats.Dropped[k] != v {
			t.Errorf("dropped[%s] = %d, want %d", k, stats.Dropped[k], v)
		}
	}
	if stats.Received != 8 || stats.Learned != 2 || stats.Streams != 1 {
		t.Errorf("stats = %+v", stats)
	}
	deps := g.Dependencies(lazyxds.WorkloadKey{Namespace: "bookinfo", Name: "productpage"})
	if len(deps) != 2 || deps[0].Host != "details.bookinfo.svc.cluster.local" || deps[1].Host != "reviews.bookinfo.svc.cluster.local" {
		t.Fatalf("deps = %+v", deps)
	}
	if ch := g.Drain(); len(ch) != 1 {
		t.Fatalf("Drain = %+v", ch)
	}
}

func TestReconnectingClient(t *testing.T) {
	for _, p := range paths {
		t.Run(p.name, func(t *testing.T) { testReconnectingClient(t, p.fast) })
	}
}

func testReconnectingClient(t *testing.T, fast bool) {
	g := newGraph()
	h := start(t, g, Options{}, fast)
	c := dial(t, h.addr)
	// First stream breaks mid-way (Envoy restarts / connection reset).
	ctx, cancel := context.WithCancel(context.Background())
	if _, err := send(ctx, c, []*accesslogdatav3.HTTPAccessLogEntry{entry("10.0.0.1", "outbound|9080||reviews.bookinfo.svc.cluster.local", "")}); err != nil {
		t.Fatal(err)
	}
	waitProcessed(t, h.srv, 1)
	cancel()
	// Envoy opens a new stream, identifier again on its first message.
	st, err := send(context.Background(), c,
		[]*accesslogdatav3.HTTPAccessLogEntry{entry("10.0.0.1", "outbound|9080||details.bookinfo.svc.cluster.local", "")},
		[]*accesslogdatav3.HTTPAccessLogEntry{entry("10.0.0.1", "outbound|9080||ratings.bookinfo.svc.cluster.local", "")})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := st.CloseAndRecv(); err != nil {
		t.Fatal(err)
	}
	stats := waitProcessed(t, h.srv, 3)
	if stats.Streams != 2 || stats.Learned != 3 {
		t.Fatalf("stats = %+v", stats)
	}
}

// blockedRecorder never returns until released: the queue must bound memory.
type blockedRecorder struct{ release chan struct{} }

func (b blockedRecorder) Record(batch []lazyxds.Observation) lazyxds.RecordResult {
	<-b.release
	return lazyxds.RecordResult{Refreshed: len(batch)}
}

func TestFloodIsBounded(t *testing.T) {
	for _, p := range paths {
		t.Run(p.name, func(t *testing.T) { testFloodIsBounded(t, p.fast) })
	}
}

func testFloodIsBounded(t *testing.T, fast bool) {
	rec := blockedRecorder{release: make(chan struct{})}
	h := start(t, rec, Options{QueueEntries: 100}, fast)
	c := dial(t, h.addr)
	batch := make([]*accesslogdatav3.HTTPAccessLogEntry, 10)
	for i := range batch {
		batch[i] = entry("10.0.0.1", fmt.Sprintf("outbound|9080||s%d.bookinfo.svc.cluster.local", i), "")
	}
	var batches [][]*accesslogdatav3.HTTPAccessLogEntry
	for range 100 {
		batches = append(batches, batch)
	}
	st, err := send(context.Background(), c, batches...)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := st.CloseAndRecv(); err != nil {
		t.Fatal(err)
	}
	close(rec.release)
	stats := waitProcessed(t, h.srv, 1000)
	// At most the queue (100) plus the batch held by Run (10) get through.
	if stats.Received != 1000 || stats.Dropped["queue_full"] < 890 || stats.Processed > 110 {
		t.Fatalf("stats = %+v", stats)
	}
}

func TestPeerIP(t *testing.T) {
	tests := map[string]string{
		"sidecar~10.1.2.3~pod.ns~ns.svc.cluster.local": "10.1.2.3",
		"sidecar~fd00::5~pod.ns~ns.svc.cluster.local":  "fd00::5",
		"sidecar~nope~x~y": "invalid IP",
		"":                 "invalid IP",
	}
	for in, want := range tests {
		if got := peerIP(in).String(); got != want {
			t.Errorf("peerIP(%q) = %s, want %s", in, got, want)
		}
	}
}
