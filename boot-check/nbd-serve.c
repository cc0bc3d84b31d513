/* nbd-serve.c - the guest's disk for qemu: an NBD export, on a Unix socket,
 * of the same libvdisk view and throw-away overlay the built-in VMM uses
 * (disk.c).  qemu opens it as a raw NBD disk, so every vdisk format boots
 * under qemu, qemu never opens the image file and never resolves a backing
 * reference, and the image cannot change (guest writes land in the overlay).
 *
 * The protocol as the NBD project's proto.md describes it, the parts qemu
 * uses: fixed newstyle handshake, NBD_OPT_GO / INFO / EXPORT_NAME (other
 * options get NBD_REP_ERR_UNSUP, so qemu falls back to simple replies),
 * then READ, WRITE, FLUSH, TRIM (ignored) and DISC, one connection at a
 * time, served by one thread.  All integers are big-endian. */
#include "nbd-serve.h"

#include <endian.h>
#include <fcntl.h>
#include <errno.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#define NBD_MAGIC 0x4e42444d41474943ull        /* "NBDMAGIC" */
#define NBD_IHAVEOPT 0x49484156454f5054ull     /* "IHAVEOPT" */
#define NBD_REP_MAGIC 0x3e889045565a9ull
#define NBD_REQ_MAGIC 0x25609513u
#define NBD_SIMPLE_REPLY_MAGIC 0x67446698u
#define NBD_FLAG_FIXED_NEWSTYLE 1
#define NBD_FLAG_NO_ZEROES 2
#define NBD_FLAG_HAS_FLAGS 1
#define NBD_FLAG_SEND_FLUSH 4
#define NBD_FLAG_SEND_TRIM 32
#define NBD_OPT_EXPORT_NAME 1
#define NBD_OPT_ABORT 2
#define NBD_OPT_INFO 6
#define NBD_OPT_GO 7
#define NBD_REP_ACK 1
#define NBD_REP_INFO 3
#define NBD_REP_ERR_UNSUP 0x80000001u
#define NBD_INFO_EXPORT 0
#define NBD_CMD_READ 0
#define NBD_CMD_WRITE 1
#define NBD_CMD_DISC 2
#define NBD_CMD_FLUSH 3
#define NBD_CMD_TRIM 4
#define NBD_EIO 5
#define NBD_EINVAL 22
#define NBD_MAX_REQUEST (32u << 20)
#define NBD_MAX_OPTION 4096u

static int nbd_full(int fd, void *buf, size_t len, bool wr)
{
    uint8_t *p = buf;
    while (len) {
        ssize_t n = wr ? send(fd, p, len, MSG_NOSIGNAL) : recv(fd, p, len, 0);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            return -1;
        p += n;
        len -= (size_t)n;
    }
    return 0;
}
#define nbd_recv(fd, b, l) nbd_full(fd, b, l, false)
#define nbd_send(fd, b, l) nbd_full(fd, (void *)(b), l, true)

static int nbd_opt_reply(int fd, uint32_t opt, uint32_t type, const void *data, uint32_t len)
{
    uint8_t h[20];
    uint64_t m = htobe64(NBD_REP_MAGIC);
    uint32_t v[3] = { htobe32(opt), htobe32(type), htobe32(len) };
    memcpy(h, &m, 8);
    memcpy(h + 8, v, 12);
    return nbd_send(fd, h, 20) < 0 || (len && nbd_send(fd, data, len) < 0) ? -1 : 0;
}

static uint16_t nbd_tflags(void)
{
    return NBD_FLAG_HAS_FLAGS | NBD_FLAG_SEND_FLUSH | NBD_FLAG_SEND_TRIM;
}

/* Handshake; 0 when the client moved to transmission, -1 to drop it. */
static int nbd_handshake(struct nbd_server *s, int fd)
{
    uint8_t hello[18];
    uint64_t m1 = htobe64(NBD_MAGIC), m2 = htobe64(NBD_IHAVEOPT);
    uint16_t hf = htobe16(NBD_FLAG_FIXED_NEWSTYLE | NBD_FLAG_NO_ZEROES);
    memcpy(hello, &m1, 8);
    memcpy(hello + 8, &m2, 8);
    memcpy(hello + 16, &hf, 2);
    uint32_t cflags;
    if (nbd_send(fd, hello, 18) < 0 || nbd_recv(fd, &cflags, 4) < 0)
        return -1;
    bool no_zeroes = be32toh(cflags) & NBD_FLAG_NO_ZEROES;
    for (;;) {
        uint8_t oh[16];
        static uint8_t data[NBD_MAX_OPTION];
        if (nbd_recv(fd, oh, 16) < 0)
            return -1;
        uint64_t magic;
        uint32_t opt, len;
        memcpy(&magic, oh, 8);
        memcpy(&opt, oh + 8, 4);
        memcpy(&len, oh + 12, 4);
        opt = be32toh(opt);
        len = be32toh(len);
        if (be64toh(magic) != NBD_IHAVEOPT || len > NBD_MAX_OPTION || nbd_recv(fd, data, len) < 0)
            return -1;
        uint64_t size = htobe64(s->dk->size);
        uint16_t tf = htobe16(nbd_tflags());
        switch (opt) {
        case NBD_OPT_EXPORT_NAME: {
            uint8_t r[10 + 124] = { 0 };
            memcpy(r, &size, 8);
            memcpy(r + 8, &tf, 2);
            return nbd_send(fd, r, no_zeroes ? 10 : sizeof(r));
        }
        case NBD_OPT_ABORT:
            nbd_opt_reply(fd, opt, NBD_REP_ACK, NULL, 0);
            return -1;
        case NBD_OPT_INFO:
        case NBD_OPT_GO: {
            uint8_t info[12];
            uint16_t type = htobe16(NBD_INFO_EXPORT);
            memcpy(info, &type, 2);
            memcpy(info + 2, &size, 8);
            memcpy(info + 10, &tf, 2);
            if (nbd_opt_reply(fd, opt, NBD_REP_INFO, info, sizeof(info)) < 0 ||
                nbd_opt_reply(fd, opt, NBD_REP_ACK, NULL, 0) < 0)
                return -1;
            if (opt == NBD_OPT_GO)
                return 0;
            break;
        }
        default:
            if (nbd_opt_reply(fd, opt, NBD_REP_ERR_UNSUP, NULL, 0) < 0)
                return -1;
        }
    }
}

static int nbd_reply(int fd, uint32_t error, const uint8_t *handle, const void *data, size_t len)
{
    uint8_t r[16];
    uint32_t m = htobe32(NBD_SIMPLE_REPLY_MAGIC), e = htobe32(error);
    memcpy(r, &m, 4);
    memcpy(r + 4, &e, 4);
    memcpy(r + 8, handle, 8);
    return nbd_send(fd, r, 16) < 0 || (len && nbd_send(fd, data, len) < 0) ? -1 : 0;
}

/* Transmission until DISC or the connection drops. */
static void nbd_transmit(struct nbd_server *s, int fd)
{
    uint8_t *buf = malloc(NBD_MAX_REQUEST);
    char err[256];
    while (buf) {
        uint8_t q[28];
        if (nbd_recv(fd, q, 28) < 0)
            break;
        uint32_t magic, len;
        uint16_t type;
        uint64_t off;
        memcpy(&magic, q, 4);
        memcpy(&type, q + 6, 2);
        memcpy(&off, q + 16, 8);
        memcpy(&len, q + 24, 4);
        type = be16toh(type);
        off = be64toh(off);
        len = be32toh(len);
        if (be32toh(magic) != NBD_REQ_MAGIC)
            break;
        bool in_range = off <= s->dk->size && len <= s->dk->size - off && len <= NBD_MAX_REQUEST;
        int rc = 0;
        switch (type) {
        case NBD_CMD_READ:
            if (!in_range) {
                rc = nbd_reply(fd, NBD_EINVAL, q + 8, NULL, 0);
            } else if (disk_read(s->dk, buf, len, off, err, sizeof(err)) < 0) {
                snprintf(s->error, sizeof(s->error), "%s", err);
                rc = nbd_reply(fd, NBD_EIO, q + 8, NULL, 0);
            } else {
                rc = nbd_reply(fd, 0, q + 8, buf, len);
            }
            break;
        case NBD_CMD_WRITE:
            if (len > NBD_MAX_REQUEST || nbd_recv(fd, buf, len) < 0) {
                rc = -1;
            } else if (!in_range) {
                rc = nbd_reply(fd, NBD_EINVAL, q + 8, NULL, 0);
            } else if (disk_write(s->dk, buf, len, off, err, sizeof(err)) < 0) {
                snprintf(s->error, sizeof(s->error), "%s", err);
                rc = nbd_reply(fd, NBD_EIO, q + 8, NULL, 0);
            } else {
                rc = nbd_reply(fd, 0, q + 8, NULL, 0);
            }
            break;
        case NBD_CMD_FLUSH:   /* the overlay is thrown away: nothing to make durable */
        case NBD_CMD_TRIM:    /* advisory; the overlay keeps what was written */
            rc = nbd_reply(fd, 0, q + 8, NULL, 0);
            break;
        case NBD_CMD_DISC:
            rc = -1;
            break;
        default:
            rc = nbd_reply(fd, NBD_EINVAL, q + 8, NULL, 0);
        }
        if (rc < 0)
            break;
    }
    free(buf);
}

static void *nbd_thread(void *arg)
{
    struct nbd_server *s = arg;
    for (;;) {
        struct pollfd p[2] = { { s->listen_fd, POLLIN, 0 }, { s->stop_pipe[0], POLLIN, 0 } };
        if (poll(p, 2, -1) < 0) {
            if (errno == EINTR)
                continue;
            break;
        }
        if (p[1].revents)
            break;
        int fd = accept4(s->listen_fd, NULL, NULL, SOCK_CLOEXEC);
        if (fd < 0)
            continue;
        if (nbd_handshake(s, fd) == 0)
            nbd_transmit(s, fd);
        close(fd);
    }
    return NULL;
}

int nbd_serve_start(struct nbd_server *s, struct disk *dk, char *err, size_t errlen)
{
    memset(s, 0, sizeof(*s));
    s->listen_fd = s->stop_pipe[0] = s->stop_pipe[1] = -1;
    s->dk = dk;
    const char *tmp = getenv("TMPDIR");
    snprintf(s->dir, sizeof(s->dir), "%s/vdboot-nbd.XXXXXX", tmp && *tmp ? tmp : "/tmp");
    struct sockaddr_un a = { .sun_family = AF_UNIX };
    if (!mkdtemp(s->dir)) {
        snprintf(err, errlen, "cannot create a directory for the NBD socket: %s", strerror(errno));
        s->dir[0] = 0;
        return -1;
    }
    snprintf(s->path, sizeof(s->path), "%s/disk.sock", s->dir);
    if (strlen(s->path) >= sizeof(a.sun_path)) {
        snprintf(err, errlen, "NBD socket path %s is too long (set TMPDIR shorter)", s->path);
        nbd_serve_stop(s);
        return -1;
    }
    memcpy(a.sun_path, s->path, strlen(s->path) + 1);
    s->listen_fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (s->listen_fd < 0 || bind(s->listen_fd, (struct sockaddr *)&a, sizeof(a)) < 0 ||
        listen(s->listen_fd, 4) < 0 || pipe2(s->stop_pipe, O_CLOEXEC) < 0) {
        snprintf(err, errlen, "NBD socket %s: %s", s->path, strerror(errno));
        nbd_serve_stop(s);
        return -1;
    }
    if (pthread_create(&s->thread, NULL, nbd_thread, s) != 0) {
        snprintf(err, errlen, "cannot start the NBD server thread");
        nbd_serve_stop(s);
        return -1;
    }
    s->running = true;
    return 0;
}

void nbd_serve_stop(struct nbd_server *s)
{
    if (s->running) {
        /* qemu is gone by now, so the thread is back in poll() */
        if (write(s->stop_pipe[1], "x", 1) < 0) {
            /* cannot happen on a fresh pipe; the join below would hang */
        }
        pthread_join(s->thread, NULL);
        s->running = false;
    }
    if (s->listen_fd >= 0)
        close(s->listen_fd);
    for (int i = 0; i < 2; i++)
        if (s->stop_pipe[i] >= 0)
            close(s->stop_pipe[i]);
    s->listen_fd = s->stop_pipe[0] = s->stop_pipe[1] = -1;
    if (s->path[0])
        unlink(s->path);
    if (s->dir[0])
        rmdir(s->dir);
    s->path[0] = s->dir[0] = 0;
}
