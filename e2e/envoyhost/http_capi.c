//go:build ignore

/*
 * Part of the C test host (one translation unit: host.c includes its parts in order).
 *
 * Host functions the Go side calls for HTTP (Go->C): continue, local replies, data, headers,
 * trailers, buffers, upstream override host, route cache.
 * Mirrors contrib/golang/filters/http/source/cgo.cc (envoyGoFilterHttp*, the
 * envoyGoFilterHandlerWrapper / envoyGoFilterProcessStateHandlerWrapper checks) and the Filter::
 * methods of golang_filter.cc they call (continueStatus, sendLocalReply, addData, injectData,
 * getHeader, copyHeaders, setHeader, removeHeader, copyTrailers, copyBuffer, drainBuffer,
 * setBufferHelper, setUpstreamOverrideHost, clearRouteCache).
 */

/* ------------------------------------------- host functions: HTTP (cgo.cc) */
/* the string a getStringValue / getStringProperty answer points Go at */
static void set_str(HttpReq* r, const char* p, size_t n) {
  sb_reset(&r->str);
  sb_add(&r->str, p ? p : "", p ? n : 0);
}

static CAPIStatus ret_note(const char* api, CAPIStatus st, HttpReq* r, ProcState* s) {
  note_capi(api, st, r, s);
  return st;
}
/* envoyGoFilterProcessStateHandlerWrapper */
#define PS_WRAP(api)                                                    \
  ProcState* s = (ProcState*)sp;                                        \
  if (!is_processing_in_go(s)) return ret_note(api, CAPINotInGo, s->hreq, s); \
  Filter* f = weak_lock(s->hreq);                                       \
  if (!f) return ret_note(api, CAPIFilterIsGone, s->hreq, s);
/* envoyGoFilterHandlerWrapper */
#define REQ_WRAP(api)                                                   \
  HttpReq* hr = (HttpReq*)rp;                                           \
  Filter* f = weak_lock(hr);                                            \
  if (!f) return ret_note(api, CAPIFilterIsGone, hr, NULL);             \
  if (!filter_in_go(f)) {                                               \
    filter_unref(f);                                                    \
    return ret_note(api, CAPINotInGo, hr, NULL);                        \
  }
#define DONE(api, st)                       \
  do {                                      \
    CAPIStatus _st = (st);                  \
    filter_unref(f);                        \
    return ret_note(api, _st, s->hreq, s);  \
  } while (0)
#define RDONE(api, st)                   \
  do {                                   \
    CAPIStatus _st = (st);               \
    filter_unref(f);                     \
    return ret_note(api, _st, hr, NULL); \
  } while (0)

/* Filter::continueStatus */
CAPIStatus envoyGoFilterHttpContinue(void* sp, int status) {
  xcount(X_HttpContinue);
  PS_WRAP("HttpContinue");
  if (has_destroyed(f)) DONE("HttpContinue", CAPIFilterIsDestroy);
  if (!is_processing_in_go(s)) DONE("HttpContinue", CAPINotInGo);
  ContArgs* a = xmalloc(sizeof *a);
  a->f = f;
  a->s = s;
  a->status = (uint64_t)status;
  filter_ref(f);
  post(f->w, task_continue, a); /* always posted (see #44704) */
  DONE("HttpContinue", CAPIOK);
}

/* Filter::sendLocalReply */
static CAPIStatus send_local_reply(Filter* f, ProcState* s, int code, const char* body, size_t bl,
                                   GoString* hv, int hn, long long grpc, const char* det, size_t dl) {
  if (has_destroyed(f)) return CAPIFilterIsDestroy;
  if (!is_processing_in_go(s)) return CAPINotInGo;
  LRArgs* a = xcalloc(1, sizeof *a);
  a->f = f;
  a->s = s;
  a->code = code;
  a->body = xmemdup(body, bl); /* copyStringFromGoPointer */
  a->bodyn = bl;
  a->nhv = hn;
  a->hv = xcalloc((size_t)hn + 1, sizeof(char*));
  for (int i = 0; i < hn; i++) a->hv[i] = xmemdup(hv[i].p, (size_t)hv[i].n); /* stringsFromGoSlice */
  a->grpc = grpc;
  a->details = xmemdup(det, dl);
  a->detn = dl;
  filter_ref(f);
  post(f->w, task_local_reply, a); /* always posted */
  return CAPIOK;
}
CAPIStatus envoyGoFilterHttpSendLocalReply(void* sp, int response_code, void* body_text_data,
                                           int body_text_len, void* headers, int headers_num,
                                           long long int grpc_status, void* details_data,
                                           int details_len) {
  xcount(X_HttpSendLocalReply);
  PS_WRAP("HttpSendLocalReply");
  DONE("HttpSendLocalReply",
       send_local_reply(f, s, response_code, body_text_data, (size_t)body_text_len, headers, headers_num,
                        grpc_status, details_data, (size_t)details_len));
}
/* Filter::sendPanicReply */
CAPIStatus envoyGoFilterHttpSendPanicReply(void* sp, void* details_data, int details_len) {
  xcount(X_HttpSendPanicReply);
  PS_WRAP("HttpSendPanicReply");
  SB m = {0};
  sb_printf(&m, "[go_plugin_http][%s] filter paniced with error details: %.*s", f->cfg->plugin_name,
            details_len, (const char*)details_data);
  note_event(m.d, s->hreq);
  sb_free(&m);
  static const char body[] = "error happened in filter\r\n";
  DONE("HttpSendPanicReply",
       send_local_reply(f, s, 500, body, sizeof(body) - 1, NULL, 0, 0 /* Ok */, "", 0));
}

static void fm_add_data(Filter* f, int dir, const char* d, size_t n) {
  Sink* k = sink_of(f, dir);
  if (!k->headers_continued) {
    if (!f->added[dir]) f->added[dir] = buf_new();
    buf_add(f->added[dir], d, n);
  } else {
    Buf* b = buf_new();
    buf_add(b, d, n);
    sink_data(f, dir, b, 0);
    buf_free(b);
  }
}
typedef struct DataArgs {
  Filter* f;
  ProcState* s;
  char* d;
  size_t n;
  int inject;
} DataArgs;
static void task_add_data(void* arg) {
  DataArgs* a = arg;
  if (!weak_expired(a->f) && !has_destroyed(a->f)) {
    int dir = a->s->ps.is_encoding ? ENC : DEC;
    if (a->inject) {
      Buf* b = buf_new();
      buf_add(b, a->d, a->n);
      inject_data(a->f, a->s, b, 0);
      buf_free(b);
    } else {
      fm_add_data(a->f, dir, a->d, a->n);
    }
  }
  filter_unref(a->f);
  free(a->d);
  free(a);
}
/* Filter::addData */
CAPIStatus envoyGoFilterHttpAddData(void* sp, void* data, int data_len, bool is_streaming) {
  xcount(X_HttpAddData);
  (void)is_streaming;
  PS_WRAP("HttpAddData");
  if (s->ps.state == FS_ProcessingData) DONE("HttpAddData", CAPIInvalidPhase);
  if (has_destroyed(f)) DONE("HttpAddData", CAPIFilterIsDestroy);
  if (!is_processing_in_go(s)) DONE("HttpAddData", CAPINotInGo);
  if (is_thread_safe(f->w)) {
    fm_add_data(f, s->ps.is_encoding ? ENC : DEC, data, (size_t)data_len);
    DONE("HttpAddData", CAPIOK);
  }
  DataArgs* a = xcalloc(1, sizeof *a);
  a->f = f;
  a->s = s;
  a->d = xmemdup(data, (size_t)data_len);
  a->n = (size_t)data_len;
  filter_ref(f);
  post(f->w, task_add_data, a);
  DONE("HttpAddData", CAPIYield);
}
/* Filter::injectData */
CAPIStatus envoyGoFilterHttpInjectData(void* sp, void* data, int data_len) {
  xcount(X_HttpInjectData);
  PS_WRAP("HttpInjectData");
  if (has_destroyed(f)) DONE("HttpInjectData", CAPIFilterIsDestroy);
  if (!is_processing_in_go(s)) DONE("HttpInjectData", CAPINotInGo);
  if (s->ps.state != FS_ProcessingData) DONE("HttpInjectData", CAPIInvalidPhase);
  if (is_thread_safe(f->w)) DONE("HttpInjectData", CAPIInvalidScene);
  DataArgs* a = xcalloc(1, sizeof *a);
  a->f = f;
  a->s = s;
  a->d = xmemdup(data, (size_t)data_len);
  a->n = (size_t)data_len;
  a->inject = 1;
  filter_ref(f);
  post(f->w, task_add_data, a);
  DONE("HttpInjectData", CAPIOK);
}

/* Filter::getHeader */
CAPIStatus envoyGoFilterHttpGetHeader(void* sp, void* key_data, int key_len, uint64_t* value_data,
                                      int* value_len) {
  xcount_key(X_HttpGetHeader, key_data, (size_t)key_len);
  PS_WRAP("HttpGetHeader");
  pthread_mutex_lock(&f->mu);
  CAPIStatus st = CAPIOK;
  if (has_destroyed(f))
    st = CAPIFilterIsDestroy;
  else if (!is_processing_in_go(s))
    st = CAPINotInGo;
  else if (!s->headers)
    st = CAPIInvalidPhase;
  else {
    HEnt* e = hm_get(s->headers, key_data, (size_t)key_len);
    if (e) {
      *value_data = (uint64_t)(uintptr_t)e->v;
      *value_len = (int)e->vl;
    }
  }
  pthread_mutex_unlock(&f->mu);
  DONE("HttpGetHeader", st);
}
/* copyHeaderMapToGo; the host refuses to write more than it announced to
 * Go (Envoy would overrun Go's buffer) and reports it */
static CAPIStatus copy_map_to_go(HMap* m, GoString* strs, char* buf, uint64_t num, uint64_t bytes,
                                 HttpReq* r) {
  if ((uint64_t)m->n > num || m->bytes > bytes) {
    note_event("copyHeaders: header map grew after the count given to Go (Envoy would overrun Go's buffer)", r);
    return CAPIInternalFailure;
  }
  int i = 0;
  for (int k = 0; k < m->n; k++) {
    HEnt* e = &m->e[k];
    strs[i].n = e->kl;
    strs[i].p = buf;
    memcpy(buf, e->k, e->kl);
    buf += e->kl;
    i++;
    strs[i].n = e->vl;
    if (e->vl > 0) {
      strs[i].p = buf;
      memcpy(buf, e->v, e->vl);
      buf += e->vl;
    }
    i++;
  }
  return CAPIOK;
}
/* Filter::copyHeaders */
CAPIStatus envoyGoFilterHttpCopyHeaders(void* sp, void* strs, void* buf) {
  xcount(X_HttpCopyHeaders);
  PS_WRAP("HttpCopyHeaders");
  pthread_mutex_lock(&f->mu);
  CAPIStatus st;
  if (has_destroyed(f))
    st = CAPIFilterIsDestroy;
  else if (!is_processing_in_go(s))
    st = CAPINotInGo;
  else if (!s->headers)
    st = CAPIInvalidPhase;
  else
    st = copy_map_to_go(s->headers, strs, buf, s->passed_hnum, s->passed_hbytes, s->hreq);
  pthread_mutex_unlock(&f->mu);
  DONE("HttpCopyHeaders", st);
}

typedef struct HdrArgs {
  Filter* f;
  HMap* m;
  char* k;
  size_t kl;
  char* v;
  size_t vl;
  int act; /* 0 set, 1 add, 2 remove */
} HdrArgs;
static void apply_hdr(HMap* m, const char* k, size_t kl, const char* v, size_t vl, int act) {
  if (act == HeaderAdd)
    hm_add(m, k, kl, v, vl);
  else if (act == HeaderSet)
    hm_set(m, k, kl, v, vl);
  else
    hm_remove(m, k, kl);
}
static void task_hdr(void* arg) {
  HdrArgs* a = arg;
  if (!weak_expired(a->f) && !has_destroyed(a->f)) apply_hdr(a->m, a->k, a->kl, a->v, a->vl, a->act);
  filter_unref(a->f);
  free(a->k);
  free(a->v);
  free(a);
}
/* Filter::setHeader / removeHeader / setTrailer / removeTrailer */
static CAPIStatus mutate_map(Filter* f, ProcState* s, int trailers, const char* k, size_t kl,
                             const char* v, size_t vl, int act) {
  if (has_destroyed(f)) return CAPIFilterIsDestroy;
  if (!is_processing_in_go(s)) return CAPINotInGo;
  HMap* m = trailers ? s->trailers : s->headers;
  if (!m) return CAPIInvalidPhase;
  if (act != 2 && act != HeaderAdd && act != HeaderSet) {
    note_event("unknown header action (Envoy RELEASE_ASSERT)", s->hreq);
    return CAPIInternalFailure;
  }
  if (is_thread_safe(f->w)) {
    apply_hdr(m, k, kl, v, vl, act);
  } else {
    HdrArgs* a = xcalloc(1, sizeof *a);
    a->f = f;
    a->m = m;
    a->k = xmemdup(k, kl);
    a->kl = kl;
    a->v = xmemdup(v ? v : "", vl);
    a->vl = vl;
    a->act = act;
    filter_ref(f);
    post(f->w, task_hdr, a);
  }
  return CAPIOK;
}
CAPIStatus envoyGoFilterHttpSetHeaderHelper(void* sp, void* key_data, int key_len, void* value_data,
                                            int value_len, headerAction act) {
  xcount(X_HttpSetHeaderHelper);
  PS_WRAP("HttpSetHeader");
  DONE("HttpSetHeader",
       mutate_map(f, s, 0, key_data, (size_t)key_len, value_data, (size_t)value_len, (int)act));
}
CAPIStatus envoyGoFilterHttpRemoveHeader(void* sp, void* key_data, int key_len) {
  xcount(X_HttpRemoveHeader);
  PS_WRAP("HttpRemoveHeader");
  DONE("HttpRemoveHeader", mutate_map(f, s, 0, key_data, (size_t)key_len, NULL, 0, 2));
}
CAPIStatus envoyGoFilterHttpSetTrailer(void* sp, void* key_data, int key_len, void* value,
                                       int value_len, headerAction act) {
  xcount(X_HttpSetTrailer);
  PS_WRAP("HttpSetTrailer");
  DONE("HttpSetTrailer", mutate_map(f, s, 1, key_data, (size_t)key_len, value, (size_t)value_len, (int)act));
}
CAPIStatus envoyGoFilterHttpRemoveTrailer(void* sp, void* key_data, int key_len) {
  xcount(X_HttpRemoveTrailer);
  PS_WRAP("HttpRemoveTrailer");
  DONE("HttpRemoveTrailer", mutate_map(f, s, 1, key_data, (size_t)key_len, NULL, 0, 2));
}
/* Filter::copyTrailers */
CAPIStatus envoyGoFilterHttpCopyTrailers(void* sp, void* strs, void* buf) {
  xcount(X_HttpCopyTrailers);
  PS_WRAP("HttpCopyTrailers");
  pthread_mutex_lock(&f->mu);
  CAPIStatus st;
  if (has_destroyed(f))
    st = CAPIFilterIsDestroy;
  else if (!is_processing_in_go(s))
    st = CAPINotInGo;
  else if (!s->trailers)
    st = CAPIInvalidPhase;
  else
    st = copy_map_to_go(s->trailers, strs, buf, s->passed_tnum, s->passed_tbytes, s->hreq);
  pthread_mutex_unlock(&f->mu);
  DONE("HttpCopyTrailers", st);
}

/* Filter::copyBuffer / drainBuffer / setBufferHelper */
static CAPIStatus buf_check(Filter* f, ProcState* s, Buf* b) {
  if (has_destroyed(f)) return CAPIFilterIsDestroy;
  if (!is_processing_in_go(s)) return CAPINotInGo;
  if (!ddl_check_existing(s, b)) return CAPIInvalidPhase;
  return CAPIOK;
}
CAPIStatus envoyGoFilterHttpGetBuffer(void* sp, uint64_t buffer, void* value) {
  xcount(X_HttpGetBuffer);
  PS_WRAP("HttpGetBuffer");
  Buf* b = (Buf*)(uintptr_t)buffer;
  CAPIStatus st = buf_check(f, s, b);
  if (st == CAPIOK && b->len) memcpy(value, b->d, b->len);
  DONE("HttpGetBuffer", st);
}
CAPIStatus envoyGoFilterHttpDrainBuffer(void* sp, uint64_t buffer, uint64_t length) {
  xcount(X_HttpDrainBuffer);
  PS_WRAP("HttpDrainBuffer");
  Buf* b = (Buf*)(uintptr_t)buffer;
  CAPIStatus st = buf_check(f, s, b);
  if (st == CAPIOK) {
    buf_drain(b, length);
    /* BufferList bytes_ is not adjusted by Envoy either */
  }
  DONE("HttpDrainBuffer", st);
}
CAPIStatus envoyGoFilterHttpSetBufferHelper(void* sp, uint64_t buffer, void* data, int length,
                                            bufferAction action) {
  xcount(X_HttpSetBufferHelper);
  PS_WRAP("HttpSetBuffer");
  Buf* b = (Buf*)(uintptr_t)buffer;
  CAPIStatus st = buf_check(f, s, b);
  if (st == CAPIOK) {
    if (action == Set) {
      buf_drain(b, b->len);
      buf_add(b, data, (size_t)length);
    } else if (action == Prepend) {
      buf_prepend(b, data, (size_t)length);
    } else {
      buf_add(b, data, (size_t)length);
    }
  }
  DONE("HttpSetBuffer", st);
}

/* Http::Utility::parseAuthority(host).is_ip_address_ */
#include <arpa/inet.h>
static int authority_is_ip(const char* h, size_t n) {
  char tmp[128];
  if (n == 0 || n >= sizeof tmp) return 0;
  memcpy(tmp, h, n);
  tmp[n] = 0;
  unsigned char addr[16];
  if (tmp[0] == '[') {
    char* e = strchr(tmp, ']');
    if (!e) return 0;
    *e = 0;
    return inet_pton(AF_INET6, tmp + 1, addr) == 1;
  }
  char* c = strrchr(tmp, ':');
  if (c && strchr(tmp, ':') == c) *c = 0; /* host:port */
  return inet_pton(AF_INET, tmp, addr) == 1 || inet_pton(AF_INET6, tmp, addr) == 1;
}
/* Filter::setUpstreamOverrideHost */
CAPIStatus envoyGoFilterHttpSetUpstreamOverrideHost(void* sp, void* host_data, int host_len,
                                                    bool strict) {
  xcount(X_HttpSetUpstreamOverrideHost);
  (void)strict;
  PS_WRAP("HttpSetUpstreamOverrideHost");
  if (has_destroyed(f)) DONE("HttpSetUpstreamOverrideHost", CAPIFilterIsDestroy);
  if (!is_processing_in_go(s)) DONE("HttpSetUpstreamOverrideHost", CAPINotInGo);
  if (s->ps.is_encoding) DONE("HttpSetUpstreamOverrideHost", CAPIInvalidPhase);
  if (!authority_is_ip(host_data, (size_t)host_len))
    DONE("HttpSetUpstreamOverrideHost", CAPIInvalidIPAddress);
  pthread_mutex_lock(&f->mu); /* the host's record of it; Envoy posts off-thread */
  free(f->override_host);
  f->override_host = xmemdup(host_data, (size_t)host_len);
  pthread_mutex_unlock(&f->mu);
  DONE("HttpSetUpstreamOverrideHost", CAPIOK);
}

/* Filter::clearRouteCache */
CAPIStatus envoyGoFilterHttpClearRouteCache(void* rp, bool refresh) {
  xcount(X_HttpClearRouteCache);
  (void)refresh;
  REQ_WRAP("HttpClearRouteCache");
  if (has_destroyed(f)) RDONE("HttpClearRouteCache", CAPIFilterIsDestroy);
  pthread_mutex_lock(&f->mu);
  f->route_cache_cleared++; /* no routing in the host: recorded only */
  pthread_mutex_unlock(&f->mu);
  RDONE("HttpClearRouteCache", CAPIOK);
}
