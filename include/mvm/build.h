/*
 * Building images from Nix flakes without Nix on the host: a builder microVM (an mvm image
 * holding Nix, assembled from Debian's nix-bin and its dependencies) runs `nix build` over
 * block devices only:
 *   /dev/disk labelled mvm-root   builder rootfs (immutable base, per-VM overlay)
 *   label mvm-store               persistent Nix store cache, mounted at /nix (read-write)
 *   label mvm-src                 the staged flake source (read-only ext4)
 *   label mvm-out                 output disk the builder fills; the host reads it back with
 *                                 e2fsprogs' debugfs (no loop mounts)
 */
#ifndef MVM_BUILD_H
#define MVM_BUILD_H

#include <stdbool.h>
#include "mvm/error.h"
#include "mvm/image.h"

#define MVM_BUILDER_TAG "mvm-builder"

/* Returns the cached builder image, bootstrapping it (downloads, unpack, mke2fs) when absent
 * or when force. Progress lines through o->progress. */
int mvm_builder_ensure(const struct mvm_build_opts *o, mvm_image **out, mvm_error **err);
/* Removes the builder image and its store cache disk. */
int mvm_builder_remove(mvm_error **err);
/* Path of the persistent store cache disk (malloc'd); created on first use. */
char *mvm_builder_store_path(mvm_error **err);

struct mvm_flake_build_opts {
    const char *flake_dir;   /* local directory holding flake.nix */
    const char *profile;     /* default "default" */
    const char *tag;         /* default: the flake directory's base name */
    bool online;             /* allow network inside the builder */
    bool force;              /* ignore the build-key cache */
    bool nix_rebuild;        /* nix build --rebuild: rebuild and fail if the output differs */
    int timeout_s;           /* whole build, default 1800 */
    const char *guest_dir;
    const char *monitor_exe; /* path of mvmctl: mvm-monitor is looked up beside it */
    mvm_progress_fn progress;
    void *progress_ud;
    int log_fd;              /* the builder's live log (nix output) goes here; -1 = none */
};
int mvm_flake_build(const struct mvm_flake_build_opts *o, mvm_image **out, mvm_error **err);

/* flake.lock audit */
struct mvm_lock_finding {
    char *input;   /* input path from the root, e.g. "nixpkgs" or "microvm/nixpkgs" */
    char *problem; /* one line */
};
/* Parses flake.lock text; fills findings for every input that is not pinned. Returns the
 * number of findings (>= 0) or -1 on malformed input. */
int mvm_flake_lock_audit(const char *json, size_t len, struct mvm_lock_finding **out, size_t *n,
                         mvm_error **err);
void mvm_lock_findings_free(struct mvm_lock_finding *f, size_t n);

#endif
