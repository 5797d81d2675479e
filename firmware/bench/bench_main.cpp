/* REDS bench build for QEMU (mps2-an386): measures the generated runtime with
 * the instruction-count plugin, then checks its outputs. Built twice by
 * `reds bench` (reds_tf/bench.py): with the DSP kernels and with
 * -DREDS_NO_DSP (portable reference kernels).
 *
 * The sequence of reds_bench_mark() calls is the contract with bench.py:
 *   2 marks            an empty region (the cost of the marks themselves)
 *   per submodel k = 0 .. K-1, coming from submodel k-1 (K-1 for k = 0):
 *     2 marks          around reds_set_submodel(k)
 *     2 marks          around one reds_invoke() on the first input
 * Then, unmeasured, every input through every submodel; each output is
 * printed on UART0 as "out J K HEX" and at the end "stack BYTES" and "done".
 */
#include <stddef.h>
#include <stdint.h>

#include "bench_io.h"
#include "reds_kernels.h"
#include "reds_model.h"

#if REDS_USE_DSP
#define REDS_BENCH_VARIANT "dsp"
#else
#define REDS_BENCH_VARIANT "portable"
#endif

static int8_t reds_bench_output[REDS_OUTPUT_SIZE];

int main(void) {
    const reds_bench_inputs *in = &reds_bench_io;
    if (in->magic != REDS_BENCH_MAGIC || in->size != (uint32_t)REDS_INPUT_SIZE || in->count == 0u) {
        reds_bench_write("error: no benchmark inputs at reds_bench_io\n");
        return 4;
    }
    reds_bench_write("variant " REDS_BENCH_VARIANT "\nsubmodels ");
    reds_bench_write_u32((uint32_t)reds_num_submodels());
    reds_bench_write("\n");

    int rc = 0;
    reds_bench_mark();
    reds_bench_mark();
    for (int k = 0; k < REDS_NUM_SUBMODELS; k++) {
        reds_bench_mark();
        rc |= reds_set_submodel(k);
        reds_bench_mark();
        reds_bench_mark();
        rc |= reds_invoke(in->data, reds_bench_output);
        reds_bench_mark();
    }
    if (rc != 0) {
        reds_bench_write("error: reds_set_submodel or reds_invoke failed\n");
        return 5;
    }

    for (uint32_t j = 0; j < in->count; j++) {
        const int8_t *x = in->data + (size_t)j * in->size;
        for (int k = 0; k < REDS_NUM_SUBMODELS; k++) {
            if (reds_set_submodel(k) != 0 || reds_invoke(x, reds_bench_output) != 0) {
                reds_bench_write("error: inference failed\n");
                return 5;
            }
            reds_bench_write("out ");
            reds_bench_write_u32(j);
            reds_bench_write(" ");
            reds_bench_write_u32((uint32_t)k);
            reds_bench_write(" ");
            reds_bench_write_hex(reds_bench_output, (uint32_t)REDS_OUTPUT_SIZE);
            reds_bench_write("\n");
        }
    }
    reds_bench_write("stack ");
    reds_bench_write_u32(reds_bench_stack_used());
    reds_bench_write("\ndone\n");
    return 0;
}
