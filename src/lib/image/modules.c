/* Kernel module dependency resolution from .modinfo "depends=" strings. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "image-internal.h"
#include "util.h"

static char norm(char c) { return c == '-' ? '_' : c; }

bool image_modname_eq(const char *a, const char *b) {
    for (; *a && *b; a++, b++)
        if (norm(*a) != norm(*b))
            return false;
    return *a == *b;
}

static bool modname_eq_n(const char *a, size_t alen, const char *b) {
    size_t i = 0;
    for (; i < alen && b[i]; i++)
        if (norm(a[i]) != norm(b[i]))
            return false;
    return i == alen && b[i] == '\0';
}

static uint64_t rd64(const unsigned char *p) {
    uint64_t v;
    memcpy(&v, p, 8);
    return v;
}

static uint32_t rd32(const unsigned char *p) {
    uint32_t v;
    memcpy(&v, p, 4);
    return v;
}

static uint16_t rd16(const unsigned char *p) {
    uint16_t v;
    memcpy(&v, p, 2);
    return v;
}

/* Narrows [*base, *base + *len) to the ELF64 .modinfo section when the bytes are a
 * little-endian ELF64 object; otherwise leaves the range alone. */
static void modinfo_section(const unsigned char **base, size_t *len) {
    const unsigned char *b = *base;
    size_t n = *len;
    if (n < 64 || memcmp(b, "\x7f" "ELF", 4) || b[4] != 2 || b[5] != 1)
        return;
    uint64_t shoff = rd64(b + 40);
    uint16_t shentsize = rd16(b + 58), shnum = rd16(b + 60), shstrndx = rd16(b + 62);
    if (shentsize < 64 || shstrndx >= shnum || shoff > n ||
        (uint64_t)shnum * shentsize > n - shoff)
        return;
    const unsigned char *strsh = b + shoff + (uint64_t)shstrndx * shentsize;
    uint64_t stroff = rd64(strsh + 24), strsize = rd64(strsh + 32);
    if (stroff > n || strsize > n - stroff)
        return;
    for (uint16_t i = 0; i < shnum; i++) {
        const unsigned char *sh = b + shoff + (uint64_t)i * shentsize;
        uint32_t nameoff = rd32(sh);
        uint64_t off = rd64(sh + 24), size = rd64(sh + 32);
        if (nameoff >= strsize || off > n || size > n - off)
            continue;
        const char *nm = (const char *)b + stroff + nameoff;
        size_t maxl = strsize - nameoff;
        if (strnlen(nm, maxl) == 8 && !memcmp(nm, ".modinfo", 8)) {
            *base = b + off;
            *len = size;
            return;
        }
    }
}

char *image_modinfo_get(const void *ko, size_t len, const char *key) {
    const unsigned char *start = ko;
    modinfo_section(&start, &len);
    const char *p = (const char *)start;
    size_t klen = strlen(key);
    /* .modinfo entries are NUL-separated "key=value" strings */
    for (size_t i = 0; i + klen + 1 <= len; i++) {
        if ((i > 0 && p[i - 1] != '\0') || memcmp(p + i, key, klen) || p[i + klen] != '=')
            continue;
        const char *v = p + i + klen + 1;
        const char *end = memchr(v, '\0', len - (size_t)(v - p));
        if (!end)
            return NULL;
        return strndup(v, (size_t)(end - v));
    }
    return NULL;
}

enum { WHITE = 0, GREY, BLACK };

struct resolver {
    const struct image_module *mods;
    size_t n;
    int *colour;
    size_t *order;
    size_t n_order;
    size_t *stack; /* current DFS path, for cycle messages */
    size_t depth;
};

static ssize_t find_mod(const struct resolver *r, const char *name, size_t len) {
    for (size_t i = 0; i < r->n; i++)
        if (modname_eq_n(name, len, r->mods[i].name))
            return (ssize_t)i;
    return -1;
}

static int visit(struct resolver *r, size_t idx, mvm_error **err) {
    if (r->colour[idx] == BLACK)
        return 0;
    if (r->colour[idx] == GREY) {
        /* print the cycle: from the first occurrence of idx on the stack */
        char msg[512] = "";
        size_t start = 0;
        while (start < r->depth && r->stack[start] != idx)
            start++;
        for (size_t k = start; k < r->depth; k++) {
            strncat(msg, r->mods[r->stack[k]].name, sizeof(msg) - strlen(msg) - 1);
            strncat(msg, " -> ", sizeof(msg) - strlen(msg) - 1);
        }
        strncat(msg, r->mods[idx].name, sizeof(msg) - strlen(msg) - 1);
        return mvm_error_set(err, EINVAL, "kernel module dependency cycle: %s", msg);
    }
    r->colour[idx] = GREY;
    r->stack[r->depth++] = idx;
    const char *d = r->mods[idx].depends ? r->mods[idx].depends : "";
    while (*d) {
        size_t len = strcspn(d, ",");
        /* tolerate stray blanks */
        const char *s = d;
        size_t l = len;
        while (l && *s == ' ') {
            s++;
            l--;
        }
        while (l && s[l - 1] == ' ')
            l--;
        if (l) {
            ssize_t dep = find_mod(r, s, l);
            if (dep < 0)
                return mvm_error_set(err, ENOENT,
                                     "kernel module '%.*s' (needed by '%s') not found", (int)l, s,
                                     r->mods[idx].name);
            if (visit(r, (size_t)dep, err) < 0)
                return -1;
        }
        d += len;
        if (*d == ',')
            d++;
    }
    r->depth--;
    r->colour[idx] = BLACK;
    r->order[r->n_order++] = idx;
    return 0;
}

int image_modules_order(const struct image_module *mods, size_t n, const char *const *wanted,
                        size_t n_wanted, size_t **order, size_t *n_order, mvm_error **err) {
    struct resolver r = {.mods = mods, .n = n};
    _cleanup_free_ int *colour = calloc(n ? n : 1, sizeof(int));
    _cleanup_free_ size_t *ord = calloc(n ? n : 1, sizeof(size_t));
    _cleanup_free_ size_t *stack = calloc(n ? n : 1, sizeof(size_t));
    if (!colour || !ord || !stack)
        return mvm_error_set(err, ENOMEM, "out of memory");
    r.colour = colour;
    r.order = ord;
    r.stack = stack;
    for (size_t w = 0; w < n_wanted; w++) {
        ssize_t idx = find_mod(&r, wanted[w], strlen(wanted[w]));
        if (idx < 0)
            return mvm_error_set(err, ENOENT, "kernel module '%s' not found", wanted[w]);
        if (visit(&r, (size_t)idx, err) < 0)
            return -1;
    }
    *n_order = r.n_order;
    *order = steal_pointer(&ord);
    return 0;
}
