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
 * How a job's bytes reach the target (zero detection, copy_file_range into
 * the target's file, writes through a raw fd or the driver) is copy-write.c.
 * Compressed output (-c) goes in whole clusters through vd_pwrite_compressed,
 * so its jobs are widened to cluster boundaries.  Memory is one or two
 * buffers per worker (two more for an image target: engine_submit),
 * whatever the size of the image.
 */
#include "copy-engine.h"
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

/* Jobs of an ordered target that are handed out but not written yet: job
 * `seq` lives in slot seq % window, with its own buffers, until it is
 * written. */
struct engine_slot {
    struct engine_job job;
    bool ready;             /* read, waiting for the jobs before it */
    char *buf, *cbuf;       /* allocated at first use, kept to the end */
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
        j->pend = NULL;
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
    if (g->map_direct) {
        /* The turn is short here (the clusters are mapped, nothing waits
         * for the device), so the job waits for it with its own buffer. */
        if (!engine_wait_turn(g, j->seq))
            return 0;
        int r = engine_write_job(g, j, e);
        if (r == 0)
            r = engine_advance(g, e);
        return r < 0 ? r : engine_write_pending(g, j->pend, e);
    }
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
    char *buf = NULL, *cbuf = NULL;      /* unordered targets, map_direct: the worker's own */
    struct engine_pends pend = { 0 };
    vd_error e = { 0 };
    for (;;) {
        struct engine_job j;
        int r = engine_take(g, &j, &e);
        if (r > 0 && g->map_direct)
            j.pend = &pend;
        if (r > 0 && j.kind != ENGINE_ZERO) {
            if (g->ordered && !g->map_direct) {
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
    /* (a new target only: until the flush its metadata may name clusters
     * whose data is still being written, copy-write.c's engine_defer).
     * Measured on XFS in a loop-mounted file, bench/run.sh's image, load
     * 19-23, 7 pairs in turns, new / one ordered writer: raw -> qcow2 0.56
     * of the wall time, raw -> vdi 0.83; on ext4 (a virtio disk, which is
     * the limit) 0.995 and 1.02. */
    g.map_direct = g.ordered && o->direct && c->workers > 1 &&
                   c->out_reads_zero && !c->cmp && !c->only_top && g.out_cluster &&
                   vd_can_map_for_write(c->out);
    if (g.map_direct)
        g.out_file = c->out->drv->data_file(c->out);
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
