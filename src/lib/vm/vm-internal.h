#ifndef MVM_VM_INTERNAL_H
#define MVM_VM_INTERNAL_H

#include <stdbool.h>
#include "mvm/vm.h"

#define VM_CONFIG "config.json"
#define VM_LOCK "lock"
#define VM_CTL_SOCK "ctl.sock"
#define VM_STATE "state"
#define VM_STATUS "status.json"
#define VM_MONITOR_PID "monitor.pid"
#define VM_HYPERVISOR_PID "hypervisor.pid"
/* the lock fd handed from `run` to the monitor across exec */
#define VM_LOCK_FD_ENV "MVM_MONITOR_LOCK_FD"

/* What `run` decided, persisted in config.json for the monitor and for `ls`. */
struct vm_config {
    char *name, *image, *digest, *backend, *tier, *accel;
    int cpus, mem_mib, boot_timeout_s;
    long long created;
    struct mvm_disk disks[MVM_MAX_DISKS]; /* paths owned (char *) */
    size_t n_disks;
    bool net_user;
};
void vm_config_clear(struct vm_config *c);
int vm_config_write(const char *dir, const struct vm_config *c, mvm_error **err);
int vm_config_read(const char *dir, struct vm_config *c, mvm_error **err);

/* <runtime>/vms, created if missing */
char *vm_root_dir(mvm_error **err);
/* 1 if a live process holds dir/lock, 0 if not (or no lock file), -1 on error. */
int vm_lock_held(const char *dir);
/* Writes a small text file atomically. */
int vm_write_text(const char *dir, const char *file, const char *text, mvm_error **err);
/* Reads a small text file (trailing newline stripped); NULL if absent. */
char *vm_read_text(const char *dir, const char *file);

#endif
