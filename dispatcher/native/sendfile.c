/*
 * Zero-copy image downloads for the dispatcher: Node has no sendfile(2), so every byte of a
 * 38 MB initrd would be copied from user space into each client's socket. This addon keeps a
 * boot file in a sealed memfd and sends it with sendfile(2) (page-cache pages go to the NIC
 * or the veth peer without a copy), as nginx does.
 *
 *   image = memfd(name, buffer)            sealed copy of the bytes; closed when garbage-collected
 *   t = start(socketFd, image, offset, length, idleTimeoutMs, cb)
 *                                          cb(errno, bytesSent) on the JS thread, once; errno 0 = done
 *   abort(t)                               ends the transfer (cb gets ECANCELED); only before cb
 *
 * Sender threads of our own (not libuv's threadpool, which the ESM loader has already sized
 * before any of our code runs, and which fs, dns and crypto share), one per CPU up to
 * MAX_SENDERS, as nginx runs one worker per CPU: each drives its share of the transfers with
 * epoll: non-blocking sendfile until EAGAIN, then wait for EPOLLOUT. A transfer works on a
 * dup() of the socket, so a JS-side close can never make it write into a reused descriptor;
 * the dup is closed on the JS thread when cb runs, and abort() shuts the connection down
 * through it (so the thread sees an error at once). A transfer that makes no progress for
 * idleTimeoutMs (a client that vanished without a reset) ends with ETIMEDOUT.
 *
 * Build: cc -O2 -shared -fPIC -I<node>/include/node sendfile.c -o sendfile.node (Makefile).
 */
#define _GNU_SOURCE
#define NAPI_VERSION 8
#include <node_api.h>

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/sendfile.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

/* Bytes sent for one transfer before the thread turns to the next ready one (fairness). */
#define TURN_BYTES (1024 * 1024)
/* How often idle transfers are looked for. */
#define IDLE_CHECK_MS 250
/* Sender threads at most (one per online CPU below that). */
#define MAX_SENDERS 4

typedef struct image {
  int fd;
  int64_t size;
  atomic_int refs;
} image_t;

/* Per JS environment (main thread, or a worker): the way back to JS. */
typedef struct envstate {
  pthread_mutex_t mu;
  bool closing; /* the environment is being torn down: no more calls into tsfn */
  napi_threadsafe_function tsfn;
  atomic_int refs; /* the environment + transfers not yet handed back */
} envstate_t;

struct engine;

typedef struct transfer {
  struct transfer *prev, *next; /* engine's active list, or the incoming list (next only) */
  struct engine *eng;           /* the sender thread that owns it */
  int sock;                     /* our dup of the socket; closed on the JS thread */
  image_t *img;
  envstate_t *es;
  off_t off, end, start;
  int64_t idle_ms, last_progress_ms;
  int err;            /* 0 = complete; errno otherwise */
  atomic_bool abort;  /* set on the JS thread */
  bool registered;    /* in the engine's epoll set */
  napi_ref cb;
} transfer_t;

/* One sender thread and what it owns. */
typedef struct engine {
  pthread_mutex_t mu;
  transfer_t *incoming; /* handed over by start(), taken by the thread */
  int epfd, evfd;
  transfer_t *active; /* owned by the thread */
} engine_t;

static struct {
  pthread_once_t once;
  int start_err;
  int count;
  atomic_uint next; /* round-robin (JS threads: the main one, workers) */
  engine_t eng[MAX_SENDERS];
} senders = {.once = PTHREAD_ONCE_INIT};

static int64_t now_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void image_release(image_t *img) {
  if (atomic_fetch_sub(&img->refs, 1) == 1) {
    close(img->fd);
    free(img);
  }
}

static void envstate_release(envstate_t *es) {
  if (atomic_fetch_sub(&es->refs, 1) == 1) {
    pthread_mutex_destroy(&es->mu);
    free(es);
  }
}

/* ------------------------------------------------------------------ sender thread */

static void active_remove(transfer_t *t) {
  if (t->prev) t->prev->next = t->next;
  else t->eng->active = t->next;
  if (t->next) t->next->prev = t->prev;
  t->prev = t->next = NULL;
}

/* The transfer is over: leave epoll and hand it back to its JS thread. */
static void finish(transfer_t *t, int err) {
  if (t->registered) epoll_ctl(t->eng->epfd, EPOLL_CTL_DEL, t->sock, NULL);
  t->registered = false;
  active_remove(t);
  t->err = atomic_load(&t->abort) ? ECANCELED : err;
  envstate_t *es = t->es;
  napi_status st = napi_closing;
  pthread_mutex_lock(&es->mu);
  if (!es->closing) st = napi_call_threadsafe_function(es->tsfn, t, napi_tsfn_nonblocking);
  pthread_mutex_unlock(&es->mu);
  if (st != napi_ok) {
    /* The environment is gone: nobody will call back, so clean up here (its ref goes with it). */
    close(t->sock);
    image_release(t->img);
    free(t);
    envstate_release(es);
  }
}

/* Sends up to TURN_BYTES; true while the transfer goes on. */
static bool pump(transfer_t *t, int64_t now) {
  if (atomic_load(&t->abort)) return finish(t, ECANCELED), false;
  size_t budget = TURN_BYTES;
  while (t->off < t->end && budget > 0) {
    size_t want = (size_t)(t->end - t->off);
    if (want > budget) want = budget;
    ssize_t n = sendfile(t->sock, t->img->fd, &t->off, want);
    if (n > 0) {
      budget -= (size_t)n;
      t->last_progress_ms = now;
      continue;
    }
    if (n == 0) return finish(t, EIO), false; /* the file is shorter than it said: cannot happen with a sealed memfd */
    if (errno == EINTR) continue;
    if (errno == EAGAIN) return true;
    return finish(t, errno), false;
  }
  if (t->off >= t->end) return finish(t, 0), false;
  return true;
}

static void *engine_main(void *arg) {
  engine_t *engine = arg;
  struct epoll_event evs[64];
  int64_t next_idle_check = now_ms() + IDLE_CHECK_MS;
  for (;;) {
    int n = epoll_wait(engine->epfd, evs, 64, IDLE_CHECK_MS);
    int64_t now = now_ms();
    for (int i = 0; i < n; i++) {
      if (evs[i].data.ptr == NULL) { /* new transfers */
        uint64_t v;
        ssize_t r = read(engine->evfd, &v, sizeof v);
        (void)r;
        pthread_mutex_lock(&engine->mu);
        transfer_t *list = engine->incoming;
        engine->incoming = NULL;
        pthread_mutex_unlock(&engine->mu);
        while (list) {
          transfer_t *t = list;
          list = t->next;
          t->prev = NULL;
          t->next = engine->active;
          if (engine->active) engine->active->prev = t;
          engine->active = t;
          t->last_progress_ms = now;
          if (!pump(t, now)) continue;
          struct epoll_event ev = {.events = EPOLLOUT, .data.ptr = t};
          if (epoll_ctl(engine->epfd, EPOLL_CTL_ADD, t->sock, &ev) != 0) finish(t, errno);
          else t->registered = true;
        }
        continue;
      }
      pump((transfer_t *)evs[i].data.ptr, now);
    }
    if (now >= next_idle_check) {
      next_idle_check = now + IDLE_CHECK_MS;
      for (transfer_t *t = engine->active, *nx; t; t = nx) {
        nx = t->next;
        if (atomic_load(&t->abort)) finish(t, ECANCELED);
        else if (now - t->last_progress_ms > t->idle_ms) finish(t, ETIMEDOUT);
      }
    }
  }
  return NULL;
}

static int engine_start_one(engine_t *engine) {
  pthread_mutex_init(&engine->mu, NULL);
  engine->epfd = epoll_create1(EPOLL_CLOEXEC);
  engine->evfd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
  if (engine->epfd < 0 || engine->evfd < 0) return errno;
  struct epoll_event ev = {.events = EPOLLIN, .data.ptr = NULL};
  if (epoll_ctl(engine->epfd, EPOLL_CTL_ADD, engine->evfd, &ev) != 0) return errno;
  pthread_attr_t attr;
  pthread_attr_init(&attr);
  pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
  pthread_attr_setstacksize(&attr, 256 * 1024);
  pthread_t th;
  int e = pthread_create(&th, &attr, engine_main, engine);
  pthread_attr_destroy(&attr);
  return e;
}

static void engine_start(void) {
  long cpus = sysconf(_SC_NPROCESSORS_ONLN);
  int want = cpus < 1 ? 1 : cpus > MAX_SENDERS ? MAX_SENDERS : (int)cpus;
  for (int i = 0; i < want; i++) {
    int e = engine_start_one(&senders.eng[i]);
    if (e != 0) {
      if (i == 0) senders.start_err = e; /* none at all: start() reports it */
      break;
    }
    senders.count = i + 1;
  }
}

/* ------------------------------------------------------------------ JS side */

#define CHECK(env, call)                                  \
  do {                                                    \
    if ((call) != napi_ok) {                              \
      napi_throw_error((env), NULL, "sendfile: " #call);  \
      return NULL;                                        \
    }                                                     \
  } while (0)

static napi_value throw_errno(napi_env env, const char *what, int err) {
  char msg[160];
  snprintf(msg, sizeof msg, "%s: %s", what, strerror(err));
  napi_throw_error(env, NULL, msg);
  return NULL;
}

/* Runs on the JS thread for each finished transfer (env NULL: the environment is going away). */
static void call_js(napi_env env, napi_value js_cb, void *context, void *data) {
  (void)js_cb;
  (void)context;
  transfer_t *t = data;
  close(t->sock);
  image_release(t->img);
  if (env) {
    napi_value cb, global, argv[2];
    if (napi_get_reference_value(env, t->cb, &cb) == napi_ok && cb && napi_get_global(env, &global) == napi_ok) {
      napi_create_int32(env, t->err, &argv[0]);
      napi_create_double(env, (double)(t->off - t->start), &argv[1]);
      napi_call_function(env, global, cb, 2, argv, NULL);
    }
    napi_delete_reference(env, t->cb);
  }
  envstate_t *es = t->es;
  free(t);
  envstate_release(es);
}

static void image_finalize(napi_env env, void *data, void *hint) {
  (void)env;
  (void)hint;
  image_release(data);
}

/* memfd(name: string, bytes: Buffer): External — a sealed in-memory copy to send from. */
static napi_value js_memfd(napi_env env, napi_callback_info info) {
  size_t argc = 2;
  napi_value argv[2];
  CHECK(env, napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  char name[64] = "lc-boot-file";
  size_t len;
  if (argc < 2) return napi_throw_type_error(env, NULL, "memfd(name, buffer)"), NULL;
  napi_get_value_string_utf8(env, argv[0], name, sizeof name, &len);
  void *bytes;
  size_t size;
  CHECK(env, napi_get_buffer_info(env, argv[1], &bytes, &size));
  int fd = memfd_create(name, MFD_CLOEXEC | MFD_ALLOW_SEALING);
  if (fd < 0) return throw_errno(env, "memfd_create", errno);
  size_t done = 0;
  while (done < size) {
    ssize_t n = write(fd, (char *)bytes + done, size - done);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) {
      int e = n < 0 ? errno : EIO;
      close(fd);
      return throw_errno(env, "memfd write", e);
    }
    done += (size_t)n;
  }
  /* Sealed: the bytes every transfer sends can no longer change (strong ETag). */
  if (fcntl(fd, F_ADD_SEALS, F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_WRITE | F_SEAL_SEAL) != 0) {
    int e = errno;
    close(fd);
    return throw_errno(env, "memfd seal", e);
  }
  image_t *img = malloc(sizeof *img);
  if (!img) return close(fd), throw_errno(env, "memfd", ENOMEM);
  img->fd = fd;
  img->size = (int64_t)size;
  atomic_init(&img->refs, 1);
  napi_value ext;
  if (napi_create_external(env, img, image_finalize, NULL, &ext) != napi_ok) {
    image_release(img);
    return throw_errno(env, "memfd", ENOMEM);
  }
  return ext;
}

/* start(fd, image, offset, length, idleTimeoutMs, cb): External (the transfer, for abort). */
static napi_value js_start(napi_env env, napi_callback_info info) {
  size_t argc = 6;
  napi_value argv[6];
  CHECK(env, napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  if (argc < 6) return napi_throw_type_error(env, NULL, "start(fd, image, offset, length, idleTimeoutMs, cb)"), NULL;
  int32_t fd;
  int64_t offset, length, idle;
  image_t *img;
  envstate_t *es;
  CHECK(env, napi_get_value_int32(env, argv[0], &fd));
  CHECK(env, napi_get_value_external(env, argv[1], (void **)&img));
  CHECK(env, napi_get_value_int64(env, argv[2], &offset));
  CHECK(env, napi_get_value_int64(env, argv[3], &length));
  CHECK(env, napi_get_value_int64(env, argv[4], &idle));
  CHECK(env, napi_get_instance_data(env, (void **)&es));
  if (fd < 0 || offset < 0 || length < 0 || offset + length > img->size || idle <= 0)
    return napi_throw_range_error(env, NULL, "sendfile start: bad fd, range or timeout"), NULL;
  pthread_once(&senders.once, engine_start);
  if (senders.count == 0) return throw_errno(env, "sendfile engine", senders.start_err ? senders.start_err : EAGAIN);
  int sock = fcntl(fd, F_DUPFD_CLOEXEC, 3);
  if (sock < 0) return throw_errno(env, "dup socket", errno);
  transfer_t *t = calloc(1, sizeof *t);
  if (!t) return close(sock), throw_errno(env, "sendfile start", ENOMEM);
  t->sock = sock;
  t->img = img;
  t->es = es;
  t->start = t->off = (off_t)offset;
  t->end = (off_t)(offset + length);
  t->idle_ms = idle;
  atomic_init(&t->abort, false);
  if (napi_create_reference(env, argv[5], 1, &t->cb) != napi_ok) {
    close(sock);
    free(t);
    napi_throw_error(env, NULL, "sendfile start: callback");
    return NULL;
  }
  atomic_fetch_add(&img->refs, 1);
  atomic_fetch_add(&es->refs, 1);
  engine_t *engine = &senders.eng[atomic_fetch_add(&senders.next, 1) % (unsigned)senders.count];
  t->eng = engine;
  pthread_mutex_lock(&engine->mu);
  t->next = engine->incoming;
  engine->incoming = t;
  pthread_mutex_unlock(&engine->mu);
  uint64_t one = 1;
  ssize_t w = write(engine->evfd, &one, sizeof one);
  (void)w;
  napi_value handle;
  CHECK(env, napi_create_external(env, t, NULL, NULL, &handle));
  return handle;
}

/* abort(transfer): only valid before its callback ran (the JS wrapper makes sure). */
static napi_value js_abort(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value argv[1];
  CHECK(env, napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  transfer_t *t;
  if (argc < 1 || napi_get_value_external(env, argv[0], (void **)&t) != napi_ok) return NULL;
  atomic_store(&t->abort, true);
  /* The dup is closed only by call_js, on this thread, after the callback: still ours. */
  shutdown(t->sock, SHUT_RDWR);
  return NULL;
}

static void env_cleanup(void *arg) {
  envstate_t *es = arg;
  pthread_mutex_lock(&es->mu);
  es->closing = true;
  pthread_mutex_unlock(&es->mu);
  napi_release_threadsafe_function(es->tsfn, napi_tsfn_abort);
  envstate_release(es);
}

static void envstate_finalize(napi_env env, void *data, void *hint) {
  (void)env;
  (void)data;
  (void)hint; /* freed by env_cleanup's release and the transfers' */
}

NAPI_MODULE_INIT() {
  envstate_t *es = calloc(1, sizeof *es);
  if (!es) return NULL;
  pthread_mutex_init(&es->mu, NULL);
  atomic_init(&es->refs, 1);
  napi_value name;
  napi_create_string_utf8(env, "lc-sendfile", NAPI_AUTO_LENGTH, &name);
  if (napi_create_threadsafe_function(env, NULL, NULL, name, 0, 1, NULL, NULL, NULL, call_js, &es->tsfn) != napi_ok) {
    napi_throw_error(env, NULL, "sendfile: cannot create the completion queue");
    return NULL;
  }
  /* Transfers are kept alive by their sockets; this queue alone must not hold the process. */
  napi_unref_threadsafe_function(env, es->tsfn);
  napi_set_instance_data(env, es, envstate_finalize, NULL);
  /* Registered after the tsfn, so it runs before Node tears the tsfn down (hooks run LIFO). */
  napi_add_env_cleanup_hook(env, env_cleanup, es);

  napi_value fn;
  napi_create_function(env, "memfd", NAPI_AUTO_LENGTH, js_memfd, NULL, &fn);
  napi_set_named_property(env, exports, "memfd", fn);
  napi_create_function(env, "start", NAPI_AUTO_LENGTH, js_start, NULL, &fn);
  napi_set_named_property(env, exports, "start", fn);
  napi_create_function(env, "abort", NAPI_AUTO_LENGTH, js_abort, NULL, &fn);
  napi_set_named_property(env, exports, "abort", fn);
  return exports;
}
