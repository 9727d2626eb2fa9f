package hostile

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/leanmesh/leanmesh/filters/pluginconfig"

	xdstypev3 "github.com/cncf/xds/go/xds/type/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/structpb"

	"github.com/leanmesh/leanmesh/controller/render"
	"github.com/leanmesh/leanmesh/e2e/cluster"
	"github.com/leanmesh/leanmesh/e2e/envoyhost"
	"github.com/leanmesh/leanmesh/e2e/layout"
)

var (
	hostOnce sync.Once
	hostBin  string
	soPath   string
	hostErr  error
)

// dataplaneArtifacts builds the C test host and leanmesh.so once per test
// process (as e2e/dataplane and the demo do).
func dataplaneArtifacts(t testing.TB) (host, so string) {
	t.Helper()
	hostOnce.Do(func() {
		dir, err := os.MkdirTemp("", "leanmesh-hostile-host-")
		if err != nil {
			hostErr = err
			return
		}
		hostBin, soPath = filepath.Join(dir, "envoyhost"), filepath.Join(dir, "leanmesh.so")
		if hostErr = envoyhost.BuildHost(hostBin); hostErr == nil {
			hostErr = envoyhost.BuildPlugin("./filters/cmd/leanmesh", soPath)
		}
	})
	if hostErr != nil {
		t.Fatal(hostErr)
	}
	return hostBin, soPath
}

// The filter configs a sidecar runs for the soak's traffic, where istiod
// puts them: the outbound listener for port 9080, the inbound chain for
// 9080 and the exposition listener.
const (
	slotOut = "outbound 0.0.0.0_9080"
	slotIn  = "inbound virtualInbound/0.0.0.0_9080"
	slotEx  = "exposition " + render.ExpositionListener
)

var slots = []string{slotOut, slotIn, slotEx}

// proxyAgent plays the part of a sidecar's Envoy for the soak: it follows
// the LDS istiod pushes over its ADS stream and loads into the C test host
// exactly the leanmesh plugin_config each chain carries, as Envoy builds a
// new filter config when a listener changes and drops it when the filter
// goes (Istio mode). An unchanged config is not reloaded (Envoy keeps a
// listener whose config hash did not change), so a push that changes
// nothing costs nothing: the reload counter shows every real change.
type proxyAgent struct {
	w          cluster.Workload
	labelsPath string
	h          *envoyhost.Host

	mu      sync.Mutex
	ads     *cluster.Sidecar
	seen    int // LDS pushes of ads already applied
	cfg     map[string]*loadedConfig
	reloads int
	changes []string
}

type loadedConfig struct {
	served *anypb.Any // as istiod served it
	id     uint64     // the host's config id
	prefix string     // metric_prefix: "" (LeanMesh) or the Shadow prefix
}

// startProxyAgent starts a host for w's pod (its identity in the
// environment istio-agent gives Envoy, its labels in the downward-API file)
// connected to istiod at xdsAddr.
func startProxyAgent(t *testing.T, w cluster.Workload, xdsAddr string, workers int) *proxyAgent {
	t.Helper()
	hostBin, so := dataplaneArtifacts(t)
	dir := t.TempDir()
	keys := make([]string, 0, len(w.Labels))
	for k := range w.Labels {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var labels strings.Builder
	for _, k := range keys {
		fmt.Fprintf(&labels, "%s=%q\n", k, w.Labels[k])
	}
	a := &proxyAgent{w: w, labelsPath: filepath.Join(dir, "labels"), cfg: map[string]*loadedConfig{}}
	if err := os.WriteFile(a.labelsPath, []byte(labels.String()), 0o644); err != nil {
		t.Fatal(err)
	}
	env := []string{"POD_NAME=" + w.PodName, "POD_NAMESPACE=" + w.Namespace, "INSTANCE_IP=" + w.IP,
		"SERVICE_ACCOUNT=" + w.ServiceAccount, "ISTIO_META_WORKLOAD_NAME=" + w.Name, "ISTIO_META_CLUSTER_ID=" + cluster.ClusterID,
		"ISTIO_META_ISTIO_VERSION=" + cluster.DefaultIstioProxyVersion, "ISTIO_META_MESH_ID=cluster.local"}
	logf, err := os.Create(filepath.Join(dir, "envoyhost.log"))
	if err != nil {
		t.Fatal(err)
	}
	h, err := envoyhost.Start(envoyhost.Options{HostBin: hostBin, SO: so, Workers: workers, Env: env, LogLevel: 3, Stderr: logf})
	if err != nil {
		t.Fatal(err)
	}
	a.h = h
	t.Cleanup(func() {
		a.mu.Lock()
		if a.ads != nil {
			a.ads.Close()
		}
		a.mu.Unlock()
		h.Close()
		logf.Close()
	})
	if err := a.connect(xdsAddr); err != nil {
		t.Fatal(err)
	}
	return a
}

// connect opens a new ADS stream (a restarted istiod), as Envoy reconnects:
// the configs loaded stay until the new stream's LDS says otherwise.
func (a *proxyAgent) connect(xdsAddr string) error {
	sc, err := cluster.ConnectSidecar(context.Background(), xdsAddr, cluster.SidecarFor(&cluster.WorkloadObjects{Workload: a.w}))
	if err != nil {
		return err
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.ads != nil {
		a.ads.Close()
	}
	a.ads, a.seen = sc, 0
	return nil
}

// synced reports whether the current stream has delivered LDS at least once.
func (a *proxyAgent) synced() bool {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.ads.Snapshot().Pushes(cluster.TypeListener) > 0 && a.seen > 0
}

// sync applies the latest LDS push, if any: loads changed configs, drops
// the ones istiod no longer serves.
func (a *proxyAgent) sync() error {
	a.mu.Lock()
	defer a.mu.Unlock()
	s := a.ads.Snapshot()
	pushes := s.Pushes(cluster.TypeListener)
	if pushes == 0 || pushes == a.seen {
		return nil // nothing yet on this stream, or nothing new
	}
	want := map[string]*anypb.Any{}
	for _, sl := range []struct{ slot, listener, chain string }{
		{slotOut, "0.0.0.0_9080", ""}, {slotIn, "virtualInbound", "0.0.0.0_9080"}, {slotEx, render.ExpositionListener, ""},
	} {
		c, err := layout.PluginConfig(s.HTTPFilterChains(sl.listener), sl.chain)
		if errors.Is(err, layout.ErrNoPlugin) {
			continue
		}
		if err != nil {
			return fmt.Errorf("%s %s: %w", a.w.Name, sl.slot, err)
		}
		want[sl.slot] = c
	}
	for _, slot := range slots {
		cur, next := a.cfg[slot], want[slot]
		switch {
		case next == nil && cur == nil:
		case next == nil:
			if err := a.h.DestroyConfig(cur.id); err != nil {
				return err
			}
			delete(a.cfg, slot)
			a.reloads++
		case cur == nil || !sameConfig(cur.served, next):
			ts := &xdstypev3.TypedStruct{}
			if err := next.UnmarshalTo(ts); err != nil {
				return fmt.Errorf("%s %s: %w", a.w.Name, slot, err)
			}
			load := next
			if slot != slotEx {
				// The served config names the labels file at its in-pod
				// path; point it at this pod's copy (the only field changed).
				ts = proto.Clone(ts).(*xdstypev3.TypedStruct)
				ts.Value.Fields["local_identity"] = structpb.NewStructValue(&structpb.Struct{Fields: map[string]*structpb.Value{
					"pod_labels_path": structpb.NewStringValue(a.labelsPath)}})
				var err error
				if load, err = anypb.New(ts); err != nil {
					return err
				}
			}
			id, err := a.h.Config(pluginconfig.PluginHTTP, load)
			if err != nil {
				return fmt.Errorf("%s %s: the library refused the config istiod served: %w", a.w.Name, slot, err)
			}
			if cur != nil {
				if err := a.h.DestroyConfig(cur.id); err != nil {
					return err
				}
			}
			if cur != nil {
				a.changes = append(a.changes, fmt.Sprintf("%s: %s\n  was %s", slot, protojson.Format(next), protojson.Format(cur.served)))
			}
			a.cfg[slot] = &loadedConfig{served: next, id: id, prefix: ts.GetValue().GetFields()["metric_prefix"].GetStringValue()}
			a.reloads++
		}
	}
	a.seen = pushes
	return nil
}

// sameConfig compares two served plugin_configs by content: the Any's
// bytes differ between equal configs, since a Struct is a map and istiod's
// serialization does not fix its order (a restarted istiod sent equal
// configs with other bytes). Envoy likewise compares listeners by a
// deterministic hash that expands Any (MessageUtil::hash), so an equal
// config does not rebuild the listener.
func sameConfig(a, b *anypb.Any) bool {
	ma, err := a.UnmarshalNew()
	if err != nil {
		return false
	}
	mb, err := b.UnmarshalNew()
	return err == nil && proto.Equal(ma, mb)
}

// config returns the config loaded for slot, nil if the chain has no leanmesh.
func (a *proxyAgent) config(slot string) *loadedConfig {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.cfg[slot]
}

func (a *proxyAgent) reloadCount() int {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.reloads
}

// mode names what the proxy's HTTP chains run: Istio (no leanmesh),
// LeanMesh (leanmesh under Istio's names), Shadow (leanmesh under the Shadow
// prefix) or mixed.
func (a *proxyAgent) mode() string {
	out, in := a.config(slotOut), a.config(slotIn)
	switch {
	case out == nil && in == nil:
		return "Istio"
	case out == nil || in == nil || out.prefix != in.prefix:
		return "mixed"
	case out.prefix == "":
		return "LeanMesh"
	default:
		return "Shadow"
	}
}

// scrape reads the exposition as Prometheus would, through the exposition
// config istiod served; ok is false when there is none (Istio mode).
func (a *proxyAgent) scrape() (fams map[string]*dto.MetricFamily, size int, ok bool, err error) {
	ex := a.config(slotEx)
	if ex == nil {
		return nil, 0, false, nil
	}
	res, err := a.h.Run(&envoyhost.Request{Config: ex.id, NoResponse: true,
		Headers: envoyhost.H(":method", "GET", ":path", "/stats/prometheus", ":authority", a.w.IP+":15095", ":scheme", "http")})
	if err != nil {
		return nil, 0, true, err
	}
	if res.LocalReply == nil || res.LocalReply.Code != 200 {
		return nil, 0, true, fmt.Errorf("scrape of %s: %+v %s", a.w.Name, res.LocalReply, res.Error)
	}
	parser := expfmt.NewTextParser(model.UTF8Validation)
	fams, err = parser.TextToMetricFamilies(bytes.NewReader(res.LocalReply.Body))
	return fams, len(res.LocalReply.Body), true, err
}

// heap is the library's live Go heap after two collections (the second
// runs the cleanups the first queued), as leanmesh_go_heap_live_bytes.
func (a *proxyAgent) heap() (float64, bool, error) {
	for range 2 {
		if err := a.h.GC(); err != nil {
			return 0, false, err
		}
	}
	fams, _, ok, err := a.scrape()
	if !ok || err != nil {
		return 0, ok, err
	}
	return value(fams, "leanmesh_go_heap_live_bytes", nil), true, nil
}

// spiffe is the workload's Istio identity.
func spiffe(w cluster.Workload) string {
	return "spiffe://cluster.local/ns/" + w.Namespace + "/sa/" + w.ServiceAccount
}

// exchange is one request from client to server's port 9080, each side
// running what its LDS says; it returns the metric prefix each side counted
// it under, or ok=false where the chain had no leanmesh (Istio's own
// filters count it there, which this host cannot run).
type exchange struct {
	clientPrefix, serverPrefix string
	clientLean, serverLean     bool
}

func relayOnce(client, server *proxyAgent, outMeta, inMeta *corev3.Metadata, i int) (exchange, error) {
	var x exchange
	code := "200"
	if i%10 == 9 {
		code = "503"
	}
	reqHeaders := envoyhost.H(":method", "GET", ":path", fmt.Sprintf("/reviews/%d", i), ":authority", "reviews:9080", ":scheme", "http")
	upstream := reqHeaders
	var held *envoyhost.Held
	if out := client.config(slotOut); out != nil {
		part, h, err := client.h.RunRequest(&envoyhost.Request{Config: out.id, Headers: reqHeaders,
			Info:    envoyhost.StreamInfo{Protocol: "HTTP/1.1", UpstreamCluster: server.w.OutboundCluster(9080), RequestDuration: time.Duration(5+i%50) * time.Millisecond},
			Cluster: outMeta,
			Props: []envoyhost.Prop{{Path: "upstream.uri_san_peer_certificate", Value: []byte(spiffe(server.w))},
				{Path: "upstream.uri_san_local_certificate", Value: []byte(spiffe(client.w))}}})
		if err != nil {
			return x, fmt.Errorf("client: %w", err)
		}
		if part.Error != "" {
			return x, fmt.Errorf("client: %s", part.Error)
		}
		upstream, held, x.clientLean, x.clientPrefix = part.Upstream.Headers, h, true, out.prefix
	}
	var sres *envoyhost.Result
	if in := server.config(slotIn); in != nil {
		var err error
		sres, err = server.h.Run(&envoyhost.Request{Config: in.id, Headers: upstream,
			Info: envoyhost.StreamInfo{Protocol: "HTTP/1.1", UpstreamCluster: "inbound|9080||", RequestDuration: time.Duration(3+i%40) * time.Millisecond,
				TLS: &envoyhost.TLS{PeerCertificatePresented: true, PeerCertificateValidated: true, URISANPeer: []string{spiffe(client.w)}, URISANLocal: []string{spiffe(server.w)}}},
			Cluster: inMeta, ResponseHeaders: envoyhost.H(":status", code, "content-type", "application/json")})
		if err != nil {
			return x, fmt.Errorf("server: %w", err)
		}
		if sres.Error != "" {
			return x, fmt.Errorf("server: %s", sres.Error)
		}
		x.serverLean, x.serverPrefix = true, in.prefix
	}
	if held == nil {
		return x, nil
	}
	var cres *envoyhost.Result
	var err error
	if sres != nil {
		cres, err = held.FinishWith(sres)
	} else {
		cres, err = held.Finish(envoyhost.H(":status", code, "content-type", "application/json"), nil, nil)
	}
	if err != nil {
		return x, fmt.Errorf("client response: %w", err)
	}
	if cres.Error != "" {
		return x, fmt.Errorf("client response: %s", cres.Error)
	}
	return x, nil
}
