package envoyhost

import (
	"encoding/json"
	"fmt"
	"strconv"
	"strings"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/structpb"
)

// Headers is an ordered header list, as Envoy's header maps are.
type Headers [][2]string

// Get returns the first value of key (lower case), like HeaderMap::get()[0].
func (h Headers) Get(key string) (string, bool) {
	key = strings.ToLower(key)
	for _, kv := range h {
		if kv[0] == key {
			return kv[1], true
		}
	}
	return "", false
}

// Values returns every value of key.
func (h Headers) Values(key string) []string {
	key = strings.ToLower(key)
	var out []string
	for _, kv := range h {
		if kv[0] == key {
			out = append(out, kv[1])
		}
	}
	return out
}

// H builds Headers from key, value pairs.
func H(kv ...string) Headers {
	var h Headers
	for i := 0; i+1 < len(kv); i += 2 {
		h = append(h, [2]string{kv[i], kv[i+1]})
	}
	return h
}

// TLS describes the downstream TLS connection (Ssl::ConnectionInfo).
type TLS struct {
	PeerCertificatePresented bool
	PeerCertificateValidated bool
	URISANPeer, URISANLocal  []string
	DNSSANPeer, DNSSANLocal  []string
	SubjectPeer              string
	SubjectLocal             string
	IssuerPeer               string
	SerialPeer               string
	SHA256Peer               string
	TLSVersion               string
	Cipher                   string
	CipherID                 uint16
	PEMPeer                  string
}

// StreamInfo is what Envoy's StreamInfo would hold for the request. Empty
// strings and zero values mean "not set" (Envoy answers not found).
type StreamInfo struct {
	Protocol            string // "HTTP/1.0", "HTTP/1.1", "HTTP/2", "HTTP/3"
	ResponseCode        int    // default: the upstream :status, or the local reply code
	ResponseCodeDetails string
	ResponseFlags       uint64 // legacy response flags bitmask (response.flags)
	AttemptCount        int
	RouteName           string // also makes xds.route_name / route metadata exist
	VirtualHostName     string
	FilterChainName     string
	VirtualClusterName  string
	UpstreamCluster     string // also xds.cluster_name; cluster metadata exists iff set
	DownstreamLocal     string // "ip:port" (default 127.0.0.1:8080)
	DownstreamRemote    string // "ip:port" (default 127.0.0.1:50000)
	UpstreamLocal       string
	UpstreamHost        string // "ip:port" of the upstream host (upstream.address)
	RequestedServerName string
	ConnectionID        uint64
	TLS                 *TLS
	RequestDuration     time.Duration // request.duration after completeRequest (default: measured)
	StartTime           time.Time     // request.time (default: now)
	// Raw sets any stream info key of host.c's si_names directly.
	Raw map[string]string
}

// Prop is one static property table entry: GetProperty(Path) answers
// Status (CAPIOK, CAPIValueNotFound, CAPISerializationFailure) and Value.
type Prop struct {
	Path   string
	Status int
	Value  []byte
}

// Request describes one HTTP stream. The zero value of the response part
// means ":status 200" with no body.
type Request struct {
	Config      uint64
	Route       int // from RouteConfig, 0 = none
	Worker      int
	Timeout     time.Duration // per wait (default 5s)
	BufferLimit uint64        // default 1 MiB

	Headers  Headers
	Body     [][]byte // data frames; the last one carries end_stream unless Trailers are set
	Trailers Headers

	NoResponse       bool // do not send an upstream response (e.g. expect a local reply)
	ResponseHeaders  Headers
	ResponseBody     [][]byte
	ResponseTrailers Headers

	LogStart  bool          // log(DownstreamStart) before the headers
	LogTypes  []int         // default [6] (DownstreamEnd)
	NoLog     bool          // skip log entirely
	PauseMid  time.Duration // let goroutines run between request and response
	PauseEnd  time.Duration // ... and before complete/log/destroy
	Steps     []string      // advanced: raw "step ..." lines replacing the generated script
	Info      StreamInfo
	Props     []Prop
	Cluster   *corev3.Metadata // xds.cluster_metadata
	Host      *corev3.Metadata // xds.upstream_host_metadata
	RouteMeta *corev3.Metadata // xds.route_metadata
	Locality  *corev3.Locality // upstream.locality
	// DynamicMetadata is the initial dynamic metadata (filter -> Struct).
	DynamicMetadata map[string]*structpb.Struct
	FilterState     map[string]string
}

func hdrTokens(h Headers) string {
	var sb strings.Builder
	for _, kv := range h {
		sb.WriteString(" ")
		sb.WriteString(b64(kv[0]))
		sb.WriteString(" ")
		sb.WriteString(b64(kv[1]))
	}
	return sb.String()
}

func boolInt(b bool) int {
	if b {
		return 1
	}
	return 0
}

// lines renders the request as a BEGIN..RUN spec body.
func (r *Request) lines() ([]string, error) {
	l := []string{"BEGIN", fmt.Sprintf("config %d", r.Config)}
	if r.Route > 0 {
		l = append(l, fmt.Sprintf("route %d", r.Route))
	}
	l = append(l, fmt.Sprintf("worker %d", r.Worker))
	if r.Timeout > 0 {
		l = append(l, fmt.Sprintf("timeout_ms %d", r.Timeout.Milliseconds()))
	}
	if r.BufferLimit > 0 {
		l = append(l, fmt.Sprintf("buffer_limit %d", r.BufferLimit))
	}
	si := func(k, v string) {
		if v != "" {
			l = append(l, "si "+k+" "+b64(v))
		}
	}
	in := r.Info
	si("protocol", in.Protocol)
	if in.ResponseCode > 0 {
		si("response_code", strconv.Itoa(in.ResponseCode))
	}
	si("response_code_details", in.ResponseCodeDetails)
	if in.ResponseFlags != 0 {
		si("response_flags", strconv.FormatUint(in.ResponseFlags, 10))
	}
	if in.AttemptCount > 0 {
		si("attempt_count", strconv.Itoa(in.AttemptCount))
	}
	si("route_name", in.RouteName)
	si("virtual_host_name", in.VirtualHostName)
	si("filter_chain_name", in.FilterChainName)
	si("virtual_cluster_name", in.VirtualClusterName)
	si("upstream_cluster_name", in.UpstreamCluster)
	si("downstream_local_address", in.DownstreamLocal)
	si("downstream_remote_address", in.DownstreamRemote)
	si("upstream_local_address", in.UpstreamLocal)
	si("upstream_remote_address", in.UpstreamHost)
	si("requested_server_name", in.RequestedServerName)
	if in.ConnectionID > 0 {
		si("connection_id", strconv.FormatUint(in.ConnectionID, 10))
	}
	if t := in.TLS; t != nil {
		si("ssl", "1")
		si("ssl_peer_presented", strconv.Itoa(boolInt(t.PeerCertificatePresented)))
		si("ssl_peer_validated", strconv.Itoa(boolInt(t.PeerCertificateValidated)))
		// Envoy joins SAN lists with NUL for getStringValue
		si("ssl_uri_san_peer", strings.Join(t.URISANPeer, "\x00"))
		si("ssl_uri_san_local", strings.Join(t.URISANLocal, "\x00"))
		si("ssl_dns_san_peer", strings.Join(t.DNSSANPeer, "\x00"))
		si("ssl_dns_san_local", strings.Join(t.DNSSANLocal, "\x00"))
		si("ssl_subject_peer", t.SubjectPeer)
		si("ssl_subject_local", t.SubjectLocal)
		si("ssl_issuer_peer", t.IssuerPeer)
		si("ssl_serial_peer", t.SerialPeer)
		si("ssl_sha256_peer", t.SHA256Peer)
		si("ssl_tls_version", t.TLSVersion)
		si("ssl_cipher", t.Cipher)
		if t.CipherID != 0 {
			si("ssl_cipher_id", strconv.Itoa(int(t.CipherID)))
		}
		si("ssl_pem_peer", t.PEMPeer)
	}
	if in.RequestDuration > 0 {
		si("request_duration_ns", strconv.FormatInt(in.RequestDuration.Nanoseconds(), 10))
	}
	if !in.StartTime.IsZero() {
		si("start_time_ns", strconv.FormatInt(in.StartTime.UnixNano(), 10))
	}
	for k, v := range in.Raw {
		si(k, v)
	}
	var props []Prop
	add := func(prefix string, m proto.Message) error {
		if m == nil {
			return nil
		}
		e, err := MessageProperties(prefix, m)
		props = append(props, e...)
		return err
	}
	if err := add("xds.cluster_metadata", r.Cluster); err != nil {
		return nil, err
	}
	if err := add("xds.upstream_host_metadata", r.Host); err != nil {
		return nil, err
	}
	if err := add("xds.route_metadata", r.RouteMeta); err != nil {
		return nil, err
	}
	if err := add("upstream.locality", r.Locality); err != nil {
		return nil, err
	}
	props = append(props, r.Props...)
	for _, p := range props {
		l = append(l, fmt.Sprintf("prop %s %d %s", b64(p.Path), p.Status, b64b(p.Value)))
	}
	for name, st := range r.DynamicMetadata {
		raw, err := proto.MarshalOptions{Deterministic: true}.Marshal(st)
		if err != nil {
			return nil, err
		}
		l = append(l, "dmeta "+b64(name)+" "+b64b(raw))
	}
	for k, v := range r.FilterState {
		l = append(l, "fstate "+b64(k)+" "+b64(v))
	}
	if r.Steps != nil {
		for _, s := range r.Steps {
			l = append(l, "step "+s)
		}
		return l, nil
	}
	l = append(l, r.decodeSteps()...)
	return append(l, r.encodeSteps()...), nil
}

// decodeSteps: the request as a codec delivers it, then wait for it to
// reach the upstream.
func (r *Request) decodeSteps() []string {
	var l []string
	step := func(s string) { l = append(l, "step "+s) }
	if r.LogStart {
		step("log_start")
	}
	// decode: headers, data frames, trailers, as a codec delivers them
	reqEndAtHeaders := len(r.Body) == 0 && r.Trailers == nil
	step(fmt.Sprintf("req_headers %d%s", boolInt(reqEndAtHeaders), hdrTokens(r.Headers)))
	for i, b := range r.Body {
		step(fmt.Sprintf("req_data %d %s", boolInt(i == len(r.Body)-1 && r.Trailers == nil), b64b(b)))
	}
	if r.Trailers != nil {
		step("req_trailers" + hdrTokens(r.Trailers))
	}
	step("wait_upstream")
	if r.PauseMid > 0 {
		step(fmt.Sprintf("pause %d", r.PauseMid.Milliseconds()))
	}
	return l
}

// encodeSteps: the upstream response, then the end of the stream.
func (r *Request) encodeSteps() []string {
	var l []string
	step := func(s string) { l = append(l, "step "+s) }
	if !r.NoResponse {
		rh := r.ResponseHeaders
		if rh == nil {
			rh = H(":status", "200")
		}
		respEndAtHeaders := len(r.ResponseBody) == 0 && r.ResponseTrailers == nil
		step(fmt.Sprintf("resp_headers %d%s", boolInt(respEndAtHeaders), hdrTokens(rh)))
		for i, b := range r.ResponseBody {
			step(fmt.Sprintf("resp_data %d %s", boolInt(i == len(r.ResponseBody)-1 && r.ResponseTrailers == nil), b64b(b)))
		}
		if r.ResponseTrailers != nil {
			step("resp_trailers" + hdrTokens(r.ResponseTrailers))
		}
	}
	step("wait_downstream")
	if r.PauseEnd > 0 {
		step(fmt.Sprintf("pause %d", r.PauseEnd.Milliseconds()))
	}
	// ConnectionManagerImpl::doEndStream: completeRequest, onStreamComplete,
	// log(DownstreamEnd), destroyFilters
	step("complete")
	if !r.NoLog {
		types := r.LogTypes
		if types == nil {
			types = []int{LogDownstreamEnd}
		}
		for _, t := range types {
			step(fmt.Sprintf("log %d", t))
		}
	}
	step("destroy")
	return l
}

// Held is a stream parked after its request reached the upstream (see
// RunRequest); Finish sends the response and ends it.
type Held struct {
	h      *Host
	handle int
	req    *Request
}

// RunRequest runs only the request side of r (headers, body, trailers,
// until the request reached the upstream or was answered locally) and parks
// the stream. It is how two hosts (client and server sidecar) relay one
// request: run the client's request, feed Result.Upstream.Headers to the
// server's Run, then Finish the client's stream with the server's
// Result.Downstream. r's response fields are ignored; Finish supplies them.
func (h *Host) RunRequest(r *Request) (*Result, *Held, error) {
	if r.Steps != nil {
		return nil, nil, fmt.Errorf("envoyhost: RunRequest does not take raw Steps")
	}
	lines, err := r.lines()
	if err != nil {
		return nil, nil, err
	}
	// keep the spec header (everything before the steps), then decode + hold
	var head []string
	for _, l := range lines {
		if !strings.HasPrefix(l, "step ") {
			head = append(head, l)
		}
	}
	head = append(head, r.decodeSteps()...)
	head = append(head, "step hold", "RUN")
	res, err := h.runLines(head, r.Timeout)
	if err != nil {
		return nil, nil, err
	}
	if res.Held == 0 {
		return res, nil, fmt.Errorf("envoyhost: stream was not held")
	}
	return res, &Held{h: h, handle: res.Held, req: r}, nil
}

// Finish sends the upstream response (headers; nil body/trailers allowed)
// and ends the stream; the Result covers the whole stream's calls since the
// hold (Upstream/Downstream show the final state).
func (s *Held) Finish(headers Headers, body [][]byte, trailers Headers) (*Result, error) {
	r := *s.req
	r.ResponseHeaders, r.ResponseBody, r.ResponseTrailers = headers, body, trailers
	r.NoResponse = false
	lines := append([]string{fmt.Sprintf("RESUME %d", s.handle)}, r.encodeSteps()...)
	return s.h.runLines(append(lines, "RUN"), r.Timeout)
}

// FinishWith ends the stream with what another host's filter sent
// downstream (its Result.Downstream): the server sidecar's response.
func (s *Held) FinishWith(server *Result) (*Result, error) {
	d := server.Downstream
	var body [][]byte
	if len(d.Body) > 0 {
		body = [][]byte{d.Body}
	}
	return s.Finish(d.Headers, body, d.Trailers)
}

func (h *Host) runLines(lines []string, to time.Duration) (*Result, error) {
	if to <= 0 {
		to = 5 * time.Second
	}
	h.mu.Lock()
	out, err := h.send(lines, 4*to+h.timeout)
	h.mu.Unlock()
	if err != nil {
		return nil, err
	}
	var res Result
	if err := json.Unmarshal([]byte(out), &res); err != nil {
		return nil, fmt.Errorf("envoyhost: RUN: bad result: %v", err)
	}
	return &res, nil
}

// Call is one entry into the library (or a Continue from it).
type Call struct {
	Call       string `json:"call"` // OnHttpHeader, OnHttpData, Continue, OnHttpLog, ...
	Dir        string `json:"dir"`  // decode, encode, stream
	Status     uint64 `json:"status"`
	StatusName string `json:"status_name"`
}

// Side is what reached the upstream (decode) or the client (encode).
type Side struct {
	Headers   Headers `json:"headers"`
	Body      []byte  `json:"body"`
	Trailers  Headers `json:"trailers"`
	EndStream bool    `json:"end_stream"`
}

// LocalReply records a local reply sent by the filter (or by Envoy's
// filter manager on its behalf, e.g. 413 or a panic's 500).
type LocalReply struct {
	Code       int     `json:"code"`
	GRPCStatus int64   `json:"grpc_status"`
	Direct     bool    `json:"direct"` // sent straight to the codec (encode phase)
	Phase      string  `json:"phase"`  // "decode" or "encode"
	Details    string  `json:"details"`
	Body       []byte  `json:"body"`
	Headers    Headers `json:"headers"`
}

// Result is what the filter did to one stream.
type Result struct {
	Held                 int               `json:"held"` // > 0: the stream is parked (RunRequest)
	Error                string            `json:"error"`
	Worker               int               `json:"worker"`
	Req                  uint64            `json:"req"`
	Calls                []Call            `json:"calls"`
	Upstream             Side              `json:"upstream"`
	Downstream           Side              `json:"downstream"`
	LocalReply           *LocalReply       `json:"local_reply"`
	ResponseCode         int               `json:"response_code"`
	DestroyReason        int               `json:"destroy_reason"`
	DrainUponCompletion  bool              `json:"drain_upon_completion"`
	RouteCacheCleared    int               `json:"route_cache_cleared"`
	UpstreamOverrideHost string            `json:"upstream_override_host"`
	DynamicMetadata      map[string][]byte `json:"dynamic_metadata"`
	FilterState          [][2]string       `json:"filter_state"`
	Events               []Event           `json:"events"`
}

// CAPIErrors returns the non-OK C API answers recorded during the run.
func (r *Result) CAPIErrors() []Event {
	var out []Event
	for _, e := range r.Events {
		if e.Type == "capi" {
			out = append(out, e)
		}
	}
	return out
}

// Logs returns Go log messages recorded during the run.
func (r *Result) Logs() []string {
	var out []string
	for _, e := range r.Events {
		if e.Type == "log" {
			out = append(out, e.Msg)
		}
	}
	return out
}

// Run executes one stream and reports what the filter did. A stream that
// stalls (a filter that never continues) returns a Result whose Error names
// the wait, the last call and its status; err is for host failures.
func (h *Host) Run(r *Request) (*Result, error) {
	lines, err := r.lines()
	if err != nil {
		return nil, err
	}
	return h.runLines(append(lines, "RUN"), r.Timeout)
}
