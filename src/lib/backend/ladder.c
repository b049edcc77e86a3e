/* The backend ladder: ranks the probe() results of the known backends. */
#include "backend-internal.h"
#include "util.h"

#include <string.h>

static const struct mvm_backend_ops *const ladder[] = {
    &mvm_backend_qemu,
};

const struct mvm_backend_ops *const *mvm_backends(size_t *n) {
    *n = ARRAY_SIZE(ladder);
    return ladder;
}

const struct mvm_backend_ops *mvm_backend_by_name(const char *name) {
    for (size_t i = 0; i < ARRAY_SIZE(ladder); i++)
        if (!strcmp(ladder[i]->name, name))
            return ladder[i];
    return NULL;
}

const struct mvm_backend_ops *mvm_backend_select(const char *forced, mvm_error **err) {
    struct mvm_probe p;
    if (forced) {
        const struct mvm_backend_ops *b = mvm_backend_by_name(forced);
        if (!b) {
            char names[256] = "";
            for (size_t i = 0; i < ARRAY_SIZE(ladder); i++) {
                if (i) strncat(names, ", ", sizeof(names) - strlen(names) - 1);
                strncat(names, ladder[i]->name, sizeof(names) - strlen(names) - 1);
            }
            return mvm_error_set(err, MVM_EINVAL, "unknown hypervisor '%s' (known: %s)", forced, names),
                   NULL;
        }
        memset(&p, 0, sizeof(p));
        b->probe(&p);
        if (!p.available)
            return mvm_error_set(err, MVM_EUNAVAIL, "hypervisor %s is not available on this host: %s",
                                 b->name, p.reason), NULL;
        return b;
    }
    char why[1024] = "";
    for (size_t i = 0; i < ARRAY_SIZE(ladder); i++) {
        memset(&p, 0, sizeof(p));
        ladder[i]->probe(&p);
        if (p.available)
            return ladder[i];
        size_t l = strlen(why);
        snprintf(why + l, sizeof(why) - l, "%s%s: %s", l ? "; " : "", ladder[i]->name, p.reason);
    }
    return mvm_error_set(err, MVM_EUNAVAIL, "no hypervisor available (%s)", why), NULL;
}
