#!/usr/bin/env python3
"""powerloss.py - rebuild what a disk could hold after a power loss.

    powerloss.py LOG IMAGE BASE OUT CUT:SEED...  (prints the durable counts)
    powerloss.py LOG IMAGE --count                (prints the record count)
    powerloss.py LOG IMAGE --syncs                (the records that sync IMAGE)
    powerloss.py LOG IMAGE BASE OUT --serve       (all of it, one process)
    powerloss.py LOG IMAGE BASE OUT --newest [N]  (one image per change,
                                                   or per one of the last N)

LOG is the library's write log (VDISK_TEST_WRITE_LOG, libvdisk/writelog.c),
IMAGE the path of the image file as the writer opened it, BASE a copy of
that file from before the writer ran.  The power fails after record CUT
(0 .. count): OUT gets BASE plus every change to IMAGE that the file's last
sync before CUT made durable, in order, and then, of the changes after that
sync, a random subset (seeded by SEED) in 4 KiB pieces: each piece of a
write or zeroing lands or does not, a truncation happens or does not.  That
is what a disk with a volatile write cache may keep (sector writes are
atomic; nothing else is promised between syncs).  The output line is the
number of writes the writer had flushed (its last "mark" before CUT).
With several CUT:SEED pairs the log is read once and one image is made per
pair, OUT with "{}" replaced by the SEED, one output line each.
With --serve it prints the record count and the sync records (two lines),
then reads CUT:SEED lines from its input and makes each image as it is
asked for, answering each with its line: a test judges one image at a
time, with one start of the interpreter for all.
With --newest the power fails after each change K in turn and the disk
kept, of what came after the last sync, only change K itself: the cut that
splits two writes left unsynced between them, whatever their distance in
the log (a change right after a sync, an in-order prefix, is left out).
OUT with "{}" replaced by K; one line "K FLUSHED" per image.
A cut just before a sync record (--syncs prints their numbers) can leave
any state a cut anywhere since the previous sync can: the same durable
part, and a random subset of a superset of the changes.
"""
import random
import shutil
import struct
import sys

PIECE = 4096


def records(path):
    with open(path, 'rb') as f:
        data = f.read()
    pos = 0
    while pos + 28 <= len(data):
        magic, op, plen, off, ln = struct.unpack_from('<4sIIQQ', data, pos)
        if magic != b'VDWL':
            raise SystemExit('powerloss: bad record at 0x%x of %s' % (pos, path))
        pos += 28
        name = data[pos:pos + plen].decode()
        pos += plen
        payload = data[pos:pos + ln] if op == 1 else b''
        pos += len(payload)
        yield op, name, off, ln, payload


def apply(f, op, off, ln, payload, lo=0, hi=None):
    """Apply bytes [lo, hi) of one change."""
    hi = ln if hi is None else hi
    if op == 1:
        f.seek(off + lo)
        f.write(payload[lo:hi])
    elif op == 2:
        f.seek(off + lo)
        f.write(b'\0' * (hi - lo))
    elif op == 3:
        f.truncate(off)


def power_cut(recs, image, base, out, cut, seed):
    """Write OUT for a cut after record CUT; return the flushed count."""
    recs = recs[:cut]
    last_sync = max((i for i, r in enumerate(recs) if r[0] == 4 and r[1] == image), default=-1)
    done = max((r[2] for r in recs if r[0] == 5), default=0)
    rng = random.Random(seed)
    shutil.copyfile(base, out)
    with open(out, 'r+b') as f:
        for i, (op, name, off, ln, payload) in enumerate(recs):
            if name != image or op not in (1, 2, 3):
                continue
            if i < last_sync:
                apply(f, op, off, ln, payload)
            elif op == 3:
                if rng.random() < 0.5:
                    apply(f, op, off, ln, payload)
            else:
                # pieces aligned to the file's 4 KiB pages
                p = off
                while p < off + ln:
                    q = min((p // PIECE + 1) * PIECE, off + ln)
                    if rng.random() < 0.5:
                        apply(f, op, off, ln, payload, p - off, q - off)
                    p = q
    return done


def newest(recs, image, base, out, last=None):
    """One image per change K: the durable part before K, then K alone;
    with `last`, only for the last that many changes."""
    done, durable, skipped, cuts = 0, -1, False, []
    for k, (op, name, off, ln, payload) in enumerate(recs):
        if op == 5:
            done = max(done, off)
        if name != image:
            continue
        if op == 4:
            durable, skipped = k, False
        if op not in (1, 2, 3):
            continue
        if not skipped:
            # the first change after a sync: the in-order prefix a kill
            # leaves, not a reordering
            skipped = True
            continue
        cuts.append((k, durable, done))
    for k, durable, done in cuts[-last:] if last else cuts:
        op, _, off, ln, payload = recs[k]
        path = out.replace('{}', str(k))
        shutil.copyfile(base, path)
        with open(path, 'r+b') as f:
            for i in range(durable):
                o = recs[i]
                if o[1] == image and o[0] in (1, 2, 3):
                    apply(f, o[0], o[2], o[3], o[4])
            apply(f, op, off, ln, payload)
        print(k, done)


def main():
    log, image = sys.argv[1], sys.argv[2]
    recs = list(records(log))
    if sys.argv[3] == '--count':
        print(len(recs))
        return
    if sys.argv[3] == '--syncs':
        print(' '.join(str(i) for i, r in enumerate(recs) if r[0] == 4 and r[1] == image))
        return
    base, out = sys.argv[3], sys.argv[4]
    if sys.argv[5:6] == ['--newest']:
        newest(recs, image, base, out, int(sys.argv[6]) if sys.argv[6:] else None)
        return
    if sys.argv[5:] == ['--serve']:
        print(len(recs))
        print(' '.join(str(i) for i, r in enumerate(recs) if r[0] == 4 and r[1] == image))
        sys.stdout.flush()
        for line in iter(sys.stdin.readline, ''):
            cut, seed = (int(x) for x in line.split(':'))
            print(power_cut(recs, image, base, out.replace('{}', str(seed)), cut, seed))
            sys.stdout.flush()
        return
    for pair in sys.argv[5:]:
        cut, seed = (int(x) for x in pair.split(':'))
        print(power_cut(recs, image, base, out.replace('{}', str(seed)), cut, seed))


if __name__ == '__main__':
    main()
