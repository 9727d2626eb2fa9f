package pluginconfig

import (
	"fmt"
	"net"
)

// TCP configures the leanmesh-tcp network filter; the HTTP filter ignores it.
type TCP struct {
	// WorkloadDiscovery is where the address → workload table comes from.
	// Without it every TCP peer is unknown.
	WorkloadDiscovery *WorkloadDiscovery `json:"workload_discovery,omitempty"`
}

// WorkloadDiscovery names the controller's workload stream
// (filters/workloads/PROTOCOL.md).
type WorkloadDiscovery struct {
	Address   string `json:"address"`              // host:port
	TokenPath string `json:"token_path,omitempty"` // default /var/run/secrets/tokens/istio-token
	CA        string `json:"ca,omitempty"`         // PEM file verifying the controller
	// Plaintext disables TLS; the token then travels in clear (tests only).
	Plaintext  bool `json:"plaintext,omitempty"`
	MaxEntries int  `json:"max_entries,omitempty"` // table bound, default 262144
}

// MaxWorkloadEntries bounds max_entries (about 120 MB of table).
const MaxWorkloadEntries = 1 << 20

func compileTCP(t *TCP) error {
	wd := t.WorkloadDiscovery
	if wd == nil {
		return nil
	}
	if _, _, err := net.SplitHostPort(wd.Address); err != nil || wd.Address == "" {
		return fmt.Errorf("plugin_config: field \"tcp.workload_discovery.address\": %q is not host:port", wd.Address)
	}
	if (wd.CA == "") == !wd.Plaintext {
		return fmt.Errorf("plugin_config: field \"tcp.workload_discovery\": set exactly one of ca and plaintext")
	}
	if wd.MaxEntries < 0 || wd.MaxEntries > MaxWorkloadEntries {
		return fmt.Errorf("plugin_config: field \"tcp.workload_discovery.max_entries\": %d outside 0..%d", wd.MaxEntries, MaxWorkloadEntries)
	}
	return nil
}
