#include "log.h"
#include <errno.h>

#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static int log_fd = 2;
static enum mvm_log_level log_level = MVM_LOG_WARN;
static int init_done;

void mvm_log_set_fd(int fd) {
    if (fd < 0)
        return;
    int n = fcntl(fd, F_DUPFD_CLOEXEC, 3);
    if (n >= 0)
        log_fd = n;
}

void mvm_log_set_level(enum mvm_log_level l) { log_level = l; }

void mvm_log(enum mvm_log_level l, const char *fmt, ...) {
    if (!init_done) {
        init_done = 1;
        if (getenv("MVM_DEBUG"))
            log_level = MVM_LOG_DEBUG;
    }
    if (l < log_level)
        return;
    static const char *names[] = {"debug", "info", "warn", "error"};
    char buf[2048];
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    struct tm tm;
    gmtime_r(&ts.tv_sec, &tm);
    int n = snprintf(buf, sizeof(buf), "%02d:%02d:%02d.%03ld %s[%d] %s: ", tm.tm_hour, tm.tm_min,
                     tm.tm_sec, ts.tv_nsec / 1000000, program_invocation_short_name, (int)getpid(),
                     names[l]);
    va_list ap;
    va_start(ap, fmt);
    int m = vsnprintf(buf + n, sizeof(buf) - n - 1, fmt, ap);
    va_end(ap);
    size_t len = (size_t)n + (m < 0 ? 0 : (size_t)m);
    if (len > sizeof(buf) - 2)
        len = sizeof(buf) - 2;
    buf[len++] = '\n';
    (void)!write(log_fd, buf, len);
}
