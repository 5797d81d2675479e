/* Hand-counted instruction sequences for the cycle model of the QEMU plugin
 * (reds_tf/qemu_plugin/icount.c), run by tests/test_cycles.py. main() calls
 * reds_bench_mark between snippets; every region between two marks is the
 * marker's `bx lr` (3 cycles), the snippet, then the next `bl` (3 cycles).
 * The expected cycles of each snippet are in the test, next to its rules. */
    .syntax unified
    .cpu cortex-m4
    .fpu fpv4-sp-d16
    .thumb

    .bss
    .balign 8
buf: .space 64

    .text
    .global main
    .thumb_func
main:
    push {r4-r11, lr}
    ldr r4, =buf
    str r4, [r4, #12]          /* buf[3] = &buf: a pointer to chase */
    movs r5, #4
    movs r1, #100
    movs r2, #7
    bl reds_bench_mark
    bl reds_bench_mark         /* region 0: empty */

    /* S1: data processing, multiplies, DSP */
    movs r0, #1
    adds r0, r0, #2
    mul r0, r0, r0
    mla r1, r0, r0, r0
    smlad r1, r0, r0, r1
    sxtb16 r2, r1
    ssat r3, #8, r1
    ubfx r3, r1, #1, #3
    bl reds_bench_mark

    /* S2: single loads, pipelined behind loads */
    ldr r0, [r4]
    ldr r1, [r4, #4]
    ldr r2, [r4, r5]
    ldrb r3, [r4, #1]
    add r6, r0, r1
    ldrh r7, [r4]
    ldr.w r0, [r4, #8]
    bl reds_bench_mark

    /* S3: a load whose address is the previous load's result */
    ldr r0, [r4, #12]
    ldr r1, [r0]
    ldr r2, [r4, #4]
    ldrsh r3, [r4, #2]
    bl reds_bench_mark

    /* S4: stores */
    str r0, [r4, #16]
    str r1, [r4, #20]
    ldr r2, [r4, #16]
    str r2, [r4, r5]
    str r3, [r4, r5]
    strb r0, [r4, #24]
    ldr r6, [r4]
    str.w r6, [r4, r5]
    bl reds_bench_mark

    /* S5: addresses computed by the instruction just before */
    adds r7, r4, #0
    ldr r0, [r7]
    mov r6, r4
    str r0, [r6, #4]
    add.w r7, r4, #8
    ldrd r0, r1, [r7]
    bl reds_bench_mark

    /* S6: dual and multiple transfers */
    ldrd r0, r1, [r4]
    strd r0, r1, [r4, #8]
    ldm r4, {r0, r1, r2}
    push {r0, r1}
    pop {r0, r1}
    ldr r3, [r4]
    bl reds_bench_mark

    /* S7: a loop (taken, taken, not taken) and an unconditional branch */
    movs r0, #3
1:  subs r0, #1
    bne 1b
    b 2f
    nop
2:  bl reds_bench_mark

    /* S8: CBZ taken and not taken, an IT block */
    movs r0, #0
    cbz r0, 3f
    nop
3:  movs r1, #1
    cbz r1, 4f
    nop
4:  cmp r0, r0
    it eq
    moveq r2, #2
    bl reds_bench_mark

    /* S9: calls and returns */
    bl leaf
    bl frame
    bl reds_bench_mark

    /* S10: a conditional return, not taken then taken */
    bl cond_not_taken
    bl cond_taken
    bl reds_bench_mark

    /* S11: divisions */
    movs r2, #3
    udiv r0, r1, r2
    sdiv r0, r1, r2
    bl reds_bench_mark

    /* S12: pairs that straddle a 1 KB page (a translation block boundary) */
    bl straddle_load
    bl straddle_agu
    bl reds_bench_mark

    /* S13: FPU */
    vldr s0, [r4]
    vadd.f32 s1, s0, s0
    vmla.f32 s1, s0, s0
    vmov r0, s1
    bl reds_bench_mark

    movs r0, #0
    pop {r4-r11, pc}
    .ltorg

    .thumb_func
leaf:
    bx lr

    .thumb_func
frame:
    push {r4, lr}
    pop {r4, pc}

    .thumb_func
cond_not_taken:
    cmp r0, r0
    it ne
    bxne lr
    bx lr

    .thumb_func
cond_taken:
    cmp r0, r0
    it eq
    bxeq lr
    bx lr

    .section .text.straddle, "ax", %progbits
    .balign 1024
    .space 1022
    .thumb_func
straddle_load:
    ldr r0, [r4]               /* the last halfword of a 1 KB page */
    ldr r1, [r4, #4]
    bx lr
    .balign 1024
    .space 1022
    .thumb_func
straddle_agu:
    adds r7, r4, #0
    ldr r0, [r7]
    bx lr
