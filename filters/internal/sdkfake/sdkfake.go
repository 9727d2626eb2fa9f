// Package sdkfake is the one fake of Envoy's Go extension API (the SDK's
// pure-Go api package) that leanmesh's filter packages test against: just
// enough of Envoy's behaviour for the filters' logic, with every C call
// counted. The real C boundary is exercised by e2e/envoyhost.
//
// Modelled on htnn's shared CAPI fake: compile-time assertions that each fake
// implements the SDK's interfaces (an SDK upgrade that changes one fails to
// compile here first), and the methods that exist only in some SDK versions
// in files selected by the same build tags as filters/cmd/leanmesh
// (envoy1.36 … envoy1.39, see envoy-build/versions.tsv).
package sdkfake

import (
	"errors"
	"strings"
	"sync"

	"github.com/envoyproxy/envoy/contrib/golang/common/go/api"
)

var (
	_ api.CommonCAPI             = (*Log)(nil)
	_ api.RequestHeaderMap       = (*Headers)(nil)
	_ api.ResponseHeaderMap      = (*Headers)(nil)
	_ api.RequestTrailerMap      = Trailers{}
	_ api.ResponseTrailerMap     = Trailers{}
	_ api.FilterCallbackHandler  = (*Stream)(nil)
	_ api.DecoderFilterCallbacks = (*streamProc)(nil)
	_ api.EncoderFilterCallbacks = (*streamProc)(nil)
	_ api.StreamInfo             = (*streamInfo)(nil)
	_ api.ConnectionCallback     = (*Conn)(nil)
	_ api.StreamInfo             = (*ConnInfo)(nil)
)

// Log is the SDK's common C API (api.SetCommonCAPI): it keeps every line the
// filters log.
type Log struct {
	mu   sync.Mutex
	msgs []string
}

func (l *Log) Log(level api.LogType, msg string) {
	l.mu.Lock()
	l.msgs = append(l.msgs, msg)
	l.mu.Unlock()
}
func (l *Log) LogLevel() api.LogType { return api.Trace }

// Messages returns a copy of the lines logged so far.
func (l *Log) Messages() []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]string(nil), l.msgs...)
}

// Count returns how many logged lines contain substr.
func (l *Log) Count(substr string) int {
	n := 0
	for _, m := range l.Messages() {
		if strings.Contains(m, substr) {
			n++
		}
	}
	return n
}

var (
	logOnce sync.Once
	theLog  = &Log{}
)

// InstallLog installs the process's one fake log (api.SetCommonCAPI) and
// returns it; call it from a package-level var or init.
func InstallLog() *Log {
	logOnce.Do(func() { api.SetCommonCAPI(theLog) })
	return theLog
}

// Headers is a header map holding one value per key. Range and
// GetAllHeaders are never used by the filters (they would copy the whole map
// into Go); GetAllHeaders panics to prove it.
type Headers struct {
	M map[string]string
	// Reads counts GetRaw and Get calls: each is a C call in the SDK.
	Reads int
}

// NewHeaders returns a map of the key/value pairs kv.
func NewHeaders(kv ...string) *Headers {
	h := &Headers{M: map[string]string{}}
	for i := 0; i+1 < len(kv); i += 2 {
		h.M[kv[i]] = kv[i+1]
	}
	return h
}

func (h *Headers) GetRaw(name string) string { h.Reads++; return h.M[name] }
func (h *Headers) Get(key string) (string, bool) {
	h.Reads++
	v, ok := h.M[key]
	return v, ok
}
func (h *Headers) Values(key string) []string             { return []string{h.M[key]} }
func (h *Headers) Set(key, value string)                  { h.M[key] = value }
func (h *Headers) Add(key, value string)                  { h.M[key] = value }
func (h *Headers) Del(key string)                         { delete(h.M, key) }
func (h *Headers) Range(f func(key, value string) bool)   {}
func (h *Headers) RangeWithCopy(f func(k, v string) bool) {}
func (h *Headers) GetAllHeaders() map[string][]string {
	panic("sdkfake: the filter must not copy all headers")
}
func (h *Headers) Scheme() string      { return "http" }
func (h *Headers) Method() string      { return h.M[":method"] }
func (h *Headers) Host() string        { return h.M[":authority"] }
func (h *Headers) Path() string        { return h.M[":path"] }
func (h *Headers) SetMethod(string)    {}
func (h *Headers) SetHost(string)      {}
func (h *Headers) SetPath(string)      {}
func (h *Headers) Status() (int, bool) { return 200, true }

// Trailers mirrors the SDK's trailer maps (v1.39): GetRaw reads the header
// map of the same phase (Filter::getHeader uses state.headers), not the
// trailers, so it finds nothing here; Get copies the real trailers.
type Trailers struct{ *Headers }

func (t Trailers) GetRaw(string) string { return "" }

// ErrNotFound is GetProperty's error for a property the stream lacks.
var ErrNotFound = errors.New("sdkfake: property not found")

// Stream is one HTTP stream's callbacks (api.FilterCallbackHandler) with
// the StreamInfo values a test sets.
type Stream struct {
	Worker  uint32
	Code    uint32
	HasCode bool
	Cluster string
	Route   string
	// Props answers GetProperty; a missing key is ErrNotFound.
	Props map[string]string
	// PanicOn makes GetProperty(PanicOn) panic: a bug in a dependency.
	PanicOn string
	// LocalReply is the last SendLocalReply.
	LocalReply *LocalReply
	// PropertyReads lists the GetProperty keys asked, in order.
	PropertyReads []string
}

// LocalReply is what SendLocalReply was given.
type LocalReply struct {
	Code    int
	Body    string
	Headers map[string][]string
}

func (s *Stream) StreamInfo() api.StreamInfo                         { return (*streamInfo)(s) }
func (s *Stream) ClearRouteCache()                                   {}
func (s *Stream) RefreshRouteCache()                                 {}
func (s *Stream) Log(api.LogType, string)                            {}
func (s *Stream) LogLevel() api.LogType                              { return api.Info }
func (s *Stream) SecretManager() api.SecretManager                   { return nil }
func (s *Stream) DecoderFilterCallbacks() api.DecoderFilterCallbacks { return (*streamProc)(s) }
func (s *Stream) EncoderFilterCallbacks() api.EncoderFilterCallbacks { return (*streamProc)(s) }
func (s *Stream) GetProperty(key string) (string, error) {
	s.PropertyReads = append(s.PropertyReads, key)
	if key == s.PanicOn {
		panic("sdkfake: boom in " + key)
	}
	v, ok := s.Props[key]
	if !ok {
		return "", ErrNotFound
	}
	return v, nil
}

type streamProc Stream

func (p *streamProc) Continue(api.StatusType) {}
func (p *streamProc) SendLocalReply(code int, body string, h map[string][]string, grpc int64, details string) {
	p.LocalReply = &LocalReply{code, body, h}
}
func (p *streamProc) RecoverPanic()                              {}
func (p *streamProc) AddData([]byte, bool)                       {}
func (p *streamProc) InjectData([]byte)                          {}
func (p *streamProc) SetUpstreamOverrideHost(string, bool) error { return nil }

type streamInfo Stream

func (i *streamInfo) GetRouteName() string                  { return i.Route }
func (i *streamInfo) FilterChainName() string               { return "" }
func (i *streamInfo) Protocol() (string, bool)              { return "HTTP/1.1", true }
func (i *streamInfo) ResponseCode() (uint32, bool)          { return i.Code, i.HasCode }
func (i *streamInfo) ResponseCodeDetails() (string, bool)   { return "", false }
func (i *streamInfo) AttemptCount() uint32                  { return 1 }
func (i *streamInfo) DynamicMetadata() api.DynamicMetadata  { return nil }
func (i *streamInfo) DownstreamLocalAddress() string        { return "" }
func (i *streamInfo) DownstreamRemoteAddress() string       { return "" }
func (i *streamInfo) UpstreamLocalAddress() (string, bool)  { return "", false }
func (i *streamInfo) UpstreamRemoteAddress() (string, bool) { return "", false }
func (i *streamInfo) UpstreamClusterName() (string, bool)   { return i.Cluster, i.Cluster != "" }
func (i *streamInfo) FilterState() api.FilterState          { return nil }
func (i *streamInfo) VirtualClusterName() (string, bool)    { return "", false }
func (i *streamInfo) WorkerID() uint32                      { return i.Worker }

// Conn is a network connection's callbacks (api.ConnectionCallback). The
// filters must never write to or close a connection they only observe.
type Conn struct{ Info *ConnInfo }

// NewConn returns a connection whose stream info has the local and remote
// addresses as the network filter sees them.
func NewConn(local, remote string) *Conn { return &Conn{&ConnInfo{Local: local, Remote: remote}} }

func (c *Conn) StreamInfo() api.StreamInfo    { return c.Info }
func (c *Conn) Write([]byte, bool)            { panic("sdkfake: the filter must not write") }
func (c *Conn) Close(api.ConnectionCloseType) { panic("sdkfake: the filter must not close") }
func (c *Conn) EnableHalfClose(enabled bool)  { panic("sdkfake: downstream only") }

// ConnInfo is the network filter's StreamInfo. It embeds a nil interface so
// that every method the SDK's network filter leaves unimplemented panics here
// too, as it does in the SDK.
type ConnInfo struct {
	api.StreamInfo
	Local, Remote string
	// PanicAddr makes UpstreamLocalAddress panic (the SDK's "implement me").
	PanicAddr bool
}

func (i *ConnInfo) UpstreamLocalAddress() (string, bool) {
	if i.PanicAddr {
		panic("implement me")
	}
	return i.Local, true
}
func (i *ConnInfo) UpstreamRemoteAddress() (string, bool) { return i.Remote, true }
