package lazyxds

import (
	"net/netip"
	"strconv"
	"strings"
)

// ParseCluster splits an Istio outbound cluster name "outbound|<port>|<subset>|<fqdn>".
// Anything else (inbound clusters, PassthroughCluster, BlackHoleCluster, our own
// ALS cluster) is not a destination and returns ok=false.
func ParseCluster(name string) (host string, port uint32, ok bool) {
	dir, rest, found := strings.Cut(name, "|")
	if !found || dir != "outbound" {
		return "", 0, false
	}
	p, rest, found := strings.Cut(rest, "|")
	if !found {
		return "", 0, false
	}
	_, host, found = strings.Cut(rest, "|") // subset is irrelevant to visibility
	if !found || host == "" || strings.Contains(host, "|") {
		return "", 0, false
	}
	n, err := strconv.ParseUint(p, 10, 32)
	if err != nil || n == 0 {
		return "", 0, false
	}
	return host, uint32(n), true
}

// SplitAuthority parses "host[:port]" (IPv6 literals in brackets). It rejects
// anything that cannot be a DNS name or an IP so garbage never reaches the
// service index.
func SplitAuthority(authority string) (host string, port uint32, ok bool) {
	if authority == "" || len(authority) > 261 {
		return "", 0, false
	}
	host = authority
	if strings.HasPrefix(host, "[") {
		end := strings.IndexByte(host, ']')
		if end < 0 {
			return "", 0, false
		}
		rest := host[end+1:]
		host = host[1:end]
		if _, err := netip.ParseAddr(host); err != nil {
			return "", 0, false
		}
		if rest == "" {
			return host, 0, true
		}
		if rest[0] != ':' {
			return "", 0, false
		}
		n, err := strconv.ParseUint(rest[1:], 10, 16)
		if err != nil || n == 0 {
			return "", 0, false
		}
		return host, uint32(n), true
	}
	if i := strings.LastIndexByte(host, ':'); i >= 0 {
		n, err := strconv.ParseUint(host[i+1:], 10, 16)
		if err != nil || n == 0 {
			return "", 0, false
		}
		host, port = host[:i], uint32(n)
	}
	if !validDNSName(host) {
		return "", 0, false
	}
	return strings.ToLower(strings.TrimSuffix(host, ".")), port, true
}

func validDNSName(h string) bool {
	h = strings.TrimSuffix(h, ".")
	if h == "" || len(h) > 253 {
		return false
	}
	label := 0
	for i := 0; i < len(h); i++ {
		c := h[i]
		switch {
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9', c == '_':
			label++
		case c == '-':
			if label == 0 {
				return false
			}
			label++
		case c == '.':
			if label == 0 || h[i-1] == '-' {
				return false
			}
			label = 0
		default:
			return false
		}
		if label > 63 {
			return false
		}
	}
	return h[len(h)-1] != '-'
}

// candidateFQDNs lists the names a Kubernetes pod in callerNS would reach
// through its DNS search path for host, most specific first, without allocating
// for the common already-qualified case.
func candidateFQDNs(host, callerNS, domain string, out []string) []string {
	out = append(out, host)
	svcSuffix := ".svc." + domain
	if strings.HasSuffix(host, svcSuffix) {
		return out
	}
	switch strings.Count(host, ".") {
	case 0: // "reviews" in the caller's namespace
		if callerNS != "" {
			out = append(out, host+"."+callerNS+svcSuffix)
		}
	case 1: // "reviews.bookinfo"
		out = append(out, host+svcSuffix)
	default:
		if strings.HasSuffix(host, ".svc") { // "reviews.bookinfo.svc"
			out = append(out, host+"."+domain)
		}
	}
	return out
}

// ResolveShortName turns a host written in a VirtualService of namespace ns
// into an FQDN the way istiod does: only dot-free names are relative.
func ResolveShortName(host, ns, domain string) string {
	if host == "" || strings.Contains(host, ".") || strings.HasPrefix(host, "*") {
		return host
	}
	return host + "." + ns + ".svc." + domain
}

// IsHTTPProtocol reports whether a Kubernetes/ServiceEntry port is HTTP by
// Istio's rules (appProtocol first, then the port name prefix). Ports with no
// declared protocol are sniffed by Istio; lazyxds treats them as TCP (always
// visible) because the redirect only works for routes that exist on HTTP ports.
func IsHTTPProtocol(portName, appProtocol string) bool {
	p := appProtocol
	if p == "" {
		p, _, _ = strings.Cut(portName, "-")
	}
	switch strings.ToLower(p) {
	case "http", "http2", "grpc", "grpc-web", "h2c", "kubernetes.io/h2c":
		return true
	}
	return false
}
