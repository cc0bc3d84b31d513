/* copy-engine.h - what the two halves of the copy engine share: copy.c hands
 * out jobs and keeps their order, copy-write.c writes a job's bytes. */
#ifndef VD_COPY_ENGINE_H
#define VD_COPY_ENGINE_H
#include "vd-driver.h"

#include <pthread.h>

/* What vd_copy() works out from its options before the workers start. */
struct copy_plan {
    vd_image *in, *out, *cmp;
    uint64_t size;                     /* bytes to copy (<= both sizes) */
    uint64_t sparse_size;
    int workers;
    bool out_reads_zero;
    bool only_top;                     /* copy only ranges allocated in the
                                          top `top_layers` layers of `in` */
    int top_layers;
    bool zero_copy;                    /* data the source stores plainly in a
                                          file moves with copy_file_range */
    bool allocate;                     /* zero ranges of `in` are written as
                                          data too (fully allocated output) */
    int out_fd;                        /* a raw target's fd, or -1 */
    uint32_t compress_cluster;         /* write whole clusters of this size
                                          with vd_pwrite_compressed */
    bool direct;                       /* out_fd is O_DIRECT: unaligned writes
                                          go through the library instead */
};

enum engine_kind {
    ENGINE_DATA,        /* read the source, write what is not zero/same */
    ENGINE_ZERO,        /* write zeroes, no read */
    ENGINE_ZERO_CMP,    /* source is zero; write zeroes where `cmp` is not */
};

/* Data writes of a job into target clusters mapped in its turn, done after
 * the turn is handed on (struct engine.map_direct). */
#define ENGINE_MAX_PEND 16
struct engine_pends {
    uint32_t n;
    struct { const char *buf; uint64_t file_off, len; } v[ENGINE_MAX_PEND];
};

struct engine_job {
    uint64_t off, len;
    enum engine_kind kind;
    uint64_t seq;
    int src_fd;             /* the file holding the data plainly, or -1 */
    uint64_t src_off;       /* where `off` lives in src_fd */
    char *buf, *cbuf;       /* the job's buffers (source, comparison); buf
                               is also the bounce buffer of fallbacks */
    struct engine_pends *pend;  /* map_direct: the data writes left for
                                   after the turn, else NULL */
};

struct engine {
    struct copy_plan *c;
    pthread_mutex_t lock;
    pthread_cond_t turn;
    /* producer state (under lock) */
    vd_extents ext;
    size_t ei;
    uint64_t pos;
    uint64_t covered;       /* end of the last job handed out */
    uint64_t next_seq;
    /* writer state (under lock) */
    uint64_t write_seq;     /* the next job to write (ordered targets) */
    bool ordered;
    uint32_t window;        /* ordered: most jobs handed out, not written */
    struct engine_slot *slots;
    /* first failure (under lock) */
    bool failed;
    vd_error err;
    /* progress (done under __atomic; the callback gets the running total) */
    uint64_t done;
    vd_progress_fn progress;
    void *progress_ctx;
    /* zero-copy target side (set once) */
    int out_data_fd;        /* image target's data file for mapped writes, or -1 */
    uint32_t out_cluster;
    bool no_copy_range;     /* copy_file_range refused once: stop trying */
    uint32_t chunk;         /* bytes per job (set once, engine_job_size) */
    /* An image target written O_DIRECT (-t none, directsync), new and
     * mappable: a job maps its clusters in its turn and writes their data
     * after passing the turn on, from its worker's own buffer, so the
     * workers' writes wait for the device at the same time instead of one
     * after the other.  (set once) */
    bool map_direct;
    vd_file *out_file;      /* map_direct: the target's data file */
};

/* copy-write.c */
/* Write a job that has been read (or needs no read). */
int engine_write_job(struct engine *g, const struct engine_job *j, vd_error *e);
/* Split a job's buffer into pieces at the sparse-size grid and write runs of
 * equal kind with one call each; `buf` is NULL for a zero-copy job that was
 * not read (no zero detection), `cbuf` what the target shows (or NULL). */
int engine_write_pieces(struct engine *g, const struct engine_job *j, const char *buf,
                        const char *cbuf, vd_error *e);
/* map_direct: write the data the job's turn mapped (after the turn). */
int engine_write_pending(struct engine *g, struct engine_pends *p, vd_error *e);
/* The bytes of a zero-copy job's run: `buf` when the job was read for zero
 * detection, else read into the job's buffer; NULL after an error. */
const char *engine_run_bytes(const struct engine_job *j, const char *buf, uint64_t off,
                             uint64_t len, vd_error *e);

#endif
