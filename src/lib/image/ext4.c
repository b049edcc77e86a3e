/* ext4 root filesystems from a staging directory (e2fsprogs' mke2fs -d, no root needed). */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "image-internal.h"
#include "util.h"

/* Fixed identity so that the same tree always gives the same bytes. */
#define EXT4_FIXED_UUID "6d766d2d-726f-4f74-8066-730000000001"
#define MIB (1024ull * 1024ull)

/* Post-order walk: sums allocated bytes and (optionally) resets timestamps. */
static int walk(const char *path, bool set_times, time_t t, uint64_t *bytes, uint64_t *inodes,
                mvm_error **err) {
    _cleanup_closedir_ DIR *d = opendir(path);
    if (!d)
        return mvm_error_sys(err, "cannot read %s", path);
    struct dirent *de;
    while ((de = readdir(d))) {
        if (!strcmp(de->d_name, ".") || !strcmp(de->d_name, ".."))
            continue;
        _cleanup_free_ char *p = NULL;
        if (asprintf(&p, "%s/%s", path, de->d_name) < 0)
            return mvm_error_set(err, ENOMEM, "out of memory");
        struct stat st;
        if (lstat(p, &st) < 0)
            return mvm_error_sys(err, "cannot stat %s", p);
        if (S_ISDIR(st.st_mode) && walk(p, set_times, t, bytes, inodes, err) < 0)
            return -1;
        if (bytes)
            *bytes += ((uint64_t)st.st_size + 4095) & ~4095ull;
        if (inodes)
            (*inodes)++;
        if (set_times) {
            struct timespec ts[2] = {{.tv_sec = t}, {.tv_sec = t}};
            if (utimensat(AT_FDCWD, p, ts, AT_SYMLINK_NOFOLLOW) < 0)
                return mvm_error_sys(err, "cannot set times of %s", p);
        }
    }
    return 0;
}

int image_tree_fix_times(const char *dir, time_t t, mvm_error **err) {
    if (walk(dir, true, t, NULL, NULL, err) < 0)
        return -1;
    struct timespec ts[2] = {{.tv_sec = t}, {.tv_sec = t}};
    if (utimensat(AT_FDCWD, dir, ts, 0) < 0)
        return mvm_error_sys(err, "cannot set times of %s", dir);
    return 0;
}

/* Appends debugfs commands that give every inode below dir owner 0:0 and a fixed ctime
 * (mke2fs -d copies the staging files' ctime and ownership, neither of which a build can
 * control on the host). */
static int fixup_cmds(FILE *f, const char *root, const char *rel, uint32_t t, uint32_t mtime,
                      mvm_error **err) {
    _cleanup_free_ char *path = NULL;
    if (asprintf(&path, "%s%s", root, rel) < 0)
        return mvm_error_set(err, ENOMEM, "out of memory");
    _cleanup_closedir_ DIR *d = opendir(path);
    if (!d)
        return mvm_error_sys(err, "cannot read %s", path);
    struct dirent *de;
    while ((de = readdir(d))) {
        if (!strcmp(de->d_name, ".") || !strcmp(de->d_name, ".."))
            continue;
        for (const char *c = de->d_name; *c; c++)
            if (*c <= ' ' || *c == '"' || *c == '\\' || *c == 0x7f)
                return mvm_error_set(err, EINVAL, "rootfs: unsupported file name '%s%s/%s'",
                                     root, rel, de->d_name);
        _cleanup_free_ char *sub = NULL;
        if (asprintf(&sub, "%s/%s", rel, de->d_name) < 0)
            return mvm_error_set(err, ENOMEM, "out of memory");
        /* atime too: reading the staging tree moves the directories' atime */
        fprintf(f, "sif %s uid 0\nsif %s gid 0\nsif %s ctime %u\nsif %s atime %u\n"
                   "sif %s mtime %u\n",
                sub, sub, sub, t, sub, mtime, sub, mtime);
        if (de->d_type == DT_DIR && fixup_cmds(f, root, sub, t, mtime, err) < 0)
            return -1;
    }
    return 0;
}

static int ext4_fixup(const char *staging, const char *out, const char *const *env,
                      uint32_t t, uint32_t mtime, mvm_error **err) {
    _cleanup_close_ int fd = memfd_create("mvm-debugfs", MFD_CLOEXEC);
    if (fd < 0)
        return mvm_error_sys(err, "memfd_create");
    int fd2 = dup(fd);
    FILE *f = fd2 >= 0 ? fdopen(fd2, "w") : NULL;
    if (!f) {
        if (fd2 >= 0)
            close(fd2);
        return mvm_error_sys(err, "fdopen");
    }
    int r = fixup_cmds(f, staging, "", t, mtime, err);
    if (fclose(f) != 0 && r == 0)
        r = mvm_error_sys(err, "cannot write debugfs commands");
    if (r < 0)
        return -1;
    if (lseek(fd, 0, SEEK_SET) < 0)
        return mvm_error_sys(err, "lseek");
    const char *argv[] = {"debugfs", "-w", "-f", "-", out, NULL};
    struct mvm_cmd c = {.argv = argv, .env = env, .in_fd = fd, .out_fd = -1};
    r = mvm_cmd_run(&c, err);
    /* debugfs exits 0 even when a command fails; errors follow its version banner */
    if (r == 0 && c.err_tail && strncmp(c.err_tail, "debugfs ", 8))
        r = mvm_error_set(err, EIO, "debugfs: %s", c.err_tail);
    mvm_cmd_clear(&c);
    return r < 0 ? mvm_error_wrap(err, "rootfs: fixing inode metadata") : 0;
}

int image_ext4_from_dir(const char *staging, const char *out, const char *label,
                        uint64_t *size_out, mvm_error **err) {
    uint64_t bytes = 0, inodes = 0;
    if (walk(staging, false, 0, &bytes, &inodes, err) < 0)
        return -1;
    /* room for metadata (256-byte inodes, directories) and for the guest to write */
    uint64_t content = bytes + inodes * 256;
    uint64_t size = 2 * content;
    if (size < 64 * MIB)
        size = 64 * MIB;
    size = (size + MIB - 1) / MIB * MIB;

    /* a fresh sparse file of the exact size */
    {
        _cleanup_close_ int fd =
            open(out, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW, 0644);
        if (fd < 0)
            return mvm_error_sys(err, "cannot create %s", out);
        if (ftruncate(fd, (off_t)size) < 0)
            return mvm_error_sys(err, "cannot size %s", out);
    }
    uint32_t epoch = image_source_date_epoch();
    char fake[64], sde[64], size_k[32];
    /* libext2fs ignores E2FSPROGS_FAKE_TIME=0, so the earliest usable instant is 1 */
    snprintf(fake, sizeof(fake), "E2FSPROGS_FAKE_TIME=%u", epoch ? epoch : 1);
    snprintf(sde, sizeof(sde), "SOURCE_DATE_EPOCH=%u", epoch ? epoch : 1);
    snprintf(size_k, sizeof(size_k), "%lluk", (unsigned long long)(size / 1024));
    const char *env[] = {fake, sde, "MKE2FS_SYNC=0", "LC_ALL=C", NULL};
    const char *argv[] = {"mke2fs", "-q", "-t", "ext4", "-F", "-L", label,
                          "-U", EXT4_FIXED_UUID,
                          "-E", "root_owner=0:0,hash_seed=" EXT4_FIXED_UUID,
                          "-d", staging, out, size_k, NULL};
    struct mvm_cmd c = {.argv = argv, .env = env, .in_fd = -1, .out_fd = -1};
    int r = mvm_cmd_run(&c, err);
    mvm_cmd_clear(&c);
    if (r < 0) {
        if (err && *err && (*err)->code == MVM_EUNAVAIL)
            return mvm_error_wrap(err, "mke2fs (install e2fsprogs)");
        return mvm_error_wrap(err, "rootfs");
    }
    if (ext4_fixup(staging, out, env, epoch ? epoch : 1, epoch, err) < 0)
        return -1;
    if (size_out)
        *size_out = size;
    return 0;
}
