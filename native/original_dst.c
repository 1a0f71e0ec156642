/*
 * originalDestination(fd): the destination a connection had before netfilter REDIRECT/DNAT rewrote it,
 * read with getsockopt(SO_ORIGINAL_DST) (IPv4) or getsockopt(IP6T_SO_ORIGINAL_DST) (IPv6) on the accepted
 * socket. Returns { address, port, family } or throws an Error whose `code` is the errno name
 * (ENOENT: no conntrack entry, the connection was not redirected).
 */
#include <node_api.h>
#include <arpa/inet.h>
#include <errno.h>
#include <stdio.h>
#include <netinet/in.h>
#include <string.h>
#include <sys/socket.h>

/* From linux/netfilter_ipv4.h and linux/netfilter_ipv6/ip6_tables.h; those headers clash with netinet/in.h. */
#ifndef SO_ORIGINAL_DST
#define SO_ORIGINAL_DST 80
#endif
#ifndef IP6T_SO_ORIGINAL_DST
#define IP6T_SO_ORIGINAL_DST 80
#endif

static napi_value throw_errno(napi_env env, int err, const char *what) {
  char message[160];
  snprintf(message, sizeof message, "%s: %s", what, strerror(err));
  const char *code = err == ENOENT ? "ENOENT" : err == ENOPROTOOPT ? "ENOPROTOOPT" : err == EBADF ? "EBADF"
                   : err == ENOTSOCK ? "ENOTSOCK" : "EIO";
  napi_throw_error(env, code, message);
  return NULL;
}

static napi_value make_result(napi_env env, const char *address, unsigned port, int family) {
  napi_value result, value;
  napi_create_object(env, &result);
  napi_create_string_utf8(env, address, NAPI_AUTO_LENGTH, &value);
  napi_set_named_property(env, result, "address", value);
  napi_create_uint32(env, port, &value);
  napi_set_named_property(env, result, "port", value);
  napi_create_uint32(env, (uint32_t)family, &value);
  napi_set_named_property(env, result, "family", value);
  return result;
}

static napi_value original_destination(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value argv[1];
  int32_t fd = -1;
  if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok || argc < 1 ||
      napi_get_value_int32(env, argv[0], &fd) != napi_ok || fd < 0) {
    napi_throw_type_error(env, "EINVAL", "originalDestination(fd): fd must be a non-negative integer");
    return NULL;
  }

  struct sockaddr_storage local;
  socklen_t local_len = sizeof local;
  if (getsockname(fd, (struct sockaddr *)&local, &local_len) != 0) return throw_errno(env, errno, "getsockname");

  char text[INET6_ADDRSTRLEN];
  if (local.ss_family == AF_INET6) {
    struct sockaddr_in6 dst;
    socklen_t len = sizeof dst;
    memset(&dst, 0, sizeof dst);
    if (getsockopt(fd, SOL_IPV6, IP6T_SO_ORIGINAL_DST, &dst, &len) == 0) {
      inet_ntop(AF_INET6, &dst.sin6_addr, text, sizeof text);
      return make_result(env, text, ntohs(dst.sin6_port), 6);
    }
    /* An IPv4 connection accepted on a dual-stack socket: fall through to the IPv4 option. */
    if (errno != ENOENT && errno != ENOPROTOOPT) return throw_errno(env, errno, "getsockopt(IP6T_SO_ORIGINAL_DST)");
  }
  struct sockaddr_in dst4;
  socklen_t len4 = sizeof dst4;
  memset(&dst4, 0, sizeof dst4);
  if (getsockopt(fd, SOL_IP, SO_ORIGINAL_DST, &dst4, &len4) != 0) return throw_errno(env, errno, "getsockopt(SO_ORIGINAL_DST)");
  inet_ntop(AF_INET, &dst4.sin_addr, text, sizeof text);
  return make_result(env, text, ntohs(dst4.sin_port), 4);
}

NAPI_MODULE_INIT() {
  napi_value fn;
  napi_create_function(env, "originalDestination", NAPI_AUTO_LENGTH, original_destination, NULL, &fn);
  napi_set_named_property(env, exports, "originalDestination", fn);
  return exports;
}
