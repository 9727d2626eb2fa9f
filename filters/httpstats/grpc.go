package httpstats

import (
	"strings"

	"github.com/envoyproxy/envoy/contrib/golang/common/go/api"
)

// grpcStatus is Envoy's Grpc::Common::getGrpcStatus(trailers, headers, info)
// as Istio's stats filter uses it: grpc-status from the trailers, else from
// the headers (a trailers-only response), else inferred from the HTTP status
// (Grpc::Utility::httpToGrpcStatus), else none. Trailers are copied (one
// C call, Reads.Headers, else the SDK's Get): a GetRaw on a trailer map reads
// the header map of the same phase (Filter::getHeader uses state.headers),
// so it would miss.
func grpcStatus(tr api.ResponseTrailerMap, h api.ResponseHeaderMap, code uint32, hasCode bool) string {
	if tr != nil {
		if kv, ok := Reads.Headers(tr); ok {
			if s, _ := headerValue(kv, "grpc-status"); s != "" {
				return ownedStatus(s)
			}
		} else if s, ok := tr.Get("grpc-status"); ok && s != "" {
			return s
		}
	}
	if h != nil {
		if s := Reads.Header(h, "grpc-status"); s != "" {
			return ownedStatus(s)
		}
	}
	if !hasCode {
		return ""
	}
	return httpToGRPCStatus(code)
}

// httpToGRPCStatus mirrors Grpc::Utility::httpToGrpcStatus
// (source/common/grpc/status.cc, from grpc's http-grpc-status-mapping.md).
func httpToGRPCStatus(code uint32) string {
	switch code {
	case 400:
		return "13" // Internal
	case 401:
		return "16" // Unauthenticated
	case 403:
		return "7" // PermissionDenied
	case 404:
		return "12" // Unimplemented
	case 429, 502, 503, 504:
		return "14" // Unavailable
	}
	return "2" // Unknown
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

// grpcCodes are the canonical status codes' strings, so that a borrowed
// answer (Reader) becomes an owned label value without a copy.
var grpcCodes = [...]string{"0", "1", "2", "3", "4", "5", "6", "7", "8", "9", "10", "11", "12", "13", "14", "15", "16"}

func ownedStatus(s string) string {
	for _, c := range grpcCodes {
		if s == c {
			return c
		}
	}
	return strings.Clone(s)
}
