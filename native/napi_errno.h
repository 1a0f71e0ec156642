/*
 * Throwing an errno as a JS Error whose `code` is the errno's name, shared by the addons of native/binding.gyp
 * (each addon is its own compilation unit; this header is included, not linked).
 */
#ifndef EGRESS_GUARD_NAPI_ERRNO_H
#define EGRESS_GUARD_NAPI_ERRNO_H
#include <node_api.h>
#include <errno.h>
#include <stdio.h>
#include <string.h>

static const char *errno_code(int err) {
  switch (err) {
  case EBADF: return "EBADF";
  case ENOTSOCK: return "ENOTSOCK";
  case EMFILE: return "EMFILE";
  case ENFILE: return "ENFILE";
  case ENOMEM: return "ENOMEM";
  case EEXIST: return "EEXIST";
  case EINVAL: return "EINVAL";
  case EPERM: return "EPERM";
  case EACCES: return "EACCES";
  case EADDRINUSE: return "EADDRINUSE";
  case EADDRNOTAVAIL: return "EADDRNOTAVAIL";
  case EAFNOSUPPORT: return "EAFNOSUPPORT";
  default: return "EIO";
  }
}

static napi_value throw_errno(napi_env env, int err, const char *what) {
  char message[160];
  snprintf(message, sizeof message, "%s: %s", what, strerror(err));
  napi_throw_error(env, errno_code(err), message);
  return NULL;
}
#endif
