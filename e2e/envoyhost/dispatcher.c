//go:build ignore

/*
 * Part of the C test host (one translation unit: host.c includes its parts in order).
 *
 * Worker threads and their dispatchers.
 * Mirrors source/common/event/dispatcher_impl.cc: Event::Dispatcher::post (a task queue run on
 * the worker's thread), isThreadSafe (pthread_self == the worker's thread) and deferredDelete
 * (run at the end of a loop pass).
 */

/* -------------------------------------------------- workers/dispatchers */
typedef struct Task {
  void (*fn)(void*);
  void* arg;
  struct Task* next;
} Task;

typedef struct Worker {
  int id;
  char name[32]; /* "worker_<id>": Envoy derives worker_id from it */
  pthread_t tid;
  pthread_mutex_t mu;
  pthread_cond_t cv;
  Task *head, *tail;
  /* deferred deletes (Dispatcher::deferredDelete), worker thread only */
  void** deferred;
  int ndeferred, capdeferred;
} Worker;

static Worker* g_workers;
static int g_nworkers = 1;
static int g_started;

static int is_thread_safe(Worker* w) { return pthread_equal(pthread_self(), w->tid); }

/* Event::Dispatcher::post */
static void post(Worker* w, void (*fn)(void*), void* arg) {
  Task* t = xmalloc(sizeof(Task));
  t->fn = fn;
  t->arg = arg;
  t->next = NULL;
  pthread_mutex_lock(&w->mu);
  if (w->tail)
    w->tail->next = t;
  else
    w->head = t;
  w->tail = t;
  pthread_cond_signal(&w->cv);
  pthread_mutex_unlock(&w->mu);
}

static void free_http_req(void* r);
/* runs deferred deletes, as the dispatcher does at the end of a loop pass */
static void flush_deferred(Worker* w) {
  while (w->ndeferred) {
    void* p = w->deferred[--w->ndeferred];
    free_http_req(p);
  }
}
static void deferred_delete(Worker* w, void* req) {
  if (w->ndeferred == w->capdeferred) {
    w->capdeferred = w->capdeferred ? w->capdeferred * 2 : 16;
    w->deferred = xrealloc(w->deferred, sizeof(void*) * (size_t)w->capdeferred);
  }
  w->deferred[w->ndeferred++] = req;
}

/* runs one posted task; waits until deadline_ns (absolute, monotonic) for
 * one; returns 1 if a task ran. deadline 0 = do not wait. */
static int run_one(Worker* w, int64_t deadline_ns) {
  pthread_mutex_lock(&w->mu);
  while (!w->head) {
    if (deadline_ns == 0 || now_ns() >= deadline_ns) {
      pthread_mutex_unlock(&w->mu);
      return 0;
    }
    /* condvar on CLOCK_REALTIME: wait in short slices against monotonic */
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    int64_t left = deadline_ns - now_ns();
    if (left > 2000000) left = 2000000;
    ts.tv_nsec += (long)left;
    while (ts.tv_nsec >= 1000000000L) {
      ts.tv_sec++;
      ts.tv_nsec -= 1000000000L;
    }
    pthread_cond_timedwait(&w->cv, &w->mu, &ts);
  }
  Task* t = w->head;
  w->head = t->next;
  if (!w->head) w->tail = NULL;
  pthread_mutex_unlock(&w->mu);
  t->fn(t->arg);
  free(t);
  return 1;
}

/* runs posted tasks until pred(arg) is true or the deadline passes;
 * returns pred's final value */
static int run_until(Worker* w, int (*pred)(void*), void* arg, int64_t deadline_ns) {
  while (!pred(arg)) {
    if (now_ns() >= deadline_ns) return pred(arg);
    run_one(w, deadline_ns);
  }
  return 1;
}
static void run_ready(Worker* w) {
  while (run_one(w, 0)) {
  }
}

static void* worker_main(void* arg) {
  Worker* w = arg;
  for (;;) {
    run_one(w, now_ns() + 3600LL * 1000000000LL);
    flush_deferred(w);
  }
  return NULL;
}

/* A job runs on a worker; the caller waits for it with a timeout. */
typedef struct Job {
  void (*fn)(struct Job*);
  pthread_mutex_t mu;
  pthread_cond_t cv;
  int done;
  void* a;
  void* b;
  long n;
  long k;
  SB out;
} Job;
static void job_task(void* arg) {
  Job* j = arg;
  j->fn(j);
  pthread_mutex_lock(&j->mu);
  j->done = 1;
  pthread_cond_broadcast(&j->cv);
  pthread_mutex_unlock(&j->mu);
}
/* returns 0 on success, -1 on timeout (the job is then leaked: the worker
 * is stuck and the host should be killed by the driver) */
static int run_job(Worker* w, Job* j, int timeout_ms) {
  pthread_mutex_init(&j->mu, NULL);
  pthread_cond_init(&j->cv, NULL);
  j->done = 0;
  post(w, job_task, j);
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  ts.tv_sec += timeout_ms / 1000;
  ts.tv_nsec += (long)(timeout_ms % 1000) * 1000000L;
  if (ts.tv_nsec >= 1000000000L) {
    ts.tv_sec++;
    ts.tv_nsec -= 1000000000L;
  }
  pthread_mutex_lock(&j->mu);
  while (!j->done) {
    if (pthread_cond_timedwait(&j->cv, &j->mu, &ts) == ETIMEDOUT) break;
  }
  int ok = j->done;
  pthread_mutex_unlock(&j->mu);
  return ok ? 0 : -1;
}

static void start_workers(void) {
  if (g_started) return;
  g_workers = xcalloc((size_t)g_nworkers, sizeof(Worker));
  for (int i = 0; i < g_nworkers; i++) {
    Worker* w = &g_workers[i];
    w->id = i;
    snprintf(w->name, sizeof(w->name), "worker_%d", i);
    pthread_mutex_init(&w->mu, NULL);
    pthread_cond_init(&w->cv, NULL);
    if (pthread_create(&w->tid, NULL, worker_main, w) != 0) die("pthread_create");
  }
  g_started = 1;
}
