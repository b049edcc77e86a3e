/* Runs helper programs (apt-get, dpkg-deb, tar, lz4, mke2fs, ...) with argv arrays.
 * stdout can be captured; stderr always goes to an anonymous memory file so that the last
 * line can be put into the error message without any risk of pipe deadlocks. */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "proc.h"
#include "util.h"

extern char **environ;

#define CAPTURE_MAX (16 * 1024 * 1024)

void mvm_cmd_clear(struct mvm_cmd *c) {
    free(c->out);
    free(c->err_tail);
    c->out = NULL;
    c->err_tail = NULL;
    c->out_len = 0;
}

/* environ plus extra entries (an extra NAME=... replaces an inherited NAME). */
static char **build_env(const char *const *extra) {
    size_t n = 0, m = 0;
    while (environ && environ[n])
        n++;
    while (extra && extra[m])
        m++;
    char **env = calloc(n + m + 1, sizeof(char *));
    if (!env)
        return NULL;
    size_t k = 0;
    for (size_t i = 0; i < n; i++) {
        bool replaced = false;
        for (size_t j = 0; j < m; j++) {
            const char *eq = strchr(extra[j], '=');
            size_t kl = eq ? (size_t)(eq - extra[j]) : strlen(extra[j]);
            if (!strncmp(environ[i], extra[j], kl) && environ[i][kl] == '=')
                replaced = true;
        }
        if (!replaced)
            env[k++] = environ[i];
    }
    for (size_t j = 0; j < m; j++)
        env[k++] = (char *)extra[j];
    env[k] = NULL;
    return env;
}

static int read_memfd(int fd, char **out, size_t *len, mvm_error **err) {
    struct stat st;
    if (fstat(fd, &st) < 0)
        return mvm_error_sys(err, "cannot stat capture file");
    size_t n = (size_t)st.st_size;
    if (n > CAPTURE_MAX)
        n = CAPTURE_MAX;
    char *buf = malloc(n + 1);
    if (!buf)
        return mvm_error_set(err, ENOMEM, "out of memory");
    size_t got = 0;
    while (got < n) {
        ssize_t r = pread(fd, buf + got, n - got, (off_t)got);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0)
            break;
        got += (size_t)r;
    }
    buf[got] = '\0';
    *out = buf;
    if (len)
        *len = got;
    return 0;
}

static char *last_line(const char *s, size_t len) {
    while (len > 0 && (s[len - 1] == '\n' || s[len - 1] == '\r' || s[len - 1] == ' '))
        len--;
    size_t start = len;
    while (start > 0 && s[start - 1] != '\n')
        start--;
    if (len == start)
        return NULL;
    return strndup(s + start, len - start);
}

struct running {
    pid_t pid;
    int err_fd;
    int out_fd; /* capture memfd or -1 */
};

static int start(struct mvm_cmd *c, int in_fd, int out_fd, struct running *r,
                 mvm_error **err) {
    r->pid = -1;
    r->err_fd = -1;
    r->out_fd = -1;
    _cleanup_close_ int devnull = -1;
    if (in_fd < 0) {
        devnull = open("/dev/null", O_RDONLY | O_CLOEXEC);
        if (devnull < 0)
            return mvm_error_sys(err, "cannot open /dev/null");
        in_fd = devnull;
    }
    _cleanup_close_ int efd = memfd_create("mvm-stderr", MFD_CLOEXEC);
    if (efd < 0)
        return mvm_error_sys(err, "memfd_create");
    _cleanup_close_ int ofd = -1;
    if (out_fd < 0) {
        ofd = memfd_create("mvm-stdout", MFD_CLOEXEC);
        if (ofd < 0)
            return mvm_error_sys(err, "memfd_create");
        out_fd = ofd;
    }
    _cleanup_free_ char **env = build_env(c->env);
    if (!env)
        return mvm_error_set(err, ENOMEM, "out of memory");

    posix_spawn_file_actions_t fa;
    posix_spawnattr_t attr;
    posix_spawn_file_actions_init(&fa);
    posix_spawnattr_init(&attr);
    /* children start with default signal dispositions and an empty mask */
    sigset_t none, all;
    sigemptyset(&none);
    sigfillset(&all);
    sigdelset(&all, SIGKILL);
    sigdelset(&all, SIGSTOP);
    posix_spawnattr_setsigmask(&attr, &none);
    posix_spawnattr_setsigdefault(&attr, &all);
    posix_spawnattr_setflags(&attr, POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF);
    posix_spawn_file_actions_adddup2(&fa, in_fd, 0);
    posix_spawn_file_actions_adddup2(&fa, out_fd, 1);
    posix_spawn_file_actions_adddup2(&fa, efd, 2);
    if (c->cwd)
        posix_spawn_file_actions_addchdir_np(&fa, c->cwd);
    pid_t pid;
    int rc = posix_spawnp(&pid, c->argv[0], &fa, &attr, (char *const *)c->argv, env);
    posix_spawn_file_actions_destroy(&fa);
    posix_spawnattr_destroy(&attr);
    if (rc != 0) {
        errno = rc;
        if (rc == ENOENT)
            return mvm_error_set(err, MVM_EUNAVAIL, "%s: command not found", c->argv[0]);
        return mvm_error_sys(err, "cannot run %s", c->argv[0]);
    }
    r->pid = pid;
    r->err_fd = steal_fd(&efd);
    r->out_fd = steal_fd(&ofd);
    return 0;
}

static int finish(struct mvm_cmd *c, struct running *r, mvm_error **err) {
    int st = 0;
    while (waitpid(r->pid, &st, 0) < 0) {
        if (errno != EINTR) {
            int e = errno;
            close(r->err_fd);
            if (r->out_fd >= 0)
                close(r->out_fd);
            errno = e;
            return mvm_error_sys(err, "waitpid %s", c->argv[0]);
        }
    }
    c->status = WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
    int rc = 0;
    _cleanup_free_ char *errs = NULL;
    size_t elen = 0;
    if (read_memfd(r->err_fd, &errs, &elen, err) == 0)
        c->err_tail = last_line(errs, elen);
    else
        rc = -1;
    close(r->err_fd);
    if (r->out_fd >= 0) {
        if (rc == 0 && read_memfd(r->out_fd, &c->out, &c->out_len, err) < 0)
            rc = -1;
        close(r->out_fd);
    }
    if (rc < 0)
        return -1;
    if (c->status != 0 && !c->allow_fail) {
        if (WIFSIGNALED(st))
            return mvm_error_set(err, EIO, "%s killed by signal %d%s%s", c->argv[0],
                                 WTERMSIG(st), c->err_tail ? ": " : "",
                                 c->err_tail ? c->err_tail : "");
        return mvm_error_set(err, EIO, "%s exited with status %d%s%s", c->argv[0], c->status,
                             c->err_tail ? ": " : "", c->err_tail ? c->err_tail : "");
    }
    return 0;
}

int mvm_cmd_run(struct mvm_cmd *c, mvm_error **err) {
    struct running r;
    mvm_cmd_clear(c);
    if (start(c, c->in_fd, c->out_fd, &r, err) < 0)
        return -1;
    return finish(c, &r, err);
}

int mvm_cmd_run_pipe(struct mvm_cmd *a, struct mvm_cmd *b, mvm_error **err) {
    int p[2];
    mvm_cmd_clear(a);
    mvm_cmd_clear(b);
    if (pipe2(p, O_CLOEXEC) < 0)
        return mvm_error_sys(err, "pipe");
    struct running ra, rb;
    if (start(a, a->in_fd, p[1], &ra, err) < 0) {
        close(p[0]);
        close(p[1]);
        return -1;
    }
    close(p[1]);
    if (start(b, p[0], b->out_fd, &rb, err) < 0) {
        close(p[0]);
        mvm_error *ignored = NULL;
        (void)finish(a, &ra, &ignored);
        mvm_error_free(ignored);
        return -1;
    }
    close(p[0]);
    mvm_error *ea = NULL;
    int rca = finish(a, &ra, &ea);
    int rcb = finish(b, &rb, err);
    if (rcb < 0) {
        mvm_error_free(ea);
        return -1;
    }
    if (rca < 0) {
        if (err && !*err)
            *err = ea;
        else
            mvm_error_free(ea);
        return -1;
    }
    return 0;
}
