/* unit-qcow2.c - qcow2 internals: L2 entry decoding (standard, zero,
 * compressed for every cluster size, extended L2 bitmaps, data-file offset
 * 0), refcount packing for every width, and the checked arithmetic the
 * driver relies on for untrusted sizes. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>
#include <errno.h>
#include <stdlib.h>

#include "../formats/qcow2/qcow2.h"

static qcow2_state mk(uint32_t cbits, uint32_t version, bool extl2)
{
    qcow2_state s;
    memset(&s, 0, sizeof s);
    s.cluster_bits = cbits;
    s.cluster_size = 1ull << cbits;
    s.version = version;
    s.extl2 = extl2;
    s.incompat = extl2 ? QCOW2_INCOMPAT_EXTL2 : 0;
    return s;
}

static void test_l2_standard(void **st)
{
    (void)st;
    qcow2_state s = mk(16, 3, false);
    qcow2_entry e;
    qcow2_decode_l2(&s, 0, 0, &e);
    assert_int_equal(e.kind, QCOW2_UNALLOC);
    qcow2_decode_l2(&s, 0x50000 | QCOW2_OFLAG_COPIED, 0, &e);
    assert_int_equal(e.kind, QCOW2_NORMAL);
    assert_int_equal(e.host, 0x50000);
    assert_true(e.copied);
    qcow2_decode_l2(&s, 0x50000, 0, &e);
    assert_false(e.copied);
    /* v3 zero flag, with and without a preallocated cluster */
    qcow2_decode_l2(&s, QCOW2_OFLAG_ZERO, 0, &e);
    assert_int_equal(e.kind, QCOW2_ZERO);
    assert_int_equal(e.host, 0);
    qcow2_decode_l2(&s, 0x70000 | QCOW2_OFLAG_COPIED | QCOW2_OFLAG_ZERO, 0, &e);
    assert_int_equal(e.kind, QCOW2_ZERO);
    assert_int_equal(e.host, 0x70000);
    /* bit 0 means nothing in v2 */
    qcow2_state v2 = mk(16, 2, false);
    qcow2_decode_l2(&v2, 0x70000 | QCOW2_OFLAG_ZERO, 0, &e);
    assert_int_equal(e.kind, QCOW2_NORMAL);
    /* bits 56..61 are not part of the offset */
    qcow2_decode_l2(&s, 0x0100000000050000ull, 0, &e);
    assert_int_equal(e.host, 0x50000);
}

static void test_l2_compressed(void **st)
{
    (void)st;
    for (uint32_t cb = 9; cb <= 21; cb++) {
        qcow2_state s = mk(cb, 3, false);
        uint32_t x = 62 - (cb - 8);
        uint64_t off = 0x123456789ull & ((1ull << x) - 1);
        uint64_t maxsec = (1ull << (cb - 8)) - 1;   /* field width cb - 8 bits */
        uint64_t e = QCOW2_OFLAG_COMPRESSED | (maxsec << x) | off;
        qcow2_entry d;
        qcow2_decode_l2(&s, e, 0, &d);
        assert_int_equal(d.kind, QCOW2_COMPRESSED);
        assert_int_equal(d.host, off);
        assert_int_equal(d.csize, (maxsec + 1) * 512 - (off & 511));
        /* the sector count never spills into the offset or the flag */
        qcow2_decode_l2(&s, QCOW2_OFLAG_COMPRESSED | (1ull << x) | 512, 0, &d);
        assert_int_equal(d.host, 512);
        assert_int_equal(d.csize, 1024);
    }
}

static void test_l2_extended(void **st)
{
    (void)st;
    qcow2_state s = mk(16, 3, true);
    qcow2_entry e;
    qcow2_decode_l2(&s, 0x40000 | QCOW2_OFLAG_COPIED, 0x00000000ffffffffull, &e);
    assert_int_equal(e.kind, QCOW2_NORMAL);
    qcow2_decode_l2(&s, 0, 0xffffffff00000000ull, &e);
    assert_int_equal(e.kind, QCOW2_ZERO);
    qcow2_decode_l2(&s, 0, 0, &e);
    assert_int_equal(e.kind, QCOW2_UNALLOC);
    qcow2_decode_l2(&s, 0x40000 | QCOW2_OFLAG_COPIED, 0x0000000f00000003ull, &e);
    assert_int_equal(e.kind, QCOW2_SUBCLUSTERS);
    assert_int_equal(e.alloc_bits, 3);
    assert_int_equal(e.zero_bits, 0xf);
    /* external data file: host offset 0 with COPIED is an allocated cluster */
    qcow2_state d = mk(16, 3, false);
    d.incompat |= QCOW2_INCOMPAT_DATA_FILE;
    qcow2_decode_l2(&d, QCOW2_OFLAG_COPIED, 0, &e);
    assert_int_equal(e.kind, QCOW2_NORMAL);
    assert_int_equal(e.host, 0);
    qcow2_decode_l2(&d, 0, 0, &e);
    assert_int_equal(e.kind, QCOW2_UNALLOC);
}

/* Every width: entries do not disturb their neighbours, values round-trip,
 * and the on-disk layout is the documented one. */
static void test_refcount_packing(void **st)
{
    (void)st;
    uint8_t block[512];
    for (uint32_t order = 0; order <= 6; order++) {
        uint32_t bits = 1u << order;
        uint64_t n = sizeof block * 8 / bits;
        uint64_t max = bits == 64 ? UINT64_MAX : (1ull << bits) - 1;
        memset(block, 0, sizeof block);
        for (uint64_t i = 0; i < n; i++)
            qcow2_rc_set_packed(block, i, order, (i * 2654435761u) & max);
        for (uint64_t i = 0; i < n; i++)
            assert_int_equal(qcow2_rc_get_packed(block, i, order), (i * 2654435761u) & max);
        qcow2_rc_set_packed(block, 5, order, max);
        assert_int_equal(qcow2_rc_get_packed(block, 5, order), max);
        assert_int_equal(qcow2_rc_get_packed(block, 4, order), ((uint64_t)4 * 2654435761u) & max);
        assert_int_equal(qcow2_rc_get_packed(block, 6, order), ((uint64_t)6 * 2654435761u) & max);
    }
    /* layout: sub-byte widths fill from the low bits; wide ones big-endian */
    memset(block, 0, sizeof block);
    qcow2_rc_set_packed(block, 1, 0, 1);
    assert_int_equal(block[0], 0x02);
    qcow2_rc_set_packed(block, 1, 2, 0xa);
    assert_int_equal(block[0], 0xa2);
    memset(block, 0, sizeof block);
    qcow2_rc_set_packed(block, 1, 4, 0x0102);
    assert_int_equal(block[2], 0x01);
    assert_int_equal(block[3], 0x02);
    qcow2_rc_set_packed(block, 1, 6, 0x0102030405060708ull);
    assert_int_equal(block[8], 0x01);
    assert_int_equal(block[15], 0x08);
}

static void test_overflow_helpers(void **st)
{
    (void)st;
    uint64_t r;
    assert_true(vd_add_overflow(UINT64_MAX, 1, &r));
    assert_false(vd_add_overflow(UINT64_MAX - 1, 1, &r));
    assert_int_equal(r, UINT64_MAX);
    assert_true(vd_mul_overflow(1ull << 32, 1ull << 32, &r));
    assert_false(vd_mul_overflow(1ull << 31, 1ull << 32, &r));
    assert_int_equal(r, 1ull << 63);
    assert_true(vd_is_pow2(512));
    assert_false(vd_is_pow2(0));
    assert_false(vd_is_pow2(3 << 9));
    assert_int_equal(vd_round_up(513, 512), 1024);
}

/* The table check the driver applies to L1/refcount/snapshot tables. */
static void test_check_table(void **st)
{
    (void)st;
    qcow2_state s = mk(16, 3, false);
    vd_error e;
    assert_int_equal(qcow2_check_table(&s, "L1 table", 0x30000, 8, 0x40000, &e), 0);
    assert_int_equal(qcow2_check_table(&s, "L1 table", 0, 8, 0x40000, &e), -EINVAL);
    assert_int_equal(qcow2_check_table(&s, "L1 table", 0x30200, 8, 0x40000, &e), -EINVAL);
    assert_int_equal(qcow2_check_table(&s, "L1 table", 0x30000, 0x20000, 0x40000, &e), -EINVAL);
    assert_non_null(strstr(e.msg, "beyond end of file"));
    assert_int_equal(qcow2_check_table(&s, "L1 table", 0xffffffffffff0000ull, 0x20000,
                                       UINT64_MAX, &e), -EINVAL);
    assert_int_equal(qcow2_check_table(&s, "L1 table", 0x30000, VD_MAX_TABLE_BYTES + 8,
                                       UINT64_MAX, &e), -EFBIG);
}

/* The probe: full score only for a sane version and cluster size. */
static void test_probe(void **st)
{
    (void)st;
    uint8_t h[104] = { 'Q', 'F', 'I', 0xfb };
    vd_put_be32(h + QH_VERSION, 3);
    vd_put_be32(h + QH_CLUSTER_BITS, 16);
    assert_int_equal(qcow2_probe(h, sizeof h, NULL, 0, 1 << 20), 100);
    vd_put_be32(h + QH_CLUSTER_BITS, 40);
    assert_int_equal(qcow2_probe(h, sizeof h, NULL, 0, 1 << 20), 50);
    h[0] = 'X';
    assert_int_equal(qcow2_probe(h, sizeof h, NULL, 0, 1 << 20), 0);
    assert_int_equal(qcow2_probe(h, 10, NULL, 0, 10), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_l2_standard),
        cmocka_unit_test(test_l2_compressed),
        cmocka_unit_test(test_l2_extended),
        cmocka_unit_test(test_refcount_packing),
        cmocka_unit_test(test_overflow_helpers),
        cmocka_unit_test(test_check_table),
        cmocka_unit_test(test_probe),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
