/*
 * libFuzzer harness for the agent wire protocol decoders: the incremental frame reader,
 * the header decoder, every mvm_mj getter and mvm_exec_req_decode. See README.md.
 */
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "mvm/proto.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void fuzz_json(const char *js, size_t len)
{
    static const char *const keys[] = { "argv", "env", "cwd", "tty", "rows", "cols",
                                        "code", "signal", "pid", "message", "version", "" };
    (void)mvm_mj_validate(js, len);
    for (size_t k = 0; k < sizeof(keys) / sizeof(keys[0]); k++) {
        char *s = NULL;
        if (mvm_mj_get_str(js, len, keys[k], &s) == 1)
            free(s);
        long long i;
        (void)mvm_mj_get_int(js, len, keys[k], &i);
        bool b;
        (void)mvm_mj_get_bool(js, len, keys[k], &b);
        char **v = NULL;
        if (mvm_mj_get_strv(js, len, keys[k], &v) == 1) {
            for (char **p = v; *p; p++)
                free(*p);
            free(v);
        }
    }
    struct mvm_exec_req r;
    if (mvm_exec_req_decode(js, len, &r) == 0) {
        /* what decodes must re-encode and decode to the same thing */
        size_t elen;
        char *enc = mvm_exec_req_encode(&r, &elen);
        if (enc) {
            struct mvm_exec_req r2;
            if (mvm_exec_req_decode(enc, elen, &r2) != 0)
                abort();
            for (size_t i = 0; r.argv[i] || r2.argv[i]; i++)
                if (!r.argv[i] || !r2.argv[i] || strcmp(r.argv[i], r2.argv[i]) != 0)
                    abort();
            mvm_exec_req_free(&r2);
            free(enc);
        }
        mvm_exec_req_free(&r);
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    /* 1. the whole input as a JSON control payload (heap copy so overreads are caught) */
    char *js = malloc(size ? size : 1);
    if (!js)
        return 0;
    if (size)
        memcpy(js, data, size);
    fuzz_json(js, size);
    free(js);

    /* 2. the input as a byte stream, fed to the frame reader in uneven chunks */
    struct mvm_frame_hdr h;
    (void)mvm_frame_decode_hdr(data, size, &h);
    struct mvm_frame_reader r;
    mvm_frame_reader_init(&r);
    size_t off = 0, step = 1;
    while (off < size) {
        size_t n = size - off < step ? size - off : step;
        if (mvm_frame_reader_feed(&r, data + off, n) < 0)
            break;
        off += n;
        step = step * 3 + 1;
        const uint8_t *p;
        int rc;
        while ((rc = mvm_frame_reader_next(&r, &h, &p)) == 1) {
            if (h.len > MVM_FRAME_MAX || h.type < MVM_F_HELLO || h.type > MVM_F_TYPE_MAX)
                abort();
            (void)mvm_frame_type_name(h.type);
            if (h.type != MVM_F_STDIN && h.type != MVM_F_STDOUT && h.type != MVM_F_STDERR)
                fuzz_json((const char *)p, h.len);
        }
        if (rc < 0)
            break;
    }
    mvm_frame_reader_free(&r);
    return 0;
}
