package telemetry

import (
	"strings"
	"unicode/utf8"
	"unsafe"
)

// Byte budgets: what a series and a label set cost, estimated from their
// parts. The estimates count what grows with traffic (strings, bucket
// arrays, map and list slots); they are upper bounds within ~20% of the
// measured heap (TestBudgetEstimateMatchesHeap).

const (
	keyMapEntry     = int64(unsafe.Sizeof(Key{})) + 8 + 16 // map slot: key, value pointer, control bytes
	seriesStruct    = int64(unsafe.Sizeof(series{})) + 32  // plus its sets slice
	labelSetStruct  = int64(unsafe.Sizeof(labelSet{})) + 16 + 8 + 8
	maxValueDigits  = 20 // a uint64
	sampleLineExtra = 1 + maxValueDigits + 1
)

func seriesCost(k *Key, tcp bool, buckets int, native bool) int64 {
	c := seriesStruct + keyMapEntry + int64(len(k.Service.Host)+len(k.Service.Name)+len(k.PeerPrincipal)+
		len(k.LocalPrincipal)+len(k.GRPCStatus)+len(k.ResponseFlags)+len(k.Extra))
	if !tcp {
		c += 3 * int64(buckets+1) * 8
		if native {
			c += 3 * nativeFixedBytes
		}
	}
	return c
}

func labelSetCost(text string) int64 {
	// The text is held once (map key and list share it); members grow by one
	// pointer per worker that records the label set.
	return labelSetStruct + 2*int64(len(text)) + 16
}

// expositionCost is the upper bound of the text lines of one label set in
// the families rendered with table t.
func (r *Registry) expositionCost(t *table, text string) int64 {
	var c int64
	lt := int64(len(text))
	for _, m := range t.metrics {
		name := int64(len(metricSpecs[m].Name))
		if metricSpecs[m].Kind == KindCounter {
			c += name + lt + sampleLineExtra
			continue
		}
		for _, b := range r.buckets {
			c += name + int64(len("_bucket,le=\"\"")) + lt + int64(len(formatBound(b))) + sampleLineExtra
		}
		c += name + int64(len("_bucket,le=\"+Inf\"")) + lt + sampleLineExtra
		c += 2 * (name + int64(len("_count")) + lt + sampleLineExtra)
	}
	return c
}

// tooLong reports whether a string of k exceeds n bytes.
func (k *Key) tooLong(n int) bool {
	if len(k.Service.Host) > n || len(k.Service.Name) > n || len(k.PeerPrincipal) > n ||
		len(k.LocalPrincipal) > n || len(k.GRPCStatus) > n || len(k.ResponseFlags) > n {
		return true
	}
	if len(k.Extra) <= n {
		return false
	}
	start := 0
	for i := 0; i <= len(k.Extra); i++ {
		if i == len(k.Extra) || k.Extra[i] == 0 {
			if i-start > n {
				return true
			}
			start = i + 1
		}
	}
	return false
}

// truncate cuts k's strings to n bytes.
func (k *Key) truncate(n int) {
	selfTruncated.Add(1)
	k.Service.Host = cut(k.Service.Host, n)
	k.Service.Name = cut(k.Service.Name, n)
	k.PeerPrincipal = cut(k.PeerPrincipal, n)
	k.LocalPrincipal = cut(k.LocalPrincipal, n)
	k.GRPCStatus = cut(k.GRPCStatus, n)
	k.ResponseFlags = cut(k.ResponseFlags, n)
	if len(k.Extra) > n {
		parts := strings.Split(k.Extra, "\x00")
		for i := range parts {
			parts[i] = cut(parts[i], n)
		}
		k.Extra = strings.Join(parts, "\x00")
	}
}

// cut returns s's first n bytes or fewer, never splitting a UTF-8 sequence.
func cut(s string, n int) string {
	if len(s) <= n {
		return s
	}
	i := n
	for i > 0 && i > n-utf8.UTFMax && !utf8.RuneStart(s[i]) {
		i--
	}
	return s[:i]
}

var (
	selfTruncated = Self.Counter("leanmesh_label_values_truncated_total", "", "")
	selfSanitized = Self.Counter("leanmesh_label_values_sanitized_total", "", "")
)

// appendEscaped writes a label value as the Prometheus text format requires
// (\\, \" and \n escaped) and as its parsers accept: invalid UTF-8 and
// control characters, which request-derived values may carry and which the
// format cannot escape, become U+FFFD.
func appendEscaped(buf []byte, s string) []byte {
	bad := false
	for i := 0; i < len(s); {
		c := s[i]
		if c >= 0x20 && c < 0x7f {
			switch c {
			case '\\':
				buf = append(buf, '\\', '\\')
			case '"':
				buf = append(buf, '\\', '"')
			default:
				buf = append(buf, c)
			}
			i++
			continue
		}
		if c == '\n' {
			buf = append(buf, '\\', 'n')
			i++
			continue
		}
		r, size := rune(c), 1
		if c >= utf8.RuneSelf {
			r, size = utf8.DecodeRuneInString(s[i:])
		}
		if r < 0x20 || r >= 0x7f && r <= 0x9f || r == utf8.RuneError && size == 1 {
			buf = append(buf, "\uFFFD"...)
			bad = true
		} else {
			buf = append(buf, s[i:i+size]...)
		}
		i += size
	}
	if bad {
		selfSanitized.Add(1)
	}
	return buf
}
