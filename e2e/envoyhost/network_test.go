package envoyhost

// The network (TCP) filter path of the host (network.c; Envoy's
// contrib/golang/filters/network/source/golang.cc).

import (
	"strings"
	"testing"

	"google.golang.org/protobuf/types/known/anypb"
)

func TestNetworkFilter(t *testing.T) {
	h := noopHost(t)
	id, err := h.NetConfig("lib", &anypb.Any{TypeUrl: "type.googleapis.com/x", Value: []byte("echo")})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := h.Events(); err != nil { // drops what came before the request
		t.Fatal(err)
	}
	c, st, err := h.NewConn(id, "noop", "10.0.0.2:15006", "10.0.0.1:40000", 1)
	if err != nil || st != NetContinue {
		t.Fatalf("new conn: %v status %d", err, st)
	}
	if st, err := c.Data([]byte("hello"), false); err != nil || st != NetContinue {
		t.Fatalf("data: %v %d", err, st)
	}
	if _, err := c.Write([]byte("from-upstream"), false); err != nil {
		t.Fatal(err)
	}
	s, err := c.State()
	if err != nil {
		t.Fatal(err)
	}
	if string(s.Written) != "hello" || s.Closed {
		t.Errorf("state %+v", s)
	}
	if _, err := c.Data([]byte("close"), false); err != nil {
		t.Fatal(err)
	}
	s, err = c.State()
	if err != nil {
		t.Fatal(err)
	}
	if !s.Gone {
		t.Errorf("filter close did not end the connection: %+v", s)
	}
	ev, _ := h.Events()
	var sawAddr, sawClose bool
	for _, e := range ev {
		sawAddr = sawAddr || strings.Contains(e.Msg, "remote=10.0.0.1:40000 local=10.0.0.2:15006")
		sawClose = sawClose || strings.Contains(e.Msg, "net-noop event 1")
	}
	if !sawAddr || !sawClose {
		t.Errorf("events %+v", ev)
	}
}

// Envoy v1.39.1's golang network filter drains every read buffer after
// OnData (golang.cc Filter::onData: "TODO: do not drain buffer by default",
// data.drain(data.length())) but passes write buffers on intact
// (Filter::onWrite). The host mirrors both: even a filter that does nothing
// and answers Continue leaves no byte for the next read filter.
func TestNetworkFilterDrainsReads(t *testing.T) {
	h := noopHost(t)
	id, err := h.NetConfig("lib", &anypb.Any{TypeUrl: "type.googleapis.com/x", Value: []byte("quiet")})
	if err != nil {
		t.Fatal(err)
	}
	c, st, err := h.NewConn(id, "noop", "10.0.0.2:15006", "10.0.0.1:40001", 0)
	if err != nil || st != NetContinue {
		t.Fatalf("new conn: %v status %d", err, st)
	}
	for _, chunk := range []string{"GET / HTTP/1.1\r\n", "Host: x\r\n\r\n"} {
		if st, err := c.Data([]byte(chunk), false); err != nil || st != NetContinue {
			t.Fatalf("data: %v %d", err, st)
		}
	}
	if st, err := c.Data(nil, true); err != nil || st != NetContinue {
		t.Fatalf("end of data: %v %d", err, st)
	}
	if _, err := c.Write([]byte("HTTP/1.1 200 OK\r\n\r\n"), true); err != nil {
		t.Fatal(err)
	}
	s, err := c.State()
	if err != nil {
		t.Fatal(err)
	}
	if s.ReadIn != 27 || s.ReadForwarded != 0 {
		t.Errorf("reads: %d bytes to the filter, %d left for the next filter; want 27 and 0 (drained)", s.ReadIn, s.ReadForwarded)
	}
	if s.WriteIn != 19 || s.WriteForwarded != 19 {
		t.Errorf("writes: %d in, %d forwarded; want 19 and 19 (onWrite does not drain)", s.WriteIn, s.WriteForwarded)
	}
	if len(s.Written) != 0 || s.Closed {
		t.Errorf("the quiet filter acted on the connection: %+v", s)
	}
	if err := c.Event(EventRemoteClose); err != nil {
		t.Fatal(err)
	}
}
