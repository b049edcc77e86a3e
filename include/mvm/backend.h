/*
 * Hypervisor backends: one ops table per backend, one file each (src/lib/backend/).
 * The ladder only ranks probe() results.
 */
#ifndef MVM_BACKEND_H
#define MVM_BACKEND_H

#include <stdbool.h>
#include <sys/types.h>
#include "mvm/error.h"
#include "mvm/image.h"

enum mvm_accel { MVM_ACCEL_AUTO = 0, MVM_ACCEL_KVM, MVM_ACCEL_TCG };
int mvm_accel_parse(const char *s, enum mvm_accel *out, mvm_error **err);
const char *mvm_accel_name(enum mvm_accel a);

/* An extra block device (after the root disk). */
struct mvm_disk {
    const char *path; /* raw image, absolute */
    bool readonly;
};
#define MVM_MAX_DISKS 8

/* Everything a backend needs to start one VM. Paths are absolute. */
struct mvm_vm_spec {
    const char *name;
    const char *state_dir;     /* the VM's runtime directory */
    const mvm_image *image;    /* verified immutable base */
    int cpus;
    int mem_mib;
    enum mvm_accel accel;      /* resolved: never AUTO when passed to start() */
    const char *extra_cmdline; /* appended to the kernel command line, may be NULL */
    const struct mvm_disk *disks; /* extra disks, in order; the guest finds them by label */
    size_t n_disks;
    /* false: no network device at all. true: one NIC on a user-mode (NAT) network: the guest
     * is 10.0.2.15/24, gateway and host 10.0.2.2, DNS 10.0.2.3; nothing reaches the guest. */
    bool net_user;
};

struct mvm_probe {
    bool available;
    char reason[256]; /* why (not) available, one line */
};

struct mvm_backend_ops {
    const char *name;  /* "qemu", "firecracker", "libkrun", "docker" */
    const char *tier;  /* "strict", "standard", "fallback" */
    int (*probe)(struct mvm_probe *out);
    /* Creates the VM's writable layer etc. in state_dir. */
    int (*prepare)(const struct mvm_vm_spec *s, mvm_error **err);
    /* Starts the hypervisor as a child of the caller (dies with it). */
    int (*start)(const struct mvm_vm_spec *s, pid_t *pid, mvm_error **err);
    /* Connects to the guest agent's byte stream; returns a connected fd (may need retries
     * while the hypervisor starts: returns -1 with MVM_ETIMEOUT after timeout_ms). */
    int (*agent_connect)(const struct mvm_vm_spec *s, int timeout_ms, mvm_error **err);
    int (*pause)(const struct mvm_vm_spec *s, mvm_error **err);
    int (*resume)(const struct mvm_vm_spec *s, mvm_error **err);
    /* Forced stop (the graceful path is the agent's SHUTDOWN). */
    int (*kill)(const struct mvm_vm_spec *s, pid_t pid, mvm_error **err);
};

const struct mvm_backend_ops *mvm_backend_by_name(const char *name);
/* All known backends in ladder order. */
const struct mvm_backend_ops *const *mvm_backends(size_t *n);
/* Best available backend, or NULL with an error listing why each was rejected. */
const struct mvm_backend_ops *mvm_backend_select(const char *forced, mvm_error **err);

/* KVM usability: /dev/kvm opens and a tiny guest's VM exits are not unusably slow
 * (nested virtualisation can be ~1000x slower than TCG is useful). */
bool mvm_kvm_usable(char *why, size_t whylen);
/* AUTO -> KVM if usable else TCG; explicit KVM fails when /dev/kvm cannot be used.
 * why (may be NULL) receives one line explaining the choice. */
int mvm_accel_resolve(enum mvm_accel want, enum mvm_accel *out, char *why, size_t whylen,
                      mvm_error **err);

#endif
