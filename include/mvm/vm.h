/*
 * VM lifecycle. Each VM has a state directory <runtime>/vms/<name>/ holding
 *   config.json   what it was started with (image digest, cpus, memory, backend, accel)
 *   lock          flock()ed exclusively by the VM's monitor for its whole life
 *   monitor.pid   hypervisor.pid
 *   ctl.sock      the monitor's control socket (agent protocol, see mvm/proto.h)
 *   console.log   guest console;  monitor.log  the monitor's own log
 *   state         "starting" | "running" | "stopping" (written by the monitor)
 *   status.json   exit record, written by the monitor before it exits
 * Liveness is the lock: if nobody holds it, no monitor is alive, whatever files say.
 */
#ifndef MVM_VM_H
#define MVM_VM_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>
#include "mvm/error.h"
#include "mvm/backend.h"

#define MVM_NAME_MAX 64

/* [a-zA-Z0-9][a-zA-Z0-9_.-]{0,63}; returns 0 or -1 with MVM_EINVAL and a clear message. */
int mvm_name_validate(const char *kind, const char *name, mvm_error **err);

struct mvm_run_opts {
    const char *name;        /* NULL -> generated */
    const char *image;       /* image reference */
    const char *hypervisor;  /* NULL -> ladder */
    int cpus;                /* default 1 */
    int mem_mib;             /* default 256 */
    enum mvm_accel accel;
    int boot_timeout_s;      /* default 120 */
    const char *monitor_exe; /* path of mvmctl: mvm-monitor is looked up beside it */
    const struct mvm_disk *disks; /* extra block devices (builder jobs), may be NULL */
    size_t n_disks;
    bool net_user;                /* a NAT network device (see mvm_vm_spec); default none */
};

/* Validates, verifies the image (hash-on-load), claims the name atomically, starts the
 * monitor and waits until the guest agent is ready. *name_out receives the VM name. */
int mvm_vm_run(const struct mvm_run_opts *o, char **name_out, mvm_error **err);

enum mvm_vm_state {
    MVM_VM_STARTING, MVM_VM_RUNNING, MVM_VM_PAUSED, MVM_VM_STOPPING, MVM_VM_EXITED, MVM_VM_DEAD,
};
const char *mvm_vm_state_name(enum mvm_vm_state s);

struct mvm_vm_info {
    char *name;
    enum mvm_vm_state state;
    char *image;        /* tag as given at run */
    char *digest;
    char *backend;
    char *tier;
    char *accel;
    int cpus, mem_mib;
    long long created;  /* unix seconds */
    long long finished; /* 0 if running */
    pid_t monitor_pid, hypervisor_pid;
    char *exit_reason;  /* exited/dead: human text */
    int exit_code;      /* guest exit code if known, else -1 */
    char *state_dir;
};
void mvm_vm_info_clear(struct mvm_vm_info *i);
int mvm_vm_inspect(const char *name, struct mvm_vm_info *out, mvm_error **err);
int mvm_vm_list(struct mvm_vm_info **out, size_t *n, mvm_error **err);
void mvm_vm_list_free(struct mvm_vm_info *v, size_t n);

/* Graceful stop: agent SHUTDOWN, wait timeout_s, then force. Returns when the monitor has
 * exited. A VM that is not running is not an error (*was_running = false). */
int mvm_vm_stop(const char *name, int timeout_s, bool *was_running, mvm_error **err);
/* Removes the state dir. Running VM -> MVM_ESTATE unless force (then killed first). */
int mvm_vm_rm(const char *name, bool force, mvm_error **err);

/* Images and VMs: the name of a VM that is not yet removed and was booted from the image
 * `digest` (its disk overlay depends on the image), or NULL. */
char *mvm_vm_using_image(const char *digest);
/* Removes an image reference like mvm_image_remove, but refuses while a VM depends on it. */
int mvm_image_remove_unused(const char *ref, mvm_error **err);
/* Removes every untagged image no VM depends on; counts them. */
int mvm_image_prune(size_t *removed, uint64_t *bytes, mvm_error **err);

/* Path helpers (malloc'd). */
char *mvm_vm_dir(const char *name, mvm_error **err);

/* Entry point of the monitor process (the mvm-monitor executable).
 * ready_fd: pipe to report "ok\n" or "error <message>\n" to the starting CLI. */
int mvm_monitor_main(const char *state_dir, int ready_fd);

/*
 * Client side of the control socket.
 */
typedef struct mvm_client mvm_client;
int mvm_client_connect(const char *vm_name, mvm_client **out, mvm_error **err);
void mvm_client_free(mvm_client *c);
static inline void mvm_client_freep(mvm_client **c) { if (*c) mvm_client_free(*c); }
int mvm_client_fd(const mvm_client *c);
/* Sends a CTL_REQ built from (key,value) json and waits for CTL_RESP; resp malloc'd. */
int mvm_client_ctl(mvm_client *c, const char *req_json, char **resp, mvm_error **err);

struct mvm_exec_opts {
    char **argv;
    char **env;
    const char *cwd;
    bool interactive; /* forward stdin */
    bool tty;
    int in_fd, out_fd, err_fd; /* usually 0,1,2 */
    /* if set, output goes here instead of out_fd/err_fd (stream 1 = stdout, 2 = stderr) */
    void (*on_output)(void *ud, int stream, const void *data, size_t len);
    void *output_ud;
    int timeout_ms; /* > 0: give up (MVM_ETIMEOUT) and SIGKILL the command after this long */
};
/* Runs one command in the guest through the monitor, streaming stdio. Returns the exit
 * status mapped like a shell (code, or 128+signal; 126/127 for exec failures), or -1 with
 * *err for mvm's own failures. */
int mvm_exec(const char *vm_name, const struct mvm_exec_opts *o, mvm_error **err);

#endif
