/* unit-partition.c - vd_partition_list on hand-built MBR and GPT disks:
 * logical partitions, clipping at the end of the disk, EBR loops, GPT names
 * and GUIDs, the backup header, and damage that must be an error. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <zlib.h>

#include "vd-driver.h"

#define SECTORS 4096u   /* 2 MiB test disks */
#define SS 512u

static uint8_t disk[SECTORS * SS];
static char path[64];

static void put_mbr_entry(uint8_t *sector, int slot, uint8_t flag, uint8_t type,
                          uint32_t lba, uint32_t count)
{
    uint8_t *e = sector + 0x1be + 16 * slot;
    e[0] = flag;
    e[4] = type;
    vd_put_le32(e + 8, lba);
    vd_put_le32(e + 12, count);
    sector[510] = 0x55;
    sector[511] = 0xaa;
}

/* Write `disk` to a temp file, open it as raw and list its partitions. */
static int list(vd_partition_table *t, vd_error *err)
{
    snprintf(path, sizeof path, "/tmp/unit-partition.XXXXXX");
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    assert_int_equal(write(fd, disk, sizeof disk), (ssize_t)sizeof disk);
    close(fd);
    vd_image *img;
    vd_open_opts o = { .format = "raw", .readonly = true };
    assert_int_equal(vd_open(path, &o, &img, err), 0);
    int r = vd_partition_list(img, t, err);
    vd_close(img, NULL);
    unlink(path);
    return r;
}

static int setup(void **state)
{
    (void)state;
    memset(disk, 0, sizeof disk);
    return 0;
}

static void test_no_table(void **state)
{
    (void)state;
    vd_partition_table t;
    assert_int_equal(list(&t, NULL), 0);
    assert_int_equal(t.scheme, VD_PT_NONE);
    assert_int_equal(t.n, 0);
    /* a boot sector that ends in 0x55aa but whose "entries" are code */
    memset(disk + 0x1be, 0x12, 64);
    disk[510] = 0x55;
    disk[511] = 0xaa;
    assert_int_equal(list(&t, NULL), 0);
    assert_int_equal(t.scheme, VD_PT_NONE);
}

static void test_mbr_logicals(void **state)
{
    (void)state;
    put_mbr_entry(disk, 0, 0x80, 0x83, 64, 1000);
    put_mbr_entry(disk, 1, 0, 0x05, 2048, 2000);         /* extended */
    vd_put_le32(disk + 0x1b8, 0xdeadbeef);
    /* EBR 1 at 2048: logical at +8, link to EBR 2 at ext+1024 */
    uint8_t *ebr1 = disk + 2048 * SS;
    put_mbr_entry(ebr1, 0, 0, 0x83, 8, 500);
    put_mbr_entry(ebr1, 1, 0, 0x05, 1024, 900);
    uint8_t *ebr2 = disk + (2048 + 1024) * SS;
    put_mbr_entry(ebr2, 0, 0, 0x82, 16, 800);
    vd_partition_table t;
    assert_int_equal(list(&t, NULL), 0);
    assert_int_equal(t.scheme, VD_PT_MBR);
    assert_int_equal(t.mbr_signature, 0xdeadbeef);
    assert_int_equal(t.n, 4);
    assert_int_equal(t.v[0].index, 1);
    assert_true(t.v[0].bootable);
    assert_int_equal(t.v[0].start, 64 * SS);
    assert_int_equal(t.v[0].length, 1000 * SS);
    assert_int_equal(t.v[1].index, 2);
    assert_true(t.v[1].extended);
    assert_int_equal(t.v[2].index, 5);
    assert_true(t.v[2].logical);
    assert_int_equal(t.v[2].start, (2048 + 8) * SS);
    assert_int_equal(t.v[2].length, 500 * SS);
    assert_int_equal(t.v[3].index, 6);
    assert_int_equal(t.v[3].mbr_type, 0x82);
    assert_int_equal(t.v[3].start, (2048 + 1024 + 16) * SS);
    assert_string_equal(t.warning, "");
    vd_partition_table_free(&t);
}

static void test_mbr_clipped(void **state)
{
    (void)state;
    put_mbr_entry(disk, 0, 0, 0x83, 2048, 100000);      /* runs off the end */
    put_mbr_entry(disk, 1, 0, 0x83, 0xfffffff0, 16);    /* starts past it */
    vd_partition_table t;
    assert_int_equal(list(&t, NULL), 0);
    assert_int_equal(t.n, 1);
    assert_int_equal(t.v[0].length, (SECTORS - 2048) * SS);
    assert_non_null(strstr(t.warning, "extends past end of disk"));
    vd_partition_table_free(&t);
}

static void test_mbr_ebr_loop(void **state)
{
    (void)state;
    put_mbr_entry(disk, 0, 0, 0x0f, 2048, 2000);
    uint8_t *ebr = disk + 2048 * SS;
    put_mbr_entry(ebr, 0, 0, 0x83, 8, 100);
    put_mbr_entry(ebr, 1, 0, 0x05, 0, 0);      /* link 0: end of chain */
    vd_partition_table t;
    assert_int_equal(list(&t, NULL), 0);
    assert_int_equal(t.n, 2);
    vd_partition_table_free(&t);
    /* EBR 2 links back to EBR 1 */
    put_mbr_entry(ebr, 1, 0, 0x05, 100, 100);
    uint8_t *ebr2 = disk + (2048 + 100) * SS;
    put_mbr_entry(ebr2, 0, 0, 0x83, 8, 50);
    put_mbr_entry(ebr2, 1, 0, 0x05, 0, 0);
    ebr2[0x1be + 16 + 4] = 0x05;
    vd_put_le32(ebr2 + 0x1be + 16 + 8, 0);     /* lba 0 = stop: valid chain */
    assert_int_equal(list(&t, NULL), 0);
    assert_int_equal(t.n, 3);
    vd_partition_table_free(&t);
    /* now EBR 2 points at EBR 1 (relative 0 is "stop", so link via 100->...) */
    put_mbr_entry(ebr2, 1, 0, 0x05, 100, 100);   /* points to itself */
    assert_int_equal(list(&t, NULL), 0);
    assert_int_equal(t.n, 3);
    assert_non_null(strstr(t.warning, "loops"));
    vd_partition_table_free(&t);
}

/* ---- GPT ------------------------------------------------------------------ */

static const uint8_t linux_fs_guid[16] = {   /* 0fc63daf-8483-4772-8e79-3d69d8477de4 */
    0xaf, 0x3d, 0xc6, 0x0f, 0x83, 0x84, 0x72, 0x47,
    0x8e, 0x79, 0x3d, 0x69, 0xd8, 0x47, 0x7d, 0xe4 };

static void put_gpt_header(uint32_t ss, uint64_t my, uint64_t alt, uint64_t entries_lba,
                           uint32_t num, uint32_t entries_crc)
{
    uint64_t sectors = sizeof disk / ss;
    uint8_t *h = disk + my * ss;
    memset(h, 0, ss);
    memcpy(h, "EFI PART", 8);
    vd_put_le32(h + 8, 0x00010000);
    vd_put_le32(h + 12, 92);
    vd_put_le64(h + 24, my);
    vd_put_le64(h + 32, alt);
    vd_put_le64(h + 40, 34);
    vd_put_le64(h + 48, sectors - 34);
    for (int i = 0; i < 16; i++)
        h[56 + i] = 0x10 + i;
    vd_put_le64(h + 72, entries_lba);
    vd_put_le32(h + 80, num);
    vd_put_le32(h + 84, 128);
    vd_put_le32(h + 88, entries_crc);
    vd_put_le32(h + 16, crc32(0, h, 92));
}

/* A GPT on `ss`-byte sectors: entries in slots 1 and 3, at LBA 2048-2999 and
 * 3000-3999 of 512-byte sectors (scaled down for 4 KiB sectors). */
static void make_gpt_ss(uint32_t ss)
{
    uint64_t sectors = sizeof disk / ss, scale = ss / SS;
    uint64_t ent_sectors = 128 * 128 / ss;
    put_mbr_entry(disk, 0, 0, 0xee, 1, sectors - 1);
    uint8_t ents[128 * 128] = { 0 };
    const uint16_t u16[2][8] = { { 'b', 'o', 'o', 't' }, { 'r', 0xf6, 0xf6, 't', 'f', 's' } };
    for (int i = 0; i < 2; i++) {
        uint8_t *e = ents + (i == 0 ? 0 : 2) * 128;   /* slots 1 and 3 */
        memcpy(e, linux_fs_guid, 16);
        memset(e + 16, 0xa0 + i, 16);
        vd_put_le64(e + 32, (i == 0 ? 2048 : 3000) / scale);
        vd_put_le64(e + 40, (i == 0 ? 3000 : 4000) / scale - 1);
        vd_put_le64(e + 48, i == 0 ? 4 : 0);
        for (int k = 0; k < 8; k++)
            vd_put_le16(e + 56 + 2 * k, u16[i][k]);
    }
    uint32_t crc = crc32(0, ents, sizeof ents);
    memcpy(disk + 2 * ss, ents, sizeof ents);
    memcpy(disk + (sectors - 1 - ent_sectors) * ss, ents, sizeof ents);
    put_gpt_header(ss, 1, sectors - 1, 2, 128, crc);
    put_gpt_header(ss, sectors - 1, 1, sectors - 1 - ent_sectors, 128, crc);
}

static void make_gpt(void)
{
    make_gpt_ss(SS);
}

static void check_gpt(const vd_partition_table *t)
{
    assert_int_equal(t->scheme, VD_PT_GPT);
    assert_int_equal(t->n, 2);
    assert_string_equal(t->disk_guid, "13121110-1514-1716-1819-1a1b1c1d1e1f");
    assert_int_equal(t->v[0].index, 1);
    assert_int_equal(t->v[0].start, 2048 * SS);
    assert_int_equal(t->v[0].length, 952 * SS);
    assert_string_equal(t->v[0].type_guid, "0fc63daf-8483-4772-8e79-3d69d8477de4");
    assert_string_equal(t->v[0].part_guid, "a0a0a0a0-a0a0-a0a0-a0a0-a0a0a0a0a0a0");
    assert_string_equal(t->v[0].name, "boot");
    assert_int_equal(t->v[0].gpt_attrs, 4);
    assert_int_equal(t->v[1].index, 3);
    assert_string_equal(t->v[1].name, "r\xc3\xb6\xc3\xb6tfs");
    assert_int_equal(t->v[1].length, 1000 * SS);
}

static void test_gpt(void **state)
{
    (void)state;
    make_gpt();
    vd_partition_table t;
    assert_int_equal(list(&t, NULL), 0);
    check_gpt(&t);
    assert_false(t.gpt_backup_used);
    assert_string_equal(t.warning, "");
    vd_partition_table_free(&t);
}

static void test_gpt_4k_sectors(void **state)
{
    (void)state;
    make_gpt_ss(4096);
    vd_partition_table t;
    assert_int_equal(list(&t, NULL), 0);
    assert_int_equal(t.sector_size, 4096);
    assert_int_equal(t.n, 2);
    assert_int_equal(t.v[0].start, 2048 * SS);
    assert_int_equal(t.v[0].length, 952 * SS);
    assert_string_equal(t.v[1].name, "r\xc3\xb6\xc3\xb6tfs");
    vd_partition_table_free(&t);
    /* and its backup header at the last 4 KiB sector */
    disk[4096 + 20] ^= 1;
    assert_int_equal(list(&t, NULL), 0);
    assert_true(t.gpt_backup_used);
    assert_int_equal(t.n, 2);
    vd_partition_table_free(&t);
    /* even when the primary's signature is gone */
    memset(disk + 4096, 0, 8);
    assert_int_equal(list(&t, NULL), 0);
    assert_true(t.gpt_backup_used);
    assert_int_equal(t.sector_size, 4096);
    assert_int_equal(t.n, 2);
    vd_partition_table_free(&t);
}

static void test_gpt_backup(void **state)
{
    (void)state;
    make_gpt();
    disk[SS + 20] ^= 1;              /* primary header CRC no longer matches */
    vd_partition_table t;
    assert_int_equal(list(&t, NULL), 0);
    check_gpt(&t);
    assert_true(t.gpt_backup_used);
    assert_non_null(strstr(t.warning, "header CRC"));
    vd_partition_table_free(&t);
    /* a damaged entry array in the primary is caught by its CRC too */
    make_gpt();
    disk[2 * SS + 40] ^= 1;
    assert_int_equal(list(&t, NULL), 0);
    assert_true(t.gpt_backup_used);
    assert_non_null(strstr(t.warning, "entry array CRC"));
    vd_partition_table_free(&t);
}

static void test_gpt_both_damaged(void **state)
{
    (void)state;
    make_gpt();
    disk[SS + 20] ^= 1;
    disk[(SECTORS - 1) * SS] = 'X';  /* backup signature gone */
    vd_partition_table t;
    vd_error err = { 0 };
    assert_int_equal(list(&t, &err), -EINVAL);
    assert_non_null(strstr(err.msg, "gpt: primary header"));
    assert_non_null(strstr(err.msg, "backup header"));
    assert_int_equal(t.n, 0);
}

static void test_gpt_huge_array(void **state)
{
    (void)state;
    make_gpt();
    /* a million entries: refused as damage, not allocated */
    put_gpt_header(SS, 1, SECTORS - 1, 2, 1000000, 0);
    put_gpt_header(SS, SECTORS - 1, 1, SECTORS - 33, 1000000, 0);
    vd_partition_table t;
    vd_error err = { 0 };
    assert_int_equal(list(&t, &err), -EINVAL);
    assert_non_null(strstr(err.msg, "entry array"));
}

/* Random header and entry fields with valid CRCs (so parsing goes past the
 * checksums) and random EBR chains: never a crash, every partition inside
 * the disk. */
static void test_fuzz(void **state)
{
    (void)state;
    srand(12345);
    for (int iter = 0; iter < 300; iter++) {
        memset(disk, 0, sizeof disk);
        if (iter % 2) {
            make_gpt();
            uint8_t *h = disk + SS;
            for (int k = 0; k < 3; k++)
                h[24 + rand() % 68] = rand();
            uint8_t *e = disk + 2 * SS;
            for (int k = 0; k < 8; k++)
                e[rand() % 512] = rand();
            vd_put_le32(h + 88, crc32(0, e, 128 * 128));
            vd_put_le32(h + 16, 0);
            vd_put_le32(h + 16, crc32(0, h, 92));
        } else {
            put_mbr_entry(disk, 0, 0, 0x05, rand() % SECTORS, rand() % SECTORS);
            put_mbr_entry(disk, 1, 0, rand() % 2 ? 0x83 : 0x0f, rand(), rand());
            for (int k = 0; k < 20; k++) {
                uint8_t *ebr = disk + (rand() % SECTORS) * SS;
                put_mbr_entry(ebr, 0, 0, 0x83, rand() % 64, rand() % 4096);
                put_mbr_entry(ebr, 1, 0, 0x05, rand() % SECTORS, rand() % 64);
            }
        }
        vd_partition_table t;
        vd_error err = { 0 };
        if (list(&t, &err) == 0) {
            for (size_t i = 0; i < t.n; i++) {
                assert_true(t.v[i].start < sizeof disk);
                assert_true(t.v[i].length <= sizeof disk - t.v[i].start);
            }
            vd_partition_table_free(&t);
        } else {
            assert_true(err.msg[0] != 0);
        }
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup(test_no_table, setup),
        cmocka_unit_test_setup(test_mbr_logicals, setup),
        cmocka_unit_test_setup(test_mbr_clipped, setup),
        cmocka_unit_test_setup(test_mbr_ebr_loop, setup),
        cmocka_unit_test_setup(test_gpt, setup),
        cmocka_unit_test_setup(test_gpt_4k_sectors, setup),
        cmocka_unit_test_setup(test_gpt_backup, setup),
        cmocka_unit_test_setup(test_gpt_both_damaged, setup),
        cmocka_unit_test_setup(test_gpt_huge_array, setup),
        cmocka_unit_test_setup(test_fuzz, setup),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
