package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"time"

	networkingv1alpha3 "istio.io/client-go/pkg/apis/networking/v1alpha3"
	telemetryv1 "istio.io/client-go/pkg/apis/telemetry/v1"
	istioscheme "istio.io/client-go/pkg/clientset/versioned/scheme"
	appsv1 "k8s.io/api/apps/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/runtime"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller/controllerutil"

	"github.com/leanmesh/leanmesh/controller/api/v1alpha1"
)

// runUninstall is the chart's pre-delete hook: it stops the controller
// (so it cannot re-apply what is deleted next), then deletes every
// EnvoyFilter and Telemetry leanmesh rendered, in all namespaces, and drops
// the finalizer older releases put on policies. Istio's own telemetry is back
// on every proxy once istiod pushes. The policies themselves stay (their CRD
// is kept by Helm): re-installing applies them again.
func runUninstall(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("uninstall", flag.ContinueOnError)
	fs.SetOutput(stderr)
	ns := fs.String("namespace", "leanmesh-system", "namespace of the controller Deployment")
	deployment := fs.String("deployment", "leanmesh-controller", "controller Deployment to delete first (empty: none)")
	timeout := fs.Duration("timeout", 2*time.Minute, "overall deadline")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	scheme := runtime.NewScheme()
	for _, add := range []func(*runtime.Scheme) error{clientgoscheme.AddToScheme, istioscheme.AddToScheme, v1alpha1.AddToScheme} {
		if err := add(scheme); err != nil {
			fmt.Fprintln(stderr, err)
			return 1
		}
	}
	cfg, err := ctrl.GetConfig()
	if err != nil {
		fmt.Fprintln(stderr, "leanmesh uninstall:", err)
		return 1
	}
	c, err := client.New(cfg, client.Options{Scheme: scheme})
	if err != nil {
		fmt.Fprintln(stderr, "leanmesh uninstall:", err)
		return 1
	}
	ctx, cancel := context.WithTimeout(context.Background(), *timeout)
	defer cancel()
	if err := uninstall(ctx, c, *ns, *deployment, stdout); err != nil {
		fmt.Fprintln(stderr, "leanmesh uninstall:", err)
		return 1
	}
	return 0
}

func uninstall(ctx context.Context, c client.Client, ns, deployment string, out io.Writer) error {
	if deployment != "" {
		d := &appsv1.Deployment{}
		d.Namespace, d.Name = ns, deployment
		fg := client.PropagationPolicy("Foreground")
		if err := c.Delete(ctx, d, fg); err != nil && !apierrors.IsNotFound(err) {
			return fmt.Errorf("deleting the controller Deployment %s/%s: %w", ns, deployment, err)
		}
		// Wait until it is gone: a controller still running would undo the
		// deletions below as drift.
		for {
			err := c.Get(ctx, client.ObjectKeyFromObject(d), d)
			if apierrors.IsNotFound(err) {
				break
			}
			select {
			case <-ctx.Done():
				return fmt.Errorf("controller Deployment %s/%s still present: %w", ns, deployment, ctx.Err())
			case <-time.After(500 * time.Millisecond):
			}
		}
		fmt.Fprintf(out, "deleted Deployment %s/%s\n", ns, deployment)
	}
	managed := client.MatchingLabels{v1alpha1.LabelManagedBy: v1alpha1.ManagedBy}
	var efs networkingv1alpha3.EnvoyFilterList
	if err := c.List(ctx, &efs, managed); err != nil {
		return err
	}
	for _, o := range efs.Items {
		if err := c.Delete(ctx, o); err != nil && !apierrors.IsNotFound(err) {
			return err
		}
		fmt.Fprintf(out, "deleted EnvoyFilter %s/%s\n", o.Namespace, o.Name)
	}
	var tels telemetryv1.TelemetryList
	if err := c.List(ctx, &tels, managed); err != nil {
		return err
	}
	for _, o := range tels.Items {
		if err := c.Delete(ctx, o); err != nil && !apierrors.IsNotFound(err) {
			return err
		}
		fmt.Fprintf(out, "deleted Telemetry %s/%s\n", o.Namespace, o.Name)
	}
	var policies v1alpha1.TelemetryPolicyList
	if err := c.List(ctx, &policies); err != nil {
		return err
	}
	for i := range policies.Items {
		p := &policies.Items[i]
		if !controllerutil.ContainsFinalizer(p, v1alpha1.Finalizer) {
			continue
		}
		patch := client.MergeFrom(p.DeepCopy())
		controllerutil.RemoveFinalizer(p, v1alpha1.Finalizer)
		if err := c.Patch(ctx, p, patch); err != nil && !apierrors.IsNotFound(err) {
			return err
		}
		fmt.Fprintf(out, "removed finalizer from TelemetryPolicy %s/%s\n", p.Namespace, p.Name)
	}
	return nil
}
