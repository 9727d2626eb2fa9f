//go:build ignore

/*
 * Part of the C test host (one translation unit: host.c includes its parts in order).
 *
 * The request loop: one HTTP stream's lifecycle driven by a test script, and the RUN, RESUME
 * and BENCH jobs.
 * Mirrors contrib/golang/filters/http/source/golang_filter.cc (Filter::Filter, onStreamComplete,
 * log, onDestroy) in the order source/common/http/filter_manager.cc and conn_manager_impl.cc call
 * them (decode*, encode*, log, onDestroy, then the stream's deferred delete).
 */

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
  xcount(X_OnHttpStreamComplete);
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
  xcount(X_OnHttpLog);
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
  xcount(X_OnHttpDestroy);
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
