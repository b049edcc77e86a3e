/* Deterministic cpio "newc" (070701) writer for the initramfs. */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "image-internal.h"
#include "util.h"

#define CPIO_HDR_LEN 110
#define CPIO_COPY_CHUNK (1024 * 1024)

struct out {
    int fd;
    uint64_t off;
};

static int out_write(struct out *o, const void *data, size_t len, mvm_error **err) {
    const char *p = data;
    while (len > 0) {
        ssize_t w = write(o->fd, p, len);
        if (w < 0 && errno == EINTR)
            continue;
        if (w < 0)
            return mvm_error_sys(err, "cannot write initramfs");
        p += w;
        len -= (size_t)w;
        o->off += (uint64_t)w;
    }
    return 0;
}

static int out_pad4(struct out *o, mvm_error **err) {
    static const char zero[4];
    size_t pad = (4 - (o->off & 3)) & 3;
    return pad ? out_write(o, zero, pad, err) : 0;
}

static int header(struct out *o, uint32_t ino, uint32_t mode, uint32_t nlink, uint32_t mtime,
                  uint64_t size, uint32_t rmaj, uint32_t rmin, const char *name,
                  mvm_error **err) {
    if (size > UINT32_MAX)
        return mvm_error_set(err, EFBIG, "initramfs: %s is too large for cpio newc", name);
    size_t namesize = strlen(name) + 1;
    char h[CPIO_HDR_LEN + 1];
    snprintf(h, sizeof(h),
             "070701%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X", ino, mode,
             0u /* uid */, 0u /* gid */, nlink, mtime, (uint32_t)size, 0u, 0u /* dev */, rmaj,
             rmin, (uint32_t)namesize, 0u /* check */);
    if (out_write(o, h, CPIO_HDR_LEN, err) < 0 || out_write(o, name, namesize, err) < 0)
        return -1;
    return out_pad4(o, err);
}

static int entry_cmp(const void *a, const void *b) {
    return strcmp(((const struct image_cpio_entry *)a)->name,
                  ((const struct image_cpio_entry *)b)->name);
}

static int copy_file(struct out *o, const struct image_cpio_entry *e, uint64_t size,
                     mvm_error **err) {
    _cleanup_close_ int fd = open(e->src_path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return mvm_error_sys(err, "initramfs: cannot open %s", e->src_path);
    _cleanup_free_ char *buf = malloc(CPIO_COPY_CHUNK);
    if (!buf)
        return mvm_error_set(err, ENOMEM, "out of memory");
    uint64_t left = size;
    while (left > 0) {
        size_t want = left < CPIO_COPY_CHUNK ? (size_t)left : CPIO_COPY_CHUNK;
        ssize_t r = read(fd, buf, want);
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0)
            return mvm_error_sys(err, "initramfs: cannot read %s", e->src_path);
        if (r == 0)
            return mvm_error_set(err, EIO, "initramfs: %s shrank while being archived",
                                 e->src_path);
        if (out_write(o, buf, (size_t)r, err) < 0)
            return -1;
        left -= (uint64_t)r;
    }
    return 0;
}

int image_cpio_write(int fd, struct image_cpio_entry *e, size_t n, uint32_t mtime,
                     mvm_error **err) {
    struct out o = {.fd = fd};
    if (n > 1)
        qsort(e, n, sizeof(*e), entry_cmp);
    for (size_t i = 0; i < n; i++) {
        const char *name = e[i].name;
        while (*name == '/')
            name++;
        if (!*name || strstr(name, "..") == name)
            return mvm_error_set(err, EINVAL, "initramfs: invalid entry name '%s'", e[i].name);
        if (i > 0 && !strcmp(e[i - 1].name, e[i].name))
            return mvm_error_set(err, EINVAL, "initramfs: duplicate entry '%s'", e[i].name);
        uint32_t ino = (uint32_t)(i + 1);
        uint32_t mode = (uint32_t)e[i].mode;
        uint64_t size = 0;
        switch (e[i].mode & S_IFMT) {
        case S_IFDIR:
            if (header(&o, ino, mode, 2, mtime, 0, 0, 0, name, err) < 0)
                return -1;
            break;
        case S_IFCHR:
        case S_IFBLK:
            if (header(&o, ino, mode, 1, mtime, 0, e[i].rmajor, e[i].rminor, name, err) < 0)
                return -1;
            break;
        case S_IFLNK:
        case S_IFREG:
            if (e[i].src_path) {
                struct stat st;
                if (stat(e[i].src_path, &st) < 0)
                    return mvm_error_sys(err, "initramfs: cannot stat %s", e[i].src_path);
                if (!S_ISREG(st.st_mode))
                    return mvm_error_set(err, EINVAL, "initramfs: %s is not a regular file",
                                         e[i].src_path);
                size = (uint64_t)st.st_size;
            } else {
                size = e[i].size;
            }
            if (header(&o, ino, mode, 1, mtime, size, 0, 0, name, err) < 0)
                return -1;
            if (e[i].src_path) {
                if (copy_file(&o, &e[i], size, err) < 0)
                    return -1;
            } else if (size && out_write(&o, e[i].data, size, err) < 0) {
                return -1;
            }
            if (out_pad4(&o, err) < 0)
                return -1;
            break;
        default:
            return mvm_error_set(err, EINVAL, "initramfs: unsupported file type for '%s'",
                                 e[i].name);
        }
    }
    return header(&o, 0, 0, 1, 0, 0, 0, 0, "TRAILER!!!", err);
}
