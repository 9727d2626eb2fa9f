package httpstats

import (
	"strings"
	"testing"

	"github.com/leanmesh/leanmesh/filters/internal/sdkfake"
)

// The tests drive the filter through the shared fake of the SDK's API
// (filters/internal/sdkfake); the real C boundary is e2e/envoyhost's.
var testLog = sdkfake.InstallLog()

type (
	headers  = sdkfake.Headers
	trailers = sdkfake.Trailers
	stream   = sdkfake.Stream
)

func newHeaders(kv ...string) *headers { return sdkfake.NewHeaders(kv...) }

func mustNoPanicLog(t *testing.T) {
	t.Helper()
	for _, m := range testLog.Messages() {
		if strings.Contains(m, "panic") {
			t.Errorf("unexpected panic log: %s", m)
		}
	}
}
