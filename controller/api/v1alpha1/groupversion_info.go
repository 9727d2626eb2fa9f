// Package v1alpha1 holds leanmesh's API types (group leanmesh.io).
//
// Each kind lives in its own <kind>_types.go; this file only registers the
// group so further kinds can be added without touching existing ones.
//
// +kubebuilder:object:generate=true
// +groupName=leanmesh.io
package v1alpha1

import (
	"k8s.io/apimachinery/pkg/runtime/schema"
	"sigs.k8s.io/controller-runtime/pkg/scheme"
)

var (
	// GroupVersion is the group and version of every kind in this package.
	GroupVersion = schema.GroupVersion{Group: "leanmesh.io", Version: "v1alpha1"}

	// SchemeBuilder collects the kinds; each *_types.go registers its own in init().
	SchemeBuilder = &scheme.Builder{GroupVersion: GroupVersion}

	// AddToScheme adds every kind of this group-version to a scheme.
	AddToScheme = SchemeBuilder.AddToScheme
)
