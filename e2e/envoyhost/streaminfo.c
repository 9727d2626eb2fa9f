//go:build ignore

/*
 * Part of the C test host (one translation unit: host.c includes its parts in order).
 *
 * Stream info values (Go->C): the answers of envoyGoFilterHttpGetIntegerValue and
 * envoyGoFilterHttpGetStringValue.
 * Mirrors contrib/golang/filters/http/source/golang_filter.cc: Filter::getIntegerValue and
 * Filter::getStringValue (protocol, response code, details, attempt count, addresses, SSL,
 * upstream info, route and virtual cluster names, filter chain name).
 */

/* ------------------------------------------------ stream info values */
static SIVal* siv(Filter* f, int k) { return &f->spec->si[k]; }
static int si_has(Filter* f, int k) { return f->spec->si[k].has; }
static uint64_t si_u64(Filter* f, int k) { return strtoull(f->spec->si[k].v ? f->spec->si[k].v : "0", NULL, 10); }
static int ssl_on(Filter* f) { return si_has(f, SI_SSL) && strcmp(siv(f, SI_SSL)->v, "0") != 0; }
static int si_bool(Filter* f, int k) { return si_has(f, k) && strcmp(siv(f, k)->v, "0") != 0 && siv(f, k)->n; }
static const char* dl_addr(Filter* f) {
  return si_has(f, SI_DOWNSTREAM_LOCAL_ADDRESS) ? siv(f, SI_DOWNSTREAM_LOCAL_ADDRESS)->v : "127.0.0.1:8080";
}
static const char* dr_addr(Filter* f) {
  return si_has(f, SI_DOWNSTREAM_REMOTE_ADDRESS) ? siv(f, SI_DOWNSTREAM_REMOTE_ADDRESS)->v : "127.0.0.1:50000";
}
static int upstream_info(Filter* f) {
  return si_has(f, SI_UPSTREAM_REMOTE_ADDRESS) || si_has(f, SI_UPSTREAM_LOCAL_ADDRESS);
}
/* Http::Utility::getProtocolString / Http::Protocol enum */
static int protocol_id(Filter* f) {
  if (!si_has(f, SI_PROTOCOL)) return -1;
  const char* p = siv(f, SI_PROTOCOL)->v;
  if (!strcmp(p, "HTTP/1.0")) return 0;
  if (!strcmp(p, "HTTP/1.1")) return 1;
  if (!strcmp(p, "HTTP/2")) return 2;
  if (!strcmp(p, "HTTP/3")) return 3;
  return -1;
}

/* Filter::getIntegerValue */
CAPIStatus envoyGoFilterHttpGetIntegerValue(void* rp, int id, uint64_t* value) {
  xcount_id(X_HttpGetIntegerValue, id);
  REQ_WRAP("HttpGetIntegerValue");
  pthread_mutex_lock(&f->mu);
  CAPIStatus st = CAPIOK;
  if (has_destroyed(f)) {
    st = CAPIFilterIsDestroy;
    goto out;
  }
  switch (id) {
  case 3: { /* Protocol */
    int p = protocol_id(f);
    if (p < 0)
      st = CAPIValueNotFound;
    else
      *value = (uint64_t)p;
    break;
  }
  case 4: /* ResponseCode */
    if (!f->code_has)
      st = CAPIValueNotFound;
    else
      *value = f->code;
    break;
  case 6: /* AttemptCount */
    if (!si_has(f, SI_ATTEMPT_COUNT))
      st = CAPIValueNotFound;
    else
      *value = si_u64(f, SI_ATTEMPT_COUNT);
    break;
  case 100: /* SslConnectionExists */
    *value = ssl_on(f) ? 1 : 0;
    break;
  case 101:
  case 102:
    if (!ssl_on(f))
      st = CAPIValueNotFound;
    else
      *value = si_bool(f, id == 101 ? SI_SSL_PEER_PRESENTED : SI_SSL_PEER_VALIDATED) ? 1 : 0;
    break;
  case 103: /* SslCiphersuiteId */
    if (!ssl_on(f) || !si_has(f, SI_SSL_CIPHER_ID) || si_u64(f, SI_SSL_CIPHER_ID) == 0xffff)
      st = CAPIValueNotFound;
    else
      *value = si_u64(f, SI_SSL_CIPHER_ID);
    break;
  case 104:
  case 105: {
    int k = id == 104 ? SI_SSL_VALID_FROM : SI_SSL_EXPIRATION;
    if (!ssl_on(f) || !si_has(f, k))
      st = CAPIValueNotFound;
    else
      *value = si_u64(f, k);
    break;
  }
  default:
    note_event("invalid integer value id (Envoy RELEASE_ASSERT would abort)", hr);
    st = CAPIInternalFailure;
  }
out:
  pthread_mutex_unlock(&f->mu);
  filter_unref(f);
  char idb[16];
  snprintf(idb, sizeof idb, "%d", id);
  note_capi_key("HttpGetIntegerValue", st, hr, NULL, idb, strlen(idb));
  return st;
}

/* Filter::getStringValue */
CAPIStatus envoyGoFilterHttpGetStringValue(void* rp, int id, uint64_t* value_data, int* value_len) {
  xcount_id(X_HttpGetStringValue, id);
  REQ_WRAP("HttpGetStringValue");
  pthread_mutex_lock(&f->mu);
  CAPIStatus st = CAPIOK;
  SIVal* v;
  if (has_destroyed(f)) {
    st = CAPIFilterIsDestroy;
    goto out;
  }
#define SIV_OR_EMPTY(k) (v = siv(f, k), set_str(hr, v->has ? v->v : "", v->has ? v->n : 0))
#define SIV_OR_NF(k)            \
  do {                          \
    v = siv(f, k);              \
    if (!v->has)                \
      st = CAPIValueNotFound;   \
    else                        \
      set_str(hr, v->v, v->n);  \
  } while (0)
  switch (id) {
  case 1: SIV_OR_EMPTY(SI_ROUTE_NAME); break;
  case 2: SIV_OR_EMPTY(SI_FILTER_CHAIN_NAME); break;
  case 5:
    if (!f->details)
      st = CAPIValueNotFound;
    else
      set_str(hr, f->details, f->details_n);
    break;
  case 7: set_str(hr, dl_addr(f), strlen(dl_addr(f))); break;
  case 8: set_str(hr, dr_addr(f), strlen(dr_addr(f))); break;
  case 9: SIV_OR_NF(SI_UPSTREAM_LOCAL_ADDRESS); break;
  case 10: SIV_OR_NF(SI_UPSTREAM_REMOTE_ADDRESS); break;
  case 11: SIV_OR_NF(SI_UPSTREAM_CLUSTER_NAME); break;
  case 12: SIV_OR_NF(SI_VIRTUAL_CLUSTER_NAME); break;
  case 106: case 107: case 108: case 109: case 110: case 111: case 112: case 113: case 114:
  case 115: case 116: case 117: case 118: case 119: {
    static const int map[] = {SI_SSL_SHA256_PEER, SI_SSL_SERIAL_PEER, SI_SSL_SUBJECT_PEER,
                              SI_SSL_ISSUER_PEER, SI_SSL_SUBJECT_LOCAL, SI_SSL_TLS_VERSION,
                              SI_SSL_CIPHER, SI_SSL_SESSION_ID, SI_SSL_PEM_PEER,
                              SI_SSL_PEM_PEER_CHAIN, SI_SSL_URI_SAN_PEER, SI_SSL_URI_SAN_LOCAL,
                              SI_SSL_DNS_SAN_PEER, SI_SSL_DNS_SAN_LOCAL};
    if (!ssl_on(f)) {
      st = CAPIValueNotFound;
      break;
    }
    v = siv(f, map[id - 106]);
    if (id == 112 && (!v->has || v->n == 0)) { /* empty ciphersuite string: not found */
      st = CAPIValueNotFound;
      break;
    }
    /* SAN lists are NUL separated in the table already, as Envoy joins them */
    set_str(hr, v->has ? v->v : "", v->has ? v->n : 0);
    break;
  }
  default:
    note_event("invalid string value id (Envoy RELEASE_ASSERT would abort)", hr);
    st = CAPIInternalFailure;
  }
  if (st == CAPIOK) {
    *value_data = (uint64_t)(uintptr_t)hr->str.d;
    *value_len = (int)hr->str.n;
  }
out:
  pthread_mutex_unlock(&f->mu);
  filter_unref(f);
  char idb[16];
  snprintf(idb, sizeof idb, "%d", id);
  note_capi_key("HttpGetStringValue", st, hr, NULL, idb, strlen(idb));
  return st;
}
