package main

import (
	"bytes"
	"context"
	"testing"

	networkingv1alpha3 "istio.io/client-go/pkg/apis/networking/v1alpha3"
	telemetryv1 "istio.io/client-go/pkg/apis/telemetry/v1"
	istioscheme "istio.io/client-go/pkg/clientset/versioned/scheme"
	appsv1 "k8s.io/api/apps/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"

	"github.com/leanmesh/leanmesh/controller/api/v1alpha1"
)

// TestUninstall: the hook deletes the controller, every EnvoyFilter and
// Telemetry leanmesh rendered (and only those), and old finalizers.
func TestUninstall(t *testing.T) {
	scheme := runtime.NewScheme()
	for _, add := range []func(*runtime.Scheme) error{clientgoscheme.AddToScheme, istioscheme.AddToScheme, v1alpha1.AddToScheme} {
		if err := add(scheme); err != nil {
			t.Fatal(err)
		}
	}
	managed := map[string]string{v1alpha1.LabelManagedBy: v1alpha1.ManagedBy}
	objs := []client.Object{
		&appsv1.Deployment{ObjectMeta: metav1.ObjectMeta{Namespace: "leanmesh-system", Name: "leanmesh-controller"}},
		&networkingv1alpha3.EnvoyFilter{ObjectMeta: metav1.ObjectMeta{Namespace: "istio-system", Name: "leanmesh-mesh-http", Labels: managed}},
		&networkingv1alpha3.EnvoyFilter{ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: "leanmesh-reviews-exposition", Labels: managed}},
		&networkingv1alpha3.EnvoyFilter{ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: "user-filter"}},
		&telemetryv1.Telemetry{ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: "leanmesh-old", Labels: managed}},
		&telemetryv1.Telemetry{ObjectMeta: metav1.ObjectMeta{Namespace: "istio-system", Name: "mesh-default"}},
		&v1alpha1.TelemetryPolicy{ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: "reviews", Finalizers: []string{v1alpha1.Finalizer}}},
	}
	c := fake.NewClientBuilder().WithScheme(scheme).WithObjects(objs...).Build()
	var out bytes.Buffer
	if err := uninstall(context.Background(), c, "leanmesh-system", "leanmesh-controller", &out); err != nil {
		t.Fatal(err)
	}
	var efs networkingv1alpha3.EnvoyFilterList
	if err := c.List(context.Background(), &efs); err != nil {
		t.Fatal(err)
	}
	if len(efs.Items) != 1 || efs.Items[0].Name != "user-filter" {
		t.Errorf("EnvoyFilters left: %v", efs.Items)
	}
	var tels telemetryv1.TelemetryList
	if err := c.List(context.Background(), &tels); err != nil {
		t.Fatal(err)
	}
	if len(tels.Items) != 1 || tels.Items[0].Name != "mesh-default" {
		t.Errorf("Telemetries left: %v", tels.Items)
	}
	var p v1alpha1.TelemetryPolicy
	if err := c.Get(context.Background(), client.ObjectKey{Namespace: "shop", Name: "reviews"}, &p); err != nil {
		t.Fatal(err)
	}
	if len(p.Finalizers) != 0 {
		t.Errorf("finalizers %v", p.Finalizers)
	}
	if err := c.Get(context.Background(), client.ObjectKey{Namespace: "leanmesh-system", Name: "leanmesh-controller"}, &appsv1.Deployment{}); err == nil {
		t.Error("controller Deployment still present")
	}
	t.Logf("%s", out.String())
}
