//go:build ignore

/*
 * Part of the C test host (one translation unit: host.c includes its parts in order).
 *
 * The network (TCP) golang filter and its upstream connections.
 * Mirrors contrib/golang/filters/network/source/golang.cc (Filter::onNewConnection, onData,
 * onWrite, onEvent, write, close, setFilterState/getFilterState), upstream.cc (UpstreamConn) and
 * cgo.cc (envoyGoFilterDownstream*, envoyGoFilterUpstream*).
 */

/* ------------------------------------------------ network filter */
/* mirrors contrib/golang/filters/network/source/{golang,upstream,cgo}.cc */
struct NetFilter;
typedef struct NetWrapper { /* FilterWrapper */
  pthread_mutex_t mu;
  struct NetFilter* filter; /* weak */
  SB str;                   /* str_value_ */
} NetWrapper;
typedef struct NetFilter {
  atomic_int refs;
  Worker* w;
  int handle;
  uint64_t config_id;
  char* plugin;
  size_t plugin_len;
  char* local;
  char* remote;
  int closed;
  pthread_mutex_t mu; /* Filter::mutex_ */
  SB written;         /* what the filter wrote to the downstream */
  int write_end, close_calls, last_close_type, events_seen;
  /* buffer accounting of Filter::onData / onWrite: bytes handed to the Go
   * filter and bytes left in the buffer afterwards for the next filter in
   * the chain (tcp_proxy on reads, the socket on writes) */
  uint64_t read_in, read_forwarded, write_in, write_forwarded;
  KV* fstate;
  int nfstate;
  NetWrapper* wrapper;
} NetFilter;
static NetFilter** g_conns;
static int g_nconns;
static pthread_mutex_t g_net_mu = PTHREAD_MUTEX_INITIALIZER;
static atomic_int g_live_net_wrappers;

typedef struct UpConn { /* UpstreamConn + UpstreamConnWrapper */
  int handle;
  Worker* w;
  char* addr;
  uint64_t go_conn_id;
  int state; /* 0 connecting, 1 ready, 2 failed, 3 closed */
  int half_close, finalized, close_calls;
  SB written;
  SB str;
} UpConn;
static UpConn** g_ups;
static int g_nups;

static void net_unref(NetFilter* f) {
  if (atomic_fetch_sub(&f->refs, 1) == 1) {
    free(f->plugin);
    free(f->local);
    free(f->remote);
    sb_free(&f->written);
    kv_free(f->fstate, f->nfstate);
    pthread_mutex_destroy(&f->mu);
    free(f);
  }
}
static NetFilter* net_lock(NetWrapper* w) {
  pthread_mutex_lock(&w->mu);
  NetFilter* f = w->filter;
  if (f) atomic_fetch_add(&f->refs, 1);
  pthread_mutex_unlock(&w->mu);
  return f;
}
static void net_free_wrapper(NetWrapper* w) {
  sb_free(&w->str);
  pthread_mutex_destroy(&w->mu);
  free(w);
  atomic_fetch_sub(&g_live_net_wrappers, 1);
}

/* Filter::onEvent; LocalClose/RemoteClose end the connection: the filter
 * is destroyed with it and the wrapper's weak pointer expires */
static void net_on_event(NetFilter* f, int event) {
  if (event == 0 || event == 1) f->closed = 1;
  f->events_seen++;
  L.net_on_event(f->wrapper, event);
  if (event == 0 || event == 1) {
    pthread_mutex_lock(&f->wrapper->mu);
    f->wrapper->filter = NULL;
    pthread_mutex_unlock(&f->wrapper->mu);
    pthread_mutex_lock(&g_net_mu);
    g_conns[f->handle] = NULL;
    pthread_mutex_unlock(&g_net_mu);
    net_unref(f);
  }
}
typedef struct NetArgs {
  NetFilter* f;
  char* d;
  size_t n;
  int end;
  int close_type;
} NetArgs;
/* Filter::write */
static void task_net_write(void* arg) {
  NetArgs* a = arg;
  NetFilter* f = a->f;
  if (f->closed) {
    note_event("network write on a closed connection", NULL);
  } else {
    sb_add(&f->written, a->d, a->n);
    if (a->end) f->write_end = 1;
  }
  net_unref(f);
  free(a->d);
  free(a);
}
/* Filter::close: connection().close raises LocalClose */
static void task_net_close(void* arg) {
  NetArgs* a = arg;
  NetFilter* f = a->f;
  if (f->closed) {
    note_event("network close on a closed connection", NULL);
    net_unref(f);
  } else {
    f->close_calls++;
    f->last_close_type = a->close_type;
    net_unref(f); /* the connection still holds its own reference */
    net_on_event(f, 1);
  }
  free(a);
}
CAPIStatus envoyGoFilterDownstreamClose(void* wrapper, int close_type) {
  NetFilter* f = net_lock(wrapper);
  if (!f) return ret_note("DownstreamClose", CAPIFilterIsGone, NULL, NULL);
  NetArgs* a = xcalloc(1, sizeof *a);
  a->f = f;
  a->close_type = close_type;
  post(f->w, task_net_close, a);
  return CAPIOK;
}
CAPIStatus envoyGoFilterDownstreamWrite(void* wrapper, void* buffer_ptr, int buffer_len, int end_stream) {
  NetFilter* f = net_lock(wrapper);
  if (!f) return ret_note("DownstreamWrite", CAPIFilterIsGone, NULL, NULL);
  NetArgs* a = xcalloc(1, sizeof *a);
  a->f = f;
  a->d = xmemdup(buffer_ptr, (size_t)buffer_len);
  a->n = (size_t)buffer_len;
  a->end = end_stream;
  post(f->w, task_net_write, a);
  return CAPIOK;
}
static void task_free_wrapper(void* arg) { net_free_wrapper(arg); }
void envoyGoFilterDownstreamFinalize(void* wrapper, int reason) {
  (void)reason;
  NetWrapper* w = wrapper;
  NetFilter* f = net_lock(w);
  if (f) {
    post(f->w, task_free_wrapper, w);
    net_unref(f);
  } else {
    net_free_wrapper(w);
  }
}
CAPIStatus envoyGoFilterDownstreamInfo(void* wrapper, int t, void* ret) {
  NetWrapper* w = wrapper;
  NetFilter* f = net_lock(w);
  if (!f) return ret_note("DownstreamInfo", CAPIFilterIsGone, NULL, NULL);
  GoString* gs = ret;
  const char* v = t == 0 ? f->local : t == 1 ? f->remote : NULL;
  if (!v) {
    note_event("DownstreamInfo: corrupt enum (Envoy PANIC)", NULL);
    net_unref(f);
    return CAPIInternalFailure;
  }
  sb_reset(&w->str);
  sb_adds(&w->str, v);
  gs->p = w->str.d;
  gs->n = (ptrdiff_t)w->str.n;
  net_unref(f);
  return CAPIOK;
}
/* Filter::setFilterState / getFilterState */
typedef struct NetFsArgs {
  NetFilter* f;
  char* k;
  size_t kl;
  char* v;
  size_t vl;
  GoString* out;
  int set;
} NetFsArgs;
static KV* net_fs_find(NetFilter* f, const char* k, size_t kl) {
  for (int i = 0; i < f->nfstate; i++)
    if (f->fstate[i].kl == kl && memcmp(f->fstate[i].k, k, kl) == 0) return &f->fstate[i];
  return NULL;
}
static void net_fs_set(NetFilter* f, const char* k, size_t kl, const char* v, size_t vl) {
  KV* e = net_fs_find(f, k, kl);
  if (e) {
    free(e->v);
    e->v = xmemdup(v, vl);
    e->vl = vl;
  } else {
    kv_push(&f->fstate, &f->nfstate, k, kl, v, vl, 0);
  }
}
static void task_net_fs(void* arg) {
  NetFsArgs* a = arg;
  NetFilter* f = a->f;
  if (!f->closed) {
    if (a->set) {
      pthread_mutex_lock(&f->mu);
      net_fs_set(f, a->k, a->kl, a->v, a->vl);
      pthread_mutex_unlock(&f->mu);
    } else {
      KV* e = net_fs_find(f, a->k, a->kl);
      if (e) {
        sb_reset(&f->wrapper->str);
        sb_add(&f->wrapper->str, e->v, e->vl);
        a->out->p = f->wrapper->str.d;
        a->out->n = (ptrdiff_t)f->wrapper->str.n;
      }
      if (L.net_on_sema_dec) L.net_on_sema_dec(f->wrapper);
    }
  }
  net_unref(f);
  free(a->k);
  free(a->v);
  free(a);
}
CAPIStatus envoyGoFilterSetFilterState(void* wrapper, void* key, void* value, int state_type, int life_span,
                                       int stream_sharing) {
  (void)state_type;
  (void)life_span;
  (void)stream_sharing;
  NetFilter* f = net_lock(wrapper);
  if (!f) return ret_note("SetFilterState", CAPIFilterIsGone, NULL, NULL);
  GoString* k = key;
  GoString* v = value;
  pthread_mutex_lock(&f->mu);
  CAPIStatus st = CAPIOK;
  if (f->closed) {
    st = CAPIFilterIsDestroy;
  } else if (is_thread_safe(f->w)) {
    net_fs_set(f, k->p, (size_t)k->n, v->p, (size_t)v->n);
  } else {
    NetFsArgs* a = xcalloc(1, sizeof *a);
    a->f = f;
    atomic_fetch_add(&f->refs, 1);
    a->k = xmemdup(k->p, (size_t)k->n);
    a->kl = (size_t)k->n;
    a->v = xmemdup(v->p, (size_t)v->n);
    a->vl = (size_t)v->n;
    a->set = 1;
    post(f->w, task_net_fs, a);
  }
  pthread_mutex_unlock(&f->mu);
  net_unref(f);
  return ret_note("SetFilterState", st, NULL, NULL);
}
CAPIStatus envoyGoFilterGetFilterState(void* wrapper, void* key, void* value) {
  NetFilter* f = net_lock(wrapper);
  if (!f) return ret_note("GetFilterState", CAPIFilterIsGone, NULL, NULL);
  GoString* k = key;
  GoString* out = value;
  pthread_mutex_lock(&f->mu);
  CAPIStatus st = CAPIOK;
  if (f->closed) {
    st = CAPIFilterIsDestroy;
  } else if (is_thread_safe(f->w)) {
    KV* e = net_fs_find(f, k->p, (size_t)k->n);
    if (e) {
      sb_reset(&f->wrapper->str);
      sb_add(&f->wrapper->str, e->v, e->vl);
      out->p = f->wrapper->str.d;
      out->n = (ptrdiff_t)f->wrapper->str.n;
    }
  } else {
    NetFsArgs* a = xcalloc(1, sizeof *a);
    a->f = f;
    atomic_fetch_add(&f->refs, 1);
    a->k = xmemdup(k->p, (size_t)k->n);
    a->kl = (size_t)k->n;
    a->out = out;
    post(f->w, task_net_fs, a);
    st = CAPIYield;
  }
  pthread_mutex_unlock(&f->mu);
  net_unref(f);
  return ret_note("GetFilterState", st, NULL, NULL);
}

/* upstream connections (upstream.cc): the test drives readiness */
static void task_noop(void* arg) { (void)arg; }
void* envoyGoFilterUpstreamConnect(void* library_id, void* addr, uint64_t conn_id) {
  (void)library_id;
  GoString* a = addr;
  UpConn* u = xcalloc(1, sizeof *u);
  u->addr = xmemdup(a->p, (size_t)a->n);
  u->go_conn_id = conn_id;
  pthread_mutex_lock(&g_net_mu);
  u->handle = g_nups;
  u->w = &g_workers[g_nups % g_nworkers]; /* DispatcherStore round robin */
  g_ups = xrealloc(g_ups, sizeof(UpConn*) * (size_t)(g_nups + 1));
  g_ups[g_nups++] = u;
  pthread_mutex_unlock(&g_net_mu);
  post(u->w, task_noop, NULL); /* conn_ptr->connect(): UP_READY/UP_FAIL finish it */
  return u;
}
CAPIStatus envoyGoFilterUpstreamConnEnableHalfClose(void* u, int enable_half_close) {
  ((UpConn*)u)->half_close = enable_half_close;
  return CAPIOK;
}
typedef struct UpArgs {
  UpConn* u;
  char* d;
  size_t n;
  int end;
} UpArgs;
static void task_up_write(void* arg) {
  UpArgs* a = arg;
  if (a->u->state == 3)
    note_event("upstream write on a closed connection", NULL);
  else
    sb_add(&a->u->written, a->d, a->n);
  free(a->d);
  free(a);
}
CAPIStatus envoyGoFilterUpstreamWrite(void* u, void* buffer_ptr, int buffer_len, int end_stream) {
  UpArgs* a = xcalloc(1, sizeof *a);
  a->u = u;
  a->d = xmemdup(buffer_ptr, (size_t)buffer_len);
  a->n = (size_t)buffer_len;
  a->end = end_stream;
  post(a->u->w, task_up_write, a);
  return CAPIOK;
}
static void task_up_close(void* arg) {
  UpConn* u = arg;
  if (u->state == 3) return;
  u->close_calls++;
  u->state = 3;
  if (L.up_event) L.up_event(u, 1); /* LocalClose -> UpstreamConn::onEvent */
}
CAPIStatus envoyGoFilterUpstreamClose(void* u, int close_type) {
  (void)close_type;
  post(((UpConn*)u)->w, task_up_close, u);
  return CAPIOK;
}
void envoyGoFilterUpstreamFinalize(void* u, int reason) {
  (void)reason;
  ((UpConn*)u)->finalized = 1; /* the host keeps the record for UPSTREAMS */
}
CAPIStatus envoyGoFilterUpstreamInfo(void* u, int t, void* ret) {
  UpConn* c = u;
  GoString* gs = ret;
  sb_reset(&c->str);
  sb_adds(&c->str, t == 0 ? "127.0.0.1:40000" : c->addr);
  gs->p = c->str.d;
  gs->n = (ptrdiff_t)c->str.n;
  return CAPIOK;
}

/* tcp upstream bridge: not driven by this host; present so RTLD_NOW
 * resolves libraries that import it */
CAPIStatus envoyGoHttpTcpBridgeCopyHeaders(void* s, void* strs, void* buf) { (void)s; (void)strs; (void)buf; return CAPIInvalidScene; }
CAPIStatus envoyGoHttpTcpBridgeSetRespHeader(void* s, void* k, int kl, void* v, int vl, headerAction a) { (void)s; (void)k; (void)kl; (void)v; (void)vl; (void)a; return CAPIInvalidScene; }
CAPIStatus envoyGoHttpTcpBridgeRemoveRespHeader(void* s, void* k, int kl) { (void)s; (void)k; (void)kl; return CAPIInvalidScene; }
CAPIStatus envoyGoHttpTcpBridgeGetBuffer(void* s, uint64_t b, void* v) { (void)s; (void)b; (void)v; return CAPIInvalidScene; }
CAPIStatus envoyGoHttpTcpBridgeDrainBuffer(void* s, uint64_t b, uint64_t l) { (void)s; (void)b; (void)l; return CAPIInvalidScene; }
CAPIStatus envoyGoHttpTcpBridgeSetBufferHelper(void* s, uint64_t b, void* d, int l, bufferAction a) { (void)s; (void)b; (void)d; (void)l; (void)a; return CAPIInvalidScene; }
CAPIStatus envoyGoHttpTcpBridgeGetStringValue(void* r, int id, uint64_t* d, int* l) { (void)r; (void)id; (void)d; (void)l; return CAPIInvalidScene; }
CAPIStatus envoyGoHttpTcpBridgeSetSelfHalfCloseForUpstreamConn(void* r, int e) { (void)r; (void)e; return CAPIInvalidScene; }

/* slices as Filter::onData builds them: (ptr, len) pairs of u64 */
static GoUint64 net_call_data(int which, void* wrapper, const char* d, size_t n, int end) {
  unsigned long long slices[4];
  int ns = 0;
  if (n >= 2) { /* two slices, like a multi-slice Envoy buffer */
    slices[0] = (unsigned long long)(uintptr_t)d;
    slices[1] = n / 2;
    slices[2] = (unsigned long long)(uintptr_t)(d + n / 2);
    slices[3] = n - n / 2;
    ns = 2;
  } else if (n == 1) {
    slices[0] = (unsigned long long)(uintptr_t)d;
    slices[1] = 1;
    ns = 1;
  }
  switch (which) {
  case 0: return L.net_on_data(wrapper, n, (GoUint64)(uintptr_t)slices, ns, end);
  case 1: return L.net_on_write(wrapper, n, (GoUint64)(uintptr_t)slices, ns, end);
  default: return L.up_data(wrapper, n, (GoUint64)(uintptr_t)slices, ns, end);
  }
}

/* Bytes of a len-byte read buffer left for the next read filter once the
 * Go call returns. Mirrors golang.cc Filter::onData (v1.36.2 .. v1.39.1
 * alike), right after envoyGoFilterOnDownstreamData:
 *   // TODO: do not drain buffer by default
 *   data.drain(data.length());
 * Whatever status Go returns, nothing is left: tcp_proxy behind a Go
 * network filter never sees a downstream byte. */
static size_t golang_on_data_left(size_t len) {
  size_t left = len;
  left -= len; /* data.drain(data.length()) */
  return left;
}

/* job for network commands: a = argv-ish */
typedef struct NetJob {
  int op; /* 0 new, 1 data, 2 write, 3 event, 4 up ready, 5 up fail, 6 up data, 7 up event */
  NetFilter* f;
  UpConn* u;
  char* d;
  size_t n;
  int end, ev;
  GoUint64 status;
} NetJob;
static void job_net(Job* j) {
  NetJob* nj = j->a;
  switch (nj->op) {
  case 0: { /* Filter::onNewConnection */
    NetFilter* f = nj->f;
    NetWrapper* w = xcalloc(1, sizeof *w);
    pthread_mutex_init(&w->mu, NULL);
    w->filter = f;
    f->wrapper = w;
    atomic_fetch_add(&g_live_net_wrappers, 1);
    nj->status = L.net_on_conn(w, (GoUint64)(uintptr_t)f->plugin, f->plugin_len, f->config_id);
    break;
  }
  case 1: /* Filter::onData */
    nj->status = net_call_data(0, nj->f->wrapper, nj->d, nj->n, nj->end);
    nj->f->read_in += nj->n;
    nj->f->read_forwarded += golang_on_data_left(nj->n);
    break;
  case 2: /* Filter::onWrite: no drain there, the buffer goes on intact */
    nj->status = net_call_data(1, nj->f->wrapper, nj->d, nj->n, nj->end);
    nj->f->write_in += nj->n;
    nj->f->write_forwarded += nj->n;
    break;
  case 3:
    if (!nj->f->closed || (nj->ev != 0 && nj->ev != 1)) net_on_event(nj->f, nj->ev);
    break;
  case 4:
    nj->u->state = 1;
    L.up_ready(nj->u, nj->u->go_conn_id);
    break;
  case 5:
    nj->u->state = 2;
    L.up_failure(nj->u, nj->ev, nj->u->go_conn_id);
    break;
  case 6:
    net_call_data(2, nj->u, nj->d, nj->n, nj->end);
    break;
  case 7:
    if (nj->ev == 0 || nj->ev == 1) nj->u->state = 3;
    L.up_event(nj->u, nj->ev);
    break;
  }
  run_ready(j->b ? (Worker*)j->b : &g_workers[0]);
}
