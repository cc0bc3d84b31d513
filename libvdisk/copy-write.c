/* copy-write.c - how the copy engine (copy.c) writes a job's bytes: zero
 * detection cuts a job into runs of data and zeroes, and each run goes to
 * the target by the cheapest way it allows.
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
 */
#include "copy-engine.h"
#include "vd-internal.h"

#include <errno.h>
#include <fcntl.h>
#include <unistd.h>
#include <string.h>

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
const char *engine_run_bytes(const struct engine_job *j, const char *buf, uint64_t off,
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

/* map_direct: a run of whole target clusters gets its clusters now, in the
 * job's turn (allocation and metadata stay in job order: the same layout as
 * a write through the driver), and its data is written after the turn
 * (engine_write_pending).  The drivers cache that metadata: it reaches the
 * file at the flush after the copy, behind a sync of the data, unless a
 * table is evicted sooner; so only a new target takes this path, one that
 * nothing reads before that flush (vdconvert renames it into place after).
 * A job with more pieces than the list holds writes the rest now. */
static int engine_defer(struct engine *g, const struct engine_job *j, const char *buf,
                        uint64_t off, uint64_t len, vd_error *e)
{
    struct engine_pends *p = j->pend;
    while (len && p->n < ENGINE_MAX_PEND) {
        uint64_t fo, m;
        int r = vd_map_for_write(g->c->out, off, len, &fo, &m, e);
        if (r < 0)
            return r;
        p->v[p->n].buf = buf;
        p->v[p->n].file_off = fo;
        p->v[p->n].len = m;
        p->n++;
        buf += m;
        off += m;
        len -= m;
    }
    return len ? engine_write(g, buf, len, off, e) : 0;
}

int engine_write_pending(struct engine *g, struct engine_pends *p, vd_error *e)
{
    int r = 0;
    for (uint32_t i = 0; r == 0 && i < p->n; i++)
        r = vd_file_pwrite(g->out_file, p->v[i].buf, (size_t)p->v[i].len, p->v[i].file_off, e);
    p->n = 0;
    return r;
}

static int engine_flush_run(struct engine *g, const struct engine_job *j, enum engine_piece kind,
                            const char *buf, uint64_t off, uint64_t len, vd_error *e)
{
    if (kind == PIECE_DATA && j->pend && off % g->out_cluster == 0 &&
        (len % g->out_cluster == 0 || off + len == vd_size(g->c->out)))
        return engine_defer(g, j, buf, off, len, e);
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
int engine_write_pieces(struct engine *g, const struct engine_job *j,
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

/* Write a job that has been read (or needs no read). */
int engine_write_job(struct engine *g, const struct engine_job *j, vd_error *e)
{
    if (j->kind == ENGINE_ZERO)
        return vd_pwrite_zeroes(g->c->out, j->off, j->len, engine_zero_flags(g->c), e);
    return engine_write_pieces(g, j, j->buf, g->c->cmp ? j->cbuf : NULL, e);
}
