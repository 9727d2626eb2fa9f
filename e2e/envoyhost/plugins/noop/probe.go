package main

import (
	"encoding/base64"
	"fmt"
	"strconv"
	"strings"
	"time"

	"google.golang.org/protobuf/types/known/anypb"

	"github.com/envoyproxy/envoy/contrib/golang/common/go/api"
)

// probe is a test-only HTTP filter: the request header x-probe selects
// behaviours (comma separated) so that one .so can drive every host path.
//
//	mutate      set/add/remove request and response headers (GetRaw too)
//	async       DecodeHeaders returns Running, a goroutine mutates headers and Continues
//	asyncdata   DecodeData (end_stream) returns Running, a goroutine Continues
//	buffer      StopAndBuffer the request body; rewrite it at end_stream
//	localreply  SendLocalReply(403) from DecodeHeaders
//	outofphase  keep the request header map and Set on it in DecodeData (CAPIInvalidPhase)
//	trailers    set a request and a response trailer
//	props       read properties named by x-probe-props (comma separated) in
//	            EncodeHeaders and OnLog; results go to response headers
//	            x-prop-N (base64 of value, or "ERR:<err>") and the Go log
//	dynmeta     SetDynamicMetadata("probe","k","v") then read it back
//	fstate      set/get a string filter state
//	afterdestroy a goroutine calls GetProperty 20ms after OnDestroy
//	stall       DecodeHeaders returns Running and never continues
type probeParser struct{}

func (p *probeParser) Parse(any *anypb.Any, cb api.ConfigCallbackHandler) (interface{}, error) {
	if any != nil && string(any.GetValue()) == "fail" {
		return nil, fmt.Errorf("probe: config asked to fail")
	}
	return any, nil
}

func (p *probeParser) Merge(parent, child interface{}) interface{} { return child }

func probeFactory(config interface{}, cb api.FilterCallbackHandler) api.StreamFilter {
	return &probeFilter{cb: cb}
}

type probeFilter struct {
	api.PassThroughStreamFilter
	cb     api.FilterCallbackHandler
	modes  map[string]bool
	props  []string
	reqHdr api.RequestHeaderMap
}

func (f *probeFilter) DecodeHeaders(h api.RequestHeaderMap, end bool) api.StatusType {
	f.modes = map[string]bool{}
	if v, ok := h.Get("x-probe"); ok {
		for _, m := range strings.Split(v, ",") {
			f.modes[strings.TrimSpace(m)] = true
		}
	}
	if v, ok := h.Get("x-probe-props"); ok && v != "" {
		f.props = strings.Split(v, ",")
	}
	if f.modes["outofphase"] {
		f.reqHdr = h
	}
	if f.modes["mutate"] {
		h.Set("x-probe-req", "1")
		h.Add("x-probe-multi", "a")
		h.Add("x-probe-multi", "b")
		h.Del("x-remove-me")
		h.Set("x-probe-raw", h.GetRaw("x-in")+"|"+strconv.Itoa(int(f.cb.StreamInfo().WorkerID())))
	}
	if f.modes["dynmeta"] {
		f.cb.StreamInfo().DynamicMetadata().Set("probe", "k", "v")
		m := f.cb.StreamInfo().DynamicMetadata().Get("probe")
		h.Set("x-probe-dynmeta", fmt.Sprint(m["k"]))
	}
	if f.modes["fstate"] {
		f.cb.StreamInfo().FilterState().SetString("probe.key", "probe-value", api.StateTypeReadOnly, api.LifeSpanRequest, api.SharedWithUpstreamConnection)
		h.Set("x-probe-fstate", f.cb.StreamInfo().FilterState().GetString("probe.key"))
	}
	if f.modes["localreply"] {
		f.cb.DecoderFilterCallbacks().SendLocalReply(403, "denied by probe", map[string][]string{"x-lr": {"1"}}, 0, "probe_denied")
		return api.LocalReply
	}
	if f.modes["stall"] {
		return api.Running
	}
	if f.modes["async"] {
		go func() {
			time.Sleep(2 * time.Millisecond)
			h.Set("x-probe-async", "done") // off the worker: Envoy posts it to the dispatcher
			f.cb.DecoderFilterCallbacks().Continue(api.Continue)
		}()
		return api.Running
	}
	if f.modes["buffer"] && !end {
		return api.StopAndBuffer
	}
	return api.Continue
}

func (f *probeFilter) DecodeData(buf api.BufferInstance, end bool) api.StatusType {
	if f.modes["outofphase"] && f.reqHdr != nil {
		f.reqHdr.Set("x-too-late", "1") // CAPIInvalidPhase: panics, SDK answers 500
	}
	if f.modes["buffer"] && end {
		if err := buf.SetString(buf.String() + "+probe"); err != nil {
			f.cb.DecoderFilterCallbacks().SendLocalReply(500, "probe: SetString: "+err.Error(), nil, 0, "probe_buffer")
			return api.LocalReply
		}
	}
	if f.modes["asyncdata"] && end {
		go func() {
			time.Sleep(2 * time.Millisecond)
			f.cb.DecoderFilterCallbacks().Continue(api.Continue)
		}()
		return api.Running
	}
	return api.Continue
}

func (f *probeFilter) DecodeTrailers(t api.RequestTrailerMap) api.StatusType {
	if f.modes["trailers"] {
		t.Set("x-probe-req-trailer", "1")
	}
	return api.Continue
}

func (f *probeFilter) EncodeHeaders(h api.ResponseHeaderMap, end bool) api.StatusType {
	if f.modes["mutate"] {
		h.Set("x-probe-resp", "1")
		h.Del("x-resp-remove-me")
	}
	for i, p := range f.props {
		v, err := f.cb.GetProperty(p)
		if err != nil {
			h.Set("x-prop-"+strconv.Itoa(i), "ERR:"+err.Error())
		} else {
			h.Set("x-prop-"+strconv.Itoa(i), base64.StdEncoding.EncodeToString([]byte(v)))
		}
	}
	return api.Continue
}

func (f *probeFilter) EncodeData(buf api.BufferInstance, end bool) api.StatusType {
	if f.modes["buffer"] && end {
		if err := buf.AppendString("+resp"); err != nil {
			f.cb.EncoderFilterCallbacks().SendLocalReply(500, "probe: AppendString: "+err.Error(), nil, 0, "probe_buffer")
			return api.LocalReply
		}
	}
	return api.Continue
}

func (f *probeFilter) EncodeTrailers(t api.ResponseTrailerMap) api.StatusType {
	if f.modes["trailers"] {
		t.Set("x-probe-resp-trailer", "1")
	}
	return api.Continue
}

func (f *probeFilter) OnLog(reqHdr api.RequestHeaderMap, _ api.RequestTrailerMap, respHdr api.ResponseHeaderMap, _ api.ResponseTrailerMap) {
	if f.modes == nil {
		return
	}
	var sb strings.Builder
	sb.WriteString("probe-onlog")
	code, _ := f.cb.StreamInfo().ResponseCode()
	fmt.Fprintf(&sb, " code=%d", code)
	if respHdr != nil {
		st, _ := respHdr.Get(":status")
		fmt.Fprintf(&sb, " status=%s", st)
	}
	for _, p := range f.props {
		v, err := f.cb.GetProperty(p)
		if err != nil {
			fmt.Fprintf(&sb, " %s=ERR:%v", p, err)
		} else {
			fmt.Fprintf(&sb, " %s=%s", p, base64.StdEncoding.EncodeToString([]byte(v)))
		}
	}
	api.LogInfo(sb.String())
}

func (f *probeFilter) OnDestroy(reason api.DestroyReason) {
	if f.modes["afterdestroy"] {
		cb := f.cb
		go func() {
			defer func() {
				if e := recover(); e != nil {
					api.LogInfof("probe-afterdestroy panic: %v", e)
				}
			}()
			time.Sleep(20 * time.Millisecond)
			_, err := cb.GetProperty("request.path")
			api.LogInfof("probe-afterdestroy err: %v", err)
		}()
	}
}
