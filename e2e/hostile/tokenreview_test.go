package hostile

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	authenticationv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	"github.com/leanmesh/leanmesh/controller/api/v1alpha1"
	"github.com/leanmesh/leanmesh/controller/workloadtable"
	"github.com/leanmesh/leanmesh/e2e/cluster"
	"github.com/leanmesh/leanmesh/filters/workloads"
)

// openWorkloadStream opens one workload-table stream with token as the
// leanmesh-tcp filter does (delta ADS, bearer token in the metadata) and
// returns the status code it ends with: OK once the first response
// arrived, PermissionDenied for a refused token, Unavailable when the
// controller's TokenReview budget is spent.
func openWorkloadStream(conn *grpc.ClientConn, token string) codes.Code {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	ctx = metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer "+token)
	st, err := discoveryv3.NewAggregatedDiscoveryServiceClient(conn).DeltaAggregatedResources(ctx)
	if err == nil {
		err = st.Send(&discoveryv3.DeltaDiscoveryRequest{Node: &corev3.Node{Id: "sidecar~10.244.2.9~frontend-0.shop~shop.svc.cluster.local"},
			TypeUrl: workloads.TypeURL, ResourceNamesSubscribe: []string{"*"}})
	}
	if err == nil || errors.Is(err, io.EOF) {
		// io.EOF from Send: the server already ended the stream; Recv
		// returns its status.
		_, err = st.Recv()
	}
	return status.Code(err)
}

// TestTokenReviewCacheOnRealAPIServer: the real controller binary serves
// the workload table (--workload-table) against a real kube-apiserver
// whose audit log records every request. Streams opened with real
// service-account tokens (TokenRequest, audience istio-ca) cost the API
// server one TokenReview per token per TTL, not one per stream; a flood of
// distinct bad tokens is capped by the review rate limit (callers get
// Unavailable and retry); and the denials reach the controller's log at
// most 5 times, then once per 10 s.
func TestTokenReviewCacheOnRealAPIServer(t *testing.T) {
	ctx := context.Background()
	env := cluster.StartT(t, cluster.Options{CRDPaths: []string{"../../config/crd/bases"}, Scheme: v1alpha1.AddToScheme, Audit: true})
	for _, ns := range []string{controllerNS, shop} {
		if err := env.CreateNamespace(ctx, ns, nil); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := env.CreateWorkload(ctx, cluster.Workload{Namespace: shop, Name: "reviews", IP: "10.244.2.12", Ports: []cluster.Port{{Name: "tcp", Port: 9080}}}); err != nil {
		t.Fatal(err)
	}
	if err := env.Client.Create(ctx, &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Namespace: shop, Name: "frontend"}}); err != nil {
		t.Fatal(err)
	}
	cs, err := kubernetes.NewForConfig(env.Config)
	if err != nil {
		t.Fatal(err)
	}
	tr, err := cs.CoreV1().ServiceAccounts(shop).CreateToken(ctx, "frontend", &authenticationv1.TokenRequest{
		Spec: authenticationv1.TokenRequestSpec{Audiences: []string{workloadtable.DefaultAudience}}}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	good := tr.Status.Token
	wtAddr := freeAddr(t)
	p := startController(t, env, "tokenreview", "--lazyxds-als-plaintext", "--leader-elect=false",
		"--workload-table", "--workload-table-plaintext", "--workload-table-address", wtAddr)
	conn, err := grpc.NewClient(wtAddr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	// The table is served once the controller's informers synced.
	deadline := time.Now().Add(2 * time.Minute)
	for !serving(wtAddr) {
		if time.Now().After(deadline) {
			t.Fatalf("workload table not served\n%s", tail(p.logPath, 30))
		}
		time.Sleep(100 * time.Millisecond)
	}

	reviews := func() int {
		t.Helper()
		evs, err := env.AuditEvents("leanmesh-admin")
		if err != nil {
			t.Fatal(err)
		}
		n := 0
		for _, ev := range evs {
			if ev.Verb == "create" && ev.ObjectRef != nil && ev.ObjectRef.Resource == "tokenreviews" {
				n++
			}
		}
		return n
	}
	denialLines := func() int {
		b, err := os.ReadFile(p.logPath)
		if err != nil {
			t.Fatal(err)
		}
		return strings.Count(string(b), "workload stream denied")
	}
	// phase opens n streams, `parallel` at a time, with token(i), and
	// returns the outcomes, the TokenReviews the API server saw and how long
	// it took.
	phase := func(name string, n, parallel int, token func(i int) string) (map[codes.Code]int, int, time.Duration) {
		t.Helper()
		before := reviews()
		start := time.Now()
		var mu sync.Mutex
		out := map[codes.Code]int{}
		work := make(chan int)
		var wg sync.WaitGroup
		for range parallel {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for i := range work {
					c := openWorkloadStream(conn, token(i))
					mu.Lock()
					out[c]++
					mu.Unlock()
				}
			}()
		}
		for i := range n {
			work <- i
		}
		close(work)
		wg.Wait()
		took := time.Since(start)
		got := reviews() - before
		t.Logf("%-48s %4d streams in %6s: %v; TokenReviews sent to the API server: %d", name, n, took.Round(time.Millisecond), out, got)
		return out, got, took
	}

	// Until a first stream is served, the controller may still be syncing:
	// that first review is counted with the phase.
	out, got, took := phase("one valid token, 50 streams", 50, 1, func(int) string { return good })
	if out[codes.OK] != 50 {
		t.Errorf("valid token: %v, want 50 served", out)
	}
	if limit := 1 + int(took/(30*time.Second)); got > limit {
		t.Errorf("valid token: %d TokenReviews for 50 streams in %s, want ≤ %d (cached 30 s)", got, took, limit)
	}

	logsBefore := denialLines()
	denialStart := time.Now()
	out, got, took = phase("one refused token, 200 streams", 200, 4, func(int) string { return good + "x" })
	if out[codes.PermissionDenied] != 200 {
		t.Errorf("refused token: %v, want 200 PermissionDenied", out)
	}
	if limit := 1 + int(took/(5*time.Second)); got > limit {
		t.Errorf("refused token: %d TokenReviews for 200 streams in %s, want ≤ %d (refusals cached 5 s)", got, took, limit)
	}

	out, got, took = phase("300 distinct bad tokens, 8 at a time", 300, 8, func(i int) string { return fmt.Sprintf("not-a-token-%d", i) })
	if out[codes.PermissionDenied]+out[codes.Unavailable] != 300 {
		t.Errorf("bad tokens: %v, want every stream refused", out)
	}
	// 20 reviews/s, burst 50 (CachedReviewer's defaults); one second of slack.
	if limit := 50 + int(20*(took.Seconds()+1)); got > limit {
		t.Errorf("bad tokens: %d TokenReviews in %s, over the rate limit (≤ %d)", got, took, limit)
	}
	if got != out[codes.PermissionDenied] {
		t.Errorf("bad tokens: %d reviewed but %d refused as PermissionDenied", got, out[codes.PermissionDenied])
	}
	if out[codes.Unavailable] == 0 {
		t.Errorf("bad tokens: none was held back by the rate limit: %v", out)
	}

	// A caller that keeps trying for 12 s (one refused stream every 50 ms,
	// the refusal cached): denied every time, logged rarely.
	persistent := 0
	for start := time.Now(); time.Since(start) < 12*time.Second; persistent++ {
		if c := openWorkloadStream(conn, good+"x"); c != codes.PermissionDenied {
			t.Fatalf("persistent bad caller: %v", c)
		}
		time.Sleep(50 * time.Millisecond)
	}

	// The first 5 denials are logged, then at most one per 10 s.
	time.Sleep(time.Second) // the log is written by another process
	lines, elapsed := denialLines()-logsBefore, time.Since(denialStart)
	denied := 200 + out[codes.PermissionDenied] + persistent
	limit := 5 + int(elapsed/(10*time.Second))
	t.Logf("denials: %d streams refused for their token in %s; %d log lines (allowed: the first 5, then one per 10 s: %d)",
		denied, elapsed.Round(time.Millisecond), lines, limit)
	if lines > limit || lines < 6 {
		t.Errorf("%d denial log lines for %d denials in %s, want 6..%d (5, then one after 10 s)", lines, denied, elapsed, limit)
	}
}
