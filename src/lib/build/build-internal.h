/* Internal pieces of the flake build, exposed for unit tests. */
#ifndef MVM_BUILD_INTERNAL_H
#define MVM_BUILD_INTERNAL_H

#include <stddef.h>
#include "mvm/error.h"

/* Deterministic SHA-256 of a flake source tree: names (sorted), modes, sizes, contents and
 * symlink targets; mtimes are ignored, as are .git and top-level `result*` symlinks. */
int build_source_hash(const char *dir, char hex[65], mvm_error **err);
/* The last nlines non-empty lines of buf (its last 4 KiB), joined by " | ", control
 * characters blanked: one line for an error message. */
void build_last_lines(const char *buf, size_t len, int nlines, char *out, size_t outlen);
/* Checks every file listed in `list` (sha256sum format, paths relative to dir) against the
 * extracted tree; a missing, truncated or altered file is an error naming it. */
int build_verify_extracted(const char *dir, const char *list, mvm_error **err);

#endif
