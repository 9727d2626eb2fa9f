package lazyxdsctl

import (
	"bytes"
	"context"
	"fmt"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	corev1ac "k8s.io/client-go/applyconfigurations/core/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/leanmesh/leanmesh/controller/api/v1alpha1"
	"github.com/leanmesh/leanmesh/controller/lazyxds"
)

// Persistence: one ConfigMap in the controller's namespace, binaryData
// SnapshotKey = lazyxds.Snapshot.Marshal(). Not the LazyXDS status: learned
// dependencies cannot be recomputed from the cluster (status should be), they
// span policies (one blob, one write per flush instead of one per policy), and
// status is routinely rewritten by other tools (kubectl replace, backups).

// maxSnapshotBytes keeps the ConfigMap under the API server's 1 MiB object
// limit with room for metadata. At ~6–10 bytes per dependency that is about
// 100,000 dependencies.
const maxSnapshotBytes = 900 << 10

// restore loads the snapshot into the graph. Missing is fine (first start);
// unreadable is an error: overwriting it would lose what it holds.
func (l *Loop) restore(ctx context.Context) (int, error) {
	var cm corev1.ConfigMap
	err := l.api.Get(ctx, client.ObjectKey{Namespace: l.opts.Namespace, Name: l.opts.ConfigMapName}, &cm)
	if apierrors.IsNotFound(err) {
		return 0, nil
	}
	if err != nil {
		return 0, fmt.Errorf("lazyxds: reading snapshot ConfigMap %s/%s: %w", l.opts.Namespace, l.opts.ConfigMapName, err)
	}
	raw := cm.BinaryData[SnapshotKey]
	if len(raw) == 0 {
		return 0, nil
	}
	snap, err := lazyxds.UnmarshalSnapshot(raw)
	if err != nil {
		return 0, fmt.Errorf("lazyxds: ConfigMap %s/%s: %w (move it aside to start empty)", l.opts.Namespace, l.opts.ConfigMapName, err)
	}
	if err := l.graph.Restore(snap); err != nil {
		return 0, err
	}
	l.persistedRaw, l.persisted, l.lastPersist = raw, depSet(snap), time.Now()
	n := 0
	for _, w := range snap.Deps {
		n += len(w.Deps)
	}
	return n, nil
}

// persist writes the graph's snapshot when its bytes changed. On success,
// everything in it is acknowledged.
func (l *Loop) persist(ctx context.Context) error {
	snap := l.graph.Snapshot()
	raw, err := snap.Marshal()
	if err != nil {
		return err
	}
	l.lastPersist = time.Now()
	if bytes.Equal(raw, l.persistedRaw) {
		l.persisted = depSet(snap)
		return nil
	}
	if len(raw) > maxSnapshotBytes {
		err := fmt.Errorf("lazyxds: snapshot is %d bytes, over the %d-byte ConfigMap budget; new dependencies are not applied", len(raw), maxSnapshotBytes)
		l.persistFailed = err.Error()
		l.metrics.persist("failed", len(l.persistedRaw))
		return err
	}
	cm := corev1ac.ConfigMap(l.opts.ConfigMapName, l.opts.Namespace).
		WithLabels(map[string]string{v1alpha1.LabelManagedBy: v1alpha1.ManagedBy, v1alpha1.LabelComponent: "lazyxds-state"}).
		WithAnnotations(map[string]string{"leanmesh.io/snapshot-format": fmt.Sprintf("v%d gzip json", lazyxds.SnapshotVersion)}).
		WithBinaryData(map[string][]byte{SnapshotKey: raw})
	if err := l.c.Apply(ctx, cm, client.FieldOwner(v1alpha1.FieldOwner), client.ForceOwnership); err != nil {
		l.persistFailed = err.Error()
		l.metrics.persist("failed", len(l.persistedRaw))
		return fmt.Errorf("lazyxds: writing snapshot: %w", err)
	}
	l.persistFailed = ""
	l.persistedRaw, l.persisted = raw, depSet(snap)
	l.metrics.persist("written", len(raw))
	l.markStatus() // dependency counts come from the acknowledged set
	return nil
}

func depSet(s lazyxds.Snapshot) map[lazyxds.WorkloadKey]map[string]bool {
	out := make(map[lazyxds.WorkloadKey]map[string]bool, len(s.Deps))
	for _, w := range s.Deps {
		ns, name, _ := strings.Cut(w.Workload, "/")
		set := make(map[string]bool, len(w.Deps))
		for _, d := range w.Deps {
			if d[0] >= 0 && d[0] < int64(len(s.Hosts)) {
				set[s.Hosts[d[0]]] = false
			}
		}
		for _, i := range w.Seeded {
			if i >= 0 && i < int64(len(s.Hosts)) {
				set[s.Hosts[i]] = true
			}
		}
		out[lazyxds.WorkloadKey{Namespace: ns, Name: name}] = set
	}
	return out
}

// acknowledged reports whether every dependency of a change is persisted.
func (l *Loop) acknowledged(k lazyxds.WorkloadKey, deps []lazyxds.Dependency) bool {
	set := l.persisted[k]
	for _, d := range deps {
		if _, ok := set[d.Host]; !ok {
			return false
		}
	}
	return true
}
