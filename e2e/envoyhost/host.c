//go:build ignore

// (the build constraint keeps the go tool from treating this C program as
// cgo source of package envoyhost; it is built by gcc, see host.mk)

/*
 * envoyhost: a test host that loads an Envoy Go-extension .so through Envoy's
 * real C ABI (contrib/golang, Envoy v1.39.1) without Envoy.
 *
 * It dlopens the .so once, exports every envoyGoFilter* host function the
 * library imports (HTTP + network + tcp-bridge stubs) and calls the library's
 * entry points in the order and with the data Envoy's golang filters would.
 * Each behaviour cites the Envoy C++ function it mirrors ("mirrors X").
 * It is a test fixture, not product code.
 *
 * Build: gcc -O2 -g -rdynamic -I<envoy module>/contrib/golang/common/go/api \
 *            -o bin/envoyhost e2e/envoyhost/host.c -ldl -lpthread
 *
 * Threads. The main thread reads commands. WORKERS k starts k worker threads,
 * each with a dispatcher (a task queue, like Event::Dispatcher::post) named
 * worker_<i>; worker_id = i and concurrency = k (Envoy: --concurrency).
 * Requests run on a worker; a host function is "thread safe" (Envoy's
 * dispatcher.isThreadSafe()) iff it is called on that worker's thread.
 * Host functions may be called from any Go thread; shared state is locked.
 *
 * ---------------------------------------------------------------- protocol
 * One command per line on stdin, one reply line on stdout: "OK [...]" or
 * "ERR <message>". Tokens are separated by one space. <b64> is standard
 * base64 of arbitrary bytes, "-" stands for empty. Numbers are decimal.
 *
 *   HELLO                              -> OK envoyhost 1
 *   LOGLEVEL <n>                       Envoy log level seen by the .so
 *                                      (0 trace .. 5 critical, 6 off)
 *   WORKERS <k>                        before LOAD; default 1
 *   NODE_IN_CEL <0|1>                  0 (default) mirrors Envoy v1.39.1:
 *                                      the golang filter never sets
 *                                      local_info_, so xds.node* is not found.
 *   NODEPROP <b64 path> <st> <b64 v>   per-proxy property table entry
 *                                      (xds.node...), used iff NODE_IN_CEL 1
 *   LOAD <b64 so path>                 dlopen(RTLD_NOW) once; -> OK
 *   LOADFLOOR                          no .so: empty C functions stand in for
 *                                      the Go entry points (benchmark floor)
 *   CONFIG <b64 plugin> <b64 any>      FilterConfig::newGoPluginConfig -> OK <id>
 *   ROUTECONFIG <b64 plugin> <b64 any> RoutePluginConfig -> OK <handle>
 *   DESTROYCONFIG <id>                 ~FilterConfig
 *   BEGIN                              starts a request spec; lines until RUN:
 *     config <id>                      filter config (from CONFIG)
 *     route <handle>                   per-route config (from ROUTECONFIG)
 *     worker <n>                       worker thread to run on
 *     timeout_ms <n>                   per-wait timeout (default 5000)
 *     buffer_limit <n>                 stream buffer limit (default 1 MiB)
 *     si <name> <b64>                  stream info value (see si_names[])
 *     prop <b64 path> <st> <b64 v>     static property table entry: GetProperty
 *                                      of path returns status st (0 ok,
 *                                      -5 not found, -8 serialization failure)
 *                                      and value v; paths below a table entry
 *                                      that are not in the table: not found
 *     dmeta <b64 filter> <b64 Struct>  initial dynamic metadata
 *     fstate <b64 key> <b64 value>     initial string filter state
 *     step <op> ...                    the script, in order:
 *       log_start                      log(DownstreamStart)
 *       req_headers <end> [<b64 k> <b64 v>]...
 *       req_data <end> <b64>
 *       req_trailers [<b64 k> <b64 v>]...
 *       wait_upstream                  wait until the request reached the
 *                                      upstream (or a local reply / reset)
 *       resp_headers <end> [<b64 k> <b64 v>]...
 *       resp_data <end> <b64>
 *       resp_trailers [<b64 k> <b64 v>]...
 *       wait_downstream                wait until the response is complete
 *       pause <ms>                     run posted events for ms
 *       complete                       completeRequest + onStreamComplete
 *       log <type>                     Filter::log (6 = DownstreamEnd)
 *       destroy                        onDestroy + stream teardown
 *       hold                           park the stream here (the worker keeps
 *                                      running posted events); RUN answers
 *                                      with "held":<handle> and a partial result
 *   RUN                                -> OK <json result> (one line)
 *   ABORT                              drop the spec being built
 *   RESUME <handle>                    continue a held stream: "step" lines
 *                                      follow, then RUN (answers like RUN)
 *   BENCH <n> <k>                      run the last spec n times spread over
 *                                      workers 0..k-1 -> OK <json>
 *                                      {"n","k","wall_ns","cpu_ns","errors",...}
 *   LIVE                               -> OK <live requests> <live filters>
 *                                         <live http configs> <live net wrappers>
 *   GC                                 envoyGoFilterCleanUp (forces a Go GC and
 *                                      waits for finalizers) -> OK
 *   METRICS                            -> OK <json [{"config","id","type","name","value"}]>
 *   EVENTS                             -> OK <json> logs and non-OK C API
 *                                      answers since the last EVENTS ("key" is
 *                                      the property path / value id asked)
 *   NETCONFIG <b64 libid> <b64 any>    envoyGoFilterOnNetworkFilterConfig -> OK <id>
 *   CONN_NEW <cfg> <b64 plugin> <b64 local> <b64 remote> <worker>
 *                                      -> OK <conn> <filter status>
 *   CONN_DATA <conn> <end> <b64>       onData -> OK <status>
 *   CONN_WRITE <conn> <end> <b64>      onWrite -> OK <status>
 *   CONN_EVENT <conn> <event>          onEvent (0 RemoteClose, 1 LocalClose,
 *                                      2 Connected) -> OK
 *   CONN_STATE <conn>                  -> OK <json> writes/closes seen, and
 *                                      the buffer accounting: read_in /
 *                                      write_in bytes given to onData /
 *                                      onWrite, read_forwarded /
 *                                      write_forwarded bytes left in the
 *                                      buffer for the next filter. Envoy
 *                                      v1.39.1 drains every read buffer
 *                                      (Filter::onData), so read_forwarded
 *                                      stays 0; onWrite does not drain.
 *   UPSTREAMS                          -> OK <json> upstream conns asked by Go
 *   UP_READY <u>, UP_FAIL <u> <reason>, UP_DATA <u> <end> <b64>,
 *   UP_EVENT <u> <event>               drive upstream connection callbacks
 *   QUIT                               exit(0)
 *
 * Every wait has a timeout: a stuck filter yields an error naming the
 * phase, the call and the status, never a hang.
 */
#define _GNU_SOURCE
#include <ctype.h>
#include <dlfcn.h>
#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

#include "api.h" /* the SDK's own header: struct layouts and prototypes */

/* cgo export prologue types (libgolang.h) */
typedef struct {
  const char* p;
  ptrdiff_t n;
} GoString;
typedef struct {
  void* data;
  long long len;
  long long cap;
} GoSlice;
typedef unsigned long long GoUint64;
typedef long long GoInt;

/* ------------------------------------------------------------ utilities */

static void die(const char* fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  fprintf(stderr, "envoyhost: fatal: ");
  vfprintf(stderr, fmt, ap);
  fprintf(stderr, "\n");
  va_end(ap);
  exit(2);
}

static void* xmalloc(size_t n) {
  void* p = malloc(n ? n : 1);
  if (!p) die("out of memory");
  return p;
}
static void* xcalloc(size_t a, size_t b) {
  void* p = calloc(a ? a : 1, b ? b : 1);
  if (!p) die("out of memory");
  return p;
}
static void* xrealloc(void* p, size_t n) {
  p = realloc(p, n ? n : 1);
  if (!p) die("out of memory");
  return p;
}
static char* xmemdup(const void* s, size_t n) {
  char* p = xmalloc(n + 1);
  if (n) memcpy(p, s, n);
  p[n] = 0;
  return p;
}

static int64_t now_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (int64_t)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

static int64_t cpu_ns(void) {
  struct rusage ru;
  getrusage(RUSAGE_SELF, &ru); /* all threads: host and Go runtime */
  return ((int64_t)ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) * 1000000000LL +
         ((int64_t)ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) * 1000LL;
}

/* growable string */
typedef struct {
  char* d;
  size_t n, cap;
} SB;
static void sb_grow(SB* s, size_t add) {
  if (s->n + add + 1 > s->cap) {
    size_t c = s->cap ? s->cap : 64;
    while (c < s->n + add + 1) c *= 2;
    s->d = xrealloc(s->d, c);
    s->cap = c;
  }
}
static void sb_add(SB* s, const void* p, size_t n) {
  sb_grow(s, n);
  if (n) memcpy(s->d + s->n, p, n);
  s->n += n;
  s->d[s->n] = 0;
}
static void sb_adds(SB* s, const char* z) { sb_add(s, z, strlen(z)); }
static void sb_addc(SB* s, char c) { sb_add(s, &c, 1); }
static void sb_printf(SB* s, const char* fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  va_list ap2;
  va_copy(ap2, ap);
  int n = vsnprintf(NULL, 0, fmt, ap);
  va_end(ap);
  sb_grow(s, (size_t)n);
  vsnprintf(s->d + s->n, (size_t)n + 1, fmt, ap2);
  va_end(ap2);
  s->n += (size_t)n;
}
static void sb_reset(SB* s) {
  s->n = 0;
  if (s->d) s->d[0] = 0;
}
static void sb_free(SB* s) {
  free(s->d);
  memset(s, 0, sizeof(*s));
}

static void json_str(SB* s, const char* p, size_t n) {
  sb_addc(s, '"');
  for (size_t i = 0; i < n; i++) {
    unsigned char c = (unsigned char)p[i];
    if (c == '"' || c == '\\') {
      sb_addc(s, '\\');
      sb_addc(s, (char)c);
    } else if (c < 0x20 || c == 0x7f) {
      sb_printf(s, "\\u%04x", c);
    } else {
      sb_addc(s, (char)c);
    }
  }
  sb_addc(s, '"');
}
static void json_strz(SB* s, const char* z) { json_str(s, z ? z : "", z ? strlen(z) : 0); }

static const char b64chars[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
static void b64_enc(SB* s, const unsigned char* p, size_t n) {
  for (size_t i = 0; i < n; i += 3) {
    uint32_t v = (uint32_t)p[i] << 16;
    if (i + 1 < n) v |= (uint32_t)p[i + 1] << 8;
    if (i + 2 < n) v |= p[i + 2];
    sb_addc(s, b64chars[(v >> 18) & 63]);
    sb_addc(s, b64chars[(v >> 12) & 63]);
    sb_addc(s, i + 1 < n ? b64chars[(v >> 6) & 63] : '=');
    sb_addc(s, i + 2 < n ? b64chars[v & 63] : '=');
  }
}
static void json_b64(SB* s, const void* p, size_t n) {
  sb_addc(s, '"');
  b64_enc(s, p, n);
  sb_addc(s, '"');
}
static int b64val(int c) {
  if (c >= 'A' && c <= 'Z') return c - 'A';
  if (c >= 'a' && c <= 'z') return c - 'a' + 26;
  if (c >= '0' && c <= '9') return c - '0' + 52;
  if (c == '+') return 62;
  if (c == '/') return 63;
  return -1;
}
/* decodes token t ("-" is empty) into a new NUL-terminated buffer */
static char* b64_dec(const char* t, size_t* outn) {
  size_t n = strlen(t);
  char* o = xmalloc(n * 3 / 4 + 4);
  size_t k = 0;
  if (strcmp(t, "-") == 0) n = 0;
  uint32_t acc = 0;
  int bits = 0;
  for (size_t i = 0; i < n; i++) {
    if (t[i] == '=') break;
    int v = b64val((unsigned char)t[i]);
    if (v < 0) {
      free(o);
      return NULL;
    }
    acc = (acc << 6) | (uint32_t)v;
    bits += 6;
    if (bits >= 8) {
      bits -= 8;
      o[k++] = (char)((acc >> bits) & 0xff);
    }
  }
  o[k] = 0;
  *outn = k;
  return o;
}

/* ---------------------------------------------------------- header maps */
/* Mirrors Http::HeaderMapImpl: ordered entries, pseudo headers kept first
 * (HeaderList::insert), keys lower-cased (LowerCaseString), byteSize() is
 * the sum of key and value lengths (cached_byte_size_). */
typedef struct {
  char* k;
  uint32_t kl;
  char* v;
  uint32_t vl;
} HEnt;
typedef struct {
  HEnt* e;
  int n, cap, npseudo;
  uint64_t bytes;
} HMap;

static HMap* hm_new(void) { return xcalloc(1, sizeof(HMap)); }
static void hm_free(HMap* m) {
  if (!m) return;
  for (int i = 0; i < m->n; i++) {
    free(m->e[i].k);
    free(m->e[i].v);
  }
  free(m->e);
  free(m);
}
static void hm_add(HMap* m, const char* k, size_t kl, const char* v, size_t vl) {
  if (m->n == m->cap) {
    m->cap = m->cap ? m->cap * 2 : 16;
    m->e = xrealloc(m->e, sizeof(HEnt) * (size_t)m->cap);
  }
  HEnt ent;
  ent.k = xmemdup(k, kl);
  for (size_t i = 0; i < kl; i++) ent.k[i] = (char)tolower((unsigned char)ent.k[i]);
  ent.kl = (uint32_t)kl;
  ent.v = xmemdup(v, vl);
  ent.vl = (uint32_t)vl;
  int at = m->n;
  if (kl > 0 && k[0] == ':') {
    at = m->npseudo++;
    memmove(&m->e[at + 1], &m->e[at], sizeof(HEnt) * (size_t)(m->n - at));
  }
  m->e[at] = ent;
  m->n++;
  m->bytes += kl + vl;
}
static int keyeq(const HEnt* e, const char* k, size_t kl) {
  if (e->kl != kl) return 0;
  for (size_t i = 0; i < kl; i++)
    if (e->k[i] != (char)tolower((unsigned char)k[i])) return 0;
  return 1;
}
static int hm_remove(HMap* m, const char* k, size_t kl) {
  int removed = 0;
  for (int i = 0; i < m->n;) {
    if (keyeq(&m->e[i], k, kl)) {
      m->bytes -= m->e[i].kl + m->e[i].vl;
      free(m->e[i].k);
      free(m->e[i].v);
      if (i < m->npseudo) m->npseudo--;
      memmove(&m->e[i], &m->e[i + 1], sizeof(HEnt) * (size_t)(m->n - i - 1));
      m->n--;
      removed++;
    } else {
      i++;
    }
  }
  return removed;
}
/* HeaderMapImpl::setCopy: remove(key); addCopy(key, value) */
static void hm_set(HMap* m, const char* k, size_t kl, const char* v, size_t vl) {
  hm_remove(m, k, kl);
  hm_add(m, k, kl, v, vl);
}
static HEnt* hm_get(HMap* m, const char* k, size_t kl) {
  if (!m) return NULL;
  for (int i = 0; i < m->n; i++)
    if (keyeq(&m->e[i], k, kl)) return &m->e[i];
  return NULL;
}
static HMap* hm_copy(const HMap* src) {
  HMap* m = hm_new();
  if (src)
    for (int i = 0; i < src->n; i++) hm_add(m, src->e[i].k, src->e[i].kl, src->e[i].v, src->e[i].vl);
  return m;
}
static void hm_json(SB* s, const HMap* m) {
  if (!m) {
    sb_adds(s, "null");
    return;
  }
  sb_addc(s, '[');
  for (int i = 0; i < m->n; i++) {
    if (i) sb_addc(s, ',');
    sb_addc(s, '[');
    json_str(s, m->e[i].k, m->e[i].kl);
    sb_addc(s, ',');
    json_str(s, m->e[i].v, m->e[i].vl);
    sb_addc(s, ']');
  }
  sb_addc(s, ']');
}

/* -------------------------------------------------------------- buffers */
typedef struct {
  char* d;
  size_t len, cap;
} Buf;
static Buf* buf_new(void) { return xcalloc(1, sizeof(Buf)); }
static void buf_free(Buf* b) {
  if (b) {
    free(b->d);
    free(b);
  }
}
static void buf_reserve(Buf* b, size_t n) {
  if (b->len + n > b->cap) {
    size_t c = b->cap ? b->cap : 64;
    while (c < b->len + n) c *= 2;
    b->d = xrealloc(b->d, c);
    b->cap = c;
  }
}
static void buf_add(Buf* b, const void* p, size_t n) {
  buf_reserve(b, n);
  if (n) memcpy(b->d + b->len, p, n);
  b->len += n;
}
static void buf_prepend(Buf* b, const void* p, size_t n) {
  buf_reserve(b, n);
  memmove(b->d + n, b->d, b->len);
  if (n) memcpy(b->d, p, n);
  b->len += n;
}
static void buf_drain(Buf* b, size_t n) {
  if (n > b->len) n = b->len;
  memmove(b->d, b->d + n, b->len - n);
  b->len -= n;
}
/* Buffer::Instance::move: append all of src to dst, src becomes empty */
static void buf_move(Buf* dst, Buf* src) {
  buf_add(dst, src->d, src->len);
  src->len = 0;
}

/* ---------------------------------------------------------- event log */
/* Go log lines and non-OK C API answers, recorded from any thread. */
static pthread_mutex_t ev_mu = PTHREAD_MUTEX_INITIALIZER;
static SB ev_buf;          /* comma separated JSON objects */
static int ev_count;
static long ev_dropped;
static atomic_int ev_quiet; /* >0 while benchmarking: count only */
static atomic_long ev_capi_errors;
static atomic_long ev_error_logs;
#define EV_MAX 20000

static void ev_add_raw(const char* json) {
  pthread_mutex_lock(&ev_mu);
  if (ev_count >= EV_MAX) {
    ev_dropped++;
  } else {
    if (ev_buf.n) sb_addc(&ev_buf, ',');
    sb_adds(&ev_buf, json);
    ev_count++;
  }
  pthread_mutex_unlock(&ev_mu);
}
static SB ev_take(void) {
  pthread_mutex_lock(&ev_mu);
  SB out = {0};
  sb_printf(&out, "{\"dropped\":%ld,\"events\":[", ev_dropped);
  sb_add(&out, ev_buf.d ? ev_buf.d : "", ev_buf.n);
  sb_adds(&out, "]}");
  sb_reset(&ev_buf);
  ev_count = 0;
  ev_dropped = 0;
  pthread_mutex_unlock(&ev_mu);
  return out;
}
/* events since a mark (for one RUN): copies without clearing */
static size_t ev_mark(void) {
  pthread_mutex_lock(&ev_mu);
  size_t n = ev_buf.n;
  pthread_mutex_unlock(&ev_mu);
  return n;
}
static void ev_since(SB* out, size_t mark) {
  pthread_mutex_lock(&ev_mu);
  sb_addc(out, '[');
  if (ev_buf.n > mark) {
    const char* p = ev_buf.d + mark;
    size_t n = ev_buf.n - mark;
    if (*p == ',') {
      p++;
      n--;
    }
    sb_add(out, p, n);
  }
  sb_addc(out, ']');
  pthread_mutex_unlock(&ev_mu);
}

static const char* capi_name(int st) {
  switch (st) {
  case CAPIOK: return "CAPIOK";
  case CAPIFilterIsGone: return "CAPIFilterIsGone";
  case CAPIFilterIsDestroy: return "CAPIFilterIsDestroy";
  case CAPINotInGo: return "CAPINotInGo";
  case CAPIInvalidPhase: return "CAPIInvalidPhase";
  case CAPIValueNotFound: return "CAPIValueNotFound";
  case CAPIYield: return "CAPIYield";
  case CAPIInternalFailure: return "CAPIInternalFailure";
  case CAPISerializationFailure: return "CAPISerializationFailure";
  case CAPIInvalidScene: return "CAPIInvalidScene";
  case CAPIInvalidIPAddress: return "CAPIInvalidIPAddress";
  }
  return "CAPIUnknown";
}

/* -------------------------------------------------- workers/dispatchers */
typedef struct Task {
  void (*fn)(void*);
  void* arg;
  struct Task* next;
} Task;

typedef struct Worker {
  int id;
  char name[32]; /* "worker_<id>": Envoy derives worker_id from it */
  pthread_t tid;
  pthread_mutex_t mu;
  pthread_cond_t cv;
  Task *head, *tail;
  /* deferred deletes (Dispatcher::deferredDelete), worker thread only */
  void** deferred;
  int ndeferred, capdeferred;
} Worker;

static Worker* g_workers;
static int g_nworkers = 1;
static int g_started;

static int is_thread_safe(Worker* w) { return pthread_equal(pthread_self(), w->tid); }

/* Event::Dispatcher::post */
static void post(Worker* w, void (*fn)(void*), void* arg) {
  Task* t = xmalloc(sizeof(Task));
  t->fn = fn;
  t->arg = arg;
  t->next = NULL;
  pthread_mutex_lock(&w->mu);
  if (w->tail)
    w->tail->next = t;
  else
    w->head = t;
  w->tail = t;
  pthread_cond_signal(&w->cv);
  pthread_mutex_unlock(&w->mu);
}

static void free_http_req(void* r);
/* runs deferred deletes, as the dispatcher does at the end of a loop pass */
static void flush_deferred(Worker* w) {
  while (w->ndeferred) {
    void* p = w->deferred[--w->ndeferred];
    free_http_req(p);
  }
}
static void deferred_delete(Worker* w, void* req) {
  if (w->ndeferred == w->capdeferred) {
    w->capdeferred = w->capdeferred ? w->capdeferred * 2 : 16;
    w->deferred = xrealloc(w->deferred, sizeof(void*) * (size_t)w->capdeferred);
  }
  w->deferred[w->ndeferred++] = req;
}

/* runs one posted task; waits until deadline_ns (absolute, monotonic) for
 * one; returns 1 if a task ran. deadline 0 = do not wait. */
static int run_one(Worker* w, int64_t deadline_ns) {
  pthread_mutex_lock(&w->mu);
  while (!w->head) {
    if (deadline_ns == 0 || now_ns() >= deadline_ns) {
      pthread_mutex_unlock(&w->mu);
      return 0;
    }
    /* condvar on CLOCK_REALTIME: wait in short slices against monotonic */
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    int64_t left = deadline_ns - now_ns();
    if (left > 2000000) left = 2000000;
    ts.tv_nsec += (long)left;
    while (ts.tv_nsec >= 1000000000L) {
      ts.tv_sec++;
      ts.tv_nsec -= 1000000000L;
    }
    pthread_cond_timedwait(&w->cv, &w->mu, &ts);
  }
  Task* t = w->head;
  w->head = t->next;
  if (!w->head) w->tail = NULL;
  pthread_mutex_unlock(&w->mu);
  t->fn(t->arg);
  free(t);
  return 1;
}

/* runs posted tasks until pred(arg) is true or the deadline passes;
 * returns pred's final value */
static int run_until(Worker* w, int (*pred)(void*), void* arg, int64_t deadline_ns) {
  while (!pred(arg)) {
    if (now_ns() >= deadline_ns) return pred(arg);
    run_one(w, deadline_ns);
  }
  return 1;
}
static void run_ready(Worker* w) {
  while (run_one(w, 0)) {
  }
}

static void* worker_main(void* arg) {
  Worker* w = arg;
  for (;;) {
    run_one(w, now_ns() + 3600LL * 1000000000LL);
    flush_deferred(w);
  }
  return NULL;
}

/* A job runs on a worker; the caller waits for it with a timeout. */
typedef struct Job {
  void (*fn)(struct Job*);
  pthread_mutex_t mu;
  pthread_cond_t cv;
  int done;
  void* a;
  void* b;
  long n;
  long k;
  SB out;
} Job;
static void job_task(void* arg) {
  Job* j = arg;
  j->fn(j);
  pthread_mutex_lock(&j->mu);
  j->done = 1;
  pthread_cond_broadcast(&j->cv);
  pthread_mutex_unlock(&j->mu);
}
/* returns 0 on success, -1 on timeout (the job is then leaked: the worker
 * is stuck and the host should be killed by the driver) */
static int run_job(Worker* w, Job* j, int timeout_ms) {
  pthread_mutex_init(&j->mu, NULL);
  pthread_cond_init(&j->cv, NULL);
  j->done = 0;
  post(w, job_task, j);
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  ts.tv_sec += timeout_ms / 1000;
  ts.tv_nsec += (long)(timeout_ms % 1000) * 1000000L;
  if (ts.tv_nsec >= 1000000000L) {
    ts.tv_sec++;
    ts.tv_nsec -= 1000000000L;
  }
  pthread_mutex_lock(&j->mu);
  while (!j->done) {
    if (pthread_cond_timedwait(&j->cv, &j->mu, &ts) == ETIMEDOUT) break;
  }
  int ok = j->done;
  pthread_mutex_unlock(&j->mu);
  return ok ? 0 : -1;
}

static void start_workers(void) {
  if (g_started) return;
  g_workers = xcalloc((size_t)g_nworkers, sizeof(Worker));
  for (int i = 0; i < g_nworkers; i++) {
    Worker* w = &g_workers[i];
    w->id = i;
    snprintf(w->name, sizeof(w->name), "worker_%d", i);
    pthread_mutex_init(&w->mu, NULL);
    pthread_cond_init(&w->cv, NULL);
    if (pthread_create(&w->tid, NULL, worker_main, w) != 0) die("pthread_create");
  }
  g_started = 1;
}

/* ---------------------------------------------------------- the library */
typedef GoUint64 (*fn_new_config)(httpConfig*);
typedef GoUint64 (*fn_merge_config)(GoUint64, GoUint64, GoUint64, GoUint64);
typedef void (*fn_destroy_config)(GoUint64, GoInt);
typedef GoUint64 (*fn_on_header)(processState*, GoUint64, GoUint64, GoUint64);
typedef GoUint64 (*fn_on_data)(processState*, GoUint64, GoUint64, GoUint64);
typedef void (*fn_on_log)(httpRequest*, GoUint64, processState*, processState*, GoUint64, GoUint64,
                          GoUint64, GoUint64, GoUint64, GoUint64, GoUint64, GoUint64);
typedef void (*fn_on_req)(httpRequest*);
typedef void (*fn_on_destroy)(httpRequest*, GoUint64);
typedef void (*fn_void)(void);

static struct {
  void* handle;
  int floor; /* LOADFLOOR: empty C stand-ins */
  fn_new_config new_config;
  fn_merge_config merge_config;
  fn_destroy_config destroy_config;
  fn_on_header on_header;
  fn_on_data on_data;
  fn_on_log on_log;
  fn_on_req on_stream_complete;
  fn_on_destroy on_destroy;
  fn_on_req sema_dec;
  fn_void cleanup;
  /* network */
  GoUint64 (*net_on_config)(GoUint64, GoUint64, GoUint64, GoUint64);
  GoUint64 (*net_on_conn)(void*, GoUint64, GoUint64, GoUint64);
  GoUint64 (*net_on_data)(void*, GoUint64, GoUint64, GoInt, GoInt);
  GoUint64 (*net_on_write)(void*, GoUint64, GoUint64, GoInt, GoInt);
  void (*net_on_event)(void*, GoInt);
  void (*net_on_sema_dec)(void*);
  void (*up_ready)(void*, GoUint64);
  void (*up_failure)(void*, GoInt, GoUint64);
  GoUint64 (*up_data)(void*, GoUint64, GoUint64, GoInt, GoInt);
  void (*up_event)(void*, GoInt);
  int http_loaded, net_loaded;
} L;

/* the benchmark floor: the same host path with empty C functions */
__attribute__((noinline)) static GoUint64 floor_new_config(httpConfig* c) {
  (void)c;
  static atomic_ulong n;
  return ++n;
}
__attribute__((noinline)) static GoUint64 floor_on_header(processState* s, GoUint64 a, GoUint64 b,
                                                          GoUint64 c) {
  __asm__ volatile("" ::"r"(s), "r"(a), "r"(b), "r"(c));
  return 2; /* Continue */
}
__attribute__((noinline)) static void floor_on_log(httpRequest* r, GoUint64 t, processState* d,
                                                   processState* e, GoUint64 a, GoUint64 b,
                                                   GoUint64 c, GoUint64 f, GoUint64 g, GoUint64 h,
                                                   GoUint64 i, GoUint64 j) {
  __asm__ volatile("" ::"r"(r), "r"(t), "r"(d), "r"(e), "r"(a), "r"(b));
  __asm__ volatile("" ::"r"(c), "r"(f), "r"(g), "r"(h), "r"(i), "r"(j));
}
__attribute__((noinline)) static void floor_on_req(httpRequest* r) { __asm__ volatile("" ::"r"(r)); }
static void floor_finalize(httpRequest* r, GoUint64 reason);
__attribute__((noinline)) static void floor_on_destroy(httpRequest* r, GoUint64 reason) {
  /* no Go GC here: finalize right away so the floor does not leak */
  floor_finalize(r, reason);
}
static void floor_destroy_config(GoUint64 id, GoInt d) {
  (void)id;
  (void)d;
}

/* --------------------------------------------------------- configs */
typedef struct Metric {
  uint32_t id;
  int type; /* 0 counter, 1 gauge, 2 histogram */
  char* name;
  uint64_t value;
  uint64_t samples; /* histogram */
} Metric;

/* FilterConfig + httpConfigInternal (golang_filter.h) */
typedef struct HttpCfgInternal {
  httpConfig c;              /* first: Go receives httpConfig* */
  struct FilterConfig* weak; /* weak_ptr<FilterConfig>: under g_cfg_mu */
} HttpCfgInternal;

typedef struct FilterConfig {
  char* plugin_name;
  size_t plugin_len;
  char* any;
  size_t any_len;
  uint64_t config_id;
  int alive;
  HttpCfgInternal* internal;
  pthread_mutex_t mu; /* FilterConfig::mutex_ */
  Metric* metrics;
  int nmetrics, capmetrics;
  uint32_t next_counter, next_gauge, next_histogram; /* MetricStore */
} FilterConfig;

static pthread_mutex_t g_cfg_mu = PTHREAD_MUTEX_INITIALIZER;
static FilterConfig** g_cfgs;
static int g_ncfgs;
static atomic_int g_live_http_cfg_internal;

/* RoutePluginConfig */
typedef struct RouteCfg {
  char* plugin_name;
  size_t plugin_len;
  char* any;
  size_t any_len;
  uint64_t config_id, merged_config_id, cached_parent_id;
  pthread_rwlock_t mu;
  httpConfig config_;
} RouteCfg;
static RouteCfg** g_routes;
static int g_nroutes;

static FilterConfig* find_cfg(uint64_t id) {
  FilterConfig* r = NULL;
  pthread_mutex_lock(&g_cfg_mu);
  for (int i = 0; i < g_ncfgs; i++)
    if (g_cfgs[i]->config_id == id && g_cfgs[i]->alive) r = g_cfgs[i];
  pthread_mutex_unlock(&g_cfg_mu);
  return r;
}

/* mirrors FilterConfig::newGoPluginConfig */
static FilterConfig* new_filter_config(const char* name, size_t nl, const char* any, size_t al,
                                       char* err, size_t errn) {
  FilterConfig* fc = xcalloc(1, sizeof(FilterConfig));
  fc->plugin_name = xmemdup(name, nl);
  fc->plugin_len = nl;
  fc->any = xmemdup(any, al);
  fc->any_len = al;
  pthread_mutex_init(&fc->mu, NULL);
  fc->next_counter = 0; /* MetricType::Counter */
  fc->next_gauge = 1;
  fc->next_histogram = 2;
  fc->alive = 1;
  HttpCfgInternal* ci = xcalloc(1, sizeof(HttpCfgInternal));
  ci->weak = fc;
  ci->c.plugin_name_ptr = (uint64_t)(uintptr_t)fc->plugin_name;
  ci->c.plugin_name_len = nl;
  /* the serialized Any lives only for the call, like Envoy's local buf */
  char* buf = xmemdup(any, al);
  ci->c.config_ptr = (uint64_t)(uintptr_t)buf;
  ci->c.config_len = al;
  ci->c.is_route_config = 0;
  ci->c.concurrency = (uint32_t)g_nworkers;
  fc->internal = ci;
  atomic_fetch_add(&g_live_http_cfg_internal, 1);
  pthread_mutex_lock(&g_cfg_mu);
  g_cfgs = xrealloc(g_cfgs, sizeof(*g_cfgs) * (size_t)(g_ncfgs + 1));
  g_cfgs[g_ncfgs++] = fc;
  pthread_mutex_unlock(&g_cfg_mu);
  fc->config_id = L.new_config(&ci->c);
  free(buf);
  ci->c.config_ptr = 0;
  if (fc->config_id == 0) {
    /* Envoy throws "golang filter failed to parse plugin config" */
    snprintf(err, errn, "golang filter failed to parse plugin config (plugin %.*s)", (int)nl, name);
    pthread_mutex_lock(&g_cfg_mu);
    fc->alive = 0;
    pthread_mutex_unlock(&g_cfg_mu);
    return NULL;
  }
  return fc;
}

/* mirrors RoutePluginConfig::getConfigId */
static uint64_t route_get_config_id(RouteCfg* rc) {
  char* buf = xmemdup(rc->any, rc->any_len);
  rc->config_.plugin_name_ptr = (uint64_t)(uintptr_t)rc->plugin_name;
  rc->config_.plugin_name_len = rc->plugin_len;
  rc->config_.config_ptr = (uint64_t)(uintptr_t)buf;
  rc->config_.config_len = rc->any_len;
  rc->config_.is_route_config = 1;
  uint64_t id = L.new_config(&rc->config_);
  free(buf);
  return id;
}

/* mirrors RoutePluginConfig::getMergedConfigId */
static uint64_t route_merged_id(RouteCfg* rc, uint64_t parent_id) {
  pthread_rwlock_rdlock(&rc->mu);
  if (rc->merged_config_id > 0 && rc->cached_parent_id == parent_id) {
    uint64_t id = rc->merged_config_id;
    pthread_rwlock_unlock(&rc->mu);
    return id;
  }
  pthread_rwlock_unlock(&rc->mu);
  pthread_rwlock_wrlock(&rc->mu);
  if (rc->merged_config_id > 0) {
    if (rc->cached_parent_id == parent_id) {
      uint64_t id = rc->merged_config_id;
      pthread_rwlock_unlock(&rc->mu);
      return id;
    }
    L.destroy_config(rc->merged_config_id, 1);
  }
  if (rc->config_id == 0) rc->config_id = route_get_config_id(rc);
  rc->merged_config_id = L.merge_config((uint64_t)(uintptr_t)rc->plugin_name, rc->plugin_len,
                                        parent_id, rc->config_id);
  rc->cached_parent_id = parent_id;
  uint64_t id = rc->merged_config_id;
  pthread_rwlock_unlock(&rc->mu);
  return id;
}

/* ------------------------------------------------------ request specs */
/* Stream info values a test sets (the StreamInfo Envoy would hold). */
enum {
  SI_PROTOCOL,
  SI_RESPONSE_CODE,
  SI_RESPONSE_CODE_DETAILS,
  SI_RESPONSE_FLAGS,
  SI_ATTEMPT_COUNT,
  SI_ROUTE_NAME,
  SI_FILTER_CHAIN_NAME,
  SI_VIRTUAL_CLUSTER_NAME,
  SI_VIRTUAL_HOST_NAME,
  SI_UPSTREAM_CLUSTER_NAME,
  SI_DOWNSTREAM_LOCAL_ADDRESS,
  SI_DOWNSTREAM_REMOTE_ADDRESS,
  SI_UPSTREAM_LOCAL_ADDRESS,
  SI_UPSTREAM_REMOTE_ADDRESS,
  SI_REQUESTED_SERVER_NAME,
  SI_CONNECTION_ID,
  SI_SSL,
  SI_SSL_PEER_PRESENTED,
  SI_SSL_PEER_VALIDATED,
  SI_SSL_URI_SAN_PEER,
  SI_SSL_URI_SAN_LOCAL,
  SI_SSL_DNS_SAN_PEER,
  SI_SSL_DNS_SAN_LOCAL,
  SI_SSL_SUBJECT_PEER,
  SI_SSL_SUBJECT_LOCAL,
  SI_SSL_ISSUER_PEER,
  SI_SSL_SERIAL_PEER,
  SI_SSL_SHA256_PEER,
  SI_SSL_TLS_VERSION,
  SI_SSL_CIPHER,
  SI_SSL_CIPHER_ID,
  SI_SSL_SESSION_ID,
  SI_SSL_VALID_FROM,
  SI_SSL_EXPIRATION,
  SI_SSL_PEM_PEER,
  SI_SSL_PEM_PEER_CHAIN,
  SI_REQUEST_DURATION_NS,
  SI_START_TIME_NS,
  SI_BYTES_RECEIVED,
  SI_BYTES_SENT,
  SI_UPSTREAM_TRANSPORT_FAILURE_REASON,
  SI_N
};
static const char* si_names[SI_N] = {
    "protocol",
    "response_code",
    "response_code_details",
    "response_flags",
    "attempt_count",
    "route_name",
    "filter_chain_name",
    "virtual_cluster_name",
    "virtual_host_name",
    "upstream_cluster_name",
    "downstream_local_address",
    "downstream_remote_address",
    "upstream_local_address",
    "upstream_remote_address",
    "requested_server_name",
    "connection_id",
    "ssl",
    "ssl_peer_presented",
    "ssl_peer_validated",
    "ssl_uri_san_peer",
    "ssl_uri_san_local",
    "ssl_dns_san_peer",
    "ssl_dns_san_local",
    "ssl_subject_peer",
    "ssl_subject_local",
    "ssl_issuer_peer",
    "ssl_serial_peer",
    "ssl_sha256_peer",
    "ssl_tls_version",
    "ssl_cipher",
    "ssl_cipher_id",
    "ssl_session_id",
    "ssl_valid_from",
    "ssl_expiration",
    "ssl_pem_peer",
    "ssl_pem_peer_chain",
    "request_duration_ns",
    "start_time_ns",
    "bytes_received",
    "bytes_sent",
    "upstream_transport_failure_reason",
};

typedef struct {
  char* v;
  size_t n;
  int has;
} SIVal;

typedef struct KV {
  char* k;
  size_t kl;
  char* v;
  size_t vl;
  int status;
} KV;

enum {
  OP_LOG_START,
  OP_REQ_HEADERS,
  OP_REQ_DATA,
  OP_REQ_TRAILERS,
  OP_WAIT_UPSTREAM,
  OP_RESP_HEADERS,
  OP_RESP_DATA,
  OP_RESP_TRAILERS,
  OP_WAIT_DOWNSTREAM,
  OP_PAUSE,
  OP_COMPLETE,
  OP_LOG,
  OP_DESTROY,
  OP_HOLD,
};
typedef struct Step {
  int op;
  int end;
  long arg;
  HMap* h;
  Buf* data;
} Step;

typedef struct Spec {
  uint64_t config_id;
  int route;
  int worker;
  int timeout_ms;
  uint64_t buffer_limit;
  SIVal si[SI_N];
  KV* props;
  int nprops;
  KV* dmeta;
  int ndmeta;
  KV* fstate;
  int nfstate;
  Step* steps;
  int nsteps;
} Spec;

static void kv_push(KV** arr, int* n, const char* k, size_t kl, const char* v, size_t vl, int st) {
  *arr = xrealloc(*arr, sizeof(KV) * (size_t)(*n + 1));
  KV* e = &(*arr)[(*n)++];
  e->k = xmemdup(k, kl);
  e->kl = kl;
  e->v = xmemdup(v, vl);
  e->vl = vl;
  e->status = st;
}
static void kv_free(KV* a, int n) {
  for (int i = 0; i < n; i++) {
    free(a[i].k);
    free(a[i].v);
  }
  free(a);
}
static void spec_free(Spec* s) {
  if (!s) return;
  for (int i = 0; i < SI_N; i++) free(s->si[i].v);
  kv_free(s->props, s->nprops);
  kv_free(s->dmeta, s->ndmeta);
  kv_free(s->fstate, s->nfstate);
  for (int i = 0; i < s->nsteps; i++) {
    hm_free(s->steps[i].h);
    buf_free(s->steps[i].data);
  }
  free(s->steps);
  free(s);
}

/* per-proxy (node) property table */
static KV* g_nodeprops;
static int g_nnodeprops;
static int g_node_in_cel; /* 0: Envoy v1.39.1 behaviour (xds.node not found) */
static int g_log_level = 2; /* info */

/* ------------------------------------------------ protobuf helpers */
/* just enough wire format for google.protobuf.Struct/Value and
 * envoy.config.core.v3.Metadata (dynamic metadata) */
static int pb_varint(const unsigned char** p, const unsigned char* e, uint64_t* v) {
  uint64_t r = 0;
  int sh = 0;
  while (*p < e && sh < 64) {
    unsigned char c = *(*p)++;
    r |= (uint64_t)(c & 0x7f) << sh;
    if (!(c & 0x80)) {
      *v = r;
      return 1;
    }
    sh += 7;
  }
  return 0;
}
/* next field: returns 1 and fills tag/wire and (for LEN) data; skips others */
static int pb_next(const unsigned char** p, const unsigned char* e, int* field, int* wire,
                   const unsigned char** d, size_t* dn, uint64_t* num) {
  uint64_t key;
  if (*p >= e || !pb_varint(p, e, &key)) return 0;
  *field = (int)(key >> 3);
  *wire = (int)(key & 7);
  *d = NULL;
  *dn = 0;
  *num = 0;
  switch (*wire) {
  case 0:
    return pb_varint(p, e, num);
  case 1:
    if (e - *p < 8) return 0;
    memcpy(num, *p, 8);
    *p += 8;
    return 1;
  case 5:
    if (e - *p < 4) return 0;
    {
      uint32_t x;
      memcpy(&x, *p, 4);
      *num = x;
    }
    *p += 4;
    return 1;
  case 2: {
    uint64_t l;
    if (!pb_varint(p, e, &l) || (uint64_t)(e - *p) < l) return 0;
    *d = *p;
    *dn = (size_t)l;
    *p += l;
    return 1;
  }
  }
  return 0;
}
static void pb_put_varint(SB* s, uint64_t v) {
  while (v >= 0x80) {
    sb_addc(s, (char)(v | 0x80));
    v >>= 7;
  }
  sb_addc(s, (char)v);
}
static void pb_put_len(SB* s, int field, const void* p, size_t n) {
  pb_put_varint(s, ((uint64_t)field << 3) | 2);
  pb_put_varint(s, n);
  sb_add(s, p, n);
}

/* dynamic metadata: filter name -> Struct fields (key -> Value bytes) */
typedef struct DMeta {
  char* filter;
  KV* fields;
  int nfields;
} DMeta;

static void dmeta_merge_field(DMeta* d, const char* k, size_t kl, const char* v, size_t vl) {
  for (int i = 0; i < d->nfields; i++)
    if (d->fields[i].kl == kl && memcmp(d->fields[i].k, k, kl) == 0) {
      free(d->fields[i].v);
      d->fields[i].v = xmemdup(v, vl);
      d->fields[i].vl = vl;
      return;
    }
  kv_push(&d->fields, &d->nfields, k, kl, v, vl, 0);
}
/* parse a serialized Struct into d (merging, like Struct MergeFrom) */
static void dmeta_merge_struct(DMeta* d, const char* p, size_t n) {
  const unsigned char *q = (const unsigned char*)p, *e = q + n;
  int f, w;
  const unsigned char* dd;
  size_t dn;
  uint64_t num;
  while (pb_next(&q, e, &f, &w, &dd, &dn, &num)) {
    if (f != 1 || w != 2) continue;
    const unsigned char *q2 = dd, *e2 = dd + dn;
    const unsigned char *key = NULL, *val = NULL;
    size_t keyn = 0, valn = 0;
    int f2, w2;
    const unsigned char* d2;
    size_t dn2;
    uint64_t num2;
    while (pb_next(&q2, e2, &f2, &w2, &d2, &dn2, &num2)) {
      if (f2 == 1 && w2 == 2) {
        key = d2;
        keyn = dn2;
      } else if (f2 == 2 && w2 == 2) {
        val = d2;
        valn = dn2;
      }
    }
    if (key) dmeta_merge_field(d, (const char*)key, keyn, val ? (const char*)val : "", valn);
  }
}
static void dmeta_struct_bytes(SB* s, DMeta* d) {
  for (int i = 0; i < d->nfields; i++) {
    SB ent = {0};
    pb_put_len(&ent, 1, d->fields[i].k, d->fields[i].kl);
    pb_put_len(&ent, 2, d->fields[i].v, d->fields[i].vl);
    pb_put_len(s, 1, ent.d ? ent.d : "", ent.n);
    sb_free(&ent);
  }
}

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

/* --------------------------------------------- Filter (golang_filter.cc) */
/* Filter::getMergedConfigId */
static uint64_t get_merged_config_id(Filter* f) {
  uint64_t id = f->cfg->config_id;
  if (f->route && f->route->plugin_len == f->cfg->plugin_len &&
      memcmp(f->route->plugin_name, f->cfg->plugin_name, f->cfg->plugin_len) == 0)
    id = route_merged_id(f->route, id);
  return id;
}
/* Filter::initRequest */
static int init_request(Filter* f) {
  if (f->req->r.configId == 0) {
    pthread_mutex_lock(&f->req->wmu);
    f->req->filter = f; /* req_->setWeakFilter(weak_from_this()) */
    pthread_mutex_unlock(&f->req->wmu);
    f->req->r.configId = get_merged_config_id(f);
    return 1;
  }
  return 0;
}

/* Filter::doHeadersGo */
static uint64_t do_headers_go(Filter* f, ProcState* s, HMap* h, int end) {
  init_request(f);
  s->passed_hnum = (uint64_t)h->n;
  s->passed_hbytes = h->bytes;
  uint64_t st = L.on_header(&s->ps, end ? 1 : 0, (uint64_t)h->n, h->bytes);
  record_call(f, "OnHttpHeader", s->ps.is_encoding ? ENC : DEC, st);
  return st;
}
/* Filter::doHeaders */
static int do_headers(Filter* f, ProcState* s, HMap* h, int end) {
  if (!is_buffer_empty(s)) note_event("doHeaders with buffered data (Envoy ASSERT)", s->hreq);
  s->headers = h;
  if (s->ps.state != FS_WaitingHeader) note_event("processHeader not in WaitingHeader (Envoy ASSERT)", s->hreq);
  s->ps.state = FS_ProcessingHeader; /* processHeader */
  s->do_end_stream = end;
  uint64_t st = do_headers_go(f, s, h, end);
  int done = handle_header_status(s, st);
  if (done) s->headers = NULL;
  return done;
}
/* Filter::doDataGo */
static int do_data_go(Filter* f, ProcState* s, Buf* data, int end) {
  s->ps.state = FS_ProcessingData; /* processData */
  s->do_end_stream = end;
  Buf* b = ddl_push(s, data);
  uint64_t st = L.on_data(&s->ps, end ? 1 : 0, (uint64_t)(uintptr_t)b, b->len);
  record_call(f, "OnHttpData", s->ps.is_encoding ? ENC : DEC, st);
  return handle_data_status(s, st);
}
/* Filter::doData */
static int do_data(Filter* f, ProcState* s, Buf* data, int end) {
  int done = 0;
  switch (s->ps.state) {
  case FS_WaitingData:
    done = do_data_go(f, s, data, end);
    break;
  case FS_WaitingAllData:
    if (end) {
      if (!is_buffer_empty(s)) {
        add_buffer_data(f, s, data);
        buf_move(data, s->data_buffer);
      }
      if (s->ps.state == FS_WaitingAllData) done = do_data_go(f, s, data, end);
      break;
    }
    /* fallthrough */
  case FS_ProcessingHeader:
  case FS_ProcessingData:
    add_buffer_data(f, s, data);
    break;
  default:
    note_event("doData in unexpected state", s->hreq);
    break;
  }
  return done;
}
/* Filter::doTrailerGo */
static int do_trailer_go(Filter* f, ProcState* s, HMap* t) {
  s->ps.state = FS_ProcessingTrailer; /* processTrailer */
  s->do_end_stream = 1;
  s->passed_tnum = (uint64_t)t->n;
  s->passed_tbytes = t->bytes;
  uint64_t st = L.on_header(&s->ps, 1, (uint64_t)t->n, t->bytes);
  record_call(f, "OnHttpHeader", s->ps.is_encoding ? ENC : DEC, st);
  return handle_trailer_status(s, st);
}
/* Filter::doTrailer */
static int do_trailer(Filter* f, ProcState* s, HMap* t) {
  s->trailers = t;
  int done = 0;
  switch (s->ps.state) {
  case FS_WaitingTrailer:
  case FS_WaitingData:
    done = do_trailer_go(f, s, t);
    break;
  case FS_WaitingAllData:
    if (!is_buffer_empty(s)) {
      done = do_data_go(f, s, s->data_buffer, 0);
      if (s->ps.state == FS_WaitingTrailer) {
        continue_do_data(f, s);
        done = do_trailer_go(f, s, t);
      }
    } else {
      continue_do_data(f, s);
      done = do_trailer_go(f, s, t);
    }
    break;
  case FS_ProcessingHeader:
  case FS_ProcessingData:
    break;
  default:
    note_event("doTrailer in unexpected state", s->hreq);
    break;
  }
  return done;
}

/* Filter::decodeHeaders/decodeData/decodeTrailers/encode* */
static int filter_decode_headers(Filter* f, HMap* h, int end) {
  ProcState* s = &f->req->dec;
  f->request_headers_ = h;
  s->end_stream = end;
  return do_headers(f, s, h, end);
}
static int filter_data(Filter* f, int dir, Buf* data, int end) {
  ProcState* s = pstate(f, dir);
  s->end_stream = end;
  int done = do_data(f, s, data, end);
  if (done) ddl_move_out(s, data); /* state.doDataList.moveOut(data) */
  return done;
}
static int filter_encode_data(Filter* f, Buf* data, int end) { return filter_data(f, ENC, data, end); }
static int filter_trailers(Filter* f, int dir, HMap* t) {
  if (dir == DEC)
    f->request_trailers_ = t;
  else
    f->act_resp_trailers = t;
  return do_trailer(f, pstate(f, dir), t);
}
static int filter_encode_headers(Filter* f, HMap* h, int end) {
  ProcState* s = &f->req->enc;
  s->end_stream = end;
  f->act_resp_headers = h;
  return do_headers(f, s, h, end);
}

static int has_destroyed(Filter* f) { return atomic_load(&f->has_destroyed); }
static int weak_expired(Filter* f) { return atomic_load(&f->gone); }

/* Filter::continueStatusInternal */
static void continue_status_internal(Filter* f, ProcState* s, uint64_t status) {
  int saved = s->ps.state;
  record_call(f, "Continue", s->ps.is_encoding ? ENC : DEC, status);
  if (!is_processing_in_go(s)) {
    note_event("continueStatusInternal while not processing in Go (Envoy ASSERT)", s->hreq);
    return;
  }
  int done = handle_golang_status(s, status);
  if (done) {
    switch (saved) {
    case FS_ProcessingHeader:
      if (s->do_end_stream || !is_stream_end(s)) continue_processing(f, s);
      break;
    case FS_ProcessingData:
      continue_do_data(f, s);
      break;
    case FS_ProcessingTrailer:
      continue_do_data(f, s);
      if (has_destroyed(f)) return;
      continue_processing(f, s);
      break;
    }
    if (has_destroyed(f)) return;
  }
  int cur = s->ps.state;
  if ((cur == FS_WaitingData && (!is_buffer_empty(s) || s->end_stream)) ||
      (cur == FS_WaitingAllData && is_stream_end(s))) {
    if (!s->data_buffer) s->data_buffer = buf_new();
    int d = do_data_go(f, s, s->data_buffer, s->end_stream);
    if (d) {
      continue_do_data(f, s);
      if (has_destroyed(f)) return;
    } else {
      return;
    }
  }
  if (s->ps.state == FS_WaitingTrailer && s->trailers != NULL) {
    if (do_trailer_go(f, s, s->trailers)) continue_processing(f, s);
  }
}

/* Filter::sendLocalReplyInternal + {De,En}codingProcessorState::sendLocalReply */
typedef struct LRArgs {
  Filter* f;
  ProcState* s;
  int code;
  char* body;
  size_t bodyn;
  char** hv;
  int nhv;
  long long grpc;
  char* details;
  size_t detn;
} LRArgs;
static void lr_free(LRArgs* a) {
  free(a->body);
  for (int i = 0; i < a->nhv; i++) free(a->hv[i]);
  free(a->hv);
  free(a->details);
  free(a);
}
static void send_local_reply_internal(LRArgs* a) {
  Filter* f = a->f;
  ProcState* s = a->s;
  ddl_clear(s);
  drain_buffer_data(s);
  int dir = s->ps.is_encoding ? ENC : DEC;
  if (dir == DEC) s->ps.state = FS_WaitingHeader;
  /* cgo.cc casts the Go int64 into a GrpcStatus that is always set */
  fm_send_local_reply(f, dir, a->code, a->body, a->bodyn, a->hv, a->nhv, 1, a->grpc, a->details,
                      a->detn);
}
static void task_local_reply(void* arg) {
  LRArgs* a = arg;
  Filter* f = a->f;
  if (!weak_expired(f) && !has_destroyed(f)) send_local_reply_internal(a);
  filter_unref(f);
  lr_free(a);
}
typedef struct ContArgs {
  Filter* f;
  ProcState* s;
  uint64_t status;
} ContArgs;
static void task_continue(void* arg) {
  ContArgs* a = arg;
  if (!weak_expired(a->f) && !has_destroyed(a->f)) continue_status_internal(a->f, a->s, a->status);
  filter_unref(a->f);
  free(a);
}

/* ------------------------------------------- host functions: HTTP (cgo.cc) */
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
  PS_WRAP("HttpSendLocalReply");
  DONE("HttpSendLocalReply",
       send_local_reply(f, s, response_code, body_text_data, (size_t)body_text_len, headers, headers_num,
                        grpc_status, details_data, (size_t)details_len));
}
/* Filter::sendPanicReply */
CAPIStatus envoyGoFilterHttpSendPanicReply(void* sp, void* details_data, int details_len) {
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
  PS_WRAP("HttpSetHeader");
  DONE("HttpSetHeader",
       mutate_map(f, s, 0, key_data, (size_t)key_len, value_data, (size_t)value_len, (int)act));
}
CAPIStatus envoyGoFilterHttpRemoveHeader(void* sp, void* key_data, int key_len) {
  PS_WRAP("HttpRemoveHeader");
  DONE("HttpRemoveHeader", mutate_map(f, s, 0, key_data, (size_t)key_len, NULL, 0, 2));
}
CAPIStatus envoyGoFilterHttpSetTrailer(void* sp, void* key_data, int key_len, void* value,
                                       int value_len, headerAction act) {
  PS_WRAP("HttpSetTrailer");
  DONE("HttpSetTrailer", mutate_map(f, s, 1, key_data, (size_t)key_len, value, (size_t)value_len, (int)act));
}
CAPIStatus envoyGoFilterHttpRemoveTrailer(void* sp, void* key_data, int key_len) {
  PS_WRAP("HttpRemoveTrailer");
  DONE("HttpRemoveTrailer", mutate_map(f, s, 1, key_data, (size_t)key_len, NULL, 0, 2));
}
/* Filter::copyTrailers */
CAPIStatus envoyGoFilterHttpCopyTrailers(void* sp, void* strs, void* buf) {
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
  PS_WRAP("HttpGetBuffer");
  Buf* b = (Buf*)(uintptr_t)buffer;
  CAPIStatus st = buf_check(f, s, b);
  if (st == CAPIOK && b->len) memcpy(value, b->d, b->len);
  DONE("HttpGetBuffer", st);
}
CAPIStatus envoyGoFilterHttpDrainBuffer(void* sp, uint64_t buffer, uint64_t length) {
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
  (void)refresh;
  REQ_WRAP("HttpClearRouteCache");
  if (has_destroyed(f)) RDONE("HttpClearRouteCache", CAPIFilterIsDestroy);
  pthread_mutex_lock(&f->mu);
  f->route_cache_cleared++; /* no routing in the host: recorded only */
  pthread_mutex_unlock(&f->mu);
  RDONE("HttpClearRouteCache", CAPIOK);
}

/* ------------------------------------------------ stream info values */
static SIVal* siv(Filter* f, int k) { return &f->spec->si[k]; }
static int si_has(Filter* f, int k) { return f->spec->si[k].has; }
static uint64_t si_u64(Filter* f, int k) { return strtoull(f->spec->si[k].v ? f->spec->si[k].v : "0", NULL, 10); }
static int ssl_on(Filter* f) { return si_has(f, SI_SSL) && strcmp(siv(f, SI_SSL)->v, "0") != 0; }
static int si_bool(Filter* f, int k) { return si_has(f, k) && strcmp(siv(f, k)->v, "0") != 0 && siv(f, k)->n; }
static const char* dl_addr(Filter* f) {
  return si_has(f, SI_DOWNSTREAM_LOCAL_ADDRESS) ? siv(f, SI_DOWNSTREAM_LOCAL_ADDRESS)->v : "127.0.0.1:8080";
}
static const char* dr_addr(Filter* f) {
  return si_has(f, SI_DOWNSTREAM_REMOTE_ADDRESS) ? siv(f, SI_DOWNSTREAM_REMOTE_ADDRESS)->v : "127.0.0.1:50000";
}
static int upstream_info(Filter* f) {
  return si_has(f, SI_UPSTREAM_REMOTE_ADDRESS) || si_has(f, SI_UPSTREAM_LOCAL_ADDRESS);
}
/* Http::Utility::getProtocolString / Http::Protocol enum */
static int protocol_id(Filter* f) {
  if (!si_has(f, SI_PROTOCOL)) return -1;
  const char* p = siv(f, SI_PROTOCOL)->v;
  if (!strcmp(p, "HTTP/1.0")) return 0;
  if (!strcmp(p, "HTTP/1.1")) return 1;
  if (!strcmp(p, "HTTP/2")) return 2;
  if (!strcmp(p, "HTTP/3")) return 3;
  return -1;
}

/* Filter::getIntegerValue */
CAPIStatus envoyGoFilterHttpGetIntegerValue(void* rp, int id, uint64_t* value) {
  REQ_WRAP("HttpGetIntegerValue");
  pthread_mutex_lock(&f->mu);
  CAPIStatus st = CAPIOK;
  if (has_destroyed(f)) {
    st = CAPIFilterIsDestroy;
    goto out;
  }
  switch (id) {
  case 3: { /* Protocol */
    int p = protocol_id(f);
    if (p < 0)
      st = CAPIValueNotFound;
    else
      *value = (uint64_t)p;
    break;
  }
  case 4: /* ResponseCode */
    if (!f->code_has)
      st = CAPIValueNotFound;
    else
      *value = f->code;
    break;
  case 6: /* AttemptCount */
    if (!si_has(f, SI_ATTEMPT_COUNT))
      st = CAPIValueNotFound;
    else
      *value = si_u64(f, SI_ATTEMPT_COUNT);
    break;
  case 100: /* SslConnectionExists */
    *value = ssl_on(f) ? 1 : 0;
    break;
  case 101:
  case 102:
    if (!ssl_on(f))
      st = CAPIValueNotFound;
    else
      *value = si_bool(f, id == 101 ? SI_SSL_PEER_PRESENTED : SI_SSL_PEER_VALIDATED) ? 1 : 0;
    break;
  case 103: /* SslCiphersuiteId */
    if (!ssl_on(f) || !si_has(f, SI_SSL_CIPHER_ID) || si_u64(f, SI_SSL_CIPHER_ID) == 0xffff)
      st = CAPIValueNotFound;
    else
      *value = si_u64(f, SI_SSL_CIPHER_ID);
    break;
  case 104:
  case 105: {
    int k = id == 104 ? SI_SSL_VALID_FROM : SI_SSL_EXPIRATION;
    if (!ssl_on(f) || !si_has(f, k))
      st = CAPIValueNotFound;
    else
      *value = si_u64(f, k);
    break;
  }
  default:
    note_event("invalid integer value id (Envoy RELEASE_ASSERT would abort)", hr);
    st = CAPIInternalFailure;
  }
out:
  pthread_mutex_unlock(&f->mu);
  filter_unref(f);
  char idb[16];
  snprintf(idb, sizeof idb, "%d", id);
  note_capi_key("HttpGetIntegerValue", st, hr, NULL, idb, strlen(idb));
  return st;
}

static void set_str(HttpReq* r, const char* p, size_t n) {
  sb_reset(&r->str);
  sb_add(&r->str, p ? p : "", p ? n : 0);
}
/* Filter::getStringValue */
CAPIStatus envoyGoFilterHttpGetStringValue(void* rp, int id, uint64_t* value_data, int* value_len) {
  REQ_WRAP("HttpGetStringValue");
  pthread_mutex_lock(&f->mu);
  CAPIStatus st = CAPIOK;
  SIVal* v;
  if (has_destroyed(f)) {
    st = CAPIFilterIsDestroy;
    goto out;
  }
#define SIV_OR_EMPTY(k) (v = siv(f, k), set_str(hr, v->has ? v->v : "", v->has ? v->n : 0))
#define SIV_OR_NF(k)            \
  do {                          \
    v = siv(f, k);              \
    if (!v->has)                \
      st = CAPIValueNotFound;   \
    else                        \
      set_str(hr, v->v, v->n);  \
  } while (0)
  switch (id) {
  case 1: SIV_OR_EMPTY(SI_ROUTE_NAME); break;
  case 2: SIV_OR_EMPTY(SI_FILTER_CHAIN_NAME); break;
  case 5:
    if (!f->details)
      st = CAPIValueNotFound;
    else
      set_str(hr, f->details, f->details_n);
    break;
  case 7: set_str(hr, dl_addr(f), strlen(dl_addr(f))); break;
  case 8: set_str(hr, dr_addr(f), strlen(dr_addr(f))); break;
  case 9: SIV_OR_NF(SI_UPSTREAM_LOCAL_ADDRESS); break;
  case 10: SIV_OR_NF(SI_UPSTREAM_REMOTE_ADDRESS); break;
  case 11: SIV_OR_NF(SI_UPSTREAM_CLUSTER_NAME); break;
  case 12: SIV_OR_NF(SI_VIRTUAL_CLUSTER_NAME); break;
  case 106: case 107: case 108: case 109: case 110: case 111: case 112: case 113: case 114:
  case 115: case 116: case 117: case 118: case 119: {
    static const int map[] = {SI_SSL_SHA256_PEER, SI_SSL_SERIAL_PEER, SI_SSL_SUBJECT_PEER,
                              SI_SSL_ISSUER_PEER, SI_SSL_SUBJECT_LOCAL, SI_SSL_TLS_VERSION,
                              SI_SSL_CIPHER, SI_SSL_SESSION_ID, SI_SSL_PEM_PEER,
                              SI_SSL_PEM_PEER_CHAIN, SI_SSL_URI_SAN_PEER, SI_SSL_URI_SAN_LOCAL,
                              SI_SSL_DNS_SAN_PEER, SI_SSL_DNS_SAN_LOCAL};
    if (!ssl_on(f)) {
      st = CAPIValueNotFound;
      break;
    }
    v = siv(f, map[id - 106]);
    if (id == 112 && (!v->has || v->n == 0)) { /* empty ciphersuite string: not found */
      st = CAPIValueNotFound;
      break;
    }
    /* SAN lists are NUL separated in the table already, as Envoy joins them */
    set_str(hr, v->has ? v->v : "", v->has ? v->n : 0);
    break;
  }
  default:
    note_event("invalid string value id (Envoy RELEASE_ASSERT would abort)", hr);
    st = CAPIInternalFailure;
  }
  if (st == CAPIOK) {
    *value_data = (uint64_t)(uintptr_t)hr->str.d;
    *value_len = (int)hr->str.n;
  }
out:
  pthread_mutex_unlock(&f->mu);
  filter_unref(f);
  char idb[16];
  snprintf(idb, sizeof idb, "%d", id);
  note_capi_key("HttpGetStringValue", st, hr, NULL, idb, strlen(idb));
  return st;
}

/* -------------------------------------------- dynamic metadata */
static DMeta* dmeta_find(Filter* f, const char* name, size_t n, int create) {
  for (int i = 0; i < f->ndmeta; i++)
    if (strlen(f->dmeta[i].filter) == n && memcmp(f->dmeta[i].filter, name, n) == 0) return &f->dmeta[i];
  if (!create) return NULL;
  f->dmeta = xrealloc(f->dmeta, sizeof(DMeta) * (size_t)(f->ndmeta + 1));
  DMeta* d = &f->dmeta[f->ndmeta++];
  memset(d, 0, sizeof *d);
  d->filter = xmemdup(name, n);
  return d;
}
/* Filter::populateSliceWithMetadata */
static void populate_metadata(Filter* f, const char* name, size_t n, uint64_t* buf_data, int* buf_len) {
  DMeta* d = dmeta_find(f, name, n, 0);
  if (d) {
    sb_reset(&f->req->str);
    dmeta_struct_bytes(&f->req->str, d);
    if (!f->req->str.d) sb_adds(&f->req->str, "");
    *buf_data = (uint64_t)(uintptr_t)f->req->str.d;
    *buf_len = (int)f->req->str.n;
  }
}
typedef struct MetaArgs {
  Filter* f;
  char* name;
  size_t n;
  uint64_t* buf_data;
  int* buf_len;
  char* key;
  size_t kl;
  char* val;
  size_t vl;
  int* rc;
  int kind; /* 0 get dmeta, 1 set dmeta, 2 get fstate, 3 get property, 4 set fstate */
  int life, share, stype;
} MetaArgs;
static void fstate_set(Filter* f, const char* k, size_t kl, const char* v, size_t vl, int stype) {
  for (int i = 0; i < f->nfstate; i++)
    if (f->fstate[i].kl == kl && memcmp(f->fstate[i].k, k, kl) == 0) {
      if (f->fstate[i].status == 0 /* ReadOnly */) {
        note_event("FilterState::setData called twice on same ReadOnly state (Envoy throws)", f->req);
        return;
      }
      free(f->fstate[i].v);
      f->fstate[i].v = xmemdup(v, vl);
      f->fstate[i].vl = vl;
      f->fstate[i].status = stype;
      return;
    }
  kv_push(&f->fstate, &f->nfstate, k, kl, v, vl, stype);
}
static KV* fstate_get(Filter* f, const char* k, size_t kl) {
  for (int i = 0; i < f->nfstate; i++)
    if (f->fstate[i].kl == kl && memcmp(f->fstate[i].k, k, kl) == 0) return &f->fstate[i];
  return NULL;
}
static int prop_get(Filter* f, const char* path, size_t n, SB* out);
static void task_meta(void* arg) {
  MetaArgs* a = arg;
  Filter* f = a->f;
  if (!weak_expired(f) && !has_destroyed(f)) {
    switch (a->kind) {
    case 0:
      populate_metadata(f, a->name, a->n, a->buf_data, a->buf_len);
      L.sema_dec(&f->req->r);
      break;
    case 1: {
      DMeta* d = dmeta_find(f, a->name, a->n, 1); /* setDynamicMetadataInternal */
      dmeta_merge_field(d, a->key, a->kl, a->val, a->vl);
      break;
    }
    case 2: {
      KV* e = fstate_get(f, a->key, a->kl);
      if (e) {
        set_str(f->req, e->v, e->vl);
        *a->buf_data = (uint64_t)(uintptr_t)f->req->str.d;
        *a->buf_len = (int)f->req->str.n;
      }
      L.sema_dec(&f->req->r);
      break;
    }
    case 3: {
      SB tmp = {0};
      int st = prop_get(f, a->key, a->kl, &tmp);
      if (st == CAPIOK) {
        set_str(f->req, tmp.d, tmp.n);
        *a->buf_data = (uint64_t)(uintptr_t)f->req->str.d;
        *a->buf_len = (int)f->req->str.n;
      }
      *a->rc = st;
      note_capi_key("HttpGetStringProperty(posted)", (CAPIStatus)st, f->req, NULL, a->key, a->kl);
      sb_free(&tmp);
      L.sema_dec(&f->req->r);
      break;
    }
    case 4:
      fstate_set(f, a->key, a->kl, a->val, a->vl, a->stype);
      break;
    }
  }
  filter_unref(f);
  free(a->name);
  free(a->val);
  if (a->kind != 3) free(a->key); /* kind 3 refers to Go memory (string_view) */
  free(a);
}
static MetaArgs* meta_args(Filter* f, int kind) {
  MetaArgs* a = xcalloc(1, sizeof *a);
  a->f = f;
  a->kind = kind;
  filter_ref(f);
  return a;
}
/* Filter::getDynamicMetadata */
CAPIStatus envoyGoFilterHttpGetDynamicMetadata(void* rp, void* name_data, int name_len,
                                               uint64_t* buf_data, int* buf_len) {
  REQ_WRAP("HttpGetDynamicMetadata");
  pthread_mutex_lock(&f->mu);
  CAPIStatus st = CAPIOK;
  if (has_destroyed(f)) {
    st = CAPIFilterIsDestroy;
  } else if (!is_thread_safe(f->w)) {
    MetaArgs* a = meta_args(f, 0);
    a->name = xmemdup(name_data, (size_t)name_len);
    a->n = (size_t)name_len;
    a->buf_data = buf_data;
    a->buf_len = buf_len;
    post(f->w, task_meta, a);
    st = CAPIYield;
  } else {
    populate_metadata(f, name_data, (size_t)name_len, buf_data, buf_len);
  }
  pthread_mutex_unlock(&f->mu);
  RDONE("HttpGetDynamicMetadata", st);
}
/* Filter::setDynamicMetadata */
CAPIStatus envoyGoFilterHttpSetDynamicMetadata(void* rp, void* name_data, int name_len, void* key_data,
                                               int key_len, void* buf_data, int buf_len) {
  REQ_WRAP("HttpSetDynamicMetadata");
  if (has_destroyed(f)) RDONE("HttpSetDynamicMetadata", CAPIFilterIsDestroy);
  if (!is_thread_safe(f->w)) {
    MetaArgs* a = meta_args(f, 1);
    a->name = xmemdup(name_data, (size_t)name_len);
    a->n = (size_t)name_len;
    a->key = xmemdup(key_data, (size_t)key_len);
    a->kl = (size_t)key_len;
    a->val = xmemdup(buf_data, (size_t)buf_len);
    a->vl = (size_t)buf_len;
    post(f->w, task_meta, a);
    RDONE("HttpSetDynamicMetadata", CAPIOK);
  }
  DMeta* d = dmeta_find(f, name_data, (size_t)name_len, 1);
  dmeta_merge_field(d, key_data, (size_t)key_len, buf_data, (size_t)buf_len);
  RDONE("HttpSetDynamicMetadata", CAPIOK);
}

/* Filter::setStringFilterState */
CAPIStatus envoyGoFilterHttpSetStringFilterState(void* rp, void* key_data, int key_len, void* value_data,
                                                 int value_len, int state_type, int life_span,
                                                 int stream_sharing) {
  REQ_WRAP("HttpSetStringFilterState");
  (void)life_span;
  (void)stream_sharing;
  if (has_destroyed(f)) RDONE("HttpSetStringFilterState", CAPIFilterIsDestroy);
  if (is_thread_safe(f->w)) {
    fstate_set(f, key_data, (size_t)key_len, value_data, (size_t)value_len, state_type);
  } else {
    MetaArgs* a = meta_args(f, 4);
    a->key = xmemdup(key_data, (size_t)key_len);
    a->kl = (size_t)key_len;
    a->val = xmemdup(value_data, (size_t)value_len);
    a->vl = (size_t)value_len;
    a->stype = state_type;
    post(f->w, task_meta, a);
  }
  RDONE("HttpSetStringFilterState", CAPIOK);
}
/* Filter::getStringFilterState */
CAPIStatus envoyGoFilterHttpGetStringFilterState(void* rp, void* key_data, int key_len,
                                                 uint64_t* value_data, int* value_len) {
  REQ_WRAP("HttpGetStringFilterState");
  pthread_mutex_lock(&f->mu);
  CAPIStatus st = CAPIOK;
  if (has_destroyed(f)) {
    st = CAPIFilterIsDestroy;
  } else if (is_thread_safe(f->w)) {
    KV* e = fstate_get(f, key_data, (size_t)key_len);
    if (e) {
      set_str(hr, e->v, e->vl);
      *value_data = (uint64_t)(uintptr_t)hr->str.d;
      *value_len = (int)hr->str.n;
    }
  } else {
    MetaArgs* a = meta_args(f, 2);
    a->key = xmemdup(key_data, (size_t)key_len);
    a->kl = (size_t)key_len;
    a->buf_data = value_data;
    a->buf_len = value_len;
    post(f->w, task_meta, a);
    st = CAPIYield;
  }
  pthread_mutex_unlock(&f->mu);
  RDONE("HttpGetStringFilterState", st);
}
/* Filter::getStringProperty */
CAPIStatus envoyGoFilterHttpGetStringProperty(void* rp, void* key_data, int key_len, uint64_t* value_data,
                                              int* value_len, int* rc) {
  REQ_WRAP("HttpGetStringProperty");
  pthread_mutex_lock(&f->mu);
  CAPIStatus st;
  if (has_destroyed(f)) {
    st = CAPIFilterIsDestroy;
  } else if (is_thread_safe(f->w)) {
    SB tmp = {0};
    st = (CAPIStatus)prop_get(f, key_data, (size_t)key_len, &tmp);
    if (st == CAPIOK) {
      set_str(hr, tmp.d, tmp.n);
      *value_data = (uint64_t)(uintptr_t)hr->str.d;
      *value_len = (int)hr->str.n;
    }
    sb_free(&tmp);
  } else {
    MetaArgs* a = meta_args(f, 3);
    a->key = key_data; /* absl::string_view into Go memory, as Envoy captures it */
    a->kl = (size_t)key_len;
    a->buf_data = value_data;
    a->buf_len = value_len;
    a->rc = rc;
    post(f->w, task_meta, a);
    st = CAPIYield;
  }
  pthread_mutex_unlock(&f->mu);
  filter_unref(f);
  note_capi_key("HttpGetStringProperty", st, hr, NULL, key_data, (size_t)key_len);
  return st;
}
/* Filter::getSecret: the host configures no generic secrets */
CAPIStatus envoyGoFilterHttpGetStringSecret(void* rp, void* key_data, int key_len, uint64_t* value_data,
                                            int* value_len) {
  (void)key_data;
  (void)key_len;
  (void)value_data;
  REQ_WRAP("HttpGetStringSecret");
  if (has_destroyed(f)) RDONE("HttpGetStringSecret", CAPIFilterIsDestroy);
  if (is_thread_safe(f->w)) {
    *value_len = -1;
    RDONE("HttpGetStringSecret", CAPIOK);
  }
  /* off-thread Envoy posts and answers via envoyGoRequestSemaDec */
  MetaArgs* a = meta_args(f, 2);
  a->key = xmemdup("\x01no-such-secret", 16);
  a->kl = 16;
  a->buf_data = value_data;
  a->buf_len = value_len;
  *value_len = -1;
  post(f->w, task_meta, a);
  RDONE("HttpGetStringSecret", CAPIYield);
}
/* Filter::setDrainConnectionUponCompletion */
CAPIStatus envoyGoFilterHttpSetDrainConnectionUponCompletion(void* rp) {
  REQ_WRAP("HttpSetDrainConnectionUponCompletion");
  pthread_mutex_lock(&f->mu);
  CAPIStatus st = has_destroyed(f) ? CAPIFilterIsDestroy : CAPIOK;
  if (st == CAPIOK) f->drain_upon_completion = 1;
  pthread_mutex_unlock(&f->mu);
  RDONE("HttpSetDrainConnectionUponCompletion", st);
}

static void task_deferred_delete(void* arg) {
  HttpReq* r = arg;
  deferred_delete(r->w, r);
}
/* envoyGoFilterHttpFinalize + Filter::deferredDeleteRequest */
void envoyGoFilterHttpFinalize(void* rp, int reason) {
  (void)reason;
  HttpReq* r = rp;
  Filter* f = weak_lock(r);
  if (f) {
    if (is_thread_safe(f->w))
      deferred_delete(f->w, r);
    else
      post(f->w, task_deferred_delete, r);
    filter_unref(f);
  } else {
    free_http_req(r);
  }
}
static void floor_finalize(httpRequest* r, GoUint64 reason) { envoyGoFilterHttpFinalize(r, (int)reason); }

/* common/log/cgo.cc */
void envoyGoFilterLog(uint32_t level, void* message_data, int message_len) {
  if (level >= 4) atomic_fetch_add(&ev_error_logs, 1);
  if ((int)level < g_log_level || level >= 6) return;
  if (!atomic_load(&ev_quiet)) {
    SB j = {0};
    sb_printf(&j, "{\"type\":\"log\",\"level\":%u,\"msg\":", level);
    json_str(&j, message_data, (size_t)message_len);
    sb_addc(&j, '}');
    ev_add_raw(j.d);
    sb_free(&j);
  }
  if (level >= 3) fprintf(stderr, "envoyhost: go log[%u]: %.*s\n", level, message_len, (const char*)message_data);
}
uint32_t envoyGoFilterLogLevel(void) { return (uint32_t)g_log_level; }

/* envoyGoConfigHttpFinalize */
void envoyGoConfigHttpFinalize(void* c) {
  HttpCfgInternal* ci = c;
  pthread_mutex_lock(&g_cfg_mu);
  if (ci->weak) ci->weak->internal = NULL;
  pthread_mutex_unlock(&g_cfg_mu);
  free(ci);
  atomic_fetch_sub(&g_live_http_cfg_internal, 1);
}
/* envoyGoConfigHandlerWrapper: lock the weak FilterConfig */
static FilterConfig* cfg_lock(void* c) {
  HttpCfgInternal* ci = c;
  pthread_mutex_lock(&g_cfg_mu);
  FilterConfig* fc = (ci->weak && ci->weak->alive) ? ci->weak : NULL;
  pthread_mutex_unlock(&g_cfg_mu);
  return fc;
}
static Metric* metric_find(FilterConfig* fc, uint32_t id) {
  for (int i = 0; i < fc->nmetrics; i++)
    if (fc->metrics[i].id == id) return &fc->metrics[i];
  return NULL;
}
/* FilterConfig::defineMetric */
CAPIStatus envoyGoFilterHttpDefineMetric(void* c, uint32_t metric_type, void* name_data, int name_len,
                                         uint32_t* metric_id) {
  FilterConfig* fc = cfg_lock(c);
  if (!fc) return ret_note("HttpDefineMetric", CAPIFilterIsGone, NULL, NULL);
  pthread_mutex_lock(&fc->mu);
  if (metric_type > 2) {
    pthread_mutex_unlock(&fc->mu);
    return ret_note("HttpDefineMetric", CAPIValueNotFound, NULL, NULL);
  }
  /* scope counterFromStatName: the same name yields the same stat */
  uint32_t id;
  if (metric_type == 0)
    id = fc->next_counter += 4;
  else if (metric_type == 1)
    id = fc->next_gauge += 4;
  else
    id = fc->next_histogram += 4;
  if (fc->nmetrics == fc->capmetrics) {
    fc->capmetrics = fc->capmetrics ? fc->capmetrics * 2 : 16;
    fc->metrics = xrealloc(fc->metrics, sizeof(Metric) * (size_t)fc->capmetrics);
  }
  Metric* m = &fc->metrics[fc->nmetrics++];
  memset(m, 0, sizeof *m);
  m->id = id;
  m->type = (int)metric_type;
  m->name = xmemdup(name_data, (size_t)name_len);
  for (int i = 0; i < fc->nmetrics - 1; i++) /* shared stat object per name */
    if (fc->metrics[i].type == m->type && !strcmp(fc->metrics[i].name, m->name)) m->value = fc->metrics[i].value;
  *metric_id = id;
  pthread_mutex_unlock(&fc->mu);
  return CAPIOK;
}
static void metric_sync(FilterConfig* fc, Metric* m) { /* same name = same Envoy stat */
  for (int i = 0; i < fc->nmetrics; i++)
    if (&fc->metrics[i] != m && fc->metrics[i].type == m->type && !strcmp(fc->metrics[i].name, m->name))
      fc->metrics[i].value = m->value;
}
/* FilterConfig::incrementMetric */
CAPIStatus envoyGoFilterHttpIncrementMetric(void* c, uint32_t metric_id, int64_t offset) {
  FilterConfig* fc = cfg_lock(c);
  if (!fc) return ret_note("HttpIncrementMetric", CAPIFilterIsGone, NULL, NULL);
  pthread_mutex_lock(&fc->mu);
  Metric* m = metric_find(fc, metric_id);
  if (m && (metric_id & 3) == (uint32_t)m->type) {
    if (m->type == 0) {
      if (offset > 0) m->value += (uint64_t)offset;
    } else if (m->type == 1) {
      m->value += (uint64_t)offset; /* add / sub(-offset) */
    }
    metric_sync(fc, m);
  }
  pthread_mutex_unlock(&fc->mu);
  return CAPIOK;
}
/* FilterConfig::getMetric */
CAPIStatus envoyGoFilterHttpGetMetric(void* c, uint32_t metric_id, uint64_t* value) {
  FilterConfig* fc = cfg_lock(c);
  if (!fc) return ret_note("HttpGetMetric", CAPIFilterIsGone, NULL, NULL);
  pthread_mutex_lock(&fc->mu);
  Metric* m = metric_find(fc, metric_id);
  if (m && m->type != 2) *value = m->value;
  pthread_mutex_unlock(&fc->mu);
  return CAPIOK;
}
/* FilterConfig::recordMetric */
CAPIStatus envoyGoFilterHttpRecordMetric(void* c, uint32_t metric_id, uint64_t value) {
  FilterConfig* fc = cfg_lock(c);
  if (!fc) return ret_note("HttpRecordMetric", CAPIFilterIsGone, NULL, NULL);
  pthread_mutex_lock(&fc->mu);
  Metric* m = metric_find(fc, metric_id);
  if (m) {
    if (m->type == 0)
      m->value += value;
    else if (m->type == 1)
      m->value = value;
    else {
      m->value += value; /* histogram: sum and count */
      m->samples++;
    }
    metric_sync(fc, m);
  }
  pthread_mutex_unlock(&fc->mu);
  return CAPIOK;
}

/* ------------------------------------------ properties (CEL attributes) */
/* Mirrors Filter::getStringPropertyInternal (split on '.', walk maps,
 * messages and lists) and Filter::serializeStringValue over the attribute
 * set of extensions/filters/common/expr/context.cc. Message-valued
 * attributes the host cannot walk itself (cluster/host/route metadata,
 * locality, node) come from the per-request/per-proxy tables the driver
 * precomputes with the same rules. */
enum { CV_NONE, CV_STR, CV_INT, CV_UINT, CV_DOUBLE, CV_BOOL, CV_DUR, CV_TS, CV_MSG, CV_MAP, CV_LIST, CV_NULL };
typedef struct {
  int kind;
  const char* s;
  size_t n;
  int64_t i;
  uint64_t u;
  double d;
  SB own; /* backing store when s is computed */
} CV;

typedef struct {
  const char* p;
  size_t n;
} Part;

static int part_is(Part p, const char* z) { return strlen(z) == p.n && memcmp(p.p, z, p.n) == 0; }

/* absl::FormatDuration for a whole number of nanoseconds */
static void fmt_frac(SB* o, int64_t ip, int64_t frac, int digits, const char* unit) {
  if (ip == 0 && frac == 0) return;
  sb_printf(o, "%lld", (long long)ip);
  if (frac) {
    char b[32];
    snprintf(b, sizeof b, "%0*lld", digits, (long long)frac);
    int l = (int)strlen(b);
    while (l > 0 && b[l - 1] == '0') l--;
    sb_addc(o, '.');
    sb_add(o, b, (size_t)l);
  }
  sb_adds(o, unit);
}
static void absl_format_duration(SB* o, int64_t ns) {
  size_t start = o->n;
  if (ns < 0) {
    sb_addc(o, '-');
    ns = -ns;
  }
  if (ns < 1000) {
    fmt_frac(o, ns, 0, 0, "ns");
  } else if (ns < 1000000) {
    fmt_frac(o, ns / 1000, ns % 1000, 3, "us");
  } else if (ns < 1000000000) {
    fmt_frac(o, ns / 1000000, ns % 1000000, 6, "ms");
  } else {
    int64_t h = ns / 3600000000000LL;
    ns -= h * 3600000000000LL;
    int64_t m = ns / 60000000000LL;
    ns -= m * 60000000000LL;
    if (h) sb_printf(o, "%lldh", (long long)h);
    if (m) sb_printf(o, "%lldm", (long long)m);
    fmt_frac(o, ns / 1000000000, ns % 1000000000, 9, "s");
  }
  if (o->n == start || (o->n == start + 1 && o->d[start] == '-')) {
    o->n = start;
    sb_addc(o, '0');
  }
}
/* absl::FormatTime(t, UTC): RFC3339_full "%Y-%m-%d%ET%H:%M:%E*S%Ez" */
static void absl_format_time(SB* o, int64_t unix_ns) {
  time_t sec = (time_t)(unix_ns / 1000000000LL);
  int64_t frac = unix_ns % 1000000000LL;
  if (frac < 0) {
    frac += 1000000000LL;
    sec--;
  }
  struct tm tm;
  gmtime_r(&sec, &tm);
  sb_printf(o, "%04d-%02d-%02dT%02d:%02d:%02d", tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour,
            tm.tm_min, tm.tm_sec);
  if (frac) {
    char b[16];
    snprintf(b, sizeof b, "%09lld", (long long)frac);
    int l = 9;
    while (l > 0 && b[l - 1] == '0') l--;
    sb_addc(o, '.');
    sb_add(o, b, (size_t)l);
  }
  sb_adds(o, "+00:00");
}

static void cv_str(CV* v, const char* s, size_t n) {
  v->kind = CV_STR;
  v->s = s;
  v->n = n;
}
static void cv_strz(CV* v, const char* s) { cv_str(v, s, strlen(s)); }
static void cv_hdr(CV* v, HMap* m, const char* k) { /* convertHeaderEntry(first entry) */
  HEnt* e = m ? hm_get(m, k, strlen(k)) : NULL;
  if (e) cv_str(v, e->v, e->vl);
}
/* HeaderUtility::getAllOfHeaderAsString, joined with "," */
static void cv_hdr_all(CV* v, HMap* m, Part key) {
  if (!m) return;
  int found = 0;
  for (int i = 0; i < m->n; i++)
    if (keyeq(&m->e[i], key.p, key.n)) {
      if (found++) sb_addc(&v->own, ',');
      sb_add(&v->own, m->e[i].v, m->e[i].vl);
    }
  if (found) cv_str(v, v->own.d ? v->own.d : "", v->own.n);
}
static int addr_port(const char* a, int64_t* port) {
  const char* c = strrchr(a, ':');
  if (!c || !c[1]) return 0;
  *port = strtoll(c + 1, NULL, 10);
  return 1;
}

/* google.protobuf.Value / Struct / ListValue walking (CelProtoWrapper
 * unwraps them into CEL null/double/string/bool/map/list) */
static void value_resolve(CV* v, const unsigned char* p, size_t n, Part* parts, int np);
static void struct_resolve(CV* v, const unsigned char* p, size_t n, Part* parts, int np) {
  if (np == 0) {
    v->kind = CV_MAP;
    return;
  }
  const unsigned char *q = p, *e = p + n, *d;
  size_t dn;
  int fl, w;
  uint64_t num;
  while (pb_next(&q, e, &fl, &w, &d, &dn, &num)) {
    if (fl != 1 || w != 2) continue;
    const unsigned char *q2 = d, *e2 = d + dn, *d2, *key = NULL, *val = NULL;
    size_t dn2, keyn = 0, valn = 0;
    int f2, w2;
    uint64_t n2;
    while (pb_next(&q2, e2, &f2, &w2, &d2, &dn2, &n2)) {
      if (f2 == 1 && w2 == 2) {
        key = d2;
        keyn = dn2;
      } else if (f2 == 2 && w2 == 2) {
        val = d2;
        valn = dn2;
      }
    }
    if (key && keyn == parts[0].n && memcmp(key, parts[0].p, keyn) == 0) {
      value_resolve(v, val ? val : (const unsigned char*)"", valn, parts + 1, np - 1);
      return;
    }
  }
}
static void list_resolve(CV* v, const unsigned char* p, size_t n, Part* parts, int np) {
  if (np == 0) {
    v->kind = CV_LIST;
    return;
  }
  char tmp[24];
  if (parts[0].n == 0 || parts[0].n >= sizeof tmp) return;
  memcpy(tmp, parts[0].p, parts[0].n);
  tmp[parts[0].n] = 0;
  char* endp;
  long idx = strtol(tmp, &endp, 10);
  if (*endp || idx < 0) return;
  const unsigned char *q = p, *e = p + n, *d;
  size_t dn;
  int fl, w;
  uint64_t num;
  long i = 0;
  while (pb_next(&q, e, &fl, &w, &d, &dn, &num)) {
    if (fl != 1 || w != 2) continue;
    if (i++ == idx) {
      value_resolve(v, d, dn, parts + 1, np - 1);
      return;
    }
  }
}
static void value_resolve(CV* v, const unsigned char* p, size_t n, Part* parts, int np) {
  const unsigned char *q = p, *e = p + n, *d = NULL;
  size_t dn = 0;
  int fl, w, kind = 0;
  uint64_t num = 0, knum = 0;
  const unsigned char* kd = NULL;
  size_t kdn = 0;
  while (pb_next(&q, e, &fl, &w, &d, &dn, &num)) {
    if (fl >= 1 && fl <= 6) {
      kind = fl;
      knum = num;
      kd = d;
      kdn = dn;
    }
  }
  switch (kind) {
  case 5: struct_resolve(v, kd, kdn, parts, np); return;
  case 6: list_resolve(v, kd, kdn, parts, np); return;
  }
  if (np) return; /* scalars cannot be walked */
  switch (kind) {
  case 0:
  case 1: v->kind = CV_NULL; return;
  case 2: v->kind = CV_DOUBLE; memcpy(&v->d, &knum, 8); return;
  case 3: cv_str(v, (const char*)kd, kdn); return;
  case 4: v->kind = CV_BOOL; v->i = knum != 0; return;
  }
}

/* the Metadata message Envoy serializes for "metadata" */
static void dyn_metadata_bytes(Filter* f, SB* o) {
  for (int i = 0; i < f->ndmeta; i++) {
    SB st = {0}, ent = {0};
    dmeta_struct_bytes(&st, &f->dmeta[i]);
    pb_put_len(&ent, 1, f->dmeta[i].filter, strlen(f->dmeta[i].filter));
    pb_put_len(&ent, 2, st.d ? st.d : "", st.n);
    pb_put_len(o, 1, ent.d, ent.n);
    sb_free(&st);
    sb_free(&ent);
  }
}

static void resolve_native(Filter* f, Part* pt, int np, CV* v) {
  Part top = pt[0];
  HMap* rq = f->request_headers_;
  HMap* rs = f->act_resp_headers;
  HMap* rt = f->act_resp_trailers;
  if (part_is(top, "request")) {
    if (np == 1) { v->kind = CV_MAP; return; }
    Part k = pt[1];
    if (part_is(k, "headers")) {
      if (np == 2) { v->kind = CV_MAP; return; }
      if (np == 3) cv_hdr_all(v, rq, pt[2]);
      return;
    }
    if (np > 2) return;
    if (part_is(k, "path")) cv_hdr(v, rq, ":path");
    else if (part_is(k, "host")) cv_hdr(v, rq, ":authority");
    else if (part_is(k, "scheme")) cv_hdr(v, rq, ":scheme");
    else if (part_is(k, "method")) cv_hdr(v, rq, ":method");
    else if (part_is(k, "referer")) cv_hdr(v, rq, "referer");
    else if (part_is(k, "id")) cv_hdr(v, rq, "x-request-id");
    else if (part_is(k, "useragent")) cv_hdr(v, rq, "user-agent");
    else if (part_is(k, "url_path") || part_is(k, "query")) {
      if (!rq) return;
      HEnt* e = hm_get(rq, ":path", 5);
      const char* p = e ? e->v : "";
      size_t n = e ? e->vl : 0;
      const char* qm = memchr(p, '?', n);
      if (part_is(k, "url_path")) {
        cv_str(v, p, qm ? (size_t)(qm - p) : n);
      } else if (!qm) {
        cv_str(v, "", 0);
      } else {
        const char* qs = qm + 1;
        size_t ql = n - (size_t)(qs - p);
        const char* hash = memchr(qs, '#', ql);
        cv_str(v, qs, hash ? (size_t)(hash - qs) : ql);
      }
    } else if (part_is(k, "headers_bytes")) {
      v->kind = CV_INT;
      v->i = rq ? (int64_t)rq->bytes : 0;
    } else if (part_is(k, "time")) {
      v->kind = CV_TS;
      v->i = f->start_real_ns;
    } else if (part_is(k, "size")) {
      HEnt* cl = rq ? hm_get(rq, "content-length", 14) : NULL;
      if (cl) {
        char tmp[32];
        size_t l = cl->vl < 31 ? cl->vl : 31;
        memcpy(tmp, cl->v, l);
        tmp[l] = 0;
        char* endp;
        long long x = strtoll(tmp, &endp, 10);
        if (l && !*endp) {
          v->kind = CV_INT;
          v->i = x;
        }
        return;
      }
      v->kind = CV_INT;
      v->i = (int64_t)f->bytes_received;
    } else if (part_is(k, "total_size")) {
      v->kind = CV_INT;
      v->i = (int64_t)(f->bytes_received + (rq ? rq->bytes : 0));
    } else if (part_is(k, "duration")) {
      if (f->request_completed) { /* requestComplete() */
        v->kind = CV_DUR;
        v->i = f->duration_ns;
      }
    } else if (part_is(k, "protocol")) {
      int p = protocol_id(f);
      static const char* names[] = {"HTTP/1.0", "HTTP/1.1", "HTTP/2", "HTTP/3"};
      if (p >= 0) cv_strz(v, names[p]);
    }
    return;
  }
  if (part_is(top, "response")) {
    if (np == 1) { v->kind = CV_MAP; return; }
    Part k = pt[1];
    if (part_is(k, "headers") || part_is(k, "trailers")) {
      if (np == 2) { v->kind = CV_MAP; return; }
      if (np == 3) cv_hdr_all(v, part_is(k, "headers") ? rs : rt, pt[2]);
      return;
    }
    if (np > 2) return;
    if (part_is(k, "code")) {
      if (f->code_has) { v->kind = CV_INT; v->i = (int64_t)f->code; }
    } else if (part_is(k, "size")) {
      v->kind = CV_INT;
      v->i = (int64_t)f->bytes_sent;
    } else if (part_is(k, "headers_bytes")) {
      v->kind = CV_INT;
      v->i = rs ? (int64_t)rs->bytes : 0;
    } else if (part_is(k, "flags")) {
      v->kind = CV_INT;
      v->i = (int64_t)si_u64(f, SI_RESPONSE_FLAGS);
    } else if (part_is(k, "grpc_status")) {
      HMap* ms[2] = {rt, rs};
      for (int i = 0; i < 2; i++) {
        HEnt* e = ms[i] ? hm_get(ms[i], "grpc-status", 11) : NULL;
        if (e && e->vl && e->vl < 10) {
          char tmp[16];
          memcpy(tmp, e->v, e->vl);
          tmp[e->vl] = 0;
          char* endp;
          long x = strtol(tmp, &endp, 10);
          if (!*endp && x >= 0 && x <= 16) {
            v->kind = CV_INT;
            v->i = x;
            return;
          }
        }
      }
      if (f->code_has) {
        v->kind = CV_INT;
        v->i = f->code == 200 ? 0 : http_to_grpc_status((int)f->code);
      }
    } else if (part_is(k, "total_size")) {
      v->kind = CV_INT;
      v->i = (int64_t)(f->bytes_sent + (rs ? rs->bytes : 0) + (rt ? rt->bytes : 0));
    } else if (part_is(k, "code_details")) {
      if (f->details) cv_str(v, f->details, f->details_n);
    }
    return;
  }
  if (part_is(top, "connection")) {
    if (np == 1) { v->kind = CV_MAP; return; }
    if (np > 2) return;
    Part k = pt[1];
    if (part_is(k, "mtls")) {
      v->kind = CV_BOOL;
      v->i = ssl_on(f) && si_bool(f, SI_SSL_PEER_PRESENTED);
    } else if (part_is(k, "peer_certificate_valid")) {
      v->kind = CV_BOOL;
      v->i = ssl_on(f) && si_bool(f, SI_SSL_PEER_VALIDATED);
    } else if (part_is(k, "requested_server_name")) {
      SIVal* s = siv(f, SI_REQUESTED_SERVER_NAME);
      cv_str(v, s->has ? s->v : "", s->has ? s->n : 0);
    } else if (part_is(k, "id")) {
      if (si_has(f, SI_CONNECTION_ID)) { v->kind = CV_UINT; v->u = si_u64(f, SI_CONNECTION_ID); }
    } else if (ssl_on(f)) { /* extractSslInfo */
      SIVal* s = NULL;
      int first = 0, nonempty = 0;
      if (part_is(k, "tls_version")) s = siv(f, SI_SSL_TLS_VERSION);
      else if (part_is(k, "subject_local_certificate")) s = siv(f, SI_SSL_SUBJECT_LOCAL);
      else if (part_is(k, "subject_peer_certificate")) s = siv(f, SI_SSL_SUBJECT_PEER);
      else if (part_is(k, "uri_san_local_certificate")) { s = siv(f, SI_SSL_URI_SAN_LOCAL); first = 1; }
      else if (part_is(k, "uri_san_peer_certificate")) { s = siv(f, SI_SSL_URI_SAN_PEER); first = 1; }
      else if (part_is(k, "dns_san_local_certificate")) { s = siv(f, SI_SSL_DNS_SAN_LOCAL); first = 1; }
      else if (part_is(k, "dns_san_peer_certificate")) { s = siv(f, SI_SSL_DNS_SAN_PEER); first = 1; }
      else if (part_is(k, "sha256_peer_certificate_digest")) { s = siv(f, SI_SSL_SHA256_PEER); nonempty = 1; }
      else if (part_is(k, "peer_certificate")) { s = siv(f, SI_SSL_PEM_PEER); nonempty = 1; }
      if (!s) return;
      const char* p = s->has ? s->v : "";
      size_t n = s->has ? s->n : 0;
      if (first) { /* list: first element, not found if empty */
        if (!s->has || n == 0) return;
        cv_str(v, p, strnlen(p, n));
        return;
      }
      if (nonempty && n == 0) return;
      cv_str(v, p, n);
    }
    return;
  }
  if (part_is(top, "upstream")) {
    if (np == 1) { v->kind = CV_MAP; return; }
    if (np > 2) return;
    Part k = pt[1];
    if (part_is(k, "request_attempt_count")) {
      v->kind = CV_UINT;
      v->u = si_has(f, SI_ATTEMPT_COUNT) ? si_u64(f, SI_ATTEMPT_COUNT) : 0;
      return;
    }
    if (!upstream_info(f)) return;
    SIVal* ur = siv(f, SI_UPSTREAM_REMOTE_ADDRESS);
    if (part_is(k, "address")) {
      if (ur->has) cv_str(v, ur->v, ur->n);
    } else if (part_is(k, "port")) {
      int64_t port;
      if (ur->has && addr_port(ur->v, &port)) { v->kind = CV_INT; v->i = port; }
    } else if (part_is(k, "local_address")) {
      SIVal* ul = siv(f, SI_UPSTREAM_LOCAL_ADDRESS);
      if (ul->has) cv_str(v, ul->v, ul->n);
    } else if (part_is(k, "transport_failure_reason")) {
      SIVal* t = siv(f, SI_UPSTREAM_TRANSPORT_FAILURE_REASON);
      cv_str(v, t->has ? t->v : "", t->has ? t->n : 0);
    }
    return;
  }
  if (part_is(top, "source") || part_is(top, "destination")) {
    if (np == 1) { v->kind = CV_MAP; return; }
    if (np > 2) return;
    const char* a = part_is(top, "source") ? dr_addr(f) : dl_addr(f);
    int64_t port;
    if (part_is(pt[1], "address")) cv_strz(v, a);
    else if (part_is(pt[1], "port") && addr_port(a, &port)) { v->kind = CV_INT; v->i = port; }
    return;
  }
  if (part_is(top, "metadata")) {
    if (np == 1) {
      dyn_metadata_bytes(f, &v->own);
      v->kind = CV_MSG;
      v->s = v->own.d ? v->own.d : "";
      v->n = v->own.n;
      return;
    }
    if (part_is(pt[1], "typed_filter_metadata")) {
      if (np == 2) v->kind = CV_MAP;
      return;
    }
    if (!part_is(pt[1], "filter_metadata")) return;
    if (np == 2) { v->kind = CV_MAP; return; }
    DMeta* d = dmeta_find(f, pt[2].p, pt[2].n, 0);
    if (!d) return;
    if (np == 3) { v->kind = CV_MAP; return; }
    for (int i = 0; i < d->nfields; i++)
      if (d->fields[i].kl == pt[3].n && memcmp(d->fields[i].k, pt[3].p, pt[3].n) == 0) {
        value_resolve(v, (const unsigned char*)d->fields[i].v, d->fields[i].vl, pt + 4, np - 4);
        return;
      }
    return;
  }
  if (part_is(top, "filter_state")) {
    if (np == 1) { v->kind = CV_MAP; return; }
    if (np > 2) return;
    KV* e = fstate_get(f, pt[1].p, pt[1].n);
    if (e) cv_str(v, e->v, e->vl); /* serializeAsString -> CEL bytes */
    return;
  }
  if (part_is(top, "xds")) {
    if (np == 1) { v->kind = CV_MAP; return; }
    Part k = pt[1];
    int msg_exists = -1;
    if (part_is(k, "cluster_metadata")) msg_exists = si_has(f, SI_UPSTREAM_CLUSTER_NAME);
    else if (part_is(k, "upstream_host_metadata")) msg_exists = si_has(f, SI_UPSTREAM_REMOTE_ADDRESS);
    else if (part_is(k, "route_metadata")) msg_exists = si_has(f, SI_ROUTE_NAME);
    else if (part_is(k, "virtual_host_metadata")) msg_exists = si_has(f, SI_VIRTUAL_HOST_NAME);
    if (msg_exists >= 0) { /* an empty Metadata message unless the table has it */
      if (!msg_exists) return;
      if (np == 2) { v->kind = CV_MSG; v->s = ""; v->n = 0; return; }
      if (np == 3 && (part_is(pt[2], "filter_metadata") || part_is(pt[2], "typed_filter_metadata")))
        v->kind = CV_MAP;
      return;
    }
    if (np > 2) return;
    SIVal* s;
    if (part_is(k, "cluster_name")) {
      s = siv(f, SI_UPSTREAM_CLUSTER_NAME);
      if (s->has) cv_str(v, s->v, s->n);
    } else if (part_is(k, "route_name")) {
      s = siv(f, SI_ROUTE_NAME);
      if (s->has) cv_str(v, s->v, s->n);
    } else if (part_is(k, "virtual_host_name")) {
      s = siv(f, SI_VIRTUAL_HOST_NAME);
      if (s->has) cv_str(v, s->v, s->n);
    } else if (part_is(k, "filter_chain_name")) {
      s = siv(f, SI_FILTER_CHAIN_NAME);
      cv_str(v, s->has ? s->v : "", s->has ? s->n : 0);
    }
    /* node: local_info_ is never set by the golang filter -> not found */
    return;
  }
}

static int table_lookup(KV* t, int n, const char* path, size_t pn, SB* out, int* found) {
  for (int i = 0; i < n; i++)
    if (t[i].kl == pn && memcmp(t[i].k, path, pn) == 0) {
      *found = 1;
      if (t[i].status == CAPIOK) sb_add(out, t[i].v, t[i].vl);
      return t[i].status;
    }
  for (int i = 0; i < n; i++) /* below a table entry: the driver listed every child */
    if (t[i].kl < pn && path[t[i].kl] == '.' && memcmp(t[i].k, path, t[i].kl) == 0) {
      *found = 1;
      return CAPIValueNotFound;
    }
  *found = 0;
  return CAPIOK;
}

/* Filter::getStringPropertyInternal + serializeStringValue */
static int prop_get(Filter* f, const char* path, size_t pn, SB* out) {
  int found = 0, st;
  if (pn >= 8 && memcmp(path, "xds.node", 8) == 0 && (pn == 8 || path[8] == '.')) {
    if (!g_node_in_cel) return CAPIValueNotFound;
    st = table_lookup(g_nodeprops, g_nnodeprops, path, pn, out, &found);
    return found ? st : CAPIValueNotFound;
  }
  st = table_lookup(f->spec->props, f->spec->nprops, path, pn, out, &found);
  if (found) return st;
  Part parts[32];
  int np = 0;
  size_t start = 0;
  while (start < pn && np < 32) {
    const char* dot = memchr(path + start, '.', pn - start);
    size_t end = dot ? (size_t)(dot - path) : pn;
    parts[np].p = path + start;
    parts[np].n = end - start;
    np++;
    start = end + 1;
  }
  if (np == 0 || np == 32) return CAPIValueNotFound;
  CV v;
  memset(&v, 0, sizeof v);
  resolve_native(f, parts, np, &v);
  st = CAPIOK;
  switch (v.kind) {
  case CV_NONE: st = CAPIValueNotFound; break;
  case CV_STR:
  case CV_MSG: sb_add(out, v.s ? v.s : "", v.n); break;
  case CV_INT: sb_printf(out, "%lld", (long long)v.i); break;
  case CV_UINT: sb_printf(out, "%llu", (unsigned long long)v.u); break;
  case CV_DOUBLE: sb_printf(out, "%.6g", v.d); break; /* absl::StrCat(double) */
  case CV_BOOL: sb_adds(out, v.i ? "true" : "false"); break;
  case CV_DUR: absl_format_duration(out, v.i); break;
  case CV_TS: absl_format_time(out, v.i); break;
  default: st = CAPISerializationFailure; /* map, list, null */
  }
  sb_free(&v.own);
  return st;
}

/* ------------------------------------------------ stream lifecycle */
/* Filter::Filter + HttpRequestInternal ctor */
static Filter* filter_new(Worker* w, FilterConfig* cfg, RouteCfg* route, Spec* spec, int bench) {
  Filter* f = xcalloc(1, sizeof(Filter));
  atomic_store(&f->refs, 1);
  f->w = w;
  f->cfg = cfg;
  f->route = route;
  f->spec = spec;
  f->bench = bench;
  pthread_mutex_init(&f->mu, NULL);
  HttpReq* r = xcalloc(1, sizeof(HttpReq));
  r->r.plugin_name.data = cfg->plugin_name;
  r->r.plugin_name.len = cfg->plugin_len;
  r->r.configId = 0;
  r->r.worker_id = (uint32_t)w->id;
  atomic_store(&r->r.is_golang_processing_log, 0);
  pthread_mutex_init(&r->wmu, NULL);
  r->dec.ps.req = &r->r;
  r->dec.ps.is_encoding = 0;
  r->dec.ps.state = FS_WaitingHeader;
  r->dec.hreq = r;
  r->enc.ps.req = &r->r;
  r->enc.ps.is_encoding = 1;
  r->enc.ps.state = FS_WaitingHeader;
  r->enc.hreq = r;
  r->id = atomic_fetch_add(&g_req_seq, 1) + 1;
  r->w = w;
  f->req = r;
  atomic_fetch_add(&g_live_reqs, 1);
  atomic_fetch_add(&g_live_filters, 1);
  f->start_ns = now_ns();
  if (spec->si[SI_START_TIME_NS].has) {
    f->start_real_ns = (int64_t)strtoll(spec->si[SI_START_TIME_NS].v, NULL, 10);
  } else {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    f->start_real_ns = (int64_t)ts.tv_sec * 1000000000LL + ts.tv_nsec;
  }
  if (spec->si[SI_RESPONSE_CODE].has) set_code(f, strtoull(spec->si[SI_RESPONSE_CODE].v, NULL, 10));
  if (spec->si[SI_RESPONSE_CODE_DETAILS].has) {
    f->details = xmemdup(spec->si[SI_RESPONSE_CODE_DETAILS].v, spec->si[SI_RESPONSE_CODE_DETAILS].n);
    f->details_n = spec->si[SI_RESPONSE_CODE_DETAILS].n;
  }
  if (spec->si[SI_BYTES_RECEIVED].has) f->bytes_received = si_u64(f, SI_BYTES_RECEIVED);
  if (spec->si[SI_BYTES_SENT].has) f->bytes_sent = si_u64(f, SI_BYTES_SENT);
  for (int i = 0; i < spec->ndmeta; i++) {
    DMeta* d = dmeta_find(f, spec->dmeta[i].k, spec->dmeta[i].kl, 1);
    dmeta_merge_struct(d, spec->dmeta[i].v, spec->dmeta[i].vl);
  }
  for (int i = 0; i < spec->nfstate; i++)
    kv_push(&f->fstate, &f->nfstate, spec->fstate[i].k, spec->fstate[i].kl, spec->fstate[i].v,
            spec->fstate[i].vl, 1 /* Mutable */);
  return f;
}

/* Filter::onStreamComplete */
static void filter_on_stream_complete(Filter* f) {
  if (!f->req) return;
  atomic_store(&f->req->r.is_golang_processing_log, 1);
  L.on_stream_complete(&f->req->r);
  atomic_store(&f->req->r.is_golang_processing_log, 0);
  record_call(f, "OnHttpStreamComplete", 2, 0);
}
/* Filter::log */
static void filter_log(Filter* f, int type) {
  if (!f->req) return;
  if (type != 4 && type != 5 && type != 6) return; /* unsupported types are skipped */
  HttpReq* r = f->req;
  uint64_t rhn = 0, rhb = 0, rtn = 0, rtb = 0, shn = 0, shb = 0, stn = 0, stb = 0;
  if (init_request(f)) f->request_headers_ = f->req_h;
  if (f->request_headers_) {
    rhn = (uint64_t)f->request_headers_->n;
    rhb = f->request_headers_->bytes;
    r->dec.headers = f->request_headers_;
    r->dec.passed_hnum = rhn;
    r->dec.passed_hbytes = rhb;
  }
  if (f->request_trailers_) {
    rtn = (uint64_t)f->request_trailers_->n;
    rtb = f->request_trailers_->bytes;
    r->dec.trailers = f->request_trailers_;
    r->dec.passed_tnum = rtn;
    r->dec.passed_tbytes = rtb;
  }
  f->act_resp_headers = f->resp_h; /* log_context.responseHeaders() */
  if (f->act_resp_headers) {
    shn = (uint64_t)f->act_resp_headers->n;
    shb = f->act_resp_headers->bytes;
    r->enc.headers = f->act_resp_headers;
    r->enc.passed_hnum = shn;
    r->enc.passed_hbytes = shb;
  }
  f->act_resp_trailers = f->resp_t;
  if (f->act_resp_trailers) {
    stn = (uint64_t)f->act_resp_trailers->n;
    stb = f->act_resp_trailers->bytes;
    r->enc.trailers = f->act_resp_trailers;
    r->enc.passed_tnum = stn;
    r->enc.passed_tbytes = stb;
  }
  atomic_store(&r->r.is_golang_processing_log, 1);
  L.on_log(&r->r, (GoUint64)type, &r->dec.ps, &r->enc.ps, rhn, rhb, rtn, rtb, shn, shb, stn, stb);
  atomic_store(&r->r.is_golang_processing_log, 0);
  record_call(f, "OnHttpLog", 2, (uint64_t)type);
}
/* Filter::onDestroy, then the stream's deferred delete (weak_ptr expires) */
static void filter_on_destroy(Filter* f) {
  if (!f->req) return;
  if (f->req->r.configId == 0) { /* never called into Go: no finalizer will come */
    free_http_req(f->req);
    f->req = NULL;
    return;
  }
  pthread_mutex_lock(&f->mu);
  int already = atomic_exchange(&f->has_destroyed, 1);
  pthread_mutex_unlock(&f->mu);
  if (already) return;
  int reason = filter_in_go(f) ? 1 /* Terminate */ : 0 /* Normal */;
  f->destroy_reason = reason;
  L.on_destroy(&f->req->r, (GoUint64)reason);
  record_call(f, "OnHttpDestroy", 2, (uint64_t)reason);
}
static void filter_teardown(Filter* f) {
  if (f->req) {
    pthread_mutex_lock(&f->req->wmu);
    f->req->filter = NULL;
    pthread_mutex_unlock(&f->req->wmu);
  }
  atomic_store(&f->gone, 1);
  filter_unref(f);
}

/* wait predicates */
static int pred_upstream(void* a) {
  Filter* f = a;
  return f->up.end || f->decode_aborted || f->stream_ended;
}
static int pred_downstream(void* a) {
  Filter* f = a;
  return f->down.end || f->stream_ended;
}
static int pred_never(void* a) {
  (void)a;
  return 0;
}

static void wait_timeout(Filter* f, const char* what) {
  char a[64], b[64];
  snprintf(f->err, sizeof f->err,
           "timeout after %dms waiting for %s: last call %s returned %s (%" PRIu64 "), states %s %s",
           f->spec->timeout_ms, what, f->last_call ? f->last_call : "none", gs_name(f->last_status),
           f->last_status, f->req ? state_str(&f->req->dec, a, sizeof a) : "-",
           f->req ? state_str(&f->req->enc, b, sizeof b) : "-");
  f->stream_ended = 1; /* the stream is reset */
}

/* runs script steps on the current worker thread; the stream info and
 * tables come from f->spec */
static void run_steps(Filter* f, Step* steps, int nsteps) {
  Spec* sp = f->spec;
  Worker* w = f->w;
  int destroyed = f->destroyed;
  f->held = 0;
  for (int i = 0; i < nsteps; i++) {
    Step* st = &steps[i];
    int late_ok = st->op == OP_COMPLETE || st->op == OP_LOG || st->op == OP_DESTROY || st->op == OP_PAUSE ||
                  st->op == OP_HOLD;
    if (destroyed) break;
    if (f->stream_ended && !late_ok) continue;
    int64_t deadline = now_ns() + (int64_t)sp->timeout_ms * 1000000LL;
    switch (st->op) {
    case OP_LOG_START:
      filter_log(f, 4);
      break;
    case OP_REQ_HEADERS:
      if (f->decode_aborted) break;
      hm_free(f->req_h);
      f->req_h = hm_copy(st->h);
      if (st->end) f->complete[DEC] = 1;
      if (filter_decode_headers(f, f->req_h, st->end)) sink_headers(f, DEC, st->end);
      break;
    case OP_REQ_DATA: {
      if (f->decode_aborted) break;
      if (!sp->si[SI_BYTES_RECEIVED].has) f->bytes_received += st->data->len;
      if (st->end) f->complete[DEC] = 1;
      Buf* b = buf_new();
      buf_add(b, st->data->d, st->data->len);
      if (filter_data(f, DEC, b, st->end)) sink_data(f, DEC, b, st->end);
      buf_free(b);
      break;
    }
    case OP_REQ_TRAILERS:
      if (f->decode_aborted) break;
      hm_free(f->req_t);
      f->req_t = hm_copy(st->h);
      f->complete[DEC] = 1;
      if (filter_trailers(f, DEC, f->req_t)) sink_trailers(f, DEC);
      break;
    case OP_WAIT_UPSTREAM:
      if (!run_until(w, pred_upstream, f, deadline)) wait_timeout(f, "the request to reach the upstream");
      break;
    case OP_RESP_HEADERS:
      if (f->lr_has || f->resp_started) break;
      f->resp_started = 1;
      hm_free(f->resp_h);
      f->resp_h = hm_copy(st->h);
      if (!sp->si[SI_RESPONSE_CODE].has) { /* Router::Filter::onUpstreamHeaders */
        HEnt* e = hm_get(f->resp_h, ":status", 7);
        if (e) set_code(f, strtoull(e->v, NULL, 10));
      }
      if (st->end) f->complete[ENC] = 1;
      if (filter_encode_headers(f, f->resp_h, st->end)) sink_headers(f, ENC, st->end);
      break;
    case OP_RESP_DATA: {
      if (f->lr_has) break; /* the local reply replaced (or ended) the response */
      if (st->end) f->complete[ENC] = 1;
      Buf* b = buf_new();
      buf_add(b, st->data->d, st->data->len);
      if (filter_data(f, ENC, b, st->end)) sink_data(f, ENC, b, st->end);
      buf_free(b);
      break;
    }
    case OP_RESP_TRAILERS:
      if (f->lr_has) break;
      hm_free(f->resp_t);
      f->resp_t = hm_copy(st->h);
      f->complete[ENC] = 1;
      if (filter_trailers(f, ENC, f->resp_t)) sink_trailers(f, ENC);
      break;
    case OP_WAIT_DOWNSTREAM:
      if (!run_until(w, pred_downstream, f, deadline)) wait_timeout(f, "the response to complete");
      break;
    case OP_PAUSE:
      run_until(w, pred_never, f, now_ns() + st->arg * 1000000LL);
      break;
    case OP_COMPLETE: /* ActiveStream::completeRequest + onStreamComplete */
      f->request_completed = 1;
      f->duration_ns = sp->si[SI_REQUEST_DURATION_NS].has
                           ? (int64_t)strtoll(sp->si[SI_REQUEST_DURATION_NS].v, NULL, 10)
                           : now_ns() - f->start_ns;
      filter_on_stream_complete(f);
      break;
    case OP_LOG:
      filter_log(f, (int)st->arg);
      break;
    case OP_DESTROY:
      filter_on_destroy(f);
      destroyed = f->destroyed = 1;
      break;
    case OP_HOLD:
      run_ready(w);
      f->held = 1;
      return;
    }
    run_ready(w); /* the event loop turns between codec events */
  }
  if (!destroyed) {
    filter_on_destroy(f);
    f->destroyed = 1;
  }
}
static void run_stream(Filter* f) { run_steps(f, f->spec->steps, f->spec->nsteps); }

static void result_json(Filter* f, SB* o, size_t ev_mark_at, int held) {
  sb_printf(o, "{\"held\":%d,\"error\":", held);
  json_strz(o, f->err);
  sb_printf(o, ",\"worker\":%d,\"req\":%" PRIu64 ",\"calls\":[", f->w->id, f->req ? f->req->id : 0);
  sb_add(o, f->calls.d ? f->calls.d : "", f->calls.n);
  sb_adds(o, "]");
  Sink* ks[2] = {&f->up, &f->down};
  const char* names[2] = {"upstream", "downstream"};
  for (int i = 0; i < 2; i++) {
    sb_printf(o, ",\"%s\":{\"headers\":", names[i]);
    hm_json(o, ks[i]->headers);
    sb_adds(o, ",\"body\":");
    json_b64(o, ks[i]->body ? ks[i]->body->d : "", ks[i]->body ? ks[i]->body->len : 0);
    sb_adds(o, ",\"trailers\":");
    hm_json(o, ks[i]->trailers);
    sb_printf(o, ",\"end_stream\":%s}", ks[i]->end ? "true" : "false");
  }
  sb_adds(o, ",\"local_reply\":");
  if (f->lr_has) {
    sb_printf(o, "{\"code\":%d,\"grpc_status\":%lld,\"direct\":%s,\"phase\":\"%s\",\"details\":", f->lr_code,
              f->lr_grpc, f->lr_direct ? "true" : "false", f->lr_phase);
    json_strz(o, f->lr_details);
    sb_adds(o, ",\"body\":");
    json_b64(o, f->lr_body->d ? f->lr_body->d : "", f->lr_body->len);
    sb_adds(o, ",\"headers\":");
    hm_json(o, f->lr_headers);
    sb_addc(o, '}');
  } else {
    sb_adds(o, "null");
  }
  sb_printf(o, ",\"response_code\":%lld,\"destroy_reason\":%d,\"drain_upon_completion\":%s,\"route_cache_cleared\":%d",
            f->code_has ? (long long)f->code : -1LL, f->destroy_reason, f->drain_upon_completion ? "true" : "false",
            f->route_cache_cleared);
  sb_adds(o, ",\"upstream_override_host\":");
  json_strz(o, f->override_host);
  sb_adds(o, ",\"dynamic_metadata\":{");
  for (int i = 0; i < f->ndmeta; i++) {
    if (i) sb_addc(o, ',');
    json_strz(o, f->dmeta[i].filter);
    sb_addc(o, ':');
    SB st = {0};
    dmeta_struct_bytes(&st, &f->dmeta[i]);
    json_b64(o, st.d ? st.d : "", st.n);
    sb_free(&st);
  }
  sb_adds(o, "},\"filter_state\":[");
  for (int i = 0; i < f->nfstate; i++) {
    if (i) sb_addc(o, ',');
    sb_addc(o, '[');
    json_str(o, f->fstate[i].k, f->fstate[i].kl);
    sb_addc(o, ',');
    json_str(o, f->fstate[i].v, f->fstate[i].vl);
    sb_addc(o, ']');
  }
  sb_adds(o, "],\"events\":");
  ev_since(o, ev_mark_at);
  sb_addc(o, '}');
}

/* held streams (main thread only) */
static Filter** g_held;
static int g_nheld;
static int held_put(Filter* f) {
  for (int i = 0; i < g_nheld; i++)
    if (!g_held[i]) {
      g_held[i] = f;
      return i + 1;
    }
  g_held = xrealloc(g_held, sizeof(Filter*) * (size_t)(g_nheld + 1));
  g_held[g_nheld++] = f;
  return g_nheld;
}
static Filter* held_take(int h) {
  if (h < 1 || h > g_nheld) return NULL;
  Filter* f = g_held[h - 1];
  g_held[h - 1] = NULL;
  return f;
}

static FilterConfig* spec_cfg(Spec* sp, char* err, size_t errn) {
  FilterConfig* cfg = find_cfg(sp->config_id);
  if (!cfg) snprintf(err, errn, "unknown or destroyed config id %" PRIu64, sp->config_id);
  return cfg;
}
static RouteCfg* spec_route(Spec* sp) {
  if (sp->route <= 0 || sp->route > g_nroutes) return NULL;
  return g_routes[sp->route - 1];
}

/* job: RUN one spec (a = Spec*) */
static void job_run(Job* j) {
  Spec* sp = j->a;
  Worker* w = &g_workers[sp->worker];
  char err[256];
  FilterConfig* cfg = spec_cfg(sp, err, sizeof err);
  if (!cfg) {
    sb_printf(&j->out, "ERR %s", err);
    return;
  }
  size_t mark = ev_mark();
  Filter* f = filter_new(w, cfg, spec_route(sp), sp, 0);
  run_stream(f);
  run_ready(w);
  sb_adds(&j->out, "OK ");
  if (f->held) {
    f->own_spec = 1;
    int handle = held_put(f);
    j->n = handle;
    result_json(f, &j->out, mark, handle);
    return;
  }
  result_json(f, &j->out, mark, 0);
  filter_teardown(f);
  run_ready(w);
  flush_deferred(w);
}

/* job: RESUME a held stream with more steps (a = Spec* with steps only,
 * b = Filter*) */
static void job_resume(Job* j) {
  Spec* more = j->a;
  Filter* f = j->b;
  size_t mark = ev_mark();
  run_steps(f, more->steps, more->nsteps);
  run_ready(f->w);
  sb_adds(&j->out, "OK ");
  if (f->held) {
    int handle = held_put(f);
    j->n = handle;
    result_json(f, &j->out, mark, handle);
    return;
  }
  Worker* w = f->w;
  result_json(f, &j->out, mark, 0);
  filter_teardown(f);
  run_ready(w);
  flush_deferred(w);
}

/* BENCH: each worker runs its share of the requests */
typedef struct BenchShared {
  Spec* sp;
  FilterConfig* cfg;
  atomic_long next, errors, local_replies, done;
  long n;
} BenchShared;
static void job_bench(Job* j) {
  BenchShared* b = j->a;
  Worker* w = &g_workers[j->k];
  for (;;) {
    long i = atomic_fetch_add(&b->next, 1);
    if (i >= b->n) break;
    Filter* f = filter_new(w, b->cfg, spec_route(b->sp), b->sp, 1);
    run_stream(f);
    if (f->err[0]) atomic_fetch_add(&b->errors, 1);
    if (f->lr_has) atomic_fetch_add(&b->local_replies, 1);
    filter_teardown(f);
    run_ready(w);
    flush_deferred(w);
    atomic_fetch_add(&b->done, 1);
  }
}

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

/* ------------------------------------------------------ command loop */
static void reply(const char* fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  vfprintf(stdout, fmt, ap);
  va_end(ap);
  fputc('\n', stdout);
  fflush(stdout);
}

static int split(char* line, char** tok, int max) {
  int n = 0;
  char* p = line;
  while (*p && n < max) {
    while (*p == ' ') p++;
    if (!*p) break;
    tok[n++] = p;
    while (*p && *p != ' ') p++;
    if (*p) *p++ = 0;
  }
  return n;
}

static char* dec_tok(const char* t, size_t* n, char* err, size_t errn) {
  char* d = b64_dec(t, n);
  if (!d) snprintf(err, errn, "bad base64 token");
  return d;
}

static void* need_sym(const char* name, char* err, size_t errn) {
  void* p = dlsym(L.handle, name);
  if (!p) snprintf(err, errn, "cannot find symbol %s: %s", name, dlerror());
  return p;
}

static int do_load(const char* path, char* err, size_t errn) {
  /* Dso::Dso uses RTLD_LAZY; RTLD_NOW here makes a missing host function
   * fail at load instead of at first use */
  L.handle = dlopen(path, RTLD_NOW);
  if (!L.handle) {
    snprintf(err, errn, "dlopen %s: %s", path, dlerror());
    return -1;
  }
  /* HttpFilterDsoImpl */
  if (!(L.new_config = need_sym("envoyGoFilterNewHttpPluginConfig", err, errn))) return -1;
  if (!(L.merge_config = need_sym("envoyGoFilterMergeHttpPluginConfig", err, errn))) return -1;
  if (!(L.destroy_config = need_sym("envoyGoFilterDestroyHttpPluginConfig", err, errn))) return -1;
  if (!(L.on_header = need_sym("envoyGoFilterOnHttpHeader", err, errn))) return -1;
  if (!(L.on_data = need_sym("envoyGoFilterOnHttpData", err, errn))) return -1;
  if (!(L.on_log = need_sym("envoyGoFilterOnHttpLog", err, errn))) return -1;
  if (!(L.on_stream_complete = need_sym("envoyGoFilterOnHttpStreamComplete", err, errn))) return -1;
  if (!(L.on_destroy = need_sym("envoyGoFilterOnHttpDestroy", err, errn))) return -1;
  if (!(L.sema_dec = need_sym("envoyGoRequestSemaDec", err, errn))) return -1;
  if (!(L.cleanup = need_sym("envoyGoFilterCleanUp", err, errn))) return -1;
  L.http_loaded = 1;
  /* NetworkFilterDsoImpl: optional */
  L.net_on_config = dlsym(L.handle, "envoyGoFilterOnNetworkFilterConfig");
  L.net_on_conn = dlsym(L.handle, "envoyGoFilterOnDownstreamConnection");
  L.net_on_data = dlsym(L.handle, "envoyGoFilterOnDownstreamData");
  L.net_on_write = dlsym(L.handle, "envoyGoFilterOnDownstreamWrite");
  L.net_on_event = dlsym(L.handle, "envoyGoFilterOnDownstreamEvent");
  L.net_on_sema_dec = dlsym(L.handle, "envoyGoFilterOnSemaDec");
  L.up_ready = dlsym(L.handle, "envoyGoFilterOnUpstreamConnectionReady");
  L.up_failure = dlsym(L.handle, "envoyGoFilterOnUpstreamConnectionFailure");
  L.up_data = dlsym(L.handle, "envoyGoFilterOnUpstreamData");
  L.up_event = dlsym(L.handle, "envoyGoFilterOnUpstreamEvent");
  L.net_loaded = L.net_on_config && L.net_on_conn && L.net_on_data && L.net_on_write && L.net_on_event &&
                 L.up_ready && L.up_failure && L.up_data && L.up_event;
  return 0;
}

static Spec* g_spec;      /* being built (BEGIN..RUN or RESUME..RUN) */
static int g_resume;      /* RESUME <handle> in progress */
static Spec* g_last_spec; /* for BENCH */

static int parse_step(Spec* sp, char** tok, int nt, char* err, size_t errn) {
  Step st;
  memset(&st, 0, sizeof st);
  const char* op = tok[0];
  int hdr_from = -1;
  if (!strcmp(op, "log_start")) st.op = OP_LOG_START;
  else if (!strcmp(op, "req_headers")) { st.op = OP_REQ_HEADERS; hdr_from = 2; }
  else if (!strcmp(op, "req_data")) st.op = OP_REQ_DATA;
  else if (!strcmp(op, "req_trailers")) { st.op = OP_REQ_TRAILERS; hdr_from = 1; }
  else if (!strcmp(op, "wait_upstream")) st.op = OP_WAIT_UPSTREAM;
  else if (!strcmp(op, "resp_headers")) { st.op = OP_RESP_HEADERS; hdr_from = 2; }
  else if (!strcmp(op, "resp_data")) st.op = OP_RESP_DATA;
  else if (!strcmp(op, "resp_trailers")) { st.op = OP_RESP_TRAILERS; hdr_from = 1; }
  else if (!strcmp(op, "wait_downstream")) st.op = OP_WAIT_DOWNSTREAM;
  else if (!strcmp(op, "pause")) st.op = OP_PAUSE;
  else if (!strcmp(op, "complete")) st.op = OP_COMPLETE;
  else if (!strcmp(op, "log")) st.op = OP_LOG;
  else if (!strcmp(op, "destroy")) st.op = OP_DESTROY;
  else if (!strcmp(op, "hold")) st.op = OP_HOLD;
  else {
    snprintf(err, errn, "unknown step %s", op);
    return -1;
  }
  if (st.op == OP_REQ_HEADERS || st.op == OP_RESP_HEADERS || st.op == OP_REQ_DATA || st.op == OP_RESP_DATA) {
    if (nt < 2) {
      snprintf(err, errn, "step %s needs <end>", op);
      return -1;
    }
    st.end = atoi(tok[1]);
  }
  if (st.op == OP_PAUSE || st.op == OP_LOG) {
    if (nt < 2) {
      snprintf(err, errn, "step %s needs an argument", op);
      return -1;
    }
    st.arg = atol(tok[1]);
  }
  if (st.op == OP_REQ_DATA || st.op == OP_RESP_DATA) {
    if (nt < 3) {
      snprintf(err, errn, "step %s needs <b64 data>", op);
      return -1;
    }
    size_t n;
    char* d = dec_tok(tok[2], &n, err, errn);
    if (!d) return -1;
    st.data = buf_new();
    buf_add(st.data, d, n);
    free(d);
  }
  if (hdr_from >= 0) {
    if ((nt - hdr_from) % 2) {
      snprintf(err, errn, "step %s: odd number of header tokens", op);
      return -1;
    }
    st.h = hm_new();
    for (int i = hdr_from; i < nt; i += 2) {
      size_t kn, vn;
      char* k = dec_tok(tok[i], &kn, err, errn);
      char* v = k ? dec_tok(tok[i + 1], &vn, err, errn) : NULL;
      if (!k || !v) {
        free(k);
        hm_free(st.h);
        return -1;
      }
      hm_add(st.h, k, kn, v, vn);
      free(k);
      free(v);
    }
  }
  sp->steps = xrealloc(sp->steps, sizeof(Step) * (size_t)(sp->nsteps + 1));
  sp->steps[sp->nsteps++] = st;
  return 0;
}

static int parse_spec_line(Spec* sp, char** tok, int nt, char* err, size_t errn) {
  const char* k = tok[0];
  if (!strcmp(k, "config") && nt == 2) {
    sp->config_id = strtoull(tok[1], NULL, 10);
  } else if (!strcmp(k, "route") && nt == 2) {
    sp->route = atoi(tok[1]);
  } else if (!strcmp(k, "worker") && nt == 2) {
    sp->worker = atoi(tok[1]);
    if (sp->worker < 0 || sp->worker >= g_nworkers) {
      snprintf(err, errn, "worker %d out of range (WORKERS %d)", sp->worker, g_nworkers);
      return -1;
    }
  } else if (!strcmp(k, "timeout_ms") && nt == 2) {
    sp->timeout_ms = atoi(tok[1]);
  } else if (!strcmp(k, "buffer_limit") && nt == 2) {
    sp->buffer_limit = strtoull(tok[1], NULL, 10);
  } else if (!strcmp(k, "si") && nt == 3) {
    int id = -1;
    for (int i = 0; i < SI_N; i++)
      if (!strcmp(si_names[i], tok[1])) id = i;
    if (id < 0) {
      snprintf(err, errn, "unknown stream info key %s", tok[1]);
      return -1;
    }
    size_t n;
    char* v = dec_tok(tok[2], &n, err, errn);
    if (!v) return -1;
    free(sp->si[id].v);
    sp->si[id].v = v;
    sp->si[id].n = n;
    sp->si[id].has = 1;
  } else if ((!strcmp(k, "prop") && nt == 4) || ((!strcmp(k, "dmeta") || !strcmp(k, "fstate")) && nt == 3)) {
    size_t kn, vn;
    char* a = dec_tok(tok[1], &kn, err, errn);
    char* b = a ? dec_tok(tok[nt - 1], &vn, err, errn) : NULL;
    if (!a || !b) {
      free(a);
      return -1;
    }
    if (!strcmp(k, "prop"))
      kv_push(&sp->props, &sp->nprops, a, kn, b, vn, atoi(tok[2]));
    else if (!strcmp(k, "dmeta"))
      kv_push(&sp->dmeta, &sp->ndmeta, a, kn, b, vn, 0);
    else
      kv_push(&sp->fstate, &sp->nfstate, a, kn, b, vn, 0);
    free(a);
    free(b);
  } else if (!strcmp(k, "step") && nt >= 2) {
    return parse_step(sp, tok + 1, nt - 1, err, errn);
  } else {
    snprintf(err, errn, "bad spec line: %s", k);
    return -1;
  }
  return 0;
}

static void cmd_metrics(void) {
  SB o = {0};
  sb_adds(&o, "OK [");
  int first = 1;
  pthread_mutex_lock(&g_cfg_mu);
  for (int i = 0; i < g_ncfgs; i++) {
    FilterConfig* fc = g_cfgs[i];
    pthread_mutex_lock(&fc->mu);
    for (int k = 0; k < fc->nmetrics; k++) {
      Metric* m = &fc->metrics[k];
      if (!first) sb_addc(&o, ',');
      first = 0;
      sb_printf(&o, "{\"config\":%" PRIu64 ",\"id\":%u,\"type\":%d,\"name\":", fc->config_id, m->id, m->type);
      json_strz(&o, m->name);
      sb_printf(&o, ",\"value\":%llu,\"samples\":%llu}", (unsigned long long)m->value,
                (unsigned long long)m->samples);
    }
    pthread_mutex_unlock(&fc->mu);
  }
  pthread_mutex_unlock(&g_cfg_mu);
  sb_addc(&o, ']');
  reply("%s", o.d);
  sb_free(&o);
}

static int net_job(Worker* w, NetJob* nj, char* err, size_t errn) {
  Job j;
  memset(&j, 0, sizeof j);
  j.fn = job_net;
  j.a = nj;
  j.b = w;
  if (run_job(w, &j, 30000) != 0) {
    snprintf(err, errn, "timeout: network call did not return within 30s (worker stuck)");
    return -1;
  }
  return 0;
}
static NetFilter* conn_get(const char* t) {
  int h = atoi(t);
  NetFilter* f = NULL;
  pthread_mutex_lock(&g_net_mu);
  if (h >= 0 && h < g_nconns) f = g_conns[h];
  pthread_mutex_unlock(&g_net_mu);
  return f;
}
static UpConn* up_get(const char* t) {
  int h = atoi(t);
  UpConn* u = NULL;
  pthread_mutex_lock(&g_net_mu);
  if (h >= 0 && h < g_nups) u = g_ups[h];
  pthread_mutex_unlock(&g_net_mu);
  return u;
}

static void handle(char* line) {
  char* tok[4096];
  char err[1024] = "";
  int nt = split(line, tok, 4096);
  if (nt == 0) return;
  const char* c = tok[0];

  if (g_spec) { /* inside BEGIN..RUN */
    if (!strcmp(c, "RUN") && g_resume) {
      Spec* more = g_spec;
      g_spec = NULL;
      Filter* f = held_take(g_resume);
      g_resume = 0;
      if (!f) {
        reply("ERR RESUME: no such held stream");
        spec_free(more);
        return;
      }
      Job j;
      memset(&j, 0, sizeof j);
      j.fn = job_resume;
      j.a = more;
      j.b = f;
      int to = f->spec->timeout_ms ? f->spec->timeout_ms : 5000;
      if (run_job(f->w, &j, to * (more->nsteps + 2) + 10000) != 0) {
        reply("ERR timeout: worker %d did not finish the resumed request; host unusable", f->w->id);
        return;
      }
      spec_free(more);
      reply("%s", j.out.d);
      sb_free(&j.out);
      return;
    }
    if (!strcmp(c, "RUN")) {
      Spec* sp = g_spec;
      g_spec = NULL;
      if (!g_started || !L.http_loaded) {
        reply("ERR RUN before LOAD");
        spec_free(sp);
        return;
      }
      int holds = 0;
      for (int i = 0; i < sp->nsteps; i++) holds += sp->steps[i].op == OP_HOLD;
      if (!holds) { /* a held stream owns its spec; BENCH reuses the last plain one */
        spec_free(g_last_spec);
        g_last_spec = sp;
      }
      Job j;
      memset(&j, 0, sizeof j);
      j.fn = job_run;
      j.a = sp;
      int waits = 2;
      for (int i = 0; i < sp->nsteps; i++)
        if (sp->steps[i].op == OP_WAIT_UPSTREAM || sp->steps[i].op == OP_WAIT_DOWNSTREAM) waits++;
        else if (sp->steps[i].op == OP_PAUSE) waits += (int)(sp->steps[i].arg / (sp->timeout_ms ? sp->timeout_ms : 1)) + 1;
      if (run_job(&g_workers[sp->worker], &j, sp->timeout_ms * waits + 10000) != 0) {
        reply("ERR timeout: worker %d did not finish the request (a call into Go is stuck); host unusable",
              sp->worker);
        if (!holds) g_last_spec = NULL; /* the stuck job still uses it */
        return;
      }
      reply("%s", j.out.d);
      sb_free(&j.out);
      return;
    }
    if (!strcmp(c, "ABORT")) {
      spec_free(g_spec);
      g_spec = NULL;
      g_resume = 0;
      reply("OK");
      return;
    }
    if (parse_spec_line(g_spec, tok, nt, err, sizeof err) != 0) {
      spec_free(g_spec);
      g_spec = NULL;
      reply("ERR %s", err);
    }
    return; /* spec lines get no reply */
  }

  if (!strcmp(c, "HELLO")) {
    reply("OK envoyhost 1");
  } else if (!strcmp(c, "QUIT")) {
    reply("OK");
    fflush(stdout);
    _exit(0);
  } else if (!strcmp(c, "LOGLEVEL") && nt == 2) {
    g_log_level = atoi(tok[1]);
    reply("OK");
  } else if (!strcmp(c, "WORKERS") && nt == 2) {
    if (g_started) {
      reply("ERR WORKERS after LOAD");
      return;
    }
    g_nworkers = atoi(tok[1]);
    if (g_nworkers < 1 || g_nworkers > 256) g_nworkers = 1;
    reply("OK");
  } else if (!strcmp(c, "NODE_IN_CEL") && nt == 2) {
    g_node_in_cel = atoi(tok[1]);
    reply("OK");
  } else if (!strcmp(c, "NODEPROP") && nt == 4) {
    size_t kn, vn;
    char* a = dec_tok(tok[1], &kn, err, sizeof err);
    char* b = a ? dec_tok(tok[3], &vn, err, sizeof err) : NULL;
    if (!a || !b) {
      free(a);
      reply("ERR %s", err);
      return;
    }
    kv_push(&g_nodeprops, &g_nnodeprops, a, kn, b, vn, atoi(tok[2]));
    free(a);
    free(b);
    reply("OK");
  } else if (!strcmp(c, "LOAD") && nt == 2) {
    if (L.handle || L.floor) {
      reply("ERR already loaded (one .so per process)");
      return;
    }
    size_t n;
    char* path = dec_tok(tok[1], &n, err, sizeof err);
    if (!path) {
      reply("ERR %s", err);
      return;
    }
    start_workers();
    int rc = do_load(path, err, sizeof err);
    free(path);
    if (rc)
      reply("ERR %s", err);
    else
      reply("OK http=%d network=%d", L.http_loaded, L.net_loaded);
  } else if (!strcmp(c, "LOADFLOOR")) {
    if (L.handle || L.floor) {
      reply("ERR already loaded");
      return;
    }
    start_workers();
    L.floor = 1;
    L.new_config = floor_new_config;
    L.destroy_config = floor_destroy_config;
    L.on_header = floor_on_header;
    L.on_data = floor_on_header;
    L.on_log = floor_on_log;
    L.on_stream_complete = floor_on_req;
    L.on_destroy = floor_on_destroy;
    L.sema_dec = floor_on_req;
    L.http_loaded = 1;
    reply("OK http=1 network=0");
  } else if (!strcmp(c, "CONFIG") && nt == 3) {
    if (!L.http_loaded) {
      reply("ERR CONFIG before LOAD");
      return;
    }
    size_t nl, al;
    char* name = dec_tok(tok[1], &nl, err, sizeof err);
    char* any = name ? dec_tok(tok[2], &al, err, sizeof err) : NULL;
    if (!name || !any) {
      free(name);
      reply("ERR %s", err);
      return;
    }
    size_t mark = ev_mark();
    FilterConfig* fc = new_filter_config(name, nl, any, al, err, sizeof err);
    free(name);
    free(any);
    if (!fc) {
      SB ev = {0};
      ev_since(&ev, mark); /* the library's own error log, on one line */
      reply("ERR %s; events: %s", err, ev.d);
      sb_free(&ev);
    } else
      reply("OK %" PRIu64, fc->config_id);
  } else if (!strcmp(c, "ROUTECONFIG") && nt == 3) {
    if (!L.http_loaded) {
      reply("ERR ROUTECONFIG before LOAD");
      return;
    }
    size_t nl, al;
    char* name = dec_tok(tok[1], &nl, err, sizeof err);
    char* any = name ? dec_tok(tok[2], &al, err, sizeof err) : NULL;
    if (!name || !any) {
      free(name);
      reply("ERR %s", err);
      return;
    }
    RouteCfg* rc = xcalloc(1, sizeof *rc);
    rc->plugin_name = name;
    rc->plugin_len = nl;
    rc->any = any;
    rc->any_len = al;
    pthread_rwlock_init(&rc->mu, NULL);
    /* RoutePluginConfig ctor: the dso is loaded, so parse now */
    rc->config_id = route_get_config_id(rc);
    if (rc->config_id == 0) {
      reply("ERR golang filter failed to parse plugin config: %s", name);
      return;
    }
    g_routes = xrealloc(g_routes, sizeof(RouteCfg*) * (size_t)(g_nroutes + 1));
    g_routes[g_nroutes++] = rc;
    reply("OK %d", g_nroutes);
  } else if (!strcmp(c, "DESTROYCONFIG") && nt == 2) {
    FilterConfig* fc = find_cfg(strtoull(tok[1], NULL, 10));
    if (!fc) {
      reply("ERR unknown config");
      return;
    }
    pthread_mutex_lock(&g_cfg_mu);
    fc->alive = 0; /* weak_ptr<FilterConfig> expires */
    if (fc->internal) fc->internal->weak = NULL;
    pthread_mutex_unlock(&g_cfg_mu);
    L.destroy_config(fc->config_id, 0); /* ~FilterConfig */
    reply("OK");
  } else if (!strcmp(c, "BEGIN") || (!strcmp(c, "RESUME") && nt == 2)) {
    g_spec = xcalloc(1, sizeof(Spec));
    g_spec->timeout_ms = 5000;
    g_spec->buffer_limit = 1024 * 1024;
    g_resume = !strcmp(c, "RESUME") ? atoi(tok[1]) : 0;
    if (!strcmp(c, "RESUME") && g_resume <= 0) {
      spec_free(g_spec);
      g_spec = NULL;
      reply("ERR RESUME needs a held stream handle");
    }
  } else if (!strcmp(c, "BENCH") && nt >= 3) {
    if (!g_last_spec || !L.http_loaded) {
      reply("ERR BENCH needs a RUN first");
      return;
    }
    long n = atol(tok[1]);
    int k = atoi(tok[2]);
    if (k < 1 || k > g_nworkers) {
      reply("ERR BENCH k=%d but WORKERS %d", k, g_nworkers);
      return;
    }
    FilterConfig* cfg = spec_cfg(g_last_spec, err, sizeof err);
    if (!cfg) {
      reply("ERR %s", err);
      return;
    }
    BenchShared b;
    memset(&b, 0, sizeof b);
    b.sp = g_last_spec;
    b.cfg = cfg;
    b.n = n;
    Job* jobs = xcalloc((size_t)k, sizeof(Job));
    atomic_fetch_add(&ev_quiet, 1);
    long capi0 = atomic_load(&ev_capi_errors), elog0 = atomic_load(&ev_error_logs);
    int64_t w0 = now_ns(), c0 = cpu_ns();
    for (int i = 0; i < k; i++) {
      jobs[i].fn = job_bench;
      jobs[i].a = &b;
      jobs[i].k = i;
      pthread_mutex_init(&jobs[i].mu, NULL);
      pthread_cond_init(&jobs[i].cv, NULL);
      post(&g_workers[i], job_task, &jobs[i]);
    }
    int ok = 1;
    int64_t deadline = now_ns() + 600LL * 1000000000LL;
    for (int i = 0; i < k; i++) {
      pthread_mutex_lock(&jobs[i].mu);
      while (!jobs[i].done && now_ns() < deadline) {
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        ts.tv_nsec += 10000000L;
        if (ts.tv_nsec >= 1000000000L) {
          ts.tv_sec++;
          ts.tv_nsec -= 1000000000L;
        }
        pthread_cond_timedwait(&jobs[i].cv, &jobs[i].mu, &ts);
      }
      if (!jobs[i].done) ok = 0;
      pthread_mutex_unlock(&jobs[i].mu);
    }
    int64_t w1 = now_ns(), c1 = cpu_ns();
    atomic_fetch_sub(&ev_quiet, 1);
    if (!ok) {
      reply("ERR timeout: BENCH did not finish within 600s (done %ld of %ld)", atomic_load(&b.done), n);
      return; /* jobs leaked on purpose: workers may still use them */
    }
    free(jobs);
    reply("OK {\"n\":%ld,\"k\":%d,\"wall_ns\":%lld,\"cpu_ns\":%lld,\"errors\":%ld,\"local_replies\":%ld,"
          "\"capi_errors\":%ld,\"error_logs\":%ld}",
          n, k, (long long)(w1 - w0), (long long)(c1 - c0), atomic_load(&b.errors), atomic_load(&b.local_replies),
          atomic_load(&ev_capi_errors) - capi0, atomic_load(&ev_error_logs) - elog0);
  } else if (!strcmp(c, "LIVE")) {
    /* let the workers run posted deferred deletes first */
    for (int i = 0; g_started && i < g_nworkers; i++) {
      Job j;
      memset(&j, 0, sizeof j);
      j.fn = (void (*)(Job*))(void*)task_noop;
      run_job(&g_workers[i], &j, 5000);
    }
    reply("OK %ld %ld %d %d", atomic_load(&g_live_reqs), atomic_load(&g_live_filters),
          atomic_load(&g_live_http_cfg_internal), atomic_load(&g_live_net_wrappers));
  } else if (!strcmp(c, "GC")) {
    if (!L.handle) {
      reply(L.floor ? "OK" : "ERR GC before LOAD");
      return;
    }
    L.cleanup();
    reply("OK");
  } else if (!strcmp(c, "METRICS")) {
    cmd_metrics();
  } else if (!strcmp(c, "EVENTS")) {
    SB o = ev_take();
    reply("OK %s", o.d);
    sb_free(&o);
  } else if (!strcmp(c, "NETCONFIG") && nt == 3) {
    if (!L.net_loaded) {
      reply("ERR the library has no network filter entry points");
      return;
    }
    size_t il, al;
    char* id = dec_tok(tok[1], &il, err, sizeof err);
    char* any = id ? dec_tok(tok[2], &al, err, sizeof err) : NULL;
    if (!id || !any) {
      free(id);
      reply("ERR %s", err);
      return;
    }
    /* GolangConfigFactory::createFilterFactoryFromProtoTyped */
    uint64_t cid = L.net_on_config((GoUint64)(uintptr_t)id, il, (GoUint64)(uintptr_t)any, al);
    free(id);
    free(any);
    reply("OK %" PRIu64, cid);
  } else if (!strcmp(c, "CONN_NEW") && nt == 6) {
    if (!L.net_loaded) {
      reply("ERR the library has no network filter entry points");
      return;
    }
    int wid = atoi(tok[5]);
    if (wid < 0 || wid >= g_nworkers) {
      reply("ERR worker out of range");
      return;
    }
    NetFilter* f = xcalloc(1, sizeof *f);
    atomic_store(&f->refs, 1);
    f->w = &g_workers[wid];
    f->config_id = strtoull(tok[1], NULL, 10);
    size_t n;
    f->plugin = dec_tok(tok[2], &f->plugin_len, err, sizeof err);
    f->local = f->plugin ? dec_tok(tok[3], &n, err, sizeof err) : NULL;
    f->remote = f->local ? dec_tok(tok[4], &n, err, sizeof err) : NULL;
    if (!f->remote) {
      reply("ERR %s", err);
      return;
    }
    pthread_mutex_init(&f->mu, NULL);
    pthread_mutex_lock(&g_net_mu);
    f->handle = g_nconns;
    g_conns = xrealloc(g_conns, sizeof(NetFilter*) * (size_t)(g_nconns + 1));
    g_conns[g_nconns++] = f;
    pthread_mutex_unlock(&g_net_mu);
    NetJob nj = {.op = 0, .f = f};
    if (net_job(f->w, &nj, err, sizeof err)) {
      reply("ERR %s", err);
      return;
    }
    reply("OK %d %" PRIu64, f->handle, (uint64_t)nj.status);
  } else if ((!strcmp(c, "CONN_DATA") || !strcmp(c, "CONN_WRITE")) && nt == 4) {
    NetFilter* f = conn_get(tok[1]);
    if (!f) {
      reply("ERR unknown or closed connection");
      return;
    }
    NetJob nj = {.op = !strcmp(c, "CONN_DATA") ? 1 : 2, .f = f, .end = atoi(tok[2])};
    nj.d = dec_tok(tok[3], &nj.n, err, sizeof err);
    if (!nj.d || net_job(f->w, &nj, err, sizeof err)) {
      reply("ERR %s", err);
      return;
    }
    free(nj.d);
    reply("OK %" PRIu64, (uint64_t)nj.status);
  } else if (!strcmp(c, "CONN_EVENT") && nt == 3) {
    NetFilter* f = conn_get(tok[1]);
    if (!f) {
      reply("ERR unknown or closed connection");
      return;
    }
    NetJob nj = {.op = 3, .f = f, .ev = atoi(tok[2])};
    if (net_job(f->w, &nj, err, sizeof err)) {
      reply("ERR %s", err);
      return;
    }
    reply("OK");
  } else if (!strcmp(c, "CONN_STATE") && nt == 2) {
    int h = atoi(tok[1]);
    NetFilter* f = conn_get(tok[1]);
    if (!f) {
      reply("OK {\"handle\":%d,\"closed\":true,\"gone\":true}", h);
      return;
    }
    /* read it on its worker so posted writes/closes are applied first */
    Job j;
    memset(&j, 0, sizeof j);
    j.fn = (void (*)(Job*))(void*)task_noop;
    run_job(f->w, &j, 5000);
    f = conn_get(tok[1]);
    if (!f) {
      reply("OK {\"handle\":%d,\"closed\":true,\"gone\":true}", h);
      return;
    }
    SB o = {0};
    sb_printf(&o, "OK {\"handle\":%d,\"closed\":%s,\"gone\":false,\"written\":", h, f->closed ? "true" : "false");
    json_b64(&o, f->written.d ? f->written.d : "", f->written.n);
    sb_printf(&o, ",\"write_end\":%s,\"close_calls\":%d,\"last_close_type\":%d", f->write_end ? "true" : "false",
              f->close_calls, f->last_close_type);
    sb_printf(&o, ",\"read_in\":%" PRIu64 ",\"read_forwarded\":%" PRIu64 ",\"write_in\":%" PRIu64
                  ",\"write_forwarded\":%" PRIu64 ",\"filter_state\":[",
              f->read_in, f->read_forwarded, f->write_in, f->write_forwarded);
    for (int i = 0; i < f->nfstate; i++) {
      if (i) sb_addc(&o, ',');
      sb_addc(&o, '[');
      json_str(&o, f->fstate[i].k, f->fstate[i].kl);
      sb_addc(&o, ',');
      json_str(&o, f->fstate[i].v, f->fstate[i].vl);
      sb_addc(&o, ']');
    }
    sb_adds(&o, "]}");
    reply("%s", o.d);
    sb_free(&o);
  } else if (!strcmp(c, "UPSTREAMS")) {
    SB o = {0};
    sb_adds(&o, "OK [");
    pthread_mutex_lock(&g_net_mu);
    for (int i = 0; i < g_nups; i++) {
      UpConn* u = g_ups[i];
      if (i) sb_addc(&o, ',');
      sb_printf(&o, "{\"handle\":%d,\"addr\":", u->handle);
      json_strz(&o, u->addr);
      sb_printf(&o, ",\"conn_id\":%" PRIu64 ",\"state\":%d,\"half_close\":%d,\"close_calls\":%d,\"written\":",
                u->go_conn_id, u->state, u->half_close, u->close_calls);
      json_b64(&o, u->written.d ? u->written.d : "", u->written.n);
      sb_addc(&o, '}');
    }
    pthread_mutex_unlock(&g_net_mu);
    sb_addc(&o, ']');
    reply("%s", o.d);
    sb_free(&o);
  } else if ((!strcmp(c, "UP_READY") && nt == 2) || (!strcmp(c, "UP_FAIL") && nt == 3) ||
             (!strcmp(c, "UP_DATA") && nt == 4) || (!strcmp(c, "UP_EVENT") && nt == 3)) {
    UpConn* u = up_get(tok[1]);
    if (!u || !L.net_loaded) {
      reply("ERR unknown upstream connection");
      return;
    }
    NetJob nj = {.u = u};
    if (!strcmp(c, "UP_READY")) nj.op = 4;
    else if (!strcmp(c, "UP_FAIL")) { nj.op = 5; nj.ev = atoi(tok[2]); }
    else if (!strcmp(c, "UP_EVENT")) { nj.op = 7; nj.ev = atoi(tok[2]); }
    else {
      nj.op = 6;
      nj.end = atoi(tok[2]);
      nj.d = dec_tok(tok[3], &nj.n, err, sizeof err);
      if (!nj.d) {
        reply("ERR %s", err);
        return;
      }
    }
    if (net_job(u->w, &nj, err, sizeof err)) {
      reply("ERR %s", err);
      return;
    }
    free(nj.d);
    reply("OK");
  } else {
    reply("ERR unknown command or wrong arguments: %s", c);
  }
}

int main(int argc, char** argv) {
  (void)argc;
  (void)argv;
  setvbuf(stdout, NULL, _IOFBF, 1 << 16);
  char* line = NULL;
  size_t cap = 0;
  ssize_t n;
  while ((n = getline(&line, &cap, stdin)) > 0) {
    while (n > 0 && (line[n - 1] == '\n' || line[n - 1] == '\r')) line[--n] = 0;
    handle(line);
  }
  free(line);
  /* stdin closed: the driver went away */
  fflush(stdout);
  _exit(0);
}
