/* Internal helpers shared by libmvm, mvmctl and the guest binaries (libc only). */
#ifndef MVM_UTIL_H
#define MVM_UTIL_H

#include <stdlib.h>
#include <stdio.h>
#include <unistd.h>
#include <dirent.h>
#include <errno.h>

static inline void freep(void *p) { free(*(void **)p); }
static inline void closep(int *fd) { if (*fd >= 0) { int e = errno; close(*fd); errno = e; } }
static inline void fclosep(FILE **f) { if (*f) fclose(*f); }
static inline void closedirp(DIR **d) { if (*d) closedir(*d); }
static inline void strvfreep(char ***v) {
    if (*v) { for (char **p = *v; *p; p++) free(*p); free(*v); }
}

#define _cleanup_(f) __attribute__((cleanup(f)))
#define _cleanup_free_ _cleanup_(freep)
#define _cleanup_close_ _cleanup_(closep)
#define _cleanup_fclose_ _cleanup_(fclosep)
#define _cleanup_closedir_ _cleanup_(closedirp)
#define _cleanup_strv_ _cleanup_(strvfreep)
#define _cleanup_error_ _cleanup_(mvm_error_freep)

/* Ownership transfer out of a cleanup variable. */
#define steal_pointer(pp) ({ __typeof__(*(pp)) _p = *(pp); *(pp) = NULL; _p; })
#define steal_fd(fdp) ({ int _f = *(fdp); *(fdp) = -1; _f; })

#define ARRAY_SIZE(a) (sizeof(a) / sizeof((a)[0]))

#endif
