package telemetry

import "sync"

// Envoy creates one filter config per listener context (inbound, outbound,
// gateway, exposition), and they may differ in buckets or overrides. Configs
// with the same settings share one registry; the exposition writes all of
// them, each family once.
var shared struct {
	mu   sync.Mutex
	regs map[string]*Registry
	list []*Registry
}

// Shared returns the process-wide registry for the settings identified by
// fingerprint, creating it with opts on first use.
func Shared(fingerprint string, opts Options) *Registry {
	shared.mu.Lock()
	defer shared.mu.Unlock()
	if r := shared.regs[fingerprint]; r != nil {
		return r
	}
	if shared.regs == nil {
		shared.regs = map[string]*Registry{}
	}
	r := NewRegistry(opts)
	shared.regs[fingerprint] = r
	shared.list = append(shared.list, r)
	return r
}

// AppendShared appends the exposition of every shared registry.
func AppendShared(buf []byte) []byte {
	shared.mu.Lock()
	regs := append([]*Registry(nil), shared.list...)
	shared.mu.Unlock()
	return AppendText(buf, regs...)
}
