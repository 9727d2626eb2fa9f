//go:build ignore

/*
 * Part of the C test host (one translation unit: host.c includes its parts in order).
 *
 * The loaded library's entry points and the HTTP filter configurations.
 * Mirrors contrib/golang/filters/http/source/golang_filter.cc: FilterConfig (newGoPluginConfig,
 * the httpConfigInternal handed to Go), RoutePluginConfig (getConfigId, getMergedConfigId);
 * contrib/golang/common/dso/dso.cc (the entry points resolved with dlsym).
 */

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
