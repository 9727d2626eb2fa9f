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

func sharedList() []*Registry {
	shared.mu.Lock()
	defer shared.mu.Unlock()
	return append([]*Registry(nil), shared.list...)
}

// AppendShared appends the text exposition of every shared registry.
func AppendShared(buf []byte) []byte { return AppendText(buf, sharedList()...) }

// ContentShared returns the exposition of every shared registry in the
// format the scrape's Accept header negotiates, with its Content-Type.
func ContentShared(buf []byte, accept string) ([]byte, string) {
	return ContentFor(buf, accept, sharedList()...)
}
