/* The built-in default image: Debian cloud kernel + our initramfs + busybox-static root. */
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

#define DEFAULT_CMDLINE "console=ttyS0 quiet panic=-1 mvm.root=/dev/vda"

static const char *const wanted_modules[] = {
    "virtio_mmio", "virtio_blk", "virtio_console", "vmw_vsock_virtio_transport", "virtio_net",
    "dm_verity",
};


#define JOIN_OR_FAIL(var, a, b)                                                            \
    do {                                                                                   \
        if (!((var) = mvm_path_join((a), (b))))                                                \
            return mvm_error_set(err, ENOMEM, "out of memory");                            \
    } while (0)

const char *image_guest_dir_default(void) {
#ifdef MVM_GUEST_DIR_BUILD
    if (access(MVM_GUEST_DIR_BUILD "/mvm-init", F_OK) == 0)
        return MVM_GUEST_DIR_BUILD;
#endif
#ifdef MVM_GUEST_DIR_INSTALL
    return MVM_GUEST_DIR_INSTALL;
#else
    return NULL;
#endif
}

static int need_file(const char *dir, const char *name, char **out, mvm_error **err) {
    JOIN_OR_FAIL(*out, dir, name);
    struct stat st;
    if (stat(*out, &st) < 0 || !S_ISREG(st.st_mode))
        return mvm_error_set(err, MVM_ENOTFOUND, "guest binary %s is missing (build mvm first)",
                             *out);
    return 0;
}

/* true if the ELF file has no program interpreter (i.e. is statically linked) */
static int elf_is_static(const char *path, bool *is_static, mvm_error **err) {
    _cleanup_close_ int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return mvm_error_sys(err, "cannot open %s", path);
    unsigned char eh[64];
    if (pread(fd, eh, sizeof(eh), 0) != (ssize_t)sizeof(eh) || memcmp(eh, "\x7f" "ELF", 4) ||
        eh[4] != 2 || eh[5] != 1)
        return mvm_error_set(err, EINVAL, "%s is not a 64-bit little-endian ELF file", path);
    uint64_t phoff;
    uint16_t phentsize, phnum;
    memcpy(&phoff, eh + 32, 8);
    memcpy(&phentsize, eh + 54, 2);
    memcpy(&phnum, eh + 56, 2);
    *is_static = true;
    for (uint16_t i = 0; i < phnum; i++) {
        uint32_t type;
        if (pread(fd, &type, 4, (off_t)(phoff + (uint64_t)i * phentsize)) != 4)
            return mvm_error_set(err, EINVAL, "%s: truncated program headers", path);
        if (type == 3 /* PT_INTERP */)
            *is_static = false;
    }
    return 0;
}

static int find_busybox(char **out, mvm_error **err) {
    static const char *const cands[] = {"/usr/bin/busybox", "/bin/busybox"};
    for (size_t i = 0; i < ARRAY_SIZE(cands); i++) {
        if (access(cands[i], X_OK) < 0)
            continue;
        bool st = false;
        if (elf_is_static(cands[i], &st, err) < 0)
            return -1;
        if (!st)
            return mvm_error_set(err, MVM_EUNAVAIL,
                                 "%s is dynamically linked; the default image needs "
                                 "busybox-static (apt-get install busybox-static)",
                                 cands[i]);
        *out = strdup(cands[i]);
        return *out ? 0 : mvm_error_set(err, ENOMEM, "out of memory");
    }
    return mvm_error_set(err, MVM_EUNAVAIL,
                         "busybox not found; the default image needs busybox-static "
                         "(apt-get install busybox-static)");
}

static int mkdirs(const char *root, const char *const *dirs, size_t n, int mode,
                  mvm_error **err) {
    for (size_t i = 0; i < n; i++) {
        _cleanup_free_ char *p = NULL;
        JOIN_OR_FAIL(p, root, dirs[i]);
        if (mvm_mkdir_p(p, 0755, err) < 0 || chmod(p, (mode_t)mode) < 0)
            return err && *err ? -1 : mvm_error_sys(err, "cannot chmod %s", p);
    }
    return 0;
}

static bool applet_path_ok(const char *s) {
    if (!*s || *s == '/' || strstr(s, ".."))
        return false;
    for (; *s; s++)
        if (!((*s >= 'a' && *s <= 'z') || (*s >= 'A' && *s <= 'Z') || (*s >= '0' && *s <= '9') ||
              *s == '/' || *s == '.' || *s == '_' || *s == '-' || *s == '['))
            return false;
    return true;
}

static int stage_rootfs(const char *root, const char *busybox, const char *agent,
                        size_t *n_applets, mvm_error **err) {
    static const char *const dirs[] = {"bin", "sbin", "usr/bin", "usr/sbin", "proc", "sys",
                                       "dev", "run", "etc", "var", "home", "lib"};
    if (mkdirs(root, dirs, ARRAY_SIZE(dirs), 0755, err) < 0)
        return -1;
    static const char *const tmp[] = {"tmp"};
    static const char *const rootdir[] = {"root"};
    if (mkdirs(root, tmp, 1, 01777, err) < 0 || mkdirs(root, rootdir, 1, 0700, err) < 0)
        return -1;
    _cleanup_free_ char *bb = NULL, *ag = NULL;
    JOIN_OR_FAIL(bb, root, "bin/busybox");
    JOIN_OR_FAIL(ag, root, "sbin/mvm-agent");
    if (image_copy_file(busybox, bb, 0755, err) < 0 || image_copy_file(agent, ag, 0755, err) < 0)
        return -1;

    /* one symlink per applet, where busybox itself says it lives */
    const char *argv[] = {busybox, "--list-full", NULL};
    struct mvm_cmd c = {.argv = argv, .in_fd = -1, .out_fd = -1};
    if (mvm_cmd_run(&c, err) < 0) {
        mvm_cmd_clear(&c);
        return mvm_error_wrap(err, "rootfs");
    }
    size_t count = 0;
    int rc = 0;
    for (char *save = NULL, *line = strtok_r(c.out, "\n", &save); line && rc == 0;
         line = strtok_r(NULL, "\n", &save)) {
        if (!applet_path_ok(line) || !strcmp(line, "bin/busybox"))
            continue;
        _cleanup_free_ char *p = mvm_path_join(root, line);
        if (!p) {
            rc = mvm_error_set(err, ENOMEM, "out of memory");
            break;
        }
        char *slash = strrchr(p, '/');
        *slash = '\0';
        if (mvm_mkdir_p(p, 0755, err) < 0) {
            rc = -1;
            break;
        }
        *slash = '/';
        if (symlink("/bin/busybox", p) < 0) {
            if (errno == EEXIST)
                continue;
            rc = mvm_error_sys(err, "cannot create %s", p);
            break;
        }
        count++;
    }
    mvm_cmd_clear(&c);
    if (rc < 0)
        return -1;
    *n_applets = count;

    static const struct {
        const char *path, *text;
        int mode;
    } files[] = {
        {"etc/passwd", "root:x:0:0:root:/root:/bin/sh\n", 0644},
        {"etc/group", "root:x:0:\n", 0644},
        {"etc/shadow", "root:*:0:0:99999:7:::\n", 0600},
        {"etc/hostname", "mvm\n", 0644},
        {"etc/hosts", "127.0.0.1 localhost\n127.0.1.1 mvm\n::1 localhost\n", 0644},
        {"etc/os-release",
         "NAME=mvm\nID=mvm\nPRETTY_NAME=\"mvm default image\"\nVARIANT_ID=default\n", 0644},
        {"etc/profile", "export PATH=/usr/sbin:/usr/bin:/sbin:/bin\nexport HOME=/root\n", 0644},
    };
    for (size_t i = 0; i < ARRAY_SIZE(files); i++) {
        _cleanup_free_ char *p = NULL;
        JOIN_OR_FAIL(p, root, files[i].path);
        if (image_write_string(p, files[i].text, files[i].mode, err) < 0)
            return -1;
    }
    return 0;
}

static int build_initramfs(const char *out, const char *init, char **modules,
                           mvm_error **err) {
    size_t n_mod = 0;
    while (modules[n_mod])
        n_mod++;
    static const char *const dirs[] = {"dev", "proc", "sys", "newroot", "lib", "lib/modules"};
    size_t n = ARRAY_SIZE(dirs) + 3 + n_mod;
    _cleanup_free_ struct image_cpio_entry *e = calloc(n, sizeof(*e));
    _cleanup_free_ char *order = NULL;
    size_t order_len = 0;
    FILE *mf = open_memstream(&order, &order_len);
    char **names = calloc(n_mod + 1, sizeof(char *));
    int rc = -1;
    if (!e || !mf || !names) {
        mvm_error_set(err, ENOMEM, "out of memory");
        goto out;
    }
    size_t k = 0;
    for (size_t i = 0; i < ARRAY_SIZE(dirs); i++)
        e[k++] = (struct image_cpio_entry){.name = dirs[i], .mode = S_IFDIR | 0755};
    e[k++] = (struct image_cpio_entry){
        .name = "dev/console", .mode = S_IFCHR | 0600, .rmajor = 5, .rminor = 1};
    e[k++] = (struct image_cpio_entry){.name = "init", .mode = S_IFREG | 0755, .src_path = init};
    for (size_t i = 0; i < n_mod; i++) {
        const char *base = strrchr(modules[i], '/');
        base = base ? base + 1 : modules[i];
        if (asprintf(&names[i], "lib/modules/%s", base) < 0) {
            names[i] = NULL;
            mvm_error_set(err, ENOMEM, "out of memory");
            goto out;
        }
        e[k++] = (struct image_cpio_entry){
            .name = names[i], .mode = S_IFREG | 0644, .src_path = modules[i]};
        fprintf(mf, "%s\n", base);
    }
    if (fclose(mf) != 0) {
        mf = NULL;
        mvm_error_set(err, ENOMEM, "out of memory");
        goto out;
    }
    mf = NULL;
    e[k++] = (struct image_cpio_entry){.name = "lib/modules/load.order",
                                       .mode = S_IFREG | 0644,
                                       .data = order,
                                       .size = order_len};
    {
        _cleanup_close_ int fd =
            open(out, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW, 0644);
        if (fd < 0) {
            mvm_error_sys(err, "cannot create %s", out);
            goto out;
        }
        if (image_cpio_write(fd, e, k, image_source_date_epoch(), err) < 0)
            goto out;
        if (fsync(fd) < 0) {
            mvm_error_sys(err, "cannot write %s", out);
            goto out;
        }
    }
    rc = 0;
out:
    if (mf)
        fclose(mf);
    if (names)
        for (size_t i = 0; i < n_mod; i++)
            free(names[i]);
    free(names);
    return rc;
}

static void manifest_clear(struct mvm_manifest *m) { mvm_manifest_free(m); }

static int build(const struct mvm_build_opts *o, const char *tag, const char *guest,
                 const char *key, const char *cache, const char *bdir,
                 const struct image_progress *pr, mvm_image **out, mvm_error **err) {
    _cleanup_free_ char *img = NULL, *work = NULL, *init = NULL, *agent = NULL, *busybox = NULL;
    (void)o;
    JOIN_OR_FAIL(img, bdir, "img");
    JOIN_OR_FAIL(work, bdir, "work");
    if (mvm_mkdir_p(img, 0755, err) < 0 || mvm_mkdir_p(work, 0700, err) < 0)
        return -1;
    if (need_file(guest, "mvm-init", &init, err) < 0 ||
        need_file(guest, "mvm-agent", &agent, err) < 0 || find_busybox(&busybox, err) < 0)
        return -1;

    /* 1. kernel */
    struct image_kernel k;
    if (image_kernel_fetch(cache, work, pr, &k, err) < 0)
        return -1;
    int rc = -1;
    char **modules = NULL;
    struct mvm_manifest m = {0};
    _cleanup_free_ char *vmlinuz_src = NULL, *vmlinuz = NULL, *vmlinux = NULL, *initrd = NULL,
                        *staging = NULL, *rootfs = NULL, *raw = NULL, *digest = NULL;
    if (asprintf(&vmlinuz_src, "%s/boot/vmlinuz-%s", k.tree, k.version) < 0 ||
        !(vmlinuz = mvm_path_join(img, "vmlinuz")) || !(vmlinux = mvm_path_join(img, "vmlinux")) ||
        !(initrd = mvm_path_join(img, "initrd.img")) || !(staging = mvm_path_join(work, "root")) ||
        !(rootfs = mvm_path_join(img, "rootfs.ext4")) || !(raw = mvm_path_join(img, "rootfs.raw"))) {
        mvm_error_set(err, ENOMEM, "out of memory");
        goto out;
    }
    if (image_copy_file(vmlinuz_src, vmlinuz, 0644, err) < 0)
        goto out;
    if (image_kernel_extract_vmlinux(vmlinuz, vmlinux, err) < 0)
        goto out;
    struct stat st;
    if (stat(vmlinux, &st) == 0)
        PROGRESS(pr, "kernel: extracted vmlinux %s (%.1f MB)", k.version, st.st_size / 1e6);

    /* 2. modules + 3. initramfs */
    if (image_kernel_modules(&k, wanted_modules, ARRAY_SIZE(wanted_modules), &modules, err) < 0)
        goto out;
    size_t n_mod = 0;
    while (modules[n_mod])
        n_mod++;
    if (build_initramfs(initrd, init, modules, err) < 0)
        goto out;
    if (stat(initrd, &st) == 0)
        PROGRESS(pr, "initramfs: %zu modules, mvm-init (%.1f MB)", n_mod, st.st_size / 1e6);

    /* 4. root filesystem */
    size_t n_applets = 0;
    uint64_t fs_size = 0;
    if (mvm_mkdir_p(staging, 0755, err) < 0 ||
        stage_rootfs(staging, busybox, agent, &n_applets, err) < 0 ||
        image_tree_fix_times(staging, (time_t)image_source_date_epoch(), err) < 0)
        goto out;
    if (image_ext4_from_dir(staging, rootfs, "mvm-root", &fs_size, err) < 0)
        goto out;
    PROGRESS(pr, "rootfs: mke2fs -d (%llu MiB, busybox + %zu applets, mvm-agent)",
             (unsigned long long)(fs_size >> 20), n_applets);
    if (link(rootfs, raw) < 0) {
        mvm_error_sys(err, "cannot link %s", raw);
        goto out;
    }

    /* 5. manifest */
    static const struct {
        const char *name, *file, *format;
    } arts[] = {
        {"kernel", "vmlinux", "elf-vmlinux"},
        {"kernel-bzimage", "vmlinuz", "bzimage"},
        {"initrd", "initrd.img", "cpio-newc"},
        {"rootfs", "rootfs.ext4", "ext4"},
    };
    m.schema = 1;
    m.name = strdup(tag);
    m.created = image_created_now();
    m.cmdline = strdup(DEFAULT_CMDLINE);
    m.source_kind = strdup("recipe");
    m.source_ref = strdup("default");
    m.kernel_version = strdup(k.version);
    m.source_build_key = strdup(key);
    m.artifacts = calloc(ARRAY_SIZE(arts), sizeof(*m.artifacts));
    if (!m.name || !m.created || !m.cmdline || !m.source_kind || !m.source_ref ||
        !m.kernel_version || !m.source_build_key || !m.artifacts) {
        mvm_error_set(err, ENOMEM, "out of memory");
        goto out;
    }
    uint64_t total = 0;
    for (size_t i = 0; i < ARRAY_SIZE(arts); i++) {
        _cleanup_free_ char *p = mvm_path_join(img, arts[i].file);
        if (!p || chmod(p, 0444) < 0) {
            mvm_error_sys(err, "cannot chmod %s", p ? p : arts[i].file);
            goto out;
        }
        if (image_artifact_fill(&m.artifacts[i], img, arts[i].name, arts[i].file,
                                arts[i].format, err) < 0)
            goto out;
        m.n_artifacts = i + 1;
        total += m.artifacts[i].size;
    }
    if (image_publish(img, &m, tag, &digest, err) < 0)
        goto out;
    if (image_load_digest(cache, digest, out, err) < 0)
        goto out;
    PROGRESS(pr, "image %s: sha256:%.12s… (%llu MiB)", tag, digest,
             (unsigned long long)((total + (1 << 19)) >> 20));
    rc = 0;
out:
    manifest_clear(&m);
    image_strv_free(modules);
    image_kernel_clear(&k);
    return rc;
}

/* What a default image depends on besides the kernel package: the recipe's revision and the
 * guest binaries baked into it. A cached image with another key is stale (mvm was upgraded
 * or rebuilt) and is built again; kernel updates need --force. */
#define DEFAULT_RECIPE_REV "default-recipe-3"
static int recipe_key(const char *guest, char key[MVM_DIGEST_HEX + 1], mvm_error **err) {
    char init_sha[MVM_DIGEST_HEX + 1], agent_sha[MVM_DIGEST_HEX + 1];
    _cleanup_free_ char *init = NULL, *agent = NULL;
    if (need_file(guest, "mvm-init", &init, err) < 0 || need_file(guest, "mvm-agent", &agent, err) < 0 ||
        image_sha256_file(init, init_sha, NULL, err) < 0 ||
        image_sha256_file(agent, agent_sha, NULL, err) < 0)
        return -1;
    char buf[256];
    int n = snprintf(buf, sizeof(buf), "%s\ninit=%s\nagent=%s\n", DEFAULT_RECIPE_REV, init_sha,
                     agent_sha);
    image_sha256_buf(buf, (size_t)n, key);
    return 0;
}

int mvm_image_build_default(const struct mvm_build_opts *o, mvm_image **out, mvm_error **err) {
    const char *tag = o && o->tag ? o->tag : "default";
    if (image_tag_validate(tag, err) < 0)
        return -1;
    const char *guest = o && o->guest_dir ? o->guest_dir : image_guest_dir_default();
    if (!guest)
        return mvm_error_set(err, EINVAL, "no guest directory (mvm-init, mvm-agent) given");
    struct image_progress pr = {.fn = o ? o->progress : NULL, .ud = o ? o->progress_ud : NULL};
    char key[MVM_DIGEST_HEX + 1];
    if (recipe_key(guest, key, err) < 0)
        return -1;
    if (!(o && o->force)) {
        mvm_error *e = NULL;
        if (mvm_image_resolve(tag, out, &e) == 0) {
            const char *have = (*out)->manifest.source_build_key;
            if (have && !strcmp(have, key)) {
                PROGRESS(&pr, "image %s: sha256:%.12s… (cached; use --force to rebuild)", tag,
                         (*out)->digest);
                return 0;
            }
            PROGRESS(&pr, "image %s: built from other guest binaries; rebuilding", tag);
            mvm_image_free(*out);
            *out = NULL;
        }
        mvm_error_free(e);
    }
    _cleanup_free_ char *cache = image_cache_prepare(err);
    if (!cache)
        return -1;
    _cleanup_free_ char *bdir = image_tmpdir(cache, "build", err);
    if (!bdir)
        return -1;
    int rc = build(o, tag, guest, key, cache, bdir, &pr, out, err);
    mvm_error *e = NULL;
    if (mvm_rm_rf(bdir, &e) < 0 && rc == 0)
        PROGRESS(&pr, "warning: %s", e->msg);
    mvm_error_free(e);
    if (rc < 0)
        return mvm_error_wrap(err, "build %s", tag);
    return 0;
}
