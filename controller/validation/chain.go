// Package validation decides whether a TelemetryPolicy may be rendered: an
// ordered list of named checks, each returning the reason and message that
// become the policy's Ready condition when it fails (the shape of
// cert-manager's readiness policies.Chain). The controller and
// `leanmesh render -f` evaluate the same chain; checks that need cluster
// state (other policies, Telemetry resources) see what the caller gathered
// and pass on empty input.
//
// Pure: no client, no cgo.
package validation

import (
	"fmt"

	telemetryv1 "istio.io/client-go/pkg/apis/telemetry/v1"

	"github.com/leanmesh/leanmesh/controller/api/v1alpha1"
	"github.com/leanmesh/leanmesh/controller/release"
	"github.com/leanmesh/leanmesh/controller/scope"
)

// Input is everything the checks read, gathered once by the caller.
type Input struct {
	Policy *v1alpha1.TelemetryPolicy
	// Spec is Policy.Spec with the CRD's defaults applied (render.Defaults).
	Spec          v1alpha1.TelemetryPolicySpec
	RootNamespace string
	Matrix        release.Matrix
	// Scope resolves precedence among the policies in reach (nil offline).
	Scope *scope.Resolver
	// Telemetries are the user's Telemetry resources in the policy's reach.
	Telemetries []*telemetryv1.Telemetry
}

// Result is a failed check: the reason and message for Ready=False.
type Result struct {
	Check   string
	Reason  v1alpha1.ConditionReason
	Message string
}

func (r *Result) Error() string { return fmt.Sprintf("%s: %s", r.Check, r.Message) }

// Check is one named step. Run returns a non-empty reason when the policy
// must not be rendered.
type Check struct {
	Name string
	Run  func(in *Input) (v1alpha1.ConditionReason, string)
}

// Chain is evaluated in order; the first failure decides.
type Chain []Check

// Evaluate runs the checks in order and returns the first failure, or nil.
func (c Chain) Evaluate(in *Input) *Result {
	for _, check := range c {
		if reason, msg := check.Run(in); reason != "" {
			return &Result{Check: check.Name, Reason: reason, Message: msg}
		}
	}
	return nil
}

// Names lists the checks in order (docs, tests).
func (c Chain) Names() []string {
	out := make([]string, len(c))
	for i, check := range c {
		out[i] = check.Name
	}
	return out
}

// Default is the controller's chain: the policy's own fields first (cheap,
// and an invalid policy is InvalidConfig whatever the cluster holds), then
// its place among other policies and the user's Telemetry resources.
func Default() Chain {
	return Chain{
		{Name: "PolicyName", Run: policyName},
		{Name: "IstioRelease", Run: istioRelease},
		{Name: "Mode", Run: mode},
		{Name: "SelectorEnvoyVersion", Run: selectorEnvoyVersion},
		{Name: "ScopeConflict", Run: scopeConflict},
		{Name: "TelemetryConflict", Run: telemetryConflict},
	}
}
