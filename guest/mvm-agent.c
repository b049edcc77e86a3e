/*
 * mvm-agent: the guest side of the mvm agent protocol (include/mvm/proto.h).
 *
 * Transport (first match wins):
 *   --fd N              use an inherited, already connected fd
 *   --vsock PORT        connect to the host (CID 2) on vsock PORT
 *   --vsock-listen PORT listen on vsock PORT and serve one connection at a time
 *   (default)           the virtio-serial port named org.mvm.agent.0
 * --debug logs every frame to stderr.
 *
 * One single-threaded poll() loop serves the transport, a signalfd for SIGCHLD and the
 * output pipes / pty masters of every exec session.
 */
#include "mvm/proto.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pty.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <termios.h>
#include <time.h>
#include <unistd.h>

#include "vsock.h"

#define MAX_SESSIONS 256
#define READ_CHUNK (32 * 1024)
#define STDIN_PENDING_MAX (8u * 1024 * 1024)
#define STDIN_PENDING_HOLD (1u * 1024 * 1024)
#define PORT_WAIT_MS 10000
#define IDLE_RETRY_MS 50

static const char *const caps[] = { "exec", "tty", "signal", "resize", "ping", "shutdown", NULL };

enum transport_kind { T_VIRTIO, T_FD, T_VSOCK_CONNECT, T_VSOCK_LISTEN };

static struct {
    enum transport_kind kind;
    unsigned port;      /* vsock port */
    int fd;             /* connected transport, -1 if none */
    int listen_fd;      /* T_VSOCK_LISTEN */
    bool idle;          /* virtio: host not connected; retry after idle_until */
    long long idle_until;
    struct mvm_frame_reader rd;
} tp = { .fd = -1, .listen_fd = -1 };

static bool debug_on;

struct session {
    uint32_t chan;
    pid_t pid;
    bool tty;
    bool exited;
    int status;
    int in_fd;  /* child's stdin (pipe write end, or a dup of the pty master) */
    int out_fd; /* stdout pipe read end, or the pty master */
    int err_fd; /* stderr pipe read end, -1 with a tty */
    bool in_eof; /* close in_fd once pending is flushed */
    uint8_t *pending;
    size_t pending_len;
};

static struct session *sessions[MAX_SESSIONS];
static unsigned nsessions;

/* ------------------------------------------------------------------ helpers */

static void logmsg(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void logmsg(const char *fmt, ...)
{
    char buf[512];
    int n = snprintf(buf, sizeof(buf), "mvm-agent: ");
    va_list ap;
    va_start(ap, fmt);
    int m = vsnprintf(buf + n, sizeof(buf) - (size_t)n - 1, fmt, ap);
    va_end(ap);
    if (m < 0)
        m = 0;
    size_t len = (size_t)n + (size_t)m;
    if (len > sizeof(buf) - 2)
        len = sizeof(buf) - 2;
    buf[len++] = '\n';
    ssize_t w = write(STDERR_FILENO, buf, len);
    (void)w;
}

#define debug(...)                                                                             \
    do {                                                                                       \
        if (debug_on)                                                                          \
            logmsg(__VA_ARGS__);                                                               \
    } while (0)

static long long now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void sleep_ms(long ms)
{
    struct timespec ts = { ms / 1000, (ms % 1000) * 1000000L };
    while (nanosleep(&ts, &ts) < 0 && errno == EINTR)
        ;
}

static void xclose(int *fd)
{
    if (*fd >= 0) {
        close(*fd);
        *fd = -1;
    }
}

static int set_nonblock(int fd)
{
    int fl = fcntl(fd, F_GETFL);
    if (fl < 0)
        return -1;
    return fcntl(fd, F_SETFL, fl | O_NONBLOCK);
}

/* ------------------------------------------------------------------ transport */

static void transport_close(void)
{
    xclose(&tp.fd);
    mvm_frame_reader_free(&tp.rd);
    mvm_frame_reader_init(&tp.rd);
}

/* Finds /dev/<port> for the virtio-serial port named MVM_AGENT_PORT_NAME. */
static int find_virtio_port(char *dev, size_t cap)
{
    DIR *d = opendir("/sys/class/virtio-ports");
    if (!d)
        return -1;
    struct dirent *de;
    int rc = -1;
    while ((de = readdir(d))) {
        if (de->d_name[0] == '.')
            continue;
        char path[300], name[128];
        snprintf(path, sizeof(path), "/sys/class/virtio-ports/%s/name", de->d_name);
        int fd = open(path, O_RDONLY | O_CLOEXEC);
        if (fd < 0)
            continue;
        ssize_t n = read(fd, name, sizeof(name) - 1);
        close(fd);
        if (n <= 0)
            continue;
        name[n] = '\0';
        name[strcspn(name, "\n")] = '\0';
        if (strcmp(name, MVM_AGENT_PORT_NAME) == 0) {
            snprintf(dev, cap, "/dev/%s", de->d_name);
            rc = 0;
            break;
        }
    }
    closedir(d);
    return rc;
}

static int open_virtio(void)
{
    long long deadline = now_ms() + PORT_WAIT_MS;
    char dev[300];
    for (;;) {
        if (find_virtio_port(dev, sizeof(dev)) == 0) {
            int fd = open(dev, O_RDWR | O_CLOEXEC | O_NOCTTY);
            if (fd >= 0)
                return fd;
            if (now_ms() >= deadline) {
                logmsg("open %s: %s", dev, strerror(errno));
                return -1;
            }
        } else if (now_ms() >= deadline) {
            logmsg("no virtio-serial port named %s", MVM_AGENT_PORT_NAME);
            return -1;
        }
        sleep_ms(IDLE_RETRY_MS);
    }
}

static int open_vsock_connect(unsigned port)
{
    long long deadline = now_ms() + PORT_WAIT_MS;
    for (;;) {
        int fd = socket(AF_VSOCK, SOCK_STREAM | SOCK_CLOEXEC, 0);
        if (fd < 0) {
            logmsg("vsock socket: %s", strerror(errno));
            return -1;
        }
        struct sockaddr_vm sa = { .svm_family = AF_VSOCK, .svm_port = port,
                                  .svm_cid = VMADDR_CID_HOST };
        if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) == 0)
            return fd;
        int e = errno;
        close(fd);
        if (now_ms() >= deadline) {
            logmsg("vsock connect to port %u: %s", port, strerror(e));
            return -1;
        }
        sleep_ms(IDLE_RETRY_MS);
    }
}

static int open_vsock_listen(unsigned port)
{
    if (tp.listen_fd < 0) {
        int fd = socket(AF_VSOCK, SOCK_STREAM | SOCK_CLOEXEC, 0);
        if (fd < 0) {
            logmsg("vsock socket: %s", strerror(errno));
            return -1;
        }
        struct sockaddr_vm sa = { .svm_family = AF_VSOCK, .svm_port = port,
                                  .svm_cid = VMADDR_CID_ANY };
        if (bind(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0 || listen(fd, 1) < 0) {
            logmsg("vsock listen on port %u: %s", port, strerror(errno));
            close(fd);
            return -1;
        }
        tp.listen_fd = fd;
    }
    for (;;) {
        int fd = accept4(tp.listen_fd, NULL, NULL, SOCK_CLOEXEC);
        if (fd >= 0)
            return fd;
        if (errno != EINTR && errno != ECONNABORTED) {
            logmsg("vsock accept: %s", strerror(errno));
            return -1;
        }
    }
}

static void send_hello(void);

/* Opens (or reopens) the transport; exits when that is impossible. */
static void transport_open(void)
{
    transport_close();
    tp.idle = false;
    int fd = -1;
    switch (tp.kind) {
    case T_VIRTIO: fd = open_virtio(); break;
    case T_VSOCK_CONNECT: fd = open_vsock_connect(tp.port); break;
    case T_VSOCK_LISTEN: fd = open_vsock_listen(tp.port); break;
    case T_FD:
        logmsg("transport fd closed");
        exit(1);
    }
    if (fd < 0)
        exit(1);
    tp.fd = fd;
    debug("transport open (fd %d)", fd);
    send_hello();
}

static void send_frame(uint8_t type, uint32_t chan, const void *p, size_t len)
{
    if (tp.fd < 0)
        return;
    debug("-> %s chan %u len %zu", mvm_frame_type_name(type), chan, len);
    if (mvm_frame_write(tp.fd, type, chan, p, len) < 0) {
        logmsg("write %s frame: %s", mvm_frame_type_name(type), strerror(errno));
        if (tp.kind != T_VIRTIO || errno != EAGAIN)
            transport_close(); /* reopened by the main loop */
    }
}

static void send_json(uint8_t type, uint32_t chan, struct mvm_mj_writer *w)
{
    size_t len;
    char *js = mvm_mj_end(w, &len);
    if (!js) {
        logmsg("out of memory");
        return;
    }
    send_frame(type, chan, js, len);
    free(js);
}

static void send_error(uint32_t chan, const char *msg, int code)
{
    struct mvm_mj_writer w;
    mvm_mj_begin(&w);
    mvm_mj_str(&w, "message", msg);
    if (code)
        mvm_mj_int(&w, "code", code);
    send_json(MVM_F_ERROR, chan, &w);
}

static void send_hello(void)
{
    struct mvm_mj_writer w;
    mvm_mj_begin(&w);
    mvm_mj_int(&w, "version", MVM_PROTO_VERSION);
    mvm_mj_str(&w, "role", "agent");
    mvm_mj_strv(&w, "caps", (char *const *)caps);
    send_json(MVM_F_HELLO, 0, &w);
}

/* ------------------------------------------------------------------ sessions */

static struct session *session_find(uint32_t chan)
{
    for (unsigned i = 0; i < MAX_SESSIONS; i++)
        if (sessions[i] && sessions[i]->chan == chan)
            return sessions[i];
    return NULL;
}

static struct session *session_by_pid(pid_t pid)
{
    for (unsigned i = 0; i < MAX_SESSIONS; i++)
        if (sessions[i] && sessions[i]->pid == pid)
            return sessions[i];
    return NULL;
}

static void session_free(struct session *s)
{
    for (unsigned i = 0; i < MAX_SESSIONS; i++)
        if (sessions[i] == s) {
            sessions[i] = NULL;
            nsessions--;
        }
    xclose(&s->in_fd);
    xclose(&s->out_fd);
    xclose(&s->err_fd);
    free(s->pending);
    free(s);
}

/* Sends EXIT and frees the session once the child is reaped and its output drained. */
static void session_maybe_finish(struct session *s)
{
    if (!s->exited || s->out_fd >= 0 || s->err_fd >= 0)
        return;
    struct mvm_mj_writer w;
    mvm_mj_begin(&w);
    if (WIFSIGNALED(s->status))
        mvm_mj_int(&w, "signal", WTERMSIG(s->status));
    else
        mvm_mj_int(&w, "code", WEXITSTATUS(s->status));
    send_json(MVM_F_EXIT, s->chan, &w);
    debug("session %u finished", s->chan);
    session_free(s);
}

/* Builds the child's environment: defaults overlaid by the request's entries. */
static char **build_env(const struct mvm_exec_req *r)
{
    size_t n = 0;
    for (char **e = r->env; e && *e; e++)
        n++;
    char **env = calloc(n + 4, sizeof(char *));
    if (!env)
        return NULL;
    size_t k = 0;
    env[k++] = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";
    env[k++] = "HOME=/root";
    if (r->tty)
        env[k++] = "TERM=xterm";
    for (char **e = r->env; e && *e; e++) {
        size_t klen = (size_t)(strchr(*e, '=') - *e) + 1; /* decode guarantees a '=' */
        size_t j;
        for (j = 0; j < k; j++)
            if (strncmp(env[j], *e, klen) == 0)
                break;
        env[j] = *e;
        if (j == k)
            k++;
    }
    env[k] = NULL;
    return env;
}

struct child_err {
    int stage; /* 1 = chdir, 2 = exec */
    int err;
};

static void __attribute__((noreturn)) child_fail(int fd, int stage, int err)
{
    struct child_err ce = { stage, err };
    ssize_t w = write(fd, &ce, sizeof(ce));
    (void)w;
    _exit(stage == 2 && err == ENOENT ? 127 : 126);
}

static void handle_exec(uint32_t chan, const uint8_t *p, size_t len)
{
    if (chan == 0) {
        send_error(chan, "exec: channel 0 is reserved", 0);
        return;
    }
    if (session_find(chan)) {
        send_error(chan, "exec: channel already in use", 0);
        return;
    }
    if (nsessions >= MAX_SESSIONS) {
        send_error(chan, "exec: too many sessions", 0);
        return;
    }
    struct mvm_exec_req req;
    if (mvm_exec_req_decode((const char *)p, len, &req) < 0) {
        send_error(chan, "exec: malformed request", 0);
        return;
    }
    char **env = build_env(&req);
    struct session *s = calloc(1, sizeof(*s));
    int in[2] = { -1, -1 }, out[2] = { -1, -1 }, err[2] = { -1, -1 }, ep[2] = { -1, -1 };
    int master = -1, slave = -1;
    char msg[400];
    if (!env || !s) {
        send_error(chan, "exec: out of memory", 0);
        goto out;
    }
    s->chan = chan;
    s->tty = req.tty;
    s->in_fd = s->out_fd = s->err_fd = -1;

    if (pipe2(ep, O_CLOEXEC) < 0)
        goto sysfail;
    if (req.tty) {
        struct winsize ws = { .ws_row = (unsigned short)req.rows,
                              .ws_col = (unsigned short)req.cols };
        if (openpty(&master, &slave, NULL, NULL, &ws) < 0)
            goto sysfail;
        fcntl(master, F_SETFD, FD_CLOEXEC);
        fcntl(slave, F_SETFD, FD_CLOEXEC);
    } else {
        if (pipe2(in, O_CLOEXEC) < 0 || pipe2(out, O_CLOEXEC) < 0 || pipe2(err, O_CLOEXEC) < 0)
            goto sysfail;
    }

    pid_t pid = fork();
    if (pid < 0)
        goto sysfail;
    if (pid == 0) {
        sigset_t none;
        sigemptyset(&none);
        sigprocmask(SIG_SETMASK, &none, NULL);
        signal(SIGPIPE, SIG_DFL);
        setsid();
        if (req.tty) {
            ioctl(slave, TIOCSCTTY, 0);
            dup2(slave, 0);
            dup2(slave, 1);
            dup2(slave, 2);
        } else {
            dup2(in[0], 0);
            dup2(out[1], 1);
            dup2(err[1], 2);
        }
        if (req.cwd && chdir(req.cwd) < 0)
            child_fail(ep[1], 1, errno);
        execvpe(req.argv[0], req.argv, env);
        child_fail(ep[1], 2, errno);
    }

    /* parent */
    xclose(&ep[1]);
    xclose(&slave);
    xclose(&in[0]);
    xclose(&out[1]);
    xclose(&err[1]);
    struct child_err ce;
    ssize_t n;
    do
        n = read(ep[0], &ce, sizeof(ce));
    while (n < 0 && errno == EINTR);
    if (n == (ssize_t)sizeof(ce)) {
        while (waitpid(pid, NULL, 0) < 0 && errno == EINTR)
            ;
        if (ce.stage == 1)
            snprintf(msg, sizeof(msg), "chdir: %s: %s", req.cwd, strerror(ce.err));
        else
            snprintf(msg, sizeof(msg), "exec: %s: %s", req.argv[0], strerror(ce.err));
        send_error(chan, msg, ce.stage == 2 && ce.err == ENOENT ? 127 : 126);
        goto out;
    }

    s->pid = pid;
    if (req.tty) {
        s->out_fd = master;
        master = -1;
        s->in_fd = fcntl(s->out_fd, F_DUPFD_CLOEXEC, 3);
        set_nonblock(s->out_fd);
    } else {
        s->in_fd = in[1];
        s->out_fd = out[0];
        s->err_fd = err[0];
        in[1] = out[0] = err[0] = -1;
        set_nonblock(s->in_fd);
        set_nonblock(s->out_fd);
        set_nonblock(s->err_fd);
    }
    for (unsigned i = 0; i < MAX_SESSIONS; i++)
        if (!sessions[i]) {
            sessions[i] = s;
            nsessions++;
            break;
        }
    debug("session %u: pid %d %s", chan, (int)pid, req.argv[0]);
    {
        struct mvm_mj_writer w;
        mvm_mj_begin(&w);
        mvm_mj_int(&w, "pid", pid);
        send_json(MVM_F_STARTED, chan, &w);
    }
    s = NULL;
    goto out;

sysfail:
    snprintf(msg, sizeof(msg), "exec: %s", strerror(errno));
    send_error(chan, msg, 126);
out:
    xclose(&ep[0]);
    xclose(&ep[1]);
    xclose(&in[0]);
    xclose(&in[1]);
    xclose(&out[0]);
    xclose(&out[1]);
    xclose(&err[0]);
    xclose(&err[1]);
    xclose(&master);
    xclose(&slave);
    free(s);
    free(env);
    mvm_exec_req_free(&req);
}

/* Writes as much pending stdin as the child accepts. */
static void session_flush_stdin(struct session *s)
{
    while (s->in_fd >= 0 && s->pending_len > 0) {
        ssize_t n = write(s->in_fd, s->pending, s->pending_len);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            if (errno == EAGAIN)
                return;
            /* EPIPE etc: the child will not read any more */
            s->pending_len = 0;
            if (!s->tty)
                xclose(&s->in_fd);
            return;
        }
        memmove(s->pending, s->pending + n, s->pending_len - (size_t)n);
        s->pending_len -= (size_t)n;
    }
    if (s->in_eof && s->pending_len == 0 && !s->tty)
        xclose(&s->in_fd);
}

static void handle_stdin(struct session *s, const uint8_t *p, size_t len)
{
    if (len == 0) {
        if (!s->tty) /* a tty has no EOF of its own; the client sends ^D if it wants one */
            s->in_eof = true;
        session_flush_stdin(s);
        return;
    }
    if (s->in_fd < 0 || s->in_eof)
        return;
    if (s->pending_len + len > STDIN_PENDING_MAX) {
        logmsg("session %u: stdin backlog full, dropping %zu bytes", s->chan, len);
        return;
    }
    uint8_t *nb = realloc(s->pending, s->pending_len + len);
    if (!nb) {
        logmsg("session %u: out of memory for stdin", s->chan);
        return;
    }
    s->pending = nb;
    memcpy(s->pending + s->pending_len, p, len);
    s->pending_len += len;
    session_flush_stdin(s);
}

static void handle_resize(struct session *s, const uint8_t *p, size_t len)
{
    long long rows, cols;
    if (mvm_mj_get_int((const char *)p, len, "rows", &rows) != 1 ||
        mvm_mj_get_int((const char *)p, len, "cols", &cols) != 1 || rows < 0 || cols < 0 ||
        rows > 65535 || cols > 65535) {
        debug("session %u: bad RESIZE", s->chan);
        return;
    }
    if (!s->tty || s->out_fd < 0)
        return;
    struct winsize ws = { .ws_row = (unsigned short)rows, .ws_col = (unsigned short)cols };
    if (ioctl(s->out_fd, TIOCSWINSZ, &ws) < 0)
        debug("session %u: TIOCSWINSZ: %s", s->chan, strerror(errno));
}

static void handle_signal(struct session *s, const uint8_t *p, size_t len)
{
    long long sig;
    if (mvm_mj_get_int((const char *)p, len, "signal", &sig) != 1 || sig < 1 || sig > 64) {
        send_error(s->chan, "signal: malformed request", 0);
        return;
    }
    if (s->exited)
        return;
    if (kill(-s->pid, (int)sig) < 0 && kill(s->pid, (int)sig) < 0)
        debug("session %u: kill: %s", s->chan, strerror(errno));
}

static void handle_frame(const struct mvm_frame_hdr *h, const uint8_t *p)
{
    debug("<- %s chan %u len %u", mvm_frame_type_name(h->type), h->chan, h->len);
    switch (h->type) {
    case MVM_F_HELLO: {
        long long v;
        if (mvm_mj_get_int((const char *)p, h->len, "version", &v) == 1 && v != MVM_PROTO_VERSION)
            logmsg("peer speaks protocol version %lld, this agent %d", v, MVM_PROTO_VERSION);
        send_hello();
        return;
    }
    case MVM_F_PING:
        send_frame(MVM_F_PONG, h->chan, p, h->len);
        return;
    case MVM_F_SHUTDOWN: {
        bool reboot = false;
        mvm_mj_get_bool((const char *)p, h->len, "reboot", &reboot);
        logmsg("%s requested", reboot ? "reboot" : "shutdown");
        sync();
        if (kill(1, reboot ? SIGINT : SIGUSR2) < 0)
            logmsg("signal init: %s", strerror(errno));
        return;
    }
    case MVM_F_EXEC:
        handle_exec(h->chan, p, h->len);
        return;
    default:
        break;
    }
    struct session *s = h->chan ? session_find(h->chan) : NULL;
    if (!s) {
        debug("%s frame for unknown channel %u ignored", mvm_frame_type_name(h->type), h->chan);
        return;
    }
    switch (h->type) {
    case MVM_F_STDIN: handle_stdin(s, p, h->len); break;
    case MVM_F_RESIZE: handle_resize(s, p, h->len); break;
    case MVM_F_SIGNAL: handle_signal(s, p, h->len); break;
    default:
        debug("unexpected %s frame ignored", mvm_frame_type_name(h->type));
    }
}

/* Reads what the transport has; returns -1 when it must be reopened. */
static int transport_read(void)
{
    static uint8_t buf[64 * 1024];
    ssize_t n = read(tp.fd, buf, sizeof(buf));
    if (n < 0) {
        if (errno == EINTR || errno == EAGAIN)
            return 0;
        logmsg("transport read: %s", strerror(errno));
        return -1;
    }
    if (n == 0) {
        if (tp.kind == T_VIRTIO) {
            /* host side not connected: drop partial input and look again shortly */
            if (!tp.idle)
                debug("host not connected");
            mvm_frame_reader_free(&tp.rd);
            mvm_frame_reader_init(&tp.rd);
            tp.idle = true;
            tp.idle_until = now_ms() + IDLE_RETRY_MS;
            return 0;
        }
        debug("transport EOF");
        return -1;
    }
    if (tp.idle) {
        tp.idle = false;
    }
    if (mvm_frame_reader_feed(&tp.rd, buf, (size_t)n) < 0) {
        logmsg("out of memory");
        return -1;
    }
    struct mvm_frame_hdr h;
    const uint8_t *p;
    int rc = 0;
    while (tp.fd >= 0 && (rc = mvm_frame_reader_next(&tp.rd, &h, &p)) == 1)
        handle_frame(&h, p);
    if (tp.fd >= 0 && rc < 0) {
        logmsg("malformed frame header from host; resetting the stream");
        return -1;
    }
    return 0;
}

/* Forwards one chunk of session output; closes the fd at EOF. */
static void session_read(struct session *s, int *fd, uint8_t type)
{
    static uint8_t buf[READ_CHUNK];
    ssize_t n = read(*fd, buf, sizeof(buf));
    if (n < 0 && (errno == EINTR || errno == EAGAIN))
        return;
    if (n <= 0) { /* EOF, or EIO from a pty master whose slave side is all closed */
        xclose(fd);
        return;
    }
    send_frame(type, s->chan, buf, (size_t)n);
}

static void reap_children(int sfd)
{
    struct signalfd_siginfo si;
    while (read(sfd, &si, sizeof(si)) > 0)
        ;
    int st;
    pid_t pid;
    while ((pid = waitpid(-1, &st, WNOHANG)) > 0) {
        struct session *s = session_by_pid(pid);
        if (!s || s->exited)
            continue;
        s->exited = true;
        s->status = st;
        debug("session %u: pid %d exited (status 0x%x)", s->chan, (int)pid, st);
    }
}

/* ------------------------------------------------------------------ main loop */

static void usage(void)
{
    fprintf(stderr, "usage: mvm-agent [--debug] [--fd N | --vsock PORT | --vsock-listen PORT]\n");
    exit(2);
}

static unsigned parse_uint(const char *s)
{
    char *end;
    errno = 0;
    unsigned long v = strtoul(s, &end, 10);
    if (errno || !*s || *end || v > 0xffffffffUL)
        usage();
    return (unsigned)v;
}

int main(int argc, char **argv)
{
    tp.kind = T_VIRTIO;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--debug")) {
            debug_on = true;
        } else if (!strcmp(argv[i], "--fd") && i + 1 < argc) {
            tp.kind = T_FD;
            tp.fd = (int)parse_uint(argv[++i]);
        } else if (!strcmp(argv[i], "--vsock") && i + 1 < argc) {
            tp.kind = T_VSOCK_CONNECT;
            tp.port = parse_uint(argv[++i]);
        } else if (!strcmp(argv[i], "--vsock-listen") && i + 1 < argc) {
            tp.kind = T_VSOCK_LISTEN;
            tp.port = parse_uint(argv[++i]);
        } else {
            usage();
        }
    }

    /* make sure 0-2 are open so pipes never land there */
    for (int fd = 0; fd < 3; fd++)
        if (fcntl(fd, F_GETFD) < 0) {
            int n = open("/dev/null", O_RDWR);
            if (n >= 0 && n != fd) {
                dup2(n, fd);
                close(n);
            }
        }
    signal(SIGPIPE, SIG_IGN);
    sigset_t mask;
    sigemptyset(&mask);
    sigaddset(&mask, SIGCHLD);
    sigprocmask(SIG_BLOCK, &mask, NULL);
    int sfd = signalfd(-1, &mask, SFD_CLOEXEC | SFD_NONBLOCK);
    if (sfd < 0) {
        logmsg("signalfd: %s", strerror(errno));
        return 1;
    }

    mvm_frame_reader_init(&tp.rd);
    if (tp.kind == T_FD) {
        fcntl(tp.fd, F_SETFD, FD_CLOEXEC);
        if (fcntl(tp.fd, F_GETFD) < 0) {
            logmsg("--fd %d: %s", tp.fd, strerror(errno));
            return 1;
        }
        send_hello();
    } else {
        transport_open();
    }

    static struct pollfd pfd[2 + MAX_SESSIONS * 3];
    static struct session *pses[2 + MAX_SESSIONS * 3];
    static int pkind[2 + MAX_SESSIONS * 3]; /* 0 out, 1 err, 2 in */
    for (;;) {
        if (tp.fd < 0)
            transport_open();
        nfds_t n = 0;
        int timeout = -1;
        int tidx = -1;
        pfd[n] = (struct pollfd){ .fd = sfd, .events = POLLIN };
        pses[n++] = NULL;
        if (tp.idle) {
            long long left = tp.idle_until - now_ms();
            timeout = left > 0 ? (int)left : 0;
        } else {
            tidx = (int)n;
            /* backpressure: while a command is slow to read its stdin, leave further
             * input in the transport instead of buffering (or dropping) it here */
            bool backlog = false;
            for (unsigned i = 0; i < MAX_SESSIONS && !backlog; i++)
                backlog = sessions[i] && sessions[i]->pending_len >= STDIN_PENDING_HOLD;
            pfd[n] = (struct pollfd){ .fd = tp.fd, .events = backlog ? 0 : POLLIN };
            pses[n++] = NULL;
        }
        for (unsigned i = 0; i < MAX_SESSIONS; i++) {
            struct session *s = sessions[i];
            if (!s)
                continue;
            if (s->out_fd >= 0) {
                pfd[n] = (struct pollfd){ .fd = s->out_fd, .events = POLLIN };
                pses[n] = s;
                pkind[n++] = 0;
            }
            if (s->err_fd >= 0) {
                pfd[n] = (struct pollfd){ .fd = s->err_fd, .events = POLLIN };
                pses[n] = s;
                pkind[n++] = 1;
            }
            if (s->in_fd >= 0 && s->pending_len > 0) {
                pfd[n] = (struct pollfd){ .fd = s->in_fd, .events = POLLOUT };
                pses[n] = s;
                pkind[n++] = 2;
            }
        }
        int rc = poll(pfd, n, timeout);
        if (rc < 0) {
            if (errno != EINTR) {
                logmsg("poll: %s", strerror(errno));
                sleep_ms(10);
            }
            continue;
        }
        if (tp.idle && now_ms() >= tp.idle_until)
            tp.idle = false; /* poll the transport again */

        if (pfd[0].revents)
            reap_children(sfd);
        /* session output before transport input, so a new frame can't free a polled session */
        for (nfds_t i = 0; i < n; i++) {
            struct session *s = pses[i];
            if (!s || !pfd[i].revents)
                continue;
            if (pkind[i] == 0 && s->out_fd == pfd[i].fd)
                session_read(s, &s->out_fd, MVM_F_STDOUT);
            else if (pkind[i] == 1 && s->err_fd == pfd[i].fd)
                session_read(s, &s->err_fd, MVM_F_STDERR);
            else if (pkind[i] == 2 && s->in_fd == pfd[i].fd)
                session_flush_stdin(s);
        }
        for (unsigned i = 0; i < MAX_SESSIONS; i++)
            if (sessions[i])
                session_maybe_finish(sessions[i]);
        if (tidx >= 0 && tp.fd >= 0 && pfd[tidx].revents) {
            if (transport_read() < 0)
                transport_close();
        }
    }
}
