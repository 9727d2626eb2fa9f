package als

import (
	"errors"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	accesslogdatav3 "github.com/envoyproxy/go-control-plane/envoy/data/accesslog/v3"
	accesslogv3 "github.com/envoyproxy/go-control-plane/envoy/service/accesslog/v3"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/reflect/protoreflect"

	"github.com/leanmesh/leanmesh/filters/peer"
)

// fields is what lazyxds needs from one HTTPAccessLogEntry. Both the typed
// path (generated structs) and the fast path (wire decoding) produce it, so
// validation lives in one place and the two can be checked against each other.
type fields struct {
	hasCommon  bool
	downstream string // common_properties.downstream_remote_address socket IP
	direct     string // common_properties.downstream_direct_remote_address socket IP
	cluster    string // common_properties.upstream_cluster
	authority  string // request.authority
	peerID     string // request.request_headers[x-envoy-peer-metadata-id]
}

func typedFields(e *accesslogdatav3.HTTPAccessLogEntry) fields {
	cp := e.GetCommonProperties()
	f := fields{
		hasCommon:  cp != nil,
		downstream: cp.GetDownstreamRemoteAddress().GetSocketAddress().GetAddress(),
		direct:     cp.GetDownstreamDirectRemoteAddress().GetSocketAddress().GetAddress(),
		cluster:    cp.GetUpstreamCluster(),
		authority:  e.GetRequest().GetAuthority(),
	}
	// Istio sidecars add the exchange's id header to mesh requests
	// ("sidecar~<ip>~<pod>.<ns>~<ns>.svc.<domain>") and the egress's access
	// logger logs it, so a caller is known even when the downstream address
	// is not its pod IP.
	f.peerID = e.GetRequest().GetRequestHeaders()[peer.HeaderMetadataID]
	return f
}

// Field numbers come from the generated descriptors so the wire decoder
// cannot drift from go-control-plane.
func fieldNum(m protoreflect.ProtoMessage, name protoreflect.Name) protowire.Number {
	f := m.ProtoReflect().Descriptor().Fields().ByName(name)
	if f == nil {
		panic("als: no field " + string(name))
	}
	return f.Number()
}

var (
	fMsgHTTPLogs   = fieldNum(&accesslogv3.StreamAccessLogsMessage{}, "http_logs")
	fMsgTCPLogs    = fieldNum(&accesslogv3.StreamAccessLogsMessage{}, "tcp_logs")
	fHTTPEntries   = fieldNum(&accesslogv3.StreamAccessLogsMessage_HTTPAccessLogEntries{}, "log_entry")
	fTCPEntries    = fieldNum(&accesslogv3.StreamAccessLogsMessage_TCPAccessLogEntries{}, "log_entry")
	fEntryCommon   = fieldNum(&accesslogdatav3.HTTPAccessLogEntry{}, "common_properties")
	fEntryRequest  = fieldNum(&accesslogdatav3.HTTPAccessLogEntry{}, "request")
	fCommonRemote  = fieldNum(&accesslogdatav3.AccessLogCommon{}, "downstream_remote_address")
	fCommonDirect  = fieldNum(&accesslogdatav3.AccessLogCommon{}, "downstream_direct_remote_address")
	fCommonCluster = fieldNum(&accesslogdatav3.AccessLogCommon{}, "upstream_cluster")
	fReqAuthority  = fieldNum(&accesslogdatav3.HTTPRequestProperties{}, "authority")
	fReqHeaders    = fieldNum(&accesslogdatav3.HTTPRequestProperties{}, "request_headers")
	fAddrSocket    = fieldNum(&corev3.Address{}, "socket_address")
	fSocketAddress = fieldNum(&corev3.SocketAddress{}, "address")
)

var errWire = errors.New("als: malformed protobuf")

// interner returns one string per distinct byte sequence: a stream repeats
// the same few clusters, authorities and caller IPs, so this removes most
// per-entry allocations. It is per stream (no locking) and bounded by bytes,
// not entries: a caller sending long distinct strings must not grow it past
// its budget (issue #18: a count cap let 15 MiB messages pin 700 MB).
type interner struct {
	m          map[string]string
	bytes, max int
}

// internEntryOverhead approximates a map entry's cost beyond the string
// bytes (key and value headers, bucket slot).
const internEntryOverhead = 48

func newInterner(maxBytes int) *interner {
	return &interner{m: map[string]string{}, max: maxBytes}
}

func (in *interner) str(b []byte) string {
	if s, ok := in.m[string(b)]; ok { // no allocation for the lookup
		return s
	}
	s := string(b)
	if cost := len(s) + internEntryOverhead; in.bytes+cost <= in.max {
		in.m[s] = s
		in.bytes += cost
	}
	return s
}

// forEach walks the fields of one message, calling fn for length-delimited
// fields; other wire types are skipped.
func forEach(b []byte, fn func(num protowire.Number, v []byte) error) error {
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			return errWire
		}
		b = b[n:]
		if typ == protowire.BytesType {
			v, n := protowire.ConsumeBytes(b)
			if n < 0 {
				return errWire
			}
			if err := fn(num, v); err != nil {
				return err
			}
			b = b[n:]
			continue
		}
		n = protowire.ConsumeFieldValue(num, typ, b)
		if n < 0 {
			return errWire
		}
		b = b[n:]
	}
	return nil
}

// decodeMessage reads a serialized StreamAccessLogsMessage, calling fn for
// each HTTP entry and returning the number of TCP entries. Only the fields
// in `fields` are decoded; everything else is skipped without allocating.
func decodeMessage(b []byte, in *interner, fn func(fields)) (tcp int, err error) {
	err = forEach(b, func(num protowire.Number, v []byte) error {
		switch num {
		case fMsgHTTPLogs:
			return forEach(v, func(num protowire.Number, e []byte) error {
				if num != fHTTPEntries {
					return nil
				}
				f, err := decodeEntry(e, in)
				if err != nil {
					return err
				}
				fn(f)
				return nil
			})
		case fMsgTCPLogs:
			return forEach(v, func(num protowire.Number, _ []byte) error {
				if num == fTCPEntries {
					tcp++
				}
				return nil
			})
		}
		return nil
	})
	return tcp, err
}

func decodeEntry(b []byte, in *interner) (fields, error) {
	var f fields
	err := forEach(b, func(num protowire.Number, v []byte) error {
		switch num {
		case fEntryCommon:
			f.hasCommon = true
			return forEach(v, func(num protowire.Number, v []byte) error {
				switch num {
				case fCommonRemote:
					ip, err := socketAddr(v, in)
					f.downstream = ip
					return err
				case fCommonDirect:
					ip, err := socketAddr(v, in)
					f.direct = ip
					return err
				case fCommonCluster:
					f.cluster = in.str(v)
				}
				return nil
			})
		case fEntryRequest:
			return forEach(v, func(num protowire.Number, v []byte) error {
				switch num {
				case fReqAuthority:
					f.authority = in.str(v)
				case fReqHeaders:
					var key, val []byte
					if err := forEach(v, func(num protowire.Number, v []byte) error {
						switch num {
						case 1:
							key = v
						case 2:
							val = v
						}
						return nil
					}); err != nil {
						return err
					}
					if string(key) == peer.HeaderMetadataID {
						f.peerID = in.str(val)
					}
				}
				return nil
			})
		}
		return nil
	})
	return f, err
}

func socketAddr(b []byte, in *interner) (string, error) {
	var ip string
	err := forEach(b, func(num protowire.Number, v []byte) error {
		if num != fAddrSocket {
			return nil
		}
		return forEach(v, func(num protowire.Number, v []byte) error {
			if num == fSocketAddress {
				ip = in.str(v)
			}
			return nil
		})
	})
	return ip, err
}
