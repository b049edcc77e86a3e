/* flake.lock audit: finds the inputs of a Nix lock file that are not pinned to exact content.
 *
 * Lock file layout (versions 5 to 7):
 *   {"version": 7, "root": "root",
 *    "nodes": {"root": {"inputs": {"nixpkgs": "nixpkgs", "utils": ["microvm", "utils"]}},
 *              "nixpkgs": {"locked": {...}, "original": {...}, "inputs": {...}}, ...}}
 * An input maps either to a node name or to a "follows" path: a list of input names walked
 * from the root node. Every node reachable from the root is audited once, under the shortest
 * input path that reaches it (breadth-first, inputs in name order). */
#include <stddef.h>

#include "mvm/build.h"
#include "util.h"

#include <jansson.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define LOCK_MAX_BYTES ((size_t)16 << 20)
/* Total lookups one follows resolution may make; a chain longer than this is a cycle. */
#define FOLLOWS_STEP_BUDGET 1024

struct findings {
    struct mvm_lock_finding *v;
    size_t n, cap;
};

/* Control characters from the lock file must not break the one-line contract. */
static void make_one_line(char *s) {
    for (; *s; s++)
        if ((unsigned char)*s < 0x20 || *s == 0x7f)
            *s = '?';
}

static int add_finding(struct findings *f, const char *input, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static int add_finding(struct findings *f, const char *input, const char *fmt, ...) {
    if (f->n == f->cap) {
        size_t cap = f->cap ? f->cap * 2 : 8;
        struct mvm_lock_finding *v = realloc(f->v, cap * sizeof(*v));
        if (!v)
            return -1;
        f->v = v;
        f->cap = cap;
    }
    char *problem = NULL;
    va_list ap;
    va_start(ap, fmt);
    int r = vasprintf(&problem, fmt, ap);
    va_end(ap);
    if (r < 0)
        return -1;
    char *in = strdup(input);
    if (!in) {
        free(problem);
        return -1;
    }
    make_one_line(in);
    make_one_line(problem);
    f->v[f->n++] = (struct mvm_lock_finding){in, problem};
    return 0;
}

void mvm_lock_findings_free(struct mvm_lock_finding *f, size_t n) {
    if (!f)
        return;
    for (size_t i = 0; i < n; i++) {
        free(f[i].input);
        free(f[i].problem);
    }
    free(f);
}

/* ---- structure checks ---- */

static const char *str_member(json_t *obj, const char *key) {
    json_t *v = json_is_object(obj) ? json_object_get(obj, key) : NULL;
    const char *s = json_is_string(v) ? json_string_value(v) : NULL;
    return s && *s ? s : NULL;
}

static int check_node(const char *name, json_t *node, mvm_error **err) {
    if (!json_is_object(node))
        return mvm_error_set(err, MVM_EINVAL, "flake.lock: node '%s' is not an object", name);
    json_t *inputs = json_object_get(node, "inputs");
    if (inputs && !json_is_object(inputs))
        return mvm_error_set(err, MVM_EINVAL, "flake.lock: node '%s': 'inputs' is not an object",
                             name);
    const char *key;
    json_t *ref;
    json_object_foreach(inputs, key, ref) {
        bool ok = json_is_string(ref);
        if (json_is_array(ref)) {
            ok = true;
            size_t i;
            json_t *el;
            json_array_foreach(ref, i, el) ok = ok && json_is_string(el);
        }
        if (!ok)
            return mvm_error_set(err, MVM_EINVAL,
                                 "flake.lock: node '%s': input '%s' is neither a node name nor "
                                 "a follows path",
                                 name, key);
    }
    static const char *const objs[] = {"locked", "original"};
    for (size_t i = 0; i < ARRAY_SIZE(objs); i++) {
        json_t *o = json_object_get(node, objs[i]);
        if (o && !json_is_object(o))
            return mvm_error_set(err, MVM_EINVAL, "flake.lock: node '%s': '%s' is not an object",
                                 name, objs[i]);
    }
    return 0;
}

/* ---- follows ---- */

struct lock {
    json_t *nodes;
    const char *root;
};

enum follows_result { FOLLOWS_OK, FOLLOWS_DANGLING, FOLLOWS_CYCLE };

/* Walks a follows path from the root node; *out is the node it ends at. */
static enum follows_result resolve_follows(const struct lock *l, json_t *path, int *budget,
                                           const char **out) {
    const char *cur = l->root;
    size_t i;
    json_t *el;
    json_array_foreach(path, i, el) {
        if (--*budget < 0)
            return FOLLOWS_CYCLE;
        json_t *inputs = json_object_get(json_object_get(l->nodes, cur), "inputs");
        json_t *ref = json_object_get(inputs, json_string_value(el));
        if (json_is_string(ref)) {
            cur = json_string_value(ref);
        } else if (json_is_array(ref)) {
            enum follows_result r = resolve_follows(l, ref, budget, &cur);
            if (r != FOLLOWS_OK)
                return r;
        } else {
            return FOLLOWS_DANGLING;
        }
        if (!json_object_get(l->nodes, cur))
            return FOLLOWS_DANGLING;
    }
    *out = cur;
    return FOLLOWS_OK;
}

static char *join_path(json_t *path) {
    size_t len = 1, i;
    json_t *el;
    json_array_foreach(path, i, el) len += json_string_length(el) + 1;
    char *s = malloc(len), *p = s;
    if (!s)
        return NULL;
    *p = '\0';
    json_array_foreach(path, i, el) {
        if (i)
            *p++ = '/';
        size_t n = json_string_length(el);
        memcpy(p, json_string_value(el), n);
        p += n;
        *p = '\0';
    }
    return s;
}

/* ---- one node ---- */

static bool is_vcs_type(const char *type) {
    static const char *const vcs[] = {"git", "github", "gitlab", "sourcehut", "mercurial", "hg"};
    for (size_t i = 0; i < ARRAY_SIZE(vcs); i++)
        if (!strcmp(type, vcs[i]))
            return true;
    return false;
}

static int audit_node(struct findings *f, const char *input, json_t *node) {
    json_t *locked = json_object_get(node, "locked");
    json_t *original = json_object_get(node, "original");
    if (!locked)
        return add_finding(f, input, "unlocked input (no 'locked' entry)");
    const char *type = str_member(locked, "type");
    if (!type)
        return add_finding(f, input, "locked entry has no type");
    bool has_nar = str_member(locked, "narHash") != NULL;

    if (!strcmp(type, "indirect")) {
        const char *id = str_member(locked, "id");
        if (!id)
            id = str_member(original, "id");
        return add_finding(f, input, "indirect (registry) reference 'flake:%s': not pinned",
                           id ? id : "?");
    }
    if (is_vcs_type(type)) {
        const char *rev = str_member(locked, "rev");
        const char *ref = str_member(original, "ref");
        if (!ref)
            ref = str_member(locked, "ref");
        if (ref && !strncmp(ref, "refs/heads/", 11) && ref[11])
            ref += 11;
        if (rev && has_nar)
            return 0;
        if (!rev && ref)
            return add_finding(f, input, "follows branch '%s' without a pinned rev%s", ref,
                               has_nar ? "" : "; no narHash");
        if (!rev)
            return add_finding(f, input, "%s input without a pinned rev%s", type,
                               has_nar ? "" : "; no narHash");
        return add_finding(f, input, "%s input at rev %.12s has no narHash", type, rev);
    }
    if (!strcmp(type, "path")) {
        if (has_nar)
            return 0;
        const char *path = str_member(locked, "path");
        if (!path)
            path = str_member(original, "path");
        return add_finding(f, input, "path input (local path '%s'): not reproducible",
                           path ? path : "?");
    }
    if (!strcmp(type, "tarball") || !strcmp(type, "file")) {
        if (has_nar)
            return 0;
        const char *url = str_member(locked, "url");
        if (!url)
            url = str_member(original, "url");
        return add_finding(f, input, "%s input (url '%s') has no narHash: not pinned", type,
                           url ? url : "?");
    }
    return add_finding(f, input, "unknown input type '%s'", type);
}

/* ---- walk ---- */

struct pending {
    const char *node; /* node name, owned by the parsed document */
    char *path;       /* input path from the root, "" for the root itself */
};

static int cmp_str(const void *a, const void *b) {
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

static int cmp_finding(const void *a, const void *b) {
    const struct mvm_lock_finding *x = a, *y = b;
    int r = strcmp(x->input, y->input);
    return r ? r : strcmp(x->problem, y->problem);
}

static int walk(const struct lock *l, struct findings *f) {
    int rc = -1;
    size_t total = json_object_size(l->nodes) + 1;
    struct pending *queue = calloc(total, sizeof(*queue));
    json_t *visited = json_object();
    size_t head = 0, tail = 0;
    if (!queue || !visited)
        goto out;
    queue[tail++] = (struct pending){l->root, strdup("")};
    if (!queue[0].path || json_object_set_new(visited, l->root, json_true()) < 0)
        goto out;

    while (head < tail) {
        struct pending *cur = &queue[head++];
        json_t *inputs = json_object_get(json_object_get(l->nodes, cur->node), "inputs");
        size_t n = json_object_size(inputs), k = 0;
        const char **names = calloc(n ? n : 1, sizeof(*names));
        if (!names)
            goto out;
        const char *key;
        json_t *ref;
        json_object_foreach(inputs, key, ref) names[k++] = key;
        qsort(names, n, sizeof(*names), cmp_str);

        for (k = 0; k < n; k++) {
            ref = json_object_get(inputs, names[k]);
            char *path = NULL;
            if (asprintf(&path, "%s%s%s", cur->path, *cur->path ? "/" : "", names[k]) < 0) {
                free(names);
                goto out;
            }
            int r = 0;
            if (json_is_array(ref)) {
                int budget = FOLLOWS_STEP_BUDGET;
                const char *target = NULL;
                enum follows_result fr = resolve_follows(l, ref, &budget, &target);
                if (fr != FOLLOWS_OK) {
                    char *to = join_path(ref);
                    r = to ? add_finding(f, path,
                                         fr == FOLLOWS_CYCLE
                                             ? "follows '%s', which leads into a cycle"
                                             : "follows '%s', which does not resolve to an input",
                                         to)
                           : -1;
                    free(to);
                }
                free(path);
            } else {
                const char *target = json_string_value(ref);
                json_t *node = json_object_get(l->nodes, target);
                if (!node) {
                    r = add_finding(f, path, "refers to lock node '%s', which does not exist",
                                    target);
                    free(path);
                } else if (json_object_get(visited, target)) {
                    free(path);
                } else if (json_object_set_new(visited, target, json_true()) < 0 ||
                           tail >= total) {
                    free(path);
                    r = -1;
                } else {
                    queue[tail++] = (struct pending){target, path};
                    r = audit_node(f, path, node);
                }
            }
            if (r < 0) {
                free(names);
                goto out;
            }
        }
        free(names);
    }
    rc = 0;
out:
    for (size_t i = 0; queue && i < tail; i++)
        free(queue[i].path);
    free(queue);
    json_decref(visited);
    return rc;
}

int mvm_flake_lock_audit(const char *json, size_t len, struct mvm_lock_finding **out, size_t *n,
                         mvm_error **err) {
    *out = NULL;
    *n = 0;
    if (len > LOCK_MAX_BYTES)
        return mvm_error_set(err, MVM_EINVAL, "flake.lock: too large (%zu bytes, limit %zu)",
                             len, LOCK_MAX_BYTES);
    json_error_t jerr;
    json_t *doc = json_loadb(json ? json : "", json ? len : 0, JSON_REJECT_DUPLICATES, &jerr);
    if (!doc)
        return mvm_error_set(err, MVM_EINVAL, "flake.lock: invalid JSON at line %d: %s",
                             jerr.line, jerr.text);
    int rc = -1;
    struct findings f = {0};
    if (!json_is_object(doc)) {
        mvm_error_set(err, MVM_EINVAL, "flake.lock: top level is not an object");
        goto out;
    }
    json_t *version = json_object_get(doc, "version");
    if (!json_is_integer(version)) {
        mvm_error_set(err, MVM_EINVAL, "flake.lock: no integer 'version'");
        goto out;
    }
    json_int_t v = json_integer_value(version);
    if (v < 5 || v > 7) {
        mvm_error_set(err, MVM_EINVAL,
                      "flake.lock: unsupported version %" JSON_INTEGER_FORMAT
                      " (supported: 5, 6, 7)",
                      v);
        goto out;
    }
    struct lock l = {json_object_get(doc, "nodes"), str_member(doc, "root")};
    if (!json_is_object(l.nodes)) {
        mvm_error_set(err, MVM_EINVAL, "flake.lock: no 'nodes' object");
        goto out;
    }
    if (!l.root) {
        mvm_error_set(err, MVM_EINVAL, "flake.lock: no 'root' node name");
        goto out;
    }
    if (!json_object_get(l.nodes, l.root)) {
        mvm_error_set(err, MVM_EINVAL, "flake.lock: root node '%s' is not among the nodes",
                      l.root);
        goto out;
    }
    const char *name;
    json_t *node;
    json_object_foreach(l.nodes, name, node) {
        if (check_node(name, node, err) < 0)
            goto out;
    }
    if (walk(&l, &f) < 0) {
        mvm_error_set(err, ENOMEM, "flake.lock: out of memory");
        goto out;
    }
    if (f.n)
        qsort(f.v, f.n, sizeof(*f.v), cmp_finding);
    *out = f.v;
    *n = f.n;
    f.v = NULL;
    rc = (int)*n;
out:
    mvm_lock_findings_free(f.v, f.n);
    json_decref(doc);
    return rc;
}
