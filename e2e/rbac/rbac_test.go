// Package rbac derives the controller's permissions from what it really asks
// the apiserver for. Each feature set runs the real `leanmesh controller`
// binary as a service account holding only the generated roles of its
// features (config/rbac/<feature>/role.yaml, the files the chart grants),
// exercises every feature, and reads the apiserver's audit log: a request
// the roles refused is a missing permission, a granted verb the run never
// used is an unused one. Both fail the test.
package rbac

import (
	"context"
	"crypto/tls"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/go-logr/logr"
	authenticationv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"
	ctrllog "sigs.k8s.io/controller-runtime/pkg/log"
	"sigs.k8s.io/yaml"

	"github.com/leanmesh/leanmesh/controller/api/v1alpha1"
	"github.com/leanmesh/leanmesh/e2e/cluster"
)

const (
	controllerNS = "leanmesh-system" // the namespace the Role markers name
	rootNS       = "istio-system"
	rbacDir      = "../../config/rbac"
)

// featureSet is one way to run the controller: the features it turns on
// (each grants config/rbac/<feature>/role.yaml) and their flags.
type featureSet struct {
	name     string
	features []string
}

func (s featureSet) has(f string) bool { return slices.Contains(s.features, f) }

// The sets the chart can produce that differ in RBAC: core alone, and core
// with each optional feature. lazyxds runs without leader election, so its
// ConfigMap permission is shown not to depend on it.
var featureSets = []featureSet{
	{"core", []string{"core"}},
	{"leader-election", []string{"core", "leader-election"}},
	{"lazyxds", []string{"core", "lazyxds"}},
	{"workload-table", []string{"core", "workload-table"}},
	{"metrics-auth", []string{"core", "metrics-auth"}},
}

// TestRBACPerFeature: for each feature set, no request of the controller is
// refused and every verb its roles grant is used.
func TestRBACPerFeature(t *testing.T) {
	ctrllog.SetLogger(logr.Discard()) // envtest's own client; the controller logs to its file
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Minute)
	defer cancel()
	env := cluster.StartT(t, cluster.Options{
		CRDPaths: []string{"../../config/crd/bases"},
		Scheme:   v1alpha1.AddToScheme,
		Audit:    true,
		// Checks update on the owner's finalizers when an object names it
		// with blockOwnerDeletion (controller references do): a permission
		// no request names, enforced here as OpenShift and others do.
		AdmissionPlugins: []string{"OwnerReferencesPermissionEnforcement"},
	})
	for _, ns := range []string{controllerNS, rootNS} {
		if err := env.CreateNamespace(ctx, ns, nil); err != nil {
			t.Fatal(err)
		}
	}
	bin := filepath.Join(t.TempDir(), "leanmesh")
	// make controller's flags, so its build cache serves this build.
	build := exec.Command("go", "build", "-trimpath", "-ldflags", "-s -w", "-o", bin, "./controller/cmd/leanmesh")
	build.Dir = "../.."
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}

	for _, set := range featureSets {
		t.Run(set.name, func(t *testing.T) {
			start := time.Now()
			r := newRun(t, ctx, env, bin, set)
			granted := r.grant()
			r.start()
			exerciseCore(t, r)
			if set.has("leader-election") {
				exerciseLeaderElection(t, r)
			}
			if set.has("lazyxds") {
				exerciseLazyXDS(t, r)
			}
			if set.has("workload-table") {
				exerciseWorkloadTable(t, r)
			}
			if set.has("metrics-auth") {
				exerciseMetricsAuth(t, r)
			}
			r.stop()

			events, err := env.AuditEvents(r.user())
			if err != nil {
				t.Fatal(err)
			}
			used, refused := usedPermissions(events)
			r.markOwnerFinalizers(used, r.written)
			for _, p := range refused {
				t.Errorf("missing permission: %s was refused", p)
			}
			for _, g := range granted {
				if !slices.ContainsFunc(usedList(used), g.perm.covers) {
					t.Errorf("unused permission: %s grants %s, never used in the run", g.feature, g.perm)
				}
			}
			for _, u := range usedList(used) {
				if !slices.ContainsFunc(granted, func(g grant) bool { return g.perm.covers(u) }) {
					t.Errorf("used but granted by none of the feature roles (another binding?): %s", u)
				}
			}
			t.Logf("%s: %d requests as %s, %d distinct permissions used, %d granted, %s",
				set.name, len(events), r.user(), len(used), len(granted), time.Since(start).Round(time.Second))
			if testing.Verbose() {
				var ps []string
				for p := range used {
					ps = append(ps, p.String())
				}
				sort.Strings(ps)
				t.Logf("used:\n  %s", strings.Join(ps, "\n  "))
			}
		})
	}
}

// perm is one verb on one resource: what an RBAC rule grants and what an
// audit event records. namespace is set only for a Role's grant.
type perm struct {
	group, resource, verb, namespace string
}

func (p perm) String() string {
	g := p.group
	if g == "" {
		g = "core"
	}
	s := fmt.Sprintf("%s %s/%s", p.verb, g, p.resource)
	if p.namespace != "" {
		s += " in " + p.namespace
	}
	return s
}

// covers: the grant g allows the request u (a cluster-wide grant covers
// every namespace; a Role's only its own).
func (g perm) covers(u perm) bool {
	return g.group == u.group && g.resource == u.resource && g.verb == u.verb && (g.namespace == "" || g.namespace == u.namespace)
}

func usedList(used map[perm]bool) []perm {
	out := make([]perm, 0, len(used))
	for p := range used {
		out = append(out, p)
	}
	return out
}

type grant struct {
	feature string
	perm    perm
}

// run is one controller process for one feature set.
type run struct {
	t       *testing.T
	ctx     context.Context
	env     *cluster.Env
	bin     string
	set     featureSet
	sa      string
	ns      string // the set's workload namespace
	cmd     *exec.Cmd
	exited  chan error
	log     string
	probe   string
	metrics string
	als     string
	wt      string
	written []client.Object // what the controller wrote (note)
}

func newRun(t *testing.T, ctx context.Context, env *cluster.Env, bin string, set featureSet) *run {
	r := &run{t: t, ctx: ctx, env: env, bin: bin, set: set, sa: "rbac-" + set.name, ns: "rbac-" + set.name}
	if err := env.CreateNamespace(ctx, r.ns, nil); err != nil {
		t.Fatal(err)
	}
	return r
}

func (r *run) user() string { return "system:serviceaccount:" + controllerNS + ":" + r.sa }

// grant applies the set's feature roles, renamed for this run, bound to a
// new service account (the ServiceAccountConfigT helper every controller
// test uses), and returns what they grant.
func (r *run) grant() []grant {
	r.t.Helper()
	var docs []string
	var out []grant
	for _, f := range r.set.features {
		raw, err := os.ReadFile(filepath.Join(rbacDir, f, "role.yaml"))
		if err != nil {
			r.t.Fatal(err)
		}
		for _, doc := range strings.Split(string(raw), "\n---\n") {
			if strings.TrimSpace(strings.Trim(doc, "-\n")) == "" {
				continue
			}
			u := &unstructured.Unstructured{}
			if err := yaml.Unmarshal([]byte(doc), &u.Object); err != nil {
				r.t.Fatal(err)
			}
			u.SetName(r.sa + "-" + u.GetName())
			b, err := yaml.Marshal(u.Object)
			if err != nil {
				r.t.Fatal(err)
			}
			docs = append(docs, string(b))
			rules, _, _ := unstructured.NestedSlice(u.Object, "rules")
			for _, rule := range rules {
				m := rule.(map[string]any)
				for _, g := range strs(m["apiGroups"]) {
					for _, res := range strs(m["resources"]) {
						for _, v := range strs(m["verbs"]) {
							p := perm{group: g, resource: res, verb: v}
							if u.GetKind() == "Role" {
								p.namespace = u.GetNamespace()
							}
							out = append(out, grant{feature: f, perm: p})
						}
					}
				}
			}
		}
	}
	path := filepath.Join(r.t.TempDir(), "role.yaml")
	if err := os.WriteFile(path, []byte(strings.Join(docs, "\n---\n")), 0o600); err != nil {
		r.t.Fatal(err)
	}
	r.env.ServiceAccountConfigT(r.t, r.ctx, path, controllerNS, r.sa)
	return out
}

func strs(v any) []string {
	var out []string
	l, _ := v.([]any)
	for _, x := range l {
		out = append(out, x.(string))
	}
	return out
}

// usedPermissions turns audit events into the permissions they used (with
// the request's namespace, empty for cluster-scoped objects) and the
// requests that were refused.
func usedPermissions(events []cluster.AuditEvent) (used map[perm]bool, refused []string) {
	used = map[perm]bool{}
	for _, ev := range events {
		if ev.ObjectRef == nil || ev.ObjectRef.Resource == "" {
			continue // discovery and other non-resource URLs: open to every authenticated user
		}
		res := ev.ObjectRef.Resource
		if ev.ObjectRef.Subresource != "" {
			res += "/" + ev.ObjectRef.Subresource
		}
		code := 0
		if ev.ResponseStatus != nil {
			code = ev.ResponseStatus.Code
		}
		p := perm{group: ev.ObjectRef.APIGroup, resource: res, verb: ev.Verb, namespace: ev.ObjectRef.Namespace}
		if code == http.StatusForbidden {
			refused = append(refused, fmt.Sprintf("%s (%s)", p, ev.RequestURI))
			continue
		}
		used[p] = true
		// Creating through server-side apply is a patch request the
		// apiserver also authorizes as create (k8s.io/apiserver
		// endpoints/handlers/patch.go): a patch answered 201.
		if ev.Verb == "patch" && code == http.StatusCreated {
			p.verb = "create"
			used[p] = true
		}
	}
	return used, refused
}

// markOwnerFinalizers records the permission OwnerReferencesPermissionEnforcement
// checked for each object the run wrote with blockOwnerDeletion: update on
// the owner's finalizers (no request names it, so the audit log cannot).
func (r *run) markOwnerFinalizers(used map[perm]bool, objs []client.Object) {
	for _, o := range objs {
		for _, ref := range o.GetOwnerReferences() {
			if !ptr.Deref(ref.BlockOwnerDeletion, false) {
				continue
			}
			gv, _ := schema.ParseGroupVersion(ref.APIVersion)
			m, err := r.env.Client.RESTMapper().RESTMapping(gv.WithKind(ref.Kind).GroupKind(), gv.Version)
			if err != nil {
				r.t.Fatal(err)
			}
			used[perm{group: gv.Group, resource: m.Resource.Resource + "/finalizers", verb: "update", namespace: o.GetNamespace()}] = true
		}
	}
}

// freePort reserves a loopback port for the controller process to bind.
func freePort(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

// token is a service-account token from the TokenRequest API.
func (r *run) token(ns, sa string, audiences ...string) string {
	r.t.Helper()
	cs, err := kubernetes.NewForConfig(r.env.Config)
	if err != nil {
		r.t.Fatal(err)
	}
	if err := r.env.Client.Create(r.ctx, &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: sa}}); err != nil && !apierrors.IsAlreadyExists(err) {
		r.t.Fatal(err)
	}
	tr, err := cs.CoreV1().ServiceAccounts(ns).CreateToken(r.ctx, sa, &authenticationv1.TokenRequest{
		Spec: authenticationv1.TokenRequestSpec{Audiences: audiences, ExpirationSeconds: ptr.To[int64](3600)},
	}, metav1.CreateOptions{})
	if err != nil {
		r.t.Fatalf("token request: %v", err)
	}
	return tr.Status.Token
}

// start runs `leanmesh controller` as the service account (its own token,
// as in a pod) with the set's flags, and waits until it is ready.
func (r *run) start() {
	t := r.t
	t.Helper()
	kc := clientcmdapi.NewConfig()
	kc.Clusters["e2e"] = &clientcmdapi.Cluster{Server: r.env.Config.Host, CertificateAuthorityData: r.env.Config.CAData}
	kc.AuthInfos["sa"] = &clientcmdapi.AuthInfo{Token: r.token(controllerNS, r.sa)}
	kc.Contexts["e2e"] = &clientcmdapi.Context{Cluster: "e2e", AuthInfo: "sa"}
	kc.CurrentContext = "e2e"
	dir := t.TempDir()
	kubeconfig := filepath.Join(dir, "kubeconfig")
	if err := clientcmd.WriteToFile(*kc, kubeconfig); err != nil {
		t.Fatal(err)
	}
	r.probe = freePort(t)
	args := []string{"controller", "--kubeconfig", kubeconfig, "--log-format", "text",
		"--health-probe-bind-address", r.probe, "--root-namespace", rootNS,
		"--leader-elect=" + fmt.Sprint(r.set.has("leader-election")), "--leader-election-namespace", controllerNS}
	if r.set.has("metrics-auth") {
		r.metrics = freePort(t)
		args = append(args, "--metrics-bind-address", r.metrics, "--metrics-secure=true")
	} else {
		args = append(args, "--metrics-bind-address", "0")
	}
	if r.set.has("lazyxds") {
		r.als = freePort(t)
		args = append(args, "--lazyxds", "--lazyxds-als-address", r.als, "--lazyxds-als-plaintext")
	}
	if r.set.has("workload-table") {
		r.wt = freePort(t)
		args = append(args, "--workload-table", "--workload-table-address", r.wt, "--workload-table-plaintext")
	}
	r.log = filepath.Join(dir, "controller.log")
	logf, err := os.Create(r.log)
	if err != nil {
		t.Fatal(err)
	}
	r.cmd = exec.Command(r.bin, args...)
	r.cmd.Env = append(os.Environ(), "POD_NAMESPACE="+controllerNS)
	r.cmd.Stdout, r.cmd.Stderr = logf, logf
	if err := r.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	r.exited = make(chan error, 1)
	go func() { r.exited <- r.cmd.Wait(); logf.Close() }()
	t.Cleanup(func() {
		r.stop()
		if t.Failed() {
			b, _ := os.ReadFile(r.log)
			t.Logf("--- controller log (%s) ---\n%s", r.set.name, tail(string(b), 60))
		}
	})
	r.eventually(90*time.Second, "controller ready", func() error {
		select {
		case err := <-r.exited:
			r.exited <- err
			b, _ := os.ReadFile(r.log)
			t.Fatalf("controller exited: %v\n%s", err, tail(string(b), 40))
		default:
		}
		resp, err := http.Get("http://" + r.probe + "/readyz")
		if err != nil {
			return err
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return fmt.Errorf("readyz %d", resp.StatusCode)
		}
		return nil
	})
}

// stop sends SIGTERM (as kubelet does) and waits for the exit: leader
// election's release on cancel and closing watches are part of the run.
func (r *run) stop() {
	if r.cmd == nil || r.cmd.Process == nil {
		return
	}
	select {
	case err := <-r.exited:
		r.exited <- err
		return
	default:
	}
	_ = r.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case err := <-r.exited:
		r.exited <- err
		if err != nil {
			r.t.Errorf("controller exit: %v", err)
		}
	case <-time.After(60 * time.Second):
		_ = r.cmd.Process.Kill()
		r.t.Error("controller did not stop within 60s of SIGTERM")
	}
}

func (r *run) eventually(timeout time.Duration, what string, cond func() error) {
	r.t.Helper()
	deadline := time.Now().Add(timeout)
	var err error
	for time.Now().Before(deadline) {
		if err = cond(); err == nil {
			return
		}
		time.Sleep(100 * time.Millisecond)
	}
	r.t.Fatalf("%s: not true after %s: %v", what, timeout, err)
}

func tail(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// scrape GETs the secure metrics endpoint with a bearer token.
func scrape(addr, token string) (int, error) {
	c := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{
		TLSClientConfig: &tls.Config{InsecureSkipVerify: true}, //nolint:gosec // self-signed test certificate
	}}
	req, _ := http.NewRequest(http.MethodGet, "https://"+addr+"/metrics", nil)
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err := c.Do(req)
	if err != nil {
		return 0, err
	}
	resp.Body.Close()
	return resp.StatusCode, nil
}

// emptyPrometheus answers every query with an empty vector.
func emptyPrometheus(t *testing.T) *httptest.Server {
	s := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		fmt.Fprint(w, `{"status":"success","data":{"resultType":"vector","result":[]}}`)
	}))
	t.Cleanup(s.Close)
	return s
}
