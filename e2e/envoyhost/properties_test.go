package envoyhost

// Attribute and CEL properties the host answers for the filter
// (attributes.c; Envoy's GetProperty in contrib/golang/filters/http/source/
// golang_filter.cc).

import (
	"encoding/base64"
	"fmt"
	"strings"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/structpb"
)

func TestProperties(t *testing.T) {
	h := noopHost(t)
	cfg := configID(t, h, "probe", nil)
	paths := []string{
		"xds.cluster_name", "xds.cluster_metadata", "xds.cluster_metadata.filter_metadata.istio.services.0.name",
		"xds.cluster_metadata.filter_metadata.istio", "xds.route_name", "connection.mtls",
		"connection.uri_san_peer_certificate", "connection.uri_san_local_certificate", "response.code",
		"response.flags", "request.protocol", "request.total_size", "source.address", "upstream.address",
		"xds.node.id", "no.such.thing", "request.headers.x-in", "xds.upstream_host_metadata.filter_metadata.istio.workload",
		"response.total_size", "request.duration", "metadata.filter_metadata.envoy.lb.canary",
		"metadata.filter_metadata.lb.canary", "filter_state.fs.key",
	}
	r := baseReq(cfg, "props")
	r.Headers = append(r.Headers, [2]string{"x-probe-props", strings.Join(paths, ",")})
	r.Info = StreamInfo{
		Protocol: "HTTP/2", ResponseFlags: 0x20, RouteName: "r1", UpstreamCluster: "outbound|9080||reviews.default.svc.cluster.local",
		DownstreamRemote: "10.0.0.1:34567", UpstreamHost: "10.0.0.9:9080", RequestDuration: 1500 * time.Microsecond,
		TLS: &TLS{PeerCertificatePresented: true, PeerCertificateValidated: true,
			URISANPeer: []string{"spiffe://cluster.local/ns/default/sa/productpage"}, URISANLocal: []string{"spiffe://cluster.local/ns/default/sa/reviews"}},
	}
	r.Cluster = IstioClusterMetadata("reviews.default.svc.cluster.local", "reviews", "default")
	hostMeta, _ := structpb.NewStruct(map[string]interface{}{"workload": "reviews-v1;default;reviews;v1;Kubernetes"})
	r.Host = &corev3.Metadata{FilterMetadata: map[string]*structpb.Struct{"istio": hostMeta}}
	canary, _ := structpb.NewStruct(map[string]interface{}{"canary": true})
	r.DynamicMetadata = map[string]*structpb.Struct{"envoy.lb": canary, "lb": canary}
	r.FilterState = map[string]string{"fs.key": "v"}
	r.ResponseHeaders = H(":status", "404")
	r.ResponseBody = [][]byte{[]byte("nope")}
	r.LogTypes = []int{LogDownstreamEnd}
	res := mustRun(t, h, r)

	got := map[string]string{}
	for i, p := range paths {
		v, ok := res.Downstream.Headers.Get(fmt.Sprintf("x-prop-%d", i))
		if !ok {
			t.Fatalf("no answer for %s", p)
		}
		if !strings.HasPrefix(v, "ERR:") {
			b, _ := base64.StdEncoding.DecodeString(v)
			v = string(b)
		}
		got[p] = v
	}
	clusterRaw, _ := proto.Marshal(r.Cluster)
	reqHdrBytes := 0
	for _, kv := range r.Headers {
		reqHdrBytes += len(kv[0]) + len(kv[1])
	}
	want := map[string]string{
		"xds.cluster_name": "outbound|9080||reviews.default.svc.cluster.local",
		"xds.cluster_metadata.filter_metadata.istio.services.0.name": "reviews",
		"xds.cluster_metadata.filter_metadata.istio":                 "ERR:serialization failure",
		"xds.route_name":                       "r1",
		"connection.mtls":                      "true",
		"connection.uri_san_peer_certificate":  "spiffe://cluster.local/ns/default/sa/productpage",
		"connection.uri_san_local_certificate": "spiffe://cluster.local/ns/default/sa/reviews",
		"response.code":                        "404",
		"response.flags":                       "32",
		"request.protocol":                     "HTTP/2",
		"request.total_size":                   fmt.Sprint(reqHdrBytes),
		"source.address":                       "10.0.0.1:34567",
		"upstream.address":                     "10.0.0.9:9080",
		"xds.node.id":                          "ERR:value not found", // Envoy v1.39.1: no local_info in the golang filter
		"no.such.thing":                        "ERR:value not found",
		"request.headers.x-in":                 "in",
		"xds.upstream_host_metadata.filter_metadata.istio.workload": "reviews-v1;default;reviews;v1;Kubernetes",
		"request.duration":                         "ERR:value not found", // only after completeRequest
		"metadata.filter_metadata.envoy.lb.canary": "ERR:value not found", // "envoy.lb" contains a dot
		"metadata.filter_metadata.lb.canary":       "true",
		"filter_state.fs.key":                      "ERR:value not found", // the key contains a dot too
		"response.total_size":                      "ERR:value not found", // set below
	}
	delete(want, "response.total_size")
	for p, w := range want {
		if got[p] != w {
			t.Errorf("%s = %q, want %q", p, got[p], w)
		}
	}
	if got["xds.cluster_metadata"] != string(clusterRaw) {
		var m corev3.Metadata
		if err := proto.Unmarshal([]byte(got["xds.cluster_metadata"]), &m); err != nil || !proto.Equal(&m, r.Cluster) {
			t.Errorf("xds.cluster_metadata does not decode to the cluster metadata: %v", err)
		}
	}
	// OnLog reads the same properties after completeRequest
	var logLine string
	for _, l := range res.Logs() {
		if strings.HasPrefix(l, "probe-onlog") {
			logLine = l
		}
	}
	if !strings.Contains(logLine, "code=404") || !strings.Contains(logLine, "request.duration="+base64.StdEncoding.EncodeToString([]byte("1.5ms"))) {
		t.Errorf("OnLog line %q", logLine)
	}
}

func TestNodeProperties(t *testing.T) {
	artifacts(t)
	node := &corev3.Node{Id: "sidecar~10.0.0.1~pod.ns~ns.svc.cluster.local", Cluster: "productpage.default"}
	node.Metadata, _ = structpb.NewStruct(map[string]interface{}{"NAMESPACE": "default", "LABELS": map[string]interface{}{"app": "productpage"}})
	h := shared(t, "node", Options{SO: noopSO, Node: node, NodeInCEL: true})
	cfg := configID(t, h, "probe", nil)
	r := baseReq(cfg, "props")
	r.Headers = append(r.Headers, [2]string{"x-probe-props", "xds.node.id,xds.node.metadata.NAMESPACE,xds.node.metadata.LABELS,xds.node"})
	res := mustRun(t, h, r)
	dec := func(i int) string {
		v, _ := res.Downstream.Headers.Get(fmt.Sprintf("x-prop-%d", i))
		if strings.HasPrefix(v, "ERR:") {
			return v
		}
		b, _ := base64.StdEncoding.DecodeString(v)
		return string(b)
	}
	if dec(0) != node.Id || dec(1) != "default" || dec(2) != "ERR:serialization failure" {
		t.Errorf("node props %q %q %q", dec(0), dec(1), dec(2))
	}
	var n corev3.Node
	if err := proto.Unmarshal([]byte(dec(3)), &n); err != nil || n.Id != node.Id {
		t.Errorf("xds.node does not decode: %v", err)
	}
}
