package httpstats

import (
	"errors"
	"strings"
	"sync"
	"testing"

	"github.com/envoyproxy/envoy/contrib/golang/common/go/api"
)

// A fake of the SDK's pure-Go API: just enough of Envoy's behaviour for the
// filter's logic. The real C boundary is exercised in e2e/envoyhost.

type fakeLog struct {
	mu   sync.Mutex
	msgs []string
}

func (l *fakeLog) Log(level api.LogType, msg string) {
	l.mu.Lock()
	l.msgs = append(l.msgs, msg)
	l.mu.Unlock()
}
func (l *fakeLog) LogLevel() api.LogType { return api.Trace }

var testLog = &fakeLog{}

func init() { api.SetCommonCAPI(testLog) }

type headers struct {
	m    map[string]string
	path string
}

func newHeaders(kv ...string) *headers {
	h := &headers{m: map[string]string{}}
	for i := 0; i+1 < len(kv); i += 2 {
		h.m[kv[i]] = kv[i+1]
	}
	return h
}

func (h *headers) GetRaw(name string) string              { return h.m[name] }
func (h *headers) Get(key string) (string, bool)          { v, ok := h.m[key]; return v, ok }
func (h *headers) Values(key string) []string             { return []string{h.m[key]} }
func (h *headers) Set(key, value string)                  { h.m[key] = value }
func (h *headers) Add(key, value string)                  { h.m[key] = value }
func (h *headers) Del(key string)                         { delete(h.m, key) }
func (h *headers) Range(f func(key, value string) bool)   {}
func (h *headers) RangeWithCopy(f func(k, v string) bool) {}
func (h *headers) GetAllHeaders() map[string][]string     { panic("the filter must not copy all headers") }
func (h *headers) Scheme() string                         { return "http" }
func (h *headers) Method() string                         { return h.m[":method"] }
func (h *headers) Host() string                           { return h.m[":authority"] }
func (h *headers) Path() string                           { return h.m[":path"] }
func (h *headers) SetMethod(string)                       {}
func (h *headers) SetHost(string)                         {}
func (h *headers) SetPath(string)                         {}
func (h *headers) Status() (int, bool)                    { return 200, true }

var errNotFound = errors.New("not found")

type stream struct {
	worker     uint32
	code       uint32
	hasCode    bool
	cluster    string
	route      string
	props      map[string]string
	panicOn    string // GetProperty(key) panics: a bug in a dependency
	localReply *localReply
}

type localReply struct {
	code    int
	body    string
	headers map[string][]string
}

func (s *stream) StreamInfo() api.StreamInfo                         { return (*info)(s) }
func (s *stream) ClearRouteCache()                                   {}
func (s *stream) RefreshRouteCache()                                 {}
func (s *stream) Log(api.LogType, string)                            {}
func (s *stream) LogLevel() api.LogType                              { return api.Info }
func (s *stream) SecretManager() api.SecretManager                   { return nil }
func (s *stream) DecoderFilterCallbacks() api.DecoderFilterCallbacks { return (*proc)(s) }
func (s *stream) EncoderFilterCallbacks() api.EncoderFilterCallbacks { return (*proc)(s) }
func (s *stream) GetProperty(key string) (string, error) {
	if key == s.panicOn {
		panic("boom in " + key)
	}
	v, ok := s.props[key]
	if !ok {
		return "", errNotFound
	}
	return v, nil
}

type proc stream

func (p *proc) Continue(api.StatusType) {}
func (p *proc) SendLocalReply(code int, body string, h map[string][]string, grpc int64, details string) {
	p.localReply = &localReply{code, body, h}
}
func (p *proc) RecoverPanic()                              {}
func (p *proc) AddData([]byte, bool)                       {}
func (p *proc) InjectData([]byte)                          {}
func (p *proc) SetUpstreamOverrideHost(string, bool) error { return nil }

type info stream

func (i *info) GetRouteName() string                       { return i.route }
func (i *info) FilterChainName() string                    { return "" }
func (i *info) Protocol() (string, bool)                   { return "HTTP/1.1", true }
func (i *info) ResponseCode() (uint32, bool)               { return i.code, i.hasCode }
func (i *info) ResponseCodeDetails() (string, bool)        { return "", false }
func (i *info) AttemptCount() uint32                       { return 1 }
func (i *info) DynamicMetadata() api.DynamicMetadata       { return nil }
func (i *info) DownstreamLocalAddress() string             { return "" }
func (i *info) DownstreamRemoteAddress() string            { return "" }
func (i *info) UpstreamLocalAddress() (string, bool)       { return "", false }
func (i *info) UpstreamRemoteAddress() (string, bool)      { return "", false }
func (i *info) UpstreamClusterName() (string, bool)        { return i.cluster, i.cluster != "" }
func (i *info) FilterState() api.FilterState               { return nil }
func (i *info) VirtualClusterName() (string, bool)         { return "", false }
func (i *info) WorkerID() uint32                           { return i.worker }
func (i *info) DrainConnectionUponCompletion()             {}
func (i *info) DownstreamSslConnection() api.SslConnection { return nil }

func mustNoPanicLog(t *testing.T) {
	t.Helper()
	testLog.mu.Lock()
	defer testLog.mu.Unlock()
	for _, m := range testLog.msgs {
		if strings.Contains(m, "panic") {
			t.Errorf("unexpected panic log: %s", m)
		}
	}
}

// trailers mirrors the SDK's trailer maps: GetRaw reads the phase's header
// map (Filter::getHeader uses state.headers), not the trailers; Get copies
// the real trailers.
type trailers struct{ *headers }

func (t trailers) GetRaw(string) string { return "" }
