#include "mvm/error.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static char *vfmt(const char *fmt, va_list ap) {
    char *s = NULL;
    if (vasprintf(&s, fmt, ap) < 0)
        return NULL;
    /* one line: newlines in messages would break the CLI's one-line contract */
    for (char *p = s; *p; p++)
        if (*p == '\n' || *p == '\r')
            *p = ' ';
    return s;
}

static int set_msg(mvm_error **err, int code, char *msg) {
    if (!err || *err) {
        free(msg);
        return -1;
    }
    mvm_error *e = calloc(1, sizeof(*e));
    if (!e) {
        free(msg);
        return -1;
    }
    e->code = code;
    e->msg = msg ? msg : strdup("out of memory");
    *err = e;
    return -1;
}

int mvm_error_set(mvm_error **err, int code, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    char *m = vfmt(fmt, ap);
    va_end(ap);
    return set_msg(err, code, m);
}

int mvm_error_sys(mvm_error **err, const char *fmt, ...) {
    int saved = errno;
    va_list ap;
    va_start(ap, fmt);
    char *m = vfmt(fmt, ap);
    va_end(ap);
    char *full = NULL;
    if (m && asprintf(&full, "%s: %s", m, strerror(saved)) < 0)
        full = NULL;
    free(m);
    errno = saved;
    return set_msg(err, saved ? saved : EIO, full);
}

int mvm_error_wrap(mvm_error **err, const char *fmt, ...) {
    if (!err || !*err)
        return -1;
    va_list ap;
    va_start(ap, fmt);
    char *ctx = vfmt(fmt, ap);
    va_end(ap);
    char *full = NULL;
    if (ctx && asprintf(&full, "%s: %s", ctx, (*err)->msg) >= 0) {
        free((*err)->msg);
        (*err)->msg = full;
    }
    free(ctx);
    return -1;
}

void mvm_error_free(mvm_error *e) {
    if (!e)
        return;
    free(e->msg);
    free(e);
}
