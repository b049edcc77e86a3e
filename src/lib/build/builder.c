/* The builder image: the default image's kernel and initramfs plus a root filesystem holding
 * Debian's nix-bin and the closure of its dependencies (downloaded with apt, checked against
 * apt's signed index and unpacked with dpkg-deb, never installed on the host), busybox,
 * mvm-agent and the in-guest build driver mvm-build-job. Tagged MVM_BUILDER_TAG. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "image/image-internal.h"
#include "mvm/build.h"
#include "mvm/paths.h"
#include "util.h"

#define NIX_PACKAGE "nix-bin"
#define CA_PACKAGE "ca-certificates"
#define STORE_DISK_SIZE (16ull << 30)
#define MIB (1024ull * 1024ull)

static const char nix_conf[] = "# mvm builder: root builds without nixbld users, offline by default\n"
                               "sandbox = false\n"
                               "build-users-group =\n"
                               "experimental-features = nix-command flakes\n"
                               "substituters =\n"
                               "max-jobs = auto\n";

struct deb {
    char *name, *version, *sha256;
    uint64_t size;
    char *path; /* verified file in <cache>/downloads */
};

static void debs_free(struct deb *d, size_t n) {
    for (size_t i = 0; d && i < n; i++) {
        free(d[i].name);
        free(d[i].version);
        free(d[i].sha256);
        free(d[i].path);
    }
    free(d);
}


static bool pkg_token_ok(const char *s) {
    if (!s || !*s || *s == '-')
        return false;
    for (; *s; s++)
        if (!((*s >= 'a' && *s <= 'z') || (*s >= 'A' && *s <= 'Z') || (*s >= '0' && *s <= '9') ||
              *s == '.' || *s == '-' || *s == '+' || *s == '~' || *s == ':'))
            return false;
    return true;
}


static int run_capture(const char *const *argv, char **out, mvm_error **err) {
    const char *env[] = {"LC_ALL=C", NULL};
    struct mvm_cmd c = {.argv = argv, .env = env, .in_fd = -1, .out_fd = -1};
    int r = mvm_cmd_run(&c, err);
    if (r == 0 && out)
        *out = steal_pointer(&c.out);
    mvm_cmd_clear(&c);
    return r;
}

static int str_cmp(const void *a, const void *b) {
    return strcmp(*(char *const *)a, *(char *const *)b);
}

static int deb_cmp(const void *a, const void *b) {
    return strcmp(((const struct deb *)a)->name, ((const struct deb *)b)->name);
}

/* The concrete packages of nix-bin's Depends/Pre-Depends closure. Virtual names ("<perlapi-…>")
 * are skipped: apt lists the providers it would pick as entries of their own. */
static int resolve_names(char ***names_out, size_t *n_out, mvm_error **err) {
    const char *argv[] = {"apt-cache", "depends", "--recurse", "--no-recommends",
                          "--no-suggests", "--no-conflicts", "--no-breaks", "--no-replaces",
                          "--no-enhances", NIX_PACKAGE, NULL};
    _cleanup_free_ char *out = NULL;
    if (run_capture(argv, &out, err) < 0)
        return mvm_error_wrap(err, "apt-cache depends %s (is apt's package index present? "
                                   "apt-get update)", NIX_PACKAGE);
    char **v = NULL;
    size_t n = 0;
    for (char *save = NULL, *line = strtok_r(out, "\n", &save); line;
         line = strtok_r(NULL, "\n", &save)) {
        if (*line == ' ' || *line == '<' || !*line)
            continue;
        if (!pkg_token_ok(line)) {
            image_strv_free(v);
            return mvm_error_set(err, EPROTO, "apt-cache depends: unexpected line '%s'", line);
        }
        bool dup = false;
        for (size_t i = 0; i < n && !dup; i++)
            dup = !strcmp(v[i], line);
        if (dup)
            continue;
        char **nv = realloc(v, (n + 2) * sizeof(*v));
        if (!nv || !(nv[n] = strdup(line))) {
            image_strv_free(nv ? nv : v);
            return mvm_error_set(err, ENOMEM, "out of memory");
        }
        v = nv;
        v[++n] = NULL;
    }
    if (n == 0)
        return mvm_error_set(err, MVM_ENOTFOUND, "apt knows no package %s (apt-get update?)",
                             NIX_PACKAGE);
    /* the CA certificates for `build --online` (HTTPS fetches). Only the certificate files
     * are needed: the bundle is made below; its dependencies serve its install script. */
    bool have_ca = false;
    for (size_t i = 0; i < n && !have_ca; i++)
        have_ca = !strcmp(v[i], CA_PACKAGE);
    if (!have_ca) {
        char **nv = realloc(v, (n + 2) * sizeof(*v));
        if (!nv || !(nv[n] = strdup(CA_PACKAGE))) {
            image_strv_free(nv ? nv : v);
            return mvm_error_set(err, ENOMEM, "out of memory");
        }
        v = nv;
        v[++n] = NULL;
    }
    qsort(v, n, sizeof(*v), str_cmp);
    *names_out = v;
    *n_out = n;
    return 0;
}

/* Candidate version, size and SHA-256 of every package, from apt's (signed) index. */
static int resolve_packages(struct deb **out, size_t *n_out, mvm_error **err) {
    _cleanup_strv_ char **names = NULL;
    size_t n = 0;
    if (resolve_names(&names, &n, err) < 0)
        return -1;
    _cleanup_free_ const char **argv = calloc(n + 4, sizeof(*argv));
    struct deb *d = calloc(n, sizeof(*d));
    _cleanup_free_ char *text = NULL;
    if (!argv || !d) {
        free(d);
        return mvm_error_set(err, ENOMEM, "out of memory");
    }
    argv[0] = "apt-cache";
    argv[1] = "show";
    argv[2] = "--no-all-versions";
    for (size_t i = 0; i < n; i++)
        argv[3 + i] = names[i];
    if (run_capture(argv, &text, err) < 0) {
        free(d);
        return mvm_error_wrap(err, "apt-cache show");
    }
    for (const char *st = text; st && *st;) {
        _cleanup_free_ char *pkg = image_deb822_field(st, "Package");
        for (size_t i = 0; pkg && i < n; i++) {
            if (strcmp(pkg, names[i]) || d[i].name)
                continue;
            d[i].name = strdup(pkg);
            d[i].version = image_deb822_field(st, "Version");
            d[i].sha256 = image_deb822_field(st, "SHA256");
            _cleanup_free_ char *size = image_deb822_field(st, "Size");
            d[i].size = size ? strtoull(size, NULL, 10) : 0;
        }
        st = strstr(st, "\n\n");
        if (st)
            st += 2;
    }
    for (size_t i = 0; i < n; i++) {
        if (!d[i].name || !pkg_token_ok(d[i].version) || !d[i].sha256 ||
            !image_is_hex(d[i].sha256, MVM_DIGEST_HEX, MVM_DIGEST_HEX)) {
            mvm_error_set(err, EPROTO,
                          "apt-cache show %s: no version with a SHA256 in apt's index",
                          names[i]);
            debs_free(d, n);
            return -1;
        }
    }
    qsort(d, n, sizeof(*d), deb_cmp);
    *out = d;
    *n_out = n;
    return 0;
}

/* Every package into <cache>/downloads/<sha256>.deb: cached files are re-hashed; missing ones
 * are fetched with one apt-get download and kept only when their SHA-256 matches apt's index. */
static int download(const char *cache, const char *work, struct deb *d, size_t n,
                    const struct image_progress *pr, uint64_t *bytes, mvm_error **err) {
    _cleanup_free_ char *dl = mvm_path_join(cache, "downloads"), *adir = mvm_path_join(work, "apt");
    if (!dl || !adir)
        return mvm_error_set(err, ENOMEM, "out of memory");
    if (mvm_mkdir_p(dl, 0700, err) < 0 || mvm_mkdir_p(adir, 0755, err) < 0)
        return -1;
    size_t missing = 0, cached = 0;
    uint64_t want = 0;
    *bytes = 0;
    for (size_t i = 0; i < n; i++) {
        _cleanup_free_ char *p = NULL;
        if (asprintf(&p, "%s/%s.deb", dl, d[i].sha256) < 0)
            return mvm_error_set(err, ENOMEM, "out of memory");
        *bytes += d[i].size;
        if (access(p, F_OK) == 0) {
            char hex[MVM_DIGEST_HEX + 1];
            if (image_sha256_file(p, hex, NULL, err) < 0)
                return -1;
            if (!strcmp(hex, d[i].sha256)) {
                d[i].path = steal_pointer(&p);
                cached++;
                continue;
            }
            unlink(p); /* damaged: fetch again */
        }
        missing++;
        want += d[i].size;
    }
    if (cached)
        PROGRESS(pr, "builder: %zu/%zu packages from the download cache", cached, n);
    if (missing == 0)
        return 0;
    PROGRESS(pr, "builder: downloading %zu packages (%.1f MB) with apt-get", missing,
             want / 1e6);
    _cleanup_free_ const char **argv = calloc(missing + 8, sizeof(*argv));
    _cleanup_strv_ char **specs = calloc(missing + 1, sizeof(char *));
    if (!argv || !specs)
        return mvm_error_set(err, ENOMEM, "out of memory");
    size_t a = 0, k = 0;
    argv[a++] = "apt-get";
    argv[a++] = "-q";
    if (geteuid() == 0) {
        argv[a++] = "-o";
        argv[a++] = "APT::Sandbox::User=root";
    }
    argv[a++] = "download";
    for (size_t i = 0; i < n; i++) {
        if (d[i].path)
            continue;
        if (asprintf(&specs[k], "%s=%s", d[i].name, d[i].version) < 0)
            return mvm_error_set(err, ENOMEM, "out of memory");
        argv[a++] = specs[k++];
    }
    const char *env[] = {"LC_ALL=C", NULL};
    struct mvm_cmd c = {.argv = argv, .env = env, .cwd = adir, .in_fd = -1, .out_fd = -1};
    int r = mvm_cmd_run(&c, err);
    mvm_cmd_clear(&c);
    if (r < 0)
        return mvm_error_wrap(err, "builder: apt-get download");
    /* match what arrived by content, so apt's file naming does not matter */
    _cleanup_closedir_ DIR *dir = opendir(adir);
    if (!dir)
        return mvm_error_sys(err, "cannot read %s", adir);
    struct dirent *de;
    while ((de = readdir(dir))) {
        size_t len = strlen(de->d_name);
        if (len < 5 || strcmp(de->d_name + len - 4, ".deb"))
            continue;
        _cleanup_free_ char *src = mvm_path_join(adir, de->d_name);
        if (!src)
            return mvm_error_set(err, ENOMEM, "out of memory");
        char hex[MVM_DIGEST_HEX + 1];
        if (image_sha256_file(src, hex, NULL, err) < 0)
            return -1;
        for (size_t i = 0; i < n; i++) {
            if (d[i].path || strcmp(d[i].sha256, hex))
                continue;
            if (asprintf(&d[i].path, "%s/%s.deb", dl, hex) < 0) {
                d[i].path = NULL;
                return mvm_error_set(err, ENOMEM, "out of memory");
            }
            if (rename(src, d[i].path) < 0)
                return mvm_error_sys(err, "cannot move %s to %s", src, d[i].path);
            break;
        }
    }
    for (size_t i = 0; i < n; i++)
        if (!d[i].path)
            return mvm_error_set(err, MVM_EINTEGRITY,
                                 "builder: %s %s: downloaded file does not match the SHA-256 "
                                 "in apt's index (%.12s…)",
                                 d[i].name, d[i].version, d[i].sha256);
    PROGRESS(pr, "builder: verified %zu packages against apt's signed index", missing);
    return 0;
}

/* Moves the entries of src into dst; on a clash the entry already in dst wins (merged-/usr:
 * the /usr copy is the canonical one). Directories present on both sides are merged. */
static int merge_tree(const char *src, const char *dst, mvm_error **err) {
    _cleanup_closedir_ DIR *d = opendir(src);
    if (!d)
        return mvm_error_sys(err, "cannot read %s", src);
    struct dirent *de;
    while ((de = readdir(d))) {
        if (!strcmp(de->d_name, ".") || !strcmp(de->d_name, ".."))
            continue;
        _cleanup_free_ char *s = mvm_path_join(src, de->d_name), *t = mvm_path_join(dst, de->d_name);
        if (!s || !t)
            return mvm_error_set(err, ENOMEM, "out of memory");
        struct stat ss, ts;
        if (lstat(s, &ss) < 0)
            return mvm_error_sys(err, "cannot stat %s", s);
        if (lstat(t, &ts) < 0) {
            if (errno != ENOENT)
                return mvm_error_sys(err, "cannot stat %s", t);
            if (rename(s, t) < 0)
                return mvm_error_sys(err, "cannot move %s to %s", s, t);
            continue;
        }
        if (S_ISDIR(ss.st_mode) && S_ISDIR(ts.st_mode)) {
            if (merge_tree(s, t, err) < 0)
                return -1;
            if (rmdir(s) < 0)
                return mvm_error_sys(err, "cannot remove %s", s);
            continue;
        }
        if (mvm_rm_rf(s, err) < 0)
            return -1;
    }
    return 0;
}

/* /bin, /sbin, /lib, /lib64 become links into /usr like on a merged-/usr Debian system. */
static int merge_usr(const char *root, mvm_error **err) {
    static const char *const dirs[] = {"bin", "sbin", "lib", "lib64"};
    for (size_t i = 0; i < ARRAY_SIZE(dirs); i++) {
        _cleanup_free_ char *top = mvm_path_join(root, dirs[i]), *usr = NULL, *target = NULL;
        if (!top || asprintf(&usr, "%s/usr/%s", root, dirs[i]) < 0 ||
            asprintf(&target, "usr/%s", dirs[i]) < 0)
            return mvm_error_set(err, ENOMEM, "out of memory");
        if (mvm_mkdir_p(usr, 0755, err) < 0)
            return -1;
        struct stat st;
        if (lstat(top, &st) == 0) {
            if (S_ISLNK(st.st_mode))
                continue;
            if (!S_ISDIR(st.st_mode))
                return mvm_error_set(err, EEXIST, "builder: /%s is not a directory", dirs[i]);
            if (merge_tree(top, usr, err) < 0)
                return -1;
            if (rmdir(top) < 0)
                return mvm_error_sys(err, "cannot remove %s", top);
        }
        if (symlink(target, top) < 0)
            return mvm_error_sys(err, "cannot create %s", top);
    }
    return 0;
}

static int unpack(const char *staging, const struct deb *d, size_t n, mvm_error **err) {
    for (size_t i = 0; i < n; i++) {
        const char *argv[] = {"dpkg-deb", "-x", d[i].path, staging, NULL};
        if (run_capture(argv, NULL, err) < 0)
            return mvm_error_wrap(err, "builder: unpacking %s %s", d[i].name, d[i].version);
    }
    return 0;
}

static int find_busybox(char **out, mvm_error **err) {
    static const char *const cands[] = {"/usr/bin/busybox", "/bin/busybox"};
    for (size_t i = 0; i < ARRAY_SIZE(cands); i++)
        if (access(cands[i], X_OK) == 0)
            return (*out = strdup(cands[i])) ? 0 : mvm_error_set(err, ENOMEM, "out of memory");
    return mvm_error_set(err, MVM_EUNAVAIL,
                         "busybox not found; the builder image needs busybox-static "
                         "(apt-get install busybox-static)");
}

static bool applet_ok(const char *s) {
    if (!*s || *s == '/' || strstr(s, ".."))
        return false;
    for (; *s; s++)
        if (!((*s >= 'a' && *s <= 'z') || (*s >= 'A' && *s <= 'Z') || (*s >= '0' && *s <= '9') ||
              *s == '/' || *s == '.' || *s == '_' || *s == '-' || *s == '['))
            return false;
    return true;
}

/* busybox as /usr/bin/busybox plus one link per applet that no Debian package provides
 * (in either /usr/bin or /usr/sbin). Runs after merge_usr. */
static int add_busybox(const char *root, const char *busybox, size_t *count,
                       mvm_error **err) {
    _cleanup_free_ char *dst = mvm_path_join(root, "usr/bin/busybox");
    if (!dst)
        return mvm_error_set(err, ENOMEM, "out of memory");
    if (image_copy_file(busybox, dst, 0755, err) < 0)
        return -1;
    const char *argv[] = {busybox, "--list-full", NULL};
    _cleanup_free_ char *list = NULL;
    if (run_capture(argv, &list, err) < 0)
        return mvm_error_wrap(err, "builder: busybox --list-full");
    *count = 0;
    for (char *save = NULL, *line = strtok_r(list, "\n", &save); line;
         line = strtok_r(NULL, "\n", &save)) {
        if (!applet_ok(line))
            continue;
        const char *base = strrchr(line, '/');
        base = base ? base + 1 : line;
        const char *dir = strstr(line, "sbin/") ? "usr/sbin" : "usr/bin";
        _cleanup_free_ char *p = NULL, *alt_bin = NULL, *alt_sbin = NULL;
        if (asprintf(&p, "%s/%s/%s", root, dir, base) < 0 ||
            asprintf(&alt_bin, "%s/usr/bin/%s", root, base) < 0 ||
            asprintf(&alt_sbin, "%s/usr/sbin/%s", root, base) < 0)
            return mvm_error_set(err, ENOMEM, "out of memory");
        struct stat st;
        if (!strcmp(base, "busybox") || lstat(alt_bin, &st) == 0 || lstat(alt_sbin, &st) == 0)
            continue;
        if (symlink("/usr/bin/busybox", p) < 0)
            return mvm_error_sys(err, "cannot create %s", p);
        (*count)++;
    }
    return 0;
}

static int find_build_job(const char *guest, char **out, mvm_error **err) {
    /* installed next to mvm-agent; in a build tree, the source copy two levels up */
    static const char *const rel[] = {"mvm-build-job", "../../guest/mvm-build-job"};
    for (size_t i = 0; i < ARRAY_SIZE(rel); i++) {
        _cleanup_free_ char *p = mvm_path_join(guest, rel[i]);
        if (!p)
            return mvm_error_set(err, ENOMEM, "out of memory");
        struct stat st;
        if (stat(p, &st) == 0 && S_ISREG(st.st_mode)) {
            *out = steal_pointer(&p);
            return 0;
        }
    }
    return mvm_error_set(err, MVM_ENOTFOUND, "%s/mvm-build-job is missing (build mvm first)",
                         guest);
}

/* /etc/ssl/certs/ca-certificates.crt from the package's certificates (what its install
 * script, update-ca-certificates, would make), in sorted order for a reproducible image. */
static int ca_bundle(const char *root, mvm_error **err) {
    _cleanup_free_ char *dir = mvm_path_join(root, "usr/share/ca-certificates/mozilla"),
                        *certs = mvm_path_join(root, "etc/ssl/certs"),
                        *bundle = mvm_path_join(root, "etc/ssl/certs/ca-certificates.crt");
    if (!dir || !certs || !bundle)
        return mvm_error_set(err, ENOMEM, "out of memory");
    _cleanup_closedir_ DIR *d = opendir(dir);
    if (!d)
        return mvm_error_sys(err, "builder: %s", dir);
    char **names = NULL;
    size_t n = 0;
    struct dirent *de;
    while ((de = readdir(d))) {
        size_t l = strlen(de->d_name);
        if (l < 5 || strcmp(de->d_name + l - 4, ".crt"))
            continue;
        char **nn = realloc(names, (n + 2) * sizeof(*names));
        if (!nn || !(nn[n] = strdup(de->d_name))) {
            free(nn ? nn : names);
            return mvm_error_set(err, ENOMEM, "out of memory");
        }
        names = nn;
        names[++n] = NULL;
    }
    _cleanup_strv_ char **owned = names;
    if (n)
        qsort(names, n, sizeof(*names), str_cmp);
    if (mvm_mkdir_p(certs, 0755, err) < 0)
        return -1;
    _cleanup_fclose_ FILE *out = fopen(bundle, "we");
    if (!out)
        return mvm_error_sys(err, "cannot create %s", bundle);
    for (size_t i = 0; i < n; i++) {
        _cleanup_free_ char *p = mvm_path_join(dir, names[i]), *text = NULL;
        size_t len;
        if (!p || mvm_read_file(p, 1 << 20, &text, &len, err) < 0)
            return -1;
        fwrite(text, 1, len, out);
        if (len && text[len - 1] != '\n')
            fputc('\n', out);
    }
    if (fflush(out) != 0)
        return mvm_error_sys(err, "cannot write %s", bundle);
    /* the bundle is all Nix reads; the single files (some with non-ASCII names) can go */
    _cleanup_free_ char *share = mvm_path_join(root, "usr/share/ca-certificates");
    if (!share)
        return mvm_error_set(err, ENOMEM, "out of memory");
    return mvm_rm_rf(share, err);
}

static int stage_extra(const char *root, const char *agent, const char *job,
                       mvm_error **err) {
    if (ca_bundle(root, err) < 0)
        return -1;
    static const struct {
        const char *path;
        int mode;
    } dirs[] = {
        {"proc", 0755}, {"sys", 0755},  {"dev", 0755},  {"run", 0755},     {"tmp", 01777},
        {"root", 0700}, {"nix", 0755},  {"src", 0755},  {"out", 0755},     {"etc/nix", 0755},
        {"var", 0755},  {"var/tmp", 01777}, {"home", 0755}, {"usr/sbin", 0755},
    };
    for (size_t i = 0; i < ARRAY_SIZE(dirs); i++) {
        _cleanup_free_ char *p = mvm_path_join(root, dirs[i].path);
        if (!p)
            return mvm_error_set(err, ENOMEM, "out of memory");
        if (mvm_mkdir_p(p, 0755, err) < 0)
            return -1;
        if (chmod(p, (mode_t)dirs[i].mode) < 0)
            return mvm_error_sys(err, "cannot chmod %s", p);
    }
    static const struct {
        const char *path, *text;
        int mode;
    } files[] = {
        {"etc/passwd", "root:x:0:0:root:/root:/bin/sh\n"
                       "nobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n", 0644},
        {"etc/group", "root:x:0:\nnogroup:x:65534:\n", 0644},
        {"etc/shadow", "root:*:0:0:99999:7:::\nnobody:*:0:0:99999:7:::\n", 0600},
        {"etc/hostname", "mvm-builder\n", 0644},
        {"etc/hosts", "127.0.0.1 localhost\n127.0.1.1 mvm-builder\n::1 localhost\n", 0644},
        {"etc/os-release",
         "NAME=mvm\nID=mvm\nPRETTY_NAME=\"mvm builder image\"\nVARIANT_ID=builder\n", 0644},
        {"etc/profile", "export PATH=/usr/sbin:/usr/bin:/sbin:/bin\nexport HOME=/root\n", 0644},
        {"etc/nix/nix.conf", nix_conf, 0644},
    };
    for (size_t i = 0; i < ARRAY_SIZE(files); i++) {
        _cleanup_free_ char *p = mvm_path_join(root, files[i].path);
        if (!p)
            return mvm_error_set(err, ENOMEM, "out of memory");
        (void)unlink(p);
        if (image_write_string(p, files[i].text, files[i].mode, err) < 0)
            return -1;
    }
    _cleanup_free_ char *ag = mvm_path_join(root, "usr/sbin/mvm-agent"),
                        *jb = mvm_path_join(root, "usr/sbin/mvm-build-job");
    if (!ag || !jb)
        return mvm_error_set(err, ENOMEM, "out of memory");
    (void)unlink(ag);
    (void)unlink(jb);
    if (image_copy_file(agent, ag, 0755, err) < 0 || image_copy_file(job, jb, 0755, err) < 0)
        return -1;
    return 0;
}


/* The default image (recipe:default) provides kernel and initramfs. */
static int base_image(const struct mvm_build_opts *o, mvm_image **out, mvm_error **err) {
    struct mvm_build_opts bo = {.tag = "default",
                                .guest_dir = o ? o->guest_dir : NULL,
                                .progress = o ? o->progress : NULL,
                                .progress_ud = o ? o->progress_ud : NULL};
    mvm_image *img = NULL;
    mvm_error *e = NULL;
    if (mvm_image_resolve("default", &img, &e) == 0 &&
        (strcmp(img->manifest.source_kind, "recipe") ||
         strcmp(img->manifest.source_ref, "default"))) {
        /* the user re-tagged "default": keep the recipe's image under a name of its own */
        mvm_image_free(img);
        img = NULL;
        bo.tag = MVM_BUILDER_TAG "-base";
    } else if (img) {
        mvm_image_free(img);
        img = NULL;
    }
    mvm_error_free(e);
    if (mvm_image_build_default(&bo, &img, err) < 0)
        return -1;
    if (mvm_image_verify(img, err) < 0) {
        mvm_image_free(img);
        return -1;
    }
    *out = img;
    return 0;
}

/* The base's command line with mvm.root= pointing at the builder's labelled rootfs. */
static char *builder_cmdline(const char *base) {
    char *out = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&out, &len);
    if (!f)
        return NULL;
    bool first = true, have_root = false;
    for (const char *p = base ? base : ""; *p;) {
        while (*p == ' ')
            p++;
        size_t n = strcspn(p, " ");
        if (!n)
            break;
        fputs(first ? "" : " ", f);
        first = false;
        if (!strncmp(p, "mvm.root=", 9)) {
            fputs("mvm.root=LABEL=mvm-root", f);
            have_root = true;
        } else {
            fwrite(p, 1, n, f);
        }
        p += n;
    }
    if (!have_root)
        fputs(first ? "mvm.root=LABEL=mvm-root" : " mvm.root=LABEL=mvm-root", f);
    if (fclose(f) != 0) {
        free(out);
        return NULL;
    }
    return out;
}

/* "2.8.0-1.1+b1" -> "nix (Nix) 2.8.0" (what `nix --version` prints) */
static char *nix_version_of(const char *deb_version) {
    const char *v = strchr(deb_version, ':');
    v = v ? v + 1 : deb_version;
    size_t n = strcspn(v, "-+~");
    char *s = NULL;
    return asprintf(&s, "nix (Nix) %.*s", (int)n, v) < 0 ? NULL : s;
}

static int build(const struct mvm_build_opts *o, const char *cache, const char *bdir,
                 const struct image_progress *pr, mvm_image **out, mvm_error **err) {
    _cleanup_free_ char *img = mvm_path_join(bdir, "img"), *work = mvm_path_join(bdir, "work"),
                        *staging = mvm_path_join(bdir, "work/root"), *busybox = NULL, *agent = NULL,
                        *job = NULL, *digest = NULL, *rootfs = mvm_path_join(img, "rootfs.ext4"),
                        *raw = mvm_path_join(img, "rootfs.raw");
    if (!img || !work || !staging || !rootfs || !raw)
        return mvm_error_set(err, ENOMEM, "out of memory");
    if (mvm_mkdir_p(img, 0755, err) < 0 || mvm_mkdir_p(staging, 0755, err) < 0)
        return -1;

    /* 1. kernel + initramfs: those of the default image */
    _cleanup_(mvm_image_freep) mvm_image *base = NULL;
    if (base_image(o, &base, err) < 0)
        return mvm_error_wrap(err, "builder: default image");
    const char *guest = o && o->guest_dir ? o->guest_dir : image_guest_dir_default();
    if (!guest)
        return mvm_error_set(err, EINVAL, "builder: no guest directory (mvm-agent) given");
    agent = mvm_path_join(guest, "mvm-agent");
    if (!agent)
        return mvm_error_set(err, ENOMEM, "out of memory");
    if (access(agent, R_OK) < 0)
        return mvm_error_set(err, MVM_ENOTFOUND, "guest binary %s is missing (build mvm first)",
                             agent);
    if (find_build_job(guest, &job, err) < 0 || find_busybox(&busybox, err) < 0)
        return -1;

    /* 2. nix-bin and its closure */
    struct deb *d = NULL;
    size_t n = 0;
    int rc = -1;
    struct mvm_manifest m = {0};
    if (resolve_packages(&d, &n, err) < 0)
        return -1;
    PROGRESS(pr, "builder: resolving %s dependencies (%zu packages)", NIX_PACKAGE, n);
    uint64_t dl_bytes = 0;
    if (download(cache, work, d, n, pr, &dl_bytes, err) < 0)
        goto out;

    /* 3. root filesystem */
    PROGRESS(pr, "builder: unpacking %zu packages (%.1f MB of .debs)", n, dl_bytes / 1e6);
    size_t n_applets = 0;
    if (unpack(staging, d, n, err) < 0 || merge_usr(staging, err) < 0 ||
        add_busybox(staging, busybox, &n_applets, err) < 0 ||
        stage_extra(staging, agent, job, err) < 0 ||
        image_tree_fix_times(staging, (time_t)image_source_date_epoch(), err) < 0)
        goto out;
    uint64_t fs_size = 0;
    if (image_ext4_from_dir(staging, rootfs, "mvm-root", &fs_size, err) < 0)
        goto out;
    PROGRESS(pr, "builder: rootfs mke2fs -d (%llu MiB, %zu packages, busybox + %zu applets)",
             (unsigned long long)(fs_size / MIB), n, n_applets);
    if (link(rootfs, raw) < 0) {
        mvm_error_sys(err, "cannot link %s", raw);
        goto out;
    }

    /* 4. manifest: kernel artifacts shared with the default image */
    static const char *const shared[] = {"kernel", "kernel-bzimage", "initrd"};
    m.schema = 1;
    m.name = strdup(MVM_BUILDER_TAG);
    m.created = image_created_now();
    m.cmdline = builder_cmdline(base->manifest.cmdline);
    m.source_kind = strdup("builder");
    m.source_ref = strdup(NIX_PACKAGE);
    m.kernel_version = strdup(base->manifest.kernel_version ? base->manifest.kernel_version : "");
    m.artifacts = calloc(ARRAY_SIZE(shared) + 1, sizeof(*m.artifacts));
    m.packages = calloc(n, sizeof(*m.packages));
    if (!m.name || !m.created || !m.cmdline || !m.source_kind || !m.source_ref ||
        !m.kernel_version || !m.artifacts || !m.packages) {
        mvm_error_set(err, ENOMEM, "out of memory");
        goto out;
    }
    for (size_t i = 0; i < n; i++) {
        m.n_packages = i + 1;
        m.packages[i].name = strdup(d[i].name);
        m.packages[i].version = strdup(d[i].version);
        m.packages[i].sha256 = strdup(d[i].sha256);
        if (!m.packages[i].name || !m.packages[i].version || !m.packages[i].sha256) {
            mvm_error_set(err, ENOMEM, "out of memory");
            goto out;
        }
        if (!strcmp(d[i].name, NIX_PACKAGE))
            m.source_nix_version = nix_version_of(d[i].version);
    }
    for (size_t i = 0; i < ARRAY_SIZE(shared); i++) {
        const struct mvm_artifact *a = mvm_manifest_find(&base->manifest, shared[i]);
        if (!a)
            continue; /* kernel and initrd are checked below */
        _cleanup_free_ char *src = mvm_path_join(base->dir, a->file), *dst = mvm_path_join(img, a->file);
        if (!src || !dst) {
            mvm_error_set(err, ENOMEM, "out of memory");
            goto out;
        }
        if (image_link_or_copy(src, dst, 0444, err) < 0 ||
            image_artifact_fill(&m.artifacts[m.n_artifacts], img, a->name, a->file, a->format,
                                err) < 0)
            goto out;
        m.n_artifacts++;
    }
    if (!mvm_manifest_find(&m, "kernel") || !mvm_manifest_find(&m, "initrd")) {
        mvm_error_set(err, MVM_EINTEGRITY, "builder: the default image has no kernel/initrd");
        goto out;
    }
    if (chmod(rootfs, 0444) < 0) {
        mvm_error_sys(err, "cannot chmod %s", rootfs);
        goto out;
    }
    if (image_artifact_fill(&m.artifacts[m.n_artifacts], img, "rootfs", "rootfs.ext4", "ext4",
                            err) < 0)
        goto out;
    m.n_artifacts++;
    if (image_publish(img, &m, MVM_BUILDER_TAG, &digest, err) < 0 ||
        image_load_digest(cache, digest, out, err) < 0)
        goto out;
    PROGRESS(pr, "builder: sha256:%.12s… ready (rootfs %llu MiB, %zu packages)", digest,
             (unsigned long long)(fs_size / MIB), n);
    rc = 0;
out:
    mvm_manifest_free(&m);
    debs_free(d, n);
    return rc;
}

/* true when the file at path inside the image's rootfs has the same bytes as host file */
static bool rootfs_file_same(const mvm_image *img, const char *path, const char *host) {
    _cleanup_free_ char *rootfs = mvm_image_artifact_path(img, "rootfs"), *cmd = NULL,
                        *want = NULL;
    size_t want_len = 0;
    mvm_error *e = NULL;
    if (!rootfs || asprintf(&cmd, "cat %s", path) < 0 ||
        mvm_read_file(host, 64 * MIB, &want, &want_len, &e) < 0) {
        mvm_error_free(e);
        return false;
    }
    const char *argv[] = {"debugfs", "-R", cmd, rootfs, NULL};
    const char *env[] = {"LC_ALL=C", NULL};
    struct mvm_cmd c = {.argv = argv, .env = env, .in_fd = -1, .out_fd = -1};
    bool same = mvm_cmd_run(&c, &e) == 0 && c.out_len == want_len &&
                memcmp(c.out, want, want_len) == 0;
    mvm_cmd_clear(&c);
    mvm_error_free(e);
    return same;
}

/* A cached builder is current when its guest tools equal the ones this mvm ships and its
 * kernel + initramfs (with mvm-init) are those of the current default image. */
static bool builder_current(const struct mvm_build_opts *o, const mvm_image *img, const char *guest) {
    _cleanup_free_ char *agent = guest ? mvm_path_join(guest, "mvm-agent") : NULL, *job = NULL;
    mvm_error *e = NULL;
    if (!agent || find_build_job(guest, &job, &e) < 0) {
        mvm_error_free(e);
        return true; /* nothing to compare with: keep what is there */
    }
    _cleanup_(mvm_image_freep) mvm_image *base = NULL;
    if (base_image(o, &base, &e) < 0) {
        mvm_error_free(e);
        return false;
    }
    static const char *const shared[] = {"kernel", "initrd"};
    for (size_t i = 0; i < ARRAY_SIZE(shared); i++) {
        const struct mvm_artifact *a = mvm_manifest_find(&img->manifest, shared[i]),
                                  *b = mvm_manifest_find(&base->manifest, shared[i]);
        if (!a || !b || strcmp(a->sha256, b->sha256))
            return false;
    }
    return rootfs_file_same(img, "/usr/sbin/mvm-build-job", job) &&
           rootfs_file_same(img, "/usr/sbin/mvm-agent", agent);
}

int mvm_builder_ensure(const struct mvm_build_opts *o, mvm_image **out, mvm_error **err) {
    struct image_progress pr = {.fn = o ? o->progress : NULL, .ud = o ? o->progress_ud : NULL};
    if (!(o && o->force)) {
        mvm_error *e = NULL;
        mvm_image *img = NULL;
        if (mvm_image_resolve(MVM_BUILDER_TAG, &img, &e) == 0) {
            const char *guest = o && o->guest_dir ? o->guest_dir : image_guest_dir_default();
            if (builder_current(o, img, guest)) {
                PROGRESS(&pr, "builder: sha256:%.12s… (cached)", img->digest);
                *out = img;
                return 0;
            }
            PROGRESS(&pr, "builder: sha256:%.12s… has older guest tools; rebuilding",
                     img->digest);
            mvm_image_free(img);
        }
        mvm_error_free(e);
    }
    _cleanup_free_ char *cache = image_cache_prepare(err);
    if (!cache)
        return -1;
    _cleanup_free_ char *bdir = image_tmpdir(cache, "builder", err);
    if (!bdir)
        return -1;
    int rc = build(o, cache, bdir, &pr, out, err);
    mvm_error *e = NULL;
    if (mvm_rm_rf(bdir, &e) < 0 && rc == 0)
        PROGRESS(&pr, "warning: %s", e->msg);
    mvm_error_free(e);
    if (rc < 0)
        return mvm_error_wrap(err, "build %s", MVM_BUILDER_TAG);
    return 0;
}

/* ---- the persistent Nix store disk ---- */

char *mvm_builder_store_path(mvm_error **err) {
    _cleanup_free_ char *cache = image_cache_prepare(err);
    if (!cache)
        return NULL;
    _cleanup_free_ char *dir = mvm_path_join(cache, "builder"), *path = NULL, *tmp = NULL;
    if (!dir || !(path = mvm_path_join(dir, "store.ext4")) ||
        asprintf(&tmp, "%s/store.ext4.tmp-%ld", dir, (long)getpid()) < 0) {
        mvm_error_set(err, ENOMEM, "out of memory");
        return NULL;
    }
    if (mvm_mkdir_p(dir, 0700, err) < 0)
        return NULL;
    if (access(path, F_OK) == 0)
        return steal_pointer(&path);
    /* a sparse file formatted once; it only grows as the store fills */
    {
        _cleanup_close_ int fd =
            open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW, 0600);
        if (fd < 0) {
            mvm_error_sys(err, "cannot create %s", tmp);
            return NULL;
        }
        if (ftruncate(fd, (off_t)STORE_DISK_SIZE) < 0) {
            mvm_error_sys(err, "cannot size %s", tmp);
            unlink(tmp);
            return NULL;
        }
    }
    const char *argv[] = {"mke2fs", "-q", "-t", "ext4", "-F", "-L", "mvm-store", "-m", "0",
                          "-E", "root_owner=0:0,lazy_itable_init=1,lazy_journal_init=1",
                          tmp, NULL};
    const char *env[] = {"MKE2FS_SYNC=0", "LC_ALL=C", NULL};
    struct mvm_cmd c = {.argv = argv, .env = env, .in_fd = -1, .out_fd = -1};
    int r = mvm_cmd_run(&c, err);
    mvm_cmd_clear(&c);
    if (r < 0) {
        unlink(tmp);
        mvm_error_wrap(err, "builder: creating the store disk (mke2fs; install e2fsprogs)");
        return NULL;
    }
    /* another process may have won the race: keep the first disk */
    if (link(tmp, path) < 0 && errno != EEXIST) {
        mvm_error_sys(err, "cannot create %s", path);
        unlink(tmp);
        return NULL;
    }
    unlink(tmp);
    return steal_pointer(&path);
}

int mvm_builder_remove(mvm_error **err) {
    mvm_error *e = NULL;
    if (mvm_image_remove(MVM_BUILDER_TAG, &e) < 0) {
        if (e->code != MVM_ENOTFOUND) {
            if (err && !*err)
                *err = e;
            else
                mvm_error_free(e);
            return -1;
        }
        mvm_error_free(e);
    }
    _cleanup_free_ char *cache = mvm_path_cache(err);
    if (!cache)
        return -1;
    _cleanup_free_ char *dir = mvm_path_join(cache, "builder");
    if (!dir)
        return mvm_error_set(err, ENOMEM, "out of memory");
    return mvm_rm_rf(dir, err);
}
