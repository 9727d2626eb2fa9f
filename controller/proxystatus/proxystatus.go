// Package proxystatus reads what istiod knows about each connected proxy:
// the Istio version it reports and, per xDS type, whether it ACKed or
// NACKed the last push. The source is istiod's /debug/syncz, the same
// per-connection state (model.WatchedResource: NonceSent, NonceAcked,
// LastError) that `istioctl proxy-status` reads over xDS; istiod sets
// LastError from a request's error_detail (pkg/xds/server.go ShouldRespond)
// and clears it on the next ACK.
//
// Why istiod's view and not the pod: the version a proxy reports
// (ISTIO_VERSION node metadata) is the binary that actually connected, also
// after an in-place image change or a revision move; the pod's image tag can
// be a digest or a private mirror's tag, and only istiod knows about NACKs.
package proxystatus

import (
	"encoding/json"
	"fmt"
	"io"
	"strings"
)

// TypeListener is LDS's type URL, the key of syncz's resources.
const TypeListener = "type.googleapis.com/envoy.config.listener.v3.Listener"

// Proxy is one connected proxy as istiod sees it.
type Proxy struct {
	// ID is istiod's proxy id, "<pod>.<namespace>".
	ID        string
	Namespace string
	Pod       string
	// IstioVersion is the ISTIO_VERSION the proxy sent.
	IstioVersion string
	// Istiod is the base URL of the istiod the proxy is connected to.
	Istiod string
	// ListenerSent and ListenerAcked are LDS nonces: different means the
	// last push is not (yet) accepted.
	ListenerSent, ListenerAcked string
	// ListenerError is the error_detail of the proxy's last LDS NACK;
	// empty once it ACKs again.
	ListenerError string
}

// Rejected reports whether the proxy's last LDS answer was a NACK.
func (p Proxy) Rejected() bool { return p.ListenerError != "" }

// ACKState summarises LDS as proxy-status does: ACKED, NACKED, STALE
// (sent, not answered) or NOT SENT.
func (p Proxy) ACKState() string {
	switch {
	case p.ListenerError != "":
		return "NACKED"
	case p.ListenerSent == "":
		return "NOT SENT"
	case p.ListenerSent != p.ListenerAcked:
		return "STALE"
	default:
		return "ACKED"
	}
}

// syncStatus mirrors the fields of istiod's pilot/pkg/xds/debug.go
// SyncStatus that are read here.
type syncStatus struct {
	ProxyID       string `json:"proxy"`
	ProxyType     string `json:"proxy_type"`
	IstioVersion  string `json:"istio_version"`
	ListenerSent  string `json:"listener_sent"`
	ListenerAcked string `json:"listener_acked"`
	Resources     map[string]struct {
		Sent      string `json:"sent"`
		Acked     string `json:"acked"`
		LastError string `json:"lastError"`
	} `json:"resources"`
}

// ParseSyncz decodes a /debug/syncz body.
func ParseSyncz(r io.Reader, istiod string) ([]Proxy, error) {
	var in []syncStatus
	if err := json.NewDecoder(io.LimitReader(r, maxBody)).Decode(&in); err != nil {
		return nil, fmt.Errorf("decoding syncz: %w", err)
	}
	out := make([]Proxy, 0, len(in))
	for _, s := range in {
		ns, pod, ok := PodOf(s.ProxyID)
		if !ok || (s.ProxyType != "" && s.ProxyType != "sidecar" && s.ProxyType != "router") {
			continue // ztunnel, or a debug client without a pod
		}
		p := Proxy{ID: s.ProxyID, Namespace: ns, Pod: pod, IstioVersion: s.IstioVersion, Istiod: istiod,
			ListenerSent: s.ListenerSent, ListenerAcked: s.ListenerAcked}
		if r, ok := s.Resources[TypeListener]; ok {
			p.ListenerError = r.LastError
		}
		out = append(out, p)
	}
	return out, nil
}

// maxBody bounds a syncz read (about 1 KiB per proxy).
const maxBody = 256 << 20

// PodOf extracts the pod from a proxy id. istiod's syncz reports
// model.Proxy.ID, the third field of the node id
// (<type>~<ip>~<pod>.<ns>~<domain>), i.e. "<pod>.<ns>"; a full node id is
// accepted too. Namespaces cannot hold dots, so the last dot splits them.
func PodOf(id string) (ns, pod string, ok bool) {
	if strings.Contains(id, "~") {
		parts := strings.Split(id, "~")
		if len(parts) != 4 || (parts[0] != "sidecar" && parts[0] != "router") {
			return "", "", false
		}
		id = parts[2]
	}
	i := strings.LastIndexByte(id, '.')
	if i <= 0 || i == len(id)-1 {
		return "", "", false
	}
	return id[i+1:], id[:i], true
}

// MentionsLeanmesh reports whether a NACK's message concerns leanmesh's
// configuration: Envoy names the failing filter, its config or its library
// (e.g. "Error adding/updating listener(s) virtualInbound: ... leanmesh.so
// ..."), and every name leanmesh renders (filter, plugin, library id,
// library file, listener) contains "leanmesh".
func MentionsLeanmesh(msg string) bool {
	return strings.Contains(strings.ToLower(msg), "leanmesh")
}
