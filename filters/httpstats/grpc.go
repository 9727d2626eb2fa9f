package httpstats

import "github.com/envoyproxy/envoy/contrib/golang/common/go/api"

// grpcStatus reads grpc-status from trailers, or from headers for a
// trailers-only response, as Envoy's Grpc::Common::getGrpcStatus. Trailers
// are read with Get: the SDK's GetRaw on a trailer map reads the header map
// of the same phase (Filter::getHeader uses state.headers), so it would miss.
func grpcStatus(tr api.ResponseTrailerMap, h api.ResponseHeaderMap) string {
	if tr != nil {
		if s, ok := tr.Get("grpc-status"); ok && s != "" {
			return s
		}
	}
	if h != nil {
		return h.GetRaw("grpc-status")
	}
	return ""
}

// grpcFrames counts gRPC length-prefixed messages across data chunks: Envoy's
// grpc_stats filter state is not readable from a Go filter, so the filter
// parses the 5-byte frame headers itself (only for gRPC streams).
type grpcFrames struct {
	count   uint64
	skip    uint64 // payload bytes left in the current message
	hdr     [5]byte
	hdrFill int
}

func (g *grpcFrames) feed(b []byte) {
	for len(b) > 0 {
		if g.skip > 0 {
			n := uint64(len(b))
			if n > g.skip {
				n = g.skip
			}
			g.skip -= n
			b = b[n:]
			continue
		}
		n := copy(g.hdr[g.hdrFill:], b)
		g.hdrFill += n
		b = b[n:]
		if g.hdrFill == 5 {
			g.count++
			g.skip = uint64(g.hdr[1])<<24 | uint64(g.hdr[2])<<16 | uint64(g.hdr[3])<<8 | uint64(g.hdr[4])
			g.hdrFill = 0
		}
	}
}
