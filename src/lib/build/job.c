/*
 * `mvmctl build --flake`: one build job in a builder microVM, block devices only.
 *
 *   host                                   builder VM (mvm-builder image)
 *   stage flake dir -> src.ext4 (ro)  ---> /src      (label mvm-src)
 *   store.ext4 (persistent, e2fsck'd) ---> /nix      (label mvm-store)
 *   empty out.ext4                    ---> /out      (label mvm-out)
 *                                          mvm-build-job PROFILE: nix build, copy result
 *   debugfs rdump /result <- out.ext4      /out/result + /out/.mvm/{files.sha256,nix-version}
 *   verify every file against files.sha256, pack rootfs/, add mvm-agent, publish image
 */
#include "mvm/build.h"
#include "mvm/paths.h"
#include "mvm/vm.h"
#include "build/build-internal.h"
#include "image/image-internal.h"
#include "log.h"
#include "util.h"

#include <dirent.h>
#include <fcntl.h>
#include <openssl/evp.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <time.h>

#define OUT_DISK_BYTES (8ULL << 30) /* sparse */
#define LOG_TAIL 4096

static void progress(const struct mvm_flake_build_opts *o, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
static void progress(const struct mvm_flake_build_opts *o, const char *fmt, ...) {
    if (!o->progress)
        return;
    char buf[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf, sizeof(buf), fmt, ap);
    va_end(ap);
    o->progress(o->progress_ud, "%s", buf);
}

static long long ms_since(const struct timespec *t0) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (t.tv_sec - t0->tv_sec) * 1000LL + (t.tv_nsec - t0->tv_nsec) / 1000000;
}

static int profile_validate(const char *p, mvm_error **err) {
    size_t n = strlen(p);
    bool ok = n > 0 && n <= 64;
    for (size_t i = 0; ok && i < n; i++)
        ok = (p[i] >= 'a' && p[i] <= 'z') || (p[i] >= 'A' && p[i] <= 'Z') ||
             (p[i] >= '0' && p[i] <= '9') || p[i] == '-' || p[i] == '_';
    if (!ok)
        return mvm_error_set(err, MVM_EINVAL,
                             "invalid profile '%s': use letters, digits, '-' or '_' (max 64)", p);
    return 0;
}

/* ---- deterministic hash of the flake source tree ---- */

static int cmp_str(const void *a, const void *b) { return strcmp(*(char *const *)a, *(char *const *)b); }

static int tree_hash(EVP_MD_CTX *ctx, const char *root, const char *rel, mvm_error **err) {
    _cleanup_free_ char *path = NULL;
    if (asprintf(&path, "%s%s%s", root, *rel ? "/" : "", rel) < 0)
        return mvm_error_set(err, ENOMEM, "out of memory");
    _cleanup_closedir_ DIR *d = opendir(path);
    if (!d)
        return mvm_error_sys(err, "cannot read %s", path);
    char **names = NULL;
    size_t n = 0;
    struct dirent *de;
    while ((de = readdir(d))) {
        if (!strcmp(de->d_name, ".") || !strcmp(de->d_name, "..") || !strcmp(de->d_name, ".git"))
            continue;
        /* `nix build` result links in the user's tree are not inputs */
        if (!*rel && !strncmp(de->d_name, "result", 6) && de->d_type == DT_LNK)
            continue;
        char **nn = realloc(names, (n + 1) * sizeof(*names));
        if (!nn || !(nn[n] = strdup(de->d_name))) {
            free(nn ? nn : names);
            return mvm_error_set(err, ENOMEM, "out of memory");
        }
        names = nn;
        n++;
    }
    qsort(names, n, sizeof(*names), cmp_str);
    int r = 0;
    for (size_t i = 0; i < n && r == 0; i++) {
        _cleanup_free_ char *crel = NULL, *cpath = NULL;
        if (asprintf(&crel, "%s%s%s", rel, *rel ? "/" : "", names[i]) < 0 ||
            asprintf(&cpath, "%s/%s", root, crel) < 0) {
            r = mvm_error_set(err, ENOMEM, "out of memory");
            break;
        }
        struct stat st;
        if (lstat(cpath, &st) < 0) {
            r = mvm_error_sys(err, "stat %s", cpath);
            break;
        }
        char hdr[64];
        int hl = snprintf(hdr, sizeof(hdr), "\n%o %lld ", (unsigned)st.st_mode, (long long)st.st_size);
        EVP_DigestUpdate(ctx, hdr, hl);
        EVP_DigestUpdate(ctx, crel, strlen(crel) + 1);
        if (S_ISDIR(st.st_mode)) {
            r = tree_hash(ctx, root, crel, err);
        } else if (S_ISLNK(st.st_mode)) {
            char tgt[4096];
            ssize_t tl = readlink(cpath, tgt, sizeof(tgt));
            if (tl > 0)
                EVP_DigestUpdate(ctx, tgt, tl);
        } else if (S_ISREG(st.st_mode)) {
            _cleanup_close_ int fd = open(cpath, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
            if (fd < 0) {
                r = mvm_error_sys(err, "cannot read %s", cpath);
                break;
            }
            char buf[65536];
            ssize_t k;
            while ((k = read(fd, buf, sizeof(buf))) > 0)
                EVP_DigestUpdate(ctx, buf, k);
        }
    }
    for (size_t i = 0; i < n; i++)
        free(names[i]);
    free(names);
    return r;
}

int build_source_hash(const char *dir, char hex[65], mvm_error **err) {
    EVP_MD_CTX *ctx = EVP_MD_CTX_new();
    if (!ctx)
        return mvm_error_set(err, ENOMEM, "out of memory");
    EVP_DigestInit_ex(ctx, EVP_sha256(), NULL);
    int r = tree_hash(ctx, dir, "", err);
    unsigned char md[32];
    unsigned int mdl = 0;
    EVP_DigestFinal_ex(ctx, md, &mdl);
    EVP_MD_CTX_free(ctx);
    for (int i = 0; i < 32; i++)
        sprintf(hex + 2 * i, "%02x", md[i]);
    return r;
}

/* Key of everything that determines the result: source tree, profile, builder image,
 * the agent that gets added, and the flags. */
static int build_key(const struct mvm_flake_build_opts *o, const char *profile,
                     const mvm_image *builder, const char *agent_sha, char hex[65], mvm_error **err) {
    char src[65];
    if (build_source_hash(o->flake_dir, src, err) < 0)
        return -1;
    char head[512];
    int hl = snprintf(head, sizeof(head),
                      "mvm-flake-build-v1\nprofile=%s\nbuilder=%s\nagent=%s\nonline=%d\nsource=%s\n",
                      profile, builder->digest, agent_sha, o->online, src);
    image_sha256_buf(head, hl, hex);
    return 0;
}

/* ---- helpers ---- */

static int run_argv(const char *const *argv, mvm_error **err) {
    struct mvm_cmd c = {.argv = argv, .in_fd = -1, .out_fd = -1};
    int r = mvm_cmd_run(&c, err);
    mvm_cmd_clear(&c);
    return r;
}

static int make_empty_ext4(const char *path, const char *label, uint64_t bytes, mvm_error **err) {
    {
        _cleanup_close_ int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
        if (fd < 0)
            return mvm_error_sys(err, "create %s", path);
        if (ftruncate(fd, (off_t)bytes) < 0)
            return mvm_error_sys(err, "size %s", path);
    }
    const char *argv[] = {"mke2fs", "-q", "-t", "ext4", "-F", "-L", label, "-E",
                          "root_owner=0:0,lazy_itable_init=1,lazy_journal_init=1", path, NULL};
    return run_argv(argv, err);
}

/* The store disk survives builds; a builder killed mid-build may leave it unclean.
 * e2fsck -p repairs what is safe; anything worse and the cache is recreated, never used. */
static int store_check(const char *store, const struct mvm_flake_build_opts *o, mvm_error **err) {
    const char *argv[] = {"e2fsck", "-p", store, NULL};
    struct mvm_cmd c = {.argv = argv, .in_fd = -1, .out_fd = -1, .allow_fail = true};
    if (mvm_cmd_run(&c, err) < 0) {
        mvm_cmd_clear(&c);
        return -1;
    }
    int st = c.status;
    mvm_cmd_clear(&c);
    if (st <= 1)
        return 0; /* 0 clean, 1 errors corrected */
    progress(o, "builder: store cache failed its check (e2fsck status %d); recreating it", st);
    unlink(store);
    mvm_error *e = NULL;
    _cleanup_free_ char *p = mvm_builder_store_path(&e);
    if (!p)
        return *err = e, -1;
    return 0;
}

struct job_log {
    int fd;
    char tail[LOG_TAIL];
    size_t len;
};

static void on_job_output(void *ud, int stream, const void *data, size_t len) {
    (void)stream;
    struct job_log *l = ud;
    if (l->fd >= 0) {
        const char *p = data;
        size_t left = len;
        while (left > 0) {
            ssize_t w = write(l->fd, p, left);
            if (w <= 0)
                break;
            p += w;
            left -= w;
        }
    }
    if (len >= LOG_TAIL) {
        memcpy(l->tail, (const char *)data + len - LOG_TAIL, LOG_TAIL);
        l->len = LOG_TAIL;
    } else {
        size_t keep = l->len + len > LOG_TAIL ? LOG_TAIL - len : l->len;
        memmove(l->tail, l->tail + l->len - keep, keep);
        memcpy(l->tail + keep, data, len);
        l->len = keep + len;
    }
}

void build_last_lines(const char *buf, size_t len, int nlines, char *out, size_t outlen) {
    if (len > LOG_TAIL) {
        buf += len - LOG_TAIL;
        len = LOG_TAIL;
    }
    /* find where the last nlines non-empty lines start */
    size_t start = len;
    int got = 0;
    while (start > 0 && got < nlines) {
        size_t e = start;
        while (e > 0 && (buf[e - 1] == '\n' || buf[e - 1] == '\r'))
            e--;
        size_t s = e;
        while (s > 0 && buf[s - 1] != '\n')
            s--;
        if (e > s)
            got++;
        start = s;
    }
    size_t o = 0;
    bool pending_sep = false;
    for (size_t i = start; i < len && o + 1 < outlen; i++) {
        char ch = buf[i];
        if (ch == '\n' || ch == '\r') {
            pending_sep = o > 0;
            continue;
        }
        if (pending_sep) {
            if (o + 4 >= outlen)
                break;
            memcpy(out + o, " | ", 3);
            o += 3;
            pending_sep = false;
        }
        out[o++] = (unsigned char)ch < 0x20 ? ' ' : ch;
    }
    if (outlen)
        out[o] = 0;
}

/* Checks every extracted file against the list the builder wrote (sha256sum format), which
 * also catches files truncated by a full disk during extraction. */
int build_verify_extracted(const char *dir, const char *list, mvm_error **err) {
    _cleanup_fclose_ FILE *f = fopen(list, "re");
    if (!f)
        return mvm_error_sys(err, "builder output has no file list (%s)", list);
    char line[8192];
    size_t n = 0;
    while (fgets(line, sizeof(line), f)) {
        size_t l = strlen(line);
        while (l && (line[l - 1] == '\n'))
            line[--l] = 0;
        if (l < 67 || line[64] != ' ')
            return mvm_error_set(err, MVM_EPROTO, "builder output: malformed file list line");
        const char *rel = line + 66;
        if (rel[0] == '.' && rel[1] == '/')
            rel += 2;
        if (strstr(rel, "..") && (strstr(rel, "/../") || !strncmp(rel, "../", 3)))
            return mvm_error_set(err, MVM_EPROTO, "builder output: path escapes the tree: %s", rel);
        _cleanup_free_ char *p = NULL;
        if (asprintf(&p, "%s/%s", dir, rel) < 0)
            return mvm_error_set(err, ENOMEM, "out of memory");
        char hex[65];
        if (image_sha256_file(p, hex, NULL, err) < 0)
            return mvm_error_wrap(err, "extracting the build result");
        line[64] = 0;
        if (strcmp(hex, line) != 0)
            return mvm_error_set(err, MVM_EINTEGRITY,
                                 "extracting the build result: %s differs from the builder's copy "
                                 "(disk full?)", rel);
        n++;
    }
    return 0;
}

static bool exists(const char *dir, const char *name) {
    _cleanup_free_ char *p = NULL;
    struct stat st;
    return asprintf(&p, "%s/%s", dir, name) >= 0 && lstat(p, &st) == 0;
}


/* Adds mvm's agent to a rootfs image the flake supplied (debugfs, no mount). */
static int inject_agent_ext4(const char *img, const char *agent, mvm_error **err) {
    _cleanup_free_ char *cmds = NULL;
    if (asprintf(&cmds,
                 "mkdir /sbin\nrm /sbin/mvm-agent\nwrite %s /sbin/mvm-agent\n"
                 "sif /sbin/mvm-agent mode 0100755\nsif /sbin/mvm-agent uid 0\n"
                 "sif /sbin/mvm-agent gid 0\nsif /sbin/mvm-agent mtime 1\n",
                 agent) < 0)
        return mvm_error_set(err, ENOMEM, "out of memory");
    _cleanup_close_ int fd = memfd_create("mvm-inject", MFD_CLOEXEC);
    if (fd < 0 || write(fd, cmds, strlen(cmds)) != (ssize_t)strlen(cmds) || lseek(fd, 0, SEEK_SET) < 0)
        return mvm_error_sys(err, "memfd");
    const char *argv[] = {"debugfs", "-w", "-f", "-", img, NULL};
    struct mvm_cmd c = {.argv = argv, .in_fd = fd, .out_fd = -1};
    int r = mvm_cmd_run(&c, err);
    mvm_cmd_clear(&c);
    if (r < 0)
        return mvm_error_wrap(err, "adding mvm-agent to rootfs.ext4");
    /* verify it landed */
    const char *sargv[] = {"debugfs", "-R", "stat /sbin/mvm-agent", img, NULL};
    struct mvm_cmd s = {.argv = sargv, .in_fd = -1, .out_fd = -1};
    r = mvm_cmd_run(&s, err);
    bool ok = r == 0 && s.out && strstr(s.out, "Type: regular");
    mvm_cmd_clear(&s);
    if (r < 0)
        return -1;
    if (!ok)
        return mvm_error_set(err, EIO, "adding mvm-agent to rootfs.ext4 failed (is it ext4 with room?)");
    return 0;
}

/* The Nix store makes everything read-only; a root filesystem wants its owner-writable bits
 * back, /tmp sticky and world-writable, /root private. Symlinks are left alone. */
static int restore_modes(const char *path, bool top, mvm_error **err) {
    struct stat st;
    if (lstat(path, &st) < 0)
        return mvm_error_sys(err, "stat %s", path);
    if (S_ISLNK(st.st_mode))
        return 0;
    if (chmod(path, (st.st_mode & 07777) | 0200) < 0)
        return mvm_error_sys(err, "chmod %s", path);
    if (!S_ISDIR(st.st_mode))
        return 0;
    _cleanup_closedir_ DIR *d = opendir(path);
    if (!d)
        return mvm_error_sys(err, "cannot read %s", path);
    struct dirent *de;
    while ((de = readdir(d))) {
        if (!strcmp(de->d_name, ".") || !strcmp(de->d_name, ".."))
            continue;
        _cleanup_free_ char *c = mvm_path_join(path, de->d_name);
        if (!c)
            return mvm_error_set(err, ENOMEM, "out of memory");
        if (restore_modes(c, false, err) < 0)
            return -1;
    }
    if (top) {
        _cleanup_free_ char *tmp = mvm_path_join(path, "tmp"), *root = mvm_path_join(path, "root");
        if (!tmp || !root)
            return mvm_error_set(err, ENOMEM, "out of memory");
        if (lstat(tmp, &st) == 0 && S_ISDIR(st.st_mode) && chmod(tmp, 01777) < 0)
            return mvm_error_sys(err, "chmod %s", tmp);
        if (lstat(root, &st) == 0 && S_ISDIR(st.st_mode) && chmod(root, 0700) < 0)
            return mvm_error_sys(err, "chmod %s", root);
    }
    return 0;
}

/* Puts the agent into an extracted rootfs/ tree. */
static int inject_agent_dir(const char *rootdir, const char *agent, mvm_error **err) {
    _cleanup_free_ char *sbin = mvm_path_join(rootdir, "sbin"), *dst = mvm_path_join(rootdir, "sbin/mvm-agent");
    if (!sbin || !dst)
        return mvm_error_set(err, ENOMEM, "out of memory");
    struct stat st;
    if (lstat(sbin, &st) == 0 && S_ISLNK(st.st_mode)) {
        /* merged-usr layouts: sbin -> usr/sbin */
        free(dst);
        dst = mvm_path_join(rootdir, "usr/sbin/mvm-agent");
        free(sbin);
        sbin = mvm_path_join(rootdir, "usr/sbin");
        if (!dst || !sbin)
            return mvm_error_set(err, ENOMEM, "out of memory");
    }
    if (mvm_mkdir_p(sbin, 0755, err) < 0)
        return -1;
    unlink(dst);
    if (image_link_or_copy(agent, dst, 0755, err) < 0)
        return -1;
    return chmod(dst, 0755) < 0 ? mvm_error_sys(err, "chmod %s", dst) : 0;
}

static void rm_builder_vm(const char *name) {
    mvm_error *e = NULL;
    if (mvm_vm_rm(name, true, &e) < 0) {
        log_warn("removing builder VM %s: %s", name, e->msg);
        mvm_error_free(e);
    }
}

/* ---- the job ---- */

struct job {
    const struct mvm_flake_build_opts *o;
    const char *profile;
    char *work;       /* <cache>/tmp/flake-XXXXXX */
    char *vm_name;
    mvm_image *builder;
};

static void job_clear(struct job *j) {
    if (j->vm_name)
        rm_builder_vm(j->vm_name);
    if (j->work)
        mvm_rm_rf(j->work, NULL);
    free(j->work);
    free(j->vm_name);
    mvm_image_free(j->builder);
}

static int run_builder(struct job *j, const char *src_img, const char *out_img, const char *store,
                       char **nix_version, mvm_error **err) {
    const struct mvm_flake_build_opts *o = j->o;
    unsigned char r[3];
    if (getrandom(r, sizeof(r), 0) != sizeof(r))
        memset(r, getpid() & 0xff, sizeof(r));
    if (asprintf(&j->vm_name, "builder-%02x%02x%02x", r[0], r[1], r[2]) < 0)
        return mvm_error_set(err, ENOMEM, "out of memory");
    struct mvm_disk disks[] = {
        {.path = store, .readonly = false},
        {.path = src_img, .readonly = true},
        {.path = out_img, .readonly = false},
    };
    char ref[80];
    snprintf(ref, sizeof(ref), "sha256:%s", j->builder->digest);
    struct mvm_run_opts ro = {.name = j->vm_name, .image = ref, .cpus = 2, .mem_mib = 2048,
                              .accel = MVM_ACCEL_AUTO, .boot_timeout_s = 180,
                              .monitor_exe = o->monitor_exe, .disks = disks, .n_disks = 3,
                              .net_user = o->online};
    struct timespec t0;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    progress(o, "builder: booting VM %s", j->vm_name);
    char *created = NULL;
    if (mvm_vm_run(&ro, &created, err) < 0) {
        free(created);
        return mvm_error_wrap(err, "builder VM");
    }
    free(created);
    progress(o, "builder: ready after %.1f s; nix build .#packages.x86_64-linux.%s", ms_since(&t0) / 1000.0,
             j->profile);
    char *argv[5] = {"/sbin/mvm-build-job", (char *)j->profile};
    int ac = 2;
    if (o->online)
        argv[ac++] = "--online";
    if (o->nix_rebuild)
        argv[ac++] = "--rebuild";
    struct job_log lg = {.fd = o->log_fd};
    struct mvm_exec_opts eo = {.argv = argv, .in_fd = -1, .out_fd = -1, .err_fd = -1,
                               .on_output = on_job_output, .output_ud = &lg,
                               .timeout_ms = (o->timeout_s > 0 ? o->timeout_s : 1800) * 1000};
    int st = mvm_exec(j->vm_name, &eo, err);
    if (st < 0)
        return mvm_error_wrap(err, "builder");
    if (st != 0) {
        char tail[1200];
        build_last_lines(lg.tail, lg.len, 4, tail, sizeof(tail));
        return mvm_error_set(err, EIO, "build failed (exit %d): %s", st, tail[0] ? tail : "no output");
    }
    /* the nix version line the job printed for provenance */
    char *vargv[] = {"cat", "/out/.mvm/nix-version", NULL};
    struct job_log vl = {.fd = -1};
    struct mvm_exec_opts vo = {.argv = vargv, .in_fd = -1, .out_fd = -1, .err_fd = -1,
                               .on_output = on_job_output, .output_ud = &vl, .timeout_ms = 30000};
    mvm_error *ve = NULL;
    if (mvm_exec(j->vm_name, &vo, &ve) == 0 && vl.len) {
        size_t l = vl.len;
        while (l && (vl.tail[l - 1] == '\n'))
            l--;
        *nix_version = strndup(vl.tail, l);
    }
    mvm_error_free(ve);
    /* a clean shutdown flushes the output and store disks */
    bool was;
    if (mvm_vm_stop(j->vm_name, 30, &was, err) < 0)
        return -1;
    return 0;
}

static int oom(mvm_error **err) {
    if (err && !*err)
        mvm_error_set(err, ENOMEM, "out of memory");
    return -1;
}

struct arts {
    struct mvm_artifact a[4];
    size_t n;
};

static int add_art(struct arts *A, const char *dir, const char *name, const char *file,
                   const char *format, mvm_error **err) {
    if (image_artifact_fill(&A->a[A->n], dir, name, file, format, err) < 0)
        return -1;
    A->n++;
    return 0;
}

static void arts_clear(struct arts *A) {
    for (size_t i = 0; i < A->n; i++) {
        free(A->a[i].name);
        free(A->a[i].file);
        free(A->a[i].format);
        free(A->a[i].sha256);
    }
}

static int flake_build(struct job *jp, mvm_image **out, mvm_error **err) {
    const struct mvm_flake_build_opts *o = jp->o;
    struct job *J = jp;
    struct timespec t0;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    const char *profile = o->profile ? o->profile : "default";
    if (profile_validate(profile, err) < 0)
        return -1;
    struct stat st;
    if (!o->flake_dir || stat(o->flake_dir, &st) < 0)
        return mvm_error_set(err, ENOENT, "flake directory '%s' not found", o->flake_dir ? o->flake_dir : "");
    if (!S_ISDIR(st.st_mode))
        return mvm_error_set(err, MVM_EINVAL, "'%s' is not a directory (give the flake's directory)",
                             o->flake_dir);
    if (!exists(o->flake_dir, "flake.nix"))
        return mvm_error_set(err, MVM_EINVAL, "'%s' has no flake.nix", o->flake_dir);
    _cleanup_free_ char *absdir = realpath(o->flake_dir, NULL);
    if (!absdir)
        return mvm_error_sys(err, "realpath %s", o->flake_dir);
    _cleanup_free_ char *tagbuf = NULL;
    const char *tag = o->tag;
    if (!tag) {
        const char *base = strrchr(absdir, '/');
        tagbuf = strdup(base && base[1] ? base + 1 : "flake");
        if (!tagbuf)
            return mvm_error_set(err, ENOMEM, "out of memory");
        tag = tagbuf;
    }
    if (image_tag_validate(tag, err) < 0)
        return -1;
    if (!strcmp(tag, MVM_BUILDER_TAG))
        return mvm_error_set(err, MVM_EINVAL, "the tag '%s' is reserved for the builder image", tag);

    J->profile = profile;
    struct mvm_build_opts bo = {.guest_dir = o->guest_dir, .progress = o->progress,
                                .progress_ud = o->progress_ud};
    if (mvm_builder_ensure(&bo, &J->builder, err) < 0)
        return -1;

    _cleanup_free_ char *agent = mvm_path_join(o->guest_dir, "mvm-agent");
    char agent_sha[65];
    if (!agent || image_sha256_file(agent, agent_sha, NULL, err) < 0)
        return -1;
    char key[65];
    if (build_key(o, profile, J->builder, agent_sha, key, err) < 0)
        return -1;

    _cleanup_free_ char *cache = image_cache_prepare(err);
    if (!cache)
        return -1;
    _cleanup_free_ char *keydir = NULL, *keyfile = NULL;
    if (asprintf(&keydir, "%s/flakes", cache) < 0 || asprintf(&keyfile, "%s/%s", keydir, key) < 0 ||
        mvm_mkdir_p(keydir, 0700, err) < 0)
        return oom(err);
    if (!o->force) {
        _cleanup_free_ char *digest = NULL;
        size_t dl;
        mvm_error *e = NULL;
        if (mvm_read_file(keyfile, 256, &digest, &dl, &e) == 0) {
            while (dl && digest[dl - 1] == '\n')
                digest[--dl] = 0;
            mvm_image *hit = NULL;
            if (image_load_digest(cache, digest, &hit, &e) == 0) {
                /* same inputs: the image is already built; (re)point the tag at it */
                if (image_tag_set(tag, hit->digest, &e) < 0) {
                    mvm_error_free(e);
                    e = NULL;
                }
                progress(o, "build: inputs unchanged (key %.12s…): cached image sha256:%.12s… (%lld ms)",
                         key, hit->digest, ms_since(&t0));
                *out = hit;
                return 0;
            }
        }
        mvm_error_free(e);
    }

    if (!(J->work = image_tmpdir(cache, "flake", err)))
        return -1;
    _cleanup_free_ char *src_img = mvm_path_join(J->work, "src.ext4"), *out_img = mvm_path_join(J->work, "out.ext4"),
                        *res = mvm_path_join(J->work, "extract"), *img = mvm_path_join(J->work, "image");
    if (!src_img || !out_img || !res || !img)
        return oom(err);
    progress(o, "build: staging %s (key %.12s…)", absdir, key);
    uint64_t srcsz;
    if (image_ext4_from_dir(absdir, src_img, "mvm-src", &srcsz, err) < 0) {
        mvm_error_wrap(err, "staging the flake");
        return -1;
    }
    if (make_empty_ext4(out_img, "mvm-out", OUT_DISK_BYTES, err) < 0)
        return -1;
    _cleanup_free_ char *store = mvm_builder_store_path(err);
    if (!store || store_check(store, o, err) < 0)
        return -1;
    if (access(store, F_OK) < 0) {
        free(store);
        if (!(store = mvm_builder_store_path(err)))
            return -1;
    }

    _cleanup_free_ char *nixv = NULL;
    struct timespec tb;
    clock_gettime(CLOCK_MONOTONIC, &tb);
    if (run_builder(J, src_img, out_img, store, &nixv, err) < 0)
        return -1;
    progress(o, "build: nix build finished in %.1f s; extracting", ms_since(&tb) / 1000.0);

    /* read the output disk back without mounting it */
    if (mvm_mkdir_p(res, 0700, err) < 0 || mvm_mkdir_p(img, 0755, err) < 0)
        return -1;
    {
        _cleanup_free_ char *cmd = NULL;
        if (asprintf(&cmd, "rdump /result /.mvm %s", res) < 0)
            return oom(err);
        const char *argv[] = {"debugfs", "-R", cmd, out_img, NULL};
        if (run_argv(argv, err) < 0) {
            mvm_error_wrap(err, "reading the builder's output disk");
            return -1;
        }
    }
    _cleanup_free_ char *result = mvm_path_join(res, "result"), *list = mvm_path_join(res, ".mvm/files.sha256");
    if (!result || !list)
        return oom(err);
    if (build_verify_extracted(result, list, err) < 0)
        return -1;

    /* assemble the image: rootfs, kernel, initramfs */
    _cleanup_free_ char *rootfs = mvm_path_join(img, "rootfs.ext4"), *raw = mvm_path_join(img, "rootfs.raw");
    const char *cmdline = "console=ttyS0 quiet panic=-1 mvm.root=/dev/vda";
    if (exists(result, "rootfs.ext4")) {
        _cleanup_free_ char *s = mvm_path_join(result, "rootfs.ext4");
        if (image_link_or_copy(s, rootfs, 0644, err) < 0 || inject_agent_ext4(rootfs, agent, err) < 0)
            return -1;
    } else if (exists(result, "rootfs")) {
        _cleanup_free_ char *rd = mvm_path_join(result, "rootfs");
        if (restore_modes(rd, true, err) < 0 || inject_agent_dir(rd, agent, err) < 0)
            return -1;
        progress(o, "build: packing rootfs/ into ext4 (mke2fs -d, deterministic)");
        if (image_ext4_from_dir(rd, rootfs, "mvm-root", NULL, err) < 0)
            return -1;
    } else {
        mvm_error_set(err, MVM_EINVAL,
                      "the flake output packages.x86_64-linux.%s has neither rootfs.ext4 nor a rootfs/ "
                      "directory (see docs/flake-contract.md)", profile);
        return -1;
    }
    if (link(rootfs, raw) < 0) {
        mvm_error_sys(err, "link rootfs.raw");
        return -1;
    }
    struct mvm_manifest m = {.schema = 1};
    _cleanup_(arts_clear) struct arts A = {0};
    int fr = 0;
    /* kernel: the flake's, else the default image's */
    /* the builder carries the default image's kernel and initramfs (mvm_builder_ensure keeps
     * them identical), so they are taken from there */
    const char *kdir = exists(result, "vmlinux") || exists(result, "bzImage") ? result : J->builder->dir;
    if (exists(kdir, "vmlinux")) {
        _cleanup_free_ char *s = mvm_path_join(kdir, "vmlinux"), *d = mvm_path_join(img, "vmlinux");
        fr |= image_link_or_copy(s, d, 0644, err);
        fr |= fr ? 0 : add_art(&A, img, "kernel", "vmlinux", "elf-vmlinux", err);
    }
    const char *bz = kdir == result ? "bzImage" : "vmlinuz";
    if (!fr && exists(kdir, bz)) {
        _cleanup_free_ char *s = mvm_path_join(kdir, bz), *d = mvm_path_join(img, "vmlinuz");
        fr |= image_link_or_copy(s, d, 0644, err);
        fr |= fr ? 0 : add_art(&A, img, "kernel-bzimage", "vmlinuz", "bzimage", err);
    }
    /* always mvm's initramfs: mvm-init is what starts the agent */
    if (!fr) {
        _cleanup_free_ char *s = mvm_path_join(J->builder->dir, "initrd.img"), *d = mvm_path_join(img, "initrd.img");
        fr |= image_link_or_copy(s, d, 0644, err);
        fr |= fr ? 0 : add_art(&A, img, "initrd", "initrd.img", "cpio-newc", err);
    }
    if (!fr)
        fr |= add_art(&A, img, "rootfs", "rootfs.ext4", "ext4", err);
    if (fr)
        return -1;
    if (!mvm_manifest_find(&(struct mvm_manifest){.artifacts = A.a, .n_artifacts = A.n}, "kernel")) {
        mvm_error_set(err, MVM_EINVAL, "the flake supplies only a bzImage; mvm needs an ELF vmlinux "
                                       "for PVH boot");
        return -1;
    }
    _cleanup_free_ char *lock = mvm_path_join(absdir, "flake.lock");
    char lockhex[65] = "";
    if (lock && access(lock, F_OK) == 0 && image_sha256_file(lock, lockhex, NULL, err) < 0)
        return -1;
    m.name = (char *)tag;
    m.created = image_created_now();
    m.cmdline = (char *)cmdline;
    m.source_kind = "flake";
    m.source_ref = absdir;
    m.kernel_version = kdir == result ? "flake" : J->builder->manifest.kernel_version;
    m.artifacts = A.a;
    m.n_artifacts = A.n;
    m.source_lock_sha256 = lockhex[0] ? lockhex : NULL;
    m.source_profile = (char *)profile;
    m.source_nix_version = nixv;
    m.source_builder_digest = J->builder->digest;
    m.source_build_key = key;
    _cleanup_free_ char *digest = NULL;
    if (image_publish(img, &m, tag, &digest, err) < 0) {
        free(m.created);
        return -1;
    }
    free(m.created);
    mvm_write_file_atomic(keyfile, digest, strlen(digest), 0600, NULL);
    if (image_load_digest(cache, digest, out, err) < 0)
        return -1;
    progress(o, "build: image %s sha256:%.12s… (%.1f s)", tag, digest, ms_since(&t0) / 1000.0);
    return 0;
}

int mvm_flake_build(const struct mvm_flake_build_opts *o, mvm_image **out, mvm_error **err) {
    struct job j = {.o = o};
    int r = flake_build(&j, out, err);
    job_clear(&j);
    return r;
}
