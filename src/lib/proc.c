#include "proc.h"
#include "util.h"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>

static int dup_or_null(int fd, int target) {
    if (fd < 0) {
        int n = open("/dev/null", O_RDWR | O_CLOEXEC);
        if (n < 0)
            return -1;
        if (n != target && dup2(n, target) < 0)
            return -1;
        if (n != target)
            close(n);
        else
            fcntl(target, F_SETFD, 0);
        return 0;
    }
    if (fd == target)
        return fcntl(target, F_SETFD, 0);
    return dup2(fd, target) < 0 ? -1 : 0;
}

int mvm_spawn(char *const argv[], const struct mvm_spawn_opts *o, pid_t *pid, mvm_error **err) {
    int ep[2];
    if (pipe2(ep, O_CLOEXEC) < 0)
        return mvm_error_sys(err, "pipe");
    pid_t parent = getpid();
    pid_t p = fork();
    if (p < 0) {
        close(ep[0]);
        close(ep[1]);
        return mvm_error_sys(err, "fork");
    }
    if (p == 0) {
        if (o && o->pdeathsig) {
            prctl(PR_SET_PDEATHSIG, SIGKILL);
            if (getppid() != parent)
                _exit(127);
        }
        if (o && o->setsid)
            setsid();
        /* reset signal state inherited from the caller */
        sigset_t all;
        sigemptyset(&all);
        sigprocmask(SIG_SETMASK, &all, NULL);
        signal(SIGPIPE, SIG_DFL);
        int in = o ? o->stdin_fd : 0, out = o ? o->stdout_fd : 1, er = o ? o->stderr_fd : 2;
        /* move fds out of the way of 0..2 first so dup2 order cannot clobber them */
        if (in >= 0 && in <= 2 && in != 0) in = fcntl(in, F_DUPFD_CLOEXEC, 3);
        if (out >= 0 && out <= 2 && out != 1) out = fcntl(out, F_DUPFD_CLOEXEC, 3);
        if (er >= 0 && er <= 2 && er != 2) er = fcntl(er, F_DUPFD_CLOEXEC, 3);
        if (dup_or_null(in, 0) < 0 || dup_or_null(out, 1) < 0 || dup_or_null(er, 2) < 0)
            goto fail;
        if (o && o->envp)
            execvpe(argv[0], argv, o->envp);
        else
            execvp(argv[0], argv);
    fail:;
        int e = errno;
        (void)!write(ep[1], &e, sizeof(e));
        _exit(127);
    }
    close(ep[1]);
    int e = 0;
    ssize_t n;
    do
        n = read(ep[0], &e, sizeof(e));
    while (n < 0 && errno == EINTR);
    close(ep[0]);
    if (n == sizeof(e)) {
        waitpid(p, NULL, 0);
        errno = e;
        return mvm_error_sys(err, "cannot run %s", argv[0]);
    }
    *pid = p;
    return 0;
}

char *mvm_which(const char *prog) {
    if (strchr(prog, '/'))
        return access(prog, X_OK) == 0 ? strdup(prog) : NULL;
    const char *path = getenv("PATH");
    if (!path)
        path = "/usr/bin:/bin";
    _cleanup_free_ char *copy = strdup(path);
    if (!copy)
        return NULL;
    char *save = NULL;
    for (char *d = strtok_r(copy, ":", &save); d; d = strtok_r(NULL, ":", &save)) {
        char *p = NULL;
        if (asprintf(&p, "%s/%s", *d ? d : ".", prog) < 0)
            return NULL;
        struct stat st;
        if (stat(p, &st) == 0 && S_ISREG(st.st_mode) && access(p, X_OK) == 0)
            return p;
        free(p);
    }
    return NULL;
}

void mvm_describe_status(int st, char *buf, size_t len) {
    if (WIFEXITED(st))
        snprintf(buf, len, "exited with code %d", WEXITSTATUS(st));
    else if (WIFSIGNALED(st))
        snprintf(buf, len, "killed by signal %d (%s)", WTERMSIG(st), strsignal(WTERMSIG(st)));
    else
        snprintf(buf, len, "ended with status 0x%x", st);
}

bool mvm_pid_matches(pid_t pid, const char *needle) {
    if (pid <= 0)
        return false;
    char path[64];
    snprintf(path, sizeof(path), "/proc/%d/cmdline", (int)pid);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return false;
    char buf[8192];
    ssize_t n = read(fd, buf, sizeof(buf) - 1);
    close(fd);
    if (n <= 0)
        return false;
    for (ssize_t i = 0; i < n; i++)
        if (buf[i] == 0)
            buf[i] = ' ';
    buf[n] = 0;
    return strstr(buf, needle) != NULL;
}
