/*
 * The kernel data plane of a decided tunnel (net/kernel-relay.ts): one background thread with its own epoll set
 * moves bytes between two TCP sockets with splice(2) through pipes, so bulk bytes never enter JavaScript.
 *
 *   init(onDone)                         once: starts the thread; onDone(id, bytesIn, bytesOut, reason, errno) is
 *                                        called on the JS thread once per relay that ends by itself
 *   start(clientFd, upstreamFd, idleMs, halfCloseMs) -> id
 *   cancel(id) -> [bytesIn, bytesOut, reason, errno] | undefined
 *                                        takes the relay out of the thread synchronously (waits while the thread is
 *                                        working on it); afterwards the thread never touches its fds again, so the
 *                                        caller may close them. undefined: unknown id (already reported or cancelled)
 *   stats() -> { relays, started, pipes, sparePipes, onMainLoop, movedToThread }
 *                                        open relays, relays ever started, pipes open, of them spare; relays on the
 *                                        main thread's loop now, relays ever moved from it to the thread
 *   mainLoopBytes(n)                     relays started from now on move their first n bytes (both ways together) on
 *                                        node's own event loop (below), then go to the thread; 0: the thread at once
 * Reasons: 0 both directions ended (FIN each way), 1 client error, 2 upstream error (errno set), 3 idle timeout,
 * 4 half-close timeout. bytesIn: upstream -> client; bytesOut: client -> upstream.
 *
 * The upstream side opened here (issue 14: no JavaScript socket for the upstream of a decided CONNECT tunnel):
 *   connect(family, address, port, mark, timeoutMs) -> id
 *                                        a non-blocking TCP socket (TCP_NODELAY, SO_MARK when mark > 0) connecting
 *                                        to an IP address; onDone(id, 0, 0, 7, 0) once connected, or ends the slot
 *                                        with 5 (connect failed, errno) or 6 (not connected within timeoutMs).
 *                                        Immediate failures (socket(), a refused mark) throw. The slot owns this fd:
 *                                        it is closed when the slot ends or is cancelled, never by JS (unless take()
 *                                        hands it over).
 *   attach(id, clientFd, idleMs, halfCloseMs) -> boolean
 *                                        a connected slot becomes a relay with the client's fd, its client -> upstream
 *                                        direction held: upstream -> client flows at once. false: not connected (or gone).
 *   release(id, firstBytes?) -> boolean  client -> upstream flows, firstBytes (what node read of the client) first.
 *                                        false: the relay has ended (its onDone comes) or was cancelled.
 *   take(id) -> [bytesIn, bytesOut, reason, errno, fd] | undefined
 *                                        cancel() of a connected or attached slot whose client -> upstream is still held,
 *                                        keeping its upstream fd open for JS (issue 14: the connection a plain-HTTP
 *                                        tunnel's first request reuses): only while nothing has moved either way and
 *                                        upstream has sent nothing (no byte, FIN or error seen). Otherwise the slot is
 *                                        cancelled as by cancel() (its fd closed) and fd is -1. A taken fd is
 *                                        JS's from then on (the thread never touches it again).
 *
 * A bounded one-way relay (issue 14: the rest of a bulk Content-Length body of a plain HTTP response, after its head):
 *   pump(upstreamFd, clientFd, bytes, idleMs) -> id
 *                                        moves exactly `bytes` from upstream to the client with splice(2) on the
 *                                        thread (each read asks for no more than what is left, so the next
 *                                        response's bytes stay in the socket), client -> upstream held (the client's
 *                                        next request waits in the kernel for JS's reader; its FIN too). Ends by
 *                                        itself through onDone: 0 every byte moved, 8 upstream's FIN first (the body
 *                                        cut short), 1 / 2 an error of the client / upstream (errno), 3 no byte moved
 *                                        for idleMs. cancel() as for any relay. An error of upstream (a reset) once
 *                                        the whole body has arrived (in the pipe for a slow client, or still queued in
 *                                        upstream's socket, which a reset does not discard) ends nothing: the pump
 *                                        delivers it and ends 0 with that errno. A 0 also carries an error upstream's
 *                                        socket holds when the body ends (a reset right behind it): either way JS
 *                                        must not pool that connection.
 *
 * fd safety: the relay owns no fd. Node may close the sockets at any moment (socket.destroy() closes the fd at
 * once, and the next accept may get the same number), so JS cancels a relay before it lets node close either fd,
 * and the thread works on relays only while holding `lock`; cancel takes the same lock. A relay's epoll events
 * carry its slot and generation: an event already fetched for a relay that was cancelled (or whose slot was
 * reused) meanwhile is recognised as stale and dropped.
 *
 * The main loop (issue 14, CPU per tunnel): a tunnel of a few kilobytes (a TLS handshake, a request, an answer) woke
 * the thread about six times, and the thread and node's main thread met on `lock` and the threadsafe function about
 * nine times (futex calls): 140-200 us of the thread's system time per tunnel, against squid's 300-390 us in all. So
 * a relay starts in a second epoll set, `mainfd`, which node's own loop watches (a uv_poll_t on the epoll fd): the
 * main thread, awake anyway, moves its first bytes itself (recv/send through one buffer: for a few kilobytes cheaper
 * than two splices and a pipe per chunk), learns its connect's end there too, calls onDone directly and takes no
 * lock another thread holds. Once a relay has moved mainLoopBytes, or a wake-up left it with bytes to move
 * (bulk), it leaves that set for the thread's, so bulk bytes never hold up JavaScript. The thread still scans every
 * relay's timeouts. A relay is in exactly one of the two sets (`on_main`).
 *
 * fd budget: an idle relay holds no pipe. A direction takes a pipe from a small pool when it reads bytes and
 * gives it back once they are all written; one that cannot write everything (EAGAIN) keeps it until drained.
 */
#define _GNU_SOURCE
#include <node_api.h>
#include <uv.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/ioctl.h>
#include <linux/sockios.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <time.h>
#include <unistd.h>
#include "napi_errno.h"

enum { REASON_DONE = 0, REASON_CLIENT = 1, REASON_UPSTREAM = 2, REASON_IDLE = 3, REASON_HALF_CLOSE = 4, REASON_CONNECT_FAILED = 5, REASON_CONNECT_TIMEOUT = 6, REASON_CONNECTED = 7, REASON_CUT = 8 };
/* CONNECTING: only the upstream fd, connecting (in the epoll set for its writable edge); CONNECTED: waiting for attach(). */
enum { SLOT_FREE = 0, SLOT_ACTIVE, SLOT_ENDED, SLOT_CONNECTING, SLOT_CONNECTED };

/* At most this many bytes per pipe fill, and the size each pipe is asked to have (take_pipe). */
#define PIPE_BYTES (1 << 20)
/*
 * Fills per direction per wake-up, so one bulk relay does not starve the others (nor hold the lock start() and
 * cancel() wait for: at most 2 x PIPE_BYTES per direction per event); it goes on after the next poll. 2 with 1 MiB
 * pipes measured as 16 with 1 MiB pipes on bulk (three interleaved rounds, within the noise).
 */
#define ROUNDS 2
#define SPARE_PIPES 16
#define WAKE_SLOT UINT64_MAX
/* In an epoll key: the event is the upstream socket's (slot numbers stay below 2^22). */
#define UPSTREAM_BIT ((uint64_t)1 << 31)

typedef struct {
  int r, w;
} pipe_pair;

typedef struct {
  int src, dst;
  pipe_pair pipe; /* r == -1: none held */
  size_t in_pipe; /* bytes read into the pipe and not yet written */
  uint64_t bytes;
  int eof;  /* src sent its FIN */
  int shut; /* and it was passed on: shutdown(dst, SHUT_WR) */
  /* Bytes that go to dst before anything from src (release()'s first bytes): a copy of ours, freed when written or by detach. */
  uint8_t *head;
  size_t head_len, head_off;
} direction;

typedef struct {
  int state;
  uint32_t gen;
  int fds[2];       /* client, upstream; -1: none yet */
  int owns_upstream; /* fds[1] was opened by connect(): closed here, when the relay is taken out of the thread */
  int held;          /* client -> upstream waits for release() (the client's first bytes are still being checked) */
  int on_main;       /* its fds are in mainfd (node's loop moves its bytes), not in the thread's epfd */
  int keeps_alive;   /* connecting: counted in connects_pending until JS learns the outcome (or cancels) */
  direction dir[2]; /* [0] upstream -> client (bytesIn), [1] client -> upstream (bytesOut) */
  int64_t idle_ms, half_close_ms, last_activity;
  int half_closed;
  /* fds[i] reported EPOLLRDHUP, EPOLLHUP or EPOLLERR: its reads go on to the end (or the error), see copy_once. */
  int hung_up[2];
  int again;      /* stopped after ROUNDS with data left: go on without waiting for an edge */
  int out_armed[2]; /* EPOLLOUT asked for on fds[i]: only once a write to it would have blocked */
  /* pump(): upstream -> client only, and no more than pump_left bytes still to read from upstream (see the top). */
  int pumping;
  uint64_t pump_left;
  /*
   * An error of upstream (a reset) seen once the whole body has arrived (what the pipe holds for a slow client, the
   * rest still queued in upstream's socket, which a reset does not discard): the pump goes on delivering it and
   * reports this errno at its end (JS then closes the connection, never pools it). Kept here because SO_ERROR, once
   * read, is gone.
   */
  int upstream_err;
  int reason, err;
} relay;

static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static relay *slots;
static uint32_t slot_count, active_count;
static double started_total;
static uint32_t *free_slots;
static uint32_t free_count;
static pipe_pair spare[SPARE_PIPES];
static int spare_count, pipes_open;
static int epfd = -1, wakefd = -1;
/* The main loop's epoll set (see the top), node's uv_poll_t on it, and what calls onDone from it. */
static int mainfd = -1;
static uv_poll_t main_poll;
static napi_env main_env;
static napi_ref on_done_ref, main_resource_ref;
static napi_async_context main_async;
static uint64_t main_loop_bytes;
static double on_main_count, moved_total;
static pthread_t relay_thread;
/*
 * Set while the main loop works on its relays (under lock): post() queues the messages, delivered once the lock is
 * let go (onDone may call start() or cancel(), which take it).
 */
static int dispatching;
typedef struct done_message done_message;
static done_message **queued;
static uint32_t queued_count, queued_cap;
static int64_t next_scan = INT64_MAX;
static int again_pending;
static napi_threadsafe_function on_done;
/*
 * Connects whose outcome JS has not had yet (main thread only). While there are any, the threadsafe function keeps
 * the event loop alive, as node's socket does for its own connect; relays do not (their client socket does).
 */
static uint32_t connects_pending;
/* Set when node tears the environment down (process exit): the threadsafe function is about to be freed. */
static int env_gone;

struct done_message {
  uint32_t slot, gen;
  uint64_t bytes_in, bytes_out;
  int reason, err;
};

static int64_t now_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC_COARSE, &ts);
  return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static double relay_id(uint32_t slot, uint32_t gen) { return (double)gen * 4194304.0 + slot; }

/* The epoll set a relay's fds are in. */
static int ep_of(const relay *r) { return r->on_main ? mainfd : epfd; }

static int64_t deadline(const relay *r) { return r->last_activity + (r->half_closed ? r->half_close_ms : r->idle_ms); }

static void wake_thread(void) {
  uint64_t one = 1;
  ssize_t ignored = write(wakefd, &one, sizeof one);
  (void)ignored;
}

/* A deadline earlier than the thread's next scan: move the scan forward (and wake the thread when it sleeps). */
static void scan_by(int64_t when) {
  if (when >= next_scan) return;
  next_scan = when;
  if (!pthread_equal(pthread_self(), relay_thread)) wake_thread();
}

static int take_pipe(pipe_pair *p) {
  if (spare_count > 0) {
    *p = spare[--spare_count];
    return 0;
  }
  int fds[2];
  if (pipe2(fds, O_NONBLOCK | O_CLOEXEC) != 0) return errno;
  pipes_open++;
  /*
   * A 1 MiB pipe (PIPE_BYTES), not the default 64 KiB: one splice pair moves up to 16 times more per wake-up. Bulk
   * A/B, 256 MiB downloads, 4 interleaved rounds: CPU per GB TLS ~534 -> ~372 ms, plain ~497 -> ~341, TLS MB/s
   * ~214 -> ~262 (docs/benchmark.md). Pages are allocated as bytes arrive and the pipe is held only while bytes are
   * in flight. Where the kernel refuses the size (an unprivileged user past fs.pipe-max-size or its pipe quota) the
   * pipe keeps its default size.
   */
  (void)fcntl(fds[1], F_SETPIPE_SZ, PIPE_BYTES);
  p->r = fds[0];
  p->w = fds[1];
  return 0;
}

/* An empty pipe goes back to the pool; one with bytes left in it (a relay ended mid-transfer) is closed. */
static void give_back(direction *d) {
  if (d->pipe.r < 0) return;
  if (d->in_pipe == 0 && spare_count < SPARE_PIPES) {
    spare[spare_count++] = d->pipe;
  } else {
    close(d->pipe.r);
    close(d->pipe.w);
    pipes_open--;
  }
  d->pipe.r = d->pipe.w = -1;
  d->in_pipe = 0;
}

/* Out of the epoll set, pipes returned, an upstream fd of our own closed: from here on nothing touches the relay's fds. */
static void detach(relay *r) {
  for (int i = 0; i < 2; i++)
    if (r->fds[i] >= 0) epoll_ctl(ep_of(r), EPOLL_CTL_DEL, r->fds[i], NULL);
  if (r->on_main) {
    r->on_main = 0;
    on_main_count--;
  }
  give_back(&r->dir[0]);
  give_back(&r->dir[1]);
  for (int i = 0; i < 2; i++) {
    free(r->dir[i].head);
    r->dir[i].head = NULL;
  }
  if (r->owns_upstream) {
    close(r->fds[1]);
    r->fds[1] = -1;
    r->owns_upstream = 0;
  }
  r->again = 0;
  active_count--;
}

/* A message for JS: the relay ended (the slot is freed when it is delivered), or a connect() succeeded. */
static void post(uint32_t slot, int reason, int err) {
  relay *r = &slots[slot];
  done_message *m = malloc(sizeof *m);
  if (!m || env_gone) {
    free(m);
    return; /* Not reported; cancel() still finds it (the JS side's destroy reports it). */
  }
  *m = (done_message){slot, r->gen, r->dir[0].bytes, r->dir[1].bytes, reason, err};
  if (dispatching) {
    if (queued_count == queued_cap) {
      uint32_t cap = queued_cap ? queued_cap * 2 : 64;
      done_message **more = realloc(queued, cap * sizeof *more);
      if (!more) {
        free(m);
        return; /* As above: not reported, cancel() finds it. */
      }
      queued = more;
      queued_cap = cap;
    }
    queued[queued_count++] = m;
    return;
  }
  /*
   * Posted under `lock`, so that forget_env (which takes it) cannot slip in between the check above and the call.
   * No lock-order problem: node calls call_js without holding the threadsafe function's own mutex.
   */
  if (napi_call_threadsafe_function(on_done, m, napi_tsfn_nonblocking) != napi_ok) free(m);
}

static void free_slot(uint32_t slot) {
  slots[slot].state = SLOT_FREE;
  slots[slot].gen = (slots[slot].gen + 1) & 0x3fffffff;
  free_slots[free_count++] = slot;
}

/* The thread ends a relay by itself: detach it and tell JS; the slot is freed when the message is delivered. */
static void end_relay(uint32_t slot, int reason, int err) {
  relay *r = &slots[slot];
  detach(r);
  r->state = SLOT_ENDED;
  r->reason = reason;
  r->err = err;
  post(slot, reason, err);
}

/*
 * A connecting socket's writable edge (or error): connected, or failed. Once connected it leaves the epoll set
 * until attach() adds it back with the client's (adding reports bytes that came meanwhile).
 */
static void connect_done(uint32_t slot, uint32_t events) {
  relay *r = &slots[slot];
  int err = 0;
  socklen_t len = sizeof err;
  if (getsockopt(r->fds[1], SOL_SOCKET, SO_ERROR, &err, &len) != 0) err = errno;
  if (err) {
    end_relay(slot, REASON_CONNECT_FAILED, err);
    return;
  }
  if (!(events & EPOLLOUT)) return;
  epoll_ctl(ep_of(r), EPOLL_CTL_DEL, r->fds[1], NULL);
  r->state = SLOT_CONNECTED;
  post(slot, REASON_CONNECTED, 0);
}

/*
 * Ask for fds[i]'s writable edge, once a write to it found it full. Sockets join the epoll set without EPOLLOUT:
 * a fresh socket is writable at once, and that edge woke the thread twice per relay for nothing (a wake-up of
 * another core, two empty splices). EPOLL_CTL_MOD reports the socket at once if it became writable meanwhile.
 */
static uint32_t watched(const relay *r, int i);

static int want_writable(relay *r, int i) {
  if (r->out_armed[i]) return 0;
  uint64_t key = (uint64_t)(r - slots) | ((uint64_t)r->gen << 32) | (i ? UPSTREAM_BIT : 0);
  r->out_armed[i] = 1;
  struct epoll_event ev = {.events = watched(r, i), .data.u64 = key};
  if (epoll_ctl(ep_of(r), EPOLL_CTL_MOD, r->fds[i], &ev) != 0) {
    r->out_armed[i] = 0;
    return errno;
  }
  return 0;
}

/* Which socket an error belongs to: reading from src, or writing to dst. */
static int side_of(const relay *r, int fd) { return fd == r->fds[0] ? REASON_CLIENT : REASON_UPSTREAM; }

/*
 * The main loop's buffer (main thread only): its relays move their few kilobytes with recv(2) and send(2), not
 * splice(2) through a pipe (two splices per chunk, a pipe per direction in flight).
 */
static uint8_t main_buffer[65536];

/* Stash what dst did not take: the direction's head, written before anything more is read (as release()'s bytes). */
static int keep_unsent(direction *d, const uint8_t *bytes, size_t length) {
  d->head = malloc(length);
  if (!d->head) return ENOMEM;
  memcpy(d->head, bytes, length);
  d->head_len = length;
  d->head_off = 0;
  return 0;
}

/* src sent its FIN: the relay is half-closed from now (its half-close timeout runs). */
static void source_ended(relay *r, direction *d) {
  d->eof = 1;
  if (!r->half_closed) {
    r->half_closed = 1;
    scan_by(deadline(r));
  }
}

/*
 * pump()'s read on the main loop: one recv into main_buffer and its send to dst. Returns 1 to go on, 0 to stop for
 * now (nothing more to read, or dst full: the rest kept as the direction's head, dst's writable edge asked for), -1
 * when the relay failed (as pump).
 */
static int copy_once(relay *r, direction *d, int64_t now, int *reason, int *err) {
  ssize_t n = recv(d->src, main_buffer, sizeof main_buffer, MSG_DONTWAIT);
  if (n < 0) {
    if (errno == EAGAIN || errno == EINTR) return 0;
    *reason = side_of(r, d->src);
    *err = errno;
    return -1;
  }
  r->last_activity = now;
  if (n == 0) {
    source_ended(r, d);
    return 1;
  }
  ssize_t sent = send(d->dst, main_buffer, (size_t)n, MSG_DONTWAIT | MSG_NOSIGNAL);
  if (sent < 0) {
    if (errno != EAGAIN && errno != EINTR) {
      *reason = side_of(r, d->dst);
      *err = errno;
      return -1;
    }
    sent = 0;
  }
  d->bytes += (uint64_t)sent;
  if (sent < n) {
    int e = keep_unsent(d, main_buffer + sent, (size_t)(n - sent));
    if (!e) e = want_writable(r, d->dst == r->fds[1]);
    if (!e) return 0;
    *reason = side_of(r, d->dst);
    *err = e;
    return -1;
  }
  /*
   * A short read emptied the socket's receive queue: bytes that come later raise a new edge, so the read that
   * would only say EAGAIN is skipped (about half of a small tunnel's reads were those). Not once the socket has
   * reported its peer's FIN or an error: that edge may have come with these bytes, and no other follows it.
   */
  return (size_t)n < sizeof main_buffer && !r->hung_up[d->src == r->fds[1]] ? 0 : 1;
}

/*
 * Move what can be moved in one direction: write what the pipe holds, refill it, until the source has nothing
 * (EAGAIN), the destination takes nothing more (EAGAIN: its EPOLLOUT edge comes when it drains), or ROUNDS. On the
 * main loop the read is copy_once (recv/send, no pipe); the head, the FIN and the rounds are the same.
 * Returns 0, or -1 when the relay failed (reason and errno stored in *reason, *err).
 */
static int pump(relay *r, direction *d, int64_t now, int *reason, int *err) {
  for (int round = 0; round < ROUNDS * 2; round++) {
    /* On the main loop, no more than relay-thread-after bytes (and the read that passes them): the rest is for the thread. */
    if (r->on_main && round > 0 && r->dir[0].bytes + r->dir[1].bytes >= main_loop_bytes) break;
    if (d->head || d->in_pipe > 0) {
      /* To dst: the head (release()'s first bytes) before anything, then what the pipe holds. */
      ssize_t n = d->head ? send(d->dst, d->head + d->head_off, d->head_len - d->head_off, MSG_DONTWAIT | MSG_NOSIGNAL)
                          : splice(d->pipe.r, NULL, d->dst, NULL, d->in_pipe, SPLICE_F_MOVE | SPLICE_F_NONBLOCK);
      if (n < 0) {
        if (errno == EINTR) return 0;
        if (errno == EAGAIN) {
          int e = want_writable(r, d->dst == r->fds[1]);
          if (!e) return 0;
          *reason = side_of(r, d->dst);
          *err = e;
          return -1;
        }
        *reason = side_of(r, d->dst);
        *err = errno;
        return -1;
      }
      if (!d->head) d->in_pipe -= (size_t)n;
      else if ((d->head_off += (size_t)n) == d->head_len) {
        free(d->head);
        d->head = NULL;
      }
      d->bytes += (uint64_t)n;
      r->last_activity = now;
      continue;
    }
    /* A pump passes on neither more than its bytes nor upstream's FIN (work_on ends it once the pipe is empty). */
    if (r->pumping && (d->eof || r->pump_left == 0)) return 0;
    if (d->eof) {
      give_back(d);
      if (!d->shut) {
        d->shut = 1;
        /* ENOTCONN: the destination is gone already; its own error or EOF ends the relay. */
        if (shutdown(d->dst, SHUT_WR) != 0 && errno != ENOTCONN) {
          *reason = side_of(r, d->dst);
          *err = errno;
          return -1;
        }
      }
      return 0;
    }
    if (r->on_main) {
      int going = copy_once(r, d, now, reason, err);
      if (going <= 0) return going;
      continue;
    }
    if (d->pipe.r < 0) {
      int e = take_pipe(&d->pipe);
      if (e) {
        *reason = side_of(r, d->src);
        *err = e;
        return -1;
      }
    }
    size_t want = r->pumping && r->pump_left < PIPE_BYTES ? (size_t)r->pump_left : PIPE_BYTES;
    ssize_t n = splice(d->src, NULL, d->pipe.w, NULL, want, SPLICE_F_MOVE | SPLICE_F_NONBLOCK);
    if (n < 0) {
      if (errno == EINTR) return 0;
      /*
       * A pump whose upstream failed (upstream_err) has read everything its socket held: no byte and no edge comes
       * any more, so the body stays short; the kept error ends it (the socket's own, read once, is gone). Not
       * expected (the error is kept only for a body that arrived whole), but a pump must never wait for nothing.
       */
      if (errno == EAGAIN && !(r->pumping && r->upstream_err)) {
        give_back(d);
        return 0;
      }
      *reason = side_of(r, d->src);
      *err = r->pumping && r->upstream_err ? r->upstream_err : errno;
      return -1;
    }
    r->last_activity = now;
    if (n == 0) source_ended(r, d);
    else if (r->pumping) r->pump_left -= (uint64_t)n;
    d->in_pipe = (size_t)n;
  }
  r->again = 1;
  return 0;
}

/*
 * An error the socket holds (SO_ERROR, taken by reading it), 0 for none. At a pump's end: a reset that came right
 * behind the body's last byte raises an edge the thread may never handle (the pump ends first, and the event is
 * stale then), yet the connection must not go back to JS's pool.
 */
static int pending_error(int fd) {
  int err = 0;
  socklen_t len = sizeof err;
  return getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len) == 0 ? err : 0;
}

/* Bytes still queued in a socket's receive queue (SIOCINQ), 0 when it cannot say. */
static int queued_in(int fd) {
  int n = 0;
  return ioctl(fd, SIOCINQ, &n) == 0 ? n : 0;
}

/* Which directions work_on pumps: bit i for dir[i]. */
#define BOTH_DIRECTIONS 3

static void work_on(uint32_t slot, int64_t now, unsigned directions) {
  relay *r = &slots[slot];
  r->again = 0;
  int reason = 0, err = 0;
  for (int i = 0; i < (r->held ? 1 : 2); i++) {
    if (!(directions & (1u << i))) continue;
    if (pump(r, &r->dir[i], now, &reason, &err) != 0) {
      end_relay(slot, reason, err);
      return;
    }
  }
  if (r->pumping && !r->dir[0].head && r->dir[0].in_pipe == 0 && (r->pump_left == 0 || r->dir[0].eof)) {
    if (r->pump_left == 0) end_relay(slot, REASON_DONE, r->upstream_err ? r->upstream_err : pending_error(r->fds[1]));
    /* The end of a socket that failed (a reset reads as EOF once its error was taken): its error, not a FIN. */
    else if (r->upstream_err) end_relay(slot, REASON_UPSTREAM, r->upstream_err);
    else end_relay(slot, REASON_CUT, 0);
  } else if (r->dir[0].shut && r->dir[1].shut) end_relay(slot, REASON_DONE, 0);
  else if (r->again && !r->on_main) again_pending = 1;
}

/*
 * The epoll events a relay's fd i is watched for: the client's, while held, errors only, and its writable edge once
 * asked for (upstream -> client flows while held: a relay moved to the thread while it waited for that edge on the
 * main loop must keep waiting for it, or it stalls until release() or its idle timeout).
 */
static uint32_t watched(const relay *r, int i) {
  uint32_t out = r->out_armed[i] ? EPOLLOUT : 0;
  if (i == 0 && r->held) return EPOLLET | out;
  return EPOLLIN | EPOLLRDHUP | EPOLLET | out;
}

/*
 * A relay on the main loop moves to the thread's epoll set (under lock): it has moved mainLoopBytes, or a wake-up
 * left it with bytes to move. The thread pumps it once without waiting for an edge. A failed move ends it.
 */
static void to_thread(uint32_t slot) {
  relay *r = &slots[slot];
  uint64_t key = slot | ((uint64_t)r->gen << 32);
  for (int i = 0; i < 2; i++) epoll_ctl(mainfd, EPOLL_CTL_DEL, r->fds[i], NULL);
  r->on_main = 0;
  on_main_count--;
  for (int i = 0; i < 2; i++) {
    struct epoll_event ev = {.events = watched(r, i), .data.u64 = key | (i ? UPSTREAM_BIT : 0)};
    if (epoll_ctl(epfd, EPOLL_CTL_ADD, r->fds[i], &ev) != 0) {
      end_relay(slot, i ? REASON_UPSTREAM : REASON_CLIENT, errno);
      return;
    }
  }
  moved_total++;
  r->again = 1;
  again_pending = 1;
  wake_thread();
}

/* After the main loop worked on a relay: one that has moved enough, or has more to move now, goes to the thread. */
static void maybe_to_thread(uint32_t slot) {
  relay *r = &slots[slot];
  if (r->state == SLOT_ACTIVE && r->on_main && (r->again || r->dir[0].bytes + r->dir[1].bytes >= main_loop_bytes)) to_thread(slot);
}

static void scan_timeouts(int64_t now) {
  int64_t next = INT64_MAX;
  for (uint32_t s = 0; s < slot_count; s++) {
    relay *r = &slots[s];
    if (r->state != SLOT_ACTIVE && r->state != SLOT_CONNECTING) continue;
    int64_t due = deadline(r);
    if (due <= now) end_relay(s, r->state == SLOT_CONNECTING ? REASON_CONNECT_TIMEOUT : r->half_closed ? REASON_HALF_CLOSE : REASON_IDLE, 0);
    else if (due < next) next = due;
  }
  next_scan = next;
}

/* One epoll event of a relay (under lock), on the thread or on the main loop, whichever set its fds are in. */
static void handle_event(uint64_t key, uint32_t events, int64_t now) {
  uint32_t slot = (uint32_t)(key & ~UPSTREAM_BIT), gen = (uint32_t)(key >> 32);
  /* Stale: cancelled (and maybe reused) since epoll_wait fetched it. */
  if (slot >= slot_count || slots[slot].gen != gen || (slots[slot].state != SLOT_ACTIVE && slots[slot].state != SLOT_CONNECTING)) return;
  if (slots[slot].state == SLOT_CONNECTING) {
    connect_done(slot, events);
    return;
  }
  int upstream = (key & UPSTREAM_BIT) != 0;
  if (events & (EPOLLRDHUP | EPOLLHUP | EPOLLERR)) slots[slot].hung_up[upstream] = 1;
  /*
   * The thread pumps both directions on any event. The main loop pumps only the direction this socket's event
   * concerns (readable: the one it is the source of; writable: the one it is the destination of), sparing the
   * other direction's read that would say EAGAIN: each direction's socket raises its own edges.
   */
  unsigned directions = BOTH_DIRECTIONS;
  if (slots[slot].on_main && !(events & (EPOLLHUP | EPOLLERR))) {
    directions = 0;
    /* dir[0]: upstream -> client, dir[1]: client -> upstream. */
    if (events & (EPOLLIN | EPOLLRDHUP)) directions |= upstream ? 1u : 2u;
    if (events & EPOLLOUT) directions |= upstream ? 2u : 1u;
  }
  work_on(slot, now, directions);
  /*
   * A socket error is found by the next read or write of it; this one may get neither (its direction is
   * half-closed and the other is quiet), so ask once what could be relayed has been.
   */
  if ((events & EPOLLERR) && slots[slot].state == SLOT_ACTIVE) {
    int err = 0;
    socklen_t len = sizeof err;
    if (getsockopt(slots[slot].fds[upstream], SOL_SOCKET, SO_ERROR, &err, &len) == 0 && err != 0) {
      relay *r = &slots[slot];
      /*
       * A pump whose body has arrived whole owes the client all of it, even what upstream's socket still holds (the
       * pump reads nothing while its pipe is full, and a reset does not discard a receive queue): delivered first,
       * then the pump ends with this errno (see upstream_err). A body that is short ends now, as it would anyway.
       */
      if (upstream && r->pumping && (uint64_t)queued_in(r->fds[1]) >= r->pump_left) {
        r->upstream_err = err;
        /* No edge follows this one: what can move now moves now (the pipe empty, the socket's queue read). */
        work_on(slot, now, 1);
      } else {
        end_relay(slot, upstream ? REASON_UPSTREAM : REASON_CLIENT, err);
      }
    }
  }
  maybe_to_thread(slot);
}

static void *thread_main(void *unused) {
  (void)unused;
  /* Signals are for node's threads (SIGPIPE from a write to a reset socket is ignored by node anyway). */
  sigset_t all;
  sigfillset(&all);
  pthread_sigmask(SIG_BLOCK, &all, NULL);
  struct epoll_event events[256];
  for (;;) {
    pthread_mutex_lock(&lock);
    int64_t now = now_ms();
    int timeout = again_pending ? 0 : next_scan == INT64_MAX ? -1 : next_scan <= now ? 0 : (int)(next_scan - now > 60000 ? 60000 : next_scan - now);
    pthread_mutex_unlock(&lock);
    int n = epoll_wait(epfd, events, 256, timeout);
    now = now_ms();
    for (int i = 0; i < n; i++) {
      uint64_t key = events[i].data.u64;
      if (key == WAKE_SLOT) {
        uint64_t count;
        ssize_t ignored = read(wakefd, &count, sizeof count);
        (void)ignored;
        continue;
      }
      /*
       * The lock is taken per event, not per batch: start() and cancel() run on node's main thread, and held for
       * a whole batch (up to 256 events) it made them wait for all of the batch's splices. Each event's work is
       * bounded (ROUNDS), so that is the longest either of them waits now.
       */
      pthread_mutex_lock(&lock);
      handle_event(key, events[i].events, now);
      pthread_mutex_unlock(&lock);
    }
    pthread_mutex_lock(&lock);
    if (again_pending) {
      again_pending = 0;
      for (uint32_t s = 0; s < slot_count; s++)
        if (slots[s].state == SLOT_ACTIVE && slots[s].again && !slots[s].on_main) work_on(s, now, BOTH_DIRECTIONS);
    }
    if (now >= next_scan) scan_timeouts(now);
    pthread_mutex_unlock(&lock);
  }
  return NULL;
}

static void connect_settled(napi_env env) {
  if (connects_pending > 0 && --connects_pending == 0) napi_unref_threadsafe_function(env, on_done);
}

/*
 * A message reaches JS (under no lock): the slot's state is settled (an end frees it), and whether onDone is called
 * (1) or the message is stale (0: the relay was cancelled meanwhile, or is gone).
 */
static int settle(napi_env env, done_message *m) {
  int current = 0;
  pthread_mutex_lock(&lock);
  int outcome_of_connect = 0;
  if (m->slot < slot_count && slots[m->slot].gen == m->gen) {
    outcome_of_connect = slots[m->slot].keeps_alive;
    slots[m->slot].keeps_alive = 0;
    /* A connect's success leaves the slot to attach(); an end frees it. */
    if (m->reason == REASON_CONNECTED) current = slots[m->slot].state == SLOT_CONNECTED;
    else if (slots[m->slot].state == SLOT_ENDED) {
      current = 1;
      free_slot(m->slot);
    }
  }
  pthread_mutex_unlock(&lock);
  if (outcome_of_connect && env) connect_settled(env);
  return current && env;
}

static void done_arguments(napi_env env, const done_message *m, napi_value argv[5]) {
  napi_create_double(env, relay_id(m->slot, m->gen), &argv[0]);
  napi_create_double(env, (double)m->bytes_in, &argv[1]);
  napi_create_double(env, (double)m->bytes_out, &argv[2]);
  napi_create_int32(env, m->reason, &argv[3]);
  napi_create_int32(env, m->err, &argv[4]);
}

/* The threadsafe function's side: messages the thread posted. */
static void call_js(napi_env env, napi_value callback, void *context, void *data) {
  (void)context;
  done_message *m = data;
  if (settle(env, m)) {
    napi_value argv[5], undefined;
    done_arguments(env, m, argv);
    napi_get_undefined(env, &undefined);
    napi_call_function(env, undefined, callback, 5, argv, NULL);
  }
  free(m);
}

/* The main loop's side: messages queued while it worked on its relays, each delivered as node delivers an I/O callback. */
static void deliver_queued(void) {
  napi_env env = main_env;
  for (uint32_t i = 0; i < queued_count; i++) {
    done_message *m = queued[i];
    if (!env_gone && settle(env, m)) {
      napi_handle_scope scope;
      if (napi_open_handle_scope(env, &scope) == napi_ok) {
        napi_value argv[5], callback, resource;
        done_arguments(env, m, argv);
        napi_get_reference_value(env, on_done_ref, &callback);
        /* napi_make_callback takes an object as `this` (undefined throws a TypeError). */
        napi_get_reference_value(env, main_resource_ref, &resource);
        napi_status status = napi_make_callback(env, main_async, resource, callback, 5, argv, NULL);
        if (status == napi_pending_exception) {
          /* onDone catches what it calls; a throw here is a bug: reported as node reports any callback's throw. */
          napi_value err;
          napi_get_and_clear_last_exception(env, &err);
          napi_fatal_exception(env, err);
        }
        napi_close_handle_scope(env, scope);
      }
    }
    free(m);
  }
  queued_count = 0;
}

/*
 * node's loop found mainfd readable: its relays have events. Worked on here as the thread works on its own (one
 * epoll_wait that does not block), then the messages go to JS.
 */
static void on_main_readable(uv_poll_t *handle, int status, int events) {
  (void)events;
  if (status < 0) uv_poll_start(handle, UV_READABLE, on_main_readable);
  struct epoll_event ready[256];
  pthread_mutex_lock(&lock);
  if (env_gone) {
    pthread_mutex_unlock(&lock);
    return;
  }
  dispatching = 1;
  int n = epoll_wait(mainfd, ready, 256, 0);
  int64_t now = now_ms();
  for (int i = 0; i < n; i++) handle_event(ready[i].data.u64, ready[i].events, now);
  dispatching = 0;
  pthread_mutex_unlock(&lock);
  deliver_queued();
}

static void forget_env(void *unused) {
  (void)unused;
  pthread_mutex_lock(&lock);
  env_gone = 1;
  pthread_mutex_unlock(&lock);
  if (mainfd >= 0) {
    uv_poll_stop(&main_poll);
    uv_close((uv_handle_t *)&main_poll, NULL);
  }
}

static napi_value init(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value argv[1], name;
  napi_valuetype type;
  if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok || argc < 1 || napi_typeof(env, argv[0], &type) != napi_ok || type != napi_function) {
    napi_throw_type_error(env, "EINVAL", "init(onDone): onDone a function");
    return NULL;
  }
  if (epfd >= 0) {
    napi_throw_error(env, "EEXIST", "init: the kernel relay is initialised already");
    return NULL;
  }
  int ep = epoll_create1(EPOLL_CLOEXEC);
  if (ep < 0) return throw_errno(env, errno, "epoll_create1");
  int wake = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
  if (wake < 0) {
    int err = errno;
    close(ep);
    return throw_errno(env, err, "eventfd");
  }
  struct epoll_event ev = {.events = EPOLLIN, .data.u64 = WAKE_SLOT};
  epoll_ctl(ep, EPOLL_CTL_ADD, wake, &ev);
  uv_loop_t *loop;
  int main_ep = epoll_create1(EPOLL_CLOEXEC);
  if (main_ep < 0 || napi_get_uv_event_loop(env, &loop) != napi_ok || uv_poll_init(loop, &main_poll, main_ep) != 0) {
    int err = main_ep < 0 ? errno : EIO;
    if (main_ep >= 0) close(main_ep);
    close(ep);
    close(wake);
    return throw_errno(env, err, "init: the main loop's epoll set");
  }
  /* Like the thread, it does not keep the process alive. */
  uv_unref((uv_handle_t *)&main_poll);
  uv_poll_start(&main_poll, UV_READABLE, on_main_readable);
  mainfd = main_ep;
  main_env = env;
  napi_create_string_utf8(env, "kernel-relay", NAPI_AUTO_LENGTH, &name);
  napi_create_reference(env, argv[0], 1, &on_done_ref);
  /* The async resource of the main loop's onDone calls (async_hooks see them as one resource), also their `this`. */
  napi_value resource;
  napi_create_object(env, &resource);
  napi_create_reference(env, resource, 1, &main_resource_ref);
  napi_async_init(env, resource, name, &main_async);
  if (napi_create_threadsafe_function(env, argv[0], NULL, name, 0, 1, NULL, NULL, NULL, call_js, &on_done) != napi_ok) {
    uv_poll_stop(&main_poll);
    uv_close((uv_handle_t *)&main_poll, NULL);
    mainfd = -1;
    close(main_ep);
    close(ep);
    close(wake);
    napi_throw_error(env, "EIO", "init: napi_create_threadsafe_function failed");
    return NULL;
  }
  /* The thread does not keep the process alive; open tunnels do (their sockets are node's). */
  napi_unref_threadsafe_function(env, on_done);
  /* Registered after the threadsafe function, so it runs before node frees it (cleanup hooks run in reverse). */
  napi_add_env_cleanup_hook(env, forget_env, NULL);
  epfd = ep;
  wakefd = wake;
  pthread_attr_t attr;
  pthread_attr_init(&attr);
  pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
  /* Under lock: scan_by (main thread) reads relay_thread to know it is not the thread. */
  pthread_mutex_lock(&lock);
  int err = pthread_create(&relay_thread, &attr, thread_main, NULL);
  pthread_mutex_unlock(&lock);
  pthread_attr_destroy(&attr);
  if (err) return throw_errno(env, err, "pthread_create");
  /* Named, so that its CPU is told apart from node's own threads (top -H, /proc/PID/task/TID/comm). */
  pthread_setname_np(relay_thread, "egress-relay");
  return NULL;
}

static int read_int64(napi_env env, napi_value v, int64_t *out) { return napi_get_value_int64(env, v, out) == napi_ok; }

/* A free slot (grown when none is left), under lock; its state is the caller's to set. */
static int take_slot(uint32_t *slot) {
  if (free_count == 0) {
    uint32_t grown = slot_count ? slot_count * 2 : 256;
    relay *more = realloc(slots, grown * sizeof *slots);
    uint32_t *more_free = more ? realloc(free_slots, grown * sizeof *free_slots) : NULL;
    if (more) slots = more;
    if (!more || !more_free) return ENOMEM;
    free_slots = more_free;
    for (uint32_t s = grown; s-- > slot_count;) {
      memset(&slots[s], 0, sizeof slots[s]);
      free_slots[free_count++] = s;
    }
    slot_count = grown;
  }
  *slot = free_slots[--free_count];
  return 0;
}

/*
 * The slot (its upstream fd set) becomes an active relay with `client`, under lock. `held`: client -> upstream waits
 * for release(), and the client's fd is watched for errors only (node reads it meanwhile). Returns 0 or an errno,
 * with the slot unchanged.
 */
static int begin_relay(uint32_t slot, int client, int64_t idle_ms, int64_t half_close_ms, int held, int thread_only) {
  relay *r = &slots[slot];
  int upstream = r->fds[1];
  /*
   * Edge-triggered: an idle relay costs no wake-ups, and adding a socket that has bytes waiting reports them.
   * EPOLLOUT only once a write would block (want_writable).
   */
  uint64_t key = slot | ((uint64_t)r->gen << 32);
  /* A connected slot keeps the set its connect was in; a relay started at once goes to the main loop when it is on. */
  int on_main = !thread_only && (r->state == SLOT_CONNECTED ? r->on_main : main_loop_bytes > 0);
  int ep = on_main ? mainfd : epfd;
  struct epoll_event ev = {.events = held ? EPOLLET : EPOLLIN | EPOLLRDHUP | EPOLLET, .data.u64 = key};
  if (epoll_ctl(ep, EPOLL_CTL_ADD, client, &ev) != 0) return errno;
  ev = (struct epoll_event){.events = EPOLLIN | EPOLLRDHUP | EPOLLET, .data.u64 = key | UPSTREAM_BIT};
  if (epoll_ctl(ep, EPOLL_CTL_ADD, upstream, &ev) != 0) {
    int err = errno;
    epoll_ctl(ep, EPOLL_CTL_DEL, client, NULL);
    return err;
  }
  if (on_main && !r->on_main) {
    r->on_main = 1;
    on_main_count++;
  }
  r->state = SLOT_ACTIVE;
  r->fds[0] = client;
  r->held = held;
  r->idle_ms = idle_ms;
  r->half_close_ms = half_close_ms;
  r->last_activity = now_ms();
  r->dir[0] = (direction){.src = upstream, .dst = client, .pipe = {-1, -1}};
  r->dir[1] = (direction){.src = client, .dst = upstream, .pipe = {-1, -1}};
  scan_by(deadline(r));
  return 0;
}

/*
 * A new relay of two fds from JS (start(), pump()): `pump_bytes` 0 a tunnel's relay, else a pump of that many bytes
 * upstream -> client (see the top). Returns its id, or throws (`what` names the call).
 */
static napi_value open_relay(napi_env env, const char *what, int client, int upstream, int64_t idle_ms, int64_t half_close_ms, uint64_t pump_bytes) {
  if (epfd < 0) {
    char message[32];
    snprintf(message, sizeof message, "%s: init() first", what);
    napi_throw_error(env, "EINVAL", message);
    return NULL;
  }
  pthread_mutex_lock(&lock);
  uint32_t slot;
  int err = take_slot(&slot);
  if (err) {
    pthread_mutex_unlock(&lock);
    return throw_errno(env, err, what);
  }
  relay *r = &slots[slot];
  uint32_t gen = r->gen;
  *r = (relay){.gen = gen, .fds = {-1, upstream}};
  int pumping = pump_bytes > 0;
  err = begin_relay(slot, client, idle_ms, half_close_ms, pumping, pumping);
  if (err) {
    free_slot(slot);
    pthread_mutex_unlock(&lock);
    return throw_errno(env, err, "epoll_ctl");
  }
  active_count++;
  started_total++;
  if (pumping) {
    r->pumping = 1;
    r->pump_left = pump_bytes;
    /* Bytes upstream sent before the pump began raise no new edge: the thread reads once without waiting for one. */
    r->again = 1;
    again_pending = 1;
    wake_thread();
  }
  pthread_mutex_unlock(&lock);
  napi_value id;
  napi_create_double(env, relay_id(slot, gen), &id);
  return id;
}

static napi_value start(napi_env env, napi_callback_info info) {
  size_t argc = 4;
  napi_value argv[4];
  int32_t client, upstream;
  int64_t idle_ms, half_close_ms;
  if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok || argc < 4 || napi_get_value_int32(env, argv[0], &client) != napi_ok ||
      napi_get_value_int32(env, argv[1], &upstream) != napi_ok || !read_int64(env, argv[2], &idle_ms) || !read_int64(env, argv[3], &half_close_ms) || client < 0 ||
      upstream < 0 || client == upstream || idle_ms <= 0 || half_close_ms <= 0) {
    napi_throw_type_error(env, "EINVAL", "start(clientFd, upstreamFd, idleMs, halfCloseMs): two distinct fds, positive timeouts");
    return NULL;
  }
  return open_relay(env, "start", client, upstream, idle_ms, half_close_ms, 0);
}

/*
 * pump(upstreamFd, clientFd, bytes, idleMs): see the top. On the thread from the start (bulk: the main loop's recv/send
 * is for a tunnel's first few kilobytes); its client -> upstream direction held for good, the client's fd watched for
 * its errors only.
 */
static napi_value pump_body(napi_env env, napi_callback_info info) {
  size_t argc = 4;
  napi_value argv[4];
  int32_t upstream, client;
  int64_t bytes, idle_ms;
  if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok || argc < 4 || napi_get_value_int32(env, argv[0], &upstream) != napi_ok ||
      napi_get_value_int32(env, argv[1], &client) != napi_ok || !read_int64(env, argv[2], &bytes) || !read_int64(env, argv[3], &idle_ms) || client < 0 ||
      upstream < 0 || client == upstream || bytes <= 0 || idle_ms <= 0) {
    napi_throw_type_error(env, "EINVAL", "pump(upstreamFd, clientFd, bytes, idleMs): two distinct fds, a positive length and timeout");
    return NULL;
  }
  return open_relay(env, "pump", client, upstream, idle_ms, idle_ms, (uint64_t)bytes);
}

/* The slot of an id from start() or connect() in `state` (under lock); -1 when it is not (gone, or in another state). */
static int64_t slot_of(double id, int state) {
  if (id < 0) return -1;
  uint32_t slot = (uint32_t)((uint64_t)id % 4194304), gen = (uint32_t)((uint64_t)id / 4194304);
  if (slot >= slot_count || slots[slot].gen != gen || slots[slot].state != state) return -1;
  return slot;
}

static napi_value connect_upstream(napi_env env, napi_callback_info info) {
  size_t argc = 5;
  napi_value argv[5];
  int32_t family, port;
  int64_t mark, timeout_ms;
  char address[INET6_ADDRSTRLEN + 1];
  size_t address_len = 0;
  if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok || argc < 5 || napi_get_value_int32(env, argv[0], &family) != napi_ok ||
      napi_get_value_string_utf8(env, argv[1], address, sizeof address, &address_len) != napi_ok || napi_get_value_int32(env, argv[2], &port) != napi_ok ||
      !read_int64(env, argv[3], &mark) || !read_int64(env, argv[4], &timeout_ms) || (family != 4 && family != 6) || port < 1 || port > 65535 || mark < 0 ||
      mark > 0xffffffffLL || timeout_ms <= 0) {
    napi_throw_type_error(env, "EINVAL", "connect(family, address, port, mark, timeoutMs): family 4 or 6, an IP address, a port, a mark (0: none), a positive timeout");
    return NULL;
  }
  if (epfd < 0) {
    napi_throw_error(env, "EINVAL", "connect: init() first");
    return NULL;
  }
  struct sockaddr_storage to;
  socklen_t to_len;
  memset(&to, 0, sizeof to);
  if (family == 4) {
    struct sockaddr_in *in = (struct sockaddr_in *)&to;
    in->sin_family = AF_INET;
    in->sin_port = htons((uint16_t)port);
    to_len = sizeof *in;
    if (inet_pton(AF_INET, address, &in->sin_addr) != 1) return throw_errno(env, EINVAL, "connect: not an IPv4 address");
  } else {
    struct sockaddr_in6 *in6 = (struct sockaddr_in6 *)&to;
    in6->sin6_family = AF_INET6;
    in6->sin6_port = htons((uint16_t)port);
    to_len = sizeof *in6;
    if (inet_pton(AF_INET6, address, &in6->sin6_addr) != 1) return throw_errno(env, EINVAL, "connect: not an IPv6 address");
  }
  int fd = socket(family == 4 ? AF_INET : AF_INET6, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0) return throw_errno(env, errno, "socket");
  int one = 1;
  /* As node's noDelay: a tunnel's small writes (a TLS handshake) go out at once. */
  (void)setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  uint32_t mark32 = (uint32_t)mark;
  if (mark > 0 && setsockopt(fd, SOL_SOCKET, SO_MARK, &mark32, sizeof mark32) != 0) {
    int e = errno;
    close(fd);
    return throw_errno(env, e, "setsockopt(SO_MARK)");
  }
  /* Started before the slot exists: an immediate failure (EADDRNOTAVAIL, ENETUNREACH) is reported like a later one. */
  int connect_err = connect(fd, (struct sockaddr *)&to, to_len) == 0 || errno == EINPROGRESS ? 0 : errno;
  pthread_mutex_lock(&lock);
  uint32_t slot;
  int err = take_slot(&slot);
  if (err) {
    pthread_mutex_unlock(&lock);
    close(fd);
    return throw_errno(env, err, "connect");
  }
  relay *r = &slots[slot];
  uint32_t gen = r->gen;
  *r = (relay){.state = SLOT_CONNECTING, .gen = gen, .fds = {-1, fd}, .owns_upstream = 1, .keeps_alive = 1, .idle_ms = timeout_ms, .half_close_ms = timeout_ms, .last_activity = now_ms()};
  r->dir[0].pipe = r->dir[1].pipe = (pipe_pair){-1, -1};
  active_count++;
  /* The connect's end is the main loop's too: one more wake-up of the thread and one more message through its lock saved. */
  if (main_loop_bytes > 0) {
    r->on_main = 1;
    on_main_count++;
  }
  /* The writable edge is the connect's end (an error, EPOLLERR, too); a socket connected at once reports it when added. */
  struct epoll_event ev = {.events = EPOLLOUT | EPOLLET, .data.u64 = slot | ((uint64_t)gen << 32) | UPSTREAM_BIT};
  if (!connect_err && epoll_ctl(ep_of(r), EPOLL_CTL_ADD, fd, &ev) != 0) connect_err = errno;
  if (connect_err) end_relay(slot, REASON_CONNECT_FAILED, connect_err);
  else scan_by(deadline(r));
  pthread_mutex_unlock(&lock);
  if (connects_pending++ == 0) napi_ref_threadsafe_function(env, on_done);
  napi_value id;
  napi_create_double(env, relay_id(slot, gen), &id);
  return id;
}

static napi_value attach(napi_env env, napi_callback_info info) {
  size_t argc = 4;
  napi_value argv[4], result;
  double id;
  int32_t client;
  int64_t idle_ms, half_close_ms;
  if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok || argc < 4 || napi_get_value_double(env, argv[0], &id) != napi_ok ||
      napi_get_value_int32(env, argv[1], &client) != napi_ok || !read_int64(env, argv[2], &idle_ms) || !read_int64(env, argv[3], &half_close_ms) || client < 0 ||
      idle_ms <= 0 || half_close_ms <= 0) {
    napi_throw_type_error(env, "EINVAL", "attach(id, clientFd, idleMs, halfCloseMs): an id from connect(), an fd, positive timeouts");
    return NULL;
  }
  pthread_mutex_lock(&lock);
  int64_t slot = slot_of(id, SLOT_CONNECTED);
  int err = slot < 0 ? ENOENT : slots[slot].fds[1] == client ? EINVAL : begin_relay((uint32_t)slot, client, idle_ms, half_close_ms, 1, 0);
  if (!err) started_total++;
  pthread_mutex_unlock(&lock);
  if (err && err != ENOENT) return throw_errno(env, err, "attach");
  napi_get_boolean(env, !err, &result);
  return result;
}

static napi_value release(napi_env env, napi_callback_info info) {
  size_t argc = 2;
  napi_value argv[2], result;
  double id;
  void *bytes = NULL;
  size_t length = 0;
  napi_valuetype type = napi_undefined;
  if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok || argc < 1 || napi_get_value_double(env, argv[0], &id) != napi_ok ||
      (argc > 1 && napi_typeof(env, argv[1], &type) != napi_ok) || (type != napi_undefined && napi_get_buffer_info(env, argv[1], &bytes, &length) != napi_ok)) {
    napi_throw_type_error(env, "EINVAL", "release(id, firstBytes?): an id from connect(), a Buffer or undefined");
    return NULL;
  }
  pthread_mutex_lock(&lock);
  int64_t slot = slot_of(id, SLOT_ACTIVE);
  int err = slot < 0 || !slots[slot].held ? ENOENT : 0;
  if (!err) {
    relay *r = &slots[slot];
    direction *d = &r->dir[1];
    /*
     * The first bytes are the direction's head: the next pump writes them before anything it reads from the client.
     * A copy, not the pipe: a pipe can be as small as 8 KiB (an unprivileged user over its pipe quota), less than
     * node may have read.
     */
    if (length > 0) {
      d->head = malloc(length);
      if (!d->head) err = ENOMEM;
      else {
        memcpy(d->head, bytes, length);
        d->head_len = length;
        d->head_off = 0;
      }
    }
    /* The client's fd joined the epoll set for its errors only (node was reading it): its reads are the relay's now. */
    struct epoll_event ev = {.events = EPOLLIN | EPOLLRDHUP | EPOLLET | (r->out_armed[0] ? EPOLLOUT : 0), .data.u64 = (uint64_t)slot | ((uint64_t)r->gen << 32)};
    if (!err && epoll_ctl(ep_of(r), EPOLL_CTL_MOD, r->fds[0], &ev) != 0) err = errno;
    if (!err) {
      r->held = 0;
      r->last_activity = now_ms();
      /*
       * The client's bytes may have come while held (their edge is gone): pump once without waiting for another. On
       * the main loop, here and now (the first bytes go out in this call; an end is reported through the threadsafe
       * function, never from inside release()).
       */
      if (r->on_main) {
        work_on((uint32_t)slot, r->last_activity, BOTH_DIRECTIONS);
        maybe_to_thread((uint32_t)slot);
      } else {
        r->again = 1;
        again_pending = 1;
        wake_thread();
      }
    }
  }
  pthread_mutex_unlock(&lock);
  if (err && err != ENOENT) return throw_errno(env, err, "release");
  napi_get_boolean(env, !err, &result);
  return result;
}

/* Whether a relay's upstream is as connect() left it: nothing read from it or written to it, no FIN or error seen on it. */
static int upstream_untouched(const relay *r) {
  if (r->state == SLOT_CONNECTED) return 1;
  const direction *in = &r->dir[0], *out = &r->dir[1];
  return r->state == SLOT_ACTIVE && r->held && !r->hung_up[1] && in->bytes == 0 && in->in_pipe == 0 && !in->head && !in->eof && out->bytes == 0 && out->in_pipe == 0 &&
         !out->head;
}

/*
 * cancel(id) and take(id): the slot taken out of the thread and freed; [bytesIn, bytesOut, reason, errno] (take: and the
 * upstream fd kept open for JS, or -1), undefined for an unknown id. `keep_upstream`: take()'s, see the top.
 */
static napi_value end_slot(napi_env env, napi_callback_info info, int keep_upstream) {
  size_t argc = 1;
  napi_value argv[1];
  double id;
  if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok || argc < 1 || napi_get_value_double(env, argv[0], &id) != napi_ok || id < 0) {
    napi_throw_type_error(env, "EINVAL", keep_upstream ? "take(id): id from connect()" : "cancel(id): id from start() or connect()");
    return NULL;
  }
  uint32_t slot = (uint32_t)((uint64_t)id % 4194304), gen = (uint32_t)((uint64_t)id / 4194304);
  pthread_mutex_lock(&lock);
  if (slot >= slot_count || slots[slot].gen != gen || slots[slot].state == SLOT_FREE) {
    pthread_mutex_unlock(&lock);
    return NULL;
  }
  relay *r = &slots[slot];
  int fd = -1;
  /* Connecting, connected or relaying: taken out of the thread (an upstream fd of the slot's own is closed, unless kept). */
  if (r->state != SLOT_ENDED) {
    if (keep_upstream && r->owns_upstream && upstream_untouched(r)) {
      /* Out of the epoll sets with the rest of the slot, but not closed: detach() closes only an fd the slot owns. */
      fd = r->fds[1];
      r->owns_upstream = 0;
    }
    detach(r);
  }
  int outcome_of_connect = r->keeps_alive;
  double values[5] = {(double)r->dir[0].bytes, (double)r->dir[1].bytes, r->state == SLOT_ENDED ? r->reason : REASON_DONE, r->state == SLOT_ENDED ? r->err : 0, fd};
  free_slot(slot);
  pthread_mutex_unlock(&lock);
  if (outcome_of_connect) connect_settled(env);
  uint32_t count = keep_upstream ? 5 : 4;
  napi_value result, v;
  napi_create_array_with_length(env, count, &result);
  for (uint32_t i = 0; i < count; i++) {
    napi_create_double(env, values[i], &v);
    napi_set_element(env, result, i, v);
  }
  return result;
}

static napi_value cancel(napi_env env, napi_callback_info info) { return end_slot(env, info, 0); }

static napi_value take(napi_env env, napi_callback_info info) { return end_slot(env, info, 1); }

static napi_value stats(napi_env env, napi_callback_info info) {
  (void)info;
  pthread_mutex_lock(&lock);
  double values[6] = {active_count, started_total, pipes_open, spare_count, on_main_count, moved_total};
  pthread_mutex_unlock(&lock);
  const char *names[6] = {"relays", "started", "pipes", "sparePipes", "onMainLoop", "movedToThread"};
  napi_value result, v;
  napi_create_object(env, &result);
  for (int i = 0; i < 6; i++) {
    napi_create_double(env, values[i], &v);
    napi_set_named_property(env, result, names[i], v);
  }
  return result;
}

static napi_value set_main_loop_bytes(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value argv[1];
  int64_t bytes;
  if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok || argc < 1 || !read_int64(env, argv[0], &bytes) || bytes < 0) {
    napi_throw_type_error(env, "EINVAL", "mainLoopBytes(n): n >= 0");
    return NULL;
  }
  pthread_mutex_lock(&lock);
  main_loop_bytes = (uint64_t)bytes;
  pthread_mutex_unlock(&lock);
  return NULL;
}

NAPI_MODULE_INIT() {
  napi_value fn;
  napi_create_function(env, "init", NAPI_AUTO_LENGTH, init, NULL, &fn);
  napi_set_named_property(env, exports, "init", fn);
  napi_create_function(env, "start", NAPI_AUTO_LENGTH, start, NULL, &fn);
  napi_set_named_property(env, exports, "start", fn);
  napi_create_function(env, "cancel", NAPI_AUTO_LENGTH, cancel, NULL, &fn);
  napi_set_named_property(env, exports, "cancel", fn);
  napi_create_function(env, "connect", NAPI_AUTO_LENGTH, connect_upstream, NULL, &fn);
  napi_set_named_property(env, exports, "connect", fn);
  napi_create_function(env, "attach", NAPI_AUTO_LENGTH, attach, NULL, &fn);
  napi_set_named_property(env, exports, "attach", fn);
  napi_create_function(env, "release", NAPI_AUTO_LENGTH, release, NULL, &fn);
  napi_set_named_property(env, exports, "release", fn);
  napi_create_function(env, "take", NAPI_AUTO_LENGTH, take, NULL, &fn);
  napi_set_named_property(env, exports, "take", fn);
  napi_create_function(env, "pump", NAPI_AUTO_LENGTH, pump_body, NULL, &fn);
  napi_set_named_property(env, exports, "pump", fn);
  napi_create_function(env, "stats", NAPI_AUTO_LENGTH, stats, NULL, &fn);
  napi_set_named_property(env, exports, "stats", fn);
  napi_create_function(env, "mainLoopBytes", NAPI_AUTO_LENGTH, set_main_loop_bytes, NULL, &fn);
  napi_set_named_property(env, exports, "mainLoopBytes", fn);
  return exports;
}
