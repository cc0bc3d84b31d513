/* copy.c - vd_copy(), the copy engine behind vdconvert's convert, commit and
 * rebase and ovatool's import and export.
 *
 * The source is walked by block status, so holes are never read and ranges
 * known to be zero are never written to a target that already reads zeroes.
 * Data ranges are cut into jobs (engine_job_size); worker threads read
 * (and, inside the drivers, decompress) jobs in parallel, find runs of zeroes
 * of at least the sparse size, and write the rest.  Writes go out in job
 * order, because a streaming target (streamOptimized VMDK) must be written
 * strictly sequentially; a raw target is written through its own fd without
 * waiting, since order does not matter there.
 *
 * Data the source stores plainly in a file (raw, uncompressed qcow2 clusters
 * and the like: block status gives its file offset) is not written from a
 * buffer: zero detection (-S above 0) reads the job into its buffer with
 * one pread, and the runs to copy go with copy_file_range straight into the
 * target's file, at the guest offset of a raw target or into clusters
 * vd_map_for_write allocates in an image target.  On a file system with
 * reflinks (XFS, btrfs) the data is then shared, not copied; elsewhere the
 * kernel copies it once, page cache to page cache.  Whatever
 * copy_file_range or the layouts do not allow (another file system, a run
 * not in whole target clusters) is written from the buffer.  On a file
 * system that cannot share blocks, zero detection sends every job the
 * ordinary way: with the bytes read anyway, writing them from the buffer
 * beats the kernel's copy (vd_fs_shares_blocks).
 * Compressed output (-c) goes in whole clusters through vd_pwrite_compressed,
 * so its jobs are widened to cluster boundaries.  Memory is one or two
 * buffers per worker (two more for an image target: engine_submit),
 * whatever the size of the image.
 */
#include "vd-driver.h"
#include "vd-internal.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <sys/stat.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* Bytes per job.  The job's buffer is read into and then written from, so
 * it should stay in the core's cache in between: with 4 MiB jobs the write
 * copied from memory, and the conversions took more CPU.  Measured on ext4
 * (1 GiB image of bench/run.sh, -t unsafe, 5 pairs in turns, loaded 2-vCPU
 * EPYC with 1 MiB of L2 per core): raw -> qcow2 0.43 s of CPU with 1 MiB
 * jobs against 0.67 s with 4 MiB; qcow2 -> vmdk 0.41 against 0.55 s;
 * streamOptimized -> qcow2 1.04 against 1.17 s; 256 KiB gave the same as
 * 1 MiB. */
#define ENGINE_CHUNK (1u << 20)
/* Jobs grow to a target cluster up to this size: a compressed cluster is
 * written whole (qcow2 allows 2 MiB), and a mapped copy_file_range needs
 * jobs of whole target clusters (a VHD block is 2 MiB). */
#define ENGINE_MAX_JOB (4u << 20)
#define ENGINE_WINDOW (1ull << 32)       /* bytes per block-status call */
#define ENGINE_MAX_WORKERS 64
#define ENGINE_MAX_COMPRESS_CLUSTER (2u << 20)

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

struct engine_job {
    uint64_t off, len;
    enum engine_kind kind;
    uint64_t seq;
    int src_fd;             /* the file holding the data plainly, or -1 */
    uint64_t src_off;       /* where `off` lives in src_fd */
    char *buf, *cbuf;       /* the job's buffers (source, comparison); buf
                               is also the bounce buffer of fallbacks */
};

/* Jobs of an ordered target that are handed out but not written yet: job
 * `seq` lives in slot seq % window, with its own buffers, until it is
 * written. */
struct engine_slot {
    struct engine_job job;
    bool ready;             /* read, waiting for the jobs before it */
    char *buf, *cbuf;       /* allocated at first use, kept to the end */
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
};

static void engine_progress(struct engine *g, uint64_t n)
{
    uint64_t done = __atomic_add_fetch(&g->done, n, __ATOMIC_RELAXED);
    if (g->progress)
        g->progress(g->progress_ctx, done < g->c->size ? done : g->c->size, g->c->size);
}

static void engine_fail(struct engine *g, const vd_error *e)
{
    pthread_mutex_lock(&g->lock);
    if (!g->failed) {
        g->failed = true;
        g->err = *e;
    }
    pthread_cond_broadcast(&g->turn);
    pthread_mutex_unlock(&g->lock);
}

/* Refill the extent list from the source's block status at g->pos. */
static int engine_refill(struct engine *g, vd_error *e)
{
    struct copy_plan *c = g->c;
    uint64_t want = c->size - g->pos;
    if (want > ENGINE_WINDOW)
        want = ENGINE_WINDOW;
    vd_extents_clear(&g->ext);
    g->ei = 0;
    int r = vd_block_status(c->in, g->pos, want, &g->ext, e);
    if (r < 0)
        return r;
    if (!g->ext.n || g->ext.v[0].off > g->pos)
        return vd_set_error(e, -EIO, "%s: block status at 0x%llx described nothing",
                            vd_filename(c->in), (unsigned long long)g->pos);
    return 0;
}

/* Set the extent of a job that reads data, starting at g->pos: up to the
 * next chunk boundary (so later jobs are aligned) or `xend`.  Compressed
 * output is written in whole clusters, so the job is widened to cluster
 * boundaries, never back into the previous job. */
static void engine_cut_job(struct engine *g, struct engine_job *j, uint64_t xend)
{
    struct copy_plan *c = g->c;
    uint64_t start = g->pos;
    if (c->compress_cluster) {
        uint64_t cs = c->compress_cluster;
        start = start / cs * cs;
        if (start < g->covered)
            start = g->covered;
    }
    uint64_t lim = (start / g->chunk + 1) * g->chunk;
    uint64_t end = xend < lim ? xend : lim;
    if (c->compress_cluster) {
        end = vd_round_up(end, c->compress_cluster);
        if (end > c->size)
            end = c->size;
    }
    j->off = start;
    j->len = end - start;
}

/* Hand out the next job (lock held).  Returns 1 with a job, 0 at the end,
 * negative on error.  Ranges that need no work are skipped here. */
static int engine_next_job(struct engine *g, struct engine_job *j, vd_error *e)
{
    struct copy_plan *c = g->c;
    while (g->pos < c->size) {
        if (g->ei >= g->ext.n) {
            int r = engine_refill(g, e);
            if (r < 0)
                return r;
        }
        const vd_extent *x = &g->ext.v[g->ei];
        uint64_t xend = x->off + x->len;
        if (xend > c->size)
            xend = c->size;
        if (xend <= g->pos) {
            g->ei++;
            continue;
        }
        bool zero = (x->flags & VD_EXT_ZERO) != 0;
        /* -S 0: a zero range is written as data like any other (a job of
         * zeroed buffers, no zero detection), so that it is allocated. */
        bool fill = zero && !c->cmp && c->allocate;
        bool skip = c->only_top ? x->depth < 0 || x->depth >= c->top_layers
                                : zero && !c->cmp && c->out_reads_zero && !fill;
        if (skip) {
            engine_progress(g, xend - g->pos);
            g->pos = xend;
            g->ei++;
            continue;
        }
        j->off = g->pos;
        j->seq = g->next_seq++;
        j->src_fd = -1;
        j->buf = j->cbuf = NULL;
        if (!zero && c->zero_copy && !(x->flags & VD_EXT_COMPRESSED) &&
            x->file_off != VD_NO_OFFSET && !__atomic_load_n(&g->no_copy_range, __ATOMIC_RELAXED)) {
            j->src_fd = vd_data_fd(c->in, x->depth);
            j->src_off = x->file_off + (g->pos - x->off);
        }
        if (zero && !c->cmp && !fill) {
            /* One job for the whole range: it is never read. */
            j->kind = ENGINE_ZERO;
            j->len = xend - g->pos;
        } else {
            j->kind = zero ? ENGINE_ZERO_CMP : ENGINE_DATA;
            engine_cut_job(g, j, xend);
        }
        if (j->off + j->len > g->pos)
            g->pos = j->off + j->len;
        g->covered = j->off + j->len;
        if (g->pos >= xend)
            g->ei++;
        return 1;
    }
    return 0;
}

/* Wait until it is job `seq`'s turn to write (ordered targets).  Returns
 * false when another worker failed.  Only zero-copy jobs wait: the others
 * are left in their slot (engine_submit). */
static bool engine_wait_turn(struct engine *g, uint64_t seq)
{
    if (!g->ordered)
        return true;
    pthread_mutex_lock(&g->lock);
    while (g->write_seq != seq && !g->failed)
        pthread_cond_wait(&g->turn, &g->lock);
    bool ok = !g->failed;
    pthread_mutex_unlock(&g->lock);
    return ok;
}

/* Write data to the target: through the raw fd when there is one. */
static int engine_write(struct engine *g, const char *buf, uint64_t len, uint64_t off,
                        vd_error *e)
{
    struct copy_plan *c = g->c;
    if (c->out_fd < 0)
        return vd_pwrite(c->out, buf, len, off, e);
    while (len) {
        ssize_t n = pwrite(c->out_fd, buf, len, (off_t)off);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0 && errno == EINVAL && c->direct)  /* unaligned for O_DIRECT */
            return vd_pwrite(c->out, buf, len, off, e);
        if (n <= 0)
            return vd_set_errno(e, n < 0 ? -errno : -EIO, "%s: write at 0x%llx",
                                vd_filename(c->out), (unsigned long long)off);
        vd_note_write(c->out, off, (uint64_t)n);    /* early writeback */
        buf += n;
        off += (uint64_t)n;
        len -= (uint64_t)n;
    }
    return 0;
}

/* Let the kernel move len bytes from in_fd at in_off to out_fd at out_off
 * (a reflink where the file system can).  Returns 1, having copied nothing,
 * when copy_file_range cannot work between these files, 0 when done. */
static int engine_copy_range(struct engine *g, int in_fd, uint64_t in_off, int out_fd,
                             uint64_t out_off, uint64_t len, vd_error *e)
{
    loff_t io = (loff_t)in_off, oo = (loff_t)out_off;
    while (len) {
        ssize_t n = copy_file_range(in_fd, &io, out_fd, &oo, len, 0);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0 && (errno == EXDEV || errno == ENOSYS || errno == EINVAL ||
                      errno == EOPNOTSUPP || errno == EBADF) && (uint64_t)io == in_off) {
            __atomic_store_n(&g->no_copy_range, true, __ATOMIC_RELAXED);
            return 1;
        }
        if (n <= 0)      /* 0: the source file ended early (checked before) */
            return vd_set_errno(e, n < 0 ? -errno : -EIO, "%s: copy_file_range at 0x%llx",
                                vd_filename(g->c->out), (unsigned long long)oo);
        len -= (uint64_t)n;
    }
    return 0;
}

/* Zeroes may become holes only where a hole reads as zeroes: not in a
 * target with a backing file. */
static unsigned engine_zero_flags(const struct copy_plan *c)
{
    return vd_backing(c->out) ? 0 : VD_ZERO_MAY_UNMAP;
}

enum engine_piece { PIECE_SKIP, PIECE_ZERO, PIECE_DATA };

/* What to do with the `n` bytes at buf (source) / cbuf (what the target
 * shows now, or NULL when that is zeroes or unknown). */
static enum engine_piece engine_classify(const struct copy_plan *c, const char *buf,
                                         const char *cbuf, size_t n, bool detect)
{
    if (cbuf)
        return !memcmp(buf, cbuf, n) ? PIECE_SKIP
               : vd_is_zero(buf, n) ? PIECE_ZERO : PIECE_DATA;
    if (!detect || !vd_is_zero(buf, n))
        return PIECE_DATA;
    return c->out_reads_zero ? PIECE_SKIP : PIECE_ZERO;
}

/* The bytes of a zero-copy job's run: `buf` when the job was read for zero
 * detection, else read into the job's buffer. */
static const char *engine_run_bytes(const struct engine_job *j, const char *buf, uint64_t off,
                                    uint64_t len, vd_error *e)
{
    if (buf)
        return buf;
    uint64_t src = j->src_off + (off - j->off);
    size_t done = 0;
    while (done < len) {
        ssize_t n = pread(j->src_fd, j->buf + done, (size_t)(len - done), (off_t)(src + done));
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0) {
            vd_set_errno(e, n < 0 ? -errno : -EIO, "source read at 0x%llx",
                         (unsigned long long)(src + done));
            return NULL;
        }
        done += (size_t)n;
    }
    return j->buf;
}

/* A run of data of a zero-copy job: copy_file_range into the target's file
 * where the target allows, else through user space. */
static int engine_transfer(struct engine *g, const struct engine_job *j, const char *buf,
                           uint64_t off, uint64_t len, vd_error *e)
{
    struct copy_plan *c = g->c;
    uint64_t src = j->src_off + (off - j->off);
    int r = 1;
    /* Offsets that differ within a page can never share blocks: the kernel
     * would copy through a pipe, slower than writing from the buffer. */
    bool congruent = (src - off) % 4096 == 0;
    if (__atomic_load_n(&g->no_copy_range, __ATOMIC_RELAXED) || (!congruent && buf))
        r = 1;
    else if (c->out_fd >= 0) {
        if ((r = engine_copy_range(g, j->src_fd, src, c->out_fd, off, len, e)) <= 0) {
            if (r == 0)
                vd_note_write(c->out, off, len);
            return r;
        }
    } else if (g->out_data_fd >= 0 && off % g->out_cluster == 0 &&
             (len % g->out_cluster == 0 || off + len == vd_size(c->out))) {
        while (len) {
            uint64_t fo, m;
            if ((r = vd_map_for_write(c->out, off, len, &fo, &m, e)) < 0)
                return r;
            if ((r = engine_copy_range(g, j->src_fd, src, g->out_data_fd, fo, m, e)) != 0)
                break;   /* error, or the rest through user space */
            vd_note_write(c->out, fo, m);
            off += m;
            src += m;
            len -= m;
            if (buf)
                buf += m;
        }
        if (r <= 0)
            return r;
    }
    const char *bytes = engine_run_bytes(j, buf, off, len, e);
    if (!bytes)
        return -EIO;
    return engine_write(g, bytes, len, off, e);
}

static int engine_flush_run(struct engine *g, const struct engine_job *j, enum engine_piece kind,
                            const char *buf, uint64_t off, uint64_t len, vd_error *e)
{
    if (kind == PIECE_DATA && j->src_fd >= 0)
        return engine_transfer(g, j, buf, off, len, e);
    if (kind == PIECE_DATA && g->c->compress_cluster)
        return vd_pwrite_compressed(g->c->out, buf, len, off, e);
    if (kind == PIECE_DATA)
        return engine_write(g, buf, len, off, e);
    if (kind == PIECE_ZERO)
        return vd_pwrite_zeroes(g->c->out, off, len, engine_zero_flags(g->c), e);
    return 0;
}

/* Split a job's buffer into pieces at the sparse-size grid and write runs of
 * equal kind with one call each. */
static int engine_write_pieces(struct engine *g, const struct engine_job *j,
                               const char *buf, const char *cbuf, vd_error *e)
{
    struct copy_plan *c = g->c;
    uint64_t gran = c->compress_cluster ? c->compress_cluster : c->sparse_size;
    bool detect = gran != 0;
    if (!gran)
        gran = cbuf ? 4096 : j->len;
    /* A target cluster holding any data is allocated whole (a zero-copy job
     * into an image target, or a driver that fills the rest of a new cluster
     * itself: whole_clusters), so its zero pieces are sent with the data
     * (the same bytes, from the source) and a run of clusters stays one
     * write; otherwise each zero piece split the run, into parts written
     * through memory (zero-copy) or each filled out to a whole cluster
     * through the driver's bounce buffer.  Whole clusters of zeroes are
     * still left out. */
    else if (g->out_cluster > gran && !cbuf &&
             ((j->src_fd >= 0 && g->out_data_fd >= 0) || c->out->drv->whole_clusters))
        gran = g->out_cluster;
    uint64_t run_off = j->off;
    enum engine_piece run_kind = PIECE_SKIP;
    uint64_t p = j->off, end = j->off + j->len;
    while (p < end) {
        uint64_t q = (p / gran + 1) * gran;
        if (q > end)
            q = end;
        size_t o = (size_t)(p - j->off);
        enum engine_piece k = engine_classify(c, buf + o, cbuf ? cbuf + o : NULL,
                                              (size_t)(q - p), detect);
        if (k != run_kind) {
            int r = engine_flush_run(g, j, run_kind, buf ? buf + (run_off - j->off) : NULL,
                                     run_off, p - run_off, e);
            if (r < 0)
                return r;
            run_off = p;
            run_kind = k;
        }
        p = q;
    }
    return engine_flush_run(g, j, run_kind, buf ? buf + (run_off - j->off) : NULL, run_off,
                            end - run_off, e);
}

/* Read what the comparison image shows at [off, off+len) (zeroes past its
 * end). */
static int engine_read_cmp(struct copy_plan *c, char *cbuf, uint64_t off, uint64_t len,
                           vd_error *e)
{
    uint64_t csize = vd_size(c->cmp), n = 0;
    if (off < csize) {
        n = csize - off < len ? csize - off : len;
        int r = vd_pread(c->cmp, cbuf, n, off, e);
        if (r < 0)
            return r;
    }
    memset(cbuf + n, 0, len - n);
    return 0;
}

/* Write a job that has been read (or needs no read). */
static int engine_write_job(struct engine *g, const struct engine_job *j, vd_error *e)
{
    if (j->kind == ENGINE_ZERO)
        return vd_pwrite_zeroes(g->c->out, j->off, j->len, engine_zero_flags(g->c), e);
    return engine_write_pieces(g, j, j->buf, g->c->cmp ? j->cbuf : NULL, e);
}

/* The job at write_seq has been written: pass the turn on, and write the
 * jobs after it that are ready in their slots, in order. */
static int engine_advance(struct engine *g, vd_error *e)
{
    if (!g->ordered)
        return 0;
    for (;;) {
        pthread_mutex_lock(&g->lock);
        g->write_seq++;
        struct engine_slot *s = &g->slots[g->write_seq % g->window];
        bool more = s->ready && s->job.seq == g->write_seq && !g->failed;
        s->ready = false;
        pthread_cond_broadcast(&g->turn);
        pthread_mutex_unlock(&g->lock);
        if (!more)
            return 0;
        /* This thread holds the turn now: the slot is not reused before
         * write_seq passes it. */
        int r = engine_write_job(g, &s->job, e);
        if (r < 0)
            return r;
    }
}

/* A job is read: write it when it is its turn (and the ready ones after
 * it); otherwise leave it in its slot for the thread that writes the job
 * before it, and go on to the next job.  So no worker sleeps while one
 * before it reads (a worker preempted on a loaded machine held the others
 * up when each waited for its turn). */
static int engine_submit(struct engine *g, const struct engine_job *j, vd_error *e)
{
    if (g->ordered) {
        pthread_mutex_lock(&g->lock);
        bool mine = g->write_seq == j->seq;
        if (!mine && !g->failed) {
            struct engine_slot *s = &g->slots[j->seq % g->window];
            s->job = *j;
            s->ready = true;
        }
        pthread_mutex_unlock(&g->lock);
        if (!mine)
            return 0;
    }
    int r = engine_write_job(g, j, e);
    return r < 0 ? r : engine_advance(g, e);
}

/* A job whose data the source stores plainly at j->src_off of j->src_fd.
 * Zero detection reads it into its buffer before its turn; runs of data go
 * through engine_transfer.  (A per-job mapping, scanned in the turn, cost
 * more on XFS: page first touches, mmap, munmap's TLB shootdown; raw ->
 * qcow2 -t unsafe took 3x the CPU.)  Returns 1 when the job must take the
 * ordinary path (the file is shorter than the range: the driver's read
 * decides what that reads as). */
static int engine_do_zero_copy(struct engine *g, const struct engine_job *j, vd_error *e)
{
    struct copy_plan *c = g->c;
    struct stat st;
    uint64_t end;
    if (fstat(j->src_fd, &st) < 0 || vd_add_overflow(j->src_off, j->len, &end) ||
        end > (uint64_t)st.st_size)
        return 1;
    const char *buf = NULL;
    if (c->sparse_size && !(buf = engine_run_bytes(j, NULL, j->off, j->len, e)))
        return -EIO;
    int r = 0;
    if (engine_wait_turn(g, j->seq)) {
        r = engine_write_pieces(g, j, buf, NULL, e);
        if (r == 0)
            r = engine_advance(g, e);
    }
    return r < 0 ? r : 0;
}

static int engine_do_job(struct engine *g, struct engine_job *j, vd_error *e)
{
    struct copy_plan *c = g->c;
    int r = 0;
    if (j->kind == ENGINE_ZERO)
        return engine_submit(g, j, e);
    if (j->src_fd >= 0 && (r = engine_do_zero_copy(g, j, e)) <= 0)
        return r;
    j->src_fd = -1;
    if (j->kind == ENGINE_ZERO_CMP)
        memset(j->buf, 0, j->len);
    else if ((r = vd_pread(c->in, j->buf, j->len, j->off, e)) < 0)
        return r;
    if (c->cmp && (r = engine_read_cmp(c, j->cbuf, j->off, j->len, e)) < 0)
        return r;
    return engine_submit(g, j, e);
}

/* Buffers of `chunk` bytes (and a second one for a comparison). */
static int engine_alloc(struct engine *g, char **buf, char **cbuf, vd_error *e)
{
    if ((!*buf && posix_memalign((void **)buf, 4096, g->chunk)) ||
        (g->c->cmp && !*cbuf && posix_memalign((void **)cbuf, 4096, g->chunk)))
        return vd_set_error(e, -ENOMEM, "out of memory for %u-byte buffers", g->chunk);
    return 0;
}

/* Take the next job (and, for an ordered target, wait for room in the
 * window of slots).  Returns 1 with a job, 0 at the end or after a failure,
 * negative on error. */
static int engine_take(struct engine *g, struct engine_job *j, vd_error *e)
{
    pthread_mutex_lock(&g->lock);
    while (g->ordered && !g->failed && g->next_seq - g->write_seq >= g->window)
        pthread_cond_wait(&g->turn, &g->lock);
    int r = g->failed ? 0 : engine_next_job(g, j, e);
    pthread_mutex_unlock(&g->lock);
    return r;
}

static void *engine_worker(void *arg)
{
    struct engine *g = arg;
    char *buf = NULL, *cbuf = NULL;      /* unordered targets: the worker's own */
    vd_error e = { 0 };
    for (;;) {
        struct engine_job j;
        int r = engine_take(g, &j, &e);
        if (r > 0 && j.kind != ENGINE_ZERO) {
            if (g->ordered) {
                /* the slot is this job's alone until it is written */
                struct engine_slot *s = &g->slots[j.seq % g->window];
                r = engine_alloc(g, &s->buf, &s->cbuf, &e);
                j.buf = s->buf;
                j.cbuf = s->cbuf;
            } else {
                r = engine_alloc(g, &buf, &cbuf, &e);
                j.buf = buf;
                j.cbuf = cbuf;
            }
            if (r == 0)
                r = 1;
        }
        if (r < 0)
            engine_fail(g, &e);
        if (r <= 0)
            break;
        if (engine_do_job(g, &j, &e) < 0) {
            engine_fail(g, &e);
            break;
        }
        engine_progress(g, j.len);
    }
    free(buf);
    free(cbuf);
    return NULL;
}

/* A raw target is written through its own file descriptor: no driver in
 * between, and no ordering needed. */
static int copy_raw_fd(vd_image *img)
{
    if (strcmp(img->drv->name, "raw") || !img->file)
        return -1;
    return img->file->fd;
}

/* Compressed output: the target must take compressed clusters, of a size a
 * job buffer holds. */
static int copy_setup_compress(struct copy_plan *c, vd_error *e)
{
    vd_info i;
    vd_get_info(c->out, &i);
    if (!vd_can_compress(c->out) || !i.cluster_size)
        return vd_set_error(e, -ENOTSUP, "format %s: compressed output (-c) is not "
                            "supported", i.format);
    if (i.cluster_size > ENGINE_MAX_COMPRESS_CLUSTER || !vd_is_pow2(i.cluster_size))
        return vd_set_error(e, -ENOTSUP, "format %s: compressed output with %u-byte "
                            "clusters is not supported", i.format, i.cluster_size);
    c->compress_cluster = i.cluster_size;
    c->out_fd = -1;
    return 0;
}

/* Turn the public options into the plan; opens the O_DIRECT fd (*direct_fd,
 * closed by the caller) for a raw target written with opts->direct. */
static int copy_plan_make(vd_image *src, vd_image *dst, const vd_copy_opts *o,
                          struct copy_plan *c, int *direct_fd, vd_error *e)
{
    uint64_t size = vd_size(src) < vd_size(dst) ? vd_size(src) : vd_size(dst);
    if (o->size > size)
        return vd_set_error(e, -EINVAL, "%s: copy of %llu bytes is larger than %s",
                            dst->path, (unsigned long long)o->size,
                            vd_size(src) < vd_size(dst) ? "the source" : "the target");
    if (dst->readonly)
        return vd_set_error(e, -EROFS, "%s: target is opened read-only", dst->path);
    *c = (struct copy_plan){
        .in = src, .out = dst, .cmp = o->compare, .size = o->size ? o->size : size,
        .sparse_size = o->sparse_size, .workers = o->threads,
        .out_reads_zero = o->target_is_zeroed, .only_top = o->only_top,
        .top_layers = o->top_layers > 1 ? o->top_layers : 1,
        /* A source read O_DIRECT is not mapped or spliced: both would go
         * through its page cache. */
        .zero_copy = !o->no_copy_range && !vd_reads_direct(src), .allocate = o->allocate,
        .out_fd = copy_raw_fd(dst),
    };
    int r = o->compress ? copy_setup_compress(c, e) : 0;
    if (o->direct)
        c->zero_copy = false;     /* copy_file_range goes through the page cache */
    bool dsync = dst->cache & VD_CACHE_SYNC_WRITES;
    if (r == 0 && (o->direct || dsync) && c->out_fd >= 0) {
        /* Bypass the page cache for the target's data (direct); synced
         * writes (writethrough, directsync: the target's cache mode). */
        *direct_fd = open(dst->path, O_WRONLY | (o->direct ? O_DIRECT : 0) |
                          (dsync ? O_DSYNC : 0));
        if (*direct_fd >= 0) {
            c->out_fd = *direct_fd;
            c->zero_copy = false;
            c->direct = o->direct;
        }
    }
    return r;
}

/* The job size: ENGINE_CHUNK, or the target cluster that a job must hold
 * whole (a compressed cluster, or a cluster that mapped copy_file_range
 * fills), up to ENGINE_MAX_JOB. */
static uint32_t engine_job_size(const struct engine *g)
{
    uint32_t chunk = ENGINE_CHUNK;
    if (g->c->compress_cluster > chunk)
        chunk = g->c->compress_cluster;      /* <= ENGINE_MAX_COMPRESS_CLUSTER */
    if (g->c->zero_copy && g->out_data_fd >= 0 && g->out_cluster > chunk && g->out_cluster <= ENGINE_MAX_JOB &&
        vd_is_pow2(g->out_cluster))
        chunk = g->out_cluster;
    return chunk;
}

static int copy_run(struct copy_plan *c, const vd_copy_opts *o, vd_error *e)
{
    /* Image targets are written in job order (streamOptimized VMDK needs it,
     * the others get a sequential layout), except compressed qcow2 output:
     * its driver compresses outside the image lock, so workers compress in
     * parallel and only the cluster bookkeeping is serialized. */
    struct engine g = { .c = c, .ordered = c->out_fd < 0 && !c->compress_cluster,
                        .out_data_fd = -1, .progress = o->progress,
                        .progress_ctx = o->progress_ctx };
    pthread_mutex_init(&g.lock, NULL);
    pthread_cond_init(&g.turn, NULL);
    vd_extents_init(&g.ext);
    if (c->cmp || c->compress_cluster || c->only_top)
        c->zero_copy = false;      /* copy_file_range only for plain copies */
    vd_info info;
    if (c->out_fd < 0 && vd_get_info(c->out, &info) == 0 && info.cluster_size) {
        g.out_cluster = info.cluster_size;
        if (c->zero_copy && vd_can_map_for_write(c->out))
            g.out_data_fd = vd_data_fd(c->out, 0);
    }
    if (c->zero_copy && c->sparse_size &&
        !vd_fs_shares_blocks(g.ordered ? g.out_data_fd : c->out_fd))
        c->zero_copy = false;
    g.chunk = engine_job_size(&g);
    int n = c->workers < 1 ? 1 : c->workers > ENGINE_MAX_WORKERS ? ENGINE_MAX_WORKERS
            : c->workers;
    /* Ordered targets: up to two jobs more than the workers may wait, read,
     * for their turn (a buffer each), so that workers go on reading while
     * the one whose job is next is slow or preempted.  Measured on ext4
     * (streamOptimized -> qcow2, bench/run.sh's image, -t unsafe, 2
     * workers, load ~26 on 2 cores): 291 -> 155 sleeps per run, wall 0.87x
     * (7 pairs in turns), the same CPU.  A window of 16 jobs took the sleeps
     * to 7 but 20 % more CPU: a job written long after its read, by another
     * thread, has its buffer out of the cache. */
    g.window = n == 1 ? 1 : (uint32_t)n + 2;
    if (g.ordered && !(g.slots = calloc(g.window, sizeof *g.slots))) {
        vd_extents_free(&g.ext);
        pthread_cond_destroy(&g.turn);
        pthread_mutex_destroy(&g.lock);
        return vd_set_error(e, -ENOMEM, "out of memory");
    }
    pthread_t th[ENGINE_MAX_WORKERS];
    int started = 0;
    /* (one worker is the caller itself: a single-threaded process, whose
     * system calls a test can count exactly) */
    for (; n > 1 && started < n; started++)
        if (pthread_create(&th[started], NULL, engine_worker, &g) != 0)
            break;
    if (!started) {          /* one worker, or no thread at all: work here */
        engine_worker(&g);
    }
    for (int i = 0; i < started; i++)
        pthread_join(th[i], NULL);
    for (uint32_t i = 0; g.slots && i < g.window; i++) {
        free(g.slots[i].buf);
        free(g.slots[i].cbuf);
    }
    free(g.slots);
    vd_extents_free(&g.ext);
    pthread_cond_destroy(&g.turn);
    pthread_mutex_destroy(&g.lock);
    if (g.failed) {
        if (e)
            *e = g.err;
        return g.err.code ? g.err.code : -EIO;
    }
    return 0;
}

int vd_copy(vd_image *src, vd_image *dst, const vd_copy_opts *opts, vd_error *err)
{
    static const vd_copy_opts defaults = { .threads = 1 };
    struct copy_plan c;
    int direct_fd = -1;
    int r = copy_plan_make(src, dst, opts ? opts : &defaults, &c, &direct_fd, err);
    if (r == 0)
        r = copy_run(&c, opts ? opts : &defaults, err);
    if (direct_fd >= 0)
        close(direct_fd);
    return r;
}
