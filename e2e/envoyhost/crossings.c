//go:build ignore

/*
 * Part of the C test host (one translation unit: host.c includes its parts in order).
 *
 * Boundary crossings: every C->Go callback the host makes and every Go->C host function the
 * library calls, counted by kind (and, for property and stream-info reads, by key), so that
 * BENCH reports calls per request. Envoy counts none of this; the kinds are the entry points
 * of contrib/golang/filters/http/source/cgo.cc (Go->C) and the exports of the SDK's
 * pkg/http/shim.go (C->Go). Counters are per thread (Go calls in from any thread), so
 * counting adds no shared cache line to the path it measures.
 */

#define X_KINDS(X)                                                                               \
  X(OnHttpHeader) X(OnHttpData) X(OnHttpLog) X(OnHttpStreamComplete) X(OnHttpDestroy)            \
  X(RequestSemaDec)                                                                              \
  X(HttpContinue) X(HttpSendLocalReply) X(HttpSendPanicReply) X(HttpAddData) X(HttpInjectData)   \
  X(HttpGetHeader) X(HttpCopyHeaders) X(HttpSetHeaderHelper) X(HttpRemoveHeader)                 \
  X(HttpSetTrailer) X(HttpRemoveTrailer) X(HttpCopyTrailers) X(HttpGetBuffer) X(HttpDrainBuffer) \
  X(HttpSetBufferHelper) X(HttpSetUpstreamOverrideHost) X(HttpClearRouteCache)                   \
  X(HttpGetDynamicMetadata) X(HttpSetDynamicMetadata) X(HttpSetStringFilterState)                \
  X(HttpGetStringFilterState) X(HttpGetStringProperty) X(HttpGetStringSecret)                    \
  X(HttpSetDrainConnectionUponCompletion) X(HttpFinalize) X(Log) X(LogLevel) X(ConfigHttpFinalize) \
  X(HttpDefineMetric) X(HttpIncrementMetric) X(HttpGetMetric) X(HttpRecordMetric)               \
  X(HttpGetIntegerValue) X(HttpGetStringValue)

#define X_ENUM(k) X_##k,
enum { X_KINDS(X_ENUM) X_N };
#define X_NAME(k) #k,
static const char* x_names[X_N] = {X_KINDS(X_NAME)};
#define X_FIRST_GO2C X_HttpContinue /* kinds before it are C->Go callbacks */

#define X_MAXKEYS 48
typedef struct {
  int kind;
  char key[56];
  uint64_t n;
} XKey;

typedef struct XCount {
  uint64_t n[X_N];
  XKey keys[X_MAXKEYS];
  int nkeys;
  char pad[64]; /* the next thread's counters start on another cache line */
} XCount;

static pthread_mutex_t x_mu = PTHREAD_MUTEX_INITIALIZER;
static XCount** x_all;
static int x_nall;
static __thread XCount* x_mine;

static XCount* x_register(void) {
  XCount* c;
  if (posix_memalign((void**)&c, 64, sizeof(XCount)) != 0) die("out of memory");
  memset(c, 0, sizeof *c);
  pthread_mutex_lock(&x_mu);
  x_all = xrealloc(x_all, sizeof(*x_all) * (size_t)(x_nall + 1));
  x_all[x_nall++] = c;
  pthread_mutex_unlock(&x_mu);
  x_mine = c;
  return c;
}

/* relaxed load + store: only this thread writes its counters */
static inline void x_inc(uint64_t* p) { __atomic_store_n(p, __atomic_load_n(p, __ATOMIC_RELAXED) + 1, __ATOMIC_RELAXED); }

static inline void xcount(int kind) {
  XCount* c = x_mine ? x_mine : x_register();
  x_inc(&c->n[kind]);
}

/* counts kind and, separately, the key asked for (a property path, a value id) */
static void xcount_key(int kind, const char* key, size_t kl) {
  XCount* c = x_mine ? x_mine : x_register();
  x_inc(&c->n[kind]);
  if (kl >= sizeof c->keys[0].key) kl = sizeof c->keys[0].key - 1;
  int nk = __atomic_load_n(&c->nkeys, __ATOMIC_ACQUIRE);
  for (int i = 0; i < nk; i++) {
    XKey* e = &c->keys[i];
    if (e->kind == kind && strlen(e->key) == kl && memcmp(e->key, key, kl) == 0) {
      x_inc(&e->n);
      return;
    }
  }
  if (nk == X_MAXKEYS) return;
  XKey* e = &c->keys[nk];
  e->kind = kind;
  memcpy(e->key, key, kl);
  e->key[kl] = 0;
  e->n = 1;
  __atomic_store_n(&c->nkeys, nk + 1, __ATOMIC_RELEASE);
}

/* counts a stream-info read by its value id (small numbers; no printf on the path) */
static void xcount_id(int kind, int id) {
  char k[12];
  int n = 0;
  unsigned u = (unsigned)id;
  char t[12];
  do t[n++] = (char)('0' + u % 10); while ((u /= 10) && n < 11);
  for (int i = 0; i < n; i++) k[i] = t[n - 1 - i];
  xcount_key(kind, k, (size_t)n);
}

/* a snapshot of all threads' counters */
typedef struct {
  uint64_t n[X_N];
  XKey keys[4 * X_MAXKEYS];
  int nkeys;
} XSnap;

static void x_snap(XSnap* s) {
  memset(s, 0, sizeof *s);
  pthread_mutex_lock(&x_mu);
  for (int t = 0; t < x_nall; t++) {
    XCount* c = x_all[t];
    for (int k = 0; k < X_N; k++) s->n[k] += __atomic_load_n(&c->n[k], __ATOMIC_RELAXED);
    int nk = __atomic_load_n(&c->nkeys, __ATOMIC_ACQUIRE);
    for (int i = 0; i < nk; i++) {
      XKey* e = &c->keys[i];
      int j = 0;
      while (j < s->nkeys && !(s->keys[j].kind == e->kind && !strcmp(s->keys[j].key, e->key))) j++;
      if (j == s->nkeys) {
        if (s->nkeys == 4 * X_MAXKEYS) continue;
        s->keys[j] = *e;
        s->keys[j].n = 0;
        s->nkeys++;
      }
      s->keys[j].n += __atomic_load_n(&e->n, __ATOMIC_RELAXED);
    }
  }
  pthread_mutex_unlock(&x_mu);
}

static uint64_t x_key_n(const XSnap* s, int kind, const char* key) {
  for (int j = 0; j < s->nkeys; j++)
    if (s->keys[j].kind == kind && !strcmp(s->keys[j].key, key)) return s->keys[j].n;
  return 0;
}

/* JSON of after - before: {"c2go":{kind:n},"go2c":{kind:n},"keys":{"kind key":n}} (non-zero only) */
static void x_json(SB* o, const XSnap* a, const XSnap* b) {
  for (int part = 0; part < 2; part++) {
    sb_adds(o, part == 0 ? "\"c2go\":{" : ",\"go2c\":{");
    int first = 1;
    for (int k = part == 0 ? 0 : X_FIRST_GO2C; k < (part == 0 ? X_FIRST_GO2C : X_N); k++) {
      uint64_t d = b->n[k] - a->n[k];
      if (!d) continue;
      sb_printf(o, "%s\"%s\":%llu", first ? "" : ",", x_names[k], (unsigned long long)d);
      first = 0;
    }
    sb_addc(o, '}');
  }
  sb_adds(o, ",\"keys\":{");
  int first = 1;
  for (int j = 0; j < b->nkeys; j++) {
    uint64_t d = b->keys[j].n - x_key_n(a, b->keys[j].kind, b->keys[j].key);
    if (!d) continue;
    SB k = {0};
    sb_printf(&k, "%s %s", x_names[b->keys[j].kind], b->keys[j].key);
    if (!first) sb_addc(o, ',');
    json_str(o, k.d, k.n);
    sb_printf(o, ":%llu", (unsigned long long)d);
    sb_free(&k);
    first = 0;
  }
  sb_addc(o, '}');
}

/* Go heap allocations (runtime.MemStats Mallocs, TotalAlloc) from the library, when it
 * exports goAllocStats (leanmesh.so and the host's plugins do); -1 otherwise. */
static void (*x_go_allocs)(GoUint64* out);
static void x_allocs(long long* mallocs, long long* bytes) {
  *mallocs = *bytes = -1;
  if (!x_go_allocs) return;
  GoUint64 v[2] = {0, 0};
  x_go_allocs(v);
  *mallocs = (long long)v[0];
  *bytes = (long long)v[1];
}
