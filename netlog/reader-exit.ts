/**
 * `egress-guard rules log-reader`'s exit status when the kernel refused it the NFLOG group (EPERM at the group's
 * bind: another process, an earlier reader or ulogd, holds it, or no CAP_NET_ADMIN). The GitHub Action then does not
 * try ulogd, which the kernel refuses the same way a moment after it has written its pid file (ulogd binds after),
 * and says that nobody reads the group, instead of naming ulogd as the reader.
 */
export const NFLOG_GROUP_REFUSED_EXIT = 3;
