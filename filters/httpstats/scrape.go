package httpstats

import (
	"strings"

	"github.com/envoyproxy/envoy/contrib/golang/common/go/api"

	"github.com/leanmesh/leanmesh/filters/panicsafe"
	"github.com/leanmesh/leanmesh/filters/telemetry"
)

// scrapeFilter answers scrape requests with the process-wide exposition. It
// sits alone on a listener the controller adds (see docs/exposition.md).
type scrapeFilter struct {
	api.PassThroughStreamFilter
	cfg *Config
	cb  api.FilterCallbackHandler
}

func (s *scrapeFilter) DecodeHeaders(h api.RequestHeaderMap, endStream bool) (status api.StatusType) {
	defer panicsafe.Recover("ScrapeDecodeHeaders", &status, api.LocalReply, s.replyFailed)
	path := h.Path()
	if i := strings.IndexByte(path, '?'); i >= 0 {
		path = path[:i]
	}
	if path != s.cfg.c.Exposition.Path {
		s.cb.DecoderFilterCallbacks().SendLocalReply(404, "not found; metrics are at "+s.cfg.c.Exposition.Path+"\n", nil, 0, "leanmesh_not_found")
		return api.LocalReply
	}
	// Prometheus' content negotiation: protobuf (with native histograms) only
	// for a scraper that prefers it, the text format otherwise.
	body, contentType := telemetry.ContentShared(nil, h.GetRaw("accept"))
	s.cb.DecoderFilterCallbacks().SendLocalReply(200, string(body),
		map[string][]string{"content-type": {contentType}}, 0, "leanmesh_exposition")
	return api.LocalReply
}

// replyFailed answers a scrape whose exposition panicked.
func (s *scrapeFilter) replyFailed() {
	s.cb.DecoderFilterCallbacks().SendLocalReply(500, "leanmesh: exposition failed\n", nil, 0, "leanmesh_exposition_panic")
}
