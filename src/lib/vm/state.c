/* VM state directories: names, config, liveness (the monitor's lock), listing. */
#include "vm-internal.h"
#include "mvm/image.h"
#include "mvm/paths.h"
#include "proc.h"
#include "util.h"

#include <ctype.h>
#include <dirent.h>
#include <fcntl.h>
#include <jansson.h>
#include <signal.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>

int mvm_name_validate(const char *kind, const char *name, mvm_error **err) {
    if (!name || !*name)
        return mvm_error_set(err, MVM_EINVAL, "invalid %s name '': must not be empty", kind);
    size_t n = strlen(name);
    if (n > MVM_NAME_MAX)
        return mvm_error_set(err, MVM_EINVAL, "invalid %s name '%.20s...': longer than %d characters",
                             kind, name, MVM_NAME_MAX);
    bool ok = isalnum((unsigned char)name[0]);
    for (size_t i = 0; ok && i < n; i++) {
        unsigned char c = name[i];
        ok = isalnum(c) || c == '_' || c == '.' || c == '-';
    }
    if (!ok)
        return mvm_error_set(err, MVM_EINVAL,
                             "invalid %s name '%s': use letters, digits, '.', '_' or '-', "
                             "starting with a letter or digit (max %d)",
                             kind, name, MVM_NAME_MAX);
    return 0;
}

char *vm_root_dir(mvm_error **err) {
    _cleanup_free_ char *rt = mvm_path_runtime(err);
    if (!rt)
        return NULL;
    char *p = NULL;
    if (asprintf(&p, "%s/vms", rt) < 0)
        return mvm_error_set(err, ENOMEM, "out of memory"), NULL;
    if (mvm_mkdir_p(p, 0700, err) < 0) {
        free(p);
        return NULL;
    }
    return p;
}

char *mvm_vm_dir(const char *name, mvm_error **err) {
    if (mvm_name_validate("VM", name, err) < 0)
        return NULL;
    _cleanup_free_ char *root = vm_root_dir(err);
    if (!root)
        return NULL;
    char *p = NULL;
    if (asprintf(&p, "%s/%s", root, name) < 0)
        return mvm_error_set(err, ENOMEM, "out of memory"), NULL;
    return p;
}

void vm_config_clear(struct vm_config *c) {
    free(c->name);
    free(c->image);
    free(c->digest);
    free(c->backend);
    free(c->tier);
    free(c->accel);
    for (size_t i = 0; i < c->n_disks; i++)
        free((char *)c->disks[i].path);
    memset(c, 0, sizeof(*c));
}

int vm_config_write(const char *dir, const struct vm_config *c, mvm_error **err) {
    json_t *j = json_pack("{s:s, s:s, s:s, s:s, s:s, s:s, s:i, s:i, s:i, s:I}", "name", c->name,
                          "image", c->image, "digest", c->digest, "backend", c->backend, "tier",
                          c->tier, "accel", c->accel, "cpus", c->cpus, "memory_mib", c->mem_mib,
                          "boot_timeout", c->boot_timeout_s, "created", (json_int_t)c->created);
    if (!j)
        return mvm_error_set(err, ENOMEM, "out of memory");
    json_t *disks = json_array();
    for (size_t i = 0; i < c->n_disks; i++)
        json_array_append_new(disks, json_pack("{s:s, s:b}", "path", c->disks[i].path, "readonly",
                                               c->disks[i].readonly));
    json_object_set_new(j, "disks", disks);
    json_object_set_new(j, "network", json_string(c->net_user ? "user" : "none"));
    char *s = json_dumps(j, JSON_SORT_KEYS | JSON_INDENT(2));
    json_decref(j);
    if (!s)
        return mvm_error_set(err, ENOMEM, "out of memory");
    _cleanup_free_ char *path = NULL;
    int r = asprintf(&path, "%s/" VM_CONFIG, dir) < 0
                ? mvm_error_set(err, ENOMEM, "out of memory")
                : mvm_write_file_atomic(path, s, strlen(s), 0600, err);
    free(s);
    return r;
}

static char *jstr(json_t *o, const char *k) {
    const char *v = json_string_value(json_object_get(o, k));
    return strdup(v ? v : "");
}

int vm_config_read(const char *dir, struct vm_config *c, mvm_error **err) {
    _cleanup_free_ char *path = NULL, *buf = NULL;
    size_t len;
    if (asprintf(&path, "%s/" VM_CONFIG, dir) < 0)
        return mvm_error_set(err, ENOMEM, "out of memory");
    if (mvm_read_file(path, 1 << 20, &buf, &len, err) < 0)
        return -1;
    json_error_t je;
    json_t *j = json_loadb(buf, len, 0, &je);
    if (!j || !json_is_object(j)) {
        json_decref(j);
        return mvm_error_set(err, MVM_EPROTO, "%s: invalid JSON", path);
    }
    memset(c, 0, sizeof(*c));
    c->name = jstr(j, "name");
    c->image = jstr(j, "image");
    c->digest = jstr(j, "digest");
    c->backend = jstr(j, "backend");
    c->tier = jstr(j, "tier");
    c->accel = jstr(j, "accel");
    c->cpus = json_integer_value(json_object_get(j, "cpus"));
    c->mem_mib = json_integer_value(json_object_get(j, "memory_mib"));
    c->boot_timeout_s = json_integer_value(json_object_get(j, "boot_timeout"));
    c->created = json_integer_value(json_object_get(j, "created"));
    const char *net = json_string_value(json_object_get(j, "network"));
    c->net_user = net && !strcmp(net, "user");
    json_t *disks = json_object_get(j, "disks");
    for (size_t i = 0; i < json_array_size(disks) && i < MVM_MAX_DISKS; i++) {
        const char *p = json_string_value(json_object_get(json_array_get(disks, i), "path"));
        if (!p)
            continue;
        c->disks[c->n_disks].path = strdup(p);
        c->disks[c->n_disks].readonly =
            json_is_true(json_object_get(json_array_get(disks, i), "readonly"));
        c->n_disks++;
    }
    json_decref(j);
    if (!c->name || !c->image || !c->digest || !c->backend || !c->tier || !c->accel) {
        vm_config_clear(c);
        return mvm_error_set(err, ENOMEM, "out of memory");
    }
    return 0;
}

int vm_lock_held(const char *dir) {
    _cleanup_free_ char *p = NULL;
    if (asprintf(&p, "%s/" VM_LOCK, dir) < 0)
        return -1;
    _cleanup_close_ int fd = open(p, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return errno == ENOENT ? 0 : -1;
    if (flock(fd, LOCK_EX | LOCK_NB) == 0) {
        flock(fd, LOCK_UN);
        return 0;
    }
    return errno == EWOULDBLOCK ? 1 : -1;
}

int vm_write_text(const char *dir, const char *file, const char *text, mvm_error **err) {
    _cleanup_free_ char *p = NULL;
    if (asprintf(&p, "%s/%s", dir, file) < 0)
        return mvm_error_set(err, ENOMEM, "out of memory");
    return mvm_write_file_atomic(p, text, strlen(text), 0600, err);
}

char *vm_read_text(const char *dir, const char *file) {
    _cleanup_free_ char *p = NULL;
    char *buf = NULL;
    size_t len;
    mvm_error *e = NULL;
    if (asprintf(&p, "%s/%s", dir, file) < 0)
        return NULL;
    if (mvm_read_file(p, 1 << 16, &buf, &len, &e) < 0) {
        mvm_error_free(e);
        return NULL;
    }
    while (len > 0 && (buf[len - 1] == '\n' || buf[len - 1] == ' '))
        buf[--len] = 0;
    return buf;
}

const char *mvm_vm_state_name(enum mvm_vm_state s) {
    static const char *n[] = {"starting", "running", "paused", "stopping", "exited", "dead"};
    return (unsigned)s < ARRAY_SIZE(n) ? n[s] : "unknown";
}

void mvm_vm_info_clear(struct mvm_vm_info *i) {
    free(i->name);
    free(i->image);
    free(i->digest);
    free(i->backend);
    free(i->tier);
    free(i->accel);
    free(i->exit_reason);
    free(i->state_dir);
    memset(i, 0, sizeof(*i));
}

static pid_t read_pid(const char *dir, const char *file) {
    _cleanup_free_ char *s = vm_read_text(dir, file);
    return s ? (pid_t)atoi(s) : 0;
}

static int inspect_dir(const char *dir, const char *name, struct mvm_vm_info *out, mvm_error **err) {
    memset(out, 0, sizeof(*out));
    struct vm_config c;
    if (vm_config_read(dir, &c, err) < 0)
        return mvm_error_wrap(err, "VM '%s'", name);
    out->name = steal_pointer(&c.name);
    out->image = steal_pointer(&c.image);
    out->digest = steal_pointer(&c.digest);
    out->backend = steal_pointer(&c.backend);
    out->tier = steal_pointer(&c.tier);
    out->accel = steal_pointer(&c.accel);
    out->cpus = c.cpus;
    out->mem_mib = c.mem_mib;
    out->created = c.created;
    vm_config_clear(&c);
    out->state_dir = strdup(dir);
    out->exit_code = -1;
    out->monitor_pid = read_pid(dir, VM_MONITOR_PID);
    out->hypervisor_pid = read_pid(dir, VM_HYPERVISOR_PID);

    int held = vm_lock_held(dir);
    _cleanup_free_ char *status = vm_read_text(dir, VM_STATUS);
    if (held == 1) {
        _cleanup_free_ char *st = vm_read_text(dir, VM_STATE);
        if (!st || !strcmp(st, "starting"))
            out->state = MVM_VM_STARTING;
        else if (!strcmp(st, "paused"))
            out->state = MVM_VM_PAUSED;
        else if (!strcmp(st, "stopping"))
            out->state = MVM_VM_STOPPING;
        else
            out->state = MVM_VM_RUNNING;
        return 0;
    }
    out->hypervisor_pid = out->hypervisor_pid && kill(out->hypervisor_pid, 0) == 0 &&
                                  mvm_pid_matches(out->hypervisor_pid, dir)
                              ? out->hypervisor_pid
                              : 0;
    if (status) {
        json_t *j = json_loads(status, 0, NULL);
        out->state = MVM_VM_EXITED;
        const char *reason = json_string_value(json_object_get(j, "reason"));
        out->exit_reason = strdup(reason ? reason : "exited");
        json_t *code = json_object_get(j, "exit_code");
        out->exit_code = json_is_integer(code) ? (int)json_integer_value(code) : -1;
        out->finished = json_integer_value(json_object_get(j, "finished"));
        json_decref(j);
    } else {
        out->state = MVM_VM_DEAD;
        out->exit_reason = strdup("monitor is gone (killed?); no exit was recorded");
    }
    out->monitor_pid = 0;
    return 0;
}

int mvm_vm_inspect(const char *name, struct mvm_vm_info *out, mvm_error **err) {
    _cleanup_free_ char *dir = mvm_vm_dir(name, err);
    if (!dir)
        return -1;
    struct stat st;
    if (stat(dir, &st) < 0)
        return mvm_error_set(err, MVM_ENOTFOUND, "no such VM '%s' (see mvmctl ls -a)", name);
    /* a VM whose `run` is still claiming it may have no config yet */
    for (int i = 0; i < 50; i++) {
        _cleanup_free_ char *cfg = NULL;
        if (asprintf(&cfg, "%s/" VM_CONFIG, dir) < 0)
            return mvm_error_set(err, ENOMEM, "out of memory");
        if (access(cfg, F_OK) == 0)
            break;
        usleep(20000);
    }
    return inspect_dir(dir, name, out, err);
}

static int cmp_info(const void *a, const void *b) {
    const struct mvm_vm_info *x = a, *y = b;
    return strcmp(x->name, y->name);
}

int mvm_vm_list(struct mvm_vm_info **out, size_t *n, mvm_error **err) {
    *out = NULL;
    *n = 0;
    _cleanup_free_ char *root = vm_root_dir(err);
    if (!root)
        return -1;
    _cleanup_closedir_ DIR *d = opendir(root);
    if (!d)
        return mvm_error_sys(err, "opendir %s", root);
    struct mvm_vm_info *v = NULL;
    size_t cnt = 0;
    struct dirent *de;
    while ((de = readdir(d))) {
        if (de->d_name[0] == '.')
            continue;
        mvm_error *e = NULL;
        if (mvm_name_validate("VM", de->d_name, &e) < 0) {
            mvm_error_free(e);
            continue;
        }
        _cleanup_free_ char *dir = NULL;
        if (asprintf(&dir, "%s/%s", root, de->d_name) < 0)
            break;
        struct mvm_vm_info info;
        if (inspect_dir(dir, de->d_name, &info, &e) < 0) {
            /* being created or removed right now: not listed */
            mvm_error_free(e);
            continue;
        }
        struct mvm_vm_info *nv = realloc(v, (cnt + 1) * sizeof(*v));
        if (!nv) {
            mvm_vm_info_clear(&info);
            break;
        }
        v = nv;
        v[cnt++] = info;
    }
    if (cnt)
        qsort(v, cnt, sizeof(*v), cmp_info);
    *out = v;
    *n = cnt;
    return 0;
}

void mvm_vm_list_free(struct mvm_vm_info *v, size_t n) {
    for (size_t i = 0; i < n; i++)
        mvm_vm_info_clear(&v[i]);
    free(v);
}

/* The first VM in v[0..n) booted from digest, or NULL. */
static const char *vm_using(const struct mvm_vm_info *v, size_t n, const char *digest) {
    for (size_t i = 0; i < n; i++)
        if (v[i].digest && !strcmp(v[i].digest, digest))
            return v[i].name;
    return NULL;
}

char *mvm_vm_using_image(const char *digest) {
    struct mvm_vm_info *v = NULL;
    size_t n = 0;
    mvm_error *e = NULL;
    if (mvm_vm_list(&v, &n, &e) < 0) {
        mvm_error_free(e);
        return NULL;
    }
    const char *name = vm_using(v, n, digest);
    char *r = name ? strdup(name) : NULL;
    mvm_vm_list_free(v, n);
    return r;
}

int mvm_image_remove_unused(const char *ref, mvm_error **err) {
    _cleanup_(mvm_image_freep) mvm_image *img = NULL;
    if (mvm_image_resolve(ref, &img, err) < 0)
        return -1;
    /* dropping one of several tags leaves the image in place: always fine */
    struct mvm_image_info *v = NULL;
    size_t n = 0, tags = 0;
    bool ref_is_tag = false;
    if (mvm_image_list(&v, &n, err) < 0)
        return -1;
    for (size_t i = 0; i < n; i++)
        if (v[i].tag && !strcmp(v[i].digest, img->digest)) {
            tags++;
            ref_is_tag |= !strcmp(v[i].tag, ref);
        }
    mvm_image_info_free(v, n);
    if (!(ref_is_tag && tags > 1)) {
        _cleanup_free_ char *vm = mvm_vm_using_image(img->digest);
        if (vm)
            return mvm_error_set(err, MVM_ESTATE,
                                 "image '%s' is used by VM '%s' (mvmctl rm -f %s first)", ref, vm,
                                 vm);
    }
    return mvm_image_remove(ref, err);
}

int mvm_image_prune(size_t *removed, uint64_t *bytes, mvm_error **err) {
    struct mvm_image_info *v = NULL;
    struct mvm_vm_info *vms = NULL;
    size_t n = 0, nvms = 0;
    *removed = 0;
    *bytes = 0;
    if (mvm_image_list(&v, &n, err) < 0)
        return -1;
    if (mvm_vm_list(&vms, &nvms, err) < 0) {
        mvm_image_info_free(v, n);
        return -1;
    }
    int rc = 0;
    for (size_t i = 0; i < n && rc == 0; i++) {
        if (v[i].tag || vm_using(vms, nvms, v[i].digest))
            continue;
        char ref[80];
        snprintf(ref, sizeof(ref), "sha256:%s", v[i].digest);
        rc = mvm_image_remove(ref, err);
        if (rc == 0) {
            (*removed)++;
            *bytes += v[i].size;
        }
    }
    mvm_vm_list_free(vms, nvms);
    mvm_image_info_free(v, n);
    return rc;
}
