package envoyhost

import (
	"encoding/json"
	"fmt"
	"strconv"
	"strings"

	"google.golang.org/protobuf/types/known/anypb"
)

// Network filter statuses and events (api.FilterStatus, api.ConnectionEvent).
const (
	NetContinue      = 0
	NetStopIteration = 1

	EventRemoteClose = 0
	EventLocalClose  = 1
	EventConnected   = 2
)

// NetConfig creates a network filter config through
// envoyGoFilterOnNetworkFilterConfig (GolangConfigFactory) and returns its id.
// The SDK has one global config parser for all network plugins.
func (h *Host) NetConfig(libraryID string, config *anypb.Any) (uint64, error) {
	raw, err := marshalAny(config)
	if err != nil {
		return 0, err
	}
	out, err := h.cmdLine("NETCONFIG "+b64(libraryID)+" "+b64b(raw), h.timeout)
	if err != nil {
		return 0, err
	}
	return strconv.ParseUint(out, 10, 64)
}

// Conn is one downstream connection through the Go network filter.
type Conn struct {
	h      *Host
	Handle int
}

// NewConn opens a downstream connection (Filter::onNewConnection) with the
// given local/remote "ip:port" addresses and returns the filter status.
func (h *Host) NewConn(configID uint64, plugin, local, remote string, worker int) (*Conn, int, error) {
	out, err := h.cmdLine(fmt.Sprintf("CONN_NEW %d %s %s %s %d", configID, b64(plugin), b64(local), b64(remote), worker), h.timeout)
	if err != nil {
		return nil, 0, err
	}
	f := strings.Fields(out)
	if len(f) != 2 {
		return nil, 0, fmt.Errorf("envoyhost: CONN_NEW: bad reply %q", out)
	}
	hd, _ := strconv.Atoi(f[0])
	st, _ := strconv.Atoi(f[1])
	return &Conn{h: h, Handle: hd}, st, nil
}

// Data delivers bytes read from the downstream (Filter::onData).
func (c *Conn) Data(b []byte, end bool) (int, error) {
	return c.status(fmt.Sprintf("CONN_DATA %d %d %s", c.Handle, boolInt(end), b64b(b)))
}

// Write delivers bytes written to the downstream (Filter::onWrite).
func (c *Conn) Write(b []byte, end bool) (int, error) {
	return c.status(fmt.Sprintf("CONN_WRITE %d %d %s", c.Handle, boolInt(end), b64b(b)))
}

func (c *Conn) status(line string) (int, error) {
	out, err := c.h.cmdLine(line, c.h.timeout)
	if err != nil {
		return 0, err
	}
	return strconv.Atoi(out)
}

// Event raises a connection event (Filter::onEvent); a close event ends
// the connection and releases the filter.
func (c *Conn) Event(ev int) error {
	_, err := c.h.cmdLine(fmt.Sprintf("CONN_EVENT %d %d", c.Handle, ev), c.h.timeout)
	return err
}

// ConnState is what the filter did to the connection so far.
type ConnState struct {
	Handle        int         `json:"handle"`
	Closed        bool        `json:"closed"`
	Gone          bool        `json:"gone"` // connection ended, filter released
	Written       []byte      `json:"written"`
	WriteEnd      bool        `json:"write_end"`
	CloseCalls    int         `json:"close_calls"`
	LastCloseType int         `json:"last_close_type"`
	FilterState   [][2]string `json:"filter_state"`
	// Buffer accounting: bytes given to OnData / OnWrite, and bytes left in
	// the buffer afterwards for the next filter. Envoy v1.39.1's
	// Filter::onData drains every read buffer after the Go call
	// (golang.cc: "TODO: do not drain buffer by default"), so ReadForwarded
	// stays 0 and tcp_proxy behind the filter gets nothing; Filter::onWrite
	// does not drain, so WriteForwarded == WriteIn.
	ReadIn         uint64 `json:"read_in"`
	ReadForwarded  uint64 `json:"read_forwarded"`
	WriteIn        uint64 `json:"write_in"`
	WriteForwarded uint64 `json:"write_forwarded"`
}

// State returns the connection's state.
func (c *Conn) State() (*ConnState, error) {
	out, err := c.h.cmdLine(fmt.Sprintf("CONN_STATE %d", c.Handle), c.h.timeout)
	if err != nil {
		return nil, err
	}
	var s ConnState
	return &s, json.Unmarshal([]byte(out), &s)
}

// Upstream is an upstream connection the Go filter asked for
// (envoyGoFilterUpstreamConnect); the test completes it.
type Upstream struct {
	Handle    int    `json:"handle"`
	Addr      string `json:"addr"`
	ConnID    uint64 `json:"conn_id"`
	State     int    `json:"state"` // 0 connecting, 1 ready, 2 failed, 3 closed
	HalfClose int    `json:"half_close"`
	Closes    int    `json:"close_calls"`
	Written   []byte `json:"written"`
}

// Upstreams lists the upstream connections requested so far.
func (h *Host) Upstreams() ([]Upstream, error) {
	out, err := h.cmdLine("UPSTREAMS", h.timeout)
	if err != nil {
		return nil, err
	}
	var u []Upstream
	return u, json.Unmarshal([]byte(out), &u)
}

// UpstreamReady completes an upstream connection (onPoolReady).
func (h *Host) UpstreamReady(handle int) error {
	_, err := h.cmdLine(fmt.Sprintf("UP_READY %d", handle), h.timeout)
	return err
}

// UpstreamFail fails an upstream connection (onPoolFailure).
func (h *Host) UpstreamFail(handle, reason int) error {
	_, err := h.cmdLine(fmt.Sprintf("UP_FAIL %d %d", handle, reason), h.timeout)
	return err
}

// UpstreamData delivers bytes from the upstream (onUpstreamData).
func (h *Host) UpstreamData(handle int, b []byte, end bool) error {
	_, err := h.cmdLine(fmt.Sprintf("UP_DATA %d %d %s", handle, boolInt(end), b64b(b)), h.timeout)
	return err
}

// UpstreamEvent raises an upstream connection event.
func (h *Host) UpstreamEvent(handle, ev int) error {
	_, err := h.cmdLine(fmt.Sprintf("UP_EVENT %d %d", handle, ev), h.timeout)
	return err
}
