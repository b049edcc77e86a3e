/* Client side of a VM's control socket: handshake, control requests, exec sessions. */
#include "vm-internal.h"
#include "mvm/proto.h"
#include "util.h"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <termios.h>
#include <time.h>

struct mvm_client {
    int fd;
    char *name;
};

int mvm_client_fd(const mvm_client *c) { return c->fd; }

void mvm_client_free(mvm_client *c) {
    if (c->fd >= 0)
        close(c->fd);
    free(c->name);
    free(c);
}

static int not_running(const char *name, mvm_error **err) {
    return mvm_error_set(err, MVM_ESTATE, "VM '%s' is not running (see mvmctl ls -a)", name);
}

int mvm_client_connect(const char *name, mvm_client **out, mvm_error **err) {
    _cleanup_free_ char *dir = mvm_vm_dir(name, err);
    if (!dir)
        return -1;
    struct stat st;
    if (stat(dir, &st) < 0)
        return mvm_error_set(err, MVM_ENOTFOUND, "no such VM '%s' (see mvmctl ls -a)", name);
    if (vm_lock_held(dir) != 1)
        return not_running(name, err);
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    if (snprintf(sa.sun_path, sizeof(sa.sun_path), "%s/" VM_CTL_SOCK, dir) >= (int)sizeof(sa.sun_path))
        return mvm_error_set(err, ENAMETOOLONG, "state path too long for a socket: %s", dir);
    _cleanup_close_ int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return mvm_error_sys(err, "socket");
    if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0) {
        if (errno == ENOENT || errno == ECONNREFUSED)
            return not_running(name, err);
        return mvm_error_sys(err, "connect to VM '%s'", name);
    }
    struct mvm_mj_writer w;
    mvm_mj_begin(&w);
    mvm_mj_int(&w, "version", MVM_PROTO_VERSION);
    mvm_mj_str(&w, "role", "client");
    size_t len;
    _cleanup_free_ char *hello = mvm_mj_end(&w, &len);
    if (!hello)
        return mvm_error_set(err, ENOMEM, "out of memory");
    if (mvm_frame_write(fd, MVM_F_HELLO, 0, hello, len) < 0)
        return not_running(name, err);
    struct mvm_frame_hdr h;
    _cleanup_free_ uint8_t *pl = NULL;
    int r = mvm_frame_read(fd, &h, &pl);
    if (r <= 0)
        return not_running(name, err);
    if (h.type != MVM_F_HELLO)
        return mvm_error_set(err, MVM_EPROTO, "VM '%s': unexpected %s frame in handshake", name,
                             mvm_frame_type_name(h.type));
    _cleanup_free_ char *state = NULL;
    if (mvm_mj_get_str((char *)pl, h.len, "state", &state) == 1 && strcmp(state, "running") != 0 &&
        strcmp(state, "paused") != 0)
        return mvm_error_set(err, MVM_ESTATE, "VM '%s' is %s", name, state);
    mvm_client *c = calloc(1, sizeof(*c));
    if (!c || !(c->name = strdup(name))) {
        free(c);
        return mvm_error_set(err, ENOMEM, "out of memory");
    }
    c->fd = steal_fd(&fd);
    *out = c;
    return 0;
}

int mvm_client_ctl(mvm_client *c, const char *req, char **resp, mvm_error **err) {
    if (mvm_frame_write(c->fd, MVM_F_CTL_REQ, 0, req, strlen(req)) < 0)
        return mvm_error_sys(err, "VM '%s': control request", c->name);
    for (;;) {
        struct mvm_frame_hdr h;
        uint8_t *pl = NULL;
        int r = mvm_frame_read(c->fd, &h, &pl);
        if (r <= 0) {
            free(pl);
            return mvm_error_set(err, EPIPE, "VM '%s': monitor closed the connection", c->name);
        }
        if (h.type == MVM_F_CTL_RESP) {
            _cleanup_free_ char *e = NULL;
            if (mvm_mj_get_str((char *)pl, h.len, "error", &e) == 1) {
                free(pl);
                return mvm_error_set(err, MVM_ESTATE, "VM '%s': %s", c->name, e);
            }
            if (resp)
                *resp = (char *)pl;
            else
                free(pl);
            return 0;
        }
        free(pl);
    }
}

/* ---- exec ---- */

static int write_all(int fd, const uint8_t *p, size_t n) {
    while (n > 0) {
        ssize_t w = write(fd, p, n);
        if (w < 0) {
            if (errno == EINTR)
                continue;
            if (errno == EAGAIN) {
                struct pollfd pf = {.fd = fd, .events = POLLOUT};
                poll(&pf, 1, -1);
                continue;
            }
            return -1;
        }
        p += w;
        n -= w;
    }
    return 0;
}

static void send_winsize(int sock, int ttyfd) {
    struct winsize ws;
    if (ioctl(ttyfd, TIOCGWINSZ, &ws) < 0)
        return;
    struct mvm_mj_writer w;
    mvm_mj_begin(&w);
    mvm_mj_int(&w, "rows", ws.ws_row);
    mvm_mj_int(&w, "cols", ws.ws_col);
    size_t len;
    char *j = mvm_mj_end(&w, &len);
    if (j)
        mvm_frame_write(sock, MVM_F_RESIZE, 1, j, len);
    free(j);
}

int mvm_exec(const char *vm_name, const struct mvm_exec_opts *o, mvm_error **err) {
    _cleanup_(mvm_client_freep) mvm_client *c = NULL;
    if (mvm_client_connect(vm_name, &c, err) < 0)
        return -1;
    int in = o->in_fd, out = o->out_fd, er = o->err_fd;
    struct mvm_exec_req req = {.argv = o->argv, .env = o->env, .cwd = (char *)o->cwd, .tty = o->tty};
    struct winsize ws;
    if (o->tty && ioctl(in, TIOCGWINSZ, &ws) == 0) {
        req.rows = ws.ws_row;
        req.cols = ws.ws_col;
    }
    size_t len;
    _cleanup_free_ char *js = mvm_exec_req_encode(&req, &len);
    if (!js)
        return mvm_error_set(err, MVM_EINVAL, "exec: cannot encode the request (too many arguments?)");
    if (mvm_frame_write(c->fd, MVM_F_EXEC, 1, js, len) < 0)
        return mvm_error_sys(err, "exec");
    bool stdin_open = o->interactive;
    if (!stdin_open && mvm_frame_write(c->fd, MVM_F_STDIN, 1, NULL, 0) < 0)
        return mvm_error_sys(err, "exec");

    /* signals become SIGNAL frames (with a tty, ^C travels as a byte instead) */
    sigset_t mask, old;
    sigemptyset(&mask);
    sigaddset(&mask, SIGINT);
    sigaddset(&mask, SIGTERM);
    sigaddset(&mask, SIGHUP);
    sigaddset(&mask, SIGQUIT);
    sigaddset(&mask, SIGWINCH);
    sigprocmask(SIG_BLOCK, &mask, &old);
    _cleanup_close_ int sfd = signalfd(-1, &mask, SFD_CLOEXEC | SFD_NONBLOCK);

    struct termios saved;
    bool raw = false;
    if (o->tty && isatty(in) && tcgetattr(in, &saved) == 0) {
        struct termios t = saved;
        cfmakeraw(&t);
        raw = tcsetattr(in, TCSANOW, &t) == 0;
    }

    int result = -1;
    struct mvm_frame_reader rd;
    mvm_frame_reader_init(&rd);
    uint8_t buf[32768];
    struct timespec t0;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    for (;;) {
        struct pollfd pf[3] = {{.fd = c->fd, .events = POLLIN},
                               {.fd = stdin_open ? in : -1, .events = POLLIN},
                               {.fd = sfd, .events = POLLIN}};
        int wait = -1;
        if (o->timeout_ms > 0) {
            struct timespec t;
            clock_gettime(CLOCK_MONOTONIC, &t);
            long el = (t.tv_sec - t0.tv_sec) * 1000 + (t.tv_nsec - t0.tv_nsec) / 1000000;
            if (el >= o->timeout_ms) {
                mvm_frame_write(c->fd, MVM_F_SIGNAL, 1, "{\"signal\":9}", 12);
                mvm_error_set(err, MVM_ETIMEOUT, "VM '%s': command timed out after %d s", vm_name,
                              o->timeout_ms / 1000);
                break;
            }
            wait = (int)(o->timeout_ms - el);
        }
        int pr = poll(pf, 3, wait);
        if (pr < 0) {
            if (errno == EINTR)
                continue;
            mvm_error_sys(err, "poll");
            break;
        }
        if (pr == 0)
            continue;
        if (pf[2].revents & POLLIN) {
            struct signalfd_siginfo si;
            while (read(sfd, &si, sizeof(si)) == sizeof(si)) {
                if (si.ssi_signo == SIGWINCH) {
                    if (o->tty)
                        send_winsize(c->fd, in);
                    continue;
                }
                char sj[32];
                int n = snprintf(sj, sizeof(sj), "{\"signal\":%u}", si.ssi_signo);
                mvm_frame_write(c->fd, MVM_F_SIGNAL, 1, sj, n);
            }
        }
        if (pf[1].revents & (POLLIN | POLLHUP | POLLERR)) {
            ssize_t n = read(in, buf, sizeof(buf));
            if (n < 0 && (errno == EINTR || errno == EAGAIN))
                continue;
            if (n <= 0) {
                stdin_open = false;
                if (!o->tty)
                    mvm_frame_write(c->fd, MVM_F_STDIN, 1, NULL, 0);
            } else if (mvm_frame_write(c->fd, MVM_F_STDIN, 1, buf, n) < 0) {
                stdin_open = false;
            }
        }
        if (pf[0].revents & (POLLIN | POLLHUP | POLLERR)) {
            ssize_t n = read(c->fd, buf, sizeof(buf));
            if (n < 0 && errno == EINTR)
                continue;
            if (n <= 0) {
                mvm_error_set(err, EPIPE, "VM '%s': connection lost before the command finished "
                              "(VM stopped?)", vm_name);
                break;
            }
            if (mvm_frame_reader_feed(&rd, buf, n) < 0) {
                mvm_error_set(err, ENOMEM, "out of memory");
                break;
            }
            struct mvm_frame_hdr h;
            const uint8_t *pl;
            int fr;
            bool done = false;
            while (!done && (fr = mvm_frame_reader_next(&rd, &h, &pl)) == 1) {
                if (h.chan != 1)
                    continue;
                switch (h.type) {
                case MVM_F_STDOUT:
                case MVM_F_STDERR:
                    if (o->on_output)
                        o->on_output(o->output_ud, h.type == MVM_F_STDOUT ? 1 : 2, pl, h.len);
                    else
                        write_all(h.type == MVM_F_STDOUT ? out : er, pl, h.len);
                    break;
                case MVM_F_EXIT: {
                    long long v;
                    if (mvm_mj_get_int((const char *)pl, h.len, "signal", &v) == 1)
                        result = 128 + (int)v;
                    else if (mvm_mj_get_int((const char *)pl, h.len, "code", &v) == 1)
                        result = (int)v;
                    else
                        result = 255;
                    done = true;
                    break;
                }
                case MVM_F_ERROR: {
                    _cleanup_free_ char *m = NULL;
                    long long code = 126;
                    mvm_mj_get_str((const char *)pl, h.len, "message", &m);
                    mvm_mj_get_int((const char *)pl, h.len, "code", &code);
                    if (code >= 126 && code <= 127) {
                        /* the command could not start: docker's 126/127 convention */
                        dprintf(er, "mvmctl: %s\n", m ? m : "exec failed");
                        result = (int)code;
                    } else {
                        mvm_error_set(err, MVM_ESTATE, "VM '%s': %s", vm_name, m ? m : "exec failed");
                    }
                    done = true;
                    break;
                }
                default:
                    break;
                }
            }
            if (done)
                break;
            if (fr < 0) {
                mvm_error_set(err, MVM_EPROTO, "VM '%s': malformed frame from monitor", vm_name);
                break;
            }
        }
    }
    mvm_frame_reader_free(&rd);
    if (raw)
        tcsetattr(in, TCSANOW, &saved);
    sigprocmask(SIG_SETMASK, &old, NULL);
    return result;
}
