// Package telemetryapi carries a user's Istio Telemetry resources into a
// policy: the Prometheus metric overrides of the Telemetries in scope
// (disabled metrics, tagOverrides REMOVE and UPSERT) become leanmesh
// MetricOverrides, so label sets and cardinality do not change when a
// workload switches to LeanMesh. What cannot be expressed is returned, to
// be reported on the policy, never silently dropped.
package telemetryapi

import (
	"fmt"
	"strings"

	"github.com/google/cel-go/cel"
	celast "github.com/google/cel-go/common/ast"
	"github.com/google/cel-go/common/operators"
	"github.com/google/cel-go/common/types"

	"github.com/leanmesh/leanmesh/filters/pluginconfig"
)

// celEnv parses with the grammar Istio's users write tag values in (Envoy
// evaluates them with CEL). Parsing needs no declarations.
var celEnv = func() *cel.Env {
	env, err := cel.NewEnv()
	if err != nil {
		panic(err)
	}
	return env
}()

// Expression turns a tagOverrides value into the attribute form leanmesh's
// filter evaluates (pluginconfig.ParseAttribute): a string literal, an
// attribute path (request.host), request.headers['name'], each optionally in
// string(). The value is parsed by cel-go, so anything valid CEL outside
// that subset (conditionals, has(), concatenation, map lookups on other
// attributes) is recognised as such from its syntax tree and refused with a
// reason, and a syntax error is CEL's own message.
//
// Why not evaluate with cel-go in the filter: the filter runs in every
// request of the proxy's Go runtime; the subset maps to one GetProperty or
// header read each, with no interpreter or allocation per request.
func Expression(value string) (string, error) {
	a, iss := celEnv.Parse(value)
	if iss != nil && iss.Err() != nil {
		return "", fmt.Errorf("not valid CEL: %v", iss.Err())
	}
	out, err := subset(a.NativeRep().Expr())
	if err != nil {
		return "", err
	}
	// The filter's own parser must accept exactly this form.
	if _, err := pluginconfig.ParseAttribute(out); err != nil {
		return "", err
	}
	return out, nil
}

func subset(e celast.Expr) (string, error) {
	switch e.Kind() {
	case celast.LiteralKind:
		s, ok := e.AsLiteral().(types.String)
		if !ok {
			return "", fmt.Errorf("literal of type %s: only string literals are carried", e.AsLiteral().Type().TypeName())
		}
		if strings.ContainsAny(string(s), `'"\`) {
			return "", fmt.Errorf("string literal with quotes or backslashes is not carried")
		}
		return "'" + string(s) + "'", nil
	case celast.IdentKind, celast.SelectKind:
		p, ok := path(e)
		if !ok {
			return "", fmt.Errorf("has() and other test selections are not carried")
		}
		return p, nil
	case celast.CallKind:
		c := e.AsCall()
		switch {
		case c.FunctionName() == "string" && !c.IsMemberFunction() && len(c.Args()) == 1:
			inner, err := subset(c.Args()[0])
			if err != nil {
				return "", err
			}
			return "string(" + inner + ")", nil
		case c.FunctionName() == operators.Index && len(c.Args()) == 2:
			if p, ok := path(c.Args()[0]); ok && p == "request.headers" && c.Args()[1].Kind() == celast.LiteralKind {
				if name, ok := c.Args()[1].AsLiteral().(types.String); ok && !strings.ContainsAny(string(name), `'"\`) {
					return "request.headers['" + string(name) + "']", nil
				}
			}
			return "", fmt.Errorf("only request.headers['name'] lookups are carried")
		}
		return "", fmt.Errorf("function or operator %s is not carried", displayName(c.FunctionName()))
	}
	return "", fmt.Errorf("expression kind %d is not carried", e.Kind())
}

// path flattens ident.field.field selections.
func path(e celast.Expr) (string, bool) {
	switch e.Kind() {
	case celast.IdentKind:
		return e.AsIdent(), true
	case celast.SelectKind:
		s := e.AsSelect()
		if s.IsTestOnly() {
			return "", false
		}
		base, ok := path(s.Operand())
		if !ok {
			return "", false
		}
		return base + "." + s.FieldName(), true
	}
	return "", false
}

func displayName(fn string) string {
	if op, ok := operators.FindReverse(fn); ok && op != "" {
		return "'" + op + "'"
	}
	if strings.HasPrefix(fn, "_") || strings.HasPrefix(fn, "@") {
		return "'" + fn + "'"
	}
	return fn + "()"
}
