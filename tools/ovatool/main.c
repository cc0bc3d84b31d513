/* ovatool - OVA/OVF appliances: info, verify, import (to KVM), export. */
#include "ovatool.h"
#include "tool.h"

#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

static const char usage_text[] =
    "usage: ovatool info [--json] APPLIANCE.ova|.ovf\n"
    "       ovatool verify [--ca-file CA.pem] APPLIANCE.ova|.ovf\n"
    "       ovatool import [-O qcow2|vdi|vmdk|vhd|vhdx|raw] [-d OUTDIR] [--no-verify]\n"
    "                      [--strict] [--ca-file CA.pem] [--virtio] [--json] [-p]\n"
    "                      [--ovf-bus] [--hypervisor kvm|xen] [--boot-check]\n"
    "                      APPLIANCE.ova|.ovf|VM.vmx|VM.vbox\n"
    "       ovatool lint --target virtualbox|vmware|esxi|ovf2 [--json] APPLIANCE\n"
    "       ovatool convert --target virtualbox|vmware|esxi|ovf2 [--digest ALG]\n"
    "                      [--sign KEY.pem --cert CERT.pem] [--no-verify] [-p] -o OUT.ova\n"
    "                      APPLIANCE\n"
    "       ovatool export -n NAME --disk IMG [--disk IMG...] [--cpus N] [--memory MiB]\n"
    "                      [--os-type OS] [--target virtualbox|vmware|esxi|ovf2]\n"
    "                      [--ovf-version 1|2] [--digest sha1|sha256|sha512]\n"
    "                      [--sign KEY.pem --cert CERT.pem] [-p] -o OUT.ova\n"
    "       ovatool --version | --help\n"
    "\n"
    "info     what the appliance holds: VM, OS, CPUs, memory, disks, controllers,\n"
    "         NICs, networks, EULA/product, manifest and certificate status\n"
    "verify   check every member against the manifest (.mf) and the certificate\n"
    "import   verify, convert every disk (default qcow2) to its declared capacity,\n"
    "         write a libvirt domain (NAME.xml) and a qemu command line (NAME.sh)\n"
    "         into OUTDIR (default .); no manifest is a warning (--strict: an error);\n"
    "         disks on virtio when the guest's initramfs/kernel has virtio_blk or\n"
    "         virtio_scsi, else (or with --ovf-bus) on the OVF's controller;\n"
    "         --hypervisor xen: NAME-xen.xml\n"
    "         too; --boot-check: boot the VM with vdboot, fail unless it logs in\n"
    "lint     every problem the target's importer would refuse or silently change,\n"
    "         one line each with what to do; exit 1 when there is any\n"
    "convert  the same VM for another importer: descriptor rewritten for the target,\n"
    "         streamOptimized disks passed through, others converted, new manifest\n"
    "export   pack disks (any format vdisk reads) as streamOptimized VMDKs with an\n"
    "         OVF descriptor and a manifest (SHA256 by default) into an OVA\n"
    "\n"
    "OS names (--os-type; vendor ids such as windows9_64Guest or Ubuntu_64 too):\n";

static int usage(int rc)
{
    fputs(usage_text, rc ? stderr : stdout);
    fputs("  ", rc ? stderr : stdout);
    os_list_names(rc ? stderr : stdout);
    return rc;
}

/* getopt met an unknown option or a missing argument (optstring ':...'):
 * one line naming it, the usage, exit 2 as every vdisk tool. */
static int bad_option(const char *cmd, char **argv)
{
    char opt[64];
    vt_bad_option(argv[optind - 1], opt, sizeof opt);
    return vt_usage_error("ovatool", usage_text, "%s: unknown option or missing argument '%s'",
                          cmd, opt);
}

/* "k": v, and a comma after it when more follows (info's layout). */
static void json_str(const char *k, const char *v, bool comma)
{
    vt_json_member(stdout, "", k, v);
    printf("%s", comma ? ", " : "");
}

static const char *ctrl_name(int t)
{
    return t == 5 ? "IDE" : t == 6 ? "SCSI" : "SATA";
}

static void print_info(const struct appliance *ap, bool json, int mf_state, const char *mf_msg,
                       const struct cert_result *cr)
{
    const struct ovf_appliance *a = &ap->ovf;
    if (json) {
        printf("{");
        json_str("name", a->name, true);
        printf("\"ovf-version\": %d, ", a->version);
        json_str("flavor", a->flavor, true);
        json_str("os-id", a->os_id, true);
        json_str("os-description", a->os_desc, true);
        json_str("os-type", a->os_type, true);
        const struct os_entry *os = os_from_ovf(a->os_id, a->os_type, a->os_desc);
        json_str("os-name", os ? os->name : NULL, true);
        /* null: the descriptor does not say (not zero CPUs) */
        if (a->has_cpus)
            printf("\"cpus\": %u, ", a->cpus);
        else
            printf("\"cpus\": null, ");
        if (a->has_memory)
            printf("\"memory-mib\": %llu, ", (unsigned long long)a->memory_mib);
        else
            printf("\"memory-mib\": null, ");
        json_str("configuration", a->configuration, true);
        printf("\"disks\": [");
        for (size_t i = 0, shown = 0; i < a->n_disks; i++) {
            const struct ovf_file *f = a->disks[i].file_ref ? ovf_find_file(a, a->disks[i].file_ref) : NULL;
            if (!ovf_disk_in_use(a, &a->disks[i]))
                continue;
            printf("%s{", shown++ ? ", " : "");
            json_str("id", a->disks[i].id, true);
            json_str("file", f ? f->href : NULL, true);
            json_str("format", a->disks[i].format, true);
            printf("\"device\": \"%s\", ", ovf_disk_is_cdrom(&a->disks[i]) ? "cdrom" : "disk");
            if (a->disks[i].capacity_error)
                printf("\"capacity\": null, ");
            else
                printf("\"capacity\": %llu, ", (unsigned long long)a->disks[i].capacity);
            json_str("capacity-error", a->disks[i].capacity_error, true);
            printf("\"populated-size\": %llu, ", (unsigned long long)a->disks[i].populated);
            if (f)
                printf("\"file-size\": %llu}", (unsigned long long)f->size);
            else
                printf("\"file-size\": null}");
        }
        printf("], \"controllers\": [");
        for (size_t i = 0; i < a->n_ctrls; i++) {
            printf("%s{\"type\": \"%s\", ", i ? ", " : "", ctrl_name(a->ctrls[i].resource_type));
            json_str("subtype", a->ctrls[i].subtype, false);
            printf("}");
        }
        printf("], \"nics\": [");
        for (size_t i = 0; i < a->n_nics; i++) {
            printf("%s{", i ? ", " : "");
            json_str("network", a->nics[i].network, true);
            json_str("model", a->nics[i].model, false);
            printf("}");
        }
        printf("], \"networks\": [");
        for (size_t i = 0; i < a->n_networks; i++) {
            printf("%s", i ? ", " : "");
            vt_json_str(stdout, a->networks[i]);
        }
        printf("], \"eula\": %s, ", a->has_eula ? "true" : "false");
        printf("\"missing-files\": %zu, \"unsafe-references\": %zu, \"warnings\": [",
               ap->n_missing, ap->n_unsafe);
        for (size_t i = 0; i < ap->n_diags; i++) {
            printf("%s", i ? ", " : "");
            vt_json_str(stdout, ap->diags[i]);
        }
        printf("], ");
        json_str("product", a->product, true);
        json_str("vendor", a->vendor, true);
        printf("\"manifest\": \"%s\", ", mf_state > 0 ? "ok" : mf_state == 0 ? "absent" : "mismatch");
        json_str("manifest-error", mf_state < 0 ? mf_msg : NULL, true);
        printf("\"certificate\": \"%s\"", !cr->present ? "absent"
               : cr->signature_ok ? "signature-ok" : "bad-signature");
        if (cr->present) {
            printf(", ");
            json_str("signer", cr->signer, false);
        }
        printf("}\n");
        return;
    }
    printf("name: %s\novf version: %d (%s)\n", a->name ? a->name : "?", a->version, a->flavor);
    const struct os_entry *os = os_from_ovf(a->os_id, a->os_type, a->os_desc);
    printf("os: %s%s%s%s (CIM %s, vdisk name %s)\n", a->os_desc ? a->os_desc : "?",
           a->os_type ? " [" : "", a->os_type ? a->os_type : "", a->os_type ? "]" : "",
           a->os_id ? a->os_id : "?", os ? os->name : "unknown");
    if (a->has_cpus)
        printf("cpus: %u\n", a->cpus);
    else
        printf("cpus: (not stated)\n");
    if (a->has_memory)
        printf("memory: %llu MiB\n", (unsigned long long)a->memory_mib);
    else
        printf("memory: (not stated)\n");
    for (size_t i = 0; i < a->n_ctrls; i++)
        printf("controller %s: %s%s%s\n", a->ctrls[i].instance_id ? a->ctrls[i].instance_id : "?",
               ctrl_name(a->ctrls[i].resource_type), a->ctrls[i].subtype ? " " : "",
               a->ctrls[i].subtype ? a->ctrls[i].subtype : "");
    if (a->configuration)
        printf("configuration: %s (the default deployment option)\n", a->configuration);
    for (size_t i = 0; i < a->n_disks; i++) {
        const struct ovf_file *f = a->disks[i].file_ref ? ovf_find_file(a, a->disks[i].file_ref) : NULL;
        if (!ovf_disk_in_use(a, &a->disks[i]))
            continue;
        printf("%s %s: %s, capacity %llu bytes, populated %llu, file %llu bytes%s%s\n",
               ovf_disk_is_cdrom(&a->disks[i]) ? "cd-rom" : "disk",
               a->disks[i].id ? a->disks[i].id : "?", f ? f->href : "(empty)",
               (unsigned long long)a->disks[i].capacity, (unsigned long long)a->disks[i].populated,
               (unsigned long long)(f ? f->size : 0),
               f && f->compression ? ", compressed " : "", f && f->compression ? f->compression : "");
    }
    for (size_t i = 0; i < a->n_nics; i++)
        printf("nic %zu: %s on %s\n", i + 1, a->nics[i].model ? a->nics[i].model : "?",
               a->nics[i].network ? a->nics[i].network : "?");
    for (size_t i = 0; i < a->n_networks; i++)
        printf("network: %s\n", a->networks[i]);
    if (a->product)
        printf("product: %s %s (%s)\n", a->product, a->product_version ? a->product_version : "",
               a->vendor ? a->vendor : "");
    printf("eula: %s\n", a->has_eula ? "yes" : "no");
    if (ap->n_missing)
        printf("missing files: %zu referenced file(s) not found beside the descriptor\n",
               ap->n_missing);
    if (ap->n_unsafe)
        printf("unsafe references: %zu file reference(s) leave the appliance; import "
               "refuses them\n", ap->n_unsafe);
    for (size_t i = 0; i < ap->n_diags; i++)
        printf("warning: %s\n", ap->diags[i]);
    printf("manifest: %s%s%s\n", mf_state > 0 ? "ok" : mf_state == 0 ? "absent" : "MISMATCH",
           mf_state < 0 ? ": " : "", mf_state < 0 ? mf_msg : "");
    if (cr->present)
        printf("certificate: %s, signer %s\n", cr->signature_ok ? "signature ok" : "BAD SIGNATURE",
               cr->signer);
    else
        printf("certificate: absent\n");
}

/* info and verify share the reading; verify fails on any problem. */
static int cmd_info_verify(int argc, char **argv, bool verify)
{
    bool json = false;
    const char *cafile = NULL;
    static const struct option lo[] = { { "json", 0, 0, 'j' }, { "ca-file", 1, 0, 'c' },
                                         { "help", 0, 0, 'h' }, { 0, 0, 0, 0 } };
    int c;
    opterr = 0;
    while ((c = getopt_long(argc, argv, ":h", lo, NULL)) != -1) {
        if (c == 'j') json = true;
        else if (c == 'c') cafile = optarg;
        else if (c == 'h') return usage(0);
        else return bad_option(argv[0], argv);
    }
    if (optind + 1 != argc)
        return vt_usage_error("ovatool", usage_text, "%s: expected one appliance", argv[0]);
    struct appliance ap;
    char err[1024];
    if (appliance_read(argv[optind], NULL, 0, &ap, err, sizeof err) < 0) {
        fprintf(stderr, "ovatool: %s\n", err);
        appliance_free(&ap);
        return 1;
    }
    int checked = 0, mf_state = 0;
    char mf_msg[1024] = "";
    if (ap.mf_text)
        mf_state = appliance_verify_manifest(&ap, mf_msg, sizeof mf_msg, &checked) == 0 ? 1 : -1;
    struct cert_result cr = { 0 };
    if (ap.cert_text)
        cert_verify(ap.cert_text, ap.cert_len, ap.mf_text ? ap.mf_text : "", ap.mf_len,
                    ap.mf_name ? ap.mf_name : "(none)", cafile, &cr);
    int rc = 0;
    if (!verify) {
        print_info(&ap, json, mf_state, mf_msg, &cr);
    } else {
        if (ap.n_missing || ap.n_unsafe) {
            fprintf(stderr, "ovatool: %s: %zu referenced file(s) missing, %zu leaving the "
                    "appliance\n", argv[optind], ap.n_missing, ap.n_unsafe);
            rc = 1;
        }
        if (mf_state > 0)
            printf("manifest %s: %d digests ok\n", ap.mf_name, checked);
        else if (mf_state == 0)
            printf("manifest: absent (nothing to verify)\n");
        else {
            fprintf(stderr, "ovatool: %s\n", mf_msg);
            rc = 1;
        }
        if (cr.present) {
            if (!cr.signature_ok) {
                fprintf(stderr, "ovatool: certificate: %s\n", cr.detail);
                rc = 1;
            } else {
                printf("certificate: signature ok, signer %s\n", cr.signer);
                if (cr.chain_checked) {
                    printf("certificate chain: %s\n", cr.chain_trusted ? "trusted" : cr.detail);
                    if (!cr.chain_trusted)
                        rc = 1;
                }
            }
        }
    }
    appliance_free(&ap);
    return rc;
}

static int cmd_import(int argc, char **argv)
{
    struct import_opts o = { .format = "qcow2", .outdir = "." };
    static const struct option lo[] = { { "no-verify", 0, 0, 'n' }, { "ca-file", 1, 0, 'c' },
                                         { "virtio", 0, 0, 'v' }, { "help", 0, 0, 'h' },
                                         { "strict", 0, 0, 's' }, { "json", 0, 0, 'j' },
                                         { "boot-check", 0, 0, 'b' }, { "ovf-bus", 0, 0, 'B' },
                                         { "hypervisor", 1, 0, 'H' }, { 0, 0, 0, 0 } };
    int c;
    opterr = 0;
    while ((c = getopt_long(argc, argv, ":O:d:ph", lo, NULL)) != -1) {
        switch (c) {
        case 'O': o.format = optarg; break;
        case 'd': o.outdir = optarg; break;
        case 'p': o.progress = true; break;
        case 'n': o.no_verify = true; break;
        case 'c': o.cafile = optarg; break;
        case 'v': o.virtio = true; break;
        case 's': o.strict = true; break;
        case 'j': o.json = true; break;
        case 'b': o.boot_check = true; break;
        case 'B': o.ovf_bus = true; break;
        case 'H':
            if (strcmp(optarg, "kvm") && strcmp(optarg, "xen"))
                return vt_usage_error("ovatool", usage_text, "import: --hypervisor %s: expected "
                                      "kvm or xen", optarg);
            o.hypervisor = optarg;
            break;
        case 'h': return usage(0);
        default: return bad_option("import", argv);
        }
    }
    if (optind + 1 != argc)
        return vt_usage_error("ovatool", usage_text, "import: expected one appliance");
    if (o.virtio && o.ovf_bus)
        return vt_usage_error("ovatool", usage_text, "import: --virtio and --ovf-bus: pick one");
    if (!vd_format_can_create(o.format)) {
        fprintf(stderr, "ovatool: -O %s: not a format vdisk can write\n", o.format);
        return 1;
    }
    size_t l = strlen(argv[optind]);
    if ((l > 4 && !strcasecmp(argv[optind] + l - 4, ".vmx")) ||
        (l > 5 && !strcasecmp(argv[optind] + l - 5, ".vbox")))
        return vm_folder_import(argv[optind], &o);
    return ova_import(argv[optind], &o);
}

/* Take getopt's `c` when it is one of the options of the OVA that export
 * and convert write (-o, --target, -p, --sign, --cert, --digest): 1 taken,
 * 0 not one of them, -1 a bad value (said). */
static int pack_option(int c, struct pack_opts *p)
{
    switch (c) {
    case 'o': p->out = optarg; return 1;
    case 't': p->target = optarg; return 1;
    case 'p': p->progress = true; return 1;
    case 'S': p->sign_key = optarg; return 1;
    case 'X': p->sign_cert = optarg; return 1;
    case 'G':
        if (!strcasecmp(optarg, "sha1")) p->digest = OVF_SHA1;
        else if (!strcasecmp(optarg, "sha256")) p->digest = OVF_SHA256;
        else if (!strcasecmp(optarg, "sha512")) p->digest = OVF_SHA512;
        else {
            fprintf(stderr, "ovatool: --digest %s: expected sha1, sha256 or sha512\n", optarg);
            return -1;
        }
        return 1;
    }
    return 0;
}

/* The importers lint and convert write for; export also takes "ovf" (its
 * default, plain OVF 1).  Says why and returns false for another name. */
static bool known_target(const char *t, bool plain_ok)
{
    if (!strcmp(t, "virtualbox") || !strcmp(t, "vmware") || !strcmp(t, "esxi") ||
        !strcmp(t, "ovf2") || (plain_ok && !strcmp(t, "ovf")))
        return true;
    fprintf(stderr, "ovatool: --target %s: expected virtualbox, vmware, esxi or ovf2\n", t);
    return false;
}

/* --sign and --cert go together; says so and returns false otherwise. */
static bool signing_paired(const struct pack_opts *p)
{
    if (!!p->sign_key == !!p->sign_cert)
        return true;
    fprintf(stderr, "ovatool: --sign and --cert go together\n");
    return false;
}

static int cmd_export(int argc, char **argv)
{
    struct export_opts o = { .pack = { .digest = OVF_SHA256, .target = "ovf" },
                             .cpus = 1, .memory_mib = 1024, .ovf_version = 1 };
    struct pack_opts *p = &o.pack;
    const char *disks[64];
    static const struct option lo[] = {
        { "disk", 1, 0, 'D' }, { "cpus", 1, 0, 'C' }, { "memory", 1, 0, 'M' },
        { "os-type", 1, 0, 'T' }, { "target", 1, 0, 't' }, { "sign", 1, 0, 'S' },
        { "cert", 1, 0, 'X' }, { "ovf-version", 1, 0, 'V' }, { "digest", 1, 0, 'G' },
        { "help", 0, 0, 'h' }, { 0, 0, 0, 0 } };
    int c, r;
    opterr = 0;
    while ((c = getopt_long(argc, argv, ":n:o:ph", lo, NULL)) != -1) {
        switch (c) {
        case 'n': o.name = optarg; break;
        case 'D':
            if (o.n_disks == 64) {
                fprintf(stderr, "ovatool: at most 64 disks\n");
                return 1;
            }
            disks[o.n_disks++] = optarg;
            break;
        case 'C': o.cpus = (unsigned)strtoul(optarg, NULL, 10); break;
        case 'M': o.memory_mib = strtoull(optarg, NULL, 10); break;
        case 'T': o.os_type = optarg; break;
        case 'V': o.ovf_version = atoi(optarg); break;
        case 'h': return usage(0);
        default:
            if ((r = pack_option(c, p)) <= 0)
                return r < 0 ? 1 : bad_option("export", argv);
        }
    }
    if (!strcmp(p->target, "ovf2"))
        o.ovf_version = 2;
    if (!o.name || !p->out || !o.n_disks || optind != argc)
        return vt_usage_error("ovatool", usage_text,
                              "export needs -n NAME, -o OUT.ova and at least one --disk");
    if (!known_target(p->target, true))
        return 1;
    if (o.ovf_version != 1 && o.ovf_version != 2) {
        fprintf(stderr, "ovatool: --ovf-version %d: expected 1 or 2\n", o.ovf_version);
        return 1;
    }
    if (o.os_type && !os_by_name(o.os_type)) {
        fprintf(stderr, "ovatool: --os-type %s: unknown; known names: ", o.os_type);
        os_list_names(stderr);
        return 1;
    }
    if (!signing_paired(p))
        return 1;
    if (strchr(o.name, '/') || !o.cpus || !o.memory_mib) {
        fprintf(stderr, "ovatool: invalid -n, --cpus or --memory\n");
        return 1;
    }
    o.disks = disks;
    return ova_export(&o);
}

static int cmd_lint(int argc, char **argv)
{
    bool json = false;
    const char *target = NULL;
    static const struct option lo[] = { { "json", 0, 0, 'j' }, { "target", 1, 0, 't' },
                                         { "help", 0, 0, 'h' }, { 0, 0, 0, 0 } };
    int c;
    opterr = 0;
    while ((c = getopt_long(argc, argv, ":t:h", lo, NULL)) != -1) {
        if (c == 'j') json = true;
        else if (c == 't') target = optarg;
        else if (c == 'h') return usage(0);
        else return bad_option("lint", argv);
    }
    if (optind + 1 != argc || !target)
        return vt_usage_error("ovatool", usage_text,
                              "lint needs --target virtualbox|vmware|esxi|ovf2 and one appliance");
    if (!known_target(target, false))
        return 1;
    return ova_lint(argv[optind], target, json);
}

static int cmd_convert(int argc, char **argv)
{
    struct convert_opts o = { .pack = { .digest = OVF_SHA256 } };
    struct pack_opts *p = &o.pack;
    static const struct option lo[] = {
        { "target", 1, 0, 't' }, { "sign", 1, 0, 'S' }, { "cert", 1, 0, 'X' },
        { "digest", 1, 0, 'G' }, { "no-verify", 0, 0, 'n' }, { "help", 0, 0, 'h' },
        { 0, 0, 0, 0 } };
    int c, r;
    opterr = 0;
    while ((c = getopt_long(argc, argv, ":o:t:ph", lo, NULL)) != -1) {
        switch (c) {
        case 'n': o.no_verify = true; break;
        case 'h': return usage(0);
        default:
            if ((r = pack_option(c, p)) <= 0)
                return r < 0 ? 1 : bad_option("convert", argv);
        }
    }
    if (optind + 1 != argc || !p->out || !p->target)
        return vt_usage_error("ovatool", usage_text,
                              "convert needs one appliance, --target and -o OUT.ova");
    if (!known_target(p->target, false) || !signing_paired(p))
        return 1;
    return ova_convert(argv[optind], &o);
}

int main(int argc, char **argv)
{
    if (argc < 2)
        return usage(VT_EXIT_USAGE);
    const char *cmd = argv[1];
    if (!strcmp(cmd, "--help") || !strcmp(cmd, "-h") || !strcmp(cmd, "help"))
        return usage(0);
    if (!strcmp(cmd, "--version") || !strcmp(cmd, "-V"))
        return vt_version("ovatool");
    if (!strcmp(cmd, "info"))
        return cmd_info_verify(argc - 1, argv + 1, false);
    if (!strcmp(cmd, "verify"))
        return cmd_info_verify(argc - 1, argv + 1, true);
    if (!strcmp(cmd, "import"))
        return cmd_import(argc - 1, argv + 1);
    if (!strcmp(cmd, "export"))
        return cmd_export(argc - 1, argv + 1);
    if (!strcmp(cmd, "lint"))
        return cmd_lint(argc - 1, argv + 1);
    if (!strcmp(cmd, "convert"))
        return cmd_convert(argc - 1, argv + 1);
    return vt_usage_error("ovatool", usage_text, "unknown command '%s'", cmd);
}
