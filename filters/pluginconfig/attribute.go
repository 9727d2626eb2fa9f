package pluginconfig

import (
	"fmt"
	"strings"
)

// AttributeKind says where a custom dimension's value comes from.
type AttributeKind uint8

const (
	// Constant: a quoted literal, 'x' or "x".
	Constant AttributeKind = iota
	// RequestHeader: request.headers['name'], read with GetRaw.
	RequestHeader
	// Property: an Envoy attribute path read with GetProperty, e.g.
	// request.host, destination.port, xds.cluster_name.
	Property
)

// Attribute is a parsed dimension expression. leanmesh supports the subset of
// CEL that Istio's docs use for dimensions: literals, request headers and
// attribute paths, optionally wrapped in string(...). Anything else is
// rejected at parse time instead of being evaluated wrongly at run time.
type Attribute struct {
	Kind  AttributeKind
	Value string // literal, header name (lower case) or property path
}

var attributeRoots = []string{"request.", "response.", "source.", "destination.", "connection.", "upstream.", "xds.", "metadata.", "filter_state."}

// ParseAttribute parses one dimension expression.
func ParseAttribute(expr string) (Attribute, error) {
	e := strings.TrimSpace(expr)
	if strings.HasPrefix(e, "string(") && strings.HasSuffix(e, ")") {
		e = strings.TrimSpace(e[len("string(") : len(e)-1])
	}
	if len(e) >= 2 && (e[0] == '\'' && e[len(e)-1] == '\'' || e[0] == '"' && e[len(e)-1] == '"') {
		return Attribute{Kind: Constant, Value: e[1 : len(e)-1]}, nil
	}
	if strings.HasPrefix(e, "request.headers[") && strings.HasSuffix(e, "]") {
		inner := strings.TrimSpace(e[len("request.headers[") : len(e)-1])
		if len(inner) >= 2 && (inner[0] == '\'' && inner[len(inner)-1] == '\'' || inner[0] == '"' && inner[len(inner)-1] == '"') {
			name := strings.ToLower(inner[1 : len(inner)-1])
			if name != "" && !strings.ContainsAny(name, " \t\"'") {
				return Attribute{Kind: RequestHeader, Value: name}, nil
			}
		}
		return Attribute{}, fmt.Errorf("%q: want request.headers['name']", expr)
	}
	for _, root := range attributeRoots {
		if strings.HasPrefix(e, root) && len(e) > len(root) && validPath(e) {
			return Attribute{Kind: Property, Value: e}, nil
		}
	}
	return Attribute{}, fmt.Errorf("%q: unsupported expression (supported: 'literal', request.headers['name'], an attribute path such as request.host or destination.port, each optionally in string())", expr)
}

func validPath(p string) bool {
	for _, c := range p {
		legal := c == '.' || c == '_' || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9'
		if !legal {
			return false
		}
	}
	return !strings.Contains(p, "..") && !strings.HasSuffix(p, ".")
}
