/* view-int.h - the insides of struct view, shared by view.c (the tree,
 * reading) and view-fs.c (changing the ext2/3/4 file trees). */
#ifndef VDMOUNT_VIEW_INT_H
#define VDMOUNT_VIEW_INT_H

#include "view.h"
#include "vdisk-ext2.h"

#include <pthread.h>

/* Synthetic inode numbers; file-system inodes get (partition + 1) << 32 on
 * top so that hard links keep equal numbers and partitions never collide. */
#define VIEW_INO_ROOT  1
#define VIEW_INO_DISK  2
#define VIEW_INO_JSON  3
#define VIEW_INO_FSDIR 4
#define VIEW_INO_PART  16
#define VIEW_WHOLE_DISK_FS 0xffffu

/* Who wrote a partition first in a writable mount: its file tree (then its
 * raw bytes may not be written, through pN or disk) or its raw bytes (then
 * its file tree stays read-only: libext2fs' view of it is stale).  Either
 * alone is safe; both would corrupt the file system. */
enum view_claim { VIEW_CLAIM_NONE, VIEW_CLAIM_FS, VIEW_CLAIM_RAW };

struct view_part {
    vd_partition p;
    char name[16];            /* "p1" */
    vd_ext2 *fs;              /* NULL: no ext2/3/4 file system */
    char fs_error[VD_ERROR_MAX]; /* it looked like ext2/3/4 but did not open */
    char ro_reason[VD_ERROR_MAX]; /* writable mount, read-only file tree: why */
    uint64_t start, length;   /* the byte range of the file system */
    int claim;                /* enum view_claim, set once (atomically) */
};

struct view {
    vd_image *img;
    bool rw;
    vd_partition_table pt;
    char pt_error[VD_ERROR_MAX];
    struct view_part *parts;
    size_t nparts;
    struct view_part whole;   /* the whole disk as a file system, if no table */
    char *json;
    size_t json_len;
    struct stat base;         /* owner and times for synthetic entries */
    FILE *log;
    pthread_mutex_t log_lock;
};

void view_log(struct view *v, const vd_error *err);
struct view_part *view_part_of(struct view *v, int part);
int view_claim(struct view *v, struct view_part *vp, enum view_claim want);
static inline enum view_claim view_claim_of(struct view_part *vp)
{
    return (enum view_claim)__atomic_load_n(&vp->claim, __ATOMIC_ACQUIRE);
}

#endif
