/*
 * Instruction-count TCG plugin for qemu-system-arm (plugin API version 1,
 * QEMU 7.x). Built by reds_tf/bench.py with the host C compiler; it needs no
 * QEMU headers because the handful of API declarations it uses are written
 * out below.
 *
 * Every executed guest instruction adds one to a 64-bit counter (an inline
 * add per instruction, so the count is exact even when a translation block
 * is left early). Each time the instruction at the marker address executes,
 * the current count is appended to the output file, one decimal number per
 * line; at exit the total is written as "total N".
 *
 * Arguments: marker=0xADDR (the marker function's address; bit 0, the Thumb
 * bit, is ignored), out=PATH (default: the QEMU log through qemu_plugin_outs).
 */
#include <inttypes.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* --- the subset of <qemu-plugin.h> (API version 1) used here --- */
typedef uint64_t qemu_plugin_id_t;
typedef struct qemu_info_t qemu_info_t; /* only passed through */
struct qemu_plugin_tb;
struct qemu_plugin_insn;

enum qemu_plugin_cb_flags { QEMU_PLUGIN_CB_NO_REGS = 0 };
enum qemu_plugin_op { QEMU_PLUGIN_INLINE_ADD_U64 = 0 };

typedef void (*qemu_plugin_vcpu_tb_trans_cb_t)(qemu_plugin_id_t id, struct qemu_plugin_tb *tb);
typedef void (*qemu_plugin_vcpu_udata_cb_t)(unsigned int vcpu_index, void *userdata);
typedef void (*qemu_plugin_udata_cb_t)(qemu_plugin_id_t id, void *userdata);

void qemu_plugin_register_vcpu_tb_trans_cb(qemu_plugin_id_t id, qemu_plugin_vcpu_tb_trans_cb_t cb);
void qemu_plugin_register_atexit_cb(qemu_plugin_id_t id, qemu_plugin_udata_cb_t cb, void *userdata);
size_t qemu_plugin_tb_n_insns(const struct qemu_plugin_tb *tb);
struct qemu_plugin_insn *qemu_plugin_tb_get_insn(const struct qemu_plugin_tb *tb, size_t idx);
uint64_t qemu_plugin_insn_vaddr(const struct qemu_plugin_insn *insn);
void qemu_plugin_register_vcpu_insn_exec_inline(struct qemu_plugin_insn *insn, enum qemu_plugin_op op,
                                                void *ptr, uint64_t imm);
void qemu_plugin_register_vcpu_insn_exec_cb(struct qemu_plugin_insn *insn, qemu_plugin_vcpu_udata_cb_t cb,
                                            enum qemu_plugin_cb_flags flags, void *userdata);
void qemu_plugin_outs(const char *string);

__attribute__((visibility("default"))) int qemu_plugin_version = 1;
/* --- end of API subset --- */

static uint64_t insn_count;     /* single vCPU: the mps2 boards have one core */
static uint64_t marker_addr;
static bool have_marker;
static FILE *out_file;
static uint64_t marker_hits;

static void emit(const char *line)
{
    if (out_file) {
        fputs(line, out_file);
        fflush(out_file); /* a killed QEMU still leaves every mark on disk */
    } else {
        qemu_plugin_outs(line);
    }
}

static void on_marker(unsigned int vcpu_index, void *userdata)
{
    char line[64];
    (void)vcpu_index;
    (void)userdata;
    marker_hits++;
    snprintf(line, sizeof line, "%" PRIu64 "\n", insn_count);
    emit(line);
}

static void on_translate(qemu_plugin_id_t id, struct qemu_plugin_tb *tb)
{
    size_t n = qemu_plugin_tb_n_insns(tb);
    (void)id;
    for (size_t i = 0; i < n; i++) {
        struct qemu_plugin_insn *insn = qemu_plugin_tb_get_insn(tb, i);
        /* The marker callback is registered first, so the recorded count
           excludes the marker instruction itself. */
        if (have_marker && (qemu_plugin_insn_vaddr(insn) & ~(uint64_t)1) == marker_addr) {
            qemu_plugin_register_vcpu_insn_exec_cb(insn, on_marker, QEMU_PLUGIN_CB_NO_REGS, NULL);
        }
        qemu_plugin_register_vcpu_insn_exec_inline(insn, QEMU_PLUGIN_INLINE_ADD_U64, &insn_count, 1);
    }
}

static void on_plugin_exit(qemu_plugin_id_t id, void *userdata)
{
    char line[96];
    (void)id;
    (void)userdata;
    snprintf(line, sizeof line, "total %" PRIu64 " marks %" PRIu64 "\n", insn_count, marker_hits);
    emit(line);
    if (out_file) {
        fclose(out_file);
        out_file = NULL;
    }
}

__attribute__((visibility("default"))) int qemu_plugin_install(qemu_plugin_id_t id, const qemu_info_t *info,
                                                               int argc, char **argv)
{
    (void)info;
    for (int i = 0; i < argc; i++) {
        const char *a = argv[i];
        if (strncmp(a, "marker=", 7) == 0) {
            char *end = NULL;
            marker_addr = strtoull(a + 7, &end, 0) & ~(uint64_t)1;
            if (end == a + 7 || *end != '\0') {
                fprintf(stderr, "icount: bad marker address '%s'\n", a + 7);
                return -1;
            }
            have_marker = true;
        } else if (strncmp(a, "out=", 4) == 0) {
            out_file = fopen(a + 4, "w");
            if (!out_file) {
                fprintf(stderr, "icount: cannot open '%s' for writing\n", a + 4);
                return -1;
            }
        } else {
            fprintf(stderr, "icount: unknown argument '%s' (expected marker=0xADDR or out=PATH)\n", a);
            return -1;
        }
    }
    qemu_plugin_register_vcpu_tb_trans_cb(id, on_translate);
    qemu_plugin_register_atexit_cb(id, on_plugin_exit, NULL);
    return 0;
}
