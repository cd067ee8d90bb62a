/*
 * "No IPv6 router here", said quickly. iPXE (netboot → ifconf) configures a NIC with every
 * configurator at once, DHCP and IPv6 router discovery, and goes on only when all have
 * finished. On a network without an IPv6 router its router solicitations go unanswered and
 * the wait ends only when its retry timer gives up: 16 s measured on every SeaBIOS + iPXE ROM
 * boot here (RS at 0, 0.3, 0.9, 1.9, 3.9, 8 s, gave up at 16 s), and again in ipxe.efi under
 * UEFI. Any router advertisement during that wait ends it (iPXE src/net/ndp.c,
 * ipv6conf_rx_router_advertisement: a first solicited RA without the M/O flags completes IPv6
 * configuration).
 *
 * This thread answers router solicitations on one interface with the smallest valid RA
 * (RFC 4861 §4.2): router lifetime 0 (not a default router), no prefixes, no flags, hop limit,
 * reachable time and retrans timer unspecified. Hosts learn nothing from it: no address, no
 * route. Sent to all-nodes (ff02::1) with hop limit 255 (§6.1.2), at most one every 3 s
 * (MIN_DELAY_BETWEEN_RAS, §6.2.6): a solicitation inside that gap is answered when it ends.
 *
 *   h = start(ifindex)     throws if the raw socket cannot be opened (no IPv6, not root)
 *   stats(h)               { solicitations, advertisements, errors, lastError }
 *   stop(h)
 *
 * Build: cc -O2 -shared -fPIC -I<node>/include/node router-advert.c -o router-advert.node.
 */
#define _GNU_SOURCE
#define NAPI_VERSION 8
#include <node_api.h>

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/icmp6.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#ifndef SO_BINDTOIFINDEX
#define SO_BINDTOIFINDEX 62 /* Linux ≥ 5.0, asm-generic/socket.h */
#endif

/* RFC 4861 §10: MIN_DELAY_BETWEEN_RAS. */
#define MIN_DELAY_BETWEEN_RAS_MS 3000

typedef struct advertiser {
  int sock, stopfd, ifindex;
  pthread_t thread;
  bool stopped;
  atomic_uint solicitations, advertisements, errors;
  atomic_int last_error;
} advertiser_t;

static int64_t now_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void send_advert(advertiser_t *a) {
  struct nd_router_advert ra;
  memset(&ra, 0, sizeof ra); /* hop limit, flags, lifetime, reachable, retrans: 0 */
  ra.nd_ra_type = ND_ROUTER_ADVERT;
  ra.nd_ra_code = 0; /* the kernel fills in the checksum of raw ICMPv6 sockets */
  struct sockaddr_in6 dst;
  memset(&dst, 0, sizeof dst);
  dst.sin6_family = AF_INET6;
  dst.sin6_scope_id = (uint32_t)a->ifindex;
  inet_pton(AF_INET6, "ff02::1", &dst.sin6_addr);
  if (sendto(a->sock, &ra, sizeof ra, 0, (struct sockaddr *)&dst, sizeof dst) == (ssize_t)sizeof ra) {
    atomic_fetch_add(&a->advertisements, 1);
  } else {
    atomic_fetch_add(&a->errors, 1);
    atomic_store(&a->last_error, errno);
  }
}

static void *advertiser_main(void *arg) {
  advertiser_t *a = arg;
  int64_t last_sent = -MIN_DELAY_BETWEEN_RAS_MS;
  bool pending = false; /* a solicitation waits for the rate limit */
  for (;;) {
    int timeout = -1;
    if (pending) {
      int64_t due = last_sent + MIN_DELAY_BETWEEN_RAS_MS - now_ms();
      timeout = due < 0 ? 0 : (int)due;
    }
    struct pollfd fds[2] = {{.fd = a->sock, .events = POLLIN}, {.fd = a->stopfd, .events = POLLIN}};
    int n = poll(fds, 2, timeout);
    if (n < 0 && errno != EINTR) break;
    if (fds[1].revents) break;
    if (n > 0 && (fds[0].revents & POLLIN)) {
      uint8_t buf[1500];
      struct sockaddr_in6 from;
      socklen_t fromlen = sizeof from;
      ssize_t len = recvfrom(a->sock, buf, sizeof buf, MSG_DONTWAIT, (struct sockaddr *)&from, &fromlen);
      /* The filter passes only RS; §6.1.1: code 0, at least 8 bytes (hop limit unchecked: the
       * answer is harmless either way). */
      if (len >= (ssize_t)sizeof(struct nd_router_solicit) && buf[0] == ND_ROUTER_SOLICIT && buf[1] == 0) {
        atomic_fetch_add(&a->solicitations, 1);
        pending = true;
      }
    }
    if (pending && now_ms() - last_sent >= MIN_DELAY_BETWEEN_RAS_MS) {
      send_advert(a);
      last_sent = now_ms();
      pending = false;
    }
  }
  return NULL;
}

static napi_value throw_errno(napi_env env, const char *what, int err) {
  char msg[160];
  snprintf(msg, sizeof msg, "%s: %s", what, strerror(err));
  napi_throw_error(env, NULL, msg);
  return NULL;
}

static advertiser_t *handle_of(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value argv[1];
  advertiser_t *a = NULL;
  if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok || argc < 1 || napi_get_value_external(env, argv[0], (void **)&a) != napi_ok)
    napi_throw_type_error(env, NULL, "expected a router advertiser handle");
  return a;
}

static void stop_advertiser(advertiser_t *a) {
  if (a->stopped) return;
  a->stopped = true;
  uint64_t one = 1;
  ssize_t w = write(a->stopfd, &one, sizeof one);
  (void)w;
  pthread_join(a->thread, NULL);
  close(a->sock);
  close(a->stopfd);
}

static void finalize(napi_env env, void *data, void *hint) {
  (void)env;
  (void)hint;
  stop_advertiser(data);
  free(data);
}

/* start(ifindex): External */
static napi_value js_start(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value argv[1];
  int32_t ifindex;
  if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok || argc < 1 || napi_get_value_int32(env, argv[0], &ifindex) != napi_ok || ifindex <= 0)
    return napi_throw_type_error(env, NULL, "start(ifindex)"), NULL;
  int sock = socket(AF_INET6, SOCK_RAW | SOCK_CLOEXEC, IPPROTO_ICMPV6);
  if (sock < 0) return throw_errno(env, "ICMPv6 raw socket", errno);
  int err = 0;
  /* Only this interface, only router solicitations. */
  if (setsockopt(sock, SOL_SOCKET, SO_BINDTOIFINDEX, &ifindex, sizeof ifindex) != 0) err = errno;
  struct icmp6_filter filter;
  ICMP6_FILTER_SETBLOCKALL(&filter);
  ICMP6_FILTER_SETPASS(ND_ROUTER_SOLICIT, &filter);
  if (!err && setsockopt(sock, IPPROTO_ICMPV6, ICMP6_FILTER, &filter, sizeof filter) != 0) err = errno;
  /* RS go to all-routers (ff02::2); RAs leave with hop limit 255 (RFC 4861 §6.1.2). */
  struct ipv6_mreq mreq;
  memset(&mreq, 0, sizeof mreq);
  inet_pton(AF_INET6, "ff02::2", &mreq.ipv6mr_multiaddr);
  mreq.ipv6mr_interface = (unsigned)ifindex;
  if (!err && setsockopt(sock, IPPROTO_IPV6, IPV6_ADD_MEMBERSHIP, &mreq, sizeof mreq) != 0) err = errno;
  int hops = 255;
  if (!err && setsockopt(sock, IPPROTO_IPV6, IPV6_MULTICAST_HOPS, &hops, sizeof hops) != 0) err = errno;
  if (!err && setsockopt(sock, IPPROTO_IPV6, IPV6_MULTICAST_IF, &ifindex, sizeof ifindex) != 0) err = errno;
  int loop = 0;
  if (!err && setsockopt(sock, IPPROTO_IPV6, IPV6_MULTICAST_LOOP, &loop, sizeof loop) != 0) err = errno;
  if (err) {
    close(sock);
    return throw_errno(env, "ICMPv6 socket options", err);
  }
  advertiser_t *a = calloc(1, sizeof *a);
  if (!a) return close(sock), throw_errno(env, "router advertiser", ENOMEM);
  a->sock = sock;
  a->ifindex = ifindex;
  a->stopfd = eventfd(0, EFD_CLOEXEC);
  if (a->stopfd < 0 || (err = pthread_create(&a->thread, NULL, advertiser_main, a)) != 0) {
    int e = a->stopfd < 0 ? errno : err;
    if (a->stopfd >= 0) close(a->stopfd);
    close(sock);
    free(a);
    return throw_errno(env, "router advertiser thread", e);
  }
  napi_value ext;
  if (napi_create_external(env, a, finalize, NULL, &ext) != napi_ok) {
    stop_advertiser(a);
    free(a);
    return throw_errno(env, "router advertiser", ENOMEM);
  }
  return ext;
}

static napi_value js_stats(napi_env env, napi_callback_info info) {
  advertiser_t *a = handle_of(env, info);
  if (!a) return NULL;
  napi_value o, v;
  napi_create_object(env, &o);
  napi_create_uint32(env, atomic_load(&a->solicitations), &v);
  napi_set_named_property(env, o, "solicitations", v);
  napi_create_uint32(env, atomic_load(&a->advertisements), &v);
  napi_set_named_property(env, o, "advertisements", v);
  napi_create_uint32(env, atomic_load(&a->errors), &v);
  napi_set_named_property(env, o, "errors", v);
  int e = atomic_load(&a->last_error);
  if (e) napi_create_string_utf8(env, strerror(e), NAPI_AUTO_LENGTH, &v);
  else napi_get_null(env, &v);
  napi_set_named_property(env, o, "lastError", v);
  return o;
}

static napi_value js_stop(napi_env env, napi_callback_info info) {
  advertiser_t *a = handle_of(env, info);
  if (a) stop_advertiser(a);
  return NULL;
}

NAPI_MODULE_INIT() {
  napi_value fn;
  napi_create_function(env, "start", NAPI_AUTO_LENGTH, js_start, NULL, &fn);
  napi_set_named_property(env, exports, "start", fn);
  napi_create_function(env, "stats", NAPI_AUTO_LENGTH, js_stats, NULL, &fn);
  napi_set_named_property(env, exports, "stats", fn);
  napi_create_function(env, "stop", NAPI_AUTO_LENGTH, js_stop, NULL, &fn);
  napi_set_named_property(env, exports, "stop", fn);
  return exports;
}
