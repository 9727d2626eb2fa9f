//go:build ignore

/*
 * Part of the C test host (one translation unit: host.c includes its parts in order).
 *
 * The HTTP golang filter: the C side of every C->Go callback.
 * Mirrors contrib/golang/filters/http/source/golang_filter.cc: Filter::initRequest,
 * doHeaders/doHeadersGo, doData/doDataGo, doTrailer/doTrailerGo, decode and encode callbacks,
 * continueStatusInternal, sendLocalReplyInternal.
 */

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
  xcount(X_OnHttpHeader);
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
  xcount(X_OnHttpData);
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
  xcount(X_OnHttpHeader);
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
