/* nbd-serve.h - the guest's disk (disk.c) exported over NBD on a Unix
 * socket, for qemu (tcg.c). */
#ifndef VDBOOT_NBD_SERVE_H
#define VDBOOT_NBD_SERVE_H

#include <pthread.h>
#include <stdbool.h>

#include "disk.h"

struct nbd_server {
    struct disk *dk;
    int listen_fd, stop_pipe[2];
    pthread_t thread;
    bool running;
    char dir[200], path[230];  /* a private directory and the socket in it */
    char error[256];           /* the last disk error, for the report */
};

/* Listens on a fresh socket (s->path) and serves dk from a thread. */
int nbd_serve_start(struct nbd_server *s, struct disk *dk, char *err, size_t errlen);
/* Stops the thread (after qemu is gone), removes the socket. */
void nbd_serve_stop(struct nbd_server *s);

#endif
