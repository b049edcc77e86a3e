/*
 * The per-VM monitor (like conmon): a small detached process that owns the hypervisor
 * child, the agent channel, the console log and the exit record, and serves the control
 * socket. One poll loop; every fd non-blocking; no work in signal handlers (signalfd).
 *
 * Relay: each client numbers its own exec channels; the monitor maps (client, channel) to
 * a VM-wide channel id towards the agent and back.
 */
#include "vm-internal.h"
#include "mvm/image.h"
#include "mvm/paths.h"
#include "mvm/proto.h"
#include "image/image-internal.h"
#include "log.h"
#include "proc.h"
#include "util.h"

#include <fcntl.h>
#include <jansson.h>
#include <poll.h>
#include <signal.h>
#include <string.h>
#include <sys/file.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>

#define MAX_CLIENTS 128
#define MAX_SESSIONS 256
/* stop reading from a peer while the other side has this much queued */
#define BACKPRESSURE_BYTES (4u << 20)

struct outbuf {
    uint8_t *data;
    size_t len, cap;
};

struct conn {
    int fd;
    struct mvm_frame_reader rd;
    struct outbuf out;
    bool hello;
    bool closing; /* close once out is flushed */
};

struct session {
    bool used;
    uint32_t gchan;      /* channel towards the agent */
    struct conn *client; /* NULL once the client went away */
    uint32_t cchan;      /* the client's channel id */
};

struct monitor {
    char *dir;
    struct vm_config cfg;
    mvm_image *img;
    const struct mvm_backend_ops *be;
    struct mvm_vm_spec spec;
    pid_t hv_pid;
    int ready_fd;
    int listen_fd;
    int sig_fd;
    struct conn agent;
    bool agent_ready;
    struct conn *clients[MAX_CLIENTS];
    struct session sessions[MAX_SESSIONS];
    uint32_t next_gchan;
    long long boot_deadline, stop_deadline, kill_deadline, hello_next;
    bool stopping, stop_requested, forced;
    bool paused;
};

static long long now_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1000LL + ts.tv_nsec / 1000000;
}

/* ---- buffered non-blocking output ---- */

static int out_push(struct outbuf *b, uint8_t type, uint32_t chan, const void *pl, size_t len) {
    if (len > MVM_FRAME_MAX)
        return -1;
    size_t need = b->len + MVM_FRAME_HDR + len;
    if (need > b->cap) {
        size_t nc = b->cap ? b->cap : 65536;
        while (nc < need)
            nc *= 2;
        uint8_t *nd = realloc(b->data, nc);
        if (!nd)
            return -1;
        b->data = nd;
        b->cap = nc;
    }
    mvm_frame_encode_hdr(b->data + b->len, type, chan, (uint32_t)len);
    if (len)
        memcpy(b->data + b->len + MVM_FRAME_HDR, pl, len);
    b->len = need;
    return 0;
}

static int out_flush(int fd, struct outbuf *b) {
    while (b->len > 0) {
        ssize_t n = send(fd, b->data, b->len, MSG_NOSIGNAL | MSG_DONTWAIT);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            if (errno == EAGAIN)
                return 0;
            return -1;
        }
        memmove(b->data, b->data + n, b->len - n);
        b->len -= n;
    }
    if (b->cap > (1u << 20)) { /* give memory back after a burst */
        free(b->data);
        b->data = NULL;
        b->cap = 0;
    }
    return 0;
}

static void conn_free(struct conn *c) {
    if (c->fd >= 0)
        close(c->fd);
    c->fd = -1;
    mvm_frame_reader_free(&c->rd);
    free(c->out.data);
    c->out = (struct outbuf){0};
}

static void send_json(struct conn *c, uint8_t type, uint32_t chan, struct mvm_mj_writer *w) {
    size_t len;
    char *j = mvm_mj_end(w, &len);
    if (j)
        out_push(&c->out, type, chan, j, len);
    free(j);
}

static void send_error(struct conn *c, uint32_t chan, const char *msg) {
    struct mvm_mj_writer w;
    mvm_mj_begin(&w);
    mvm_mj_str(&w, "message", msg);
    send_json(c, chan ? MVM_F_ERROR : MVM_F_CTL_RESP, chan, &w);
}

static const char *state_text(const struct monitor *m) {
    if (m->stopping)
        return "stopping";
    if (!m->agent_ready)
        return "starting";
    return m->paused ? "paused" : "running";
}

static void publish_state(struct monitor *m) {
    mvm_error *e = NULL;
    if (vm_write_text(m->dir, VM_STATE, state_text(m), &e) < 0) {
        log_warn("%s", e->msg);
        mvm_error_free(e);
    }
}

static void report_ready(struct monitor *m, const char *errmsg) {
    if (m->ready_fd < 0)
        return;
    char line[1200];
    int n = errmsg ? snprintf(line, sizeof(line), "error %s\n", errmsg) : snprintf(line, sizeof(line), "ok\n");
    if (n >= (int)sizeof(line))
        n = sizeof(line) - 1, line[n - 1] = '\n';
    (void)!write(m->ready_fd, line, n);
    close(m->ready_fd);
    m->ready_fd = -1;
}

/* Last non-empty line of a log file in the state dir, for error messages. */
static void log_tail(const char *dir, const char *file, char *out, size_t outlen) {
    out[0] = 0;
    _cleanup_free_ char *p = NULL;
    if (asprintf(&p, "%s/%s", dir, file) < 0)
        return;
    _cleanup_close_ int fd = open(p, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return;
    char buf[4096];
    off_t sz = lseek(fd, 0, SEEK_END);
    off_t start = sz > (off_t)sizeof(buf) - 1 ? sz - (off_t)sizeof(buf) + 1 : 0;
    ssize_t n = pread(fd, buf, sizeof(buf) - 1, start);
    if (n <= 0)
        return;
    buf[n] = 0;
    while (n > 0 && (buf[n - 1] == '\n' || buf[n - 1] == '\r' || buf[n - 1] == ' '))
        buf[--n] = 0;
    char *l = strrchr(buf, '\n');
    const char *src = l ? l + 1 : buf;
    size_t sl = strlen(src);
    if (sl >= outlen)
        sl = outlen - 1;
    memcpy(out, src, sl);
    out[sl] = 0;
    for (char *c = out; *c; c++)
        if ((unsigned char)*c < 0x20)
            *c = ' ';
}

/* ---- sessions ---- */

static struct session *session_by_gchan(struct monitor *m, uint32_t g) {
    for (int i = 0; i < MAX_SESSIONS; i++)
        if (m->sessions[i].used && m->sessions[i].gchan == g)
            return &m->sessions[i];
    return NULL;
}

static struct session *session_by_client(struct monitor *m, struct conn *c, uint32_t cchan) {
    for (int i = 0; i < MAX_SESSIONS; i++)
        if (m->sessions[i].used && m->sessions[i].client == c && m->sessions[i].cchan == cchan)
            return &m->sessions[i];
    return NULL;
}

/* ---- stop ---- */

static void begin_stop(struct monitor *m, int timeout_s) {
    long long now = now_ms();
    m->stop_requested = true;
    if (!m->stopping) {
        m->stopping = true;
        publish_state(m);
        log_info("stopping (timeout %d s)", timeout_s);
        if (m->agent_ready && timeout_s > 0) {
            const char *j = "{\"reboot\":false}";
            out_push(&m->agent.out, MVM_F_SHUTDOWN, 0, j, strlen(j));
            m->stop_deadline = now + timeout_s * 1000LL;
            return;
        }
    }
    /* a second, shorter request shortens the deadline */
    long long d = now + (long long)timeout_s * 1000;
    if (!m->stop_deadline || d < m->stop_deadline)
        m->stop_deadline = timeout_s > 0 && m->agent_ready ? d : now;
}

static void force_kill(struct monitor *m) {
    if (m->forced || m->hv_pid <= 0)
        return;
    m->forced = true;
    log_info("forcing the hypervisor down");
    mvm_error *e = NULL;
    if (m->be->kill(&m->spec, m->hv_pid, &e) < 0) {
        log_warn("%s", e->msg);
        mvm_error_free(e);
        kill(m->hv_pid, SIGKILL);
    }
    m->kill_deadline = now_ms() + 3000;
}

/* ---- agent frames ---- */

static void agent_send_hello(struct monitor *m) {
    struct mvm_mj_writer w;
    mvm_mj_begin(&w);
    mvm_mj_int(&w, "version", MVM_PROTO_VERSION);
    mvm_mj_str(&w, "role", "monitor");
    send_json(&m->agent, MVM_F_HELLO, 0, &w);
}

static void on_agent_frame(struct monitor *m, const struct mvm_frame_hdr *h, const uint8_t *pl) {
    if (h->type == MVM_F_HELLO) {
        long long v = 0;
        if (mvm_mj_get_int((const char *)pl, h->len, "version", &v) != 1 || v != MVM_PROTO_VERSION) {
            log_error("agent speaks protocol version %lld, expected %d", v, MVM_PROTO_VERSION);
            report_ready(m, "guest agent speaks an incompatible protocol version");
            return;
        }
        if (!m->agent_ready) {
            m->agent_ready = true;
            log_info("agent ready");
            if (!m->stopping)
                publish_state(m);
            report_ready(m, NULL);
        }
        return;
    }
    if (h->chan == 0)
        return; /* PONG and such */
    struct session *s = session_by_gchan(m, h->chan);
    if (!s)
        return;
    if (s->client)
        out_push(&s->client->out, h->type, s->cchan, pl, h->len);
    if (h->type == MVM_F_EXIT || h->type == MVM_F_ERROR)
        s->used = false;
}

/* ---- client frames ---- */

static void client_ctl(struct monitor *m, struct conn *c, const char *js, size_t len) {
    _cleanup_free_ char *op = NULL;
    if (mvm_mj_get_str(js, len, "op", &op) != 1) {
        send_error(c, 0, "control request without op");
        return;
    }
    struct mvm_mj_writer w;
    mvm_mj_begin(&w);
    if (!strcmp(op, "status")) {
        mvm_mj_str(&w, "state", state_text(m));
        mvm_mj_int(&w, "hypervisor_pid", m->hv_pid);
    } else if (!strcmp(op, "stop")) {
        long long t = 10;
        mvm_mj_get_int(js, len, "timeout", &t);
        begin_stop(m, t < 0 ? 0 : t > 3600 ? 3600 : (int)t);
        mvm_mj_str(&w, "state", "stopping");
    } else if (!strcmp(op, "pause") || !strcmp(op, "resume")) {
        bool pause = !strcmp(op, "pause");
        mvm_error *e = NULL;
        if (m->stopping || !m->agent_ready) {
            mvm_mj_str(&w, "error", "VM is not running");
        } else if ((pause ? m->be->pause : m->be->resume)(&m->spec, &e) < 0) {
            mvm_mj_str(&w, "error", e->msg);
            mvm_error_free(e);
        } else {
            m->paused = pause;
            publish_state(m);
            mvm_mj_str(&w, "state", state_text(m));
        }
    } else {
        mvm_mj_str(&w, "error", "unknown control operation");
    }
    send_json(c, MVM_F_CTL_RESP, 0, &w);
}

static void on_client_frame(struct monitor *m, struct conn *c, const struct mvm_frame_hdr *h,
                            const uint8_t *pl) {
    const char *js = (const char *)pl;
    switch (h->type) {
    case MVM_F_HELLO: {
        c->hello = true;
        struct mvm_mj_writer w;
        mvm_mj_begin(&w);
        mvm_mj_int(&w, "version", MVM_PROTO_VERSION);
        mvm_mj_str(&w, "role", "monitor");
        mvm_mj_str(&w, "state", state_text(m));
        mvm_mj_str(&w, "name", m->cfg.name);
        send_json(c, MVM_F_HELLO, 0, &w);
        return;
    }
    case MVM_F_PING:
        out_push(&c->out, MVM_F_PONG, 0, pl, h->len);
        return;
    case MVM_F_CTL_REQ:
        client_ctl(m, c, js, h->len);
        return;
    case MVM_F_EXEC: {
        if (!m->agent_ready || m->stopping) {
            send_error(c, h->chan, "VM is not running");
            return;
        }
        if (h->chan == 0 || session_by_client(m, c, h->chan)) {
            send_error(c, h->chan, "channel already in use");
            return;
        }
        struct session *s = NULL;
        for (int i = 0; i < MAX_SESSIONS && !s; i++)
            if (!m->sessions[i].used)
                s = &m->sessions[i];
        if (!s) {
            send_error(c, h->chan, "too many concurrent exec sessions");
            return;
        }
        if (++m->next_gchan == 0)
            m->next_gchan = 1;
        *s = (struct session){.used = true, .gchan = m->next_gchan, .client = c, .cchan = h->chan};
        out_push(&m->agent.out, MVM_F_EXEC, s->gchan, pl, h->len);
        return;
    }
    case MVM_F_STDIN:
    case MVM_F_RESIZE:
    case MVM_F_SIGNAL: {
        struct session *s = session_by_client(m, c, h->chan);
        if (s)
            out_push(&m->agent.out, h->type, s->gchan, pl, h->len);
        return;
    }
    default:
        return;
    }
}

static void client_drop(struct monitor *m, int idx) {
    struct conn *c = m->clients[idx];
    /* a vanished client is a hung-up terminal for its commands */
    for (int i = 0; i < MAX_SESSIONS; i++) {
        struct session *s = &m->sessions[i];
        if (!s->used || s->client != c)
            continue;
        s->client = NULL;
        const char *sig = "{\"signal\":1}";
        out_push(&m->agent.out, MVM_F_STDIN, s->gchan, NULL, 0);
        out_push(&m->agent.out, MVM_F_SIGNAL, s->gchan, sig, strlen(sig));
    }
    conn_free(c);
    free(c);
    m->clients[idx] = NULL;
}

/* Reads what is available and dispatches whole frames. Returns -1 when the peer is gone. */
static int conn_read(struct monitor *m, struct conn *c, bool is_agent) {
    uint8_t buf[65536];
    for (int rounds = 0; rounds < 16; rounds++) {
        ssize_t n = recv(c->fd, buf, sizeof(buf), MSG_DONTWAIT);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            return errno == EAGAIN ? 0 : -1;
        }
        if (n == 0)
            return -1;
        if (mvm_frame_reader_feed(&c->rd, buf, n) < 0)
            return -1;
        struct mvm_frame_hdr h;
        const uint8_t *pl;
        int r;
        while ((r = mvm_frame_reader_next(&c->rd, &h, &pl)) == 1) {
            if (is_agent)
                on_agent_frame(m, &h, pl);
            else
                on_client_frame(m, c, &h, pl);
        }
        if (r < 0) {
            log_warn("%s sent a malformed frame; closing it", is_agent ? "agent" : "client");
            return -1;
        }
        if ((size_t)n < sizeof(buf))
            return 0;
    }
    return 0;
}

/* ---- setup ---- */

static int listen_ctl(const char *dir, mvm_error **err) {
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    if (snprintf(sa.sun_path, sizeof(sa.sun_path), "%s/" VM_CTL_SOCK, dir) >= (int)sizeof(sa.sun_path))
        return mvm_error_set(err, ENAMETOOLONG, "state path too long for a socket: %s", dir);
    unlink(sa.sun_path);
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    if (fd < 0)
        return mvm_error_sys(err, "socket");
    if (bind(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0 || listen(fd, 64) < 0) {
        close(fd);
        return mvm_error_sys(err, "listen on %s", sa.sun_path);
    }
    return fd;
}

static void write_status(struct monitor *m, int wstatus) {
    char reason[512];
    int code = -1;
    if (m->stop_requested && !m->forced)
        snprintf(reason, sizeof(reason), "stopped");
    else if (m->stop_requested)
        snprintf(reason, sizeof(reason), "stopped (forced after timeout)");
    else if (WIFEXITED(wstatus) && WEXITSTATUS(wstatus) == 0)
        snprintf(reason, sizeof(reason), "guest powered off");
    else {
        char d[96], tail[160];
        mvm_describe_status(wstatus, d, sizeof(d));
        log_tail(m->dir, "hypervisor.log", tail, sizeof(tail));
        snprintf(reason, sizeof(reason), "hypervisor %s%s%s", d, tail[0] ? ": " : "", tail);
    }
    if (WIFEXITED(wstatus))
        code = WEXITSTATUS(wstatus);
    else if (WIFSIGNALED(wstatus))
        code = 128 + WTERMSIG(wstatus);
    json_t *j = json_pack("{s:s, s:i, s:I}", "reason", reason, "exit_code", code, "finished",
                          (json_int_t)time(NULL));
    char *s = j ? json_dumps(j, JSON_SORT_KEYS) : NULL;
    json_decref(j);
    mvm_error *e = NULL;
    if (s && vm_write_text(m->dir, VM_STATUS, s, &e) < 0) {
        log_error("%s", e->msg);
        mvm_error_free(e);
    }
    free(s);
    log_info("hypervisor ended: %s", reason);
}

static int monitor_setup(struct monitor *m, mvm_error **err) {
    if (vm_config_read(m->dir, &m->cfg, err) < 0)
        return -1;
    m->be = mvm_backend_by_name(m->cfg.backend);
    if (!m->be)
        return mvm_error_set(err, MVM_EINVAL, "unknown backend %s", m->cfg.backend);
    /* `run` verified every artifact just before starting this monitor (hash-on-load); not
     * touching libcrypto here keeps the monitor's memory small */
    _cleanup_free_ char *cache = mvm_path_cache(err);
    if (!cache || image_load_unchecked(cache, m->cfg.digest, &m->img, err) < 0)
        return -1;
    enum mvm_accel accel;
    if (mvm_accel_parse(m->cfg.accel, &accel, err) < 0)
        return -1;
    m->spec = (struct mvm_vm_spec){.name = m->cfg.name, .state_dir = m->dir, .image = m->img,
                                   .cpus = m->cfg.cpus, .mem_mib = m->cfg.mem_mib, .accel = accel,
                                   .disks = m->cfg.disks, .n_disks = m->cfg.n_disks,
                                   .net_user = m->cfg.net_user};
    if (m->be->prepare(&m->spec, err) < 0)
        return -1;
    if ((m->listen_fd = listen_ctl(m->dir, err)) < 0)
        return -1;
    if (m->be->start(&m->spec, &m->hv_pid, err) < 0)
        return -1;
    char pid[32];
    snprintf(pid, sizeof(pid), "%d\n", (int)m->hv_pid);
    if (vm_write_text(m->dir, VM_HYPERVISOR_PID, pid, err) < 0)
        return -1;
    log_info("%s started, pid %d", m->be->name, (int)m->hv_pid);
    int afd = m->be->agent_connect(&m->spec, 10000, err);
    if (afd < 0)
        return -1;
    fcntl(afd, F_SETFL, fcntl(afd, F_GETFL) | O_NONBLOCK);
    m->agent.fd = afd;
    return 0;
}

int mvm_monitor_main(const char *state_dir, int ready_fd) {
    struct monitor m = {.ready_fd = ready_fd, .listen_fd = -1, .sig_fd = -1, .agent.fd = -1};
    fcntl(ready_fd, F_SETFD, FD_CLOEXEC);
    const char *lfd = getenv(VM_LOCK_FD_ENV);
    if (lfd) {
        fcntl(atoi(lfd), F_SETFD, FD_CLOEXEC); /* keep holding it; the hypervisor must not */
        unsetenv(VM_LOCK_FD_ENV);
    }
    m.dir = strdup(state_dir);
    _cleanup_free_ char *logp = NULL;
    if (asprintf(&logp, "%s/monitor.log", state_dir) >= 0) {
        int fd = open(logp, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600);
        if (fd >= 0) {
            mvm_log_set_fd(fd);
            close(fd);
        }
    }
    mvm_log_set_level(MVM_LOG_INFO);
    char pid[32];
    snprintf(pid, sizeof(pid), "%d\n", (int)getpid());
    mvm_error *err = NULL;
    vm_write_text(state_dir, VM_MONITOR_PID, pid, NULL);
    publish_state(&m);
    mvm_frame_reader_init(&m.agent.rd);

    sigset_t mask;
    sigemptyset(&mask);
    sigaddset(&mask, SIGCHLD);
    sigaddset(&mask, SIGTERM);
    sigaddset(&mask, SIGINT);
    sigaddset(&mask, SIGHUP);
    sigprocmask(SIG_BLOCK, &mask, NULL);
    signal(SIGPIPE, SIG_IGN);
    m.sig_fd = signalfd(-1, &mask, SFD_CLOEXEC | SFD_NONBLOCK);

    if (monitor_setup(&m, &err) < 0) {
        log_error("%s", err->msg);
        report_ready(&m, err->msg);
        mvm_error_free(err);
        if (m.hv_pid > 0) {
            kill(m.hv_pid, SIGKILL);
            waitpid(m.hv_pid, NULL, 0);
        }
        json_t *j = json_pack("{s:s, s:i, s:I}", "reason", "failed to start", "exit_code", -1,
                              "finished", (json_int_t)time(NULL));
        char *s = j ? json_dumps(j, 0) : NULL;
        if (s)
            vm_write_text(state_dir, VM_STATUS, s, NULL);
        free(s);
        json_decref(j);
        return 1;
    }

    long long start = now_ms();
    m.boot_deadline = start + (m.cfg.boot_timeout_s > 0 ? m.cfg.boot_timeout_s : 120) * 1000LL;
    m.hello_next = start;
    int wstatus = 0;
    bool hv_done = false;

    while (!hv_done) {
        long long now = now_ms();
        if (!m.agent_ready && !m.stopping && now >= m.hello_next) {
            agent_send_hello(&m); /* repeated until the agent answers */
            m.hello_next = now + 500;
        }
        if (!m.agent_ready && !m.stopping && now >= m.boot_deadline) {
            char tail[200], msg[400];
            log_tail(m.dir, "console.log", tail, sizeof(tail));
            snprintf(msg, sizeof(msg), "guest agent not ready within %d s (last console line: %s)",
                     m.cfg.boot_timeout_s, tail[0] ? tail : "none");
            log_error("%s", msg);
            report_ready(&m, msg);
            m.stopping = true;
            m.stop_requested = true;
            force_kill(&m);
        }
        if (m.stopping && m.stop_deadline && now >= m.stop_deadline && !m.forced)
            force_kill(&m);
        if (m.forced && m.kill_deadline && now >= m.kill_deadline) {
            kill(m.hv_pid, SIGKILL);
            m.kill_deadline = 0;
        }

        struct pollfd pf[3 + MAX_CLIENTS];
        int nfd = 0;
        size_t client_backlog = 0;
        for (int i = 0; i < MAX_CLIENTS; i++)
            if (m.clients[i])
                client_backlog = client_backlog > m.clients[i]->out.len ? client_backlog : m.clients[i]->out.len;
        pf[nfd++] = (struct pollfd){.fd = m.sig_fd, .events = POLLIN};
        pf[nfd++] = (struct pollfd){.fd = m.listen_fd, .events = POLLIN};
        pf[nfd++] = (struct pollfd){.fd = m.agent.fd,
                                    .events = (client_backlog < BACKPRESSURE_BYTES ? POLLIN : 0) |
                                              (m.agent.out.len ? POLLOUT : 0)};
        int cidx[MAX_CLIENTS];
        for (int i = 0; i < MAX_CLIENTS; i++) {
            struct conn *c = m.clients[i];
            if (!c)
                continue;
            cidx[nfd - 3] = i;
            short ev = (c->out.len ? POLLOUT : 0);
            if (!c->closing && m.agent.out.len < BACKPRESSURE_BYTES)
                ev |= POLLIN;
            pf[nfd++] = (struct pollfd){.fd = c->fd, .events = ev};
        }
        long long next = m.hello_next;
        if (m.agent_ready || m.stopping)
            next = now + 1000;
        if (!m.agent_ready && !m.stopping && m.boot_deadline < next)
            next = m.boot_deadline;
        if (m.stop_deadline && !m.forced && m.stop_deadline < next)
            next = m.stop_deadline;
        if (m.kill_deadline && m.kill_deadline < next)
            next = m.kill_deadline;
        int timeout = next > now ? (int)(next - now) : 0;
        if (poll(pf, nfd, timeout) < 0 && errno != EINTR)
            break;

        if (pf[0].revents & POLLIN) {
            struct signalfd_siginfo si;
            while (read(m.sig_fd, &si, sizeof(si)) == sizeof(si)) {
                if (si.ssi_signo == SIGCHLD) {
                    int st;
                    pid_t p;
                    while ((p = waitpid(-1, &st, WNOHANG)) > 0)
                        if (p == m.hv_pid) {
                            wstatus = st;
                            hv_done = true;
                        }
                } else {
                    log_info("signal %d: stopping", si.ssi_signo);
                    begin_stop(&m, 10);
                }
            }
        }
        if (pf[1].revents & POLLIN) {
            int cfd;
            while ((cfd = accept4(m.listen_fd, NULL, NULL, SOCK_CLOEXEC | SOCK_NONBLOCK)) >= 0) {
                int slot = -1;
                for (int i = 0; i < MAX_CLIENTS && slot < 0; i++)
                    if (!m.clients[i])
                        slot = i;
                struct conn *c = slot >= 0 ? calloc(1, sizeof(*c)) : NULL;
                if (!c) {
                    close(cfd);
                    continue;
                }
                c->fd = cfd;
                mvm_frame_reader_init(&c->rd);
                m.clients[slot] = c;
            }
        }
        if (m.agent.fd >= 0 && (pf[2].revents & POLLOUT))
            out_flush(m.agent.fd, &m.agent.out);
        if (m.agent.fd >= 0 && (pf[2].revents & (POLLIN | POLLHUP | POLLERR))) {
            if (conn_read(&m, &m.agent, true) < 0) {
                /* the hypervisor closed the channel: it is exiting; SIGCHLD follows */
                log_info("agent channel closed");
                close(m.agent.fd);
                m.agent.fd = -1;
                m.agent_ready = false;
            }
        }
        for (int k = 3; k < nfd; k++) {
            int i = cidx[k - 3];
            struct conn *c = m.clients[i];
            if (!c)
                continue;
            if ((pf[k].revents & POLLOUT) && out_flush(c->fd, &c->out) < 0) {
                client_drop(&m, i);
                continue;
            }
            if (pf[k].revents & (POLLIN | POLLHUP | POLLERR)) {
                if (conn_read(&m, c, false) < 0) {
                    client_drop(&m, i);
                    continue;
                }
            }
        }
        /* push out what the frames above queued */
        if (m.agent.fd >= 0 && m.agent.out.len)
            out_flush(m.agent.fd, &m.agent.out);
        for (int i = 0; i < MAX_CLIENTS; i++)
            if (m.clients[i] && m.clients[i]->out.len && out_flush(m.clients[i]->fd, &m.clients[i]->out) < 0)
                client_drop(&m, i);
    }

    write_status(&m, wstatus);
    if (!m.agent_ready)
        report_ready(&m, "the hypervisor exited during boot (see mvmctl logs)");
    for (int i = 0; i < MAX_CLIENTS; i++)
        if (m.clients[i]) {
            out_flush(m.clients[i]->fd, &m.clients[i]->out);
            client_drop(&m, i);
        }
    /* sockets of a dead VM must not accept connections */
    _cleanup_free_ char *p = NULL;
    if (asprintf(&p, "%s/" VM_CTL_SOCK, m.dir) >= 0)
        unlink(p);
    conn_free(&m.agent);
    vm_config_clear(&m.cfg);
    mvm_image_free(m.img);
    free(m.dir);
    return 0;
}
