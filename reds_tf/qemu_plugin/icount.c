/*
 * Instruction- and cycle-count TCG plugin for qemu-system-arm (plugin API
 * version 1, QEMU 7.x). Built by reds_tf/bench.py with the host C compiler; it
 * needs no QEMU headers because the handful of API declarations it uses are
 * written out below.
 *
 * Every executed guest instruction adds one to a 64-bit instruction counter
 * and its estimated Cortex-M4 cycles to a cycle counter (inline adds per
 * instruction, so both are exact even when a translation block is left
 * early). Each time the instruction at the marker address executes, the
 * current counts are appended to the output file as "INSNS CYCLES"; each time
 * an instruction at one of the site addresses executes, "@ADDR INSNS CYCLES";
 * at exit "total INSNS cycles CYCLES marks N".
 *
 * Arguments: marker=0xADDR (the marker function's address; bit 0, the Thumb
 * bit, is ignored), at=0xADDR (a site; repeatable), out=PATH (default: the QEMU
 * log through qemu_plugin_outs).
 *
 * The cycle model (Cortex-M4 Technical Reference Manual, r0p1, section 3.3:
 * "Processor instruction timings" and "Load/store timings"). It assumes
 * zero-wait-state memory for code and data, as the TRM's table does. On the
 * nRF52840 code runs from flash through an instruction cache: cache misses and
 * flash wait states are NOT modelled, nor are interrupts or bus contention.
 *  - Data processing, MOVW/MOVT, bit-field, extend, saturate, CLZ, all
 *    multiplies (MUL, MLA, MLS, SMULL, UMULL, SMLAL, UMLAL) and every DSP
 *    instruction (SMLAD, SMLAxy, SMMUL(R), SXTB16, SSAT, SADD16, ...): 1.
 *  - SDIV/UDIV: 2..12 cycles by operand values, which the plugin cannot see
 *    (API version 1 reads no registers): counted as DIV_CYCLES = 12, the
 *    upper bound (the kernels divide only once per pooled output).
 *  - Single loads (LDR, LDRB, LDRH, LDRSB, LDRSH, LDREX, any addressing mode):
 *    2, but 1 when the previous instruction is a single load whose
 *    destination is not used to compute this address ("LDR [any] are
 *    pipelined when possible"). LDR into PC: 2 + P.
 *  - Single stores: with an immediate offset 1 ("STR Rx,[Ry,#imm] is always
 *    one cycle": the data phase overlaps the next instruction through the
 *    write buffer); with a register offset 2, or 1 when pipelined behind a
 *    single load (as a load). Nothing pipelines behind a store.
 *  - LDRD/STRD 1 + N = 3; LDM/STM/PUSH/POP 1 + N (N registers), + P when PC is
 *    loaded; VLDR/VSTR 2, VLDM/VSTM/VPUSH/VPOP 1 + N words.
 *  - Any load or store whose address register was written by the
 *    immediately preceding data-processing instruction: + 1 (no forwarding
 *    path to the address generation).
 *  - Branches: B, BL, BX, BLX and other writes to PC 1 + P; a conditional
 *    branch (B<cond>, CBZ/CBNZ, a PC write inside an IT block) 1 when not
 *    taken, 1 + P when taken (decided at run time: the next executed block
 *    does not start at the fall-through address). TBB/TBH 2 + P.
 *  - P, the pipeline refill, is 1..3 in the TRM (by the target's alignment
 *    and width and whether the address was speculated early): P_REFILL = 2
 *    here, i.e. a taken branch costs 3 cycles.
 *  - IT 1 (folding into a preceding 16-bit instruction is not modelled);
 *    an instruction skipped by its IT condition costs what it would executed,
 *    except a skipped PC write (1). ISB 1 + P, DMB/DSB 1, MRS/MSR 2.
 *  - FPU: VADD/VSUB/VMUL/VCVT/VCMP/VMOV 1, VMLA/VMLS/VNMLA/VNMLS/VFMA/VFMS 3,
 *    VDIV/VSQRT 14, VMOV of two core registers 2.
 * The pairwise rules (load pipelining, address interlock) also apply across
 * translation blocks that follow each other without a branch (e.g. at a page
 * boundary), at run time; an IT block cut by a block boundary is not seen.
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
void qemu_plugin_register_vcpu_tb_exec_cb(struct qemu_plugin_tb *tb, qemu_plugin_vcpu_udata_cb_t cb,
                                          enum qemu_plugin_cb_flags flags, void *userdata);
size_t qemu_plugin_tb_n_insns(const struct qemu_plugin_tb *tb);
struct qemu_plugin_insn *qemu_plugin_tb_get_insn(const struct qemu_plugin_tb *tb, size_t idx);
uint64_t qemu_plugin_insn_vaddr(const struct qemu_plugin_insn *insn);
const void *qemu_plugin_insn_data(const struct qemu_plugin_insn *insn);
size_t qemu_plugin_insn_size(const struct qemu_plugin_insn *insn);
void qemu_plugin_register_vcpu_insn_exec_inline(struct qemu_plugin_insn *insn, enum qemu_plugin_op op,
                                                void *ptr, uint64_t imm);
void qemu_plugin_register_vcpu_insn_exec_cb(struct qemu_plugin_insn *insn, qemu_plugin_vcpu_udata_cb_t cb,
                                            enum qemu_plugin_cb_flags flags, void *userdata);
void qemu_plugin_outs(const char *string);

__attribute__((visibility("default"))) int qemu_plugin_version = 1;
/* --- end of API subset --- */

#define P_REFILL 2    /* pipeline refill after a taken branch, TRM: 1..3 */
#define DIV_CYCLES 12 /* SDIV/UDIV: the TRM's 2..12 upper bound (operands unseen) */
#define MAX_SITES 1024

/* What the pairwise rules need to know about one instruction. */
enum {
    F_LOAD1 = 1,      /* single load: a later load / register-offset store pipelines behind it */
    F_PIPE = 2,       /* pipelines behind a single load (loads, register-offset stores) */
    F_MEM = 4,        /* any load or store: its address may wait for a data-processing result */
    F_DP = 8,         /* data processing: writes `dest` */
    F_FLOW = 16,      /* always changes the flow (cost includes P) */
    F_FLOW_COND = 32, /* changes the flow when taken: + taken_extra at run time */
};

typedef struct insn_info {
    uint32_t cost;        /* cycles when not pipelined, not interlocked, not taken */
    uint32_t taken_extra; /* F_FLOW_COND: extra cycles when taken */
    uint16_t addr;        /* F_MEM: registers the address is computed from (bit mask) */
    uint16_t dest;        /* F_LOAD1 / F_DP: registers written */
    uint8_t flags;
    uint8_t it_len; /* IT: instructions in its block */
} insn_info;

/* One translated block, for the run-time rules between consecutive blocks. */
typedef struct tb_info {
    uint64_t start, fallthrough;
    insn_info first, last;
} tb_info;

static uint64_t insn_count; /* single vCPU: the mps2 boards have one core */
static uint64_t cycle_count;
static uint64_t marker_addr;
static bool have_marker;
static uint64_t sites[MAX_SITES];
static size_t n_sites;
static FILE *out_file;
static uint64_t marker_hits;
static const tb_info *prev_tb;

#define R(n) ((uint16_t)(1u << ((n) & 15u)))

static void set_dp(insn_info *d, unsigned rd)
{
    d->cost = 1;
    d->flags = F_DP;
    d->dest = R(rd);
}

static void set_flow(insn_info *d, uint32_t cost)
{
    d->cost = cost;
    d->flags = F_FLOW;
}

static void set_branch_cond(insn_info *d)
{
    d->cost = 1;
    d->taken_extra = P_REFILL;
    d->flags = F_FLOW_COND;
}

static void set_load1(insn_info *d, unsigned rt, uint16_t addr)
{
    d->cost = 2;
    d->flags = F_LOAD1 | F_PIPE | F_MEM;
    d->dest = R(rt);
    d->addr = addr;
}

static void set_store(insn_info *d, uint16_t addr, bool reg_offset)
{
    d->cost = reg_offset ? 2 : 1;
    d->flags = F_MEM | (reg_offset ? F_PIPE : 0);
    d->addr = addr;
}

static void set_multi(insn_info *d, unsigned n, uint16_t addr)
{
    d->cost = 1 + n;
    d->flags = F_MEM;
    d->addr = addr;
}

static unsigned ctz4(unsigned m)
{
    unsigned n = 0;
    while (n < 4 && !(m & (1u << n))) {
        n++;
    }
    return n;
}

static void decode16(uint16_t hw, insn_info *d)
{
    if ((hw >> 14) == 0) { /* shift (imm), add, sub, move, compare */
        unsigned opc = (hw >> 11) & 7u;
        if (opc == 5) {
            d->cost = 1; /* CMP imm8 */
        } else {
            set_dp(d, opc >= 4 ? (hw >> 8) & 7u : hw & 7u);
        }
    } else if ((hw >> 10) == 0x10) { /* data processing (register) */
        unsigned opc = (hw >> 6) & 15u;
        if (opc == 8 || opc == 10 || opc == 11) {
            d->cost = 1; /* TST, CMP, CMN */
        } else {
            set_dp(d, hw & 7u);
        }
    } else if ((hw >> 10) == 0x11) { /* special data processing, BX/BLX */
        unsigned opc = (hw >> 8) & 3u;
        unsigned rd = ((hw >> 4) & 8u) | (hw & 7u);
        if (opc == 3 || (opc != 1 && rd == 15)) {
            set_flow(d, 1 + P_REFILL);
        } else if (opc == 1) {
            d->cost = 1; /* CMP (high registers) */
        } else {
            set_dp(d, rd);
        }
    } else if ((hw >> 11) == 0x09) { /* LDR (literal) */
        set_load1(d, (hw >> 8) & 7u, R(15));
    } else if ((hw >> 12) == 0x5) { /* load/store, register offset */
        uint16_t addr = R((hw >> 3) & 7u) | R((hw >> 6) & 7u);
        if (((hw >> 9) & 7u) <= 2) {
            set_store(d, addr, true);
        } else {
            set_load1(d, hw & 7u, addr);
        }
    } else if ((hw >> 13) == 0x3 || (hw >> 12) == 0x8) { /* word/byte/halfword, immediate */
        if (hw & 0x0800) {
            set_load1(d, hw & 7u, R((hw >> 3) & 7u));
        } else {
            set_store(d, R((hw >> 3) & 7u), false);
        }
    } else if ((hw >> 12) == 0x9) { /* SP-relative */
        if (hw & 0x0800) {
            set_load1(d, (hw >> 8) & 7u, R(13));
        } else {
            set_store(d, R(13), false);
        }
    } else if ((hw >> 12) == 0xA) { /* ADR, ADD Rd, SP, #imm */
        set_dp(d, (hw >> 8) & 7u);
    } else if ((hw >> 12) == 0xB) { /* miscellaneous */
        if ((hw & 0x0F00) == 0x0000) {
            set_dp(d, 13); /* ADD/SUB SP, SP, #imm */
        } else if ((hw & 0x0500) == 0x0100) {
            set_branch_cond(d); /* CBZ/CBNZ */
        } else if ((hw & 0x0F00) == 0x0200 || (hw & 0x0F00) == 0x0A00) {
            set_dp(d, hw & 7u); /* extend, reverse */
        } else if ((hw & 0x0E00) == 0x0400) {
            set_multi(d, (unsigned)__builtin_popcount(hw & 0x1FFu), R(13)); /* PUSH */
        } else if ((hw & 0x0E00) == 0x0C00) {
            set_multi(d, (unsigned)__builtin_popcount(hw & 0x1FFu), R(13)); /* POP */
            if (hw & 0x0100) {
                d->cost += P_REFILL;
                d->flags |= F_FLOW;
            }
        } else if ((hw & 0x0F00) == 0x0F00 && (hw & 0xFu) != 0) {
            d->cost = 1; /* IT */
            d->it_len = (uint8_t)(4 - ctz4(hw & 0xFu));
        } else {
            d->cost = 1; /* CPS, BKPT, hints */
        }
    } else if ((hw >> 12) == 0xC) { /* LDM/STM */
        set_multi(d, (unsigned)__builtin_popcount(hw & 0xFFu), R((hw >> 8) & 7u));
    } else if ((hw >> 12) == 0xD) { /* B<cond>, UDF, SVC */
        if (((hw >> 8) & 15u) < 14) {
            set_branch_cond(d);
        } else {
            d->cost = 1;
        }
    } else { /* 11100: B */
        set_flow(d, 1 + P_REFILL);
    }
}

static void decode_fpu(uint16_t hw1, uint16_t hw2, insn_info *d)
{
    unsigned op1 = (hw1 >> 4) & 0x3Fu;
    d->cost = 1;
    if ((op1 & 0x20) == 0) {
        if ((op1 & 0x3E) == 0x04) { /* VMOV between two core registers and a pair */
            d->cost = 2;
            if (op1 & 1) {
                d->flags = F_DP;
                d->dest = R(hw2 >> 12) | R(hw1 & 15u);
            }
        } else if ((op1 & 0x3A) != 0) { /* extension register load/store */
            if ((hw1 & 0x0100) && !(hw1 & 0x0020)) {
                set_multi(d, 1, R(hw1 & 15u)); /* VLDR/VSTR: 2 */
            } else {
                set_multi(d, hw2 & 0xFFu, R(hw1 & 15u)); /* VLDM/VSTM/VPUSH/VPOP */
            }
        }
    } else if ((op1 & 0x30) == 0x20) {
        if (hw2 & 0x10) { /* core <-> extension register transfer, VMRS/VMSR */
            if ((hw1 & 0x10) && (hw2 >> 12) != 15) {
                set_dp(d, hw2 >> 12);
            }
        } else { /* VFP data processing: opc1 without the D bit */
            unsigned opc1 = (hw1 >> 4) & 0xBu;
            if (opc1 == 0x0 || opc1 == 0x1 || opc1 == 0x9 || opc1 == 0xA) {
                d->cost = 3; /* VMLA/VMLS, VNMLA/VNMLS, VFNMA/VFNMS, VFMA/VFMS */
            } else if (opc1 == 0x8 || (opc1 == 0xB && (hw1 & 15u) == 1 && ((hw2 >> 6) & 3u) == 3)) {
                d->cost = 14; /* VDIV, VSQRT */
            }
        }
    }
}

static void decode32(uint16_t hw1, uint16_t hw2, insn_info *d)
{
    unsigned op1 = (hw1 >> 11) & 3u;
    unsigned rn = hw1 & 15u;
    if (op1 == 1) {
        if ((hw1 & 0x0600) == 0x0000) {
            if ((hw1 & 0x0040) == 0) { /* LDM/STM (PUSH.W/POP.W) */
                set_multi(d, (unsigned)__builtin_popcount(hw2), R(rn));
                if ((hw1 & 0x0010) && (hw2 & 0x8000)) {
                    d->cost += P_REFILL;
                    d->flags |= F_FLOW;
                }
                return;
            }
            /* load/store dual or exclusive, table branch */
            unsigned o1 = (hw1 >> 7) & 3u, o2 = (hw1 >> 4) & 3u;
            if (o1 == 0 && o2 == 1) {
                set_load1(d, hw2 >> 12, R(rn)); /* LDREX */
            } else if (o1 == 1 && o2 == 1 && ((hw2 >> 4) & 15u) <= 1) {
                set_multi(d, 1, R(rn) | R(hw2 & 15u)); /* TBB/TBH: 2 + P */
                d->cost += P_REFILL;
                d->flags |= F_FLOW;
            } else if (o1 == 1 && o2 == 1) {
                set_load1(d, hw2 >> 12, R(rn)); /* LDREXB/LDREXH */
            } else if (o1 <= 1 && o2 == 0) {
                set_store(d, R(rn), true); /* STREX, STREXB/H: 2, pipelined as LDR */
            } else {
                set_multi(d, 2, R(rn)); /* LDRD/STRD */
            }
        } else if ((hw1 & 0x0600) == 0x0200) { /* data processing (shifted register) */
            unsigned rd = (hw2 >> 8) & 15u;
            if (rd == 15 && (hw1 & 0x0010)) {
                d->cost = 1; /* TST, TEQ, CMN, CMP */
            } else {
                set_dp(d, rd);
            }
        } else {
            decode_fpu(hw1, hw2, d);
        }
    } else if (op1 == 2) {
        if ((hw2 & 0x8000) == 0) { /* data processing (immediate) */
            unsigned rd = (hw2 >> 8) & 15u;
            if (!(hw1 & 0x0200) && rd == 15 && (hw1 & 0x0010)) {
                d->cost = 1; /* TST, TEQ, CMN, CMP */
            } else {
                set_dp(d, rd);
            }
            return;
        }
        unsigned op = (hw1 >> 4) & 0x7Fu;
        unsigned o1 = (hw2 >> 12) & 5u; /* bits 14 and 12 */
        if (o1 == 0) {
            if ((op & 0x38) != 0x38) {
                set_branch_cond(d); /* B<cond>.W */
            } else if ((op & 0x7E) == 0x38) {
                d->cost = 2; /* MSR */
            } else if (op == 0x3B) {
                d->cost = ((hw2 >> 4) & 15u) == 6 ? 1 + P_REFILL : 1; /* ISB; DSB, DMB */
            } else if ((op & 0x7E) == 0x3E) {
                set_dp(d, (hw2 >> 8) & 15u); /* MRS */
                d->cost = 2;
            } else {
                d->cost = 1; /* hints */
            }
        } else if (o1 == 1 || o1 == 5) {
            set_flow(d, 1 + P_REFILL); /* B.W, BL */
        } else {
            d->cost = 1;
        }
    } else {
        unsigned op2 = (hw1 >> 4) & 0x7Fu;
        bool reg_offset = rn != 15 && !(hw1 & 0x0080) && (hw2 & 0x0FC0) == 0;
        uint16_t addr = R(rn) | (reg_offset ? R(hw2 & 15u) : 0);
        if ((op2 & 0x71) == 0x00) {
            set_store(d, addr, reg_offset); /* STR, STRB, STRH */
        } else if ((op2 & 0x67) == 0x01 || (op2 & 0x67) == 0x03 || (op2 & 0x67) == 0x05) {
            if ((hw2 >> 12) != 15) {
                set_load1(d, hw2 >> 12, addr);
            } else if ((op2 & 0x67) == 0x05) {
                set_multi(d, 1, addr); /* LDR PC: 2 + P */
                d->cost += P_REFILL;
                d->flags |= F_FLOW;
            } else {
                d->cost = 1; /* PLD, PLI */
            }
        } else if ((op2 & 0x70) == 0x20 || (op2 & 0x78) == 0x30) {
            set_dp(d, (hw2 >> 8) & 15u); /* data processing (register), multiply */
        } else if ((op2 & 0x78) == 0x38) { /* long multiply, divide */
            set_dp(d, (hw2 >> 8) & 15u);
            if (((op2 & 7u) == 1 || (op2 & 7u) == 3) && ((hw2 >> 4) & 15u) == 15) {
                d->cost = DIV_CYCLES;
            } else {
                d->dest |= R(hw2 >> 12);
            }
        } else if (op2 & 0x40) {
            decode_fpu(hw1, hw2, d);
        } else {
            d->cost = 1;
        }
    }
}

static void decode(const uint8_t *data, size_t size, insn_info *d)
{
    uint16_t hw1 = 0, hw2 = 0;
    memset(d, 0, sizeof *d);
    memcpy(&hw1, data, 2);
    if (size >= 4) {
        memcpy(&hw2, data + 2, 2);
        decode32(hw1, hw2, d);
    } else {
        decode16(hw1, d);
    }
}

/* Cycles to add to `cur` because it follows `prev` directly. */
static int pair_delta(const insn_info *prev, const insn_info *cur)
{
    if ((cur->flags & F_PIPE) && (prev->flags & F_LOAD1) && !(cur->addr & prev->dest)) {
        return -1; /* pipelined behind the previous load */
    }
    if ((cur->flags & F_MEM) && (prev->flags & F_DP) && (cur->addr & prev->dest)) {
        return 1; /* the address waits for the register bank */
    }
    return 0;
}

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
    snprintf(line, sizeof line, "%" PRIu64 " %" PRIu64 "\n", insn_count, cycle_count);
    emit(line);
}

static void on_site(unsigned int vcpu_index, void *userdata)
{
    char line[96];
    (void)vcpu_index;
    snprintf(line, sizeof line, "@%" PRIx64 " %" PRIu64 " %" PRIu64 "\n", *(const uint64_t *)userdata,
             insn_count, cycle_count);
    emit(line);
}

static void on_tb_exec(unsigned int vcpu_index, void *userdata)
{
    const tb_info *tb = userdata;
    (void)vcpu_index;
    if (prev_tb) {
        if ((prev_tb->last.flags & F_FLOW_COND) && tb->start != prev_tb->fallthrough) {
            cycle_count += prev_tb->last.taken_extra;
        }
        if (tb->start == prev_tb->fallthrough) {
            cycle_count += (uint64_t)(int64_t)pair_delta(&prev_tb->last, &tb->first);
        }
    }
    prev_tb = tb;
}

static const uint64_t *find_site(uint64_t addr)
{
    size_t lo = 0, hi = n_sites;
    while (lo < hi) {
        size_t mid = (lo + hi) / 2;
        if (sites[mid] < addr) {
            lo = mid + 1;
        } else {
            hi = mid;
        }
    }
    return lo < n_sites && sites[lo] == addr ? &sites[lo] : NULL;
}

static void on_translate(qemu_plugin_id_t id, struct qemu_plugin_tb *tb)
{
    size_t n = qemu_plugin_tb_n_insns(tb);
    tb_info *info = calloc(1, sizeof *info); /* kept for the block's lifetime (never freed) */
    insn_info prev, cur;
    unsigned it_left = 0;
    (void)id;
    if (!info || n == 0) {
        free(info);
        return;
    }
    memset(&prev, 0, sizeof prev);
    for (size_t i = 0; i < n; i++) {
        struct qemu_plugin_insn *insn = qemu_plugin_tb_get_insn(tb, i);
        uint64_t vaddr = qemu_plugin_insn_vaddr(insn) & ~(uint64_t)1;
        size_t size = qemu_plugin_insn_size(insn);
        const uint64_t *site;
        decode(qemu_plugin_insn_data(insn), size, &cur);
        if (it_left > 0) {
            it_left--;
            if (cur.flags & F_FLOW) {
                /* A PC write inside an IT block: 1 cycle when its condition fails. */
                cur.taken_extra = cur.cost - 1;
                cur.cost = 1;
                cur.flags = (uint8_t)((cur.flags & ~F_FLOW) | F_FLOW_COND);
            }
        }
        if (cur.it_len) {
            it_left = cur.it_len;
        }
        uint32_t cost = cur.cost;
        if (i == 0) {
            info->start = vaddr;
            info->first = cur;
        } else {
            cost = (uint32_t)((int32_t)cost + pair_delta(&prev, &cur));
        }
        if (i + 1 == n) {
            info->last = cur;
            info->fallthrough = vaddr + size;
        }
        prev = cur;
        /* The marker and site callbacks are registered first, so the recorded
           counts exclude the instruction itself. */
        if (have_marker && vaddr == marker_addr) {
            qemu_plugin_register_vcpu_insn_exec_cb(insn, on_marker, QEMU_PLUGIN_CB_NO_REGS, NULL);
        }
        if (n_sites && (site = find_site(vaddr)) != NULL) {
            qemu_plugin_register_vcpu_insn_exec_cb(insn, on_site, QEMU_PLUGIN_CB_NO_REGS, (void *)site);
        }
        qemu_plugin_register_vcpu_insn_exec_inline(insn, QEMU_PLUGIN_INLINE_ADD_U64, &insn_count, 1);
        qemu_plugin_register_vcpu_insn_exec_inline(insn, QEMU_PLUGIN_INLINE_ADD_U64, &cycle_count, cost);
    }
    /* Registered after the instructions' callbacks but run at the block's start. */
    qemu_plugin_register_vcpu_tb_exec_cb(tb, on_tb_exec, QEMU_PLUGIN_CB_NO_REGS, info);
}

static void on_plugin_exit(qemu_plugin_id_t id, void *userdata)
{
    char line[128];
    (void)id;
    (void)userdata;
    snprintf(line, sizeof line, "total %" PRIu64 " cycles %" PRIu64 " marks %" PRIu64 "\n", insn_count,
             cycle_count, marker_hits);
    emit(line);
    if (out_file) {
        fclose(out_file);
        out_file = NULL;
    }
}

static int parse_addr(const char *text, uint64_t *addr)
{
    char *end = NULL;
    *addr = strtoull(text, &end, 0) & ~(uint64_t)1;
    return end == text || *end != '\0' ? -1 : 0;
}

static int cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

__attribute__((visibility("default"))) int qemu_plugin_install(qemu_plugin_id_t id, const qemu_info_t *info,
                                                               int argc, char **argv)
{
    (void)info;
    for (int i = 0; i < argc; i++) {
        const char *a = argv[i];
        if (strncmp(a, "marker=", 7) == 0) {
            if (parse_addr(a + 7, &marker_addr) != 0) {
                fprintf(stderr, "icount: bad marker address '%s'\n", a + 7);
                return -1;
            }
            have_marker = true;
        } else if (strncmp(a, "at=", 3) == 0) {
            if (n_sites == MAX_SITES || parse_addr(a + 3, &sites[n_sites]) != 0) {
                fprintf(stderr, "icount: bad or too many site addresses at '%s'\n", a + 3);
                return -1;
            }
            n_sites++;
        } else if (strncmp(a, "out=", 4) == 0) {
            out_file = fopen(a + 4, "w");
            if (!out_file) {
                fprintf(stderr, "icount: cannot open '%s' for writing\n", a + 4);
                return -1;
            }
        } else {
            fprintf(stderr, "icount: unknown argument '%s' (expected marker=0xADDR, at=0xADDR or out=PATH)\n",
                    a);
            return -1;
        }
    }
    qsort(sites, n_sites, sizeof sites[0], cmp_u64);
    qemu_plugin_register_vcpu_tb_trans_cb(id, on_translate);
    qemu_plugin_register_atexit_cb(id, on_plugin_exit, NULL);
    return 0;
}
