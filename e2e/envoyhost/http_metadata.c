//go:build ignore

/*
 * Part of the C test host (one translation unit: host.c includes its parts in order).
 *
 * Host functions the Go side calls for stream state (Go->C): dynamic metadata, filter state,
 * properties (entry point), secrets, drain; the finalizers, Go's log lines and metrics.
 * Mirrors contrib/golang/filters/http/source/cgo.cc and golang_filter.cc
 * (Filter::getDynamicMetadata, populateSliceWithMetadata, setDynamicMetadata,
 * setStringFilterState, getStringFilterState, getStringProperty, getSecret,
 * setDrainConnectionUponCompletion, deferredDeleteRequest, FilterConfig::defineMetric,
 * incrementMetric, getMetric, recordMetric) and contrib/golang/common/log/cgo.cc.
 */

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
      xcount(X_RequestSemaDec);
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
      xcount(X_RequestSemaDec);
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
      xcount(X_RequestSemaDec);
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
  xcount(X_HttpGetDynamicMetadata);
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
  xcount(X_HttpSetDynamicMetadata);
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
  xcount(X_HttpSetStringFilterState);
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
  xcount(X_HttpGetStringFilterState);
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
  xcount_key(X_HttpGetStringProperty, key_data, (size_t)key_len);
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
  xcount(X_HttpGetStringSecret);
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
  xcount(X_HttpSetDrainConnectionUponCompletion);
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
  xcount(X_HttpFinalize);
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
  xcount(X_Log);
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
  xcount(X_ConfigHttpFinalize);
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
  xcount(X_HttpDefineMetric);
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
  xcount(X_HttpIncrementMetric);
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
  xcount(X_HttpGetMetric);
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
  xcount(X_HttpRecordMetric);
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
