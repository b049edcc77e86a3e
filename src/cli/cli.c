/* mvmctl helpers: option and value parsing, error lines, human-readable output, JSON. */
#include "cli.h"
#include "util.h"

#include <ctype.h>
#include <errno.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#ifndef MVM_GUEST_DIR_BUILD
#define MVM_GUEST_DIR_BUILD "guest"
#endif
#ifndef MVM_GUEST_DIR_INSTALL
#define MVM_GUEST_DIR_INSTALL "/usr/local/libexec/mvm"
#endif

/* ---- errors and progress ---- */

int cli_error(const mvm_error *e) {
    fprintf(stderr, "mvmctl: %s\n", e && e->msg ? e->msg : "unknown error");
    return CLI_EXIT_FAIL;
}

int cli_fail(const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    fputs("mvmctl: ", stderr);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
    return CLI_EXIT_FAIL;
}

int cli_usage_error(const char *cmd, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "mvmctl %s: ", cmd);
    vfprintf(stderr, fmt, ap);
    fprintf(stderr, " (see mvmctl %s --help)\n", cmd);
    va_end(ap);
    return CLI_EXIT_FAIL;
}

void cli_progress(void *ud, const char *fmt, ...) {
    (void)ud;
    va_list ap;
    va_start(ap, fmt);
    fputs("mvm: ", stderr);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
}

/* ---- getopt ---- */

void cli_getopt_reset(void) {
    optind = 0; /* glibc: full re-initialisation, honours a leading '+' again */
    opterr = 0;
}

int cli_getopt(const char *cmd, int argc, char **argv, const char *optstring,
               const struct option *longopts) {
    optopt = 0;
    int c = getopt_long(argc, argv, optstring, longopts, NULL);
    if (c != '?' && c != ':')
        return c;
    const char *elem = optind > 0 && optind <= argc ? argv[optind - 1] : "";
    bool is_long = elem && !strncmp(elem, "--", 2);
    char opt[128];
    if (is_long)
        snprintf(opt, sizeof(opt), "%.*s", (int)strcspn(elem, "="), elem);
    else
        snprintf(opt, sizeof(opt), "-%c", optopt ? optopt : '?');
    if (c == ':')
        cli_usage_error(cmd, "option '%s' requires an argument", opt);
    else if (is_long && optopt && strchr(elem, '='))
        cli_usage_error(cmd, "option '%s' takes no argument", opt);
    else
        cli_usage_error(cmd, "unknown option '%s'", opt);
    return '?';
}

/* ---- value parsing ---- */

int cli_parse_int(const char *what, const char *s, long min, long max, long *out,
                  mvm_error **err) {
    char *end;
    errno = 0;
    long v = s && *s && !isspace((unsigned char)*s) ? strtol(s, &end, 10) : 0;
    if (!s || !*s || isspace((unsigned char)*s) || *end || errno)
        return mvm_error_set(err, MVM_EINVAL, "invalid %s '%s': expected a whole number", what,
                             s ? s : "");
    if (v < min || v > max)
        return mvm_error_set(err, MVM_EINVAL, "invalid %s '%s': must be between %ld and %ld",
                             what, s, min, max);
    *out = v;
    return 0;
}

static bool suffix_is(const char *s, const char *a, const char *b, const char *c) {
    return !strcasecmp(s, a) || !strcasecmp(s, b) || !strcasecmp(s, c);
}

int cli_parse_mem_mib(const char *s, int *out, mvm_error **err) {
    const char *p = s ? s : "";
    unsigned long long ip = 0, frac = 0, scale = 1;
    int nd = 0;
    for (; isdigit((unsigned char)*p); p++, nd++) {
        if (ip > (1ULL << 40))
            goto bad;
        ip = ip * 10 + (unsigned)(*p - '0');
    }
    if (*p == '.') {
        p++;
        int fd = 0;
        for (; isdigit((unsigned char)*p); p++, fd++) {
            if (fd >= 6)
                goto bad;
            frac = frac * 10 + (unsigned)(*p - '0');
            scale *= 10;
        }
        if (!fd)
            goto bad;
    }
    if (!nd)
        goto bad;
    unsigned long long kib_mult;
    if (!*p || suffix_is(p, "m", "mb", "mib"))
        kib_mult = 1024;
    else if (suffix_is(p, "k", "kb", "kib"))
        kib_mult = 1;
    else if (suffix_is(p, "g", "gb", "gib"))
        kib_mult = 1024ULL * 1024;
    else if (suffix_is(p, "t", "tb", "tib"))
        kib_mult = 1024ULL * 1024 * 1024;
    else
        goto bad;
    __uint128_t num = ((__uint128_t)ip * scale + frac) * kib_mult;
    if (num % scale)
        goto whole;
    __uint128_t kib = num / scale;
    if (kib % 1024)
        goto whole;
    __uint128_t mib = kib / 1024;
    if (mib < 1 || mib > 1048576)
        return mvm_error_set(err, MVM_EINVAL,
                             "invalid memory size '%s': must be between 1 MiB and 1 TiB", s);
    *out = (int)mib;
    return 0;
whole:
    return mvm_error_set(err, MVM_EINVAL,
                         "invalid memory size '%s': must be a whole number of MiB", s);
bad:
    return mvm_error_set(err, MVM_EINVAL,
                         "invalid memory size '%s': expected e.g. 512, 512M or 2G", s ? s : "");
}

int cli_parse_duration(const char *what, const char *s, int *out, mvm_error **err) {
    const char *p = s ? s : "";
    long long total = 0;
    bool any = false;
    int last_rank = 4; /* units must appear in decreasing order: h m s */
    while (*p) {
        if (!isdigit((unsigned char)*p))
            goto bad;
        long long v = 0;
        for (; isdigit((unsigned char)*p); p++) {
            v = v * 10 + (*p - '0');
            if (v > INT_MAX)
                goto range;
        }
        long long mult;
        int rank;
        if (!*p) {
            if (any)
                goto bad; /* "1m30" is ambiguous */
            mult = 1, rank = 0;
        } else if (*p == 'h') {
            mult = 3600, rank = 3, p++;
        } else if (*p == 'm') {
            mult = 60, rank = 2, p++;
        } else if (*p == 's') {
            mult = 1, rank = 1, p++;
        } else {
            goto bad;
        }
        if (rank >= last_rank)
            goto bad;
        last_rank = rank;
        total += v * mult;
        if (total > INT_MAX)
            goto range;
        any = true;
    }
    if (!any)
        goto bad;
    *out = (int)total;
    return 0;
range:
    return mvm_error_set(err, MVM_EINVAL, "invalid %s '%s': too large", what, s);
bad:
    return mvm_error_set(err, MVM_EINVAL,
                         "invalid %s '%s': expected seconds or a duration like 30s, 2m, 1h",
                         what, s ? s : "");
}

int cli_parse_env(const char *arg, char **out, mvm_error **err) {
    *out = NULL;
    size_t klen = strcspn(arg, "=");
    if (klen == 0)
        return mvm_error_set(err, MVM_EINVAL,
                             "invalid environment variable '%s': expected KEY=VALUE", arg);
    for (size_t i = 0; i < klen; i++)
        if (isspace((unsigned char)arg[i]) || iscntrl((unsigned char)arg[i]))
            return mvm_error_set(err, MVM_EINVAL,
                                 "invalid environment variable '%s': the name contains "
                                 "whitespace", arg);
    char *r;
    if (arg[klen] == '=') {
        r = strdup(arg);
    } else {
        const char *v = getenv(arg);
        if (!v)
            return 0;
        if (asprintf(&r, "%s=%s", arg, v) < 0)
            r = NULL;
    }
    if (!r)
        return mvm_error_set(err, ENOMEM, "out of memory");
    *out = r;
    return 0;
}

/* ---- string vectors ---- */

int cli_strv_push(struct cli_strv *sv, char *s) {
    char **nv = realloc(sv->v, (sv->n + 2) * sizeof(*nv));
    if (!nv) {
        free(s);
        return -1;
    }
    nv[sv->n++] = s;
    nv[sv->n] = NULL;
    sv->v = nv;
    return 0;
}

void cli_strv_clear(struct cli_strv *sv) {
    for (size_t i = 0; i < sv->n; i++)
        free(sv->v[i]);
    free(sv->v);
    sv->v = NULL;
    sv->n = 0;
}

char **cli_command_after(int argc, char **argv, int at, int *n) {
    int i = at + 1;
    if (i > argc)
        i = argc;
    if (i < argc && !strcmp(argv[i], "--"))
        i++;
    *n = argc - i;
    return argv + i;
}

/* ---- human output ---- */

void cli_human_size(uint64_t bytes, char *buf, size_t len) {
    static const char *const units[] = {"KiB", "MiB", "GiB", "TiB", "PiB"};
    if (bytes < 1024) {
        snprintf(buf, len, "%llu B", (unsigned long long)bytes);
        return;
    }
    double v = (double)bytes / 1024;
    size_t u = 0;
    while (v >= 1024 && u + 1 < ARRAY_SIZE(units)) {
        v /= 1024;
        u++;
    }
    snprintf(buf, len, "%.1f %s", v, units[u]);
}

void cli_human_ago(long long then, long long now, char *buf, size_t len) {
    if (then <= 0) {
        snprintf(buf, len, "-");
        return;
    }
    long long d = now - then;
    static const struct { long long below, unit; const char *name; } steps[] = {
        {60, 1, "second"},
        {3600, 60, "minute"},
        {86400, 3600, "hour"},
        {14 * 86400, 86400, "day"},
        {60 * 86400, 7 * 86400, "week"},
        {730 * 86400, 30 * 86400, "month"},
        {LLONG_MAX, 365 * 86400, "year"},
    };
    if (d < 1) {
        snprintf(buf, len, "just now");
        return;
    }
    for (size_t i = 0; i < ARRAY_SIZE(steps); i++) {
        if (d < steps[i].below) {
            long long v = d / steps[i].unit;
            snprintf(buf, len, "%lld %s%s ago", v, steps[i].name, v == 1 ? "" : "s");
            return;
        }
    }
}

long long cli_parse_rfc3339(const char *s) {
    if (!s)
        return -1;
    struct tm tm;
    memset(&tm, 0, sizeof(tm));
    const char *p = strptime(s, "%Y-%m-%dT%H:%M:%S", &tm);
    if (!p)
        return -1;
    if (*p == '.') {
        p++;
        if (!isdigit((unsigned char)*p))
            return -1;
        while (isdigit((unsigned char)*p))
            p++;
    }
    long off = 0;
    if (*p == 'Z' || *p == 'z') {
        p++;
    } else if ((*p == '+' || *p == '-') && isdigit((unsigned char)p[1]) &&
               isdigit((unsigned char)p[2]) && p[3] == ':' && isdigit((unsigned char)p[4]) &&
               isdigit((unsigned char)p[5])) {
        off = ((p[1] - '0') * 10 + (p[2] - '0')) * 3600L + ((p[4] - '0') * 10 + (p[5] - '0')) * 60L;
        if (*p == '+')
            off = -off;
        p += 6;
    } else {
        return -1;
    }
    if (*p)
        return -1;
    time_t t = timegm(&tm);
    if (t == (time_t)-1)
        return -1;
    return (long long)t + off;
}

/* ---- tables ---- */

int cli_table_init(struct cli_table *t, size_t ncols, const char *const *header) {
    memset(t, 0, sizeof(*t));
    t->ncols = ncols;
    return cli_table_add(t, header);
}

int cli_table_add(struct cli_table *t, const char *const *row) {
    char **nc = realloc(t->cells, (t->nrows + 1) * t->ncols * sizeof(*nc));
    if (!nc)
        return -1;
    t->cells = nc;
    char **r = nc + t->nrows * t->ncols;
    for (size_t i = 0; i < t->ncols; i++) {
        r[i] = strdup(row[i] ? row[i] : "");
        if (!r[i]) {
            while (i--)
                free(r[i]);
            return -1;
        }
    }
    t->nrows++;
    return 0;
}

void cli_table_print(const struct cli_table *t, FILE *f) {
    size_t *w = calloc(t->ncols ? t->ncols : 1, sizeof(*w));
    if (!w)
        return;
    for (size_t r = 0; r < t->nrows; r++)
        for (size_t c = 0; c < t->ncols; c++) {
            size_t l = strlen(t->cells[r * t->ncols + c]);
            if (l > w[c])
                w[c] = l;
        }
    for (size_t r = 0; r < t->nrows; r++) {
        for (size_t c = 0; c < t->ncols; c++) {
            const char *cell = t->cells[r * t->ncols + c];
            if (c + 1 == t->ncols)
                fprintf(f, "%s\n", cell);
            else
                fprintf(f, "%-*s   ", (int)w[c], cell);
        }
    }
    free(w);
}

void cli_table_clear(struct cli_table *t) {
    for (size_t i = 0; i < t->nrows * t->ncols; i++)
        free(t->cells[i]);
    free(t->cells);
    memset(t, 0, sizeof(*t));
}

int cli_print_json(json_t *j) {
    if (!j)
        return cli_fail("out of memory");
    int r = json_dumpf(j, stdout, JSON_INDENT(2));
    json_decref(j);
    if (r < 0 || fputc('\n', stdout) == EOF || fflush(stdout) == EOF)
        return cli_fail("writing JSON to stdout: %s", strerror(errno));
    return 0;
}

/* ---- files ---- */

off_t cli_tail_offset(int fd, long n) {
    struct stat st;
    if (fstat(fd, &st) < 0)
        return -1;
    off_t size = st.st_size;
    if (n < 0 || size == 0)
        return 0;
    if (n == 0)
        return size;
    char buf[4096];
    off_t end = size;
    bool first = true;
    long seen = 0;
    while (end > 0) {
        off_t start = end > (off_t)sizeof(buf) ? end - (off_t)sizeof(buf) : 0;
        size_t want = (size_t)(end - start);
        ssize_t got = pread(fd, buf, want, start);
        if (got < 0) {
            if (errno == EINTR)
                continue;
            return -1;
        }
        if ((size_t)got != want) {
            errno = EIO;
            return -1;
        }
        size_t i = want;
        if (first) {
            first = false;
            if (buf[want - 1] == '\n')
                i--; /* the newline ending the last line */
        }
        while (i--) {
            if (buf[i] == '\n' && ++seen == n)
                return start + (off_t)i + 1;
        }
        end = start;
    }
    return 0;
}

const char *cli_guest_dir(void) {
    const char *e = getenv("MVM_GUEST_DIR");
    if (e && *e)
        return e;
    if (access(MVM_GUEST_DIR_BUILD "/mvm-init", F_OK) == 0)
        return MVM_GUEST_DIR_BUILD;
    return MVM_GUEST_DIR_INSTALL;
}
