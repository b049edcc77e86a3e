/* VM lifecycle: run (claim name, start monitor, wait for the agent), stop, rm. */
#include "vm-internal.h"
#include "mvm/image.h"
#include "mvm/paths.h"
#include "mvm/proto.h"
#include "log.h"
#include "proc.h"
#include "util.h"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <string.h>
#include <sys/file.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>

static char *generate_name(void) {
    static const char *adj[] = {"brisk", "calm", "eager", "fuzzy", "gentle", "jolly", "keen",
                                "lucid", "mellow", "nimble", "quiet", "rapid", "sunny", "tidy"};
    static const char *noun[] = {"otter", "falcon", "lynx", "heron", "badger", "marten", "panda",
                                 "raven", "koala", "gecko", "bison", "crane", "finch", "yak"};
    unsigned char r[4];
    if (getrandom(r, sizeof(r), 0) != sizeof(r))
        memset(r, (int)getpid(), sizeof(r));
    char *s = NULL;
    if (asprintf(&s, "%s-%s-%02x%02x", adj[r[0] % ARRAY_SIZE(adj)], noun[r[1] % ARRAY_SIZE(noun)],
                 r[2], r[3]) < 0)
        return NULL;
    return s;
}

/* mvm-monitor lives beside mvmctl (the build tree) or in libexec (installed). */
static char *find_monitor(const char *exe, mvm_error **err) {
    char *p = NULL;
    const char *slash = exe ? strrchr(exe, '/') : NULL;
    if (slash && asprintf(&p, "%.*s/mvm-monitor", (int)(slash - exe), exe) >= 0 &&
        access(p, X_OK) == 0)
        return p;
    free(p);
    p = NULL;
    if (asprintf(&p, "%s/mvm-monitor", MVM_GUEST_DIR_INSTALL) >= 0 && access(p, X_OK) == 0)
        return p;
    free(p);
    mvm_error_set(err, MVM_EUNAVAIL, "mvm-monitor not found beside %s nor in %s (broken install?)",
                  exe ? exe : "mvmctl", MVM_GUEST_DIR_INSTALL);
    return NULL;
}

/* Reads the monitor's one-line verdict from the ready pipe. */
static int wait_ready(int fd, int timeout_s, const char *name, mvm_error **err) {
    char buf[1024];
    size_t have = 0;
    long deadline_ms = (long)timeout_s * 1000 + 15000; /* the monitor enforces the boot timeout */
    struct timespec t0;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    for (;;) {
        struct timespec t;
        clock_gettime(CLOCK_MONOTONIC, &t);
        long el = (t.tv_sec - t0.tv_sec) * 1000 + (t.tv_nsec - t0.tv_nsec) / 1000000;
        if (el >= deadline_ms)
            return mvm_error_set(err, MVM_ETIMEOUT, "VM '%s': monitor did not report within %ld s", name,
                                 deadline_ms / 1000);
        struct pollfd pf = {.fd = fd, .events = POLLIN};
        int pr = poll(&pf, 1, (int)(deadline_ms - el));
        if (pr < 0 && errno == EINTR)
            continue;
        if (pr <= 0)
            continue;
        ssize_t n = read(fd, buf + have, sizeof(buf) - 1 - have);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            break;
        have += n;
        if (memchr(buf, '\n', have) || have == sizeof(buf) - 1)
            break;
    }
    buf[have] = 0;
    char *nl = strchr(buf, '\n');
    if (nl)
        *nl = 0;
    if (!strcmp(buf, "ok"))
        return 0;
    if (!strncmp(buf, "error ", 6))
        return mvm_error_set(err, EIO, "VM '%s': %s", name, buf + 6);
    return mvm_error_set(err, EIO, "VM '%s': monitor exited during start-up (see its monitor.log)",
                         name);
}

int mvm_vm_run(const struct mvm_run_opts *o, char **name_out, mvm_error **err) {
    _cleanup_free_ char *gen = NULL;
    const char *name = o->name;
    if (!name) {
        if (!(gen = generate_name()))
            return mvm_error_set(err, ENOMEM, "out of memory");
        name = gen;
    }
    if (mvm_name_validate("VM", name, err) < 0 || mvm_image_ref_validate(o->image, err) < 0)
        return -1;
    int cpus = o->cpus > 0 ? o->cpus : 1, mem = o->mem_mib > 0 ? o->mem_mib : 256;
    if (cpus > 64)
        return mvm_error_set(err, MVM_EINVAL, "--cpus %d: at most 64", cpus);
    if (mem < 64 || mem > 65536)
        return mvm_error_set(err, MVM_EINVAL, "--memory %d MiB: use 64 MiB to 64 GiB", mem);

    const struct mvm_backend_ops *be = mvm_backend_select(o->hypervisor, err);
    if (!be)
        return -1;
    _cleanup_(mvm_image_freep) mvm_image *img = NULL;
    if (mvm_image_resolve(o->image, &img, err) < 0)
        return -1;
    /* hash-on-load: every artifact is re-hashed before every boot */
    if (mvm_image_verify(img, err) < 0)
        return -1;
    enum mvm_accel accel;
    if (mvm_accel_resolve(o->accel, &accel, NULL, 0, err) < 0)
        return -1;

    _cleanup_free_ char *monitor = find_monitor(o->monitor_exe, err);
    if (!monitor)
        return -1;
    _cleanup_free_ char *dir = mvm_vm_dir(name, err);
    if (!dir)
        return -1;
    /* mkdir is the atomic claim of the name: of two racing runs exactly one succeeds */
    if (mkdir(dir, 0700) < 0) {
        if (errno == EEXIST)
            return mvm_error_set(err, MVM_EEXISTS,
                                 "VM name '%s' is already in use (mvmctl rm %s, or pick another --name)",
                                 name, name);
        return mvm_error_sys(err, "mkdir %s", dir);
    }
    _cleanup_free_ char *lockp = NULL;
    _cleanup_close_ int lockfd = -1;
    if (asprintf(&lockp, "%s/" VM_LOCK, dir) < 0)
        goto oom;
    lockfd = open(lockp, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
    if (lockfd < 0 || flock(lockfd, LOCK_EX) < 0) {
        mvm_error_sys(err, "lock %s", lockp);
        goto fail;
    }
    struct vm_config cfg = {
        .name = (char *)name, .image = (char *)o->image, .digest = img->digest,
        .backend = (char *)be->name, .tier = (char *)be->tier, .accel = (char *)mvm_accel_name(accel),
        .cpus = cpus, .mem_mib = mem, .boot_timeout_s = o->boot_timeout_s > 0 ? o->boot_timeout_s : 120,
        .created = time(NULL),
    };
    if (o->n_disks > MVM_MAX_DISKS) {
        mvm_error_set(err, MVM_EINVAL, "at most %d extra disks", MVM_MAX_DISKS);
        goto fail;
    }
    for (size_t i = 0; i < o->n_disks; i++)
        cfg.disks[i] = o->disks[i];
    cfg.n_disks = o->n_disks;
    cfg.net_user = o->net_user;
    if (vm_config_write(dir, &cfg, err) < 0)
        goto fail;

    int rp[2];
    if (pipe2(rp, O_CLOEXEC) < 0) {
        mvm_error_sys(err, "pipe");
        goto fail;
    }
    char fdbuf[16], lockenv[64];
    snprintf(fdbuf, sizeof(fdbuf), "%d", rp[1]);
    snprintf(lockenv, sizeof(lockenv), VM_LOCK_FD_ENV "=%d", lockfd);
    pid_t p = fork();
    if (p < 0) {
        close(rp[0]);
        close(rp[1]);
        mvm_error_sys(err, "fork");
        goto fail;
    }
    if (p == 0) {
        /* detach: new session, reparented to init once the middle process exits */
        setsid();
        pid_t q = fork();
        if (q != 0)
            _exit(q < 0 ? 1 : 0);
        int nul = open("/dev/null", O_RDWR | O_CLOEXEC);
        if (nul >= 0) {
            dup2(nul, 0);
            dup2(nul, 1);
            dup2(nul, 2);
        }
        fcntl(rp[1], F_SETFD, 0);
        fcntl(lockfd, F_SETFD, 0);
        putenv(lockenv);
        sigset_t none;
        sigemptyset(&none);
        sigprocmask(SIG_SETMASK, &none, NULL);
        char *argv[] = {monitor, dir, fdbuf, NULL};
        execv(monitor, argv);
        _exit(127);
    }
    close(rp[1]);
    int st;
    while (waitpid(p, &st, 0) < 0 && errno == EINTR)
        ;
    /* from here on the VM exists (even if its boot fails): the caller may remove it */
    if (name_out && !(*name_out = strdup(name))) {
        close(rp[0]);
        return mvm_error_set(err, ENOMEM, "out of memory");
    }
    int r = wait_ready(rp[0], cfg.boot_timeout_s, name, err);
    close(rp[0]);
    return r; /* on failure the state dir stays: `ls -a` shows why, `rm` cleans up */
oom:
    mvm_error_set(err, ENOMEM, "out of memory");
fail:
    mvm_rm_rf(dir, NULL);
    return -1;
}

/* Waits until no monitor holds the VM's lock. */
static bool wait_unlocked(const char *dir, int timeout_ms) {
    for (int w = 0; w <= timeout_ms; w += 50) {
        if (vm_lock_held(dir) != 1)
            return true;
        usleep(50000);
    }
    return false;
}

int mvm_vm_stop(const char *name, int timeout_s, bool *was_running, mvm_error **err) {
    struct mvm_vm_info info;
    if (mvm_vm_inspect(name, &info, err) < 0)
        return -1;
    bool alive = info.state <= MVM_VM_STOPPING;
    if (was_running)
        *was_running = alive;
    _cleanup_free_ char *dir = strdup(info.state_dir);
    pid_t mon = info.monitor_pid;
    mvm_vm_info_clear(&info);
    if (!alive)
        return 0;
    _cleanup_(mvm_client_freep) mvm_client *c = NULL;
    mvm_error *e = NULL;
    if (mvm_client_connect(name, &c, &e) == 0) {
        char req[96];
        snprintf(req, sizeof(req), "{\"op\":\"stop\",\"timeout\":%d}", timeout_s < 0 ? 0 : timeout_s);
        _cleanup_free_ char *resp = NULL;
        if (mvm_client_ctl(c, req, &resp, &e) < 0) {
            log_warn("stop %s: %s", name, e->msg);
            mvm_error_free(e);
            e = NULL;
        }
    } else {
        /* still starting (no control socket yet) or wedged: ask the monitor by signal */
        mvm_error_free(e);
        e = NULL;
        if (mon > 0 && mvm_pid_matches(mon, dir))
            kill(mon, SIGTERM);
    }
    if (wait_unlocked(dir, (timeout_s + 15) * 1000))
        return 0;
    /* the monitor did not finish: kill it (its hypervisor dies with it) */
    if (mon > 0 && mvm_pid_matches(mon, dir))
        kill(mon, SIGKILL);
    if (wait_unlocked(dir, 5000))
        return 0;
    return mvm_error_set(err, MVM_ETIMEOUT, "VM '%s' did not stop", name);
}

int mvm_vm_rm(const char *name, bool force, mvm_error **err) {
    struct mvm_vm_info info;
    if (mvm_vm_inspect(name, &info, err) < 0)
        return -1;
    bool alive = info.state <= MVM_VM_STOPPING;
    pid_t hv = info.hypervisor_pid;
    _cleanup_free_ char *dir = strdup(info.state_dir);
    mvm_vm_info_clear(&info);
    if (!dir)
        return mvm_error_set(err, ENOMEM, "out of memory");
    if (alive && !force)
        return mvm_error_set(err, MVM_ESTATE, "VM '%s' is running (stop it first, or use rm -f)", name);
    if (alive && mvm_vm_stop(name, 0, NULL, err) < 0)
        return -1;
    /* a hypervisor orphaned by a killed monitor must not outlive the VM's record */
    if (hv > 0 && mvm_pid_matches(hv, dir))
        kill(hv, SIGKILL);
    /* hold the lock while removing, so a monitor cannot be starting here at the same time */
    _cleanup_free_ char *lockp = NULL;
    if (asprintf(&lockp, "%s/" VM_LOCK, dir) < 0)
        return mvm_error_set(err, ENOMEM, "out of memory");
    _cleanup_close_ int lfd = open(lockp, O_RDWR | O_CLOEXEC);
    if (lfd >= 0 && flock(lfd, LOCK_EX | LOCK_NB) < 0)
        return mvm_error_set(err, MVM_ESTATE, "VM '%s' is busy (another command holds it)", name);
    /* rename first so the name disappears atomically, then delete */
    _cleanup_free_ char *trash = NULL;
    const char *slash = strrchr(dir, '/');
    /* hidden entry ".<name>.rm-<pid>" beside it: skipped by ls, never a valid name */
    if (!slash || asprintf(&trash, "%.*s/.%s.rm-%d", (int)(slash - dir), dir, slash + 1,
                           (int)getpid()) < 0)
        return mvm_error_set(err, ENOMEM, "out of memory");
    if (rename(dir, trash) < 0) {
        if (errno == ENOENT)
            return mvm_error_set(err, MVM_ENOTFOUND, "no such VM '%s'", name);
        return mvm_error_sys(err, "rename %s", dir);
    }
    return mvm_rm_rf(trash, err);
}
