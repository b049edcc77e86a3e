/*
 * mvm agent wire protocol, shared by mvm-agent (guest), the per-VM monitor and mvmctl.
 *
 * One multiplexed byte stream (virtio-serial port, vsock, or the monitor's Unix socket).
 * Every frame is a fixed 12-byte header followed by `len` payload bytes:
 *
 *   offset 0  u32  len      payload length, big-endian, <= MVM_FRAME_MAX
 *   offset 4  u8   type     enum mvm_frame_type
 *   offset 5  u8   flags    0 (reserved, must be 0)
 *   offset 6  u16  reserved 0
 *   offset 8  u32  chan     channel id, big-endian; 0 = connection-level control
 *
 * Control payloads are small flat JSON objects (see mvm_mj_* below); data payloads
 * (STDIN/STDOUT/STDERR) are raw bytes. A zero-length STDIN frame means end of input.
 *
 * Conversation: each side sends HELLO {"version":1,"role":"...","caps":[...]} on
 * channel 0 first; a peer answers any HELLO it receives with its own HELLO until it
 * has seen one. Then the client opens exec sessions:
 *   -> EXEC    chan N {"argv":[...],"env":["K=V",...],"cwd":"/","tty":false,"rows":24,"cols":80}
 *   <- STARTED chan N {"pid":123}          or ERROR chan N {"message":"...","code":127}
 *   -> STDIN   chan N raw (len 0 = EOF);  RESIZE {"rows":R,"cols":C};  SIGNAL {"signal":15}
 *   <- STDOUT / STDERR chan N raw
 *   <- EXIT    chan N {"code":7} or {"signal":9}    (sent after stdout/stderr reached EOF)
 * PING/PONG on channel 0 echo their payload. SHUTDOWN {"reboot":false} asks the guest to
 * sync and power off. CTL_REQ/CTL_RESP are answered by the monitor itself, never forwarded.
 */
#ifndef MVM_PROTO_H
#define MVM_PROTO_H

#include <stddef.h>
#include <stdint.h>
#include <stdbool.h>

#define MVM_PROTO_VERSION 1
#define MVM_FRAME_HDR 12
#define MVM_FRAME_MAX (256u * 1024u) /* maximum payload bytes of one frame */
#define MVM_AGENT_PORT_NAME "org.mvm.agent.0"
#define MVM_AGENT_VSOCK_PORT 1024u

enum mvm_frame_type {
    MVM_F_HELLO = 1,
    MVM_F_PING = 2,
    MVM_F_PONG = 3,
    MVM_F_EXEC = 4,
    MVM_F_STARTED = 5,
    MVM_F_STDIN = 6,
    MVM_F_STDOUT = 7,
    MVM_F_STDERR = 8,
    MVM_F_RESIZE = 9,
    MVM_F_SIGNAL = 10,
    MVM_F_EXIT = 11,
    MVM_F_ERROR = 12,
    MVM_F_SHUTDOWN = 13,
    MVM_F_CTL_REQ = 14,
    MVM_F_CTL_RESP = 15,
    MVM_F_TYPE_MAX = 15,
};

struct mvm_frame_hdr {
    uint32_t len;
    uint8_t type;
    uint8_t flags;
    uint32_t chan;
};

/* Writes the 12 header bytes. Returns 0, or -1 if len > MVM_FRAME_MAX or type invalid. */
int mvm_frame_encode_hdr(uint8_t out[MVM_FRAME_HDR], uint8_t type, uint32_t chan, uint32_t len);

/* Decodes a header from buf[0..n). Returns MVM_FRAME_HDR on success, 0 if n < MVM_FRAME_HDR
 * (need more bytes), -1 on a malformed header (len too large, unknown type, flags or
 * reserved bits set). Never reads past buf[n-1]. */
int mvm_frame_decode_hdr(const uint8_t *buf, size_t n, struct mvm_frame_hdr *out);

const char *mvm_frame_type_name(uint8_t type);

/*
 * Incremental frame reader over a byte stream: feed it bytes, take whole frames out.
 */
struct mvm_frame_reader {
    uint8_t *buf;
    size_t len, cap;
    bool bad; /* a malformed header was seen: the stream is unusable */
};
void mvm_frame_reader_init(struct mvm_frame_reader *r);
void mvm_frame_reader_free(struct mvm_frame_reader *r);
/* Appends n bytes. Returns 0, or -1 on allocation failure. */
int mvm_frame_reader_feed(struct mvm_frame_reader *r, const void *data, size_t n);
/* Takes the next complete frame. Returns 1 and sets *hdr and *payload (pointing into the
 * reader's buffer, valid until the next feed/next call), 0 if no complete frame yet, -1 if
 * the stream is malformed (sets r->bad). */
int mvm_frame_reader_next(struct mvm_frame_reader *r, struct mvm_frame_hdr *hdr,
                          const uint8_t **payload);

/* Writes one whole frame to a blocking fd (retries on EINTR / short writes).
 * Returns 0 or -1 with errno set. */
int mvm_frame_write(int fd, uint8_t type, uint32_t chan, const void *payload, size_t len);

/* Reads one whole frame from a blocking fd into a malloc'd payload buffer (NUL-terminated
 * for convenience, *payload may be NULL when len == 0 ... it is always allocated). Returns 1
 * on a frame, 0 on clean EOF before any header byte, -1 on error (errno set; EPROTO for
 * a malformed frame, EIO for EOF inside a frame). */
int mvm_frame_read(int fd, struct mvm_frame_hdr *hdr, uint8_t **payload);

/*
 * Minimal JSON for control payloads: flat objects whose values are strings, integers,
 * booleans, or arrays of strings. Nesting deeper than that is rejected. Lengths are
 * always explicit; input need not be NUL-terminated. All getters return 1 if the key was
 * found with the right type, 0 if absent, -1 if the document is malformed or the value
 * has the wrong type / does not fit.
 */
int mvm_mj_validate(const char *js, size_t len); /* 0 ok, -1 malformed */
int mvm_mj_get_str(const char *js, size_t len, const char *key, char **out);   /* malloc'd */
int mvm_mj_get_int(const char *js, size_t len, const char *key, long long *out);
int mvm_mj_get_bool(const char *js, size_t len, const char *key, bool *out);
int mvm_mj_get_strv(const char *js, size_t len, const char *key, char ***out); /* NULL-terminated, malloc'd */

/* Writer: builds "{...}" into a growing heap buffer. Errors are sticky (w->oom). */
struct mvm_mj_writer {
    char *buf;
    size_t len, cap;
    bool oom;
    bool need_comma;
};
void mvm_mj_begin(struct mvm_mj_writer *w);
void mvm_mj_str(struct mvm_mj_writer *w, const char *key, const char *val);
void mvm_mj_int(struct mvm_mj_writer *w, const char *key, long long val);
void mvm_mj_bool(struct mvm_mj_writer *w, const char *key, bool val);
void mvm_mj_strv(struct mvm_mj_writer *w, const char *key, char *const *vals); /* NULL-terminated */
/* Closes the object; returns the NUL-terminated buffer (caller frees) and its length in *len,
 * or NULL on allocation failure. */
char *mvm_mj_end(struct mvm_mj_writer *w, size_t *len);

/* Typed messages built on the above, used by both sides. */
struct mvm_exec_req {
    char **argv; /* NULL-terminated, argv[0] required */
    char **env;  /* NULL-terminated "K=V" entries, may be NULL */
    char *cwd;   /* may be NULL */
    bool tty;
    int rows, cols;
};
#define MVM_EXEC_MAX_ARGS 4096
char *mvm_exec_req_encode(const struct mvm_exec_req *r, size_t *len);
/* Returns 0 or -1 (malformed / missing argv / an env entry without '='). */
int mvm_exec_req_decode(const char *js, size_t len, struct mvm_exec_req *out);
void mvm_exec_req_free(struct mvm_exec_req *r);

#endif
