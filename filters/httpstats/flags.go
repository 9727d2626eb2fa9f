package httpstats

import "strconv"

// responseFlagShort lists Envoy's core response flags by bit position
// (envoy/stream_info/stream_info.h CoreResponseFlag, v1.39), with the short
// strings of source/common/stream_info/utility.h. The `response.flags`
// attribute is legacyResponseFlags(): a bitmask of these.
var responseFlagShort = [...]string{
	"LH", "UH", "UT", "LR", "UR", "UF", "UC", "UO", "NR", "DI", "FI", "RL", "UAEX", "RLSE",
	"DC", "URX", "SI", "IH", "DPE", "UMSDR", "RFCF", "NFCF", "DT", "UPE", "NC", "OM", "DF",
	"DO", "DR", "UDO",
}

// flagStrings caches the short form of bitmasks seen, so a request with a
// known set of flags costs no allocation. Only a handful of combinations
// occur; the map is bounded anyway.
type flagStrings struct {
	m map[uint64]string
}

// shortFlags renders mask as Envoy's ResponseFlagUtils::toShortString does,
// in bit order (Envoy joins in the order flags were set; with one flag, the
// common case, the two agree).
func (f *flagStrings) shortFlags(mask uint64) string {
	if mask == 0 {
		return "-"
	}
	if s, ok := f.m[mask]; ok {
		return s
	}
	var b []byte
	for i, name := range responseFlagShort {
		if mask&(1<<uint(i)) != 0 {
			if len(b) > 0 {
				b = append(b, ',')
			}
			b = append(b, name...)
		}
	}
	if rest := mask >> uint(len(responseFlagShort)); rest != 0 {
		// Flags newer than this table: keep them visible rather than drop them.
		if len(b) > 0 {
			b = append(b, ',')
		}
		b = append(b, "0x"...)
		b = strconv.AppendUint(b, rest<<uint(len(responseFlagShort)), 16)
	}
	s := string(b)
	if f.m == nil {
		f.m = map[uint64]string{}
	}
	if len(f.m) < 256 {
		f.m[mask] = s
	}
	return s
}
