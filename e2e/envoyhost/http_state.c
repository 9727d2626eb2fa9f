//go:build ignore

/*
 * Part of the C test host (one translation unit: host.c includes its parts in order).
 *
 * The HTTP golang filter's per-direction state and the filter manager around it.
 * Mirrors contrib/golang/filters/http/source/processor_state.{h,cc} (FilterState, GolangStatus,
 * ProcessorState, BufferList, addBufferData, handle{Header,Data,Trailer,Golang}Status) and the
 * parts of source/common/http/filter_manager.cc a filter sees (commonContinue,
 * inject{De,En}codedDataToFilterChain, sendLocalReply with Utility::prepareLocalReply).
 */

/* ------------------------------------------------- the golang filter */
/* enum class FilterState (processor_state.h) */
enum {
  FS_WaitingHeader,
  FS_ProcessingHeader,
  FS_WaitingData,
  FS_WaitingAllData,
  FS_ProcessingData,
  FS_WaitingTrailer,
  FS_ProcessingTrailer,
  FS_Done,
};
/* enum class GolangStatus */
enum {
  GS_Running,
  GS_LocalReply,
  GS_Continue,
  GS_StopAndBuffer,
  GS_StopAndBufferWatermark,
  GS_StopNoBuffer,
};
static const char* fs_names[] = {"WaitingHeader", "ProcessingHeader", "WaitingData", "WaitingAllData",
                                 "ProcessingData", "WaitingTrailer", "ProcessingTrailer", "Done"};
static const char* gs_name(uint64_t st) {
  static const char* n[] = {"Running", "LocalReply", "Continue", "StopAndBuffer",
                            "StopAndBufferWatermark", "StopNoBuffer"};
  return st < 6 ? n[st] : "Unknown";
}

enum { DEC = 0, ENC = 1 };

struct HttpReq;
struct Filter;

/* ProcessorState: processState must be first (Go holds processState*) */
typedef struct ProcState {
  processState ps;
  struct HttpReq* hreq;
  HMap* headers;
  HMap* trailers;
  Buf** ddl; /* doDataList */
  int nddl, capddl;
  uint64_t ddl_bytes;
  Buf* data_buffer;
  int end_stream, do_end_stream, watermark_requested;
  /* what the host told Go about headers/trailers (CopyHeaders guard) */
  uint64_t passed_hnum, passed_hbytes, passed_tnum, passed_tbytes;
} ProcState;

/* HttpRequestInternal: httpRequest must be first (Go holds httpRequest*) */
typedef struct HttpReq {
  httpRequest r;
  pthread_mutex_t wmu;    /* guards filter (the weak_ptr<Filter>) */
  struct Filter* filter;  /* NULL until initRequest, NULL again after teardown */
  ProcState dec, enc;
  SB str;                 /* strValue */
  uint64_t id;
  Worker* w;
} HttpReq;

typedef struct Sink {
  int headers_continued, trailers_continued, end;
  HMap* headers;
  Buf* body;
  HMap* trailers;
} Sink;

typedef struct Filter {
  atomic_int refs;
  Worker* w;
  HttpReq* req;
  FilterConfig* cfg;
  RouteCfg* route;
  Spec* spec;
  int bench;
  pthread_mutex_t mu;       /* Filter::mutex_ */
  atomic_int has_destroyed; /* Filter::has_destroyed_ */
  atomic_int gone;          /* weak_ptr<Filter> expired */
  HMap* request_headers_;
  HMap* request_trailers_;
  HMap* act_resp_headers;
  HMap* act_resp_trailers;
  /* the host's filter manager */
  HMap *req_h, *req_t, *resp_h, *resp_t;
  Sink up, down;
  Buf* added[2]; /* add{De,En}codedData */
  int complete[2];
  int resp_started, decode_aborted, stream_ended, request_completed;
  int64_t start_ns, start_real_ns, duration_ns;
  /* mutable stream info */
  int code_has;
  uint64_t code;
  char* details;
  size_t details_n;
  uint64_t bytes_received, bytes_sent;
  DMeta* dmeta;
  int ndmeta;
  KV* fstate;
  int nfstate;
  int drain_upon_completion, route_cache_cleared;
  char* override_host;
  /* local reply record */
  int lr_has, lr_code, lr_direct;
  long long lr_grpc;
  Buf* lr_body;
  HMap* lr_headers;
  char* lr_details;
  const char* lr_phase;
  /* result */
  SB calls;
  int ncalls;
  char err[768];
  int destroy_reason;
  uint64_t last_status;
  const char* last_call;
  int held;      /* a "hold" step parked the stream; RESUME continues it */
  int own_spec;  /* the held stream owns its spec */
  int destroyed; /* onDestroy was called */
} Filter;

static atomic_long g_live_reqs;
static atomic_long g_live_filters;
static atomic_ulong g_req_seq;

static const char* state_str(ProcState* s, char* buf, size_t n) {
  int st = s->ps.state;
  snprintf(buf, n, "%s:%s", s->ps.is_encoding ? "encoder" : "decoder",
           (st >= 0 && st <= 7) ? fs_names[st] : "unknown");
  return buf;
}

static void filter_ref(Filter* f) { atomic_fetch_add(&f->refs, 1); }
static void filter_free(Filter* f);
static void filter_unref(Filter* f) {
  if (atomic_fetch_sub(&f->refs, 1) == 1) filter_free(f);
}
/* weak_ptr<Filter>::lock() */
static Filter* weak_lock(HttpReq* r) {
  pthread_mutex_lock(&r->wmu);
  Filter* f = r->filter;
  if (f) filter_ref(f);
  pthread_mutex_unlock(&r->wmu);
  return f;
}

static void ddl_clear(ProcState* s) {
  for (int i = 0; i < s->nddl; i++) buf_free(s->ddl[i]);
  s->nddl = 0;
  s->ddl_bytes = 0;
}
static void free_http_req(void* p) {
  HttpReq* r = p;
  ddl_clear(&r->dec);
  ddl_clear(&r->enc);
  free(r->dec.ddl);
  free(r->enc.ddl);
  buf_free(r->dec.data_buffer);
  buf_free(r->enc.data_buffer);
  sb_free(&r->str);
  pthread_mutex_destroy(&r->wmu);
  free(r);
  atomic_fetch_sub(&g_live_reqs, 1);
}

static void sink_free(Sink* s) {
  hm_free(s->headers);
  buf_free(s->body);
  hm_free(s->trailers);
}
static void filter_free(Filter* f) {
  hm_free(f->req_h);
  hm_free(f->req_t);
  hm_free(f->resp_h);
  hm_free(f->resp_t);
  sink_free(&f->up);
  sink_free(&f->down);
  buf_free(f->added[0]);
  buf_free(f->added[1]);
  free(f->details);
  for (int i = 0; i < f->ndmeta; i++) {
    free(f->dmeta[i].filter);
    kv_free(f->dmeta[i].fields, f->dmeta[i].nfields);
  }
  free(f->dmeta);
  kv_free(f->fstate, f->nfstate);
  free(f->override_host);
  buf_free(f->lr_body);
  hm_free(f->lr_headers);
  free(f->lr_details);
  sb_free(&f->calls);
  pthread_mutex_destroy(&f->mu);
  if (f->own_spec) spec_free(f->spec);
  free(f);
  atomic_fetch_sub(&g_live_filters, 1);
}

/* key: the property path / value id asked for, when there is one */
static void note_capi_key(const char* api, CAPIStatus st, HttpReq* r, ProcState* s, const char* key,
                          size_t keyn) {
  if (st == CAPIOK || st == CAPIYield) return;
  atomic_fetch_add(&ev_capi_errors, 1);
  if (atomic_load(&ev_quiet)) return;
  SB j = {0};
  char sbuf[64] = "";
  if (s) state_str(s, sbuf, sizeof sbuf);
  sb_printf(&j, "{\"type\":\"capi\",\"api\":\"%s\",\"status\":%d,\"name\":\"%s\",\"state\":\"%s\",\"req\":%" PRIu64 ",\"key\":",
            api, (int)st, capi_name(st), sbuf, r ? r->id : 0);
  json_str(&j, key ? key : "", key ? keyn : 0);
  sb_addc(&j, '}');
  ev_add_raw(j.d);
  sb_free(&j);
}
static void note_capi(const char* api, CAPIStatus st, HttpReq* r, ProcState* s) {
  note_capi_key(api, st, r, s, NULL, 0);
}
static void note_event(const char* what, HttpReq* r) {
  if (atomic_load(&ev_quiet)) return;
  SB j = {0};
  sb_adds(&j, "{\"type\":\"host\",\"msg\":");
  json_strz(&j, what);
  sb_printf(&j, ",\"req\":%" PRIu64 "}", r ? r->id : 0);
  ev_add_raw(j.d);
  sb_free(&j);
}

static void record_call(Filter* f, const char* call, int dir, uint64_t status) {
  f->last_call = call;
  f->last_status = status;
  if (f->bench) return;
  if (f->ncalls++) sb_addc(&f->calls, ',');
  sb_printf(&f->calls, "{\"call\":\"%s\",\"dir\":\"%s\",\"status\":%" PRIu64 ",\"status_name\":\"%s\"}",
            call, dir == DEC ? "decode" : dir == ENC ? "encode" : "stream", status,
            (strcmp(call, "OnHttpHeader") == 0 || strcmp(call, "OnHttpData") == 0 ||
             strcmp(call, "Continue") == 0)
                ? gs_name(status)
                : "");
}

static int is_processing_in_go(ProcState* s) {
  int st = s->ps.state;
  return st == FS_ProcessingHeader || st == FS_ProcessingData || st == FS_ProcessingTrailer ||
         atomic_load(&s->hreq->r.is_golang_processing_log);
}
static int filter_in_go(Filter* f) {
  return is_processing_in_go(&f->req->dec) || is_processing_in_go(&f->req->enc);
}
static ProcState* pstate(Filter* f, int dir) { return dir == DEC ? &f->req->dec : &f->req->enc; }
static int is_buffer_empty(ProcState* s) { return s->data_buffer == NULL || s->data_buffer->len == 0; }
static int is_stream_end(ProcState* s) { return s->end_stream || s->trailers != NULL; }

/* BufferList (processor_state.cc) */
static Buf* ddl_push(ProcState* s, Buf* data) {
  s->ddl_bytes += data->len;
  Buf* b = buf_new();
  buf_move(b, data);
  if (s->nddl == s->capddl) {
    s->capddl = s->capddl ? s->capddl * 2 : 4;
    s->ddl = xrealloc(s->ddl, sizeof(Buf*) * (size_t)s->capddl);
  }
  s->ddl[s->nddl++] = b;
  return b;
}
static void ddl_move_out(ProcState* s, Buf* out) {
  for (int i = 0; i < s->nddl; i++) {
    buf_move(out, s->ddl[i]);
    buf_free(s->ddl[i]);
  }
  s->nddl = 0;
  s->ddl_bytes = 0;
}
static void ddl_clear_latest(ProcState* s) {
  if (!s->nddl) return;
  Buf* b = s->ddl[--s->nddl];
  s->ddl_bytes -= b->len;
  buf_free(b);
}
static int ddl_check_existing(ProcState* s, Buf* b) {
  for (int i = 0; i < s->nddl; i++)
    if (s->ddl[i] == b) return 1;
  return 0;
}

/* ---------------- filter manager model (what Envoy's FilterManager does
 * around this single filter): sinks are the next filter (upstream/router)
 * for decoding and the codec (client) for encoding. */
static HMap* fm_headers(Filter* f, int dir) { return dir == DEC ? f->req_h : f->resp_h; }
static HMap* fm_trailers(Filter* f, int dir) { return dir == DEC ? f->req_t : f->resp_t; }
static Sink* sink_of(Filter* f, int dir) { return dir == DEC ? &f->up : &f->down; }

static void sink_data(Filter* f, int dir, Buf* data, int end);
static void sink_headers(Filter* f, int dir, int end) {
  Sink* k = sink_of(f, dir);
  if (k->headers_continued) return;
  k->headers_continued = 1;
  hm_free(k->headers);
  k->headers = hm_copy(fm_headers(f, dir));
  if (f->added[dir] && f->added[dir]->len) { /* addDecodedData while stopped */
    Buf* a = f->added[dir];
    f->added[dir] = NULL;
    sink_data(f, dir, a, end);
    buf_free(a);
    return;
  }
  if (end) k->end = 1;
}
static void sink_data(Filter* f, int dir, Buf* data, int end) {
  Sink* k = sink_of(f, dir);
  if (!k->headers_continued) sink_headers(f, dir, 0);
  if (!k->body) k->body = buf_new();
  if (dir == ENC && !(f->spec->si[SI_BYTES_SENT].has)) f->bytes_sent += data->len;
  buf_add(k->body, data->d, data->len);
  if (end) k->end = 1;
}
static void sink_trailers(Filter* f, int dir) {
  Sink* k = sink_of(f, dir);
  if (!k->headers_continued) sink_headers(f, dir, 0);
  if (k->trailers_continued) return;
  k->trailers_continued = 1;
  hm_free(k->trailers);
  k->trailers = hm_copy(fm_trailers(f, dir));
  k->end = 1;
}
/* ActiveStreamFilterBase::commonContinue for a filter that never
 * buffers in the FilterManager (it returns StopIterationNoBuffer) */
static void fm_continue(Filter* f, int dir) {
  Sink* k = sink_of(f, dir);
  int has_trailers = fm_trailers(f, dir) != NULL;
  if (!k->headers_continued) sink_headers(f, dir, f->complete[dir] && !has_trailers);
  if (has_trailers && !k->trailers_continued) sink_trailers(f, dir);
}
/* inject{De,En}codedDataToFilterChain */
static void fm_inject(Filter* f, int dir, Buf* data, int end) {
  Sink* k = sink_of(f, dir);
  if (!k->headers_continued) sink_headers(f, dir, 0);
  sink_data(f, dir, data, end);
}

static int filter_decode_headers(Filter* f, HMap* h, int end);
static int filter_encode_headers(Filter* f, HMap* h, int end);
static int filter_encode_data(Filter* f, Buf* data, int end);
static void set_code(Filter* f, uint64_t code) {
  f->code = code;
  f->code_has = 1;
}

/* Grpc::Utility::httpToGrpcStatus */
static long long http_to_grpc_status(int code) {
  switch (code) {
  case 400: return 13;
  case 401: return 16;
  case 403: return 7;
  case 404: return 12;
  case 429:
  case 502:
  case 503:
  case 504: return 14;
  }
  return 2;
}

/* FilterManager::sendLocalReply (+ Utility::prepareLocalReply) */
static void fm_send_local_reply(Filter* f, int dir, int code, const char* body, size_t bodyn,
                                char** hv, int nhv, int has_grpc, long long grpc, const char* details,
                                size_t detn) {
  set_code(f, (uint64_t)code);
  free(f->details);
  f->details = xmemdup(details, detn);
  f->details_n = detn;
  HMap* h = hm_new();
  char tmp[64];
  snprintf(tmp, sizeof tmp, "%d", code);
  hm_add(h, ":status", 7, tmp, strlen(tmp));
  for (int i = 0; i + 1 < nhv; i += 2) /* modify_headers: addCopy if value not empty */
    if (hv[i + 1][0]) hm_add(h, hv[i], strlen(hv[i]), hv[i + 1], strlen(hv[i + 1]));
  HEnt* ct = f->req_h ? hm_get(f->req_h, "content-type", 12) : NULL;
  int is_grpc = ct && ct->vl >= 16 && strncmp(ct->v, "application/grpc", 16) == 0;
  if (is_grpc) {
    hm_set(h, ":status", 7, "200", 3);
    hm_set(h, "content-type", 12, "application/grpc", 16);
    if (!hm_get(h, "grpc-status", 11)) {
      snprintf(tmp, sizeof tmp, "%lld", has_grpc ? grpc : http_to_grpc_status(code));
      hm_add(h, "grpc-status", 11, tmp, strlen(tmp));
    }
    if (bodyn) hm_set(h, "grpc-message", 12, body, bodyn);
    hm_remove(h, "content-length", 14);
    bodyn = 0;
  } else if (bodyn) {
    snprintf(tmp, sizeof tmp, "%zu", bodyn);
    hm_set(h, "content-length", 14, tmp, strlen(tmp));
    if (!hm_get(h, "content-type", 12)) hm_add(h, "content-type", 12, "text/plain", 10);
  } else {
    hm_remove(h, "content-length", 14);
    hm_remove(h, "content-type", 12);
  }
  f->lr_has = 1;
  f->lr_code = code;
  f->lr_grpc = has_grpc ? grpc : -1;
  buf_free(f->lr_body);
  f->lr_body = buf_new();
  buf_add(f->lr_body, body, bodyn);
  hm_free(f->lr_headers);
  f->lr_headers = hm_copy(h);
  free(f->lr_details);
  f->lr_details = xmemdup(details, detn);
  f->lr_phase = dir == DEC ? "decode" : "encode";
  f->decode_aborted = 1; /* the request is not decoded any further */
  if (!f->resp_started) {
    /* sendLocalReplyViaFilterChain: the reply runs through encodeHeaders/
     * encodeData of the filter chain, this filter included */
    f->resp_started = 1;
    hm_free(f->resp_h);
    f->resp_h = h;
    f->complete[ENC] = 1;
    int done = filter_encode_headers(f, h, bodyn == 0);
    if (done) sink_headers(f, ENC, bodyn == 0);
    if (bodyn && !f->stream_ended) {
      Buf* b = buf_new();
      buf_add(b, body, bodyn);
      if (filter_encode_data(f, b, 1)) sink_data(f, ENC, b, 1);
      buf_free(b);
    }
  } else if (!f->down.headers_continued) {
    /* sendDirectLocalReply: headers not yet sent downstream; bypasses filters */
    f->lr_direct = 1;
    Sink* k = &f->down;
    k->headers_continued = 1;
    hm_free(k->headers);
    k->headers = h;
    buf_free(k->body);
    k->body = buf_new();
    buf_add(k->body, body, bodyn);
    k->end = 1;
    f->stream_ended = 1;
  } else {
    hm_free(h);
    snprintf(f->err, sizeof f->err, "local reply after response headers were sent: stream reset");
    f->stream_ended = 1;
  }
}

/* ----------------------------------------- ProcessorState (mirrored) */
static void continue_processing(Filter* f, ProcState* s) { fm_continue(f, s->ps.is_encoding ? ENC : DEC); }
static void inject_data(Filter* f, ProcState* s, Buf* data, int end) {
  fm_inject(f, s->ps.is_encoding ? ENC : DEC, data, end);
}
/* ProcessorState::continueDoData */
static void continue_do_data(Filter* f, ProcState* s) {
  if (!s->end_stream && s->ddl_bytes == 0) return;
  Buf* out = buf_new();
  ddl_move_out(s, out);
  inject_data(f, s, out, s->do_end_stream);
  buf_free(out);
}
static void drain_buffer_data(ProcState* s) {
  if (s->data_buffer && s->data_buffer->len) buf_drain(s->data_buffer, s->data_buffer->len);
}
/* {De,En}codingProcessorState::addBufferData with the watermark callbacks */
static void add_buffer_data(Filter* f, ProcState* s, Buf* data) {
  if (!s->data_buffer) s->data_buffer = buf_new();
  buf_move(s->data_buffer, data);
  uint64_t limit = f->spec->buffer_limit;
  if (limit && s->data_buffer->len > limit) {
    if (s->ps.state == FS_WaitingAllData) {
      if (!s->ps.is_encoding)
        fm_send_local_reply(f, DEC, 413, "Payload Too Large", 17, NULL, 0, 0, 0,
                            "request_payload_too_large", 25);
      else
        fm_send_local_reply(f, ENC, 500, "Internal Server Error", 21, NULL, 0, 0, 0,
                            "response_payload_too_large", 26);
      return;
    }
    s->watermark_requested = 1; /* flow control: nothing to pause here */
  }
}

static int handle_header_status(ProcState* s, uint64_t status) {
  int done = 0;
  switch (status) {
  case GS_LocalReply:
  case GS_Running:
    break;
  case GS_Continue:
    s->ps.state = s->do_end_stream ? FS_Done : FS_WaitingData;
    done = 1;
    break;
  case GS_StopAndBuffer:
    s->ps.state = FS_WaitingAllData;
    break;
  case GS_StopAndBufferWatermark:
    s->ps.state = FS_WaitingData;
    break;
  default:
    note_event("unexpected header status from Go", s->hreq);
    break;
  }
  return done;
}
static int handle_data_status(ProcState* s, uint64_t status) {
  int done = 0;
  switch (status) {
  case GS_LocalReply:
  case GS_Running:
    return 0;
  case GS_Continue:
    s->ps.state = s->do_end_stream ? FS_Done : FS_WaitingData;
    done = 1;
    break;
  case GS_StopAndBuffer:
    if (s->do_end_stream) note_event("want more data while stream is end", s->hreq);
    s->ps.state = FS_WaitingAllData;
    break;
  case GS_StopAndBufferWatermark:
    if (s->do_end_stream) note_event("want more data while stream is end", s->hreq);
    s->ps.state = FS_WaitingData;
    break;
  case GS_StopNoBuffer:
    if (s->do_end_stream) note_event("want more data while stream is end", s->hreq);
    ddl_clear_latest(s);
    s->ps.state = FS_WaitingData;
    break;
  default:
    note_event("unexpected data status from Go", s->hreq);
    break;
  }
  if (s->trailers != NULL && is_buffer_empty(s)) s->ps.state = FS_WaitingTrailer;
  return done;
}
static int handle_trailer_status(ProcState* s, uint64_t status) {
  int done = 0;
  switch (status) {
  case GS_LocalReply:
  case GS_Running:
    break;
  case GS_Continue:
    s->ps.state = FS_Done;
    done = 1;
    break;
  default:
    note_event("unexpected trailer status from Go", s->hreq);
    break;
  }
  return done;
}
static int handle_golang_status(ProcState* s, uint64_t status) {
  switch (s->ps.state) {
  case FS_ProcessingHeader: return handle_header_status(s, status);
  case FS_ProcessingData: return handle_data_status(s, status);
  case FS_ProcessingTrailer: return handle_trailer_status(s, status);
  }
  note_event("handleGolangStatus in unexpected state (Envoy ASSERT)", s->hreq);
  return 0;
}
