/* Well-known directories and small file-system helpers. */
#include <stddef.h>

#include "mvm/paths.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "util.h"

int mvm_mkdir_p(const char *path, int mode, mvm_error **err) {
    if (!path || !*path)
        return mvm_error_set(err, EINVAL, "mkdir: empty path");
    _cleanup_free_ char *p = strdup(path);
    if (!p)
        return mvm_error_set(err, ENOMEM, "out of memory");
    size_t len = strlen(p);
    while (len > 1 && p[len - 1] == '/')
        p[--len] = '\0';
    for (char *s = p + 1;; s++) {
        bool last = (*s == '\0');
        if (*s != '/' && !last)
            continue;
        char saved = *s;
        *s = '\0';
        if (mkdir(p, (mode_t)mode) < 0) {
            struct stat st;
            if (errno != EEXIST)
                return mvm_error_sys(err, "cannot create directory %s", p);
            if (stat(p, &st) < 0)
                return mvm_error_sys(err, "cannot stat %s", p);
            if (!S_ISDIR(st.st_mode)) {
                errno = ENOTDIR;
                return mvm_error_sys(err, "cannot create directory %s", p);
            }
        }
        *s = saved;
        if (last)
            break;
    }
    return 0;
}

/* Removes everything inside the directory open as dfd (which is consumed). */
static int rm_rf_at(int dfd, const char *what, mvm_error **err) {
    DIR *d = fdopendir(dfd);
    if (!d) {
        close(dfd);
        return mvm_error_sys(err, "cannot read directory %s", what);
    }
    _cleanup_closedir_ DIR *dir = d;
    struct dirent *de;
    for (;;) {
        errno = 0;
        de = readdir(dir);
        if (!de) {
            if (errno)
                return mvm_error_sys(err, "cannot read directory %s", what);
            break;
        }
        if (!strcmp(de->d_name, ".") || !strcmp(de->d_name, ".."))
            continue;
        bool is_dir = de->d_type == DT_DIR;
        if (de->d_type == DT_UNKNOWN) {
            struct stat st;
            if (fstatat(dirfd(dir), de->d_name, &st, AT_SYMLINK_NOFOLLOW) < 0) {
                if (errno == ENOENT)
                    continue;
                return mvm_error_sys(err, "cannot stat %s/%s", what, de->d_name);
            }
            is_dir = S_ISDIR(st.st_mode);
        }
        if (is_dir) {
            int sub = openat(dirfd(dir), de->d_name,
                             O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
            if (sub < 0) {
                if (errno == ENOENT)
                    continue;
                /* a directory without read/search permission: grant it to ourselves */
                if (errno == EACCES &&
                    fchmodat(dirfd(dir), de->d_name, 0700, 0) == 0)
                    sub = openat(dirfd(dir), de->d_name,
                                 O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
                if (sub < 0)
                    return mvm_error_sys(err, "cannot open %s/%s", what, de->d_name);
            }
            /* we need write permission on it to unlink its entries */
            struct stat st;
            if (fstat(sub, &st) == 0 && (st.st_mode & 0700) != 0700)
                (void)fchmod(sub, st.st_mode | 0700);
            _cleanup_free_ char *sw = NULL;
            if (asprintf(&sw, "%s/%s", what, de->d_name) < 0) {
                close(sub);
                return mvm_error_set(err, ENOMEM, "out of memory");
            }
            if (rm_rf_at(sub, sw, err) < 0)
                return -1;
            if (unlinkat(dirfd(dir), de->d_name, AT_REMOVEDIR) < 0 && errno != ENOENT)
                return mvm_error_sys(err, "cannot remove %s", sw);
        } else if (unlinkat(dirfd(dir), de->d_name, 0) < 0 && errno != ENOENT) {
            return mvm_error_sys(err, "cannot remove %s/%s", what, de->d_name);
        }
    }
    return 0;
}

int mvm_rm_rf(const char *path, mvm_error **err) {
    struct stat st;
    if (lstat(path, &st) < 0) {
        if (errno == ENOENT)
            return 0;
        return mvm_error_sys(err, "cannot stat %s", path);
    }
    if (!S_ISDIR(st.st_mode)) {
        if (unlink(path) < 0 && errno != ENOENT)
            return mvm_error_sys(err, "cannot remove %s", path);
        return 0;
    }
    if ((st.st_mode & 0700) != 0700)
        (void)chmod(path, st.st_mode | 0700);
    int fd = open(path, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    if (fd < 0)
        return mvm_error_sys(err, "cannot open %s", path);
    if (rm_rf_at(fd, path, err) < 0)
        return -1;
    if (rmdir(path) < 0 && errno != ENOENT)
        return mvm_error_sys(err, "cannot remove %s", path);
    return 0;
}

static int write_all(int fd, const void *data, size_t len) {
    const char *p = data;
    while (len > 0) {
        ssize_t w = write(fd, p, len);
        if (w < 0) {
            if (errno == EINTR)
                continue;
            return -1;
        }
        p += w;
        len -= (size_t)w;
    }
    return 0;
}

int mvm_write_file_atomic(const char *path, const void *data, size_t len, int mode,
                          mvm_error **err) {
    _cleanup_free_ char *tmp = NULL;
    if (asprintf(&tmp, "%s.tmp.XXXXXX", path) < 0)
        return mvm_error_set(err, ENOMEM, "out of memory");
    _cleanup_close_ int fd = mkostemp(tmp, O_CLOEXEC);
    if (fd < 0)
        return mvm_error_sys(err, "cannot create %s", tmp);
    if (fchmod(fd, (mode_t)mode) < 0 || write_all(fd, data, len) < 0 || fsync(fd) < 0) {
        mvm_error_sys(err, "cannot write %s", tmp);
        unlink(tmp);
        return -1;
    }
    if (close(steal_fd(&fd)) < 0) {
        mvm_error_sys(err, "cannot write %s", tmp);
        unlink(tmp);
        return -1;
    }
    if (rename(tmp, path) < 0) {
        mvm_error_sys(err, "cannot rename %s to %s", tmp, path);
        unlink(tmp);
        return -1;
    }
    /* make the rename itself durable */
    _cleanup_free_ char *dir = strdup(path);
    if (dir) {
        char *slash = strrchr(dir, '/');
        if (slash == dir)
            slash[1] = '\0';
        else if (slash)
            *slash = '\0';
        else
            strcpy(dir, ".");
        _cleanup_close_ int dfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        if (dfd >= 0)
            (void)fsync(dfd);
    }
    return 0;
}

int mvm_read_file(const char *path, size_t max, char **out, size_t *len, mvm_error **err) {
    _cleanup_close_ int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return mvm_error_sys(err, "cannot open %s", path);
    struct stat st;
    if (fstat(fd, &st) < 0)
        return mvm_error_sys(err, "cannot stat %s", path);
    if (S_ISREG(st.st_mode) && (uint64_t)st.st_size > max)
        return mvm_error_set(err, EFBIG, "%s: file too large (%lld bytes, limit %zu)", path,
                             (long long)st.st_size, max);
    size_t cap = S_ISREG(st.st_mode) ? (size_t)st.st_size + 1 : 4096;
    _cleanup_free_ char *buf = malloc(cap);
    if (!buf)
        return mvm_error_set(err, ENOMEM, "out of memory");
    size_t n = 0;
    for (;;) {
        if (n + 1 >= cap) {
            if (cap > max + 1)
                return mvm_error_set(err, EFBIG, "%s: file too large (limit %zu)", path, max);
            size_t ncap = cap * 2;
            char *nb = realloc(buf, ncap);
            if (!nb)
                return mvm_error_set(err, ENOMEM, "out of memory");
            buf = nb;
            cap = ncap;
        }
        ssize_t r = read(fd, buf + n, cap - n - 1);
        if (r < 0) {
            if (errno == EINTR)
                continue;
            return mvm_error_sys(err, "cannot read %s", path);
        }
        if (r == 0)
            break;
        n += (size_t)r;
        if (n > max)
            return mvm_error_set(err, EFBIG, "%s: file too large (limit %zu)", path, max);
    }
    buf[n] = '\0';
    *out = steal_pointer(&buf);
    if (len)
        *len = n;
    return 0;
}

/* Creates dir (0700) and, when it sits in a shared location, makes sure it is ours. */
static char *finish_dir(char *path, bool check_owner, mvm_error **err) {
    if (!path) {
        mvm_error_set(err, ENOMEM, "out of memory");
        return NULL;
    }
    if (mvm_mkdir_p(path, 0700, err) < 0) {
        free(path);
        return NULL;
    }
    if (check_owner) {
        struct stat st;
        if (lstat(path, &st) < 0) {
            mvm_error_sys(err, "cannot stat %s", path);
            free(path);
            return NULL;
        }
        if (!S_ISDIR(st.st_mode) || st.st_uid != geteuid() || (st.st_mode & 0077)) {
            mvm_error_set(err, EPERM,
                          "%s is not a private directory owned by uid %u; remove it or set "
                          "MVM_RUNTIME_DIR",
                          path, (unsigned)geteuid());
            free(path);
            return NULL;
        }
    }
    return path;
}

static char *xdg_dir(const char *override, const char *xdg, const char *home_sub,
                     mvm_error **err) {
    const char *v = getenv(override);
    char *p = NULL;
    if (v && *v)
        return finish_dir(strdup(v), false, err);
    v = getenv(xdg);
    if (v && *v == '/') {
        if (asprintf(&p, "%s/mvm", v) < 0)
            p = NULL;
        return finish_dir(p, false, err);
    }
    const char *home = getenv("HOME");
    if (!home || *home != '/') {
        mvm_error_set(err, ENOENT, "cannot locate the %s directory: set $HOME or $%s",
                      home_sub, override);
        return NULL;
    }
    if (asprintf(&p, "%s/%s/mvm", home, home_sub) < 0)
        p = NULL;
    return finish_dir(p, false, err);
}

char *mvm_path_cache(mvm_error **err) {
    return xdg_dir("MVM_CACHE_DIR", "XDG_CACHE_HOME", ".cache", err);
}

char *mvm_path_data(mvm_error **err) {
    return xdg_dir("MVM_DATA_DIR", "XDG_DATA_HOME", ".local/share", err);
}

char *mvm_path_runtime(mvm_error **err) {
    const char *v = getenv("MVM_RUNTIME_DIR");
    char *p = NULL;
    if (v && *v)
        return finish_dir(strdup(v), false, err);
    v = getenv("XDG_RUNTIME_DIR");
    if (v && *v == '/') {
        if (asprintf(&p, "%s/mvm", v) < 0)
            p = NULL;
        return finish_dir(p, false, err);
    }
    if (geteuid() == 0)
        return finish_dir(strdup("/run/mvm"), false, err);
    if (asprintf(&p, "/tmp/mvm-%u", (unsigned)geteuid()) < 0)
        p = NULL;
    return finish_dir(p, true, err);
}

char *mvm_path_join(const char *a, const char *b) {
    char *p = NULL;
    return asprintf(&p, "%s/%s", a, b) < 0 ? NULL : p;
}
