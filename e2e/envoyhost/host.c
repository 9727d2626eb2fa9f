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
 * Files (host.c includes them in this order; each opens with the Envoy source it mirrors):
 *   base.c          utilities, Http::HeaderMapImpl, Buffer::OwnedImpl, the event log
 *   crossings.c     counts of C->Go callbacks and Go->C calls by kind (BENCH reports them)
 *   dispatcher.c    workers and Event::Dispatcher
 *   config.c        the library's entry points, FilterConfig, RoutePluginConfig
 *   spec.c          what a test sets for a stream (StreamInfo, properties, metadata)
 *   http_state.c    processor_state.cc and the filter manager around the filter
 *   http_filter.c   golang_filter.cc: the C side of the C->Go callbacks
 *   http_capi.c     cgo.cc: continue, local reply, data, headers, buffers (Go->C)
 *   http_metadata.c cgo.cc: metadata, filter state, finalizers, log, metrics (Go->C)
 *   streaminfo.c    Filter::getIntegerValue / getStringValue
 *   attributes.c    CEL attributes (Filter::getStringPropertyInternal, expr/context.cc)
 *   http_stream.c   the request loop: a stream's lifecycle, RUN / RESUME / BENCH
 *   network.c       the network filter and its upstream connections
 *   commands.c      command parsing helpers; host.c holds the dispatch and main
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
 *                                      {"n","k","wall_ns","cpu_ns","errors",...,
 *                                      "go_mallocs","go_alloc_bytes" (Go heap allocations
 *                                      during the run, -1 without goAllocStats),
 *                                      "c2go","go2c" (calls by kind), "keys"
 *                                      (property paths / value ids read)}
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


/* The host is one translation unit: host.c includes its parts in this order, so the static
 * helpers stay static and inline as before. Each part opens with the Envoy source it mirrors. */
#include "base.c"
#include "crossings.c"
#include "dispatcher.c"
#include "config.c"
#include "spec.c"
#include "http_state.c"
#include "http_filter.c"
#include "http_capi.c"
#include "http_metadata.c"
#include "streaminfo.c"
#include "attributes.c"
#include "http_stream.c"
#include "network.c"
#include "commands.c"

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
    static XSnap x0, x1; /* large: not on the stack */
    long long m0, mb0, m1, mb1;
    x_allocs(&m0, &mb0);
    x_snap(&x0);
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
    x_snap(&x1);
    x_allocs(&m1, &mb1);
    atomic_fetch_sub(&ev_quiet, 1);
    if (!ok) {
      reply("ERR timeout: BENCH did not finish within 600s (done %ld of %ld)", atomic_load(&b.done), n);
      return; /* jobs leaked on purpose: workers may still use them */
    }
    free(jobs);
    SB xj = {0};
    x_json(&xj, &x0, &x1);
    reply("OK {\"n\":%ld,\"k\":%d,\"wall_ns\":%lld,\"cpu_ns\":%lld,\"errors\":%ld,\"local_replies\":%ld,"
          "\"capi_errors\":%ld,\"error_logs\":%ld,\"go_mallocs\":%lld,\"go_alloc_bytes\":%lld,%.*s}",
          n, k, (long long)(w1 - w0), (long long)(c1 - c0), atomic_load(&b.errors), atomic_load(&b.local_replies),
          atomic_load(&ev_capi_errors) - capi0, atomic_load(&ev_error_logs) - elog0,
          m0 < 0 ? -1LL : m1 - m0, mb0 < 0 ? -1LL : mb1 - mb0, (int)xj.n, xj.d ? xj.d : "");
    sb_free(&xj);
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
