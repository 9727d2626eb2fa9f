//go:build ignore

/*
 * Part of the C test host (one translation unit: host.c includes its parts in order).
 *
 * Utilities, header maps, buffers and the event log of the test host.
 * Mirrors (where it models Envoy):
 *   source/common/http/header_map_impl.cc  Http::HeaderMapImpl (ordered entries, pseudo headers
 *                                          first; setCopy = remove + addCopy)
 *   source/common/buffer/buffer_impl.cc    Buffer::OwnedImpl (add, prepend, drain, move)
 */

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
