package tcpstats

import (
	"bufio"
	"bytes"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/envoyproxy/envoy/contrib/golang/common/go/api"

	"github.com/leanmesh/leanmesh/filters/pluginconfig"
	"github.com/leanmesh/leanmesh/filters/workloads"
)

// Fakes of the SDK's pure-Go network API. StreamInfo embeds a nil interface
// so that every method the SDK leaves unimplemented panics here too.

type fakeLog struct {
	mu   sync.Mutex
	msgs []string
}

func (l *fakeLog) Log(level api.LogType, msg string) {
	l.mu.Lock()
	l.msgs = append(l.msgs, msg)
	l.mu.Unlock()
}
func (l *fakeLog) LogLevel() api.LogType { return api.Trace }

var testLog = &fakeLog{}

func init() { api.SetCommonCAPI(testLog) }

type fakeInfo struct {
	api.StreamInfo // nil: unimplemented methods panic as in the SDK
	local, remote  string
	panicAddr      bool
}

func (i *fakeInfo) UpstreamLocalAddress() (string, bool) {
	if i.panicAddr {
		panic("implement me")
	}
	return i.local, true
}
func (i *fakeInfo) UpstreamRemoteAddress() (string, bool) { return i.remote, true }

type fakeCB struct{ info *fakeInfo }

func (c *fakeCB) StreamInfo() api.StreamInfo    { return c.info }
func (c *fakeCB) Write([]byte, bool)            { panic("the filter must not write") }
func (c *fakeCB) Close(api.ConnectionCloseType) { panic("the filter must not close") }
func (c *fakeCB) EnableHalfClose(enabled bool)  { panic("downstream") }
func newCB(local, remote string) api.ConnectionCallback {
	return &fakeCB{&fakeInfo{local: local, remote: remote}}
}

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
