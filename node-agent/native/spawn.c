/*
 * Cheap task processes for the node agent. Node's child_process forks the whole agent (about
 * 50 MB of address space: fork copies its page tables, ~1.3 ms of the agent's CPU and as much
 * in the child per task); glibc's posix_spawn uses clone(CLONE_VM | CLONE_VFORK), which copies
 * nothing. The exit is watched through a pidfd polled on the agent's own event loop (no thread,
 * no SIGCHLD), and reaped here with wait4(), which also gives the task's peak memory.
 *
 *   [pid, stdoutFd, stderrFd] = spawn(file, args, argc, env, envc, cwd, stdin, onExit)
 *       file     the program; without a slash it is looked up in env's PATH, as execvp does
 *       args     argv joined with NUL bytes (argc of them: a NUL inside an argument is refused)
 *       env      "K=V" entries joined with NUL bytes (envc of them)
 *       cwd      the task's working directory (posix_spawn_file_actions_addchdir_np)
 *       stdin    Buffer or null (then /dev/null); the bytes are put in a memfd
 *       onExit(exitCode, signal, maxRssKiB)   on the JS thread, once: exitCode -1 when killed
 *                by a signal (signal = its number, else 0); maxRssKiB = wait4's ru_maxrss, the
 *                largest of the process's own peak and of the children it waited for
 *     stdout and stderr go to memfds (anonymous tmpfs files) whose descriptors are returned:
 *     the caller reads them (pread) and closes them. The process starts its own session, so
 *     its own process group (POSIX_SPAWN_SETSID): kill(-pid) reaches the whole task.
 *     Failures to start (ENOENT, EACCES, ENOEXEC...) throw an Error whose code is the errno
 *     name; glibc's posix_spawn reports the child's execve error itself.
 *   discard(fd, offset, length)   frees bytes of an output file already read (punches a hole,
 *       the size stays, so the writer's offset is unaffected)
 *
 * At the exit, before reaping: SIGKILL to the task's group, while its leader is a zombie, so
 * the group id cannot have been reused by anyone else yet. libuv's own SIGCHLD handler only
 * waitpid()s the pids it spawned itself, so it never reaps ours, nor we its.
 *
 * Children get every signal that is ignored in the agent (SIGPIPE, by Node) back to its
 * default, an empty signal mask, and no descriptor beyond 0-2 (closefrom), as libuv does.
 *
 * Needs Linux >= 5.3 (pidfd_open) and glibc >= 2.34 (addchdir_np, addclosefrom_np).
 * Build: cc -O2 -shared -fPIC -I<node>/include/node spawn.c -o spawn.node (Makefile).
 */
#define _GNU_SOURCE
#define NAPI_VERSION 8
#include <node_api.h>
#include <uv.h>

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <spawn.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#ifndef SYS_pidfd_open
#define SYS_pidfd_open 434
#endif

/* Looked up in this PATH when the task's environment has none (execvp's is "/bin:/usr/bin"). */
#define DEFAULT_PATH "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

struct envstate;

typedef struct child {
  uv_poll_t poll; /* first: the poll callback gets the child from its handle */
  struct child *prev, *next;
  struct envstate *es;
  pid_t pid;
  int pidfd;
  napi_ref cb;
} child_t;

/* Per JS environment (the main thread, or a worker). */
typedef struct envstate {
  napi_env env;
  uv_loop_t *loop;
  napi_async_context actx;
  child_t *children; /* still running (not reaped) */
  sigset_t reset;    /* signals the agent ignores: back to their default in children */
} envstate_t;

static int pidfd_open(pid_t pid) {
  return (int)syscall(SYS_pidfd_open, pid, 0);
}

/* ------------------------------------------------------------------ errors */

static napi_value throw_code(napi_env env, const char *what, int err) {
  const char *name = strerrorname_np(err);
  char code[32];
  if (!name) {
    snprintf(code, sizeof code, "E%d", err);
    name = code;
  }
  char msg[600];
  snprintf(msg, sizeof msg, "%s: %s (%s)", what, name, strerror(err));
  napi_value m, c, e;
  if (napi_create_string_utf8(env, msg, NAPI_AUTO_LENGTH, &m) != napi_ok || napi_create_string_utf8(env, name, NAPI_AUTO_LENGTH, &c) != napi_ok ||
      napi_create_error(env, c, m, &e) != napi_ok) {
    napi_throw_error(env, name, msg);
    return NULL;
  }
  napi_throw(env, e);
  return NULL;
}

#define CHECK(env, call)                               \
  do {                                                 \
    if ((call) != napi_ok) {                           \
      napi_throw_error((env), NULL, "spawn: " #call);  \
      goto fail;                                       \
    }                                                  \
  } while (0)

/* A JS string as a malloc'd UTF-8 copy (NUL-terminated; inner NULs kept), or NULL. */
static char *string_arg(napi_env env, napi_value v, size_t *len_out) {
  size_t len;
  if (napi_get_value_string_utf8(env, v, NULL, 0, &len) != napi_ok) return NULL;
  char *s = malloc(len + 1);
  if (!s) return NULL;
  if (napi_get_value_string_utf8(env, v, s, len + 1, &len) != napi_ok) {
    free(s);
    return NULL;
  }
  if (len_out) *len_out = len;
  return s;
}

/* Splits `count` NUL-separated strings of blob[0, len) into a NULL-terminated vector; NULL if the count differs. */
static char **split(char *blob, size_t len, uint32_t count) {
  char **v = malloc(sizeof(char *) * ((size_t)count + 1));
  if (!v) return NULL;
  uint32_t n = 0;
  size_t start = 0;
  if (count > 0) {
    for (size_t i = 0; i <= len; i++) {
      if (i == len || blob[i] == '\0') {
        if (n == count) {
          free(v);
          return NULL;
        }
        blob[i] = '\0';
        v[n++] = blob + start;
        start = i + 1;
      }
    }
  } else if (len != 0) {
    free(v);
    return NULL;
  }
  if (n != count) {
    free(v);
    return NULL;
  }
  v[n] = NULL;
  return v;
}

/* ------------------------------------------------------------------ PATH lookup */

static bool executable_file(const char *path, int *err) {
  struct stat st;
  if (stat(path, &st) != 0) return false;
  if (!S_ISREG(st.st_mode) || faccessat(AT_FDCWD, path, X_OK, AT_EACCESS) != 0) {
    *err = EACCES; /* execvp goes on, and reports EACCES if nothing better turns up */
    return false;
  }
  return true;
}

/*
 * The path to execute: `file` itself when it holds a slash (relative to cwd, where the child
 * chdirs before execve), else the first executable regular file named `file` in PATH (from
 * the task's environment), relative entries taken from cwd. Returns a malloc'd path, or NULL
 * with *err set.
 */
static char *resolve(const char *file, char **envp, const char *cwd, int *err) {
  if (strchr(file, '/')) {
    char *p = strdup(file);
    if (!p) *err = ENOMEM;
    return p;
  }
  if (!*file) {
    *err = ENOENT;
    return NULL;
  }
  const char *path = DEFAULT_PATH;
  for (char **e = envp; *e; e++)
    if (strncmp(*e, "PATH=", 5) == 0) {
      path = *e + 5;
      break;
    }
  *err = ENOENT;
  size_t flen = strlen(file), clen = strlen(cwd);
  for (const char *p = path;; p++) {
    const char *end = strchrnul(p, ':');
    size_t dlen = (size_t)(end - p);
    bool rel = dlen == 0 || p[0] != '/';
    char *cand = malloc(clen + 1 + dlen + 1 + flen + 1);
    if (!cand) {
      *err = ENOMEM;
      return NULL;
    }
    char *w = cand;
    if (rel) {
      memcpy(w, cwd, clen);
      w += clen;
      *w++ = '/';
    }
    memcpy(w, p, dlen);
    w += dlen;
    if (dlen) *w++ = '/';
    memcpy(w, file, flen + 1);
    if (executable_file(cand, err)) return cand;
    free(cand);
    if (!*end) return NULL;
    p = end;
  }
}

/* ------------------------------------------------------------------ exits */

static void list_remove(child_t *c) {
  if (c->prev) c->prev->next = c->next;
  else c->es->children = c->next;
  if (c->next) c->next->prev = c->prev;
  c->prev = c->next = NULL;
}

static void on_closed(uv_handle_t *h) {
  child_t *c = (child_t *)h;
  close(c->pidfd);
  free(c);
}

static void on_exit_ready(uv_poll_t *h, int status, int events) {
  (void)status;
  (void)events;
  child_t *c = (child_t *)h;
  envstate_t *es = c->es;
  /* Whatever the task left in its group goes with it (the zombie leader keeps the id ours). */
  kill(-c->pid, SIGKILL);
  int st = 0;
  struct rusage ru;
  memset(&ru, 0, sizeof ru);
  pid_t r;
  do r = wait4(c->pid, &st, WNOHANG, &ru);
  while (r < 0 && errno == EINTR);
  if (r == 0) return; /* not exited after all: keep polling */
  uv_poll_stop(&c->poll);
  list_remove(c);
  napi_env env = es->env;
  napi_ref ref = c->cb;
  uv_close((uv_handle_t *)&c->poll, on_closed);

  napi_handle_scope scope;
  if (napi_open_handle_scope(env, &scope) != napi_ok) return;
  napi_value cb, recv, argv[3];
  int code = -1, sig = 0;
  if (r > 0 && WIFEXITED(st)) code = WEXITSTATUS(st);
  else if (r > 0 && WIFSIGNALED(st)) sig = WTERMSIG(st);
  if (napi_get_reference_value(env, ref, &cb) == napi_ok && cb && napi_get_global(env, &recv) == napi_ok &&
      napi_create_int32(env, code, &argv[0]) == napi_ok && napi_create_int32(env, sig, &argv[1]) == napi_ok &&
      napi_create_double(env, r > 0 ? (double)ru.ru_maxrss : -1, &argv[2]) == napi_ok) {
    if (napi_make_callback(env, es->actx, recv, cb, 3, argv, NULL) == napi_pending_exception) {
      napi_value err;
      if (napi_get_and_clear_last_exception(env, &err) == napi_ok) napi_fatal_exception(env, err);
    }
  }
  napi_delete_reference(env, ref);
  napi_close_handle_scope(env, scope);
}

/* ------------------------------------------------------------------ spawn */

static int memfd(const char *name) {
  int fd = memfd_create(name, MFD_CLOEXEC);
  if (fd >= 0 && fd < 3) {
    /* The agent runs with a closed 0-2: keep ours clear of the child's stdio slots. */
    int moved = fcntl(fd, F_DUPFD_CLOEXEC, 3);
    int e = errno;
    close(fd);
    errno = e;
    fd = moved;
  }
  return fd;
}

static napi_value js_spawn(napi_env env, napi_callback_info info) {
  size_t argc = 8;
  napi_value a[8];
  envstate_t *es;
  char *file = NULL, *args = NULL, *envs = NULL, *cwd = NULL, *path = NULL;
  char **argv = NULL, **envp = NULL;
  int infd = -1, outfd = -1, errfd = -1, pidfd = -1;
  bool fa_init = false, attr_init = false;
  posix_spawn_file_actions_t fa;
  posix_spawnattr_t attr;
  child_t *c = NULL;
  napi_value result = NULL;

  CHECK(env, napi_get_cb_info(env, info, &argc, a, NULL, NULL));
  CHECK(env, napi_get_instance_data(env, (void **)&es));
  if (argc < 8) {
    napi_throw_type_error(env, NULL, "spawn(file, args, argc, env, envc, cwd, stdin, onExit)");
    goto fail;
  }
  size_t file_len, args_len, env_len, cwd_len;
  uint32_t nargs, nenv;
  CHECK(env, napi_get_value_uint32(env, a[2], &nargs));
  CHECK(env, napi_get_value_uint32(env, a[4], &nenv));
  if (!(file = string_arg(env, a[0], &file_len)) || !(args = string_arg(env, a[1], &args_len)) || !(envs = string_arg(env, a[3], &env_len)) ||
      !(cwd = string_arg(env, a[5], &cwd_len))) {
    napi_throw_type_error(env, NULL, "spawn: file, args, env and cwd must be strings");
    goto fail;
  }
  if (nargs < 1 || !(argv = split(args, args_len, nargs)) || !(envp = split(envs, env_len, nenv)) || strlen(file) != file_len || strlen(cwd) != cwd_len) {
    throw_code(env, "spawn: an argument or environment entry holds a NUL byte", EINVAL);
    goto fail;
  }
  napi_valuetype stdin_type, cb_type;
  CHECK(env, napi_typeof(env, a[6], &stdin_type));
  CHECK(env, napi_typeof(env, a[7], &cb_type));
  if (cb_type != napi_function) {
    napi_throw_type_error(env, NULL, "spawn: onExit must be a function");
    goto fail;
  }

  int err = 0;
  if (!(path = resolve(file, envp, cwd, &err))) {
    throw_code(env, "spawn", err);
    goto fail;
  }

  if (stdin_type != napi_null && stdin_type != napi_undefined) {
    void *bytes;
    size_t size;
    CHECK(env, napi_get_buffer_info(env, a[6], &bytes, &size));
    if ((infd = memfd("lc-stdin")) < 0) {
      throw_code(env, "spawn: memfd for stdin", errno);
      goto fail;
    }
    for (size_t done = 0; done < size;) {
      ssize_t n = write(infd, (char *)bytes + done, size - done);
      if (n < 0 && errno == EINTR) continue;
      if (n <= 0) {
        throw_code(env, "spawn: writing stdin", n < 0 ? errno : EIO);
        goto fail;
      }
      done += (size_t)n;
    }
    if (lseek(infd, 0, SEEK_SET) != 0) {
      throw_code(env, "spawn: stdin", errno);
      goto fail;
    }
  }
  if ((outfd = memfd("lc-stdout")) < 0 || (errfd = memfd("lc-stderr")) < 0) {
    throw_code(env, "spawn: memfd for output", errno);
    goto fail;
  }

  int rc;
  if ((rc = posix_spawn_file_actions_init(&fa)) != 0) {
    throw_code(env, "spawn", rc);
    goto fail;
  }
  fa_init = true;
  if ((rc = posix_spawn_file_actions_adddup2(&fa, outfd, 1)) != 0 || (rc = posix_spawn_file_actions_adddup2(&fa, errfd, 2)) != 0 ||
      (rc = infd >= 0 ? posix_spawn_file_actions_adddup2(&fa, infd, 0) : posix_spawn_file_actions_addopen(&fa, 0, "/dev/null", O_RDONLY, 0)) != 0 ||
      (rc = posix_spawn_file_actions_addclosefrom_np(&fa, 3)) != 0 || (rc = posix_spawn_file_actions_addchdir_np(&fa, cwd)) != 0) {
    throw_code(env, "spawn: file actions", rc);
    goto fail;
  }
  if ((rc = posix_spawnattr_init(&attr)) != 0) {
    throw_code(env, "spawn", rc);
    goto fail;
  }
  attr_init = true;
  sigset_t none;
  sigemptyset(&none);
  if ((rc = posix_spawnattr_setflags(&attr, POSIX_SPAWN_SETSID | POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF)) != 0 ||
      (rc = posix_spawnattr_setsigmask(&attr, &none)) != 0 || (rc = posix_spawnattr_setsigdefault(&attr, &es->reset)) != 0) {
    throw_code(env, "spawn: attributes", rc);
    goto fail;
  }

  pid_t pid;
  if ((rc = posix_spawn(&pid, path, &fa, &attr, argv, envp)) != 0) {
    throw_code(env, "spawn", rc);
    goto fail;
  }
  if ((pidfd = pidfd_open(pid)) < 0) {
    int e = errno;
    kill(-pid, SIGKILL);
    kill(pid, SIGKILL);
    while (waitpid(pid, NULL, 0) < 0 && errno == EINTR) {
    }
    throw_code(env, "spawn: pidfd_open", e);
    goto fail;
  }
  if (!(c = calloc(1, sizeof *c))) {
    int e = ENOMEM;
    kill(-pid, SIGKILL);
    while (waitpid(pid, NULL, 0) < 0 && errno == EINTR) {
    }
    throw_code(env, "spawn", e);
    goto fail;
  }
  c->es = es;
  c->pid = pid;
  c->pidfd = pidfd;
  if ((rc = uv_poll_init(es->loop, &c->poll, pidfd)) != 0 || (rc = uv_poll_start(&c->poll, UV_READABLE, on_exit_ready)) != 0 ||
      napi_create_reference(env, a[7], 1, &c->cb) != napi_ok) {
    /* Unlikely (the loop refused the descriptor): do not leave an unwatched task behind. */
    kill(-pid, SIGKILL);
    while (waitpid(pid, NULL, 0) < 0 && errno == EINTR) {
    }
    if (rc == 0) uv_close((uv_handle_t *)&c->poll, on_closed);
    else {
      close(pidfd);
      free(c);
    }
    pidfd = -1;
    c = NULL;
    throw_code(env, "spawn: watching the process", rc < 0 ? -rc : EIO);
    goto fail;
  }
  pidfd = -1; /* the child's now */
  c->next = es->children;
  if (c->next) c->next->prev = c;
  es->children = c;

  napi_value v;
  CHECK(env, napi_create_array_with_length(env, 3, &result));
  CHECK(env, napi_create_int32(env, pid, &v));
  CHECK(env, napi_set_element(env, result, 0, v));
  CHECK(env, napi_create_int32(env, outfd, &v));
  CHECK(env, napi_set_element(env, result, 1, v));
  CHECK(env, napi_create_int32(env, errfd, &v));
  CHECK(env, napi_set_element(env, result, 2, v));
  outfd = errfd = -1; /* the caller's now */

fail:
  if (fa_init) posix_spawn_file_actions_destroy(&fa);
  if (attr_init) posix_spawnattr_destroy(&attr);
  if (infd >= 0) close(infd);
  if (outfd >= 0) close(outfd);
  if (errfd >= 0) close(errfd);
  if (pidfd >= 0) close(pidfd);
  free(file);
  free(args);
  free(envs);
  free(cwd);
  free(path);
  free(argv);
  free(envp);
  return result;
}

/* discard(fd, offset, length): the output bytes already read no longer take memory. */
static napi_value js_discard(napi_env env, napi_callback_info info) {
  size_t argc = 3;
  napi_value a[3];
  int32_t fd;
  int64_t off, len;
  if (napi_get_cb_info(env, info, &argc, a, NULL, NULL) != napi_ok || argc < 3 || napi_get_value_int32(env, a[0], &fd) != napi_ok ||
      napi_get_value_int64(env, a[1], &off) != napi_ok || napi_get_value_int64(env, a[2], &len) != napi_ok || off < 0 || len < 0) {
    napi_throw_type_error(env, NULL, "discard(fd, offset, length)");
    return NULL;
  }
  if (len > 0 && fallocate(fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, off, len) != 0) return throw_code(env, "discard", errno);
  return NULL;
}

/* ------------------------------------------------------------------ module */

static void env_cleanup(void *arg) {
  envstate_t *es = arg;
  /* The environment goes away: stop watching (the tasks' groups are the agent's to kill). */
  while (es->children) {
    child_t *c = es->children;
    list_remove(c);
    uv_poll_stop(&c->poll);
    uv_close((uv_handle_t *)&c->poll, on_closed);
  }
}

static void envstate_finalize(napi_env env, void *data, void *hint) {
  (void)hint;
  envstate_t *es = data;
  napi_async_destroy(env, es->actx);
  free(es);
}

NAPI_MODULE_INIT() {
  /* Refuse to load where the exit cannot be watched: the agent then uses child_process. */
  int probe = pidfd_open(getpid());
  if (probe < 0) {
    throw_code(env, "spawn addon: pidfd_open", errno);
    return NULL;
  }
  close(probe);

  envstate_t *es = calloc(1, sizeof *es);
  if (!es) return NULL;
  es->env = env;
  sigemptyset(&es->reset);
  sigaddset(&es->reset, SIGPIPE);
  for (int sig = 1; sig < SIGRTMIN; sig++) {
    struct sigaction sa;
    if (sig != SIGKILL && sig != SIGSTOP && sigaction(sig, NULL, &sa) == 0 && sa.sa_handler == SIG_IGN) sigaddset(&es->reset, sig);
  }
  napi_value name;
  if (napi_get_uv_event_loop(env, &es->loop) != napi_ok || napi_create_string_utf8(env, "lilcluster:task", NAPI_AUTO_LENGTH, &name) != napi_ok ||
      napi_async_init(env, NULL, name, &es->actx) != napi_ok) {
    free(es);
    napi_throw_error(env, NULL, "spawn addon: cannot initialise");
    return NULL;
  }
  napi_set_instance_data(env, es, envstate_finalize, NULL);
  napi_add_env_cleanup_hook(env, env_cleanup, es);

  napi_value fn;
  if (napi_create_function(env, "spawn", NAPI_AUTO_LENGTH, js_spawn, NULL, &fn) != napi_ok || napi_set_named_property(env, exports, "spawn", fn) != napi_ok ||
      napi_create_function(env, "discard", NAPI_AUTO_LENGTH, js_discard, NULL, &fn) != napi_ok || napi_set_named_property(env, exports, "discard", fn) != napi_ok)
    return NULL;
  return exports;
}
