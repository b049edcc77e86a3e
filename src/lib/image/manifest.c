/* manifest.json: strict parsing and canonical serialisation (jansson). */
#include <errno.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <jansson.h>

#include "image-internal.h"
#include "util.h"

/* jansson provides json_decrefp() for use with the cleanup attribute */
#define _cleanup_json_ _cleanup_(json_decrefp)

static void artifact_clear(struct mvm_artifact *a) {
    free(a->name);
    free(a->file);
    free(a->format);
    free(a->sha256);
    memset(a, 0, sizeof(*a));
}

void mvm_manifest_free(struct mvm_manifest *m) {
    if (!m)
        return;
    free(m->name);
    free(m->created);
    free(m->cmdline);
    free(m->source_kind);
    free(m->source_ref);
    free(m->kernel_version);
    free(m->source_lock_sha256);
    free(m->source_profile);
    free(m->source_nix_version);
    free(m->source_builder_digest);
    free(m->source_build_key);
    for (size_t i = 0; i < m->n_packages; i++) {
        free(m->packages[i].name);
        free(m->packages[i].version);
        free(m->packages[i].sha256);
    }
    free(m->packages);
    for (size_t i = 0; i < m->n_artifacts; i++)
        artifact_clear(&m->artifacts[i]);
    free(m->artifacts);
    memset(m, 0, sizeof(*m));
}

const struct mvm_artifact *mvm_manifest_find(const struct mvm_manifest *m, const char *name) {
    if (!m || !name)
        return NULL;
    for (size_t i = 0; i < m->n_artifacts; i++)
        if (m->artifacts[i].name && !strcmp(m->artifacts[i].name, name))
            return &m->artifacts[i];
    return NULL;
}

bool image_file_name_ok(const char *f) {
    if (!f || !*f || strlen(f) > 255)
        return false;
    if (!strcmp(f, ".") || !strcmp(f, "..") || !strcmp(f, IMAGE_MANIFEST_FILE))
        return false;
    for (const char *p = f; *p; p++)
        if (*p == '/' || *p == '\\' || (unsigned char)*p < 0x20 || *p == 0x7f)
            return false;
    return true;
}

int image_tag_validate(const char *tag, mvm_error **err) {
    size_t n = tag ? strlen(tag) : 0;
    bool ok = n >= 1 && n <= IMAGE_TAG_MAX;
    for (size_t i = 0; ok && i < n; i++) {
        char c = tag[i];
        bool alnum = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9');
        if (i == 0 ? !alnum : !(alnum || c == '.' || c == '_' || c == '-'))
            ok = false;
    }
    if (!ok)
        return mvm_error_set(err, MVM_EINVAL,
                             "invalid image name '%s': use letters, digits, '.', '_' or '-' "
                             "(max %d, starting with a letter or digit)",
                             tag ? tag : "", IMAGE_TAG_MAX);
    return 0;
}

bool image_is_hex(const char *s, size_t min, size_t max) {
    size_t n = 0;
    for (; s[n]; n++)
        if (!((s[n] >= '0' && s[n] <= '9') || (s[n] >= 'a' && s[n] <= 'f')))
            return false;
    return n >= min && n <= max;
}

int mvm_image_ref_validate(const char *ref, mvm_error **err) {
    if (ref && !strncmp(ref, "sha256:", 7)) {
        if (!image_is_hex(ref + 7, 12, MVM_DIGEST_HEX))
            return mvm_error_set(err, MVM_EINVAL,
                                 "invalid image digest '%s': expected sha256: followed by 12 "
                                 "to 64 lowercase hex digits",
                                 ref);
        return 0;
    }
    /* a hex prefix (>= 12 chars) is also a syntactically valid tag */
    return image_tag_validate(ref, err);
}

char *image_created_now(void) {
    time_t t = time(NULL);
    const char *sde = getenv("SOURCE_DATE_EPOCH");
    if (sde && *sde) {
        char *end;
        errno = 0;
        long long v = strtoll(sde, &end, 10);
        if (!errno && !*end && v >= 0)
            t = (time_t)v;
    }
    struct tm tm;
    if (!gmtime_r(&t, &tm))
        return strdup("1970-01-01T00:00:00Z");
    char buf[32];
    strftime(buf, sizeof(buf), "%Y-%m-%dT%H:%M:%SZ", &tm);
    return strdup(buf);
}


/* ---- serialisation ---- */

static int set_str(json_t *o, const char *k, const char *v) {
    return json_object_set_new(o, k, json_string(v ? v : ""));
}

int mvm_manifest_to_json(const struct mvm_manifest *m, char **out, size_t *len, mvm_error **err) {
    _cleanup_json_ json_t *root = json_object();
    _cleanup_json_ json_t *arts = json_array();
    _cleanup_json_ json_t *src = json_object();
    if (!root || !arts || !src)
        return mvm_error_set(err, ENOMEM, "out of memory");
    int bad = 0;
    bad |= json_object_set_new(root, "schema", json_integer(m->schema));
    bad |= set_str(root, "name", m->name);
    bad |= set_str(root, "created", m->created);
    bad |= set_str(root, "cmdline", m->cmdline);
    bad |= set_str(root, "kernel_version", m->kernel_version);
    bad |= set_str(src, "kind", m->source_kind);
    bad |= set_str(src, "ref", m->source_ref);
    /* optional provenance: present only when set, so older manifests keep their bytes */
    static const struct {
        const char *key;
        size_t off;
    } opt[] = {
        {"lock_sha256", offsetof(struct mvm_manifest, source_lock_sha256)},
        {"profile", offsetof(struct mvm_manifest, source_profile)},
        {"nix_version", offsetof(struct mvm_manifest, source_nix_version)},
        {"builder_digest", offsetof(struct mvm_manifest, source_builder_digest)},
        {"build_key", offsetof(struct mvm_manifest, source_build_key)},
    };
    for (size_t i = 0; i < sizeof(opt) / sizeof(opt[0]); i++) {
        const char *v = *(char *const *)((const char *)m + opt[i].off);
        if (v)
            bad |= set_str(src, opt[i].key, v);
    }
    if (m->n_packages > 0) {
        json_t *pkgs = json_array();
        if (!pkgs)
            return mvm_error_set(err, ENOMEM, "out of memory");
        bad |= json_object_set_new(src, "packages", pkgs);
        for (size_t i = 0; i < m->n_packages; i++) {
            json_t *o = json_object();
            if (!o)
                return mvm_error_set(err, ENOMEM, "out of memory");
            bad |= set_str(o, "name", m->packages[i].name);
            bad |= set_str(o, "version", m->packages[i].version);
            bad |= set_str(o, "sha256", m->packages[i].sha256);
            bad |= json_array_append_new(pkgs, o);
        }
    }
    for (size_t i = 0; i < m->n_artifacts; i++) {
        const struct mvm_artifact *a = &m->artifacts[i];
        if (a->size > (uint64_t)INT64_MAX)
            return mvm_error_set(err, EOVERFLOW, "artifact %s: size too large", a->file);
        json_t *o = json_object();
        if (!o)
            return mvm_error_set(err, ENOMEM, "out of memory");
        bad |= set_str(o, "name", a->name);
        bad |= set_str(o, "file", a->file);
        bad |= set_str(o, "format", a->format);
        bad |= set_str(o, "sha256", a->sha256);
        bad |= json_object_set_new(o, "size", json_integer((json_int_t)a->size));
        bad |= json_array_append_new(arts, o);
    }
    bad |= json_object_set(root, "source", src);
    bad |= json_object_set(root, "artifacts", arts);
    if (bad)
        return mvm_error_set(err, ENOMEM, "cannot build manifest JSON");
    char *s = json_dumps(root, JSON_SORT_KEYS | JSON_INDENT(2));
    if (!s)
        return mvm_error_set(err, ENOMEM, "cannot serialise manifest");
    size_t n = strlen(s);
    char *r = realloc(s, n + 2);
    if (!r) {
        free(s);
        return mvm_error_set(err, ENOMEM, "out of memory");
    }
    r[n] = '\n';
    r[n + 1] = '\0';
    *out = r;
    if (len)
        *len = n + 1;
    return 0;
}

/* ---- strict parsing ---- */

static int check_keys(json_t *o, const char *const *allowed, const char *where, mvm_error **err) {
    const char *k;
    json_t *v;
    json_object_foreach(o, k, v) {
        bool ok = false;
        for (const char *const *a = allowed; *a; a++)
            if (!strcmp(*a, k))
                ok = true;
        if (!ok)
            return mvm_error_set(err, MVM_EINTEGRITY, "manifest: unknown field '%s' in %s", k,
                                 where);
    }
    (void)v;
    return 0;
}

static int get_str(json_t *o, const char *k, const char *where, bool nonempty, char **out,
                   mvm_error **err) {
    json_t *v = json_object_get(o, k);
    if (!v)
        return mvm_error_set(err, MVM_EINTEGRITY, "manifest: missing field '%s' in %s", k, where);
    if (!json_is_string(v))
        return mvm_error_set(err, MVM_EINTEGRITY, "manifest: field '%s' in %s must be a string",
                             k, where);
    const char *s = json_string_value(v);
    if (strlen(s) != json_string_length(v))
        return mvm_error_set(err, MVM_EINTEGRITY, "manifest: field '%s' in %s contains NUL", k,
                             where);
    if (nonempty && !*s)
        return mvm_error_set(err, MVM_EINTEGRITY, "manifest: field '%s' in %s is empty", k,
                             where);
    *out = strdup(s);
    if (!*out)
        return mvm_error_set(err, ENOMEM, "out of memory");
    return 0;
}

static int parse_artifact(json_t *o, size_t idx, struct mvm_artifact *a, mvm_error **err) {
    static const char *const keys[] = {"name", "file", "format", "sha256", "size", NULL};
    char where[48];
    snprintf(where, sizeof(where), "artifacts[%zu]", idx);
    if (!json_is_object(o))
        return mvm_error_set(err, MVM_EINTEGRITY, "manifest: %s must be an object", where);
    if (check_keys(o, keys, where, err) < 0 || get_str(o, "name", where, true, &a->name, err) < 0 ||
        get_str(o, "file", where, true, &a->file, err) < 0 ||
        get_str(o, "format", where, true, &a->format, err) < 0 ||
        get_str(o, "sha256", where, true, &a->sha256, err) < 0)
        return -1;
    if (!image_file_name_ok(a->file))
        return mvm_error_set(err, MVM_EINTEGRITY,
                             "manifest: %s: invalid file name '%s' (no path separators)", where,
                             a->file);
    if (strlen(a->sha256) != MVM_DIGEST_HEX || !image_is_hex(a->sha256, 64, 64))
        return mvm_error_set(err, MVM_EINTEGRITY,
                             "manifest: %s (%s): sha256 must be 64 lowercase hex digits", where,
                             a->file);
    json_t *sz = json_object_get(o, "size");
    if (!sz)
        return mvm_error_set(err, MVM_EINTEGRITY, "manifest: missing field 'size' in %s", where);
    if (!json_is_integer(sz) || json_integer_value(sz) < 0)
        return mvm_error_set(err, MVM_EINTEGRITY,
                             "manifest: %s: size must be a non-negative integer", where);
    a->size = (uint64_t)json_integer_value(sz);
    return 0;
}

/* An optional string in the source object: absent -> NULL; hex -> 64 lowercase hex digits. */
static int get_opt_str(json_t *src, const char *k, bool hex, char **out, mvm_error **err) {
    if (!json_object_get(src, k))
        return 0;
    if (get_str(src, k, "source", true, out, err) < 0)
        return -1;
    if (hex && !image_is_hex(*out, MVM_DIGEST_HEX, MVM_DIGEST_HEX))
        return mvm_error_set(err, MVM_EINTEGRITY,
                             "manifest: source.%s must be 64 lowercase hex digits", k);
    return 0;
}

static int parse_packages(json_t *src, struct mvm_manifest *m, mvm_error **err) {
    static const char *const keys[] = {"name", "version", "sha256", NULL};
    json_t *pkgs = json_object_get(src, "packages");
    if (!pkgs)
        return 0;
    if (!json_is_array(pkgs) || json_array_size(pkgs) == 0)
        return mvm_error_set(err, MVM_EINTEGRITY,
                             "manifest: source.packages must be a non-empty array");
    m->packages = calloc(json_array_size(pkgs), sizeof(*m->packages));
    if (!m->packages)
        return mvm_error_set(err, ENOMEM, "out of memory");
    for (size_t i = 0; i < json_array_size(pkgs); i++) {
        json_t *o = json_array_get(pkgs, i);
        struct mvm_package *p = &m->packages[i];
        char where[48];
        snprintf(where, sizeof(where), "source.packages[%zu]", i);
        m->n_packages = i + 1;
        if (!json_is_object(o))
            return mvm_error_set(err, MVM_EINTEGRITY, "manifest: %s must be an object", where);
        if (check_keys(o, keys, where, err) < 0 ||
            get_str(o, "name", where, true, &p->name, err) < 0 ||
            get_str(o, "version", where, true, &p->version, err) < 0 ||
            get_str(o, "sha256", where, true, &p->sha256, err) < 0)
            return -1;
        if (!image_is_hex(p->sha256, MVM_DIGEST_HEX, MVM_DIGEST_HEX))
            return mvm_error_set(err, MVM_EINTEGRITY,
                                 "manifest: %s (%s): sha256 must be 64 lowercase hex digits",
                                 where, p->name);
    }
    return 0;
}

int mvm_manifest_from_json(const char *js, size_t len, struct mvm_manifest *out, mvm_error **err) {
    static const char *const keys[] = {"schema",         "name",   "created",   "cmdline",
                                       "kernel_version", "source", "artifacts", NULL};
    static const char *const src_keys[] = {"kind",        "ref",            "lock_sha256",
                                           "profile",     "nix_version",    "builder_digest",
                                           "build_key",   "packages",       NULL};
    memset(out, 0, sizeof(*out));
    json_error_t je;
    _cleanup_json_ json_t *root = json_loadb(js, len, JSON_REJECT_DUPLICATES, &je);
    if (!root)
        return mvm_error_set(err, MVM_EINTEGRITY, "manifest: invalid JSON at line %d: %s",
                             je.line, je.text);
    if (!json_is_object(root))
        return mvm_error_set(err, MVM_EINTEGRITY, "manifest: top level must be an object");
    json_t *schema = json_object_get(root, "schema");
    if (!schema)
        return mvm_error_set(err, MVM_EINTEGRITY, "manifest: missing field 'schema'");
    if (!json_is_integer(schema) || json_integer_value(schema) != 1)
        return mvm_error_set(err, MVM_EINTEGRITY,
                             "manifest: unsupported schema (this mvm reads schema 1)");
    struct mvm_manifest m = {.schema = 1};
    json_t *src, *arts;
    if (check_keys(root, keys, "manifest", err) < 0 ||
        get_str(root, "name", "manifest", true, &m.name, err) < 0 ||
        image_tag_validate(m.name, err) < 0 ||
        get_str(root, "created", "manifest", true, &m.created, err) < 0 ||
        get_str(root, "cmdline", "manifest", false, &m.cmdline, err) < 0 ||
        get_str(root, "kernel_version", "manifest", false, &m.kernel_version, err) < 0)
        goto fail;
    src = json_object_get(root, "source");
    if (!src || !json_is_object(src)) {
        mvm_error_set(err, MVM_EINTEGRITY, "manifest: missing or invalid 'source' object");
        goto fail;
    }
    if (check_keys(src, src_keys, "source", err) < 0 ||
        get_str(src, "kind", "source", true, &m.source_kind, err) < 0 ||
        get_str(src, "ref", "source", true, &m.source_ref, err) < 0 ||
        get_opt_str(src, "lock_sha256", true, &m.source_lock_sha256, err) < 0 ||
        get_opt_str(src, "profile", false, &m.source_profile, err) < 0 ||
        get_opt_str(src, "nix_version", false, &m.source_nix_version, err) < 0 ||
        get_opt_str(src, "builder_digest", true, &m.source_builder_digest, err) < 0 ||
        get_opt_str(src, "build_key", true, &m.source_build_key, err) < 0 ||
        parse_packages(src, &m, err) < 0)
        goto fail;
    if (strcmp(m.source_kind, "recipe") && strcmp(m.source_kind, "flake") &&
        strcmp(m.source_kind, "builder")) {
        mvm_error_set(err, MVM_EINTEGRITY, "manifest: unknown source kind '%s'", m.source_kind);
        goto fail;
    }
    arts = json_object_get(root, "artifacts");
    if (!arts || !json_is_array(arts) || json_array_size(arts) == 0) {
        mvm_error_set(err, MVM_EINTEGRITY, "manifest: 'artifacts' must be a non-empty array");
        goto fail;
    }
    m.artifacts = calloc(json_array_size(arts), sizeof(*m.artifacts));
    if (!m.artifacts) {
        mvm_error_set(err, ENOMEM, "out of memory");
        goto fail;
    }
    for (size_t i = 0; i < json_array_size(arts); i++) {
        m.n_artifacts = i + 1;
        if (parse_artifact(json_array_get(arts, i), i, &m.artifacts[i], err) < 0)
            goto fail;
        for (size_t j = 0; j < i; j++) {
            if (!strcmp(m.artifacts[j].name, m.artifacts[i].name) ||
                !strcmp(m.artifacts[j].file, m.artifacts[i].file)) {
                mvm_error_set(err, MVM_EINTEGRITY, "manifest: duplicate artifact '%s' (%s)",
                              m.artifacts[i].name, m.artifacts[i].file);
                goto fail;
            }
        }
    }
    *out = m;
    return 0;
fail:
    mvm_manifest_free(&m);
    return -1;
}
