/* Where mvm keeps things. Each may be overridden by an environment variable (tests use
 * that to isolate themselves):
 *   cache   $MVM_CACHE_DIR   else $XDG_CACHE_HOME/mvm   else $HOME/.cache/mvm   (images)
 *   data    $MVM_DATA_DIR    else $XDG_DATA_HOME/mvm    else $HOME/.local/share/mvm (keys)
 *   runtime $MVM_RUNTIME_DIR else $XDG_RUNTIME_DIR/mvm  else /run/mvm as root,
 *                                                        else /tmp/mvm-<uid> (VM state)
 * Returned strings are malloc'd; the directory is created (mode 0700) if missing. */
#ifndef MVM_PATHS_H
#define MVM_PATHS_H

#include <stddef.h>
#include "mvm/error.h"

char *mvm_path_cache(mvm_error **err);
char *mvm_path_data(mvm_error **err);
char *mvm_path_runtime(mvm_error **err);
/* "a/b", malloc'd (NULL when out of memory). */
char *mvm_path_join(const char *a, const char *b);
/* mkdir -p with the given mode for every created component. */
int mvm_mkdir_p(const char *path, int mode, mvm_error **err);
/* rm -rf; ENOENT is not an error. */
int mvm_rm_rf(const char *path, mvm_error **err);
/* Writes data to path atomically (tmp file in the same dir + fsync + rename). */
int mvm_write_file_atomic(const char *path, const void *data, size_t len, int mode,
                          mvm_error **err);
/* Reads a whole (small) file, NUL-terminated. max bounds the size. */
int mvm_read_file(const char *path, size_t max, char **out, size_t *len, mvm_error **err);

#endif
