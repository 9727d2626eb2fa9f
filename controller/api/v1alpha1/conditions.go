package v1alpha1

import (
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// ConditionType names a status condition (cf. htnn types/apis/v1/conditions.go).
type ConditionType = string

// ConditionReason is a condition's machine-readable reason. Each constant's
// Go name is Reason + its value, so a reason found in status is found in code.
type ConditionReason = string

// Condition types of TelemetryPolicy.
const (
	ConditionReady ConditionType = "Ready"
	// ConditionLibraryPresent is False when selected pods lack the library
	// label; they keep Istio's telemetry.
	ConditionLibraryPresent ConditionType = "LibraryPresent"
	// ConditionProxyVersionMatch is False when selected pods run a proxy
	// whose version the policy's proxyVersion match does not cover: they keep
	// Istio's telemetry (both stacks switch on the same match), and are listed.
	ConditionProxyVersionMatch ConditionType = "ProxyVersionMatch"
	// ConditionConfigAccepted is False when istiod reports that a selected
	// proxy rejected (NACKed) a listener update.
	ConditionConfigAccepted ConditionType = "ConfigAccepted"
	// ConditionTelemetryCarriedOver is False when a Telemetry in scope has
	// Prometheus metric settings leanmesh cannot express; the message says
	// which and why. What can be carried is, in front of spec.metrics.
	ConditionTelemetryCarriedOver ConditionType = "TelemetryCarriedOver"
)

// Condition types of LazyXDS.
const (
	// ConditionConflict is True when a user's Sidecar already selects a
	// workload of the policy: that workload is left alone (no leanmesh Sidecar).
	ConditionConflict ConditionType = "Conflict"
	// ConditionSeeded reports the last telemetry seed (only with
	// spec.seedFromTelemetry).
	ConditionSeeded ConditionType = "Seeded"
	// ConditionRoutingReproduced is False when a VirtualService of a lazy
	// destination cannot be reproduced on the egress.
	ConditionRoutingReproduced ConditionType = "RoutingReproduced"
)

// Reasons of TelemetryPolicy.
const (
	ReasonApplied ConditionReason = "Applied"
	// ReasonIstioTelemetry: mode Istio, nothing rendered.
	ReasonIstioTelemetry ConditionReason = "IstioTelemetry"
	// ReasonOverridden: every workload the policy selects is governed by a
	// more specific policy (Istio's Telemetry API scope rules).
	ReasonOverridden    ConditionReason = "Overridden"
	ReasonInvalidConfig ConditionReason = "InvalidConfig"
	// ReasonConflict: another policy of the same scope selects the same
	// workloads and is older; Istio's Telemetry API would find the same
	// pair ambiguous.
	ReasonConflict          ConditionReason = "Conflict"
	ReasonTelemetryConflict ConditionReason = "TelemetryConflict"
	ReasonApplyFailed       ConditionReason = "ApplyFailed"
	ReasonLibraryMissing    ConditionReason = "LibraryMissing"
	ReasonAllLabelled       ConditionReason = "AllLabelled"
	ReasonProxyVersionMatch ConditionReason = "ProxyVersionMatch"
	ReasonProxyVersionSkew  ConditionReason = "ProxyVersionSkew"
	// ReasonHandoverPending: another policy's EnvoyFilters still select pods
	// this policy now governs; it applies once they are gone (never both).
	ReasonHandoverPending ConditionReason = "HandoverPending"
	ReasonCarriedOver     ConditionReason = "CarriedOver"
	ReasonNotCarried      ConditionReason = "NotCarried"
	ReasonNoTelemetry     ConditionReason = "NoTelemetry"
	ReasonAccepted        ConditionReason = "Accepted"
	ReasonRejected        ConditionReason = "Rejected"
	ReasonUnknown         ConditionReason = "Unknown"
)

// Reasons of LazyXDS.
const (
	ReasonLearning             ConditionReason = "Learning"
	ReasonNoWorkloads          ConditionReason = "NoWorkloads"
	ReasonUserSidecar          ConditionReason = "UserSidecar"
	ReasonNoConflict           ConditionReason = "NoConflict"
	ReasonUnselectableWorkload ConditionReason = "UnselectableWorkload"
	ReasonSidecarApplyFailed   ConditionReason = "SidecarApplyFailed"
	ReasonPersistFailed        ConditionReason = "PersistFailed"
	ReasonSeeded               ConditionReason = "Seeded"
	ReasonSeedQueryFailed      ConditionReason = "SeedQueryFailed"
	ReasonSeedPending          ConditionReason = "SeedPending"
	ReasonAllRoutesReproduced  ConditionReason = "AllRoutesReproduced"
	ReasonUnreproducibleRoutes ConditionReason = "UnreproducibleRoutes"
	// The policy's egress namespace is not one the controller may write in.
	ReasonEgressNamespaceNotAllowed ConditionReason = "EgressNamespaceNotAllowed"
)

// SetCondition sets a condition at generation gen, with the message cut at
// 1 KiB (status stays readable in kubectl). It reports whether anything changed.
func SetCondition(conds *[]metav1.Condition, gen int64, t ConditionType, status metav1.ConditionStatus, reason ConditionReason, msg string) bool {
	if len(msg) > 1024 {
		msg = msg[:1021] + "..."
	}
	return meta.SetStatusCondition(conds, metav1.Condition{Type: t, Status: status, Reason: reason, Message: msg, ObservedGeneration: gen})
}
