/* The Debian cloud kernel: locate it through apt's signed index, download and verify the
 * package (cached by SHA-256), extract vmlinuz + the needed modules, and unpack the ELF
 * vmlinux from the LZ4 bzImage. */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "image-internal.h"
#include "mvm/paths.h"
#include "util.h"

#define KERNEL_META "linux-image-cloud-amd64"
#define DEB_INDEX "index"
#define MODULE_MAX (64 * 1024 * 1024)

void image_kernel_clear(struct image_kernel *k) {
    free(k->version);
    free(k->package);
    free(k->pkg_version);
    free(k->deb_sha256);
    free(k->tree);
    memset(k, 0, sizeof(*k));
}

/* Value of "Field: value" in the first stanza of deb822 text (malloc'd) or NULL. */
char *image_deb822_field(const char *text, const char *field) {
    size_t fl = strlen(field);
    const char *line = text;
    while (line && *line) {
        if (*line == '\n')
            return NULL; /* end of the first stanza */
        if (!strncasecmp(line, field, fl) && line[fl] == ':') {
            const char *v = line + fl + 1;
            while (*v == ' ' || *v == '\t')
                v++;
            size_t n = strcspn(v, "\n");
            while (n && (v[n - 1] == ' ' || v[n - 1] == '\r'))
                n--;
            return strndup(v, n);
        }
        line = strchr(line, '\n');
        if (line)
            line++;
    }
    return NULL;
}

/* "linux-image-6.1.0-57-cloud-amd64 (= 6.1.192-3)" -> package + version */
static int parse_depends(const char *dep, char **pkg, char **ver) {
    const char *p = dep;
    while (*p == ' ')
        p++;
    size_t n = strcspn(p, " (,|");
    if (!n || strncmp(p, "linux-image-", 12))
        return -1;
    const char *q = p + n;
    while (*q == ' ')
        q++;
    if (strncmp(q, "(=", 2))
        return -1;
    q += 2;
    while (*q == ' ')
        q++;
    size_t vn = strcspn(q, " )");
    if (!vn)
        return -1;
    *pkg = strndup(p, n);
    *ver = strndup(q, vn);
    return (*pkg && *ver) ? 0 : -1;
}

static bool safe_token(const char *s) {
    if (!s || !*s)
        return false;
    for (; *s; s++)
        if (!((*s >= 'a' && *s <= 'z') || (*s >= 'A' && *s <= 'Z') || (*s >= '0' && *s <= '9') ||
              *s == '.' || *s == '-' || *s == '+' || *s == '~' || *s == ':'))
            return false;
    return true;
}

/* The stanza of deb822 text whose Package field is pkg, or NULL. */
static const char *deb822_stanza(const char *text, const char *pkg) {
    const char *st = text;
    while (st && *st) {
        _cleanup_free_ char *name = image_deb822_field(st, "Package");
        if (name && !strcmp(name, pkg))
            return st;
        st = strstr(st, "\n\n");
        if (st)
            st += 2;
    }
    return NULL;
}

/* apt-cache show for one or two packages (what2 may be NULL). */
static int apt_cache_show(const char *what, const char *what2, char **out, mvm_error **err) {
    const char *argv[] = {"apt-cache", "show", "--no-all-versions", what, what2, NULL};
    const char *env[] = {"LC_ALL=C", NULL};
    struct mvm_cmd c = {.argv = argv, .env = env, .in_fd = -1, .out_fd = -1};
    if (mvm_cmd_run(&c, err) < 0) {
        mvm_cmd_clear(&c);
        return -1;
    }
    *out = steal_pointer(&c.out);
    mvm_cmd_clear(&c);
    return 0;
}

/* ---- downloads/index: "meta package version sha256" lines, newest last ---- */

struct idx_entry {
    char meta[128], pkg[128], ver[128], sha[MVM_DIGEST_HEX + 1];
};

static int index_load(const char *dl, struct idx_entry **out, size_t *n) {
    *out = NULL;
    *n = 0;
    _cleanup_free_ char *p = NULL, *text = NULL;
    if (asprintf(&p, "%s/" DEB_INDEX, dl) < 0)
        return -1;
    mvm_error *e = NULL;
    if (mvm_read_file(p, 1024 * 1024, &text, NULL, &e) < 0) {
        mvm_error_free(e);
        return 0;
    }
    struct idx_entry *v = NULL;
    size_t cnt = 0;
    for (char *save = NULL, *line = strtok_r(text, "\n", &save); line;
         line = strtok_r(NULL, "\n", &save)) {
        struct idx_entry x;
        if (sscanf(line, "%127s %127s %127s %64s", x.meta, x.pkg, x.ver, x.sha) != 4 ||
            !image_is_hex(x.sha, 64, 64) || !safe_token(x.pkg) || !safe_token(x.ver))
            continue;
        struct idx_entry *nv = realloc(v, (cnt + 1) * sizeof(*v));
        if (!nv)
            break;
        v = nv;
        v[cnt++] = x;
    }
    *out = v;
    *n = cnt;
    return 0;
}

static int index_add(const char *dl, const char *meta, const char *pkg, const char *ver,
                     const char *sha, mvm_error **err) {
    struct idx_entry *v;
    size_t n;
    index_load(dl, &v, &n);
    size_t cap = 4096 + n * 512;
    _cleanup_free_ char *buf = malloc(cap);
    if (!buf) {
        free(v);
        return mvm_error_set(err, ENOMEM, "out of memory");
    }
    size_t len = 0;
    for (size_t i = 0; i < n; i++) {
        if (!strcmp(v[i].pkg, pkg) && !strcmp(v[i].ver, ver))
            continue; /* re-added at the end */
        len += (size_t)snprintf(buf + len, cap - len, "%s %s %s %s\n", v[i].meta, v[i].pkg,
                                v[i].ver, v[i].sha);
    }
    free(v);
    len += (size_t)snprintf(buf + len, cap - len, "%s %s %s %s\n", meta, pkg, ver, sha);
    _cleanup_free_ char *p = NULL;
    if (asprintf(&p, "%s/" DEB_INDEX, dl) < 0)
        return mvm_error_set(err, ENOMEM, "out of memory");
    return mvm_write_file_atomic(p, buf, len, 0644, err);
}

/* 0 if <dl>/<sha>.deb exists with that hash, 1 if absent, -1 on a hash mismatch/error. */
static int cached_deb_ok(const char *dl, const char *sha, char **path, mvm_error **err) {
    _cleanup_free_ char *p = NULL;
    if (asprintf(&p, "%s/%s.deb", dl, sha) < 0)
        return mvm_error_set(err, ENOMEM, "out of memory");
    if (access(p, F_OK) < 0)
        return 1;
    char hex[MVM_DIGEST_HEX + 1];
    if (image_sha256_file(p, hex, NULL, err) < 0)
        return -1;
    if (strcmp(hex, sha)) {
        /* a damaged download: drop it so that it is fetched again */
        unlink(p);
        return 1;
    }
    *path = steal_pointer(&p);
    return 0;
}

static int find_deb_in(const char *dir, char **out, mvm_error **err) {
    _cleanup_closedir_ DIR *d = opendir(dir);
    if (!d)
        return mvm_error_sys(err, "cannot read %s", dir);
    struct dirent *de;
    while ((de = readdir(d))) {
        size_t n = strlen(de->d_name);
        if (n > 4 && !strcmp(de->d_name + n - 4, ".deb")) {
            if (asprintf(out, "%s/%s", dir, de->d_name) < 0)
                return mvm_error_set(err, ENOMEM, "out of memory");
            return 0;
        }
    }
    return mvm_error_set(err, ENOENT, "apt-get download produced no .deb in %s", dir);
}

static int apt_download(const char *work, const char *pkg, const char *ver, char **deb,
                        mvm_error **err) {
    _cleanup_free_ char *dir = NULL, *spec = NULL;
    if (asprintf(&dir, "%s/apt", work) < 0 || asprintf(&spec, "%s=%s", pkg, ver) < 0)
        return mvm_error_set(err, ENOMEM, "out of memory");
    if (mvm_mkdir_p(dir, 0755, err) < 0)
        return -1;
    const char *argv_root[] = {"apt-get", "-q", "-o", "APT::Sandbox::User=root",
                               "download", spec, NULL};
    const char *argv_user[] = {"apt-get", "-q", "download", spec, NULL};
    const char *env[] = {"LC_ALL=C", NULL};
    struct mvm_cmd c = {.argv = geteuid() == 0 ? argv_root : argv_user,
                          .env = env, .cwd = dir, .in_fd = -1, .out_fd = -1};
    int r = mvm_cmd_run(&c, err);
    mvm_cmd_clear(&c);
    if (r < 0)
        return -1;
    return find_deb_in(dir, deb, err);
}

static int fetch_deb(const char *cache, const char *work, const struct image_progress *pr,
                     struct image_kernel *k, char **deb_out, mvm_error **err) {
    _cleanup_free_ char *dl = NULL;
    if (asprintf(&dl, "%s/downloads", cache) < 0)
        return mvm_error_set(err, ENOMEM, "out of memory");
    if (mvm_mkdir_p(dl, 0700, err) < 0)
        return -1;

    /* 1. which kernel does apt's (signed) index name?  When an earlier build left a hint,
     *    ask for the meta package and the hinted version in one (slow) apt-cache call. */
    mvm_error *apt_err = NULL;
    _cleanup_free_ char *meta = NULL, *dep = NULL, *pkg = NULL, *ver = NULL, *info = NULL,
                        *sha = NULL, *size = NULL, *hint = NULL;
    {
        struct idx_entry *v = NULL;
        size_t n = 0;
        index_load(dl, &v, &n);
        for (size_t i = n; i-- > 0 && !hint;)
            if (!strcmp(v[i].meta, KERNEL_META) && asprintf(&hint, "%s=%s", v[i].pkg, v[i].ver) < 0)
                hint = NULL;
        free(v);
    }
    mvm_error *hint_err = NULL;
    if (!hint || apt_cache_show(KERNEL_META, hint, &meta, &hint_err) < 0) {
        mvm_error_free(hint_err);
        (void)apt_cache_show(KERNEL_META, NULL, &meta, &apt_err);
    }
    if (!apt_err) {
        const char *st = deb822_stanza(meta, KERNEL_META);
        dep = st ? image_deb822_field(st, "Depends") : NULL;
        if (!dep || parse_depends(dep, &pkg, &ver) < 0 || !safe_token(pkg) || !safe_token(ver))
            mvm_error_set(&apt_err, EPROTO, "cannot parse Depends of %s: '%s'", KERNEL_META,
                          dep ? dep : "");
    }
    if (!apt_err) {
        _cleanup_free_ char *spec = NULL;
        if (asprintf(&spec, "%s=%s", pkg, ver) < 0)
            return mvm_error_set(err, ENOMEM, "out of memory");
        const char *st = NULL;
        if (hint && !strcmp(hint, spec))
            st = deb822_stanza(meta, pkg);
        if (!st && apt_cache_show(spec, NULL, &info, &apt_err) == 0)
            st = deb822_stanza(info, pkg);
        if (!apt_err) {
            _cleanup_free_ char *sver = st ? image_deb822_field(st, "Version") : NULL;
            sha = st ? image_deb822_field(st, "SHA256") : NULL;
            size = st ? image_deb822_field(st, "Size") : NULL;
            if (!sver || strcmp(sver, ver) || !sha || !image_is_hex(sha, 64, 64))
                mvm_error_set(&apt_err, EPROTO, "apt-cache show %s: no SHA256 for that version",
                              spec);
        }
    }

    if (!apt_err) {
        /* 2. already downloaded? */
        _cleanup_free_ char *cached = NULL;
        int r = cached_deb_ok(dl, sha, &cached, err);
        if (r < 0)
            return -1;
        if (r == 0) {
            PROGRESS(pr, "kernel: %s %s from the download cache (sha256 %.12s…)", pkg, ver, sha);
        } else {
            /* 3. download and check against the index */
            double mb = size ? strtod(size, NULL) / 1e6 : 0;
            PROGRESS(pr, "kernel: apt-get download %s (%.1f MB)", pkg, mb);
            _cleanup_free_ char *deb = NULL;
            mvm_error *dl_err = NULL;
            if (apt_download(work, pkg, ver, &deb, &dl_err) < 0) {
                apt_err = dl_err;
            } else {
                char hex[MVM_DIGEST_HEX + 1];
                if (image_sha256_file(deb, hex, NULL, err) < 0) {
                    mvm_error_free(apt_err);
                    return -1;
                }
                if (strcmp(hex, sha)) {
                    return mvm_error_set(err, MVM_EINTEGRITY,
                                         "kernel: %s: SHA-256 mismatch with apt's index "
                                         "(expected %.12s…, got %.12s…)",
                                         deb, sha, hex);
                }
                PROGRESS(pr, "kernel: verified sha256 %.12s… against apt's signed index", sha);
                if (asprintf(&cached, "%s/%s.deb", dl, sha) < 0)
                    return mvm_error_set(err, ENOMEM, "out of memory");
                if (rename(deb, cached) < 0 && image_copy_file(deb, cached, 0644, err) < 0)
                    return -1;
            }
        }
        if (!apt_err) {
            if (index_add(dl, KERNEL_META, pkg, ver, sha, err) < 0)
                return -1;
            k->package = steal_pointer(&pkg);
            k->pkg_version = steal_pointer(&ver);
            k->deb_sha256 = steal_pointer(&sha);
            *deb_out = steal_pointer(&cached);
            return 0;
        }
    }

    /* 4. offline: the newest cached download (same package preferred) */
    struct idx_entry *v = NULL;
    size_t n = 0;
    index_load(dl, &v, &n);
    for (int pass = 0; pass < 2; pass++) {
        for (size_t i = n; i-- > 0;) {
            if (pass == 0 && (!pkg || strcmp(v[i].pkg, pkg)))
                continue;
            _cleanup_free_ char *cached = NULL;
            mvm_error *e = NULL;
            if (cached_deb_ok(dl, v[i].sha, &cached, &e) != 0) {
                mvm_error_free(e);
                continue;
            }
            PROGRESS(pr, "kernel: apt unavailable (%s); using cached %s %s offline",
                     apt_err->msg, v[i].pkg, v[i].ver);
            k->package = strdup(v[i].pkg);
            k->pkg_version = strdup(v[i].ver);
            k->deb_sha256 = strdup(v[i].sha);
            *deb_out = steal_pointer(&cached);
            free(v);
            mvm_error_free(apt_err);
            if (!k->package || !k->pkg_version || !k->deb_sha256)
                return mvm_error_set(err, ENOMEM, "out of memory");
            return 0;
        }
    }
    free(v);
    if (err && !*err) {
        *err = apt_err;
        return mvm_error_wrap(err, "kernel: cannot obtain %s and nothing is cached",
                              KERNEL_META);
    }
    mvm_error_free(apt_err);
    return -1;
}

static int find_version(const char *tree, char **version, mvm_error **err) {
    _cleanup_free_ char *boot = NULL;
    if (asprintf(&boot, "%s/boot", tree) < 0)
        return mvm_error_set(err, ENOMEM, "out of memory");
    _cleanup_closedir_ DIR *d = opendir(boot);
    if (!d)
        return mvm_error_sys(err, "kernel package has no /boot");
    struct dirent *de;
    while ((de = readdir(d))) {
        if (!strncmp(de->d_name, "vmlinuz-", 8) && de->d_name[8]) {
            if (!safe_token(de->d_name + 8))
                break;
            *version = strdup(de->d_name + 8);
            return *version ? 0 : mvm_error_set(err, ENOMEM, "out of memory");
        }
    }
    return mvm_error_set(err, ENOENT, "kernel package has no /boot/vmlinuz-*");
}

int image_kernel_fetch(const char *cache, const char *work, const struct image_progress *pr,
                       struct image_kernel *k, mvm_error **err) {
    memset(k, 0, sizeof(*k));
    _cleanup_free_ char *deb = NULL;
    if (fetch_deb(cache, work, pr, k, &deb, err) < 0)
        goto fail;
    if (asprintf(&k->tree, "%s/kernel", work) < 0) {
        k->tree = NULL;
        mvm_error_set(err, ENOMEM, "out of memory");
        goto fail;
    }
    if (mvm_mkdir_p(k->tree, 0755, err) < 0)
        goto fail;
    const char *a_argv[] = {"dpkg-deb", "--fsys-tarfile", deb, NULL};
    const char *b_argv[] = {"tar", "-x", "--no-same-owner", "-C", k->tree, "--wildcards",
                            "./boot/vmlinuz-*", "./boot/config-*",
                            "./lib/modules/*/kernel/drivers/virtio/*",
                            "./lib/modules/*/kernel/drivers/block/virtio_blk.ko*",
                            "./lib/modules/*/kernel/drivers/char/virtio_console.ko*",
                            "./lib/modules/*/kernel/net/vmw_vsock/*",
                            "./lib/modules/*/kernel/drivers/net/virtio_net.ko*",
                            "./lib/modules/*/kernel/drivers/net/net_failover.ko*",
                            "./lib/modules/*/kernel/net/core/failover.ko*",
                            "./lib/modules/*/kernel/drivers/md/dm-*",
                            "./lib/modules/*/kernel/lib/reed_solomon/*", NULL};
    const char *env[] = {"LC_ALL=C", NULL};
    struct mvm_cmd a = {.argv = a_argv, .env = env, .in_fd = -1, .out_fd = -1};
    struct mvm_cmd b = {.argv = b_argv, .env = env, .in_fd = -1, .out_fd = -1};
    int r = mvm_cmd_run_pipe(&a, &b, err);
    mvm_cmd_clear(&a);
    mvm_cmd_clear(&b);
    if (r < 0) {
        mvm_error_wrap(err, "kernel: extracting %s", deb);
        goto fail;
    }
    if (find_version(k->tree, &k->version, err) < 0)
        goto fail;
    return 0;
fail:
    image_kernel_clear(k);
    return -1;
}

/* ---- vmlinux from the bzImage ---- */

static const unsigned char lz4_legacy_magic[4] = {0x02, 0x21, 0x4c, 0x18};

static int read_all_fd(int fd, unsigned char **buf, size_t *len, mvm_error **err) {
    struct stat st;
    if (fstat(fd, &st) < 0)
        return mvm_error_sys(err, "stat");
    if (st.st_size <= 0 || st.st_size > 256 * 1024 * 1024)
        return mvm_error_set(err, EINVAL, "unexpected bzImage size %lld", (long long)st.st_size);
    unsigned char *b = malloc((size_t)st.st_size);
    if (!b)
        return mvm_error_set(err, ENOMEM, "out of memory");
    size_t got = 0;
    while (got < (size_t)st.st_size) {
        ssize_t r = pread(fd, b + got, (size_t)st.st_size - got, (off_t)got);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0) {
            free(b);
            return mvm_error_sys(err, "read");
        }
        got += (size_t)r;
    }
    *buf = b;
    *len = got;
    return 0;
}

static uint32_t le32(const unsigned char *p) {
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

int image_kernel_extract_vmlinux(const char *bzimage, const char *out_path, mvm_error **err) {
    _cleanup_close_ int in = open(bzimage, O_RDONLY | O_CLOEXEC);
    if (in < 0)
        return mvm_error_sys(err, "cannot open %s", bzimage);
    _cleanup_free_ unsigned char *buf = NULL;
    size_t len = 0;
    if (read_all_fd(in, &buf, &len, err) < 0)
        return mvm_error_wrap(err, "%s", bzimage);
    /* the boot protocol header says where the compressed payload is */
    size_t off = 0;
    bool found = false;
    if (len > 0x250 && !memcmp(buf + 0x202, "HdrS", 4)) {
        size_t setup_sects = buf[0x1f1] ? buf[0x1f1] : 4;
        size_t po = (setup_sects + 1) * 512 + le32(buf + 0x248);
        if (po + 4 <= len && !memcmp(buf + po, lz4_legacy_magic, 4)) {
            off = po;
            found = true;
        }
    }
    for (size_t i = 0; !found && i + 4 <= len; i++) {
        if (!memcmp(buf + i, lz4_legacy_magic, 4)) {
            off = i;
            found = true;
        }
    }
    if (!found)
        return mvm_error_set(err, EINVAL,
                             "%s: no LZ4 payload (magic 02 21 4c 18) found; not an LZ4 bzImage",
                             bzimage);
    if (lseek(in, (off_t)off, SEEK_SET) < 0)
        return mvm_error_sys(err, "seek %s", bzimage);
    _cleanup_close_ int out =
        open(out_path, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW, 0644);
    if (out < 0)
        return mvm_error_sys(err, "cannot create %s", out_path);
    const char *argv[] = {"lz4", "-dc", NULL};
    /* the payload is followed by other data, so lz4 ends with an error status: judge the
     * output instead */
    struct mvm_cmd c = {.argv = argv, .in_fd = in, .out_fd = out, .allow_fail = true};
    if (mvm_cmd_run(&c, err) < 0) {
        mvm_cmd_clear(&c);
        if (err && *err && (*err)->code == MVM_EUNAVAIL)
            return mvm_error_wrap(err, "lz4 (install the lz4 package)");
        return -1;
    }
    struct stat st;
    unsigned char ehdr[20] = {0};
    if (fstat(out, &st) < 0 || pread(out, ehdr, sizeof(ehdr), 0) != (ssize_t)sizeof(ehdr) ||
        memcmp(ehdr, "\x7f" "ELF", 4) || ehdr[4] != 2 /* ELFCLASS64 */ ||
        (ehdr[18] | ehdr[19] << 8) != 62 /* EM_X86_64 */ || st.st_size < 10 * 1024 * 1024) {
        int status = c.status;
        _cleanup_free_ char *tail = steal_pointer(&c.err_tail);
        mvm_cmd_clear(&c);
        return mvm_error_set(err, EINVAL,
                             "%s: decompressing the LZ4 payload did not give an x86-64 ELF "
                             "vmlinux (lz4 status %d%s%s)",
                             bzimage, status, tail ? ": " : "", tail ? tail : "");
    }
    mvm_cmd_clear(&c);
    if (fsync(out) < 0)
        return mvm_error_sys(err, "cannot write %s", out_path);
    return 0;
}

/* ---- modules ---- */

struct ko {
    char *path;
    char *name;
    char *depends;
};

static int collect_ko(const char *dir, struct ko **v, size_t *n, mvm_error **err) {
    /* sorted traversal keeps the result independent of directory order */
    struct dirent **names = NULL;
    int cnt = scandir(dir, &names, NULL, alphasort);
    if (cnt < 0)
        return mvm_error_sys(err, "cannot read %s", dir);
    int rc = 0;
    for (int i = 0; i < cnt; i++) {
        const char *nm = names[i]->d_name;
        _cleanup_free_ char *p = NULL;
        if (rc < 0 || !strcmp(nm, ".") || !strcmp(nm, ".."))
            continue;
        if (asprintf(&p, "%s/%s", dir, nm) < 0) {
            rc = mvm_error_set(err, ENOMEM, "out of memory");
            continue;
        }
        struct stat st;
        if (lstat(p, &st) < 0) {
            rc = mvm_error_sys(err, "cannot stat %s", p);
            continue;
        }
        if (S_ISDIR(st.st_mode)) {
            rc = collect_ko(p, v, n, err);
            continue;
        }
        size_t l = strlen(nm);
        if (!S_ISREG(st.st_mode) || l < 4 || strcmp(nm + l - 3, ".ko"))
            continue;
        _cleanup_free_ char *bytes = NULL;
        size_t len = 0;
        if (mvm_read_file(p, MODULE_MAX, &bytes, &len, err) < 0) {
            rc = -1;
            continue;
        }
        struct ko k = {.path = steal_pointer(&p)};
        k.name = image_modinfo_get(bytes, len, "name");
        if (!k.name)
            k.name = strndup(nm, l - 3);
        k.depends = image_modinfo_get(bytes, len, "depends");
        if (!k.depends)
            k.depends = strdup("");
        struct ko *nv = realloc(*v, (*n + 1) * sizeof(**v));
        if (!nv || !k.name || !k.depends) {
            free(k.path);
            free(k.name);
            free(k.depends);
            if (nv)
                *v = nv;
            rc = mvm_error_set(err, ENOMEM, "out of memory");
            continue;
        }
        *v = nv;
        (*v)[(*n)++] = k;
    }
    for (int i = 0; i < cnt; i++)
        free(names[i]);
    free(names);
    return rc;
}

int image_kernel_modules(const struct image_kernel *k, const char *const *wanted,
                         size_t n_wanted, char ***paths, mvm_error **err) {
    _cleanup_free_ char *root = NULL;
    if (asprintf(&root, "%s/lib/modules/%s/kernel", k->tree, k->version) < 0)
        return mvm_error_set(err, ENOMEM, "out of memory");
    struct ko *kos = NULL;
    size_t n = 0;
    int rc = collect_ko(root, &kos, &n, err);
    struct image_module *mods = NULL;
    size_t *order = NULL, n_order = 0;
    char **res = NULL;
    if (rc < 0)
        goto out;
    mods = calloc(n ? n : 1, sizeof(*mods));
    if (!mods) {
        rc = mvm_error_set(err, ENOMEM, "out of memory");
        goto out;
    }
    for (size_t i = 0; i < n; i++)
        mods[i] = (struct image_module){.name = kos[i].name, .depends = kos[i].depends};
    if ((rc = image_modules_order(mods, n, wanted, n_wanted, &order, &n_order, err)) < 0) {
        mvm_error_wrap(err, "kernel %s", k->version);
        goto out;
    }
    res = calloc(n_order + 1, sizeof(char *));
    if (!res) {
        rc = mvm_error_set(err, ENOMEM, "out of memory");
        goto out;
    }
    for (size_t i = 0; i < n_order; i++) {
        res[i] = strdup(kos[order[i]].path);
        if (!res[i]) {
            rc = mvm_error_set(err, ENOMEM, "out of memory");
            goto out;
        }
    }
    *paths = steal_pointer(&res);
out:
    image_strv_free(res);
    free(order);
    free(mods);
    for (size_t i = 0; i < n; i++) {
        free(kos[i].path);
        free(kos[i].name);
        free(kos[i].depends);
    }
    free(kos);
    return rc < 0 ? -1 : 0;
}
