/*
 * The kernel's NFLOG reports (nfnetlink_log) read without ulogd: what the redirect rules refuse or report (UDP
 * other than DNS, ICMP, answers to outside hosts) as packets, for `egress-guard rules log-reader`, a root process
 * like ulogd (binding a group needs CAP_NET_ADMIN). GitHub's runner images do not ship ulogd.
 *
 *   open(group, copyRange) -> fd      a netlink socket bound to the NFLOG group, copying the first copyRange bytes
 *                                     of each packet (the IP and transport headers are enough)
 *   read(fd, timeoutMs) -> { packets, overflowsBefore }
 *                                     waits up to timeoutMs for reports, then takes every one queued (at most 256);
 *                                     packets: [{ family, prefix, uid, seq?, payload }] (uid -1 when the packet had
 *                                     no socket owner: the kernel sent it; seq: the report's NFULA_SEQ, absent when
 *                                     the kernel gave none); overflowsBefore: one entry per ENOBUFS the read met (the
 *                                     socket's queue overflowed, reports were dropped), the number of packets read
 *                                     before it, so that netlog/nflog-sequence.ts can place it among the numbers
 *   close(fd)
 * Errors are thrown with `code` set to the errno name (EPERM without CAP_NET_ADMIN, and when another process, ulogd,
 * holds the group).
 */
#include <node_api.h>
#include <arpa/inet.h>
#include <errno.h>
#include <linux/netfilter/nfnetlink.h>
#include <linux/netfilter/nfnetlink_log.h>
#include <linux/netlink.h>
#include <poll.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>
#include "napi_errno.h"

#define MAX_PACKETS 256
#define RECV_BUFFER 65536

static napi_value throw_code(napi_env env, int err, const char *what) {
  if (err == ENOBUFS || err == EPROTONOSUPPORT || err == ETIMEDOUT) {
    char message[200];
    snprintf(message, sizeof message, "%s: %s", what, strerror(err));
    napi_throw_error(env, err == ENOBUFS ? "ENOBUFS" : err == ETIMEDOUT ? "ETIMEDOUT" : "EPROTONOSUPPORT", message);
    return NULL;
  }
  return throw_errno(env, err, what);
}

/* One attribute of a config message. */
struct config_attr {
  uint16_t type;
  const void *data;
  uint16_t len; /* at most 16 */
};

/* One config message (a command, the mode, ...: up to 4 attributes, which the kernel applies in one go) to the
   kernel, and its acknowledgement; 0 or an errno. */
static int configure(int fd, uint16_t group, uint8_t family, const struct config_attr *attrs, size_t count) {
  char buffer[NLMSG_SPACE(sizeof(struct nfgenmsg) + 4 * (NLA_HDRLEN + 16))];
  if (count > 4) return EINVAL;
  memset(buffer, 0, sizeof buffer);
  struct nlmsghdr *nlh = (struct nlmsghdr *)buffer;
  nlh->nlmsg_type = (NFNL_SUBSYS_ULOG << 8) | NFULNL_MSG_CONFIG;
  nlh->nlmsg_flags = NLM_F_REQUEST | NLM_F_ACK;
  nlh->nlmsg_seq = 1;
  struct nfgenmsg *gen = (struct nfgenmsg *)NLMSG_DATA(nlh);
  gen->nfgen_family = family;
  gen->version = NFNETLINK_V0;
  gen->res_id = htons(group);
  size_t length = NLMSG_ALIGN(sizeof(struct nfgenmsg));
  for (size_t i = 0; i < count; i++) {
    if (attrs[i].len > 16) return EINVAL;
    struct nlattr *nla = (struct nlattr *)((char *)gen + length);
    nla->nla_type = attrs[i].type;
    nla->nla_len = NLA_HDRLEN + attrs[i].len;
    memcpy((char *)nla + NLA_HDRLEN, attrs[i].data, attrs[i].len);
    length += NLA_ALIGN(nla->nla_len);
  }
  nlh->nlmsg_len = NLMSG_LENGTH(length);
  struct sockaddr_nl kernel = {.nl_family = AF_NETLINK};
  if (sendto(fd, buffer, nlh->nlmsg_len, 0, (struct sockaddr *)&kernel, sizeof kernel) < 0) return errno;
  char answer[1024];
  for (;;) {
    struct pollfd p = {.fd = fd, .events = POLLIN};
    int ready = poll(&p, 1, 2000);
    if (ready < 0 && errno == EINTR) continue;
    if (ready <= 0) return ready == 0 ? ETIMEDOUT : errno;
    ssize_t n = recv(fd, answer, sizeof answer, 0);
    if (n < 0) return errno;
    for (struct nlmsghdr *h = (struct nlmsghdr *)answer; NLMSG_OK(h, (size_t)n); h = NLMSG_NEXT(h, n)) {
      if (h->nlmsg_type != NLMSG_ERROR) continue; /* a report that came early: dropped, the reader starts after this */
      const struct nlmsgerr *e = (const struct nlmsgerr *)NLMSG_DATA(h);
      return e->error == 0 ? 0 : -e->error;
    }
  }
}

static int command(int fd, uint16_t group, uint8_t family, uint8_t cmd) {
  struct nfulnl_msg_config_cmd c = {.command = cmd};
  struct config_attr attr = {NFULA_CFG_CMD, &c, sizeof c};
  return configure(fd, group, family, &attr, 1);
}

/*
 * Binds the group and configures it in one message: copy mode and range, each report sent at once (a queue
 * threshold of 1; the kernel's default holds up to 100 for up to a second), and a sequence number on each report
 * (NFULNL_CFG_F_SEQ). What the numbers are worth, from the kernel's net/netfilter/nfnetlink_log.c (the same from
 * 2.6.14 to 6.x):
 *  - nfulnl_recv_config applies the command first (BIND: instance_create, a kzalloc'ed instance whose counter
 *    `seq` starts at 0), then the mode, the threshold and the flags, all in this one call;
 *  - __build_packet_message puts NFULA_SEQ = htonl(inst->seq++) into each message it builds, whatever becomes of
 *    the message afterwards: a message (or a batch of them, when a threshold above 1 holds several in one skb)
 *    that nfnetlink_unicast cannot queue on the reader's socket (its queue full: the socket then reports ENOBUFS)
 *    is freed with its number used. A gap between two consecutive numbers is therefore the exact number of
 *    reports built and not delivered, whatever the threshold. The counter is a u32 and wraps.
 *  - What it cannot count: a report never built (nfulnl_log_packet's alloc_failure when the kernel has no memory
 *    for the message, "FIXME: statistics"), and the reports of a drop no later report follows (the gap shows only
 *    when the next report arrives). A message built in the instant between BIND and the flags taking effect has
 *    no NFULA_SEQ and uses no number.
 */
static int bind_group(int fd, uint16_t group, uint32_t range) {
  struct nfulnl_msg_config_cmd bind = {.command = NFULNL_CFG_CMD_BIND};
  struct nfulnl_msg_config_mode mode = {.copy_range = htonl(range), .copy_mode = NFULNL_COPY_PACKET};
  uint32_t one = htonl(1);
  uint16_t flags = htons(NFULNL_CFG_F_SEQ);
  struct config_attr attrs[] = {
      {NFULA_CFG_CMD, &bind, sizeof bind},
      {NFULA_CFG_MODE, &mode, sizeof mode},
      {NFULA_CFG_QTHRESH, &one, sizeof one},
      {NFULA_CFG_FLAGS, &flags, sizeof flags},
  };
  return configure(fd, group, AF_UNSPEC, attrs, sizeof attrs / sizeof attrs[0]);
}

static napi_value nflog_open(napi_env env, napi_callback_info info) {
  size_t argc = 2;
  napi_value argv[2];
  uint32_t group, range;
  if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok || argc < 2 || napi_get_value_uint32(env, argv[0], &group) != napi_ok ||
      napi_get_value_uint32(env, argv[1], &range) != napi_ok || group > 65535 || range < 40 || range > 65535) {
    napi_throw_type_error(env, "EINVAL", "open(group, copyRange): group 0-65535, copyRange 40-65535");
    return NULL;
  }
  int fd = socket(AF_NETLINK, SOCK_RAW | SOCK_CLOEXEC, NETLINK_NETFILTER);
  if (fd < 0) return throw_code(env, errno, "socket(NETLINK_NETFILTER)");
  int size = 4 << 20;
  /* A large queue: a burst of reports waits here rather than being lost (SO_RCVBUFFORCE needs CAP_NET_ADMIN, which
     a reader has; the plain option is the fallback). */
  if (setsockopt(fd, SOL_SOCKET, SO_RCVBUFFORCE, &size, sizeof size) != 0) setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &size, sizeof size);
  struct sockaddr_nl local = {.nl_family = AF_NETLINK};
  if (bind(fd, (struct sockaddr *)&local, sizeof local) != 0) {
    int err = errno;
    close(fd);
    return throw_code(env, err, "bind(netlink)");
  }
  /* Kernels before 3.17 want the families bound first; later ones accept and ignore it. */
  command(fd, 0, AF_INET, NFULNL_CFG_CMD_PF_BIND);
  command(fd, 0, AF_INET6, NFULNL_CFG_CMD_PF_BIND);
  int err = bind_group(fd, (uint16_t)group, range);
  if (err != 0) {
    close(fd);
    /* EPERM here also when another process (ulogd?) holds the group: the kernel refuses a second owner so. */
    return throw_code(env, err, "NFLOG group bind (root with CAP_NET_ADMIN, and no other reader such as ulogd on the group)");
  }
  napi_value result;
  napi_create_int32(env, fd, &result);
  return result;
}

static void set_named(napi_env env, napi_value object, const char *name, napi_value value) { napi_set_named_property(env, object, name, value); }

/* A big-endian u32 attribute's value, or `otherwise` when it is too short to hold one. */
static int64_t be32_or(const char *data, size_t len, int64_t otherwise) {
  if (len < 4) return otherwise;
  uint32_t v;
  memcpy(&v, data, 4);
  return ntohl(v);
}

/* The packet report at `h` as an object, or NULL when it is not one (a stray message). */
static napi_value packet_of(napi_env env, const struct nlmsghdr *h) {
  if (h->nlmsg_type != ((NFNL_SUBSYS_ULOG << 8) | NFULNL_MSG_PACKET)) return NULL;
  if (h->nlmsg_len < NLMSG_LENGTH(sizeof(struct nfgenmsg))) return NULL;
  const struct nfgenmsg *gen = (const struct nfgenmsg *)NLMSG_DATA(h);
  const char *at = (const char *)gen + NLMSG_ALIGN(sizeof(struct nfgenmsg));
  const char *end = (const char *)h + h->nlmsg_len;
  const char *prefix = NULL, *payload = NULL;
  size_t prefix_len = 0, payload_len = 0;
  int64_t uid = -1;
  int64_t seq = -1; /* -1: no NFULA_SEQ */
  while (at + NLA_HDRLEN <= end) {
    const struct nlattr *nla = (const struct nlattr *)at;
    if (nla->nla_len < NLA_HDRLEN || at + nla->nla_len > end) break;
    const char *data = at + NLA_HDRLEN;
    size_t len = nla->nla_len - NLA_HDRLEN;
    switch (nla->nla_type & NLA_TYPE_MASK) {
    case NFULA_PREFIX:
      prefix = data;
      prefix_len = strnlen(data, len); /* NUL-terminated by the kernel; never read past the attribute */
      break;
    case NFULA_PAYLOAD:
      payload = data;
      payload_len = len;
      break;
    case NFULA_UID:
      uid = be32_or(data, len, uid);
      break;
    case NFULA_SEQ:
      seq = be32_or(data, len, seq);
      break;
    }
    at += NLA_ALIGN(nla->nla_len);
  }
  napi_value object, value;
  napi_create_object(env, &object);
  napi_create_uint32(env, gen->nfgen_family, &value);
  set_named(env, object, "family", value);
  napi_create_string_utf8(env, prefix ? prefix : "", prefix ? prefix_len : 0, &value);
  set_named(env, object, "prefix", value);
  napi_create_int64(env, uid, &value);
  set_named(env, object, "uid", value);
  if (seq >= 0) {
    napi_create_uint32(env, (uint32_t)seq, &value);
    set_named(env, object, "seq", value);
  }
  void *copy;
  napi_create_buffer_copy(env, payload_len, payload ? payload : "", &copy, &value);
  set_named(env, object, "payload", value);
  return object;
}

static napi_value nflog_read(napi_env env, napi_callback_info info) {
  size_t argc = 2;
  napi_value argv[2];
  int32_t fd, timeout;
  if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok || argc < 2 || napi_get_value_int32(env, argv[0], &fd) != napi_ok ||
      napi_get_value_int32(env, argv[1], &timeout) != napi_ok || timeout < 0) {
    napi_throw_type_error(env, "EINVAL", "read(fd, timeoutMs)");
    return NULL;
  }
  napi_value packets, overflows, result, value;
  napi_create_array(env, &packets);
  napi_create_array(env, &overflows);
  uint32_t count = 0, overflow_count = 0;
  static char buffer[RECV_BUFFER];
  struct pollfd p = {.fd = fd, .events = POLLIN};
  int ready = poll(&p, 1, timeout);
  if (ready < 0 && errno != EINTR) return throw_code(env, errno, "poll(netlink)");
  while (ready > 0 && count < MAX_PACKETS && overflow_count < MAX_PACKETS) {
    ssize_t n = recv(fd, buffer, sizeof buffer, MSG_DONTWAIT);
    if (n < 0) {
      if (errno == EINTR) continue;
      if (errno == ENOBUFS) {
        /* The socket's queue overflowed: reports were dropped, how many ENOBUFS does not say (the gap in the
           reports' numbers does). The kernel reports it before what is still queued (sock_error comes first in
           __skb_try_recv_datagram), so the reports read next are older than the drop. */
        napi_create_uint32(env, count, &value);
        napi_set_element(env, overflows, overflow_count++, value);
        continue;
      }
      if (errno == EAGAIN || errno == EWOULDBLOCK) break;
      return throw_code(env, errno, "recv(netlink)");
    }
    for (struct nlmsghdr *h = (struct nlmsghdr *)buffer; NLMSG_OK(h, (size_t)n); h = NLMSG_NEXT(h, n)) {
      napi_value packet = packet_of(env, h);
      if (packet) napi_set_element(env, packets, count++, packet);
    }
  }
  napi_create_object(env, &result);
  set_named(env, result, "packets", packets);
  set_named(env, result, "overflowsBefore", overflows);
  return result;
}

static napi_value nflog_close(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value argv[1];
  int32_t fd;
  if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok || argc < 1 || napi_get_value_int32(env, argv[0], &fd) != napi_ok) {
    napi_throw_type_error(env, "EINVAL", "close(fd)");
    return NULL;
  }
  close(fd);
  return NULL;
}

static napi_value init(napi_env env, napi_value exports) {
  napi_property_descriptor properties[] = {
      {"open", NULL, nflog_open, NULL, NULL, NULL, napi_default, NULL},
      {"read", NULL, nflog_read, NULL, NULL, NULL, napi_default, NULL},
      {"close", NULL, nflog_close, NULL, NULL, NULL, napi_default, NULL},
  };
  napi_define_properties(env, exports, sizeof properties / sizeof properties[0], properties);
  return exports;
}

NAPI_MODULE(NODE_GYP_MODULE_NAME, init)
