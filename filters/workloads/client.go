package workloads

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	statuspb "google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"

	"github.com/leanmesh/leanmesh/filters/telemetry"
)

// DefaultTokenPath is where Istio's injector mounts the projected
// service-account token (audience istio-ca) in every sidecar.
const DefaultTokenPath = "/var/run/secrets/tokens/istio-token"

// Client defaults.
const (
	DefaultMinBackoff = 250 * time.Millisecond
	DefaultMaxBackoff = 30 * time.Second
	// DefaultMaxMessageBytes: the initial response carries the whole table in
	// one message (go-control-plane does not paginate); 64 MiB fits
	// DefaultMaxEntries workloads of ~250 bytes.
	DefaultMaxMessageBytes = 64 << 20
)

// ClientOptions configure a subscription.
type ClientOptions struct {
	Address   string // host:port of the controller's workload stream
	TokenPath string // "" means DefaultTokenPath; re-read on every (re)connect as kubelet rotates it
	CAFile    string // PEM bundle to verify the server; ignored with Plaintext
	// Plaintext disables TLS (tests, or a node-local hop). The token then
	// travels in clear: never use it across a network.
	Plaintext       bool
	NodeID          string
	MaxEntries      int // table bound, 0 means DefaultMaxEntries
	MinBackoff      time.Duration
	MaxBackoff      time.Duration
	MaxMessageBytes int
	// Logf receives rare events (first failure of a kind); nil discards.
	Logf func(format string, args ...any)
}

func (o *ClientOptions) defaults() {
	if o.TokenPath == "" {
		o.TokenPath = DefaultTokenPath
	}
	if o.MinBackoff <= 0 {
		o.MinBackoff = DefaultMinBackoff
	}
	if o.MaxBackoff < o.MinBackoff {
		o.MaxBackoff = max(DefaultMaxBackoff, o.MinBackoff)
	}
	if o.MaxMessageBytes <= 0 {
		o.MaxMessageBytes = DefaultMaxMessageBytes
	}
	if o.NodeID == "" {
		h, _ := os.Hostname()
		o.NodeID = "leanmesh~" + h
	}
	if o.Logf == nil {
		o.Logf = func(string, ...any) {}
	}
}

// Client keeps a Table in sync with the controller over a delta xDS stream.
// When the stream is down the table keeps its last good contents; on
// reconnect the client reports what it holds (initial_resource_versions) so
// the server sends only the difference.
type Client struct {
	opts  ClientOptions
	table *Table

	connected atomic.Bool
	streams   atomic.Uint64 // streams that delivered at least one response
	responses atomic.Uint64
	lastErr   atomic.Pointer[string]

	logged sync.Map
	stop   context.CancelFunc
	done   chan struct{}
}

// NewClient validates opts; Start begins syncing into table (a new table
// when nil).
func NewClient(opts ClientOptions, table *Table) (*Client, error) {
	if opts.Address == "" {
		return nil, errors.New("workload discovery: address is required")
	}
	if !opts.Plaintext && opts.CAFile == "" {
		return nil, errors.New("workload discovery: set ca (a PEM file) or plaintext")
	}
	opts.defaults()
	if table == nil {
		table = NewTable(opts.MaxEntries)
	}
	return &Client{opts: opts, table: table, done: make(chan struct{})}, nil
}

// Table is the table the client maintains.
func (c *Client) Table() *Table { return c.table }

// Connected reports whether the current stream has delivered a response.
func (c *Client) Connected() bool { return c.connected.Load() }

// Streams counts streams that delivered at least one response (a
// reconnect shows as an increment).
func (c *Client) Streams() uint64 { return c.streams.Load() }

// Responses counts responses received, applied or not.
func (c *Client) Responses() uint64 { return c.responses.Load() }

// LastError is the most recent stream or apply error ("" if none).
func (c *Client) LastError() string {
	if p := c.lastErr.Load(); p != nil {
		return *p
	}
	return ""
}

// Start runs the subscription in one goroutine until Stop.
func (c *Client) Start() error {
	creds := insecure.NewCredentials()
	if !c.opts.Plaintext {
		tc, err := credentials.NewClientTLSFromFile(c.opts.CAFile, "")
		if err != nil {
			return fmt.Errorf("workload discovery: ca %s: %v", c.opts.CAFile, err)
		}
		creds = tc
	}
	conn, err := grpc.NewClient(c.opts.Address,
		grpc.WithTransportCredentials(creds),
		grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(c.opts.MaxMessageBytes)))
	if err != nil {
		return fmt.Errorf("workload discovery: %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	c.stop = cancel
	go func() {
		defer close(c.done)
		defer conn.Close()
		c.run(ctx, discoveryv3.NewAggregatedDiscoveryServiceClient(conn))
	}()
	return nil
}

// Stop ends the subscription and waits for its goroutine.
func (c *Client) Stop() {
	if c.stop != nil {
		c.stop()
		<-c.done
	}
}

func (c *Client) run(ctx context.Context, ads discoveryv3.AggregatedDiscoveryServiceClient) {
	backoff := c.opts.MinBackoff
	for ctx.Err() == nil {
		progressed, err := c.stream(ctx, ads)
		c.connected.Store(false)
		if ctx.Err() != nil {
			return
		}
		if progressed {
			backoff = c.opts.MinBackoff
		}
		c.fail("stream", err)
		// Full jitter: many sidecars restarting with one controller must not
		// reconnect in lockstep.
		wait := time.Duration(rand.Int64N(int64(backoff))) + backoff/2
		select {
		case <-ctx.Done():
			return
		case <-time.After(wait):
		}
		backoff = min(2*backoff, c.opts.MaxBackoff)
	}
}

// stream runs one stream until it fails; progressed says it delivered data.
func (c *Client) stream(ctx context.Context, ads discoveryv3.AggregatedDiscoveryServiceClient) (progressed bool, err error) {
	token, err := os.ReadFile(c.opts.TokenPath)
	if err != nil {
		return false, fmt.Errorf("reading token: %v", err)
	}
	sctx, cancel := context.WithCancel(ctx)
	defer cancel()
	sctx = metadata.AppendToOutgoingContext(sctx, "authorization", "Bearer "+strings.TrimSpace(string(token)))
	st, err := ads.DeltaAggregatedResources(sctx)
	if err != nil {
		return false, err
	}
	err = st.Send(&discoveryv3.DeltaDiscoveryRequest{
		Node:                    &corev3.Node{Id: c.opts.NodeID},
		TypeUrl:                 TypeURL,
		ResourceNamesSubscribe:  []string{"*"},
		InitialResourceVersions: c.table.Versions(),
	})
	if err != nil {
		return false, endedStreamErr(st, err)
	}
	for {
		resp, err := st.Recv()
		if err != nil {
			return progressed, err
		}
		if !progressed {
			progressed = true
			c.streams.Add(1)
			c.connected.Store(true)
		}
		c.responses.Add(1)
		ack := &discoveryv3.DeltaDiscoveryRequest{TypeUrl: TypeURL, ResponseNonce: resp.GetNonce()}
		if err := c.apply(resp); err != nil {
			// NACK: the previous table stays; the server resends on its next change.
			ack.ErrorDetail = &statuspb.Status{Code: int32(codes.InvalidArgument), Message: err.Error()}
			c.fail("update_rejected", err)
		} else {
			// Visible in the exposition: shows an operator (and the e2e
			// tests) that the table is being fed, not just that no error
			// happened yet.
			updatesApplied.Add(1)
		}
		if err := st.Send(ack); err != nil {
			return progressed, endedStreamErr(st, err)
		}
	}
}

// endedStreamErr turns an io.EOF from Send into the stream's status: gRPC
// returns io.EOF when the server has already ended the stream, and only Recv
// says why (a refused token is answered before the request is read, so
// "EOF" would hide PermissionDenied from the log and LastError).
func endedStreamErr(st grpc.ClientStream, err error) error {
	if !errors.Is(err, io.EOF) {
		return err
	}
	for {
		var pending discoveryv3.DeltaDiscoveryResponse
		if err := st.RecvMsg(&pending); err != nil {
			return err
		}
	}
}

func (c *Client) apply(resp *discoveryv3.DeltaDiscoveryResponse) error {
	d, err := DecodeResponse(resp)
	if err != nil {
		c.table.rejected.Add(1)
		return err
	}
	return c.table.Apply(d)
}

// DecodeResponse turns a delta response into a Delta, failing as a whole on
// the first malformed resource.
func DecodeResponse(resp *discoveryv3.DeltaDiscoveryResponse) (Delta, error) {
	if resp.GetTypeUrl() != TypeURL {
		return Delta{}, fmt.Errorf("%w: response type %q, want %s", ErrRejected, truncate(resp.GetTypeUrl()), TypeURL)
	}
	d := Delta{Removals: resp.GetRemovedResources(), Updates: make([]Update, 0, len(resp.GetResources()))}
	for _, r := range resp.GetResources() {
		w, err := DecodeAny(r.GetResource())
		if err != nil {
			return Delta{}, fmt.Errorf("%w: resource %q: %v", ErrRejected, truncate(r.GetName()), err)
		}
		d.Updates = append(d.Updates, Update{Name: r.GetName(), Version: r.GetVersion(), Workload: w})
	}
	return d, nil
}

var updatesApplied = telemetry.Self.Counter("leanmesh_workload_discovery_updates_total", "", "")

// fail counts every failure and logs the first of each kind.
func (c *Client) fail(kind string, err error) {
	msg := err.Error()
	c.lastErr.Store(&msg)
	telemetry.Self.Counter("leanmesh_workload_discovery_errors_total", "kind", kind).Add(1)
	if _, dup := c.logged.LoadOrStore(kind, true); !dup {
		c.opts.Logf("leanmesh: workload discovery %s %s: %v (logged once; see leanmesh_workload_discovery_errors_total)", c.opts.Address, kind, err)
	}
}

// Process-wide subscriptions: Envoy creates one filter config per listener,
// but the table of one controller address is one stream and one copy.
var subscriptions struct {
	mu sync.Mutex
	m  map[string]*Client
}

// Subscribe returns the process-wide client for opts.Address, starting it on
// first use. Later calls with the same address share it (their other options
// are ignored).
func Subscribe(opts ClientOptions) (*Client, error) {
	subscriptions.mu.Lock()
	defer subscriptions.mu.Unlock()
	if c := subscriptions.m[opts.Address]; c != nil {
		return c, nil
	}
	c, err := NewClient(opts, nil)
	if err != nil {
		return nil, err
	}
	if err := c.Start(); err != nil {
		return nil, err
	}
	if subscriptions.m == nil {
		subscriptions.m = map[string]*Client{}
	}
	subscriptions.m[opts.Address] = c
	return c, nil
}
