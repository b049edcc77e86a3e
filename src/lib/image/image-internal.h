/* Internal interfaces of the image subsystem (not part of the public API). */
#ifndef MVM_IMAGE_INTERNAL_H
#define MVM_IMAGE_INTERNAL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>
#include <time.h>

#include "mvm/error.h"
#include "mvm/image.h"
#include "proc.h"

#define IMAGE_MANIFEST_FILE "manifest.json"
#define IMAGE_MANIFEST_MAX (1024 * 1024)
#define IMAGE_TAG_MAX 64

/* ---- sha256.c ---- */
/* Streams a file through SHA-256; hex gets 64 lowercase chars + NUL. size_out may be NULL. */
int image_sha256_fd(int fd, char hex[MVM_DIGEST_HEX + 1], uint64_t *size_out, mvm_error **err);
int image_sha256_file(const char *path, char hex[MVM_DIGEST_HEX + 1], uint64_t *size_out,
                      mvm_error **err);
void image_sha256_buf(const void *data, size_t len, char hex[MVM_DIGEST_HEX + 1]);
bool image_is_hex(const char *s, size_t min, size_t max);


/* ---- manifest.c ---- */
int image_tag_validate(const char *tag, mvm_error **err);
bool image_file_name_ok(const char *file);
/* Fills art->sha256/size by hashing dir/file; name, file and format are copied. */
int image_artifact_fill(struct mvm_artifact *art, const char *dir, const char *name,
                        const char *file, const char *format, mvm_error **err);
/* RFC 3339 UTC of SOURCE_DATE_EPOCH when set, else now. */
char *image_created_now(void);

/* ---- cache.c ---- */
/* Creates <cache>/{images,tags,tmp,downloads}; returns the cache path. */
char *image_cache_prepare(mvm_error **err);
/* Writes manifest.json into build_dir, renames it to <cache>/images/<digest> (an existing
 * identical image wins and build_dir is removed) and points tag (may be NULL) at it. */
int image_publish(const char *build_dir, const struct mvm_manifest *m, const char *tag,
                  char **digest_out, mvm_error **err);
/* Creates a fresh private directory <cache>/tmp/<prefix>-XXXXXX (same filesystem as the
 * images, so a finished build is published by rename); returns its malloc'd path. */
char *image_tmpdir(const char *cache, const char *prefix, mvm_error **err);
/* Points tag at an existing image digest (atomically, under the cache lock). */
int image_tag_set(const char *tag, const char *digest, mvm_error **err);
/* Loads <cache>/images/<digest> (checks manifest bytes against the digest). */
int image_load_digest(const char *cache, const char *digest, mvm_image **out, mvm_error **err);
/* ---- kernel.c ---- */
/* "Field: value" from the first deb822 stanza of text (apt-cache show output); malloc'd or
 * NULL when absent. */
char *image_deb822_field(const char *text, const char *field);

/* ---- recipe_default.c ---- */
/* Where the guest binaries are when no directory is given: the build tree, else libexec. */
const char *image_guest_dir_default(void);

/* ---- load.c ---- */
/* Same without re-hashing the manifest, for a process that runs right after its caller
 * verified the image and must stay small (the per-VM monitor: no libcrypto). */
int image_load_unchecked(const char *cache, const char *digest, mvm_image **out, mvm_error **err);

/* ---- modules.c ---- */
struct image_module {
    const char *name;    /* module name as in .modinfo name= (either '-' or '_') */
    const char *depends; /* comma-separated, may be "" or NULL */
};
/* Normalised comparison: '-' and '_' are the same character. */
bool image_modname_eq(const char *a, const char *b);
/* Topological load order (dependencies first) of the wanted modules and everything they
 * need. order gets indexes into mods (malloc'd). Error on a missing module or a cycle. */
int image_modules_order(const struct image_module *mods, size_t n, const char *const *wanted,
                        size_t n_wanted, size_t **order, size_t *n_order, mvm_error **err);
/* Extracts the .modinfo "depends=" value from .ko bytes; returns malloc'd string ("" when
 * the module has no dependencies) or NULL when no depends entry exists. Same for name=. */
char *image_modinfo_get(const void *ko, size_t len, const char *key);

/* ---- initramfs.c: cpio newc writer ---- */
struct image_cpio_entry {
    const char *name;     /* path inside the archive, without leading '/' */
    mode_t mode;          /* including S_IFMT bits: S_IFREG, S_IFDIR, S_IFLNK, S_IFCHR */
    const void *data;     /* regular file contents or symlink target, or NULL ... */
    size_t size;          /* ... with size bytes */
    const char *src_path; /* ... or a host file to copy (regular files) */
    unsigned rmajor, rminor; /* device numbers for S_IFCHR / S_IFBLK */
};
/* Writes a deterministic archive: entries sorted by name, inode numbers sequential from 1,
 * uid/gid 0, the given mtime, followed by TRAILER!!!. The entries array is sorted in place. */
int image_cpio_write(int fd, struct image_cpio_entry *e, size_t n, uint32_t mtime,
                     mvm_error **err);

/* ---- kernel.c ---- */
struct image_progress {
    mvm_progress_fn fn;
    void *ud;
};
#define PROGRESS(p, ...)                                                                   \
    do {                                                                                   \
        const struct image_progress *p_ = (p);                                             \
        if (p_ && p_->fn)                                                                  \
            p_->fn(p_->ud, __VA_ARGS__);                                                   \
    } while (0)

struct image_kernel {
    char *version;   /* "6.1.0-57-cloud-amd64" */
    char *package;   /* "linux-image-6.1.0-57-cloud-amd64" */
    char *pkg_version;
    char *deb_sha256;
    char *tree;      /* directory the package was (partly) extracted into */
};
void image_kernel_clear(struct image_kernel *k);
/* Finds (cache or apt) the Debian cloud kernel package, verifies it and extracts the kernel
 * and the module directories into work/kernel. */
int image_kernel_fetch(const char *cache, const char *work, const struct image_progress *p,
                       struct image_kernel *k, mvm_error **err);
/* Writes the ELF vmlinux held in a bzImage (LZ4 payload) to out_path. */
int image_kernel_extract_vmlinux(const char *bzimage, const char *out_path, mvm_error **err);
/* Locates the wanted modules and their dependencies in the extracted tree; returns host
 * paths in load order (NULL-terminated strv). */
int image_kernel_modules(const struct image_kernel *k, const char *const *wanted,
                         size_t n_wanted, char ***paths, mvm_error **err);

/* ---- ext4.c ---- */
/* Builds an ext4 image from a staging directory with mke2fs -d (deterministic settings). */
int image_ext4_from_dir(const char *staging, const char *out, const char *label,
                        uint64_t *size_out, mvm_error **err);
/* Sets atime/mtime of the whole tree to the epoch (symlinks included, not followed). */
int image_tree_fix_times(const char *dir, time_t t, mvm_error **err);

/* ---- small helpers (cache.c) ---- */
int image_copy_file(const char *src, const char *dst, int mode, mvm_error **err);
/* A hard link when src and dst share a filesystem (images are immutable), else a copy. */
int image_link_or_copy(const char *src, const char *dst, int mode, mvm_error **err);
int image_write_string(const char *path, const char *s, int mode, mvm_error **err);
uint32_t image_source_date_epoch(void);
void image_strv_free(char **v);

#endif
