// Package v1alpha1 holds leanmesh's API types (group leanmesh.io).
//
// Each kind lives in its own <kind>_types.go; this file only registers the
// group so further kinds can be added without touching existing ones.
//
// +kubebuilder:object:generate=true
// +groupName=leanmesh.io
package v1alpha1

import (
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
)

// The scheme builder is apimachinery's, as in k8s.io/api's packages:
// controller-runtime deprecated its pkg/scheme.Builder so that API packages
// import no more than apimachinery.
var (
	// GroupVersion is the group and version of every kind in this package.
	GroupVersion = schema.GroupVersion{Group: "leanmesh.io", Version: "v1alpha1"}

	// SchemeBuilder collects the kinds; each *_types.go registers its own in
	// init() through register.
	SchemeBuilder runtime.SchemeBuilder

	// AddToScheme adds every kind of this group-version to a scheme.
	AddToScheme = SchemeBuilder.AddToScheme
)

// register adds one kind (its object and its list) to the group-version,
// what controller-runtime's Builder.Register did.
func register(objects ...runtime.Object) {
	SchemeBuilder.Register(func(s *runtime.Scheme) error {
		s.AddKnownTypes(GroupVersion, objects...)
		metav1.AddToGroupVersion(s, GroupVersion)
		return nil
	})
}
