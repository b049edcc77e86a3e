/* The content-addressed image cache: resolve, verify, list, remove, publish. */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include "image-internal.h"
#include "mvm/paths.h"
#include "util.h"

/* ---- small helpers ---- */

void image_strv_free(char **v) {
    if (!v)
        return;
    for (char **p = v; *p; p++)
        free(*p);
    free(v);
}

uint32_t image_source_date_epoch(void) {
    const char *s = getenv("SOURCE_DATE_EPOCH");
    if (s && *s) {
        char *end;
        errno = 0;
        unsigned long long v = strtoull(s, &end, 10);
        if (!errno && !*end && v <= UINT32_MAX)
            return (uint32_t)v;
    }
    return 0;
}

int image_write_string(const char *path, const char *s, int mode, mvm_error **err) {
    _cleanup_close_ int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW,
                                  (mode_t)mode);
    if (fd < 0)
        return mvm_error_sys(err, "cannot create %s", path);
    size_t len = strlen(s);
    while (len > 0) {
        ssize_t w = write(fd, s, len);
        if (w < 0 && errno == EINTR)
            continue;
        if (w < 0)
            return mvm_error_sys(err, "cannot write %s", path);
        s += w;
        len -= (size_t)w;
    }
    if (fchmod(fd, (mode_t)mode) < 0)
        return mvm_error_sys(err, "cannot chmod %s", path);
    return 0;
}

int image_link_or_copy(const char *src, const char *dst, int mode, mvm_error **err) {
    if (link(src, dst) == 0)
        return 0;
    if (errno != EXDEV && errno != EPERM && errno != EMLINK)
        return mvm_error_sys(err, "cannot link %s to %s", src, dst);
    return image_copy_file(src, dst, mode, err);
}

int image_copy_file(const char *src, const char *dst, int mode, mvm_error **err) {
    _cleanup_close_ int in = open(src, O_RDONLY | O_CLOEXEC);
    if (in < 0)
        return mvm_error_sys(err, "cannot open %s", src);
    _cleanup_close_ int out =
        open(dst, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW, (mode_t)mode);
    if (out < 0)
        return mvm_error_sys(err, "cannot create %s", dst);
    for (;;) {
        ssize_t n = copy_file_range(in, NULL, out, NULL, 1 << 30, 0);
        if (n < 0 && (errno == EXDEV || errno == ENOSYS || errno == EINVAL || errno == EOPNOTSUPP))
            break;
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0)
            return mvm_error_sys(err, "cannot copy %s to %s", src, dst);
        if (n == 0)
            goto done;
    }
    /* fallback: plain read/write from the current offsets */
    char buf[65536];
    for (;;) {
        ssize_t r = read(in, buf, sizeof(buf));
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0)
            return mvm_error_sys(err, "cannot read %s", src);
        if (r == 0)
            break;
        for (ssize_t off = 0; off < r;) {
            ssize_t w = write(out, buf + off, (size_t)(r - off));
            if (w < 0 && errno == EINTR)
                continue;
            if (w < 0)
                return mvm_error_sys(err, "cannot write %s", dst);
            off += w;
        }
    }
done:
    if (fchmod(out, (mode_t)mode) < 0)
        return mvm_error_sys(err, "cannot chmod %s", dst);
    return 0;
}

char *image_cache_prepare(mvm_error **err) {
    _cleanup_free_ char *cache = mvm_path_cache(err);
    if (!cache)
        return NULL;
    static const char *const subs[] = {"images", "tags", "tmp", "downloads"};
    for (size_t i = 0; i < ARRAY_SIZE(subs); i++) {
        _cleanup_free_ char *p = NULL;
        if (asprintf(&p, "%s/%s", cache, subs[i]) < 0) {
            mvm_error_set(err, ENOMEM, "out of memory");
            return NULL;
        }
        if (mvm_mkdir_p(p, 0700, err) < 0)
            return NULL;
    }
    return steal_pointer(&cache);
}

/* Serialises tag updates, publication and removal between processes. */
static int cache_lock(const char *cache, mvm_error **err) {
    _cleanup_free_ char *p = NULL;
    if (asprintf(&p, "%s/lock", cache) < 0)
        return mvm_error_set(err, ENOMEM, "out of memory");
    int fd = open(p, O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600);
    if (fd < 0)
        return mvm_error_sys(err, "cannot open %s", p);
    while (flock(fd, LOCK_EX) < 0) {
        if (errno != EINTR) {
            mvm_error_sys(err, "cannot lock %s", p);
            close(fd);
            return -1;
        }
    }
    return fd;
}

static void fsync_dir(const char *dir) {
    _cleanup_close_ int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd >= 0)
        (void)fsync(fd);
}

/* ---- images ---- */



static char *short_hex(const char *hex, char buf[16]) {
    snprintf(buf, 16, "%.12s", hex);
    return buf;
}

int image_load_digest(const char *cache, const char *digest, mvm_image **out, mvm_error **err) {
    mvm_image *img = NULL;
    if (image_load_unchecked(cache, digest, &img, err) < 0)
        return -1;
    /* the manifest's bytes are what the digest names */
    _cleanup_free_ char *mpath = NULL, *bytes = NULL;
    size_t len = 0;
    char hex[MVM_DIGEST_HEX + 1], a[16], b[16];
    if (asprintf(&mpath, "%s/" IMAGE_MANIFEST_FILE, img->dir) < 0) {
        mvm_image_free(img);
        return mvm_error_set(err, ENOMEM, "out of memory");
    }
    if (mvm_read_file(mpath, IMAGE_MANIFEST_MAX, &bytes, &len, err) < 0) {
        mvm_image_free(img);
        return -1;
    }
    image_sha256_buf(bytes, len, hex);
    if (strcmp(hex, digest)) {
        mvm_image_free(img);
        return mvm_error_set(err, MVM_EINTEGRITY,
                             "image sha256:%.12s: " IMAGE_MANIFEST_FILE
                             ": SHA-256 mismatch (expected %s…, got %s…); refusing to boot",
                             digest, short_hex(digest, a), short_hex(hex, b));
    }
    *out = img;
    return 0;
}


/* Reads <cache>/tags/<tag>; 0 and *digest on success, 1 if there is no such tag. */
static int tag_read(const char *cache, const char *tag, char **digest, mvm_error **err) {
    _cleanup_free_ char *p = NULL, *s = NULL;
    if (asprintf(&p, "%s/tags/%s", cache, tag) < 0)
        return mvm_error_set(err, ENOMEM, "out of memory");
    mvm_error *e = NULL;
    if (mvm_read_file(p, 256, &s, NULL, &e) < 0) {
        if (e->code == ENOENT) {
            mvm_error_free(e);
            return 1;
        }
        if (err && !*err)
            *err = e;
        else
            mvm_error_free(e);
        return -1;
    }
    s[strcspn(s, "\r\n")] = '\0';
    if (!image_is_hex(s, MVM_DIGEST_HEX, MVM_DIGEST_HEX))
        return mvm_error_set(err, MVM_EINTEGRITY, "tag %s: corrupt tag file %s", tag, p);
    *digest = steal_pointer(&s);
    return 0;
}

static int tag_write(const char *cache, const char *tag, const char *digest, mvm_error **err) {
    _cleanup_free_ char *p = NULL, *line = NULL;
    if (asprintf(&p, "%s/tags/%s", cache, tag) < 0 || asprintf(&line, "%s\n", digest) < 0)
        return mvm_error_set(err, ENOMEM, "out of memory");
    return mvm_write_file_atomic(p, line, strlen(line), 0644, err);
}

/* Finds the single image whose digest starts with prefix. */
static int digest_by_prefix(const char *cache, const char *prefix, char **out, mvm_error **err) {
    _cleanup_free_ char *dir = NULL, *found = NULL;
    if (asprintf(&dir, "%s/images", cache) < 0)
        return mvm_error_set(err, ENOMEM, "out of memory");
    _cleanup_closedir_ DIR *d = opendir(dir);
    if (!d)
        return errno == ENOENT ? 1 : mvm_error_sys(err, "cannot read %s", dir);
    struct dirent *de;
    size_t plen = strlen(prefix);
    while ((de = readdir(d))) {
        if (!image_is_hex(de->d_name, MVM_DIGEST_HEX, MVM_DIGEST_HEX) ||
            strncmp(de->d_name, prefix, plen))
            continue;
        if (found)
            return mvm_error_set(err, MVM_EINVAL,
                                 "image digest prefix '%s' is ambiguous (use more digits)",
                                 prefix);
        found = strdup(de->d_name);
        if (!found)
            return mvm_error_set(err, ENOMEM, "out of memory");
    }
    if (!found)
        return 1;
    *out = steal_pointer(&found);
    return 0;
}

static int not_found(const char *ref, mvm_error **err) {
    return mvm_error_set(err, MVM_ENOTFOUND,
                         "unknown image '%s' (see mvmctl images; build the default with "
                         "mvmctl build)",
                         ref);
}

/* Maps a reference to a digest; 1 when nothing matches. is_tag says whether ref named a tag. */
static int ref_to_digest(const char *cache, const char *ref, char **digest, bool *is_tag,
                         mvm_error **err) {
    *is_tag = false;
    if (!strncmp(ref, "sha256:", 7))
        return digest_by_prefix(cache, ref + 7, digest, err);
    int r = tag_read(cache, ref, digest, err);
    if (r <= 0) {
        *is_tag = r == 0;
        return r;
    }
    if (image_is_hex(ref, 12, MVM_DIGEST_HEX))
        return digest_by_prefix(cache, ref, digest, err);
    return 1;
}

int mvm_image_resolve(const char *ref, mvm_image **out, mvm_error **err) {
    if (mvm_image_ref_validate(ref, err) < 0)
        return -1;
    _cleanup_free_ char *cache = mvm_path_cache(err);
    if (!cache)
        return -1;
    _cleanup_free_ char *digest = NULL;
    bool is_tag;
    int r = ref_to_digest(cache, ref, &digest, &is_tag, err);
    if (r < 0)
        return -1;
    if (r > 0)
        return not_found(ref, err);
    if (image_load_digest(cache, digest, out, err) < 0) {
        if (is_tag && err && *err && (*err)->code == MVM_ENOTFOUND)
            return mvm_error_wrap(err, "image '%s'", ref);
        return -1;
    }
    return 0;
}

/* ---- verification ---- */

static int verify_artifact(const mvm_image *img, const char *label,
                           const struct mvm_artifact *a, struct stat *st_out,
                           mvm_error **err) {
    _cleanup_free_ char *path = NULL;
    if (asprintf(&path, "%s/%s", img->dir, a->file) < 0)
        return mvm_error_set(err, ENOMEM, "out of memory");
    _cleanup_close_ int fd = open(path, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
    if (fd < 0) {
        int e = errno;
        return mvm_error_set(err, MVM_EINTEGRITY, "image %s: %s: cannot open (%s); refusing to boot",
                             label, a->file, strerror(e));
    }
    struct stat st;
    if (fstat(fd, &st) < 0)
        return mvm_error_sys(err, "image %s: %s", label, a->file);
    if (!S_ISREG(st.st_mode))
        return mvm_error_set(err, MVM_EINTEGRITY,
                             "image %s: %s: not a regular file; refusing to boot", label, a->file);
    if ((uint64_t)st.st_size != a->size)
        return mvm_error_set(err, MVM_EINTEGRITY,
                             "image %s: %s: size mismatch (expected %llu bytes, got %llu); "
                             "refusing to boot",
                             label, a->file, (unsigned long long)a->size,
                             (unsigned long long)st.st_size);
    char hex[MVM_DIGEST_HEX + 1], x[16], y[16];
    uint64_t n = 0;
    if (image_sha256_fd(fd, hex, &n, err) < 0)
        return mvm_error_wrap(err, "image %s: %s", label, a->file);
    if (strcmp(hex, a->sha256) || n != a->size)
        return mvm_error_set(err, MVM_EINTEGRITY,
                             "image %s: %s: SHA-256 mismatch (expected %s…, got %s…); refusing "
                             "to boot",
                             label, a->file, short_hex(a->sha256, x), short_hex(hex, y));
    if (st_out)
        *st_out = st;
    return 0;
}

int mvm_image_verify(const mvm_image *img, mvm_error **err) {
    const char *label = img->manifest.name ? img->manifest.name : img->digest;
    _cleanup_free_ char *mpath = NULL, *bytes = NULL;
    size_t len = 0;
    if (asprintf(&mpath, "%s/" IMAGE_MANIFEST_FILE, img->dir) < 0)
        return mvm_error_set(err, ENOMEM, "out of memory");
    if (mvm_read_file(mpath, IMAGE_MANIFEST_MAX, &bytes, &len, err) < 0)
        return mvm_error_wrap(err, "image %s", label);
    char hex[MVM_DIGEST_HEX + 1], x[16], y[16];
    image_sha256_buf(bytes, len, hex);
    if (!img->digest || strcmp(hex, img->digest))
        return mvm_error_set(err, MVM_EINTEGRITY,
                             "image %s: " IMAGE_MANIFEST_FILE
                             ": SHA-256 mismatch (expected %s…, got %s…); refusing to boot",
                             label, short_hex(img->digest ? img->digest : "", x),
                             short_hex(hex, y));
    /* the manifest on disk is authentic; the one in memory must say the same */
    struct mvm_manifest disk;
    if (mvm_manifest_from_json(bytes, len, &disk, err) < 0)
        return mvm_error_wrap(err, "image %s", label);
    int rc = 0;
    if (disk.n_artifacts != img->manifest.n_artifacts)
        rc = -1;
    for (size_t i = 0; rc == 0 && i < disk.n_artifacts; i++) {
        const struct mvm_artifact *a = &disk.artifacts[i], *b = &img->manifest.artifacts[i];
        if (strcmp(a->file, b->file) || strcmp(a->name, b->name) ||
            strcmp(a->sha256, b->sha256) || a->size != b->size)
            rc = -1;
    }
    if (rc < 0) {
        mvm_manifest_free(&disk);
        return mvm_error_set(err, MVM_EINTEGRITY,
                             "image %s: loaded manifest differs from " IMAGE_MANIFEST_FILE
                             "; refusing to boot",
                             label);
    }
    struct stat rootfs_st;
    bool have_rootfs = false;
    for (size_t i = 0; i < disk.n_artifacts; i++) {
        struct stat st;
        if (verify_artifact(img, label, &disk.artifacts[i], &st, err) < 0) {
            mvm_manifest_free(&disk);
            return -1;
        }
        if (!strcmp(disk.artifacts[i].name, "rootfs")) {
            rootfs_st = st;
            have_rootfs = true;
        }
    }
    mvm_manifest_free(&disk);
    /* rootfs.raw, when present, must be the very same inode as the verified rootfs */
    _cleanup_free_ char *raw = NULL;
    if (asprintf(&raw, "%s/rootfs.raw", img->dir) < 0)
        return mvm_error_set(err, ENOMEM, "out of memory");
    struct stat rst;
    if (lstat(raw, &rst) == 0) {
        if (!have_rootfs || !S_ISREG(rst.st_mode) || rst.st_ino != rootfs_st.st_ino ||
            rst.st_dev != rootfs_st.st_dev)
            return mvm_error_set(err, MVM_EINTEGRITY,
                                 "image %s: rootfs.raw is not a hard link to the verified root "
                                 "filesystem; refusing to boot",
                                 label);
    }
    return 0;
}

/* ---- publication ---- */

int image_publish(const char *build_dir, const struct mvm_manifest *m, const char *tag,
                  char **digest_out, mvm_error **err) {
    if (tag && image_tag_validate(tag, err) < 0)
        return -1;
    _cleanup_free_ char *json = NULL, *mpath = NULL, *cache = NULL, *final = NULL,
                        *images = NULL;
    size_t len;
    if (mvm_manifest_to_json(m, &json, &len, err) < 0)
        return -1;
    if (asprintf(&mpath, "%s/" IMAGE_MANIFEST_FILE, build_dir) < 0)
        return mvm_error_set(err, ENOMEM, "out of memory");
    if (mvm_write_file_atomic(mpath, json, len, 0444, err) < 0)
        return -1;
    char digest[MVM_DIGEST_HEX + 1];
    image_sha256_buf(json, len, digest);
    cache = image_cache_prepare(err);
    if (!cache)
        return -1;
    if (asprintf(&images, "%s/images", cache) < 0 ||
        asprintf(&final, "%s/%s", images, digest) < 0)
        return mvm_error_set(err, ENOMEM, "out of memory");
    if (chmod(build_dir, 0755) < 0)
        return mvm_error_sys(err, "cannot chmod %s", build_dir);
    _cleanup_close_ int lock = cache_lock(cache, err);
    if (lock < 0)
        return -1;
    if (rename(build_dir, final) < 0) {
        if (errno != EEXIST && errno != ENOTEMPTY)
            return mvm_error_sys(err, "cannot move %s to %s", build_dir, final);
        /* identical image already present: keep it, drop ours */
        if (mvm_rm_rf(build_dir, err) < 0)
            return -1;
    }
    fsync_dir(images);
    if (tag && tag_write(cache, tag, digest, err) < 0)
        return -1;
    if (digest_out && !(*digest_out = strdup(digest)))
        return mvm_error_set(err, ENOMEM, "out of memory");
    return 0;
}

/* ---- listing ---- */

struct tag_entry {
    char *tag;
    char *digest;
};

static void tags_free(struct tag_entry *t, size_t n) {
    for (size_t i = 0; i < n; i++) {
        free(t[i].tag);
        free(t[i].digest);
    }
    free(t);
}

static int tag_cmp(const void *a, const void *b) {
    return strcmp(((const struct tag_entry *)a)->tag, ((const struct tag_entry *)b)->tag);
}

static int tags_load(const char *cache, struct tag_entry **out, size_t *n, mvm_error **err) {
    *out = NULL;
    *n = 0;
    _cleanup_free_ char *dir = NULL;
    if (asprintf(&dir, "%s/tags", cache) < 0)
        return mvm_error_set(err, ENOMEM, "out of memory");
    _cleanup_closedir_ DIR *d = opendir(dir);
    if (!d)
        return errno == ENOENT ? 0 : mvm_error_sys(err, "cannot read %s", dir);
    struct tag_entry *v = NULL;
    size_t cnt = 0;
    struct dirent *de;
    while ((de = readdir(d))) {
        if (image_tag_validate(de->d_name, NULL) < 0 || strstr(de->d_name, ".tmp."))
            continue;
        char *digest = NULL;
        mvm_error *e = NULL;
        if (tag_read(cache, de->d_name, &digest, &e) != 0) {
            mvm_error_free(e); /* vanished or corrupt: not listed */
            continue;
        }
        struct tag_entry *nv = realloc(v, (cnt + 1) * sizeof(*v));
        if (!nv) {
            free(digest);
            tags_free(v, cnt);
            return mvm_error_set(err, ENOMEM, "out of memory");
        }
        v = nv;
        v[cnt].tag = strdup(de->d_name);
        v[cnt].digest = digest;
        cnt++;
        if (!v[cnt - 1].tag) {
            tags_free(v, cnt);
            return mvm_error_set(err, ENOMEM, "out of memory");
        }
    }
    if (cnt)
        qsort(v, cnt, sizeof(*v), tag_cmp);
    *out = v;
    *n = cnt;
    return 0;
}

void mvm_image_info_free(struct mvm_image_info *v, size_t n) {
    if (!v)
        return;
    for (size_t i = 0; i < n; i++) {
        free(v[i].tag);
        free(v[i].digest);
        free(v[i].created);
        free(v[i].source);
    }
    free(v);
}

static int info_add(struct mvm_image_info **v, size_t *n, const char *tag, const mvm_image *img) {
    struct mvm_image_info *nv = realloc(*v, (*n + 1) * sizeof(**v));
    if (!nv)
        return -1;
    *v = nv;
    struct mvm_image_info *i = &nv[*n];
    memset(i, 0, sizeof(*i));
    (*n)++;
    uint64_t sum = 0;
    for (size_t k = 0; k < img->manifest.n_artifacts; k++)
        sum += img->manifest.artifacts[k].size;
    i->size = sum;
    i->tag = tag ? strdup(tag) : NULL;
    i->digest = strdup(img->digest);
    i->created = strdup(img->manifest.created);
    if (asprintf(&i->source, "%s:%s", img->manifest.source_kind, img->manifest.source_ref) < 0)
        i->source = NULL;
    if ((tag && !i->tag) || !i->digest || !i->created || !i->source)
        return -1;
    return 0;
}

static int str_cmp(const void *a, const void *b) {
    return strcmp(*(char *const *)a, *(char *const *)b);
}

int mvm_image_list(struct mvm_image_info **out, size_t *n_out, mvm_error **err) {
    *out = NULL;
    *n_out = 0;
    _cleanup_free_ char *cache = mvm_path_cache(err);
    if (!cache)
        return -1;
    struct tag_entry *tags = NULL;
    size_t n_tags = 0;
    if (tags_load(cache, &tags, &n_tags, err) < 0)
        return -1;
    /* digests present in the cache, sorted */
    _cleanup_free_ char *dir = NULL;
    char **digests = NULL;
    size_t n_dig = 0;
    int rc = -1;
    struct mvm_image_info *v = NULL;
    size_t n = 0;
    if (asprintf(&dir, "%s/images", cache) < 0) {
        mvm_error_set(err, ENOMEM, "out of memory");
        goto out;
    }
    DIR *d = opendir(dir);
    if (d) {
        struct dirent *de;
        while ((de = readdir(d))) {
            if (!image_is_hex(de->d_name, MVM_DIGEST_HEX, MVM_DIGEST_HEX))
                continue;
            char **nd = realloc(digests, (n_dig + 1) * sizeof(char *));
            if (!nd || !(nd[n_dig] = strdup(de->d_name))) {
                if (nd)
                    digests = nd;
                closedir(d);
                mvm_error_set(err, ENOMEM, "out of memory");
                goto out;
            }
            digests = nd;
            n_dig++;
        }
        closedir(d);
        if (n_dig)
            qsort(digests, n_dig, sizeof(char *), str_cmp);
    } else if (errno != ENOENT) {
        mvm_error_sys(err, "cannot read %s", dir);
        goto out;
    }
    /* tagged images first (by tag), then untagged ones (by digest) */
    for (size_t pass = 0; pass < 2; pass++) {
        size_t count = pass == 0 ? n_tags : n_dig;
        for (size_t k = 0; k < count; k++) {
            const char *digest = pass == 0 ? tags[k].digest : digests[k];
            if (pass == 1) {
                bool tagged = false;
                for (size_t t = 0; t < n_tags; t++)
                    if (!strcmp(tags[t].digest, digest))
                        tagged = true;
                if (tagged)
                    continue;
            }
            mvm_image *img = NULL;
            mvm_error *e = NULL;
            if (image_load_digest(cache, digest, &img, &e) < 0) {
                mvm_error_free(e); /* dangling tag or damaged image: skipped */
                continue;
            }
            int r = info_add(&v, &n, pass == 0 ? tags[k].tag : NULL, img);
            mvm_image_free(img);
            if (r < 0) {
                mvm_error_set(err, ENOMEM, "out of memory");
                goto out;
            }
        }
    }
    *out = steal_pointer(&v);
    *n_out = n;
    rc = 0;
out:
    mvm_image_info_free(v, n);
    tags_free(tags, n_tags);
    for (size_t k = 0; k < n_dig; k++)
        free(digests[k]);
    free(digests);
    return rc;
}

char *image_tmpdir(const char *cache, const char *prefix, mvm_error **err) {
    char *p = NULL;
    if (asprintf(&p, "%s/tmp/%s-XXXXXX", cache, prefix) < 0) {
        mvm_error_set(err, ENOMEM, "out of memory");
        return NULL;
    }
    if (!mkdtemp(p)) {
        mvm_error_sys(err, "cannot create %s", p);
        free(p);
        return NULL;
    }
    return p;
}

/* ---- removal ---- */

static int remove_image_dir(const char *cache, const char *digest, mvm_error **err) {
    _cleanup_free_ char *dir = NULL, *tmp = NULL;
    if (asprintf(&dir, "%s/images/%s", cache, digest) < 0)
        return mvm_error_set(err, ENOMEM, "out of memory");
    /* move it out of sight first so that a half-removed image is never visible */
    if (!(tmp = image_tmpdir(cache, "rm", err)))
        return -1;
    _cleanup_free_ char *dst = NULL;
    if (asprintf(&dst, "%s/img", tmp) < 0)
        return mvm_error_set(err, ENOMEM, "out of memory");
    if (rename(dir, dst) < 0) {
        int e = errno;
        rmdir(tmp);
        if (e == ENOENT)
            return 0;
        errno = e;
        return mvm_error_sys(err, "cannot remove %s", dir);
    }
    return mvm_rm_rf(tmp, err);
}

int mvm_image_remove(const char *ref, mvm_error **err) {
    if (mvm_image_ref_validate(ref, err) < 0)
        return -1;
    _cleanup_free_ char *cache = image_cache_prepare(err);
    if (!cache)
        return -1;
    _cleanup_close_ int lock = cache_lock(cache, err);
    if (lock < 0)
        return -1;
    _cleanup_free_ char *digest = NULL;
    bool is_tag;
    int r = ref_to_digest(cache, ref, &digest, &is_tag, err);
    if (r < 0)
        return -1;
    if (r > 0)
        return not_found(ref, err);
    struct tag_entry *tags = NULL;
    size_t n_tags = 0;
    if (tags_load(cache, &tags, &n_tags, err) < 0)
        return -1;
    bool still_used = false;
    int rc = 0;
    for (size_t i = 0; i < n_tags && rc == 0; i++) {
        if (strcmp(tags[i].digest, digest))
            continue;
        /* by tag: drop that tag only; by digest: drop every tag of the image */
        if (!is_tag || !strcmp(tags[i].tag, ref)) {
            _cleanup_free_ char *p = NULL;
            if (asprintf(&p, "%s/tags/%s", cache, tags[i].tag) < 0)
                rc = mvm_error_set(err, ENOMEM, "out of memory");
            else if (unlink(p) < 0 && errno != ENOENT)
                rc = mvm_error_sys(err, "cannot remove tag %s", tags[i].tag);
        } else {
            still_used = true;
        }
    }
    tags_free(tags, n_tags);
    if (rc < 0)
        return -1;
    if (is_tag) {
        /* the tag may have pointed at a digest that is already gone */
        _cleanup_free_ char *p = NULL;
        if (asprintf(&p, "%s/tags/%s", cache, ref) >= 0)
            (void)unlink(p);
    }
    _cleanup_free_ char *tagdir = NULL;
    if (asprintf(&tagdir, "%s/tags", cache) >= 0)
        fsync_dir(tagdir);
    if (still_used)
        return 0;
    return remove_image_dir(cache, digest, err);
}

int image_tag_set(const char *tag, const char *digest, mvm_error **err) {
    if (image_tag_validate(tag, err) < 0)
        return -1;
    _cleanup_free_ char *cache = image_cache_prepare(err);
    if (!cache)
        return -1;
    _cleanup_close_ int lock = cache_lock(cache, err);
    if (lock < 0)
        return -1;
    return tag_write(cache, tag, digest, err);
}
