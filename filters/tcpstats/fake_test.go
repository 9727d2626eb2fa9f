package tcpstats

import (
	"bufio"
	"bytes"
	"fmt"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/envoyproxy/envoy/contrib/golang/common/go/api"

	"github.com/leanmesh/leanmesh/filters/internal/sdkfake"
	"github.com/leanmesh/leanmesh/filters/pluginconfig"
	"github.com/leanmesh/leanmesh/filters/workloads"
)

// The tests drive the filter through the shared fake of the SDK's API
// (filters/internal/sdkfake); the filter logs through it, no test reads it.
func init() { sdkfake.InstallLog() }

func newCB(local, remote string) api.ConnectionCallback { return sdkfake.NewConn(local, remote) }

var fingerprint atomic.Int64

// testConfig returns a config with its own registry (a unique max_series
// makes a unique fingerprint), scheduler and table.
func testConfig(t testing.TB, direction string, table *workloads.Table) (*Config, *Scheduler) {
	t.Helper()
	js := fmt.Sprintf(`{"direction":%q,"max_series":%d,"tcp_reporting_duration":"5s"}`, direction, 50000+fingerprint.Add(1))
	c, err := pluginconfig.FromJSON([]byte(js))
	if err != nil {
		t.Fatal(err)
	}
	s := NewScheduler(0, 0)
	s.Tick(t0)
	cfg, err := NewConfig(c, Options{Scheduler: s, Table: table})
	if err != nil {
		t.Fatal(err)
	}
	return cfg, s
}

var t0 = time.Unix(1_800_000_000, 0)

// tcpTotals sums each TCP family over the series whose labels contain all
// of match.
type tcpTotals struct{ opened, closed, sent, received uint64 }

func totals(t testing.TB, cfg *Config, match ...string) tcpTotals {
	t.Helper()
	var out tcpTotals
	sc := bufio.NewScanner(bytes.NewReader(cfg.Registry().AppendText(nil)))
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if !strings.HasPrefix(line, "istio_tcp_") {
			continue
		}
		ok := true
		for _, m := range match {
			ok = ok && strings.Contains(line, m)
		}
		if !ok {
			continue
		}
		v, err := strconv.ParseUint(line[strings.LastIndexByte(line, ' ')+1:], 10, 64)
		if err != nil {
			t.Fatalf("%s: %v", line, err)
		}
		switch {
		case strings.HasPrefix(line, "istio_tcp_connections_opened_total{"):
			out.opened += v
		case strings.HasPrefix(line, "istio_tcp_connections_closed_total{"):
			out.closed += v
		case strings.HasPrefix(line, "istio_tcp_sent_bytes_total{"):
			out.sent += v
		case strings.HasPrefix(line, "istio_tcp_received_bytes_total{"):
			out.received += v
		}
	}
	return out
}

func exposition(cfg *Config) string { return string(cfg.Registry().AppendText(nil)) }
