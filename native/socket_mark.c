/*
 * Socket marks (SO_MARK) for egress-guard's own outbound sockets. The redirect rules exempt egress-guard's
 * traffic by uid AND mark: a job that takes egress-guard's uid (root with CAP_SETUID) still lacks the mark,
 * which only CAP_NET_ADMIN (or CAP_NET_RAW since Linux 5.17) may set and which is random per start.
 *
 *   tcpSocket(family, mark) -> fd   a non-blocking, close-on-exec TCP socket of family 4 or 6, marked before its
 *                                   first packet (a SYN carries the mark; node creates its sockets inside connect())
 *   setMark(fd, mark)               mark an existing socket (UDP: every datagram sent afterwards carries it)
 * Errors are thrown with `code` set to the errno name (EPERM: the process lacks the capability).
 */
#include <node_api.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

static napi_value throw_errno(napi_env env, int err, const char *what) {
  char message[160];
  snprintf(message, sizeof message, "%s: %s", what, strerror(err));
  const char *code = err == EPERM ? "EPERM" : err == EBADF ? "EBADF" : err == ENOTSOCK ? "ENOTSOCK" : err == EAFNOSUPPORT ? "EAFNOSUPPORT"
                   : err == EMFILE ? "EMFILE" : err == ENFILE ? "ENFILE" : "EIO";
  napi_throw_error(env, code, message);
  return NULL;
}

/* Reads argv[0] as an int32 and argv[1] as a uint32 mark; false (with a TypeError thrown) when they are not. */
static int read_args(napi_env env, napi_callback_info info, const char *usage, int32_t *first, uint32_t *mark) {
  size_t argc = 2;
  napi_value argv[2];
  if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok || argc < 2 || napi_get_value_int32(env, argv[0], first) != napi_ok ||
      napi_get_value_uint32(env, argv[1], mark) != napi_ok) {
    napi_throw_type_error(env, "EINVAL", usage);
    return 0;
  }
  return 1;
}

static napi_value tcp_socket(napi_env env, napi_callback_info info) {
  int32_t family;
  uint32_t mark;
  if (!read_args(env, info, "tcpSocket(family, mark): family 4 or 6, mark a uint32", &family, &mark)) return NULL;
  if (family != 4 && family != 6) {
    napi_throw_type_error(env, "EINVAL", "tcpSocket(family, mark): family must be 4 or 6");
    return NULL;
  }
  int fd = socket(family == 6 ? AF_INET6 : AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0) return throw_errno(env, errno, "socket");
  if (setsockopt(fd, SOL_SOCKET, SO_MARK, &mark, sizeof mark) != 0) {
    int err = errno;
    close(fd);
    return throw_errno(env, err, "setsockopt(SO_MARK)");
  }
  napi_value result;
  napi_create_int32(env, fd, &result);
  return result;
}

static napi_value set_mark(napi_env env, napi_callback_info info) {
  int32_t fd;
  uint32_t mark;
  if (!read_args(env, info, "setMark(fd, mark): fd a non-negative integer, mark a uint32", &fd, &mark)) return NULL;
  if (fd < 0) return throw_errno(env, EBADF, "setMark");
  if (setsockopt(fd, SOL_SOCKET, SO_MARK, &mark, sizeof mark) != 0) return throw_errno(env, errno, "setsockopt(SO_MARK)");
  return NULL;
}

NAPI_MODULE_INIT() {
  napi_value fn;
  napi_create_function(env, "tcpSocket", NAPI_AUTO_LENGTH, tcp_socket, NULL, &fn);
  napi_set_named_property(env, exports, "tcpSocket", fn);
  napi_create_function(env, "setMark", NAPI_AUTO_LENGTH, set_mark, NULL, &fn);
  napi_set_named_property(env, exports, "setMark", fn);
  return exports;
}
