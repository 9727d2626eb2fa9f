//go:build ignore

/*
 * Part of the C test host (one translation unit: host.c includes its parts in order).
 *
 * CEL attributes (properties) for envoyGoFilterHttpGetStringProperty.
 * Mirrors contrib/golang/filters/http/source/golang_filter.cc: Filter::getStringPropertyInternal
 * and serializeStringValue, over the attribute set of
 * source/extensions/filters/common/expr/context.cc (request.*, response.*, connection.*,
 * upstream.*, source.*, destination.*, metadata, filter_state, xds.*), with absl's duration and
 * time formatting.
 */

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
