/*
 * Tessera: the Unix peer credentials of a connected AF_UNIX stream socket (SO_PEERCRED).
 *
 * Node has no public API for this. The kernel records the connecting process's pid, uid and gid
 * at connect() time; getsockopt(SO_PEERCRED) returns that record, so the answer cannot be forged by
 * the peer and does not change if the peer later forks, execs or passes the descriptor on.
 *
 * JS: peerCredentials(fd: number) -> { pid: number, uid: number, gid: number }
 * Throws an Error (code "ENOTSUP", "EINVAL", "ENOTSOCK", "EBADF", ...) when the descriptor is not a
 * connected AF_UNIX stream socket or the platform has no SO_PEERCRED. Linux only.
 */
#define _GNU_SOURCE
#define NAPI_VERSION 8
#include <node_api.h>

#include <errno.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/types.h>
#include <unistd.h>

static napi_value throw_errno(napi_env env, int err, const char *what) {
  const char *code = "EIO";
  switch (err) {
    case EBADF: code = "EBADF"; break;
    case ENOTSOCK: code = "ENOTSOCK"; break;
    case EINVAL: code = "EINVAL"; break;
    case ENOTCONN: code = "ENOTCONN"; break;
    case ENOPROTOOPT: code = "ENOPROTOOPT"; break;
    case ENOTSUP: code = "ENOTSUP"; break;
    default: break;
  }
  napi_throw_error(env, code, what);
  return NULL;
}

static napi_value peer_credentials(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value argv[1];
  if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok || argc != 1) {
    napi_throw_type_error(env, "EINVAL", "peerCredentials(fd) takes one argument");
    return NULL;
  }
  int32_t fd = -1;
  if (napi_get_value_int32(env, argv[0], &fd) != napi_ok || fd < 0) {
    napi_throw_type_error(env, "EINVAL", "fd must be a non-negative integer");
    return NULL;
  }
#if defined(__linux__) && defined(SO_PEERCRED)
  /* Only a Unix stream socket has meaningful peer credentials: refuse anything else. */
  int domain = 0, type = 0;
  socklen_t len = sizeof(domain);
  if (getsockopt(fd, SOL_SOCKET, SO_DOMAIN, &domain, &len) != 0) return throw_errno(env, errno, "getsockopt(SO_DOMAIN) failed");
  if (domain != AF_UNIX) return throw_errno(env, EINVAL, "not an AF_UNIX socket");
  len = sizeof(type);
  if (getsockopt(fd, SOL_SOCKET, SO_TYPE, &type, &len) != 0) return throw_errno(env, errno, "getsockopt(SO_TYPE) failed");
  if (type != SOCK_STREAM) return throw_errno(env, EINVAL, "not a stream socket");

  struct ucred cred;
  memset(&cred, 0, sizeof(cred));
  len = sizeof(cred);
  if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &len) != 0) return throw_errno(env, errno, "getsockopt(SO_PEERCRED) failed");
  if (len != sizeof(cred)) return throw_errno(env, EINVAL, "short SO_PEERCRED answer");
  /* pid 0 means the kernel has no peer (socketpair from another namespace, or not connected). */
  if (cred.pid <= 0) return throw_errno(env, ENOTCONN, "no peer process recorded");

  napi_value out, pid, uid, gid;
  if (napi_create_object(env, &out) != napi_ok ||
      napi_create_int64(env, (int64_t)cred.pid, &pid) != napi_ok ||
      napi_create_int64(env, (int64_t)cred.uid, &uid) != napi_ok ||
      napi_create_int64(env, (int64_t)cred.gid, &gid) != napi_ok ||
      napi_set_named_property(env, out, "pid", pid) != napi_ok ||
      napi_set_named_property(env, out, "uid", uid) != napi_ok ||
      napi_set_named_property(env, out, "gid", gid) != napi_ok) {
    napi_throw_error(env, "EIO", "cannot build the result");
    return NULL;
  }
  return out;
#else
  (void)fd;
  return throw_errno(env, ENOTSUP, "SO_PEERCRED is not supported on this platform");
#endif
}

static napi_value init(napi_env env, napi_value exports) {
  napi_value fn;
  if (napi_create_function(env, "peerCredentials", NAPI_AUTO_LENGTH, peer_credentials, NULL, &fn) != napi_ok) return NULL;
  if (napi_set_named_property(env, exports, "peerCredentials", fn) != napi_ok) return NULL;
  return exports;
}

NAPI_MODULE(NODE_GYP_MODULE_NAME, init)
