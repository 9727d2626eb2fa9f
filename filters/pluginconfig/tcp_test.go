package pluginconfig

import (
	"strings"
	"testing"
)

func TestTCPSection(t *testing.T) {
	cases := []struct {
		json    string
		wantErr string // "" means valid
	}{
		{`{"direction":"inbound"}`, ""},
		{`{"direction":"inbound","tcp":{}}`, ""},
		{`{"direction":"outbound","tcp":{"workload_discovery":{"address":"127.0.0.1:15012","plaintext":true}}}`, ""},
		{`{"direction":"outbound","tcp":{"workload_discovery":{"address":"lm.leanmesh-system:15012","ca":"/etc/ca.pem","token_path":"/t"}}}`, ""},
		{`{"direction":"outbound","tcp":{"workload_discovery":{"address":"nohostport","plaintext":true}}}`, `"tcp.workload_discovery.address"`},
		{`{"direction":"outbound","tcp":{"workload_discovery":{"address":"a:1"}}}`, `exactly one of ca and plaintext`},
		{`{"direction":"outbound","tcp":{"workload_discovery":{"address":"a:1","ca":"/c","plaintext":true}}}`, `exactly one of ca and plaintext`},
		{`{"direction":"outbound","tcp":{"workload_discovery":{"address":"a:1","plaintext":true,"max_entries":-1}}}`, `max_entries`},
		{`{"direction":"outbound","tcp":{"workload_discovery":{"address":"a:1","plaintext":true,"bogus":1}}}`, `bogus`},
	}
	for _, c := range cases {
		_, err := FromJSON([]byte(c.json))
		switch {
		case c.wantErr == "" && err != nil:
			t.Errorf("%s: %v", c.json, err)
		case c.wantErr != "" && (err == nil || !strings.Contains(err.Error(), c.wantErr)):
			t.Errorf("%s: error %v, want one naming %s", c.json, err, c.wantErr)
		}
	}
}
