package als

import (
	"errors"
	"io"
	"time"

	accesslogv3 "github.com/envoyproxy/go-control-plane/envoy/service/accesslog/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/encoding"
	protocodec "google.golang.org/grpc/encoding/proto"
	"google.golang.org/grpc/mem"

	"github.com/leanmesh/leanmesh/controller/lazyxds"
)

// The fast path exists because decoding whole HTTPAccessLogEntry messages
// (addresses, eight durations, header maps …) costs ~7 µs per entry, while
// lazyxds reads five strings. A codec hands the raw bytes of ALS messages to
// a wire decoder that skips everything else; every other message type still
// goes through the standard proto codec, so the gRPC server can be shared.

// rawMessage receives one undecoded StreamAccessLogsMessage; its buffer is
// reused for the next message of the stream.
type rawMessage struct{ b []byte }

// retainedBufferBytes: Envoy flushes its access-log buffer at 16 KiB by
// default, so a stream keeps a buffer of up to twice that between messages.
const retainedBufferBytes = 32 << 10

type fastCodec struct{ std encoding.CodecV2 }

func (c fastCodec) Name() string { return protocodec.Name }

func (c fastCodec) Marshal(v any) (mem.BufferSlice, error) {
	if m, ok := v.(*rawMessage); ok { // pre-encoded (benchmark clients replaying Envoy bytes)
		return mem.BufferSlice{mem.SliceBuffer(m.b)}, nil
	}
	return c.std.Marshal(v)
}

func (c fastCodec) Unmarshal(data mem.BufferSlice, v any) error {
	if m, ok := v.(*rawMessage); ok {
		m.b = m.b[:0]
		for _, buf := range data {
			m.b = append(m.b, buf.ReadOnlyData()...)
		}
		return nil
	}
	return c.std.Unmarshal(data, v)
}

// ServerOptions are the transport budgets of the ALS port: the message cap,
// fixed HTTP/2 windows (gRPC's default BDP estimation would let a caller
// that sends without being read grow them to 16 MiB per connection), a
// bounded handshake, and a stream cap per connection.
func (s *Server) ServerOptions() []grpc.ServerOption {
	return []grpc.ServerOption{
		grpc.MaxRecvMsgSize(s.opts.MaxMessageBytes),
		grpc.InitialWindowSize(64 << 10),
		grpc.InitialConnWindowSize(256 << 10),
		grpc.ConnectionTimeout(10 * time.Second),
		// One over the budget: a stream past MaxStreams is refused (and
		// counted) by admit rather than left waiting for an HTTP/2 slot.
		grpc.MaxConcurrentStreams(uint32(s.opts.MaxStreams) + 1),
	}
}

// NewGRPCServer returns a gRPC server serving AccessLogService on the fast
// path (plus anything else registered on it, decoded normally), with
// ServerOptions' budgets.
func (s *Server) NewGRPCServer(opts ...grpc.ServerOption) *grpc.Server {
	opts = append(s.ServerOptions(), opts...)
	opts = append(opts, grpc.ForceServerCodecV2(fastCodec{std: encoding.GetCodecV2(protocodec.Name)}))
	gs := grpc.NewServer(opts...)
	gs.RegisterService(&grpc.ServiceDesc{
		ServiceName: accesslogv3.AccessLogService_ServiceDesc.ServiceName,
		HandlerType: (*any)(nil),
		Streams: []grpc.StreamDesc{{
			StreamName:    "StreamAccessLogs",
			Handler:       func(_ any, st grpc.ServerStream) error { return s.streamRaw(st) },
			ClientStreams: true,
		}},
		Metadata: accesslogv3.AccessLogService_ServiceDesc.Metadata,
	}, s)
	return gs
}

func (s *Server) streamRaw(stream grpc.ServerStream) error {
	release, err := s.admit(stream.Context())
	if err != nil {
		return err
	}
	defer release()
	// Per-stream memory: this buffer (at most MaxMessageBytes, as gRPC
	// refuses larger messages) and the interner (InternerBytes).
	var m rawMessage
	in := newInterner(s.opts.InternerBytes)
	for {
		err := stream.RecvMsg(&m)
		if errors.Is(err, io.EOF) {
			return stream.SendMsg(&accesslogv3.StreamAccessLogsResponse{})
		}
		if err != nil {
			return s.recvErr(err)
		}
		at := s.opts.Now()
		var batch []lazyxds.Observation
		received := 0
		tcp, err := decodeMessage(m.b, in, func(f fields) {
			received++
			if o, ok := s.observe(f, at); ok {
				if batch == nil {
					batch = make([]lazyxds.Observation, 0, 32)
				}
				batch = append(batch, o)
			}
		})
		if cap(m.b) > retainedBufferBytes {
			// Idle streams keep a typical batch's buffer, not the largest
			// message they were ever sent (64 streams × 256 KiB otherwise).
			m.b = nil
		}
		if err != nil {
			// A corrupt message cannot be trusted at all; Envoy never sends one.
			s.dropped[ReasonMalformedMessage].Add(1)
			continue
		}
		s.received.Add(uint64(received))
		s.dropped[ReasonTCPEntry].Add(uint64(tcp))
		s.enqueue(batch)
	}
}
