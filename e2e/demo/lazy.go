package demo

import (
	"context"
	"fmt"
	"net"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	accesslogdatav3 "github.com/envoyproxy/go-control-plane/envoy/data/accesslog/v3"
	alsv3 "github.com/envoyproxy/go-control-plane/envoy/service/accesslog/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	networkingv1 "istio.io/client-go/pkg/apis/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/leanmesh/leanmesh/controller/api/v1alpha1"
	"github.com/leanmesh/leanmesh/e2e/cluster"
)

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// clusterCount is the number of outbound service clusters a proxy holds.
func outboundClusters(s cluster.Snapshot) []string {
	var out []string
	for _, n := range s.Names(cluster.TypeCluster) {
		if len(n) > 9 && n[:9] == "outbound|" {
			out = append(out, n)
		}
	}
	return out
}

// sendALS sends one access-log entry as the lazy egress's Envoy would
// (envoy.access_loggers.http_grpc): identifier first, then the HTTP entry.
func (r *run) sendALS(callerIP, upstreamCluster, authority string) error {
	conn, err := grpc.NewClient(r.alsAddr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return err
	}
	defer conn.Close()
	ctx, cancel := context.WithTimeout(r.ctx, 10*time.Second)
	defer cancel()
	var stream alsv3.AccessLogService_StreamAccessLogsClient
	// The controller opens the ALS port once its informers have synced.
	for {
		stream, err = alsv3.NewAccessLogServiceClient(conn).StreamAccessLogs(ctx)
		if err == nil {
			err = stream.Send(&alsv3.StreamAccessLogsMessage{
				Identifier: &alsv3.StreamAccessLogsMessage_Identifier{
					Node:    &corev3.Node{Id: "router~10.44.0.200~leanmesh-lazy-egress-0.istio-system~istio-system.svc.cluster.local"},
					LogName: "leanmesh-lazy-egress",
				},
				LogEntries: &alsv3.StreamAccessLogsMessage_HttpLogs{HttpLogs: &alsv3.StreamAccessLogsMessage_HTTPAccessLogEntries{
					LogEntry: []*accesslogdatav3.HTTPAccessLogEntry{{
						CommonProperties: &accesslogdatav3.AccessLogCommon{
							DownstreamRemoteAddress: &corev3.Address{Address: &corev3.Address_SocketAddress{SocketAddress: &corev3.SocketAddress{
								Address: callerIP, PortSpecifier: &corev3.SocketAddress_PortValue{PortValue: 41000}}}},
							UpstreamCluster: upstreamCluster,
						},
						Request:  &accesslogdatav3.HTTPRequestProperties{Authority: authority, Path: "/reviews/0"},
						Response: &accesslogdatav3.HTTPResponseProperties{},
					}},
				}},
			})
		}
		if err == nil {
			_, err = stream.CloseAndRecv()
		}
		if err == nil || ctx.Err() != nil {
			return err
		}
		time.Sleep(200 * time.Millisecond)
	}
}

func (r *run) lazy() error {
	r.section("Lazy xDS: productpage's sidecar shrinks to what it really calls, learned from the egress's access logs")
	pp := r.proxies["productpage"]
	before := outboundClusters(pp.ads.Snapshot())
	lx := &v1alpha1.LazyXDS{ObjectMeta: metav1.ObjectMeta{Namespace: "bookinfo", Name: "productpage"}}
	lx.Spec.Selector.MatchLabels = map[string]string{"app": "productpage"}
	if err := r.env.Client.Create(r.ctx, lx); err != nil {
		return err
	}
	start := time.Now()
	if err := r.waitFor("productpage's CDS shrinks", 2*time.Minute, func() error {
		for _, c := range outboundClusters(pp.ads.Snapshot()) {
			for _, w := range bookinfo {
				if c == w.OutboundCluster(9080) {
					return fmt.Errorf("still sees %s", c)
				}
			}
		}
		return nil
	}); err != nil {
		return err
	}
	minimal := outboundClusters(pp.ads.Snapshot())
	r.say("  LazyXDS created: productpage's outbound clusters %d → %d in %v (left: the lazy egress and what the baseline keeps visible)",
		len(before), len(minimal), time.Since(start).Round(10*time.Millisecond))

	reviews := r.proxies["reviews"].w.OutboundCluster(9080)
	start = time.Now()
	if err := r.sendALS(pp.w.IP, reviews, "reviews:9080"); err != nil {
		return fmt.Errorf("sending the access log: %w", err)
	}
	if err := r.waitFor("istiod pushes the learned cluster", time.Minute, func() error {
		if !pp.ads.Snapshot().Has(cluster.TypeCluster, reviews) {
			return fmt.Errorf("no %s yet", reviews)
		}
		return nil
	}); err != nil {
		return err
	}
	learned := outboundClusters(pp.ads.Snapshot())
	r.say("  access log productpage → reviews at the egress: %s pushed to productpage %v later (outbound clusters now %d)",
		reviews, time.Since(start).Round(10*time.Millisecond), len(learned))
	if r.proxies["reviews"].ads.Snapshot().Has(cluster.TypeCluster, reviews) {
		// reviews is not lazy and still sees the whole mesh, itself included.
		r.say("  reviews (not lazy) still sees the whole mesh: %d outbound clusters", len(outboundClusters(r.proxies["reviews"].ads.Snapshot())))
	}

	sidecars := &networkingv1.SidecarList{}
	if err := r.env.Client.List(r.ctx, sidecars, client.InNamespace("bookinfo")); err != nil {
		return err
	}
	if len(sidecars.Items) == 0 {
		return fmt.Errorf("no Sidecar written")
	}
	r.say("  Sidecar %s/%s egress hosts: %v", sidecars.Items[0].Namespace, sidecars.Items[0].Name, sidecars.Items[0].Spec.Egress[0].Hosts)

	r.say("  killing the controller (SIGKILL) and starting it again...")
	if err := r.stopController(true); err != nil {
		return err
	}
	pushes := pp.ads.Snapshot().Pushes(cluster.TypeCluster)
	if err := r.launchController(); err != nil {
		return err
	}
	time.Sleep(5 * time.Second)
	after := pp.ads.Snapshot()
	if !after.Has(cluster.TypeCluster, reviews) || len(outboundClusters(after)) != len(learned) {
		return fmt.Errorf("restart changed productpage's clusters: %v", outboundClusters(after))
	}
	r.say("  after the restart productpage still has %d outbound clusters including reviews (CDS pushes meanwhile: %d)",
		len(outboundClusters(after)), after.Pushes(cluster.TypeCluster)-pushes)
	return nil
}
