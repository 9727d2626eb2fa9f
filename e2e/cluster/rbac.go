package cluster

import (
	"context"
	"fmt"
	"os"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/yaml"
)

// ServiceAccountConfig creates the service account namespace/name, applies
// the (Cluster)Roles in rbacYAML (controller-gen's role.yaml) bound to it, and
// returns a config impersonating it: a controller run with it fails on any
// permission its RBAC markers forgot.
func (e *Env) ServiceAccountConfig(ctx context.Context, rbacYAML []byte, namespace, name string) (*rest.Config, error) {
	if err := e.CreateNamespace(ctx, namespace, nil); err != nil && !apierrors.IsAlreadyExists(err) {
		return nil, err
	}
	subject := []rbacv1.Subject{{Kind: "ServiceAccount", Namespace: namespace, Name: name}}
	objs := []client.Object{&corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Namespace: namespace, Name: name}}}
	for _, doc := range strings.Split(string(rbacYAML), "\n---\n") {
		if strings.TrimSpace(strings.Trim(doc, "-\n")) == "" {
			continue
		}
		u := &unstructured.Unstructured{}
		if err := yaml.Unmarshal([]byte(doc), &u.Object); err != nil {
			return nil, fmt.Errorf("rbac yaml: %w", err)
		}
		if ns := u.GetNamespace(); u.GetKind() == "Role" && ns != namespace {
			// A Role for another namespace (the lazy egress's): as a cluster would have it.
			if err := e.CreateNamespace(ctx, ns, nil); err != nil && !apierrors.IsAlreadyExists(err) {
				return nil, err
			}
		}
		objs = append(objs, u)
		ref := rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: u.GetKind(), Name: u.GetName()}
		if u.GetKind() == "ClusterRole" {
			objs = append(objs, &rbacv1.ClusterRoleBinding{ObjectMeta: metav1.ObjectMeta{Name: u.GetName()}, RoleRef: ref, Subjects: subject})
		} else {
			objs = append(objs, &rbacv1.RoleBinding{ObjectMeta: metav1.ObjectMeta{Namespace: u.GetNamespace(), Name: u.GetName()}, RoleRef: ref, Subjects: subject})
		}
	}
	for _, o := range objs {
		if err := e.Client.Create(ctx, o); err != nil && !apierrors.IsAlreadyExists(err) {
			return nil, fmt.Errorf("creating %T %s: %w", o, o.GetName(), err)
		}
	}
	cfg := rest.CopyConfig(e.Config)
	cfg.Impersonate = rest.ImpersonationConfig{UserName: "system:serviceaccount:" + namespace + ":" + name}
	return cfg, nil
}

// ServiceAccountConfigT is ServiceAccountConfig for tests, reading the RBAC
// YAML from rbacPath and failing t on any error.
func (e *Env) ServiceAccountConfigT(t testing.TB, ctx context.Context, rbacPath, namespace, name string) *rest.Config {
	t.Helper()
	raw, err := os.ReadFile(rbacPath)
	if err != nil {
		t.Fatal(err)
	}
	cfg, err := e.ServiceAccountConfig(ctx, raw, namespace, name)
	if err != nil {
		t.Fatal(err)
	}
	return cfg
}
