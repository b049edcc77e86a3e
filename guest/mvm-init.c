/*
 * mvm-init: PID 1 of the mvm initramfs.
 *
 * Mounts the pseudo filesystems, loads the kernel modules listed in
 * /lib/modules/load.order, mounts the root disk, switches root into it, starts the guest
 * agent and then reaps zombies until asked to power off or reboot.
 *
 * Kernel command line (all optional):
 *   mvm.root=/dev/vda  mvm.rootfstype=ext4  mvm.rootflags=OPTS  mvm.ro
 *   mvm.agent=/sbin/mvm-agent  mvm.hostname=NAME  mvm.debug
 *
 * Signals: SIGTERM or SIGUSR2 power off, SIGINT reboots (also what ctrl-alt-del sends).
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <net/if.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mount.h>
#include <sys/reboot.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define MODULES_DIR "/lib/modules"
#define NEWROOT "/newroot"
#define ROOT_WAIT_MS 10000
#define AGENT_RESTARTS 5
#define AGENT_RESTART_WINDOW_MS 10000

static const char *const child_env[] = {
    "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
    "HOME=/root",
    "TERM=linux",
    NULL,
};

static struct {
    char root[256];
    char fstype[64];
    char flags[512];
    char agent[256];
    char hostname[65];
    bool ro;
    bool debug;
} cfg = {
    .root = "/dev/vda",
    .fstype = "ext4",
    .agent = "/sbin/mvm-agent",
};

/* ------------------------------------------------------------------ console output */

static void say(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void say(const char *fmt, ...)
{
    char buf[512];
    int n = snprintf(buf, sizeof(buf), "mvm-init: ");
    va_list ap;
    va_start(ap, fmt);
    int m = vsnprintf(buf + n, sizeof(buf) - (size_t)n - 1, fmt, ap);
    va_end(ap);
    if (m < 0)
        m = 0;
    size_t len = (size_t)n + (size_t)m;
    if (len > sizeof(buf) - 2)
        len = sizeof(buf) - 2;
    buf[len++] = '\n';
    ssize_t w = write(STDOUT_FILENO, buf, len);
    (void)w;
}

#define debug(...)                                                                             \
    do {                                                                                       \
        if (cfg.debug)                                                                         \
            say(__VA_ARGS__);                                                                  \
    } while (0)

static long long now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void sleep_ms(long ms)
{
    struct timespec ts = { ms / 1000, (ms % 1000) * 1000000L };
    while (nanosleep(&ts, &ts) < 0 && errno == EINTR)
        ;
}

/* ------------------------------------------------------------------ shutdown */

static void reap_all(void)
{
    while (waitpid(-1, NULL, WNOHANG) > 0)
        ;
}

/* Stops every process, syncs, remounts / read-only and powers off (or reboots). */
static void __attribute__((noreturn)) shutdown_now(bool reboot_instead)
{
    say("%s", reboot_instead ? "rebooting" : "powering off");
    kill(-1, SIGTERM);
    long long deadline = now_ms() + 2000;
    while (now_ms() < deadline) {
        pid_t p = waitpid(-1, NULL, WNOHANG);
        if (p < 0 && errno == ECHILD)
            break;
        if (p <= 0)
            sleep_ms(20);
    }
    kill(-1, SIGKILL);
    reap_all();
    sync();
    if (mount(NULL, "/", NULL, MS_REMOUNT | MS_RDONLY, NULL) < 0 && errno != EINVAL)
        debug("remount / read-only: %s", strerror(errno));
    sync();
    reboot(reboot_instead ? RB_AUTOBOOT : RB_POWER_OFF);
    /* Power off unsupported: a reset ends the VM too when the hypervisor runs -no-reboot. */
    reboot(RB_AUTOBOOT);
    for (;;)
        pause();
}

static void __attribute__((noreturn, format(printf, 1, 2))) fatal(const char *fmt, ...)
{
    char msg[400];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    say("fatal: %s", msg);
    shutdown_now(false);
}

/* ------------------------------------------------------------------ early setup */

static void ensure_stdio(void)
{
    if (fcntl(STDOUT_FILENO, F_GETFD) >= 0 && fcntl(STDERR_FILENO, F_GETFD) >= 0)
        return;
    int fd = open("/dev/console", O_RDWR | O_NOCTTY);
    if (fd < 0)
        return;
    for (int i = 0; i < 3; i++)
        if (fcntl(i, F_GETFD) < 0)
            dup2(fd, i);
    if (fd > 2)
        close(fd);
}

static int mount_fs(const char *src, const char *dst, const char *type, unsigned long flags,
                    const char *data)
{
    mkdir(dst, 0755);
    if (mount(src, dst, type, flags, data) < 0 && errno != EBUSY) {
        say("mount %s on %s: %s", type, dst, strerror(errno));
        return -1;
    }
    return 0;
}

static void load_modules(void)
{
    FILE *f = fopen(MODULES_DIR "/load.order", "re");
    if (!f) {
        debug("no " MODULES_DIR "/load.order: %s", strerror(errno));
        return;
    }
    char line[512];
    while (fgets(line, sizeof(line), f)) {
        char *s = line;
        while (*s == ' ' || *s == '\t')
            s++;
        s[strcspn(s, "\r\n")] = '\0';
        size_t l = strlen(s);
        while (l > 0 && (s[l - 1] == ' ' || s[l - 1] == '\t'))
            s[--l] = '\0';
        if (!*s || *s == '#')
            continue;
        char path[600];
        if (*s == '/')
            snprintf(path, sizeof(path), "%s", s);
        else
            snprintf(path, sizeof(path), MODULES_DIR "/%s", s);
        int fd = open(path, O_RDONLY | O_CLOEXEC);
        if (fd < 0) {
            say("module %s: %s", s, strerror(errno));
            continue;
        }
        long long t0 = now_ms();
        if (syscall(SYS_finit_module, fd, "", 0) < 0 && errno != EEXIST)
            say("module %s: %s", s, strerror(errno));
        else
            debug("loaded %s (%lld ms)", s, now_ms() - t0);
        close(fd);
    }
    fclose(f);
}

static void set_opt(char *dst, size_t cap, const char *val, const char *name)
{
    if (strlen(val) >= cap) {
        say("ignoring %s: value too long", name);
        return;
    }
    memcpy(dst, val, strlen(val) + 1);
}

static void parse_cmdline(void)
{
    char buf[4096];
    int fd = open("/proc/cmdline", O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return;
    ssize_t n = read(fd, buf, sizeof(buf) - 1);
    close(fd);
    if (n <= 0)
        return;
    buf[n] = '\0';
    char *save = NULL;
    for (char *tok = strtok_r(buf, " \t\n", &save); tok; tok = strtok_r(NULL, " \t\n", &save)) {
        if (strncmp(tok, "mvm.", 4) != 0)
            continue;
        char *key = tok + 4;
        char *val = strchr(key, '=');
        if (val)
            *val++ = '\0';
        if (!strcmp(key, "root") && val)
            set_opt(cfg.root, sizeof(cfg.root), val, "mvm.root");
        else if (!strcmp(key, "rootfstype") && val)
            set_opt(cfg.fstype, sizeof(cfg.fstype), val, "mvm.rootfstype");
        else if (!strcmp(key, "rootflags") && val)
            set_opt(cfg.flags, sizeof(cfg.flags), val, "mvm.rootflags");
        else if (!strcmp(key, "agent") && val)
            set_opt(cfg.agent, sizeof(cfg.agent), val, "mvm.agent");
        else if (!strcmp(key, "hostname") && val)
            set_opt(cfg.hostname, sizeof(cfg.hostname), val, "mvm.hostname");
        else if (!strcmp(key, "ro"))
            cfg.ro = true;
        else if (!strcmp(key, "rw"))
            cfg.ro = false;
        else if (!strcmp(key, "debug"))
            cfg.debug = true;
    }
}

/* ext4 keeps its volume label at byte 1024 + 120 (s_volume_name, 16 bytes), after the
 * magic 0xEF53 at 1024 + 56. */
static bool ext4_label_is(const char *dev, const char *label)
{
    int fd = open(dev, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return false;
    unsigned char sb[256];
    ssize_t n = pread(fd, sb, sizeof(sb), 1024);
    close(fd);
    if (n != (ssize_t)sizeof(sb) || sb[56] != 0x53 || sb[57] != 0xEF)
        return false;
    char name[17];
    memcpy(name, sb + 120, 16);
    name[16] = 0;
    return strcmp(name, label) == 0;
}

/* mvm.root=LABEL=x: the disk order of virtio-mmio devices is not guaranteed when a VM has
 * several disks, so the root may be named by its filesystem label. */
static bool find_root_by_label(const char *label, char *out, size_t outlen)
{
    DIR *d = opendir("/sys/class/block");
    if (!d)
        return false;
    struct dirent *de;
    bool found = false;
    while (!found && (de = readdir(d))) {
        if (de->d_name[0] == '.')
            continue;
        char dev[300];
        snprintf(dev, sizeof(dev), "/dev/%s", de->d_name);
        if (strlen(dev) < outlen && ext4_label_is(dev, label)) {
            memcpy(out, dev, strlen(dev) + 1);
            found = true;
        }
    }
    closedir(d);
    return found;
}

static void wait_for_root(void)
{
    long long deadline = now_ms() + ROOT_WAIT_MS;
    struct stat st;
    char label[64] = "";
    if (!strncmp(cfg.root, "LABEL=", 6) && strlen(cfg.root + 6) < sizeof(label))
        memcpy(label, cfg.root + 6, strlen(cfg.root + 6) + 1);
    for (;;) {
        if (label[0] ? find_root_by_label(label, cfg.root, sizeof(cfg.root))
                     : stat(cfg.root, &st) == 0)
            break;
        if (now_ms() >= deadline)
            fatal("root device %s%s did not appear within %d s", label[0] ? "LABEL=" : "",
                  label[0] ? label : cfg.root, ROOT_WAIT_MS / 1000);
        sleep_ms(10);
    }
    if (stat(cfg.root, &st) < 0 || !S_ISBLK(st.st_mode))
        fatal("root %s is not a block device", cfg.root);
}

/* Deletes the initramfs contents (everything on the device of dirfd), to give the memory back. */
static void free_initramfs(int dirfd, dev_t rootdev)
{
    DIR *d = fdopendir(dirfd);
    if (!d) {
        close(dirfd);
        return;
    }
    struct dirent *de;
    while ((de = readdir(d))) {
        if (!strcmp(de->d_name, ".") || !strcmp(de->d_name, ".."))
            continue;
        struct stat st;
        if (fstatat(dirfd, de->d_name, &st, AT_SYMLINK_NOFOLLOW) < 0 || st.st_dev != rootdev)
            continue;
        if (S_ISDIR(st.st_mode)) {
            int sub = openat(dirfd, de->d_name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
            if (sub >= 0)
                free_initramfs(sub, rootdev);
            unlinkat(dirfd, de->d_name, AT_REMOVEDIR);
        } else {
            unlinkat(dirfd, de->d_name, 0);
        }
    }
    closedir(d);
}

static void switch_root(void)
{
    static const char *const moves[] = { "/dev", "/proc", "/sys" };
    char path[64];
    for (size_t i = 0; i < sizeof(moves) / sizeof(moves[0]); i++) {
        snprintf(path, sizeof(path), NEWROOT "%s", moves[i]);
        mkdir(path, 0755);
        if (mount(moves[i], path, NULL, MS_MOVE, NULL) < 0)
            fatal("move %s to the root filesystem: %s", moves[i], strerror(errno));
    }
    struct stat st;
    int rootfd = open("/", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (chdir(NEWROOT) < 0)
        fatal("chdir " NEWROOT ": %s", strerror(errno));
    if (rootfd >= 0) {
        if (fstat(rootfd, &st) == 0)
            free_initramfs(rootfd, st.st_dev);
        else
            close(rootfd);
    }
    if (mount(".", "/", NULL, MS_MOVE, NULL) < 0)
        fatal("move root: %s", strerror(errno));
    if (chroot(".") < 0)
        fatal("chroot: %s", strerror(errno));
    if (chdir("/") < 0)
        fatal("chdir /: %s", strerror(errno));
}

static void mount_root(void)
{
    mkdir(NEWROOT, 0755);
    unsigned long flags = cfg.ro ? MS_RDONLY : 0;
    if (mount(cfg.root, NEWROOT, cfg.fstype, flags, cfg.flags[0] ? cfg.flags : NULL) < 0)
        fatal("mount %s (%s) on " NEWROOT ": %s", cfg.root, cfg.fstype, strerror(errno));
}

static void setup_root_mounts(void)
{
    mount_fs("devpts", "/dev/pts", "devpts", MS_NOSUID | MS_NOEXEC,
             "gid=5,mode=0620,ptmxmode=0666");
    mount_fs("tmpfs", "/dev/shm", "tmpfs", MS_NOSUID | MS_NODEV, "mode=1777");
    mount_fs("tmpfs", "/tmp", "tmpfs", MS_NOSUID | MS_NODEV, "mode=1777");
    mount_fs("tmpfs", "/run", "tmpfs", MS_NOSUID | MS_NODEV, "mode=0755");
    if (cfg.hostname[0] && sethostname(cfg.hostname, strlen(cfg.hostname)) < 0)
        say("sethostname: %s", strerror(errno));
}

static void loopback_up(void)
{
    int s = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    if (s < 0)
        return;
    struct ifreq ifr;
    memset(&ifr, 0, sizeof(ifr));
    strncpy(ifr.ifr_name, "lo", sizeof(ifr.ifr_name) - 1);
    if (ioctl(s, SIOCGIFFLAGS, &ifr) == 0) {
        ifr.ifr_flags |= IFF_UP | IFF_RUNNING;
        if (ioctl(s, SIOCSIFFLAGS, &ifr) < 0)
            debug("lo up: %s", strerror(errno));
    }
    close(s);
}

/* ------------------------------------------------------------------ agent supervision */

static pid_t start_agent(const sigset_t *orig_mask)
{
    pid_t pid = fork();
    if (pid < 0) {
        say("fork agent: %s", strerror(errno));
        return -1;
    }
    if (pid == 0) {
        sigprocmask(SIG_SETMASK, orig_mask, NULL);
        setsid();
        char *argv[3] = { cfg.agent, NULL, NULL };
        if (cfg.debug)
            argv[1] = "--debug";
        execve(cfg.agent, argv, (char *const *)child_env);
        say("exec %s: %s", cfg.agent, strerror(errno));
        _exit(127);
    }
    debug("agent started, pid %d", (int)pid);
    return pid;
}

int main(void)
{
    /* PID 1 with no console yet: mount /dev first so the first line can reach it. */
    mount_fs("devtmpfs", "/dev", "devtmpfs", MS_NOSUID, "mode=0755");
    ensure_stdio();
    say("started");
    if (getpid() != 1)
        say("warning: not running as PID 1");

    sigset_t mask, orig;
    sigemptyset(&mask);
    sigaddset(&mask, SIGTERM);
    sigaddset(&mask, SIGINT);
    sigaddset(&mask, SIGUSR1);
    sigaddset(&mask, SIGUSR2);
    sigaddset(&mask, SIGCHLD);
    sigprocmask(SIG_BLOCK, &mask, &orig);
    int sfd = signalfd(-1, &mask, SFD_CLOEXEC);
    if (sfd < 0)
        fatal("signalfd: %s", strerror(errno));
    reboot(RB_DISABLE_CAD); /* ctrl-alt-del becomes SIGINT */

    mount_fs("proc", "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC, NULL);
    mount_fs("sysfs", "/sys", "sysfs", MS_NOSUID | MS_NODEV | MS_NOEXEC, NULL);
    parse_cmdline();
    load_modules();
    wait_for_root();
    mount_root();
    switch_root();
    setup_root_mounts();
    loopback_up();
    if (access(cfg.agent, X_OK) < 0)
        fatal("agent %s: %s", cfg.agent, strerror(errno));
    say("root mounted, starting agent");

    long long starts[AGENT_RESTARTS] = { 0 };
    unsigned nstarts = 0;
    pid_t agent = start_agent(&orig);
    starts[nstarts++ % AGENT_RESTARTS] = now_ms();

    for (;;) {
        struct signalfd_siginfo si;
        ssize_t n = read(sfd, &si, sizeof(si));
        if (n != (ssize_t)sizeof(si)) {
            if (n < 0 && errno != EINTR && errno != EAGAIN)
                sleep_ms(10);
            continue;
        }
        switch (si.ssi_signo) {
        case SIGTERM:
        case SIGUSR2:
            shutdown_now(false);
        case SIGINT:
            shutdown_now(true);
        case SIGUSR1:
            debug("SIGUSR1 ignored");
            break;
        case SIGCHLD:
            break;
        }
        int st;
        pid_t p;
        bool agent_died = false;
        while ((p = waitpid(-1, &st, WNOHANG)) > 0) {
            if (p == agent) {
                agent_died = true;
                if (WIFEXITED(st))
                    say("agent exited with status %d", WEXITSTATUS(st));
                else if (WIFSIGNALED(st))
                    say("agent killed by signal %d", WTERMSIG(st));
            }
        }
        if (agent_died || agent < 0) {
            /* the oldest of the last AGENT_RESTARTS starts must be outside the window */
            long long oldest = starts[nstarts % AGENT_RESTARTS];
            if (nstarts >= AGENT_RESTARTS && now_ms() - oldest < AGENT_RESTART_WINDOW_MS)
                fatal("agent %s keeps exiting (%d starts in %d s)", cfg.agent, AGENT_RESTARTS,
                      AGENT_RESTART_WINDOW_MS / 1000);
            agent = start_agent(&orig);
            starts[nstarts++ % AGENT_RESTARTS] = now_ms();
        }
    }
}
