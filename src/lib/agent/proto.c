/*
 * mvm agent wire protocol: frame codec, incremental reader and a minimal flat-JSON
 * reader/writer for control payloads. libc only: this file is linked into libmvm (glibc)
 * and into the static musl guest binaries.
 */
#include "mvm/proto.h"

#include <errno.h>
#include <limits.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/uio.h>
#include <unistd.h>

/* ------------------------------------------------------------------------------------------
 * Frame header
 * ---------------------------------------------------------------------------------------- */

static void put_be32(uint8_t *p, uint32_t v)
{
    p[0] = (uint8_t)(v >> 24);
    p[1] = (uint8_t)(v >> 16);
    p[2] = (uint8_t)(v >> 8);
    p[3] = (uint8_t)v;
}

static uint32_t get_be32(const uint8_t *p)
{
    return ((uint32_t)p[0] << 24) | ((uint32_t)p[1] << 16) | ((uint32_t)p[2] << 8) | p[3];
}

static bool type_valid(uint8_t type)
{
    return type >= MVM_F_HELLO && type <= MVM_F_TYPE_MAX;
}

int mvm_frame_encode_hdr(uint8_t out[MVM_FRAME_HDR], uint8_t type, uint32_t chan, uint32_t len)
{
    if (len > MVM_FRAME_MAX || !type_valid(type))
        return -1;
    put_be32(out, len);
    out[4] = type;
    out[5] = 0;
    out[6] = 0;
    out[7] = 0;
    put_be32(out + 8, chan);
    return 0;
}

int mvm_frame_decode_hdr(const uint8_t *buf, size_t n, struct mvm_frame_hdr *out)
{
    if (n < MVM_FRAME_HDR)
        return 0;
    uint32_t len = get_be32(buf);
    if (len > MVM_FRAME_MAX || !type_valid(buf[4]) || buf[5] != 0 || buf[6] != 0 || buf[7] != 0)
        return -1;
    out->len = len;
    out->type = buf[4];
    out->flags = buf[5];
    out->chan = get_be32(buf + 8);
    return MVM_FRAME_HDR;
}

const char *mvm_frame_type_name(uint8_t type)
{
    static const char *const names[] = {
        [MVM_F_HELLO] = "HELLO",     [MVM_F_PING] = "PING",         [MVM_F_PONG] = "PONG",
        [MVM_F_EXEC] = "EXEC",       [MVM_F_STARTED] = "STARTED",   [MVM_F_STDIN] = "STDIN",
        [MVM_F_STDOUT] = "STDOUT",   [MVM_F_STDERR] = "STDERR",     [MVM_F_RESIZE] = "RESIZE",
        [MVM_F_SIGNAL] = "SIGNAL",   [MVM_F_EXIT] = "EXIT",         [MVM_F_ERROR] = "ERROR",
        [MVM_F_SHUTDOWN] = "SHUTDOWN", [MVM_F_CTL_REQ] = "CTL_REQ", [MVM_F_CTL_RESP] = "CTL_RESP",
    };
    if (!type_valid(type))
        return "UNKNOWN";
    return names[type];
}

/* ------------------------------------------------------------------------------------------
 * Incremental reader
 *
 * A frame handed out by mvm_frame_reader_next() stays at the front of the buffer so that its
 * payload pointer remains valid; its size is remembered in a small hidden prefix allocated
 * in front of r->buf, and the next feed/next call drops it first.
 * ---------------------------------------------------------------------------------------- */

#define READER_PREFIX 16 /* keeps r->buf suitably aligned */

static size_t *reader_consumed(struct mvm_frame_reader *r)
{
    return (size_t *)(void *)(r->buf - READER_PREFIX);
}

static void reader_drop_consumed(struct mvm_frame_reader *r)
{
    if (!r->buf)
        return;
    size_t *c = reader_consumed(r);
    size_t n = *c;
    if (n == 0)
        return;
    if (n > r->len) /* cannot happen: only complete frames are counted */
        n = r->len;
    memmove(r->buf, r->buf + n, r->len - n);
    r->len -= n;
    *c = 0;
}

void mvm_frame_reader_init(struct mvm_frame_reader *r)
{
    r->buf = NULL;
    r->len = 0;
    r->cap = 0;
    r->bad = false;
}

void mvm_frame_reader_free(struct mvm_frame_reader *r)
{
    if (r->buf)
        free(r->buf - READER_PREFIX);
    mvm_frame_reader_init(r);
}

int mvm_frame_reader_feed(struct mvm_frame_reader *r, const void *data, size_t n)
{
    reader_drop_consumed(r);
    if (r->bad || n == 0)
        return 0; /* a broken stream keeps nothing more */
    if (n > SIZE_MAX / 4 - r->len) {
        errno = ENOMEM;
        return -1;
    }
    size_t need = r->len + n;
    if (need > r->cap) {
        size_t cap = r->cap ? r->cap : 4096;
        while (cap < need)
            cap *= 2;
        uint8_t *base = r->buf ? r->buf - READER_PREFIX : NULL;
        uint8_t *nb = realloc(base, cap + READER_PREFIX);
        if (!nb)
            return -1;
        if (!base)
            memset(nb, 0, READER_PREFIX);
        r->buf = nb + READER_PREFIX;
        r->cap = cap;
    }
    memcpy(r->buf + r->len, data, n);
    r->len = need;
    return 0;
}

int mvm_frame_reader_next(struct mvm_frame_reader *r, struct mvm_frame_hdr *hdr,
                          const uint8_t **payload)
{
    if (r->bad)
        return -1;
    reader_drop_consumed(r);
    struct mvm_frame_hdr h;
    int rc = mvm_frame_decode_hdr(r->buf, r->len, &h);
    if (rc == 0)
        return 0;
    if (rc < 0) {
        r->bad = true;
        return -1;
    }
    if (r->len - MVM_FRAME_HDR < h.len)
        return 0;
    *hdr = h;
    *payload = r->buf + MVM_FRAME_HDR;
    *reader_consumed(r) = MVM_FRAME_HDR + (size_t)h.len;
    return 1;
}

/* ------------------------------------------------------------------------------------------
 * Blocking frame I/O
 * ---------------------------------------------------------------------------------------- */

static int wait_fd(int fd, short events)
{
    struct pollfd p = { .fd = fd, .events = events };
    for (;;) {
        int rc = poll(&p, 1, -1);
        if (rc >= 0)
            return 0;
        if (errno != EINTR)
            return -1;
    }
}

int mvm_frame_write(int fd, uint8_t type, uint32_t chan, const void *payload, size_t len)
{
    uint8_t hdr[MVM_FRAME_HDR];
    if (len > MVM_FRAME_MAX || mvm_frame_encode_hdr(hdr, type, chan, (uint32_t)len) < 0) {
        errno = EINVAL;
        return -1;
    }
    if (len > 0 && !payload) {
        errno = EINVAL;
        return -1;
    }
    struct iovec iov[2] = {
        { .iov_base = hdr, .iov_len = sizeof(hdr) },
        { .iov_base = (void *)payload, .iov_len = len },
    };
    struct iovec *v = iov;
    int cnt = len ? 2 : 1;
    while (cnt > 0) {
        ssize_t n = writev(fd, v, cnt);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            if (errno == EAGAIN || errno == EWOULDBLOCK) {
                if (wait_fd(fd, POLLOUT) < 0)
                    return -1;
                continue;
            }
            return -1;
        }
        size_t done = (size_t)n;
        while (cnt > 0 && done >= v->iov_len) {
            done -= v->iov_len;
            v++;
            cnt--;
        }
        if (cnt > 0) {
            v->iov_base = (uint8_t *)v->iov_base + done;
            v->iov_len -= done;
        }
    }
    return 0;
}

/* Reads exactly n bytes. Returns n, or the number of bytes read before EOF, or -1. */
static ssize_t read_full(int fd, uint8_t *buf, size_t n)
{
    size_t got = 0;
    while (got < n) {
        ssize_t r = read(fd, buf + got, n - got);
        if (r < 0) {
            if (errno == EINTR)
                continue;
            if (errno == EAGAIN || errno == EWOULDBLOCK) {
                if (wait_fd(fd, POLLIN) < 0)
                    return -1;
                continue;
            }
            return -1;
        }
        if (r == 0)
            break;
        got += (size_t)r;
    }
    return (ssize_t)got;
}

int mvm_frame_read(int fd, struct mvm_frame_hdr *hdr, uint8_t **payload)
{
    uint8_t hb[MVM_FRAME_HDR];
    *payload = NULL;
    ssize_t n = read_full(fd, hb, sizeof(hb));
    if (n < 0)
        return -1;
    if (n == 0)
        return 0;
    if ((size_t)n < sizeof(hb)) {
        errno = EIO;
        return -1;
    }
    struct mvm_frame_hdr h;
    if (mvm_frame_decode_hdr(hb, sizeof(hb), &h) != MVM_FRAME_HDR) {
        errno = EPROTO;
        return -1;
    }
    uint8_t *p = malloc((size_t)h.len + 1);
    if (!p)
        return -1;
    n = read_full(fd, p, h.len);
    if (n < 0 || (size_t)n < h.len) {
        int e = n < 0 ? errno : EIO;
        free(p);
        errno = e;
        return -1;
    }
    p[h.len] = '\0';
    *hdr = h;
    *payload = p;
    return 1;
}

/* ------------------------------------------------------------------------------------------
 * Minimal JSON reader
 *
 * Grammar accepted: ws '{' ws [ member (ws ',' ws member)* ] ws '}' ws, where
 * member = string ws ':' ws value and value = string | integer | true | false | null |
 * '[' ws [ string (ws ',' ws string)* ] ws ']'. null is treated as an absent key.
 * ---------------------------------------------------------------------------------------- */

enum mj_kind { MJ_STR, MJ_INT, MJ_BOOL, MJ_NULL, MJ_ARR };

struct mj {
    const char *p, *end;
};

struct mj_val {
    enum mj_kind kind;
    const char *start; /* first byte of the value text */
    const char *stop;  /* one past its last byte */
    size_t count;      /* array: element count */
    bool b;
};

static void mj_ws(struct mj *s)
{
    while (s->p < s->end && (*s->p == ' ' || *s->p == '\t' || *s->p == '\n' || *s->p == '\r'))
        s->p++;
}

static int hexval(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

static int read_hex4(const char *p, const char *end, unsigned *out)
{
    if (end - p < 4)
        return -1;
    unsigned v = 0;
    for (int i = 0; i < 4; i++) {
        int h = hexval(p[i]);
        if (h < 0)
            return -1;
        v = (v << 4) | (unsigned)h;
    }
    *out = v;
    return 0;
}

static size_t utf8_put(char *o, unsigned cp)
{
    if (cp < 0x80) {
        o[0] = (char)cp;
        return 1;
    }
    if (cp < 0x800) {
        o[0] = (char)(0xc0 | (cp >> 6));
        o[1] = (char)(0x80 | (cp & 0x3f));
        return 2;
    }
    if (cp < 0x10000) {
        o[0] = (char)(0xe0 | (cp >> 12));
        o[1] = (char)(0x80 | ((cp >> 6) & 0x3f));
        o[2] = (char)(0x80 | (cp & 0x3f));
        return 3;
    }
    o[0] = (char)(0xf0 | (cp >> 18));
    o[1] = (char)(0x80 | ((cp >> 12) & 0x3f));
    o[2] = (char)(0x80 | ((cp >> 6) & 0x3f));
    o[3] = (char)(0x80 | (cp & 0x3f));
    return 4;
}

/*
 * Parses a string starting at s->p (which must be '"'). When out is non-NULL, the decoded
 * bytes are written to it; the caller sizes it to at least the raw text length (decoding
 * never grows: every escape is at least as long as its UTF-8 output). Returns the decoded
 * length, or -1 if malformed.
 */
static ssize_t mj_string(struct mj *s, char *out)
{
    if (s->p >= s->end || *s->p != '"')
        return -1;
    s->p++;
    size_t n = 0;
    while (s->p < s->end) {
        unsigned char c = (unsigned char)*s->p++;
        if (c == '"')
            return (ssize_t)n;
        if (c < 0x20)
            return -1;
        if (c != '\\') {
            if (out)
                out[n] = (char)c;
            n++;
            continue;
        }
        if (s->p >= s->end)
            return -1;
        char e = *s->p++;
        char lit;
        switch (e) {
        case '"': lit = '"'; break;
        case '\\': lit = '\\'; break;
        case '/': lit = '/'; break;
        case 'b': lit = '\b'; break;
        case 'f': lit = '\f'; break;
        case 'n': lit = '\n'; break;
        case 'r': lit = '\r'; break;
        case 't': lit = '\t'; break;
        case 'u': {
            unsigned cp;
            if (read_hex4(s->p, s->end, &cp) < 0)
                return -1;
            s->p += 4;
            if (cp == 0)
                return -1;
            if (cp >= 0xdc00 && cp <= 0xdfff)
                return -1; /* lone low surrogate */
            if (cp >= 0xd800 && cp <= 0xdbff) {
                unsigned lo;
                if (s->end - s->p < 6 || s->p[0] != '\\' || s->p[1] != 'u' ||
                    read_hex4(s->p + 2, s->end, &lo) < 0 || lo < 0xdc00 || lo > 0xdfff)
                    return -1;
                s->p += 6;
                cp = 0x10000 + ((cp - 0xd800) << 10) + (lo - 0xdc00);
            }
            char tmp[4];
            size_t k = utf8_put(tmp, cp);
            if (out)
                memcpy(out + n, tmp, k);
            n += k;
            continue;
        }
        default:
            return -1;
        }
        if (out)
            out[n] = lit;
        n++;
    }
    return -1; /* unterminated */
}

/* Decodes the string at s->p into a new NUL-terminated heap buffer. */
static int mj_string_dup(struct mj *s, char **out, size_t *outlen)
{
    struct mj probe = *s;
    if (mj_string(&probe, NULL) < 0)
        return -1;
    size_t raw = (size_t)(probe.p - s->p);
    char *b = malloc(raw + 1);
    if (!b)
        return -1;
    ssize_t n = mj_string(s, b);
    b[n] = '\0';
    *out = b;
    if (outlen)
        *outlen = (size_t)n;
    return 0;
}

static bool mj_lit(struct mj *s, const char *word)
{
    size_t l = strlen(word);
    if ((size_t)(s->end - s->p) < l || memcmp(s->p, word, l) != 0)
        return false;
    s->p += l;
    return true;
}

static int mj_value(struct mj *s, struct mj_val *v)
{
    if (s->p >= s->end)
        return -1;
    v->start = s->p;
    v->count = 0;
    char c = *s->p;
    if (c == '"') {
        if (mj_string(s, NULL) < 0)
            return -1;
        v->kind = MJ_STR;
    } else if (c == '-' || (c >= '0' && c <= '9')) {
        if (c == '-')
            s->p++;
        if (s->p >= s->end || *s->p < '0' || *s->p > '9')
            return -1;
        if (*s->p == '0') {
            s->p++;
        } else {
            while (s->p < s->end && *s->p >= '0' && *s->p <= '9')
                s->p++;
        }
        /* fractions and exponents are not integers: reject */
        if (s->p < s->end && (*s->p == '.' || *s->p == 'e' || *s->p == 'E' ||
                              (*s->p >= '0' && *s->p <= '9')))
            return -1;
        v->kind = MJ_INT;
    } else if (c == 't' || c == 'f') {
        if (mj_lit(s, "true"))
            v->b = true;
        else if (mj_lit(s, "false"))
            v->b = false;
        else
            return -1;
        v->kind = MJ_BOOL;
    } else if (c == 'n') {
        if (!mj_lit(s, "null"))
            return -1;
        v->kind = MJ_NULL;
    } else if (c == '[') {
        s->p++;
        mj_ws(s);
        v->kind = MJ_ARR;
        if (s->p < s->end && *s->p == ']') {
            s->p++;
        } else {
            for (;;) {
                mj_ws(s);
                if (mj_string(s, NULL) < 0)
                    return -1; /* only strings inside arrays */
                if (++v->count > MVM_EXEC_MAX_ARGS)
                    return -1;
                mj_ws(s);
                if (s->p >= s->end)
                    return -1;
                if (*s->p == ']') {
                    s->p++;
                    break;
                }
                if (*s->p != ',')
                    return -1;
                s->p++;
            }
        }
    } else {
        return -1;
    }
    v->stop = s->p;
    return 0;
}

/* Compares the JSON string at s->p with key (decoding escapes); advances s->p past it. */
static int mj_key_eq(struct mj *s, const char *key, bool *eq)
{
    char *k;
    size_t kl;
    if (mj_string_dup(s, &k, &kl) < 0)
        return -1;
    *eq = key && kl == strlen(key) && memcmp(k, key, kl) == 0;
    free(k);
    return 0;
}

/*
 * Walks the whole document, validating it. If key is non-NULL and found, *found is set
 * and *val describes the value. A key appearing twice is malformed when it is the one
 * looked up. Returns 0 or -1.
 */
static int mj_scan(const char *js, size_t len, const char *key, bool *found, struct mj_val *val)
{
    struct mj s = { js, js + len };
    if (found)
        *found = false;
    if (!js)
        return -1;
    mj_ws(&s);
    if (s.p >= s.end || *s.p != '{')
        return -1;
    s.p++;
    mj_ws(&s);
    if (s.p < s.end && *s.p == '}') {
        s.p++;
    } else {
        for (;;) {
            mj_ws(&s);
            bool eq = false;
            if (key) {
                if (mj_key_eq(&s, key, &eq) < 0)
                    return -1;
            } else if (mj_string(&s, NULL) < 0) {
                return -1;
            }
            mj_ws(&s);
            if (s.p >= s.end || *s.p != ':')
                return -1;
            s.p++;
            mj_ws(&s);
            struct mj_val v;
            if (mj_value(&s, &v) < 0)
                return -1;
            if (eq) {
                if (*found)
                    return -1; /* duplicate key */
                *found = true;
                *val = v;
            }
            mj_ws(&s);
            if (s.p >= s.end)
                return -1;
            if (*s.p == '}') {
                s.p++;
                break;
            }
            if (*s.p != ',')
                return -1;
            s.p++;
        }
    }
    mj_ws(&s);
    return s.p == s.end ? 0 : -1;
}

int mvm_mj_validate(const char *js, size_t len)
{
    return mj_scan(js, len, NULL, NULL, NULL);
}

/* Common lookup: 1 found (with kind), 0 absent/null, -1 malformed or wrong kind. */
static int mj_lookup(const char *js, size_t len, const char *key, enum mj_kind kind,
                     struct mj_val *v)
{
    bool found;
    if (!key || mj_scan(js, len, key, &found, v) < 0)
        return -1;
    if (!found || v->kind == MJ_NULL)
        return 0;
    return v->kind == kind ? 1 : -1;
}

int mvm_mj_get_str(const char *js, size_t len, const char *key, char **out)
{
    struct mj_val v;
    int rc = mj_lookup(js, len, key, MJ_STR, &v);
    if (rc != 1)
        return rc;
    struct mj s = { v.start, v.stop };
    return mj_string_dup(&s, out, NULL) < 0 ? -1 : 1;
}

int mvm_mj_get_int(const char *js, size_t len, const char *key, long long *out)
{
    struct mj_val v;
    int rc = mj_lookup(js, len, key, MJ_INT, &v);
    if (rc != 1)
        return rc;
    const char *p = v.start;
    bool neg = false;
    if (*p == '-') {
        neg = true;
        p++;
    }
    /* accumulate as a negative number so LLONG_MIN fits */
    long long acc = 0;
    for (; p < v.stop; p++) {
        int d = *p - '0';
        if (acc < (LLONG_MIN + d) / 10)
            return -1;
        acc = acc * 10 - d;
    }
    if (!neg) {
        if (acc == LLONG_MIN)
            return -1;
        acc = -acc;
    }
    *out = acc;
    return 1;
}

int mvm_mj_get_bool(const char *js, size_t len, const char *key, bool *out)
{
    struct mj_val v;
    int rc = mj_lookup(js, len, key, MJ_BOOL, &v);
    if (rc != 1)
        return rc;
    *out = v.b;
    return 1;
}

int mvm_mj_get_strv(const char *js, size_t len, const char *key, char ***out)
{
    struct mj_val v;
    int rc = mj_lookup(js, len, key, MJ_ARR, &v);
    if (rc != 1)
        return rc;
    char **vec = calloc(v.count + 1, sizeof(char *));
    if (!vec)
        return -1;
    struct mj s = { v.start + 1, v.stop };
    for (size_t i = 0; i < v.count; i++) {
        mj_ws(&s);
        if (mj_string_dup(&s, &vec[i], NULL) < 0) {
            for (size_t j = 0; j < i; j++)
                free(vec[j]);
            free(vec);
            return -1;
        }
        mj_ws(&s);
        if (s.p < s.end && *s.p == ',')
            s.p++;
    }
    *out = vec;
    return 1;
}

/* ------------------------------------------------------------------------------------------
 * JSON writer
 * ---------------------------------------------------------------------------------------- */

static void mw_put(struct mvm_mj_writer *w, const char *s, size_t n)
{
    if (w->oom)
        return;
    if (w->len + n + 1 > w->cap) {
        size_t cap = w->cap ? w->cap : 128;
        while (cap < w->len + n + 1)
            cap *= 2;
        char *nb = realloc(w->buf, cap);
        if (!nb) {
            w->oom = true;
            return;
        }
        w->buf = nb;
        w->cap = cap;
    }
    memcpy(w->buf + w->len, s, n);
    w->len += n;
    w->buf[w->len] = '\0';
}

static void mw_putc(struct mvm_mj_writer *w, char c)
{
    mw_put(w, &c, 1);
}

static void mw_string(struct mvm_mj_writer *w, const char *s)
{
    mw_putc(w, '"');
    const char *run = s;
    for (; *s; s++) {
        unsigned char c = (unsigned char)*s;
        const char *esc = NULL;
        char ubuf[8];
        switch (c) {
        case '"': esc = "\\\""; break;
        case '\\': esc = "\\\\"; break;
        case '\b': esc = "\\b"; break;
        case '\f': esc = "\\f"; break;
        case '\n': esc = "\\n"; break;
        case '\r': esc = "\\r"; break;
        case '\t': esc = "\\t"; break;
        default:
            if (c < 0x20 || c == 0x7f) {
                snprintf(ubuf, sizeof(ubuf), "\\u%04x", c);
                esc = ubuf;
            }
        }
        if (esc) {
            mw_put(w, run, (size_t)(s - run));
            mw_put(w, esc, strlen(esc));
            run = s + 1;
        }
    }
    mw_put(w, run, (size_t)(s - run));
    mw_putc(w, '"');
}

static void mw_key(struct mvm_mj_writer *w, const char *key)
{
    if (w->need_comma)
        mw_putc(w, ',');
    w->need_comma = true;
    mw_string(w, key ? key : "");
    mw_putc(w, ':');
}

void mvm_mj_begin(struct mvm_mj_writer *w)
{
    w->buf = NULL;
    w->len = 0;
    w->cap = 0;
    w->oom = false;
    w->need_comma = false;
    mw_putc(w, '{');
}

void mvm_mj_str(struct mvm_mj_writer *w, const char *key, const char *val)
{
    mw_key(w, key);
    mw_string(w, val ? val : "");
}

void mvm_mj_int(struct mvm_mj_writer *w, const char *key, long long val)
{
    char b[32];
    int n = snprintf(b, sizeof(b), "%lld", val);
    mw_key(w, key);
    mw_put(w, b, (size_t)n);
}

void mvm_mj_bool(struct mvm_mj_writer *w, const char *key, bool val)
{
    mw_key(w, key);
    if (val)
        mw_put(w, "true", 4);
    else
        mw_put(w, "false", 5);
}

void mvm_mj_strv(struct mvm_mj_writer *w, const char *key, char *const *vals)
{
    mw_key(w, key);
    mw_putc(w, '[');
    for (size_t i = 0; vals && vals[i]; i++) {
        if (i)
            mw_putc(w, ',');
        mw_string(w, vals[i]);
    }
    mw_putc(w, ']');
}

char *mvm_mj_end(struct mvm_mj_writer *w, size_t *len)
{
    mw_putc(w, '}');
    if (w->oom) {
        free(w->buf);
        w->buf = NULL;
        w->len = w->cap = 0;
        return NULL;
    }
    char *b = w->buf;
    if (len)
        *len = w->len;
    w->buf = NULL;
    w->len = w->cap = 0;
    return b;
}

/* ------------------------------------------------------------------------------------------
 * Exec request
 * ---------------------------------------------------------------------------------------- */

char *mvm_exec_req_encode(const struct mvm_exec_req *r, size_t *len)
{
    struct mvm_mj_writer w;
    mvm_mj_begin(&w);
    mvm_mj_strv(&w, "argv", r->argv);
    if (r->env)
        mvm_mj_strv(&w, "env", r->env);
    if (r->cwd)
        mvm_mj_str(&w, "cwd", r->cwd);
    mvm_mj_bool(&w, "tty", r->tty);
    if (r->rows > 0)
        mvm_mj_int(&w, "rows", r->rows);
    if (r->cols > 0)
        mvm_mj_int(&w, "cols", r->cols);
    return mvm_mj_end(&w, len);
}

void mvm_exec_req_free(struct mvm_exec_req *r)
{
    if (!r)
        return;
    for (char **p = r->argv; p && *p; p++)
        free(*p);
    free(r->argv);
    for (char **p = r->env; p && *p; p++)
        free(*p);
    free(r->env);
    free(r->cwd);
    memset(r, 0, sizeof(*r));
}

static int get_dim(const char *js, size_t len, const char *key, int *out)
{
    long long v;
    int rc = mvm_mj_get_int(js, len, key, &v);
    if (rc < 0)
        return -1;
    if (rc == 1) {
        if (v < 0 || v > 65535)
            return -1;
        *out = (int)v;
    }
    return 0;
}

int mvm_exec_req_decode(const char *js, size_t len, struct mvm_exec_req *out)
{
    struct mvm_exec_req r = { .rows = 24, .cols = 80 };
    memset(out, 0, sizeof(*out));
    if (mvm_mj_get_strv(js, len, "argv", &r.argv) != 1 || !r.argv[0])
        goto fail;
    if (mvm_mj_get_strv(js, len, "env", &r.env) < 0)
        goto fail;
    for (char **e = r.env; e && *e; e++) {
        const char *eq = strchr(*e, '=');
        if (!eq || eq == *e)
            goto fail;
    }
    if (mvm_mj_get_str(js, len, "cwd", &r.cwd) < 0)
        goto fail;
    if (mvm_mj_get_bool(js, len, "tty", &r.tty) < 0)
        goto fail;
    if (get_dim(js, len, "rows", &r.rows) < 0 || get_dim(js, len, "cols", &r.cols) < 0)
        goto fail;
    *out = r;
    return 0;
fail:
    mvm_exec_req_free(&r);
    return -1;
}
