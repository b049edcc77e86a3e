/* QEMU microvm backend: virtio-mmio devices, PVH kernel boot, QMP control. */
#include "backend-internal.h"
#include "mvm/proto.h"
#include "log.h"
#include "proc.h"
#include "util.h"

#include <fcntl.h>
#include <jansson.h>
#include <poll.h>
#include <signal.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>

#define QEMU_BIN_DEFAULT "qemu-system-x86_64"

static const char *qemu_bin(void) {
    const char *b = getenv("MVM_QEMU");
    return b && *b ? b : QEMU_BIN_DEFAULT;
}

char *mvm_kernel_cmdline(const struct mvm_vm_spec *s) {
    const char *base = s->image->manifest.cmdline ? s->image->manifest.cmdline : "";
    /* Under TCG the TSC calibration against the PIT often hangs; give the kernel the value. */
    const char *tcg = s->accel == MVM_ACCEL_TCG ? " tsc_early_khz=2000000 tsc=reliable" : "";
    char *out = NULL;
    if (asprintf(&out, "%s%s mvm.hostname=%s%s%s", base, tcg, s->name,
                 s->extra_cmdline ? " " : "", s->extra_cmdline ? s->extra_cmdline : "") < 0)
        return NULL;
    return out;
}

struct argv_builder {
    char **v;
    size_t n, cap;
    bool oom;
};

static void addf(struct argv_builder *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void addf(struct argv_builder *b, const char *fmt, ...) {
    if (b->oom)
        return;
    if (b->n + 2 > b->cap) {
        size_t nc = b->cap ? b->cap * 2 : 64;
        char **nv = realloc(b->v, nc * sizeof(char *));
        if (!nv) {
            b->oom = true;
            return;
        }
        b->v = nv;
        b->cap = nc;
    }
    va_list ap;
    va_start(ap, fmt);
    int r = vasprintf(&b->v[b->n], fmt, ap);
    va_end(ap);
    if (r < 0) {
        b->oom = true;
        return;
    }
    b->v[++b->n] = NULL;
}

/* QEMU option values separate sub-options with ','; a literal comma is doubled. */
static char *qemu_escape(const char *s) {
    size_t n = strlen(s), extra = 0;
    for (size_t i = 0; i < n; i++)
        extra += s[i] == ',';
    char *o = malloc(n + extra + 1), *p = o;
    if (!o)
        return NULL;
    for (size_t i = 0; i < n; i++) {
        *p++ = s[i];
        if (s[i] == ',')
            *p++ = ',';
    }
    *p = 0;
    return o;
}

char **qemu_build_argv(const struct mvm_vm_spec *s, const char *bin, mvm_error **err) {
    if (s->accel == MVM_ACCEL_AUTO)
        return mvm_error_set(err, MVM_EINVAL, "qemu: accelerator not resolved"), NULL;
    _cleanup_free_ char *kernel = mvm_image_artifact_path(s->image, "kernel");
    _cleanup_free_ char *initrd = mvm_image_artifact_path(s->image, "initrd");
    if (!kernel)
        return mvm_error_set(err, MVM_EINVAL, "image has no ELF kernel (vmlinux)"), NULL;
    _cleanup_free_ char *cmdline = mvm_kernel_cmdline(s);
    _cleanup_free_ char *dir = qemu_escape(s->state_dir);
    _cleanup_free_ char *ek = qemu_escape(kernel);
    if (!cmdline || !dir || !ek)
        return mvm_error_set(err, ENOMEM, "out of memory"), NULL;
    struct argv_builder b = {0};
    addf(&b, "%s", bin);
    addf(&b, "-name");
    addf(&b, "mvm-%s", s->name);
    addf(&b, "-M");
    addf(&b, "microvm,x-option-roms=off,rtc=off,isa-serial=on");
    addf(&b, "-accel");
    addf(&b, "%s", s->accel == MVM_ACCEL_KVM ? "kvm" : "tcg");
    addf(&b, "-cpu");
    addf(&b, "%s", s->accel == MVM_ACCEL_KVM ? "host" : "max");
    addf(&b, "-smp");
    addf(&b, "%d", s->cpus);
    addf(&b, "-m");
    addf(&b, "%d", s->mem_mib);
    addf(&b, "-nodefaults");
    addf(&b, "-no-user-config");
    addf(&b, "-no-reboot");
    addf(&b, "-display");
    addf(&b, "none");
    addf(&b, "-sandbox");
    addf(&b, "on,obsolete=deny,elevateprivileges=deny,spawn=deny,resourcecontrol=deny");
    addf(&b, "-kernel");
    addf(&b, "%s", kernel);
    if (initrd) {
        addf(&b, "-initrd");
        addf(&b, "%s", initrd);
    }
    addf(&b, "-append");
    addf(&b, "%s", cmdline);
    addf(&b, "-chardev");
    addf(&b, "file,id=console,path=%s/console.log", dir);
    addf(&b, "-serial");
    addf(&b, "chardev:console");
    addf(&b, "-drive");
    addf(&b, "id=root,file=%s/rootfs.qcow2,format=qcow2,if=none,discard=unmap", dir);
    addf(&b, "-device");
    addf(&b, "virtio-blk-device,drive=root");
    for (size_t i = 0; i < s->n_disks && i < MVM_MAX_DISKS; i++) {
        _cleanup_free_ char *dp = qemu_escape(s->disks[i].path);
        if (!dp) {
            b.oom = true;
            break;
        }
        addf(&b, "-drive");
        addf(&b, "id=disk%zu,file=%s,format=raw,if=none,readonly=%s", i, dp,
             s->disks[i].readonly ? "on" : "off");
        addf(&b, "-device");
        addf(&b, "virtio-blk-device,drive=disk%zu", i);
    }
    if (s->net_user) {
        addf(&b, "-netdev");
        addf(&b, "user,id=net0");
        addf(&b, "-device");
        addf(&b, "virtio-net-device,netdev=net0");
    }
    addf(&b, "-device");
    addf(&b, "virtio-serial-device,max_ports=2");
    addf(&b, "-chardev");
    addf(&b, "socket,id=agent,path=%s/agent.sock,server=on,wait=off", dir);
    addf(&b, "-device");
    addf(&b, "virtserialport,chardev=agent,name=" MVM_AGENT_PORT_NAME);
    addf(&b, "-qmp");
    addf(&b, "unix:%s/qmp.sock,server=on,wait=off", dir);
    if (b.oom) {
        char **v = b.v;
        strvfreep(&v);
        return mvm_error_set(err, ENOMEM, "out of memory"), NULL;
    }
    return b.v;
}

static int qemu_probe(struct mvm_probe *out) {
    _cleanup_free_ char *p = mvm_which(qemu_bin());
    out->available = p != NULL;
    if (p)
        snprintf(out->reason, sizeof(out->reason), "%s", p);
    else
        snprintf(out->reason, sizeof(out->reason), "%s not found in PATH (apt-get install qemu-system-x86)",
                 qemu_bin());
    return 0;
}

static int qemu_prepare(const struct mvm_vm_spec *s, mvm_error **err) {
    _cleanup_free_ char *raw = NULL, *overlay = NULL;
    const struct mvm_artifact *a = mvm_manifest_find(&s->image->manifest, "rootfs");
    if (!a)
        return mvm_error_set(err, MVM_EINVAL, "image has no rootfs");
    /* the hard link rootfs.raw is the immutable base every VM's overlay points at */
    if (asprintf(&raw, "%s/rootfs.raw", s->image->dir) < 0 ||
        asprintf(&overlay, "%s/rootfs.qcow2", s->state_dir) < 0)
        return mvm_error_set(err, ENOMEM, "out of memory");
    if (access(raw, R_OK) < 0) {
        free(raw);
        raw = mvm_image_artifact_path(s->image, "rootfs");
    }
    const char *argv[] = {"qemu-img", "create", "-q", "-f", "qcow2", "-F", "raw", "-b", raw, overlay,
                          NULL};
    struct mvm_cmd c = {.argv = argv, .in_fd = -1, .out_fd = -1};
    int r = mvm_cmd_run(&c, err);
    mvm_cmd_clear(&c);
    return r < 0 ? mvm_error_wrap(err, "creating the VM's disk overlay") : 0;
}

static int qemu_start(const struct mvm_vm_spec *s, pid_t *pid, mvm_error **err) {
    _cleanup_free_ char *bin = mvm_which(qemu_bin());
    if (!bin)
        return mvm_error_set(err, MVM_EUNAVAIL, "%s not found in PATH (apt-get install qemu-system-x86)",
                             qemu_bin());
    _cleanup_strv_ char **argv = qemu_build_argv(s, bin, err);
    if (!argv)
        return -1;
    _cleanup_free_ char *logp = NULL;
    if (asprintf(&logp, "%s/hypervisor.log", s->state_dir) < 0)
        return mvm_error_set(err, ENOMEM, "out of memory");
    _cleanup_close_ int logfd = open(logp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (logfd < 0)
        return mvm_error_sys(err, "open %s", logp);
    struct mvm_spawn_opts so = {.stdin_fd = -1, .stdout_fd = logfd, .stderr_fd = logfd,
                                .pdeathsig = true};
    return mvm_spawn(argv, &so, pid, err);
}

static int unix_connect(const char *path, mvm_error **err) {
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    if (strlen(path) >= sizeof(sa.sun_path))
        return mvm_error_set(err, ENAMETOOLONG, "socket path too long: %s", path);
    strcpy(sa.sun_path, path);
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return mvm_error_sys(err, "socket");
    if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0) {
        close(fd);
        return mvm_error_sys(err, "connect %s", path);
    }
    return fd;
}

static int qemu_agent_connect(const struct mvm_vm_spec *s, int timeout_ms, mvm_error **err) {
    _cleanup_free_ char *p = NULL;
    if (asprintf(&p, "%s/agent.sock", s->state_dir) < 0)
        return mvm_error_set(err, ENOMEM, "out of memory");
    for (int waited = 0;; waited += 20) {
        mvm_error *e = NULL;
        int fd = unix_connect(p, &e);
        if (fd >= 0)
            return fd;
        if (waited >= timeout_ms) {
            mvm_error_wrap(&e, "qemu agent channel");
            *err = e;
            return -1;
        }
        mvm_error_free(e);
        usleep(20000);
    }
}

/* QMP speaks one JSON document per line. */
static int qmp_read(int fd, char *buf, size_t cap, size_t *have, json_t **out, mvm_error **err) {
    for (;;) {
        char *nl = memchr(buf, '\n', *have);
        if (nl) {
            size_t linelen = nl - buf + 1;
            json_error_t je;
            json_t *j = json_loadb(buf, linelen, 0, &je);
            memmove(buf, buf + linelen, *have - linelen);
            *have -= linelen;
            if (!j)
                return mvm_error_set(err, MVM_EPROTO, "QMP: bad JSON: %s", je.text);
            if (json_object_get(j, "event")) { /* asynchronous events are not replies */
                json_decref(j);
                continue;
            }
            *out = j;
            return 0;
        }
        if (*have >= cap)
            return mvm_error_set(err, MVM_EPROTO, "QMP: reply too long");
        struct pollfd pf = {.fd = fd, .events = POLLIN};
        int pr = poll(&pf, 1, 5000);
        if (pr == 0)
            return mvm_error_set(err, MVM_ETIMEOUT, "QMP: no reply within 5 s");
        ssize_t n = read(fd, buf + *have, cap - *have);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            return n == 0 ? mvm_error_set(err, EPIPE, "QMP: connection closed")
                          : mvm_error_sys(err, "QMP read");
        *have += n;
    }
}

int qmp_execute(const char *sock, const char *cmd, char **ret_json, mvm_error **err) {
    _cleanup_close_ int fd = unix_connect(sock, err);
    if (fd < 0)
        return -1;
    char buf[65536];
    size_t have = 0;
    json_t *j = NULL;
    if (qmp_read(fd, buf, sizeof(buf), &have, &j, err) < 0) /* greeting */
        return -1;
    json_decref(j);
    const char *caps = "{\"execute\":\"qmp_capabilities\"}\n";
    if (write(fd, caps, strlen(caps)) < 0)
        return mvm_error_sys(err, "QMP write");
    if (qmp_read(fd, buf, sizeof(buf), &have, &j, err) < 0)
        return -1;
    json_decref(j);
    char *req = NULL;
    if (asprintf(&req, "{\"execute\":\"%s\"}\n", cmd) < 0)
        return mvm_error_set(err, ENOMEM, "out of memory");
    ssize_t w = write(fd, req, strlen(req));
    free(req);
    if (w < 0)
        return mvm_error_sys(err, "QMP write");
    if (qmp_read(fd, buf, sizeof(buf), &have, &j, err) < 0) {
        /* "quit" may close the socket before answering */
        if (!strcmp(cmd, "quit")) {
            mvm_error_free(*err);
            *err = NULL;
            return 0;
        }
        return -1;
    }
    json_t *e = json_object_get(j, "error");
    if (e) {
        const char *desc = json_string_value(json_object_get(e, "desc"));
        int r = mvm_error_set(err, EIO, "QMP %s: %s", cmd, desc ? desc : "error");
        json_decref(j);
        return r;
    }
    if (ret_json)
        *ret_json = json_dumps(json_object_get(j, "return"), JSON_COMPACT | JSON_ENCODE_ANY);
    json_decref(j);
    return 0;
}

static int qmp_simple(const struct mvm_vm_spec *s, const char *cmd, mvm_error **err) {
    _cleanup_free_ char *p = NULL;
    if (asprintf(&p, "%s/qmp.sock", s->state_dir) < 0)
        return mvm_error_set(err, ENOMEM, "out of memory");
    return qmp_execute(p, cmd, NULL, err);
}

static int qemu_pause(const struct mvm_vm_spec *s, mvm_error **err) { return qmp_simple(s, "stop", err); }
static int qemu_resume(const struct mvm_vm_spec *s, mvm_error **err) { return qmp_simple(s, "cont", err); }

static int qemu_kill(const struct mvm_vm_spec *s, pid_t pid, mvm_error **err) {
    mvm_error *e = NULL;
    if (qmp_simple(s, "quit", &e) < 0) {
        log_warn("QMP quit failed (%s); sending SIGKILL", e->msg);
        mvm_error_free(e);
        if (pid > 0 && kill(pid, SIGKILL) < 0 && errno != ESRCH)
            return mvm_error_sys(err, "kill %d", (int)pid);
    }
    return 0;
}

/* KVM may open and even run a trivial guest yet fail in QEMU (e.g. nested hosts that reject
 * MSR writes); ask QEMU itself once. */
static bool qemu_kvm_starts(char *why, size_t len) {
    char *argv[] = {(char *)qemu_bin(), "-M", "microvm", "-accel", "kvm", "-cpu", "host", "-m", "64",
                    "-nodefaults", "-no-user-config", "-display", "none", "-S", "-qmp", "stdio", NULL};
    int in[2];
    if (pipe2(in, O_CLOEXEC) < 0)
        return false;
    const char *cmds = "{\"execute\":\"qmp_capabilities\"}\n{\"execute\":\"quit\"}\n";
    (void)!write(in[1], cmds, strlen(cmds));
    close(in[1]);
    struct mvm_spawn_opts so = {.stdin_fd = in[0], .stdout_fd = -1, .stderr_fd = -1, .pdeathsig = true};
    pid_t pid;
    mvm_error *e = NULL;
    int r = mvm_spawn(argv, &so, &pid, &e);
    close(in[0]);
    if (r < 0) {
        snprintf(why, len, "%s", e->msg);
        mvm_error_free(e);
        return false;
    }
    int st;
    for (int i = 0; i < 100; i++) { /* at most 5 s */
        if (waitpid(pid, &st, WNOHANG) == pid) {
            if (WIFEXITED(st) && WEXITSTATUS(st) == 0)
                return true;
            char d[64];
            mvm_describe_status(st, d, sizeof(d));
            snprintf(why, len, "qemu -accel kvm %s at start-up", d);
            return false;
        }
        usleep(50000);
    }
    kill(pid, SIGKILL);
    waitpid(pid, &st, 0);
    snprintf(why, len, "qemu -accel kvm did not start within 5 s");
    return false;
}

int mvm_accel_resolve(enum mvm_accel want, enum mvm_accel *out, char *whyout, size_t whylen,
                      mvm_error **err) {
    char why[256];
    if (want == MVM_ACCEL_TCG) {
        *out = MVM_ACCEL_TCG;
        if (whyout)
            snprintf(whyout, whylen, "TCG requested explicitly");
        return 0;
    }
    bool ok = mvm_kvm_usable(why, sizeof(why)) && qemu_kvm_starts(why, sizeof(why));
    if (!ok && want == MVM_ACCEL_KVM)
        return mvm_error_set(err, MVM_EUNAVAIL, "--accel kvm: %s (use --accel tcg)", why);
    if (!ok)
        log_info("accel auto: using TCG: %s", why);
    if (whyout)
        snprintf(whyout, whylen, "%s", why);
    *out = ok ? MVM_ACCEL_KVM : MVM_ACCEL_TCG;
    return 0;
}

const struct mvm_backend_ops mvm_backend_qemu = {
    .name = "qemu",
    .tier = "standard",
    .probe = qemu_probe,
    .prepare = qemu_prepare,
    .start = qemu_start,
    .agent_connect = qemu_agent_connect,
    .pause = qemu_pause,
    .resume = qemu_resume,
    .kill = qemu_kill,
};
