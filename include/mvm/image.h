/*
 * Images: a directory in the content-addressed cache
 *   <cache>/images/<digest>/{vmlinux,vmlinuz,initrd.img,rootfs.ext4,rootfs.raw,manifest.json}
 *   <cache>/tags/<name>           file holding "<digest>\n" (written atomically)
 * <digest> is the lowercase hex SHA-256 of manifest.json's bytes. A finished image is built
 * in <cache>/tmp/ and renamed into place, then the tag is written: a half-built image is never
 * visible under a name.
 */
#ifndef MVM_IMAGE_H
#define MVM_IMAGE_H

#include <stddef.h>
#include <stdint.h>
#include <stdbool.h>
#include "mvm/error.h"

#define MVM_DIGEST_HEX 64

struct mvm_artifact {
    char *name;   /* role: "kernel", "kernel-bzimage", "initrd", "rootfs" */
    char *file;   /* file name inside the image dir, e.g. "vmlinux" */
    char *format; /* "elf-vmlinux", "bzimage", "cpio-newc", "ext4" */
    char *sha256; /* lowercase hex */
    uint64_t size;
};

/* A Debian package an image was assembled from (builder image provenance). */
struct mvm_package {
    char *name, *version, *sha256; /* sha256 of the .deb */
};

struct mvm_manifest {
    int schema;          /* 1 */
    char *name;          /* suggested tag, e.g. "default" */
    char *created;       /* RFC 3339 UTC */
    char *cmdline;       /* kernel command line (without backend-specific additions) */
    char *source_kind;   /* "recipe", "flake" or "builder" */
    char *source_ref;    /* recipe name, flake ref, or "nix-bin" for the builder */
    char *kernel_version;/* e.g. "6.1.0-57-cloud-amd64" (informational) */
    struct mvm_artifact *artifacts;
    size_t n_artifacts;
    /* Optional provenance (NULL / 0 when absent; serialised only when present). In JSON they
     * live inside the "source" object: lock_sha256, profile, nix_version, builder_digest,
     * build_key, packages [{name, version, sha256}]. */
    char *source_lock_sha256;   /* SHA-256 of flake.lock, if the flake has one */
    char *source_profile;       /* flake profile (packages.<system>.<profile>) */
    char *source_nix_version;   /* e.g. "nix (Nix) 2.8.0" */
    char *source_builder_digest;/* digest of the builder image that built it */
    char *source_build_key;     /* hash of all build inputs: equal key -> cache hit */
    struct mvm_package *packages;
    size_t n_packages;
};

void mvm_manifest_free(struct mvm_manifest *m);
/* Canonical JSON (jansson, keys sorted, 2-space indent, trailing newline). */
int mvm_manifest_to_json(const struct mvm_manifest *m, char **out, size_t *len, mvm_error **err);
/* Strict parse: unknown schema, missing fields, bad hex, path separators in "file" -> error. */
int mvm_manifest_from_json(const char *js, size_t len, struct mvm_manifest *out, mvm_error **err);
const struct mvm_artifact *mvm_manifest_find(const struct mvm_manifest *m, const char *name);

typedef struct mvm_image {
    char *digest;  /* 64 hex chars */
    char *dir;     /* absolute path of the image directory */
    struct mvm_manifest manifest;
} mvm_image;

void mvm_image_free(mvm_image *img);
static inline void mvm_image_freep(mvm_image **p) { if (*p) mvm_image_free(*p); }
/* Absolute path of the artifact with role `name` (malloc'd), or NULL if the image has none. */
char *mvm_image_artifact_path(const mvm_image *img, const char *name);

/* Image reference syntax: a tag ([a-zA-Z0-9][a-zA-Z0-9_.-]{0,63}), or "sha256:<hex>" /
 * a unique hex prefix of >= 12 chars. Returns 0 or -1 with MVM_EINVAL. */
int mvm_image_ref_validate(const char *ref, mvm_error **err);
/* Resolves ref in the cache; MVM_ENOTFOUND "unknown image 'x' (see mvmctl images; build the
 * default with mvmctl build)" if absent. Loads and parses the manifest. */
int mvm_image_resolve(const char *ref, mvm_image **out, mvm_error **err);
/* Hash-on-load: re-hashes every artifact, compares size and SHA-256 with the manifest and
 * checks the directory's digest. Mismatch -> MVM_EINTEGRITY "image <tag>: <file>: SHA-256
 * mismatch (expected ab12…, got cd34…); refusing to boot". */
int mvm_image_verify(const mvm_image *img, mvm_error **err);

struct mvm_image_info {
    char *tag;    /* may be NULL for untagged */
    char *digest;
    uint64_t size; /* sum of artifact sizes */
    char *created;
    char *source;  /* "recipe:default" or "flake:<ref>" */
};
int mvm_image_list(struct mvm_image_info **out, size_t *n, mvm_error **err);
void mvm_image_info_free(struct mvm_image_info *v, size_t n);
/* Removes the tag; removes the image dir when no tag references it any more. */
int mvm_image_remove(const char *ref, mvm_error **err);

/* Progress: one line per step ("kernel: downloading linux-image-... (26.7 MB)",
 * "rootfs: mke2fs -d (12 MiB)" ...). May be NULL. */
typedef void (*mvm_progress_fn)(void *ud, const char *fmt, ...);

struct mvm_build_opts {
    const char *tag;          /* default "default" */
    const char *guest_dir;    /* directory holding the built mvm-init and mvm-agent */
    mvm_progress_fn progress;
    void *progress_ud;
    bool force;               /* rebuild even if the tag exists */
};
/* Builds the built-in default recipe (Debian cloud kernel + busybox-static rootfs + agent)
 * and tags it. Idempotent: returns the existing image if the tag already resolves and
 * !force. Downloads go to <cache>/downloads/ and are reused. */
int mvm_image_build_default(const struct mvm_build_opts *o, mvm_image **out, mvm_error **err);

#endif
