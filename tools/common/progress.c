/* progress.c - the one progress display of every vdisk tool (-p).
 *
 * On a terminal: one line redrawn in place with a bar, the percentage, the
 * rate and the time left, at most five times a second.  Otherwise (a log, a
 * pipe): a plain line "LABEL: N%" at every 10 %, so logs stay readable and
 * tests can read them.  The label names the user's files ("guest.raw ->
 * guest.vmdk"), never a temporary or working path.  Written to stderr, so
 * stdout stays for the command's own output.  Workers call vt_progress_add
 * from many threads; a mutex keeps the count and the drawing consistent.
 */
#include "tool.h"

#include <stdint.h>

#include <pthread.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>

#define PROGRESS_BAR 30
#define PROGRESS_INTERVAL 0.2      /* seconds between redraws on a tty */

#define PROGRESS_STEP 10           /* percent between plain lines */

struct vt_progress {
    pthread_mutex_t lock;
    char what[256];
    uint64_t total, done;
    bool tty;
    int last_pct;
    double start, last_draw;
};

static double progress_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void progress_fmt_size(char *out, size_t n, double v)
{
    static const char *const units[] = { "B", "KiB", "MiB", "GiB", "TiB" };
    int u = 0;
    while (v >= 1024 && u < 4) {
        v /= 1024;
        u++;
    }
    snprintf(out, n, "%.1f %s", v, units[u]);
}

static void progress_draw_tty(vt_progress *p, double now, bool final)
{
    double frac = p->total ? (double)p->done / (double)p->total : 1.0;
    int fill = (int)(frac * PROGRESS_BAR);
    char bar[PROGRESS_BAR + 1];
    for (int i = 0; i < PROGRESS_BAR; i++)
        bar[i] = i < fill ? '#' : '.';
    bar[PROGRESS_BAR] = 0;
    double el = now - p->start;
    double rate = el > 0 ? (double)p->done / el : 0;
    char rs[32], eta[32] = "--:--";
    progress_fmt_size(rs, sizeof rs, rate);
    if (rate > 0 && !final) {
        unsigned left = (unsigned)((double)(p->total - p->done) / rate);
        snprintf(eta, sizeof eta, "%02u:%02u", left / 60, left % 60);
    } else if (final) {
        unsigned t = (unsigned)el;
        snprintf(eta, sizeof eta, "%02u:%02u", t / 60, t % 60);
    }
    fprintf(stderr, "\r%s [%s] %5.1f%% %s/s %s %s", p->what, bar, frac * 100, rs,
            final ? "took" : "ETA", eta);
    if (final)
        fputc('\n', stderr);
    fflush(stderr);
}

vt_progress *vt_progress_new(const char *what, uint64_t total, bool enabled)
{
    if (!enabled)
        return NULL;
    vt_progress *p = calloc(1, sizeof *p);
    if (!p)
        return NULL;
    pthread_mutex_init(&p->lock, NULL);
    snprintf(p->what, sizeof p->what, "%s", what);
    p->total = total;
    p->tty = isatty(STDERR_FILENO);
    p->last_pct = -1;
    p->start = p->last_draw = progress_now();
    vt_progress_add(p, 0);
    return p;
}

/* Called with the lock held. */
static void progress_add_locked(vt_progress *p, uint64_t n)
{
    p->done += n;
    if (p->done > p->total)
        p->done = p->total;
    int pct = p->total ? (int)(p->done * 100 / p->total) : 100;
    if (p->tty) {
        double now = progress_now();
        if (now - p->last_draw >= PROGRESS_INTERVAL || p->last_pct < 0) {
            p->last_draw = now;
            p->last_pct = pct;
            progress_draw_tty(p, now, false);
        }
    } else if (p->last_pct < 0 || pct / PROGRESS_STEP > p->last_pct / PROGRESS_STEP) {
        p->last_pct = pct;
        fprintf(stderr, "%s: %d%%\n", p->what, pct);
        fflush(stderr);
    }
}

void vt_progress_add(vt_progress *p, uint64_t n)
{
    if (!p)
        return;
    pthread_mutex_lock(&p->lock);
    progress_add_locked(p, n);
    pthread_mutex_unlock(&p->lock);
}

void vt_progress_cb(void *ctx, uint64_t done, uint64_t total)
{
    vt_progress *p = ctx;
    (void)total;
    if (!p)
        return;
    /* Workers report running totals that may arrive out of order. */
    pthread_mutex_lock(&p->lock);
    if (done > p->done)
        progress_add_locked(p, done - p->done);
    pthread_mutex_unlock(&p->lock);
}

void vt_progress_end(vt_progress *p, bool ok)
{
    if (!p)
        return;
    if (ok) {
        p->done = p->total > p->done ? p->done : p->total;
        vt_progress_add(p, p->total - p->done);
        if (p->tty)
            progress_draw_tty(p, progress_now(), true);
    } else if (p->tty) {
        fputc('\n', stderr);
    }
    pthread_mutex_destroy(&p->lock);
    free(p);
}
