#ifndef MVM_BACKEND_INTERNAL_H
#define MVM_BACKEND_INTERNAL_H

#include "mvm/backend.h"

extern const struct mvm_backend_ops mvm_backend_qemu;

/* Pure: the qemu-system-x86_64 argv for a spec (NULL-terminated, malloc'd strings).
 * Exposed for unit tests. */
char **qemu_build_argv(const struct mvm_vm_spec *s, const char *qemu_bin, mvm_error **err);
/* The kernel command line a backend passes: manifest cmdline + accel fixes + extra. */
char *mvm_kernel_cmdline(const struct mvm_vm_spec *s);

/* QMP: connects to sock, negotiates capabilities, runs one command, returns the "return"
 * member as JSON text (malloc'd) or an error with QMP's "desc". */
int qmp_execute(const char *sock, const char *cmd, char **ret_json, mvm_error **err);

#endif
