/*
 * Cheap task processes for the node agent. Node's child_process forks the whole agent (about
 * 50 MB of address space: fork copies its page tables, ~1.3 ms of the agent's CPU and as much
 * in the child per task); glibc's posix_spawn uses clone(CLONE_VM | CLONE_VFORK), which copies
 * nothing. The exit is watched through a pidfd polled on the agent's own event loop (no thread
 * waiting, no SIGCHLD), and reaped here with wait4(), which also gives the task's peak memory.
 *
 *   spawn(file, args, argc, env, envc, cwd, stdin, onStart, onExit[, cgroupFd])
 *       file     the program; without a slash it is looked up in env's PATH, as execvp does
 *       args     argv joined with NUL bytes (argc of them: a NUL inside an argument is refused)
 *       env      "K=V" entries joined with NUL bytes (envc of them)
 *       cwd      the task's working directory (posix_spawn_file_actions_addchdir_np)
 *       stdin    Buffer or null (then /dev/null); the bytes are put in a memfd
 *     The process is started on a libuv threadpool thread (see spawn_execute), then, on the JS
 *     thread: onStart(error, pid, stdoutFd, stderrFd) — error null, or the errno name of why
 *     it could not start (ENOENT, EACCES, ENOEXEC...: glibc's posix_spawn reports the child's
 *     execve error), with the failed step in parentheses when it was not the program's own;
 *     later onExit(exitCode, signal, maxRssKiB), once: exitCode -1 when killed by a signal
 *     (signal = its number, else 0); maxRssKiB = wait4's ru_maxrss, the largest of the
 *     process's own peak and of the children it waited for — and of the agent's own peak:
 *     at execve the kernel folds the peak of the address space being left (exec_mmap's
 *     setmax_mm_hiwater_rss), which for a CLONE_VM child is the agent's (a forked child's
 *     copy counts the same pages). The caller trusts the figure only above its own peak.
 *     stdout and stderr go to memfds (anonymous tmpfs files) whose descriptors onStart gets:
 *     the caller reads them (pread) and closes them. The process starts its own session, so
 *     its own process group (POSIX_SPAWN_SETSID): kill(-pid) reaches the whole task.
 *     Arguments that cannot be passed (NUL bytes, wrong types) throw at once.
 *   discard(fd, offset, length)   frees bytes of an output file already read (punches a hole,
 *       the size stays, so the writer's offset is unaffected)
 *
 * At the exit, before reaping: SIGKILL to the task's group, while its leader is a zombie, so
 * the group id cannot have been reused by anyone else yet. libuv's own SIGCHLD handler only
 * waitpid()s the pids it spawned itself, so it never reaps ours, nor we its.
 *
 * Children get every signal that is ignored in the agent (SIGPIPE, by Node) back to its
 * default and an empty signal mask, as libuv gives its children, and no descriptor beyond 0-2
 * (closefrom; libuv passes on any descriptor that lacks FD_CLOEXEC).
 *
 * Into a cgroup: glibc 2.36 has no posix_spawnattr_setcgroup_np, so the child is started here
 * with the raw clone3 syscall (CLONE_VM | CLONE_VFORK, as posix_spawn does, on a stack of its
 * own; CLONE_PIDFD gives the pidfd at once) and does what posix_spawn's file actions and
 * attributes do above, in the same order; a failed step's errno is left in memory shared with
 * the parent, which reads it when the vfork returns. Linux >= 5.7 (CLONE_INTO_CGROUP);
 * x86-64 only (a few lines of assembly to enter the child on its own stack): `intoCgroup` in
 * the exports says whether this build has it.
 *
 * Needs Linux >= 5.3 (pidfd_open) and glibc >= 2.34 (addchdir_np, addclosefrom_np).
 * Build: cc -O2 -shared -fPIC -I<node>/include/node spawn.c -o spawn.node (Makefile).
 */
#define _GNU_SOURCE
#define NAPI_VERSION 8
#include <node_api.h>
#include <uv.h>

#include <errno.h>
#include <pthread.h>
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
#ifndef SYS_clone3
#define SYS_clone3 435
#endif
#ifndef CLONE_PIDFD
#define CLONE_PIDFD 0x00001000
#endif
#ifndef CLONE_INTO_CGROUP
#define CLONE_INTO_CGROUP 0x200000000ULL
#endif
#if defined(__x86_64__)
#define INTO_CGROUP 1
#else
#define INTO_CGROUP 0
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

/*
 * One spawn, prepared on the JS thread, run on a libuv threadpool thread (execute), handed
 * back on the JS thread (complete). posix_spawn's CLONE_VFORK suspends the calling thread
 * until the child has called execve — a millisecond or more on a busy machine, during which
 * the agent's event loop would otherwise stand still.
 */
typedef struct request {
  napi_async_work work;
  envstate_t *es;
  char *file, *args, *envs, *cwd;
  char **argv, **envp;
  char *stdin_bytes; /* NULL: /dev/null */
  size_t stdin_len;
  int cgroupfd; /* -1: posix_spawn where the agent is */
  napi_ref on_start, on_exit;
  /* results */
  int err;          /* 0, or the errno of the step that failed */
  const char *step; /* which step, for failures that are not the program's own */
  pid_t pid;
  int pidfd, outfd, errfd;
} request_t;

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

static void reap_now(pid_t pid) {
  kill(-pid, SIGKILL);
  kill(pid, SIGKILL);
  while (waitpid(pid, NULL, 0) < 0 && errno == EINTR) {
  }
}

/* ------------------------------------------------------------------ into a cgroup: clone3 */

#if INTO_CGROUP
/* The kernel's struct clone_args (CLONE_ARGS_SIZE_VER2: with cgroup). */
struct clone_args_v2 {
  uint64_t flags, pidfd, child_tid, parent_tid, exit_signal, stack, stack_size, tls, set_tid, set_tid_size, cgroup;
};

/* What the child needs, and where it leaves why it failed (shared: CLONE_VM). */
typedef struct child_ctx {
  const char *path, *cwd;
  char **argv, **envp;
  int infd, outfd, errfd;
  volatile int err;
  const char *volatile step;
} child_ctx_t;

#define CHILD_STACK_BYTES (64 * 1024)

/* rt_sigaction's own struct (x86-64). */
struct kernel_sigaction {
  void (*handler)(int);
  unsigned long flags;
  void (*restorer)(void);
  uint64_t mask;
};

/*
 * In the child, on its own stack, sharing the agent's memory until execve: only system calls
 * and plain stores (no malloc, no locks). Mirrors the posix_spawn path: dispositions, session,
 * stdio, closefrom, chdir, mask, execve.
 */
static int child_main(void *arg) {
  child_ctx_t *c = arg;
  /* The agent's handlers must not run here, and a task starts with every signal at its
   * default, whatever the agent's own parents ignored: each signal with a handler or ignored
   * goes back to its default (the mask is still all-blocked from the parent). The raw call:
   * glibc's sigaction refuses its own two signals (32, 33), whose handlers are the agent's too. */
  for (int sig = 1; sig < NSIG; sig++) {
    struct kernel_sigaction sa = {0};
    if (sig == SIGKILL || sig == SIGSTOP) continue;
    if (syscall(SYS_rt_sigaction, sig, NULL, &sa, sizeof(uint64_t)) != 0 || sa.handler == SIG_DFL) continue;
    struct kernel_sigaction dfl = {.handler = SIG_DFL};
    syscall(SYS_rt_sigaction, sig, &dfl, NULL, sizeof(uint64_t));
  }
  if (setsid() < 0) {
    c->err = errno, c->step = "setsid";
    _exit(127);
  }
  if (dup2(c->outfd, 1) < 0 || dup2(c->errfd, 2) < 0) {
    c->err = errno, c->step = "file actions";
    _exit(127);
  }
  if (c->infd >= 0) {
    if (dup2(c->infd, 0) < 0) {
      c->err = errno, c->step = "file actions";
      _exit(127);
    }
  } else {
    int fd = open("/dev/null", O_RDONLY);
    if (fd < 0 || (fd != 0 && (dup2(fd, 0) < 0 || close(fd) < 0))) {
      c->err = errno, c->step = "file actions";
      _exit(127);
    }
  }
  if (close_range(3, ~0U, 0) != 0 || chdir(c->cwd) != 0) {
    c->err = errno, c->step = "file actions";
    _exit(127);
  }
  sigset_t none;
  sigemptyset(&none);
  if (sigprocmask(SIG_SETMASK, &none, NULL) != 0) {
    c->err = errno, c->step = "attributes";
    _exit(127);
  }
  execve(c->path, c->argv, c->envp);
  c->err = errno; /* the program's own failure, as posix_spawn reports it */
  _exit(127);
}

/*
 * clone3, entering fn(arg) on the new stack in the child (a C caller cannot return there: its
 * frame is on the parent's stack). Returns the child's pid, or -errno. rdi, rsi, r8, r9 live
 * through the syscall (only rax, rcx, r11 do not), in both processes.
 */
static long clone3_call(struct clone_args_v2 *ca, size_t size, int (*fn)(void *), void *arg) {
  long ret;
  register void *r8 __asm__("r8") = arg;
  register int (*r9)(void *) __asm__("r9") = fn;
  __asm__ volatile(
      "syscall\n\t"
      "test %%rax, %%rax\n\t"
      "jnz 1f\n\t"
      "xor %%ebp, %%ebp\n\t"
      "and $-16, %%rsp\n\t"
      "mov %%r8, %%rdi\n\t"
      "call *%%r9\n\t"
      "mov %%eax, %%edi\n\t"
      "mov $60, %%eax\n\t" /* SYS_exit, should fn ever return */
      "syscall\n\t"
      "hlt\n"
      "1:\n\t"
      : "=a"(ret)
      : "0"((long)SYS_clone3), "D"(ca), "S"(size), "r"(r8), "r"(r9)
      : "rcx", "r11", "memory");
  return ret;
}

/* Starts rq's process in rq->cgroupfd's cgroup; sets rq->pid and rq->pidfd, or rq->err (and step). */
static void spawn_into_cgroup(request_t *rq, const char *path, int infd) {
  child_ctx_t c = {.path = path, .cwd = rq->cwd, .argv = rq->argv, .envp = rq->envp, .infd = infd, .outfd = rq->outfd, .errfd = rq->errfd};
  void *stack = mmap(NULL, CHILD_STACK_BYTES, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_STACK, -1, 0);
  if (stack == MAP_FAILED) {
    rq->err = errno, rq->step = "child stack";
    return;
  }
  int pidfd = -1;
  struct clone_args_v2 ca = {
      .flags = CLONE_VM | CLONE_VFORK | CLONE_PIDFD | CLONE_INTO_CGROUP,
      .pidfd = (uint64_t)(uintptr_t)&pidfd,
      .exit_signal = SIGCHLD,
      .stack = (uint64_t)(uintptr_t)stack,
      .stack_size = CHILD_STACK_BYTES,
      .cgroup = (uint64_t)rq->cgroupfd,
  };
  /* No agent signal handler may run in the child before its dispositions are reset. */
  sigset_t all, old;
  sigfillset(&all);
  pthread_sigmask(SIG_BLOCK, &all, &old);
  long pid = clone3_call(&ca, sizeof ca, child_main, &c);
  pthread_sigmask(SIG_SETMASK, &old, NULL);
  munmap(stack, CHILD_STACK_BYTES);
  if (pid < 0) {
    rq->err = (int)-pid, rq->step = "clone3";
    return;
  }
  if (c.err) {
    /* It never ran the program: reap the child that said why. */
    rq->err = c.err, rq->step = c.step;
    close(pidfd);
    while (waitpid((pid_t)pid, NULL, 0) < 0 && errno == EINTR) {
    }
    return;
  }
  rq->pid = (pid_t)pid;
  rq->pidfd = pidfd;
}
#endif

/* The threadpool half: no N-API calls here. */
static void spawn_execute(napi_env env, void *data) {
  (void)env;
  request_t *rq = data;
  int infd = -1, rc;
  bool fa_init = false, attr_init = false;
  posix_spawn_file_actions_t fa;
  posix_spawnattr_t attr;
  char *path = NULL;

  rq->step = NULL;
  if (!(path = resolve(rq->file, rq->envp, rq->cwd, &rq->err))) goto done;
  rq->err = 0;
  if (rq->stdin_bytes) {
    if ((infd = memfd("lc-stdin")) < 0) {
      rq->err = errno, rq->step = "memfd";
      goto done;
    }
    for (size_t n = 0; n < rq->stdin_len;) {
      ssize_t w = write(infd, rq->stdin_bytes + n, rq->stdin_len - n);
      if (w < 0 && errno == EINTR) continue;
      if (w <= 0) {
        rq->err = w < 0 ? errno : EIO, rq->step = "stdin";
        goto done;
      }
      n += (size_t)w;
    }
    if (lseek(infd, 0, SEEK_SET) != 0) {
      rq->err = errno, rq->step = "stdin";
      goto done;
    }
  }
  if ((rq->outfd = memfd("lc-stdout")) < 0 || (rq->errfd = memfd("lc-stderr")) < 0) {
    rq->err = errno, rq->step = "memfd";
    goto done;
  }
#if INTO_CGROUP
  if (rq->cgroupfd >= 0) {
    spawn_into_cgroup(rq, path, infd);
    goto done;
  }
#endif
  if ((rc = posix_spawn_file_actions_init(&fa)) != 0) {
    rq->err = rc, rq->step = "file actions";
    goto done;
  }
  fa_init = true;
  /* Outputs first: if stdin's memfd were 1 or 2 it would be clobbered, but memfd() keeps ours >= 3. */
  if ((rc = posix_spawn_file_actions_adddup2(&fa, rq->outfd, 1)) != 0 || (rc = posix_spawn_file_actions_adddup2(&fa, rq->errfd, 2)) != 0 ||
      (rc = infd >= 0 ? posix_spawn_file_actions_adddup2(&fa, infd, 0) : posix_spawn_file_actions_addopen(&fa, 0, "/dev/null", O_RDONLY, 0)) != 0 ||
      (rc = posix_spawn_file_actions_addclosefrom_np(&fa, 3)) != 0 || (rc = posix_spawn_file_actions_addchdir_np(&fa, rq->cwd)) != 0) {
    rq->err = rc, rq->step = "file actions";
    goto done;
  }
  if ((rc = posix_spawnattr_init(&attr)) != 0) {
    rq->err = rc, rq->step = "attributes";
    goto done;
  }
  attr_init = true;
  sigset_t none;
  sigemptyset(&none);
  if ((rc = posix_spawnattr_setflags(&attr, POSIX_SPAWN_SETSID | POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF)) != 0 ||
      (rc = posix_spawnattr_setsigmask(&attr, &none)) != 0 || (rc = posix_spawnattr_setsigdefault(&attr, &rq->es->reset)) != 0) {
    rq->err = rc, rq->step = "attributes";
    goto done;
  }
  /* The program's own failure (ENOENT, EACCES, ENOEXEC...): glibc reports execve's errno. */
  if ((rc = posix_spawn(&rq->pid, path, &fa, &attr, rq->argv, rq->envp)) != 0) {
    rq->err = rc;
    goto done;
  }
  if ((rq->pidfd = pidfd_open(rq->pid)) < 0) {
    rq->err = errno, rq->step = "pidfd_open";
    reap_now(rq->pid);
    goto done;
  }

done:
  if (fa_init) posix_spawn_file_actions_destroy(&fa);
  if (attr_init) posix_spawnattr_destroy(&attr);
  if (infd >= 0) close(infd);
  if (rq->err) {
    if (rq->outfd >= 0) close(rq->outfd);
    if (rq->errfd >= 0) close(rq->errfd);
    rq->outfd = rq->errfd = -1;
  }
  free(path);
}

static void request_free(napi_env env, request_t *rq) {
  if (rq->on_start) napi_delete_reference(env, rq->on_start);
  if (rq->on_exit) napi_delete_reference(env, rq->on_exit);
  if (rq->work) napi_delete_async_work(env, rq->work);
  free(rq->file);
  free(rq->args);
  free(rq->envs);
  free(rq->cwd);
  free(rq->argv);
  free(rq->envp);
  free(rq->stdin_bytes);
  free(rq);
}

/* The JS-thread half: watch the exit, then onStart(error, pid, stdoutFd, stderrFd). */
static void spawn_complete(napi_env env, napi_status status, void *data) {
  request_t *rq = data;
  envstate_t *es = rq->es;
  if (status != napi_ok && !rq->err) {
    /* Cancelled with the environment: nothing was started. */
    if (rq->pid > 0) reap_now(rq->pid);
    if (rq->pidfd >= 0) close(rq->pidfd);
    if (rq->outfd >= 0) close(rq->outfd);
    if (rq->errfd >= 0) close(rq->errfd);
    request_free(env, rq);
    return;
  }
  if (!rq->err) {
    child_t *c = calloc(1, sizeof *c);
    bool inited = false;
    int rc = c ? uv_poll_init(es->loop, &c->poll, rq->pidfd) : UV_ENOMEM;
    if (rc == 0) {
      inited = true;
      rc = uv_poll_start(&c->poll, UV_READABLE, on_exit_ready);
    }
    if (rc != 0) {
      /* Unlikely (the loop refused the descriptor): do not leave an unwatched task behind. */
      reap_now(rq->pid);
      close(rq->outfd);
      close(rq->errfd);
      rq->outfd = rq->errfd = -1;
      rq->err = -rc, rq->step = "watching the process";
      if (inited) {
        c->pidfd = rq->pidfd; /* on_closed closes it */
        uv_close((uv_handle_t *)&c->poll, on_closed);
      } else {
        close(rq->pidfd);
        free(c);
      }
    } else {
      c->es = es;
      c->pid = rq->pid;
      c->pidfd = rq->pidfd;
      c->cb = rq->on_exit;
      rq->on_exit = NULL; /* the child's now */
      c->next = es->children;
      if (c->next) c->next->prev = c;
      es->children = c;
    }
    rq->pidfd = -1;
  }

  napi_value cb, recv, argv[4];
  if (napi_get_reference_value(env, rq->on_start, &cb) == napi_ok && cb && napi_get_global(env, &recv) == napi_ok) {
    if (rq->err) {
      const char *name = strerrorname_np(rq->err);
      char text[96];
      if (rq->step) snprintf(text, sizeof text, "%s (%s)", name ? name : "error", rq->step);
      else snprintf(text, sizeof text, "%s", name ? name : "error");
      napi_create_string_utf8(env, text, NAPI_AUTO_LENGTH, &argv[0]);
    } else {
      napi_get_null(env, &argv[0]);
    }
    napi_create_int32(env, rq->err ? 0 : rq->pid, &argv[1]);
    napi_create_int32(env, rq->outfd, &argv[2]);
    napi_create_int32(env, rq->errfd, &argv[3]);
    napi_call_function(env, recv, cb, 4, argv, NULL);
  }
  request_free(env, rq);
}

/*
 * spawn(file, args, argc, env, envc, cwd, stdin, onStart, onExit[, cgroupFd]): checks and
 * copies the arguments, then starts the process off the JS thread. Bad arguments throw here.
 */
static napi_value js_spawn(napi_env env, napi_callback_info info) {
  size_t argc = 10;
  napi_value a[10];
  envstate_t *es;
  request_t *rq = NULL;
  size_t file_len, args_len, env_len, cwd_len;
  uint32_t nargs, nenv;

  CHECK(env, napi_get_cb_info(env, info, &argc, a, NULL, NULL));
  CHECK(env, napi_get_instance_data(env, (void **)&es));
  if (argc < 9) {
    napi_throw_type_error(env, NULL, "spawn(file, args, argc, env, envc, cwd, stdin, onStart, onExit)");
    goto fail;
  }
  if (!(rq = calloc(1, sizeof *rq))) {
    throw_code(env, "spawn", ENOMEM);
    goto fail;
  }
  rq->es = es;
  rq->pidfd = rq->outfd = rq->errfd = rq->cgroupfd = -1;
  CHECK(env, napi_get_value_uint32(env, a[2], &nargs));
  CHECK(env, napi_get_value_uint32(env, a[4], &nenv));
  if (!(rq->file = string_arg(env, a[0], &file_len)) || !(rq->args = string_arg(env, a[1], &args_len)) || !(rq->envs = string_arg(env, a[3], &env_len)) ||
      !(rq->cwd = string_arg(env, a[5], &cwd_len))) {
    napi_throw_type_error(env, NULL, "spawn: file, args, env and cwd must be strings");
    goto fail;
  }
  if (nargs < 1 || !(rq->argv = split(rq->args, args_len, nargs)) || !(rq->envp = split(rq->envs, env_len, nenv)) || strlen(rq->file) != file_len ||
      strlen(rq->cwd) != cwd_len) {
    throw_code(env, "spawn: an argument or environment entry holds a NUL byte", EINVAL);
    goto fail;
  }
  napi_valuetype stdin_type, t1, t2;
  CHECK(env, napi_typeof(env, a[6], &stdin_type));
  CHECK(env, napi_typeof(env, a[7], &t1));
  CHECK(env, napi_typeof(env, a[8], &t2));
  if (t1 != napi_function || t2 != napi_function) {
    napi_throw_type_error(env, NULL, "spawn: onStart and onExit must be functions");
    goto fail;
  }
  if (stdin_type != napi_null && stdin_type != napi_undefined) {
    void *bytes;
    size_t size;
    CHECK(env, napi_get_buffer_info(env, a[6], &bytes, &size));
    if (!(rq->stdin_bytes = malloc(size ? size : 1))) {
      throw_code(env, "spawn", ENOMEM);
      goto fail;
    }
    memcpy(rq->stdin_bytes, bytes, size);
    rq->stdin_len = size;
  }
  if (argc >= 10) {
    napi_valuetype t;
    CHECK(env, napi_typeof(env, a[9], &t));
    if (t != napi_null && t != napi_undefined) {
      int32_t fd;
      if (t != napi_number || napi_get_value_int32(env, a[9], &fd) != napi_ok) {
        napi_throw_type_error(env, NULL, "spawn: cgroupFd must be a descriptor number");
        goto fail;
      }
      if (fd >= 0 && !INTO_CGROUP) {
        throw_code(env, "spawn: starting into a cgroup needs clone3, which this build lacks", ENOSYS);
        goto fail;
      }
      rq->cgroupfd = fd < 0 ? -1 : fd;
    }
  }
  napi_value name;
  CHECK(env, napi_create_reference(env, a[7], 1, &rq->on_start));
  CHECK(env, napi_create_reference(env, a[8], 1, &rq->on_exit));
  CHECK(env, napi_create_string_utf8(env, "lilcluster:spawn", NAPI_AUTO_LENGTH, &name));
  CHECK(env, napi_create_async_work(env, NULL, name, spawn_execute, spawn_complete, rq, &rq->work));
  CHECK(env, napi_queue_async_work(env, rq->work));
  return NULL;

fail:
  if (rq) request_free(env, rq);
  return NULL;
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
  napi_value into;
  if (napi_get_boolean(env, INTO_CGROUP, &into) != napi_ok || napi_set_named_property(env, exports, "intoCgroup", into) != napi_ok) return NULL;
  return exports;
}
