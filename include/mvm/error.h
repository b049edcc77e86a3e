/* mvm error objects: errno-style code plus a message; callers add context by wrapping. */
#ifndef MVM_ERROR_H
#define MVM_ERROR_H

#include <stdarg.h>

typedef struct mvm_error {
    int code;  /* positive errno value, or MVM_E* below */
    char *msg; /* heap-allocated, one line, no trailing newline */
} mvm_error;

/* mvm-specific codes beyond errno, chosen not to collide with errno values */
enum {
    MVM_EPROTO = 1000, /* protocol violation */
    MVM_EINTEGRITY,    /* hash / MAC mismatch */
    MVM_EUNAVAIL,      /* backend or tool not available on this host */
    MVM_ENOTFOUND,     /* unknown image / VM */
    MVM_EEXISTS,       /* name already in use */
    MVM_ESTATE,        /* VM not in a state that allows the operation */
    MVM_EINVAL,        /* invalid user input */
    MVM_ETIMEOUT,
};

/* Sets *err (if err != NULL and *err == NULL) and returns -1. */
int mvm_error_set(mvm_error **err, int code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
/* Like mvm_error_set with code = errno and ": strerror(errno)" appended. */
int mvm_error_sys(mvm_error **err, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Prefixes "<context>: " to an existing error; returns -1. */
int mvm_error_wrap(mvm_error **err, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void mvm_error_free(mvm_error *e);
static inline void mvm_error_freep(mvm_error **e) { if (*e) mvm_error_free(*e); }

#endif
