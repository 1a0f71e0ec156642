/*
 * Batched UDP for the DNS server (net/udp-batch.ts, setting dns-udp): a UDP socket watched in node's own event loop
 * (a uv_poll_t, no thread) that reads up to `slots` datagrams with ONE recvmmsg(2), hands them to JavaScript in ONE
 * call, and sends the answers JavaScript returns with ONE sendmmsg(2). node's dgram costs a read callback, a Buffer,
 * an rinfo object, an event and a sendmsg per datagram (docs/benchmark.md, "Issue 14, third round: DNS per query").
 *
 *   open(family, address, port, slots, onBatch) -> handle
 *       binds a non-blocking UDP socket (family 4 or 6, address an IP literal; a v6 socket is dual-stack like dgram's)
 *       and starts watching it. On readable: recvmmsg, then onBatch(count) once per recvmmsg (up to MAX_ROUNDS of them
 *       while they come back full). Datagram i of the batch is at byte
 *       i * SLOT_BYTES of data(handle); meta(handle) holds per slot [length, port, family, local]: length -1 is a
 *       datagram that did not fit a slot (its slot holds its first SLOT_BYTES bytes: JavaScript is told it was cut);
 *       local is the number of the address the datagram was sent to, on a socket bound to the wildcard address
 *       (-1 when not known): answers go out from it ("The answer's source" below).
 *       addresses(handle)[i] is the source address as text.
 *       onBatch returns an array whose element i is the answer to datagram i (a Buffer; anything else: none);
 *       the answers go back to each datagram's source with one sendmmsg.
 *   data(handle) -> Buffer, meta(handle) -> Int32Array, addresses(handle) -> string[]   (the same objects every batch)
 *   port(handle) -> the bound port
 *   sendTo(handle, buffer, address, port[, local])   one datagram (an answer that came later, from upstream), from the
 *                                           address `local` names (meta's fourth int); false: not sent
 *   close(handle)                           stops watching and closes the fd (at once; idempotent)
 *   stats(handle) -> { batches, datagrams, sent, sendErrors, truncated, addressTexts (source-address strings made) }
 * Errors of open are thrown with `code` set to the errno name.
 */
#define _GNU_SOURCE
/* napi_add_async_cleanup_hook */
#define NAPI_VERSION 8
#include <node_api.h>
#include <uv.h>
#include <arpa/inet.h>
#include <net/if.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>
#include "napi_errno.h"

/* A slot holds one datagram; of a larger one only its first SLOT_BYTES (a DNS query over UDP is far smaller; TCP takes 4096 too). */
#define SLOT_BYTES 4096
#define MAX_SLOTS 256
/* recvmmsg rounds per readable event while batches come back full, so one busy socket does not hold the loop. */
#define MAX_ROUNDS 4
#define META_INTS 4
/*
 * The answer's source. A socket bound to the wildcard address (0.0.0.0, [::]: the container DNS listener, which
 * REDIRECT from a bridge reaches at the bridge's first address) would answer from whatever address the kernel picks
 * for the client, which on an interface with two addresses (two global IPv6 ones, say) need not be the one the query
 * was sent to: the client drops such an answer, and conntrack cannot undo a REDIRECT for it. So such a socket reads
 * each datagram's destination (IP_PKTINFO, IPV6_PKTINFO: v4-mapped for IPv4 on a dual-stack socket) and answers
 * from it. The destinations seen are numbered in a table, so that an answer sent later names its source by number, no
 * text made per query. Past MAX_LOCALS of them, an answer of the batch still goes out from its datagram's destination
 * (read again from its control message), one sent later from the kernel's pick.
 */
#define MAX_LOCALS 64
#define CONTROL_BYTES 64
/* An address as text: the longest IPv6 literal, `%`, an interface name (a link-local address's zone). */
#define ADDRESS_TEXT_BYTES (INET6_ADDRSTRLEN + IF_NAMESIZE + 1)

typedef struct {
  napi_env env;
  uv_poll_t poll;
  int fd;
  int family;
  int slots;
  int closed;      /* close() was called: fd closed, poll stopped */
  int poll_closed; /* uv_close's callback ran */
  int finalized;   /* the handle object was collected */
  int in_batch;
  napi_ref self, on_batch, data_ref, meta_ref, addrs_ref;
  napi_async_context async;
  int32_t *meta; /* the bytes of meta(handle), node-owned (kept alive by meta_ref while open) */
  struct mmsghdr *recv_msgs, *send_msgs;
  struct iovec *recv_iov, *send_iov;
  struct sockaddr_storage *peers;
  /* Per slot control buffers (pktinfo read, pktinfo to send), and the destinations seen (see MAX_LOCALS). */
  int pktinfo;
  unsigned char *recv_control, *send_control;
  unsigned char locals[MAX_LOCALS][16];
  int local_count;
  /*
   * The text of the last source address seen, so that a run of queries from one client makes one string. The string
   * is element 0 of a one-element array (`last_text`): node's N-API before version 10 refuses a reference to a string
   * (napi_create_reference returns napi_invalid_arg), not to an object.
   */
  struct sockaddr_storage last_peer;
  socklen_t last_peer_len;
  int has_last_text;
  napi_ref last_text;
  /*
   * Registered while the poll handle is open: when the environment goes away (a worker terminated) with the socket
   * still open, node waits for this hook to finish before it unloads the addon, so the close callback (code of this
   * addon) still exists when libuv calls it.
   */
  napi_async_cleanup_hook_handle cleanup_hook;
  double batches, datagrams, sent, send_errors, truncated, address_texts;
} udp_batch;

static void free_if_done(udp_batch *u) {
  if (!u->poll_closed || !u->finalized) return;
  free(u->recv_msgs);
  free(u->send_msgs);
  free(u->recv_iov);
  free(u->send_iov);
  free(u->peers);
  free(u->recv_control);
  free(u->send_control);
  free(u);
}

static void on_poll_closed(uv_handle_t *handle) {
  udp_batch *u = handle->data;
  u->poll_closed = 1;
  if (u->cleanup_hook) napi_remove_async_cleanup_hook(u->cleanup_hook);
  u->cleanup_hook = NULL;
  free_if_done(u);
}

/* Stops watching, closes the fd, and starts closing the poll handle (on_poll_closed finishes); idempotent. */
static void stop_socket(udp_batch *u) {
  if (u->closed) return;
  u->closed = 1;
  uv_poll_stop(&u->poll);
  close(u->fd);
  uv_close((uv_handle_t *)&u->poll, on_poll_closed);
}

/* The environment is going away with the socket open: close it; on_poll_closed tells node the hook is done. */
static void on_env_teardown(napi_async_cleanup_hook_handle hook, void *arg) {
  (void)hook;
  stop_socket(arg);
}

static void finalize(napi_env env, void *data, void *hint) {
  (void)hint;
  udp_batch *u = data;
  /* Only reachable once close() released the strong reference (or at environment teardown). */
  stop_socket(u);
  if (u->async) napi_async_destroy(env, u->async);
  u->async = NULL;
  u->finalized = 1;
  free_if_done(u);
}

static void do_close(napi_env env, udp_batch *u) {
  if (u->closed) return;
  stop_socket(u);
  napi_delete_reference(env, u->on_batch);
  napi_delete_reference(env, u->data_ref);
  napi_delete_reference(env, u->meta_ref);
  napi_delete_reference(env, u->addrs_ref);
  if (u->last_text) napi_delete_reference(env, u->last_text);
  u->last_text = NULL;
  /* The handle object may be collected from now on (finalize frees the memory once the poll handle is closed too). */
  napi_delete_reference(env, u->self);
}

/* The source address of slot i as a JS string (the previous one again when the address is the same). */
static napi_value peer_text(napi_env env, udp_batch *u, int i, socklen_t len) {
  struct sockaddr_storage *peer = &u->peers[i];
  napi_value text, holder;
  int have_holder = napi_get_reference_value(env, u->last_text, &holder) == napi_ok && holder;
  if (have_holder && u->has_last_text && len == u->last_peer_len && peer->ss_family == u->last_peer.ss_family) {
    int same = peer->ss_family == AF_INET
                   ? ((struct sockaddr_in *)peer)->sin_addr.s_addr == ((struct sockaddr_in *)&u->last_peer)->sin_addr.s_addr
                   : memcmp(&((struct sockaddr_in6 *)peer)->sin6_addr, &((struct sockaddr_in6 *)&u->last_peer)->sin6_addr, 16) == 0 &&
                         ((struct sockaddr_in6 *)peer)->sin6_scope_id == ((struct sockaddr_in6 *)&u->last_peer)->sin6_scope_id;
    if (same && napi_get_element(env, holder, 0, &text) == napi_ok) return text;
  }
  char buf[ADDRESS_TEXT_BYTES] = "?";
  if (peer->ss_family == AF_INET) inet_ntop(AF_INET, &((struct sockaddr_in *)peer)->sin_addr, buf, sizeof buf);
  else if (peer->ss_family == AF_INET6) {
    const struct sockaddr_in6 *in6 = (const struct sockaddr_in6 *)peer;
    inet_ntop(AF_INET6, &in6->sin6_addr, buf, sizeof buf);
    /*
     * A link-local address means nothing without its interface: written `fe80::1%eth0`, as node's dgram writes it, so
     * that an answer sent later (sendTo, from this text) goes out of the interface the query came in on.
     */
    if (IN6_IS_ADDR_LINKLOCAL(&in6->sin6_addr) && in6->sin6_scope_id != 0) {
      size_t used = strlen(buf);
      char name[IF_NAMESIZE];
      if (if_indextoname(in6->sin6_scope_id, name)) snprintf(buf + used, sizeof buf - used, "%%%s", name);
      else snprintf(buf + used, sizeof buf - used, "%%%u", (unsigned)in6->sin6_scope_id);
    }
  }
  napi_create_string_latin1(env, buf, NAPI_AUTO_LENGTH, &text);
  u->address_texts++;
  u->has_last_text = have_holder && napi_set_element(env, holder, 0, text) == napi_ok;
  memcpy(&u->last_peer, peer, sizeof *peer);
  u->last_peer_len = len;
  return text;
}

static int peer_port(const struct sockaddr_storage *peer) {
  if (peer->ss_family == AF_INET) return ntohs(((const struct sockaddr_in *)peer)->sin_port);
  if (peer->ss_family == AF_INET6) return ntohs(((const struct sockaddr_in6 *)peer)->sin6_port);
  return 0;
}

/* Reads the address datagram `h` was sent to into `address` (16 bytes, IPv4 in the first 4); 0 when it has none. */
static int destination_of(udp_batch *u, struct msghdr *h, unsigned char *address) {
  if (!u->pktinfo) return 0;
  int found = 0;
  for (struct cmsghdr *c = CMSG_FIRSTHDR(h); c; c = CMSG_NXTHDR(h, c)) {
    if (u->family == 6 && c->cmsg_level == IPPROTO_IPV6 && c->cmsg_type == IPV6_PKTINFO && c->cmsg_len >= CMSG_LEN(sizeof(struct in6_pktinfo))) {
      struct in6_pktinfo info;
      memcpy(&info, CMSG_DATA(c), sizeof info);
      memcpy(address, &info.ipi6_addr, 16);
      found = 1;
    } else if (u->family == 4 && c->cmsg_level == IPPROTO_IP && c->cmsg_type == IP_PKTINFO && c->cmsg_len >= CMSG_LEN(sizeof(struct in_pktinfo))) {
      /* ipi_addr: the header's destination (ipi_spec_dst is the kernel's pick, the very thing to avoid). */
      struct in_pktinfo info;
      memcpy(&info, CMSG_DATA(c), sizeof info);
      memset(address, 0, 16);
      memcpy(address, &info.ipi_addr, 4);
      found = 1;
    }
  }
  return found;
}

/* The number of the address datagram `h` was sent to (added to the table when new); -1 when not read or no room. */
static int local_of(udp_batch *u, struct msghdr *h) {
  unsigned char address[16];
  if (!destination_of(u, h, address)) return -1;
  for (int i = 0; i < u->local_count; i++)
    if (memcmp(u->locals[i], address, 16) == 0) return i;
  if (u->local_count == MAX_LOCALS) return -1;
  memcpy(u->locals[u->local_count], address, 16);
  return u->local_count++;
}

/* Writes one pktinfo control message into `h`'s control buffer. */
static void put_pktinfo(struct msghdr *h, int level, int type, const void *info, size_t size) {
  struct cmsghdr *c = CMSG_FIRSTHDR(h);
  c->cmsg_level = level;
  c->cmsg_type = type;
  c->cmsg_len = CMSG_LEN(size);
  memcpy(CMSG_DATA(c), info, size);
  h->msg_controllen = CMSG_SPACE(size);
}

/* Makes `h` send from `address` (16 bytes, IPv4 in the first 4; NULL: the kernel's pick); `control` holds CONTROL_BYTES. */
static void send_from_address(udp_batch *u, struct msghdr *h, const unsigned char *address, unsigned char *control) {
  h->msg_control = NULL;
  h->msg_controllen = 0;
  if (!address) return;
  memset(control, 0, CONTROL_BYTES);
  h->msg_control = control;
  h->msg_controllen = CONTROL_BYTES;
  if (u->family == 6) {
    /* ifindex 0: routed as any answer; a link-local client's interface comes from its address's scope id. */
    struct in6_pktinfo info;
    memset(&info, 0, sizeof info);
    memcpy(&info.ipi6_addr, address, 16);
    put_pktinfo(h, IPPROTO_IPV6, IPV6_PKTINFO, &info, sizeof info);
  } else {
    struct in_pktinfo info;
    memset(&info, 0, sizeof info);
    memcpy(&info.ipi_spec_dst, address, 4);
    put_pktinfo(h, IPPROTO_IP, IP_PKTINFO, &info, sizeof info);
  }
}

/* Makes `h` send from local address number `local` (the kernel's pick for -1, or a number not in the table). */
static void send_from(udp_batch *u, struct msghdr *h, int local, unsigned char *control) {
  send_from_address(u, h, local < 0 || local >= u->local_count ? NULL : u->locals[local], control);
}

/*
 * Sends msgs[0..count) with as few sendmmsg calls as the kernel allows; a message the kernel refuses is skipped, but
 * first tried once more without its source address (gone from the interface since its query came, say): sent from
 * the kernel's pick, as before pktinfo, rather than not at all.
 */
static void send_all(udp_batch *u, struct mmsghdr *msgs, int count) {
  int i = 0;
  while (i < count && !u->closed) {
    int r = sendmmsg(u->fd, msgs + i, (unsigned)(count - i), 0);
    if (r > 0) {
      i += r;
      u->sent += r;
    } else if (r < 0 && errno == EINTR) {
      continue;
    } else if (r < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
      /* The send buffer is full: the rest are lost, as a datagram may be; the clients retry. */
      u->send_errors += count - i;
      return;
    } else if (msgs[i].msg_hdr.msg_controllen > 0) {
      msgs[i].msg_hdr.msg_control = NULL;
      msgs[i].msg_hdr.msg_controllen = 0;
    } else {
      /* This message failed (its first one): skip it, send the others. */
      u->send_errors++;
      i++;
    }
  }
}

/* One recvmmsg and its onBatch call; returns the number of datagrams read (0: nothing more to read). */
static int read_batch(udp_batch *u) {
  napi_env env = u->env;
  for (int i = 0; i < u->slots; i++) {
    u->recv_msgs[i].msg_hdr.msg_namelen = sizeof(struct sockaddr_storage);
    u->recv_msgs[i].msg_hdr.msg_flags = 0;
    u->recv_msgs[i].msg_len = 0;
    if (u->pktinfo) u->recv_msgs[i].msg_hdr.msg_controllen = CONTROL_BYTES;
  }
  int n;
  do n = recvmmsg(u->fd, u->recv_msgs, (unsigned)u->slots, MSG_DONTWAIT, NULL);
  while (n < 0 && errno == EINTR);
  if (n <= 0) return 0; /* EAGAIN, or an error queued on the socket (an ICMP for an earlier answer): nothing read */
  u->batches++;
  u->datagrams += n;

  napi_handle_scope scope;
  if (napi_open_handle_scope(env, &scope) != napi_ok) return 0;
  napi_value addrs, callback, self, count, result = NULL;
  napi_get_reference_value(env, u->addrs_ref, &addrs);
  napi_get_reference_value(env, u->on_batch, &callback);
  napi_get_reference_value(env, u->self, &self);
  for (int i = 0; i < n; i++) {
    struct msghdr *h = &u->recv_msgs[i].msg_hdr;
    int truncated = (h->msg_flags & MSG_TRUNC) != 0;
    if (truncated) u->truncated++;
    u->meta[i * META_INTS] = truncated ? -1 : (int32_t)u->recv_msgs[i].msg_len;
    u->meta[i * META_INTS + 1] = peer_port(&u->peers[i]);
    u->meta[i * META_INTS + 2] = u->peers[i].ss_family == AF_INET6 ? 6 : 4;
    u->meta[i * META_INTS + 3] = local_of(u, h);
    napi_set_element(env, addrs, (uint32_t)i, peer_text(env, u, i, h->msg_namelen));
  }
  napi_create_int32(env, n, &count);
  u->in_batch = 1;
  napi_status status = napi_make_callback(env, u->async, self, callback, 1, &count, &result);
  u->in_batch = 0;
  if (status == napi_pending_exception) {
    /* onBatch catches everything it calls; a throw here is a bug: report it as node reports any callback's throw. */
    napi_value err;
    napi_get_and_clear_last_exception(env, &err);
    napi_fatal_exception(env, err);
  }
  int answers = 0;
  bool is_array = false;
  if (!u->closed && status == napi_ok && result && napi_is_array(env, result, &is_array) == napi_ok && is_array) {
    for (int i = 0; i < n; i++) {
      napi_value answer;
      bool is_buffer = false;
      if (napi_get_element(env, result, (uint32_t)i, &answer) != napi_ok || napi_is_buffer(env, answer, &is_buffer) != napi_ok || !is_buffer) continue;
      void *bytes;
      size_t length;
      if (napi_get_buffer_info(env, answer, &bytes, &length) != napi_ok || length == 0) continue;
      struct mmsghdr *m = &u->send_msgs[answers];
      u->send_iov[answers].iov_base = bytes;
      u->send_iov[answers].iov_len = length;
      memset(&m->msg_hdr, 0, sizeof m->msg_hdr);
      m->msg_hdr.msg_name = &u->peers[i];
      m->msg_hdr.msg_namelen = u->recv_msgs[i].msg_hdr.msg_namelen;
      m->msg_hdr.msg_iov = &u->send_iov[answers];
      m->msg_hdr.msg_iovlen = 1;
      /*
       * From the address read with the datagram, still in its control buffer: its number when the table has it, else
       * (the table full) the address itself, so that only an answer sent later falls back to the kernel's pick.
       */
      unsigned char *control = u->send_control + (size_t)answers * CONTROL_BYTES;
      int local = u->meta[i * META_INTS + 3];
      unsigned char destination[16];
      if (local < 0 && destination_of(u, &u->recv_msgs[i].msg_hdr, destination)) send_from_address(u, &m->msg_hdr, destination, control);
      else send_from(u, &m->msg_hdr, local, control);
      answers++;
    }
  }
  /* The answer Buffers stay alive until the scope closes: send before closing it. */
  if (answers > 0) send_all(u, u->send_msgs, answers);
  napi_close_handle_scope(env, scope);
  return n;
}

static void on_readable(uv_poll_t *handle, int status, int events) {
  (void)events;
  udp_batch *u = handle->data;
  if (u->closed || u->in_batch) return;
  if (status < 0) {
    /*
     * libuv stops a poll handle whose fd reports POLLERR (a queued socket error) and says UV_EBADF. A DNS server
     * that stopped reading would leave every client to time out: clear the error (SO_ERROR reads and resets it),
     * watch again, and read what is queued.
     */
    int err = 0;
    socklen_t len = sizeof err;
    getsockopt(u->fd, SOL_SOCKET, SO_ERROR, &err, &len);
    int again = uv_poll_start(&u->poll, UV_READABLE, on_readable);
    if (again != 0) {
      /* libuv refuses only arguments it already took at open(): not expected, but never silent. */
      fprintf(stderr, "egress-guard: udp_batch: cannot watch the DNS socket again (%s); it no longer reads\n", uv_strerror(again));
      return;
    }
  }
  for (int round = 0; round < MAX_ROUNDS && !u->closed; round++) {
    if (read_batch(u) < u->slots) break;
  }
}

static udp_batch *unwrap(napi_env env, napi_value handle) {
  udp_batch *u = NULL;
  if (napi_get_value_external(env, handle, (void **)&u) != napi_ok || !u) {
    napi_throw_type_error(env, "EINVAL", "expected a handle from open()");
    return NULL;
  }
  return u;
}

static int make_sockaddr(int family, const char *address, int port, struct sockaddr_storage *sa, socklen_t *len) {
  memset(sa, 0, sizeof *sa);
  if (family == 4) {
    struct sockaddr_in *in = (struct sockaddr_in *)sa;
    in->sin_family = AF_INET;
    in->sin_port = htons((uint16_t)port);
    *len = sizeof *in;
    return inet_pton(AF_INET, address, &in->sin_addr) == 1;
  }
  struct sockaddr_in6 *in6 = (struct sockaddr_in6 *)sa;
  in6->sin6_family = AF_INET6;
  in6->sin6_port = htons((uint16_t)port);
  *len = sizeof *in6;
  /* `fe80::1%eth0` (or `%2`): the zone names the interface of a link-local address (peer_text writes it so). */
  char literal[ADDRESS_TEXT_BYTES];
  snprintf(literal, sizeof literal, "%s", address);
  char *zone = strchr(literal, '%');
  if (zone) {
    *zone++ = '\0';
    unsigned long index = if_nametoindex(zone);
    if (index == 0) {
      /* A numeric zone: digits only and within 32 bits (strtoul alone takes `-1`, ` 2` and wraps `4294967297` to 1). */
      if (zone[0] < '0' || zone[0] > '9') return 0;
      char *end = NULL;
      errno = 0;
      index = strtoul(zone, &end, 10);
      if (errno != 0 || *end != '\0' || index > UINT32_MAX) return 0;
    }
    if (index == 0) return 0;
    in6->sin6_scope_id = (uint32_t)index;
  }
  return inet_pton(AF_INET6, literal, &in6->sin6_addr) == 1;
}

static napi_value js_open(napi_env env, napi_callback_info info) {
  size_t argc = 6;
  napi_value argv[6];
  int32_t family, port, slots;
  bool v6only = false;
  char address[INET6_ADDRSTRLEN + 1];
  size_t address_len;
  napi_valuetype callback_type;
  const char *usage =
      "open(family, address, port, slots, onBatch[, v6only]): family 4 or 6, an IP literal, port 0-65535, slots 1-256, a function, a boolean";
  if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok || argc < 5 || napi_get_value_int32(env, argv[0], &family) != napi_ok ||
      napi_get_value_string_latin1(env, argv[1], address, sizeof address, &address_len) != napi_ok || napi_get_value_int32(env, argv[2], &port) != napi_ok ||
      napi_get_value_int32(env, argv[3], &slots) != napi_ok || napi_typeof(env, argv[4], &callback_type) != napi_ok || callback_type != napi_function ||
      (family != 4 && family != 6) || port < 0 || port > 65535 || slots < 1 || slots > MAX_SLOTS ||
      (argc >= 6 && napi_get_value_bool(env, argv[5], &v6only) != napi_ok)) {
    napi_throw_type_error(env, "EINVAL", usage);
    return NULL;
  }
  struct sockaddr_storage sa;
  socklen_t sa_len;
  if (!make_sockaddr(family, address, port, &sa, &sa_len)) {
    napi_throw_type_error(env, "EINVAL", "open: address is not an IP literal of that family");
    return NULL;
  }
  uv_loop_t *loop;
  if (napi_get_uv_event_loop(env, &loop) != napi_ok) return throw_errno(env, EIO, "napi_get_uv_event_loop");
  int fd = socket(family == 6 ? AF_INET6 : AF_INET, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0) return throw_errno(env, errno, "socket");
  /* v6only: IPv6 only, whatever net.ipv6.bindv6only says ([::]:P beside 0.0.0.0:P, net/listen.ts ipv6OnlyFor); else
     the kernel's default, where [::]:P takes IPv4 too. */
  int on = 1;
  if (family == 6 && v6only && setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &on, sizeof on) != 0) {
    int err = errno;
    close(fd);
    return throw_errno(env, err, "setsockopt(IPV6_V6ONLY)");
  }
  if (bind(fd, (struct sockaddr *)&sa, sa_len) != 0) {
    int err = errno;
    close(fd);
    return throw_errno(env, err, "bind");
  }
  udp_batch *u = calloc(1, sizeof *u);
  if (!u) {
    close(fd);
    return throw_errno(env, ENOMEM, "open");
  }
  u->env = env;
  u->fd = fd;
  u->family = family;
  u->slots = slots;
  u->recv_msgs = calloc((size_t)slots, sizeof(struct mmsghdr));
  u->send_msgs = calloc((size_t)slots, sizeof(struct mmsghdr));
  u->recv_iov = calloc((size_t)slots, sizeof(struct iovec));
  u->send_iov = calloc((size_t)slots, sizeof(struct iovec));
  u->peers = calloc((size_t)slots, sizeof(struct sockaddr_storage));
  /* Bound to the wildcard address: read each datagram's destination, to answer from it (see MAX_LOCALS). */
  int wildcard = family == 6 ? IN6_IS_ADDR_UNSPECIFIED(&((struct sockaddr_in6 *)&sa)->sin6_addr) : ((struct sockaddr_in *)&sa)->sin_addr.s_addr == htonl(INADDR_ANY);
  if (wildcard) {
    u->recv_control = calloc((size_t)slots, CONTROL_BYTES);
    u->send_control = calloc((size_t)slots, CONTROL_BYTES);
    u->pktinfo = u->recv_control && u->send_control &&
                 (family == 6 ? setsockopt(fd, IPPROTO_IPV6, IPV6_RECVPKTINFO, &on, sizeof on) : setsockopt(fd, IPPROTO_IP, IP_PKTINFO, &on, sizeof on)) == 0;
  }
  napi_value data, meta_buffer, meta, addrs, last_text, handle, name;
  void *data_bytes = NULL, *meta_bytes = NULL;
  if (!u->recv_msgs || !u->send_msgs || !u->recv_iov || !u->send_iov || !u->peers ||
      napi_create_buffer(env, (size_t)slots * SLOT_BYTES, &data_bytes, &data) != napi_ok ||
      napi_create_arraybuffer(env, (size_t)slots * META_INTS * sizeof(int32_t), &meta_bytes, &meta_buffer) != napi_ok) {
    close(fd);
    u->poll_closed = u->finalized = 1;
    free_if_done(u);
    return throw_errno(env, ENOMEM, "open");
  }
  /* Both are node-owned memory that JS may keep after close; C writes into them only while open (refs held). */
  u->meta = meta_bytes;
  napi_create_typedarray(env, napi_int32_array, (size_t)slots * META_INTS, meta_buffer, 0, &meta);
  napi_create_array_with_length(env, (size_t)slots, &addrs);
  napi_create_array_with_length(env, 1, &last_text);
  for (int i = 0; i < slots; i++) {
    u->recv_iov[i].iov_base = (unsigned char *)data_bytes + (size_t)i * SLOT_BYTES;
    u->recv_iov[i].iov_len = SLOT_BYTES;
    u->recv_msgs[i].msg_hdr.msg_iov = &u->recv_iov[i];
    u->recv_msgs[i].msg_hdr.msg_iovlen = 1;
    u->recv_msgs[i].msg_hdr.msg_name = &u->peers[i];
    if (u->pktinfo) u->recv_msgs[i].msg_hdr.msg_control = u->recv_control + (size_t)i * CONTROL_BYTES;
  }
  napi_create_reference(env, data, 1, &u->data_ref);
  napi_create_reference(env, meta, 1, &u->meta_ref);
  napi_create_reference(env, addrs, 1, &u->addrs_ref);
  napi_create_reference(env, last_text, 1, &u->last_text);
  napi_create_reference(env, argv[4], 1, &u->on_batch);
  napi_create_external(env, u, finalize, NULL, &handle);
  napi_create_reference(env, handle, 1, &u->self);
  napi_create_string_utf8(env, "egress-guard:udp-batch", NAPI_AUTO_LENGTH, &name);
  napi_async_init(env, handle, name, &u->async);
  uv_poll_init_socket(loop, &u->poll, fd);
  u->poll.data = u;
  napi_add_async_cleanup_hook(env, on_env_teardown, u, &u->cleanup_hook);
  int err = uv_poll_start(&u->poll, UV_READABLE, on_readable);
  if (err != 0) {
    do_close(env, u);
    napi_throw_error(env, "EIO", uv_strerror(err));
    return NULL;
  }
  return handle;
}

/* The udp_batch of a call whose only argument is a handle; NULL with a TypeError thrown when it is not one. */
static udp_batch *handle_arg(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value argv[1];
  if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok || argc < 1) {
    napi_throw_type_error(env, "EINVAL", "expected a handle from open()");
    return NULL;
  }
  return unwrap(env, argv[0]);
}

static napi_value get_ref(napi_env env, napi_callback_info info, size_t which) {
  napi_value value;
  udp_batch *u = handle_arg(env, info);
  if (!u) return NULL;
  if (u->closed) {
    napi_throw_error(env, "ERR_SOCKET_DGRAM_NOT_RUNNING", "the socket is closed");
    return NULL;
  }
  napi_ref ref = which == 0 ? u->data_ref : which == 1 ? u->meta_ref : u->addrs_ref;
  napi_get_reference_value(env, ref, &value);
  return value;
}

static napi_value js_data(napi_env env, napi_callback_info info) { return get_ref(env, info, 0); }
static napi_value js_meta(napi_env env, napi_callback_info info) { return get_ref(env, info, 1); }
static napi_value js_addresses(napi_env env, napi_callback_info info) { return get_ref(env, info, 2); }

static napi_value js_port(napi_env env, napi_callback_info info) {
  napi_value result;
  udp_batch *u = handle_arg(env, info);
  if (!u) return NULL;
  struct sockaddr_storage sa;
  socklen_t len = sizeof sa;
  if (u->closed || getsockname(u->fd, (struct sockaddr *)&sa, &len) != 0) return throw_errno(env, u->closed ? EBADF : errno, "getsockname");
  napi_create_int32(env, peer_port(&sa), &result);
  return result;
}

static napi_value js_send_to(napi_env env, napi_callback_info info) {
  size_t argc = 5;
  napi_value argv[5], result;
  int32_t local = -1;
  char address[ADDRESS_TEXT_BYTES];
  size_t address_len;
  int32_t port;
  void *bytes;
  size_t length;
  bool is_buffer = false;
  if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok || argc < 4) return NULL;
  udp_batch *u = unwrap(env, argv[0]);
  if (!u) return NULL;
  if (napi_is_buffer(env, argv[1], &is_buffer) != napi_ok || !is_buffer || napi_get_buffer_info(env, argv[1], &bytes, &length) != napi_ok ||
      napi_get_value_string_latin1(env, argv[2], address, sizeof address, &address_len) != napi_ok || napi_get_value_int32(env, argv[3], &port) != napi_ok ||
      port <= 0 || port > 65535 || (argc >= 5 && napi_get_value_int32(env, argv[4], &local) != napi_ok)) {
    napi_throw_type_error(env, "EINVAL", "sendTo(handle, buffer, address, port[, local])");
    return NULL;
  }
  int ok = 0;
  if (!u->closed) {
    struct sockaddr_storage sa;
    socklen_t sa_len;
    /* A v4 client of a dual-stack v6 socket arrives as ::ffff:a.b.c.d, which parses as v6. */
    int family = u->family == 6 ? 6 : 4;
    if (make_sockaddr(family, address, port, &sa, &sa_len)) {
      struct iovec iov = {.iov_base = bytes, .iov_len = length};
      struct msghdr h;
      /* Aligned for the cmsghdr written at its start (the per-slot buffers are malloc's, aligned already). */
      union {
        struct cmsghdr align;
        unsigned char bytes[CONTROL_BYTES];
      } control;
      memset(&h, 0, sizeof h);
      h.msg_name = &sa;
      h.msg_namelen = sa_len;
      h.msg_iov = &iov;
      h.msg_iovlen = 1;
      send_from(u, &h, local, control.bytes);
      ssize_t r;
      do r = sendmsg(u->fd, &h, 0);
      while (r < 0 && errno == EINTR);
      /* Refused with its source address (gone since the query came): from the kernel's pick, as send_all does. */
      if (r < 0 && h.msg_controllen > 0 && errno != EAGAIN && errno != EWOULDBLOCK) {
        h.msg_control = NULL;
        h.msg_controllen = 0;
        do r = sendmsg(u->fd, &h, 0);
        while (r < 0 && errno == EINTR);
      }
      ok = r >= 0;
    }
    if (ok) u->sent++;
    else u->send_errors++;
  }
  napi_get_boolean(env, ok, &result);
  return result;
}

static napi_value js_close(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value argv[1];
  if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok || argc < 1) return NULL;
  udp_batch *u = unwrap(env, argv[0]);
  if (u) do_close(env, u);
  return NULL;
}

static void set_number(napi_env env, napi_value object, const char *name, double value) {
  napi_value v;
  napi_create_double(env, value, &v);
  napi_set_named_property(env, object, name, v);
}

static napi_value js_stats(napi_env env, napi_callback_info info) {
  napi_value result;
  udp_batch *u = handle_arg(env, info);
  if (!u) return NULL;
  napi_create_object(env, &result);
  set_number(env, result, "batches", u->batches);
  set_number(env, result, "datagrams", u->datagrams);
  set_number(env, result, "sent", u->sent);
  set_number(env, result, "sendErrors", u->send_errors);
  set_number(env, result, "truncated", u->truncated);
  set_number(env, result, "addressTexts", u->address_texts);
  return result;
}

NAPI_MODULE_INIT() {
  const struct {
    const char *name;
    napi_callback cb;
  } fns[] = {{"open", js_open}, {"data", js_data}, {"meta", js_meta}, {"addresses", js_addresses}, {"port", js_port}, {"sendTo", js_send_to}, {"close", js_close}, {"stats", js_stats}};
  for (size_t i = 0; i < sizeof fns / sizeof fns[0]; i++) {
    napi_value fn;
    napi_create_function(env, fns[i].name, NAPI_AUTO_LENGTH, fns[i].cb, NULL, &fn);
    napi_set_named_property(env, exports, fns[i].name, fn);
  }
  return exports;
}
