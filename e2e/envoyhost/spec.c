//go:build ignore

/*
 * Part of the C test host (one translation unit: host.c includes its parts in order).
 *
 * Request specs: the StreamInfo, properties, dynamic metadata and filter state a test sets
 * (what Envoy's StreamInfoImpl would hold for the stream), and just enough protobuf wire format
 * for google.protobuf.Struct (the Metadata of envoy/config/core/v3/base.proto).
 */

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
