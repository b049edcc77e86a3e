/* Is /dev/kvm usable *and* fast enough? Nested virtualisation can make every VM exit so
 * slow that a guest boots far slower than under TCG. The probe runs a tiny real-mode guest
 * that does port I/O in a loop and times the exits. */
#include "mvm/backend.h"
#include "util.h"

#include <fcntl.h>
#include <linux/kvm.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <time.h>

#define PROBE_EXITS 200
/* Native KVM takes a few microseconds per exit; TCG's whole boot outruns a KVM whose exits
 * cost more than this. */
#define PROBE_MAX_AVG_NS 100000L

static long now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1000000000L + ts.tv_nsec;
}

bool mvm_kvm_usable(char *why, size_t whylen) {
    const char *force = getenv("MVM_KVM_PROBE");
    if (force && strcmp(force, "usable") == 0) {
        snprintf(why, whylen, "forced usable by MVM_KVM_PROBE");
        return true;
    }
    _cleanup_close_ int kvm = open("/dev/kvm", O_RDWR | O_CLOEXEC);
    if (kvm < 0) {
        snprintf(why, whylen, "/dev/kvm: %s", strerror(errno));
        return false;
    }
    if (ioctl(kvm, KVM_GET_API_VERSION, 0) != KVM_API_VERSION) {
        snprintf(why, whylen, "/dev/kvm: unexpected API version");
        return false;
    }
    _cleanup_close_ int vm = ioctl(kvm, KVM_CREATE_VM, 0);
    if (vm < 0) {
        snprintf(why, whylen, "KVM_CREATE_VM: %s", strerror(errno));
        return false;
    }
    size_t memsz = 0x1000;
    uint8_t *mem = mmap(NULL, memsz, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    if (mem == MAP_FAILED) {
        snprintf(why, whylen, "mmap: %s", strerror(errno));
        return false;
    }
    bool ok = false;
    /* out 0x10, al ; jmp back */
    const uint8_t code[] = {0xe6, 0x10, 0xeb, 0xfc};
    memcpy(mem, code, sizeof(code));
    struct kvm_userspace_memory_region region = {
        .slot = 0, .guest_phys_addr = 0x1000, .memory_size = memsz,
        .userspace_addr = (uint64_t)(uintptr_t)mem};
    _cleanup_close_ int vcpu = -1;
    struct kvm_run *run = MAP_FAILED;
    int runsz = 0;
    if (ioctl(vm, KVM_SET_USER_MEMORY_REGION, &region) < 0) {
        snprintf(why, whylen, "KVM_SET_USER_MEMORY_REGION: %s", strerror(errno));
        goto out;
    }
    vcpu = ioctl(vm, KVM_CREATE_VCPU, 0);
    runsz = ioctl(kvm, KVM_GET_VCPU_MMAP_SIZE, 0);
    if (vcpu < 0 || runsz <= 0) {
        snprintf(why, whylen, "KVM_CREATE_VCPU: %s", strerror(errno));
        goto out;
    }
    run = mmap(NULL, runsz, PROT_READ | PROT_WRITE, MAP_SHARED, vcpu, 0);
    if (run == MAP_FAILED) {
        snprintf(why, whylen, "mmap vcpu: %s", strerror(errno));
        goto out;
    }
    struct kvm_sregs sregs;
    struct kvm_regs regs = {.rip = 0x1000, .rflags = 2};
    if (ioctl(vcpu, KVM_GET_SREGS, &sregs) < 0)
        goto fail_ioctl;
    sregs.cs.base = 0;
    sregs.cs.selector = 0;
    if (ioctl(vcpu, KVM_SET_SREGS, &sregs) < 0 || ioctl(vcpu, KVM_SET_REGS, &regs) < 0)
        goto fail_ioctl;
    long t0 = now_ns();
    int n;
    for (n = 0; n < PROBE_EXITS; n++) {
        if (ioctl(vcpu, KVM_RUN, 0) < 0)
            goto fail_ioctl;
        if (run->exit_reason != KVM_EXIT_IO) {
            snprintf(why, whylen, "KVM test guest: unexpected exit %u", run->exit_reason);
            goto out;
        }
        if (now_ns() - t0 > PROBE_MAX_AVG_NS * PROBE_EXITS)
            break;
    }
    long avg = (now_ns() - t0) / (n ? n : 1);
    if (n < PROBE_EXITS) {
        snprintf(why, whylen, "/dev/kvm works but is too slow (%ld us per VM exit; nested?)",
                 avg / 1000);
        goto out;
    }
    snprintf(why, whylen, "/dev/kvm usable (%ld us per VM exit)", avg / 1000);
    ok = true;
    goto out;
fail_ioctl:
    snprintf(why, whylen, "KVM ioctl: %s", strerror(errno));
out:
    if (run != MAP_FAILED)
        munmap(run, runsz);
    munmap(mem, memsz);
    return ok;
}

int mvm_accel_parse(const char *s, enum mvm_accel *out, mvm_error **err) {
    if (!strcmp(s, "auto"))
        *out = MVM_ACCEL_AUTO;
    else if (!strcmp(s, "kvm"))
        *out = MVM_ACCEL_KVM;
    else if (!strcmp(s, "tcg"))
        *out = MVM_ACCEL_TCG;
    else
        return mvm_error_set(err, MVM_EINVAL, "invalid accelerator '%s' (use auto, kvm or tcg)", s);
    return 0;
}

const char *mvm_accel_name(enum mvm_accel a) {
    return a == MVM_ACCEL_KVM ? "kvm" : a == MVM_ACCEL_TCG ? "tcg" : "auto";
}
