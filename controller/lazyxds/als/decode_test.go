package als

import (
	"testing"

	accesslogdatav3 "github.com/envoyproxy/go-control-plane/envoy/data/accesslog/v3"
	accesslogv3 "github.com/envoyproxy/go-control-plane/envoy/service/accesslog/v3"
	"google.golang.org/protobuf/proto"

	"github.com/leanmesh/leanmesh/filters/peer"
)

func marshalEntries(t testing.TB, entries ...*accesslogdatav3.HTTPAccessLogEntry) ([]byte, error) {
	return proto.Marshal(&accesslogv3.StreamAccessLogsMessage{
		Identifier: &accesslogv3.StreamAccessLogsMessage_Identifier{Node: egressNode, LogName: "leanmesh-lazy"},
		LogEntries: &accesslogv3.StreamAccessLogsMessage_HttpLogs{HttpLogs: &accesslogv3.StreamAccessLogsMessage_HTTPAccessLogEntries{LogEntry: entries}}})
}

// FuzzDecodeMatchesTyped checks the wire decoder against go-control-plane's
// generated types on Envoy-shaped entries with arbitrary field contents.
func FuzzDecodeMatchesTyped(f *testing.F) {
	f.Add("10.0.0.1", "outbound|9080|v1|reviews.bookinfo.svc.cluster.local", "reviews:9080", "sidecar~10.0.0.1~p.ns~ns.svc.cluster.local", false)
	f.Add("", "", "", "", true)
	f.Add("::ffff:10.0.0.1", "PassthroughCluster", "[fd00::1]:80", "", false)
	f.Fuzz(func(t *testing.T, caller, cluster, authority, peerID string, noCommon bool) {
		e := entry(caller, cluster, authority)
		e.Request.RequestHeaders = map[string]string{"x-other": peerID, peer.HeaderMetadataID: peerID}
		if noCommon {
			e.CommonProperties = nil
		}
		b, err := marshalEntries(t, e, e)
		if err != nil {
			t.Skip() // invalid UTF-8: Envoy cannot send it either
		}
		want := typedFields(e)
		n := 0
		if _, err := decodeMessage(b, newInterner(DefaultInternerBytes), func(got fields) {
			n++
			if got != want {
				t.Fatalf("wire %+v != typed %+v", got, want)
			}
		}); err != nil {
			t.Fatal(err)
		}
		if n != 2 {
			t.Fatalf("decoded %d entries, want 2", n)
		}
	})
}

// FuzzDecodeRaw feeds arbitrary bytes: errors are fine, panics and hangs are not.
func FuzzDecodeRaw(f *testing.F) {
	b, _ := marshalEntries(f, entry("10.0.0.1", "outbound|80||a.b.svc.cluster.local", "a.b"))
	f.Add(b)
	f.Add([]byte{0x12, 0xff, 0x01})
	f.Fuzz(func(t *testing.T, b []byte) {
		_, _ = decodeMessage(b, newInterner(DefaultInternerBytes), func(fields) {})
	})
}
