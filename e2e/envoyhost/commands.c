//go:build ignore

/*
 * Part of the C test host (one translation unit: host.c includes its parts in order).
 *
 * The command loop's helpers: replies, tokens, loading the library, spec and step parsing,
 * METRICS, and the network command jobs. The protocol itself is documented at the top of host.c.
 * Loading mirrors contrib/golang/common/dso/dso.cc (dlopen RTLD_NOW, one library per path).
 */

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
  x_go_allocs = (void (*)(GoUint64*))dlsym(L.handle, "goAllocStats"); /* optional */
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
