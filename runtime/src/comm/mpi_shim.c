/* What the Rust side needs of MPI that rsmpi does not give. */
#include <mpi.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#if defined(__has_include)
#if __has_include(<mpi-ext.h>)
#include <mpi-ext.h>
#endif
#endif

/* MPI_IN_PLACE for the Rust side, whatever value this MPI gives it. */
void *dtl_mpi_in_place(void) { return MPI_IN_PLACE; }

/* The ranks of `comm` this process knows to have failed (Open MPI's ULFM
   extension), at most `max` of them written into `ranks`: their count, or
   -1 when this MPI cannot tell. */
int dtl_mpi_failed_ranks(MPI_Comm comm, int *ranks, int max) {
#if defined(OMPI_HAVE_MPI_EXT_FTMPI) && OMPI_HAVE_MPI_EXT_FTMPI
    MPI_Group failed, all;
    int n = 0;
    if (MPIX_Comm_get_failed(comm, &failed) != MPI_SUCCESS) {
        return -1;
    }
    MPI_Group_size(failed, &n);
    MPI_Comm_group(comm, &all);
    int k = n < max ? n : max;
    int *in = malloc(sizeof(int) * (k > 0 ? k : 1));
    if (in == NULL) {
        return -1;
    }
    for (int i = 0; i < k; i++) {
        in[i] = i;
    }
    MPI_Group_translate_ranks(failed, k, in, all, ranks);
    free(in);
    MPI_Group_free(&failed);
    MPI_Group_free(&all);
    return n;
#else
    (void)comm;
    (void)ranks;
    (void)max;
    return -1;
#endif
}

/* bfloat16 values (16-bit words) summed as NCCL sums them: each pair
   added in float and the sum rounded to the nearest bfloat16, ties to
   even; a NaN stays a NaN. */
static void bf16_sum(void *in, void *inout, int *len, MPI_Datatype *type) {
    const uint16_t *a = in;
    uint16_t *b = inout;
    (void)type;
    for (int i = 0; i < *len; i++) {
        uint32_t x = (uint32_t)a[i] << 16, y = (uint32_t)b[i] << 16, bits;
        float fx, fy, sum;
        memcpy(&fx, &x, sizeof fx);
        memcpy(&fy, &y, sizeof fy);
        sum = fx + fy;
        memcpy(&bits, &sum, sizeof bits);
        if ((bits & 0x7f800000u) == 0x7f800000u && (bits & 0x007fffffu) != 0) {
            b[i] = (uint16_t)((bits >> 16) | 0x0040u);
        } else {
            b[i] = (uint16_t)((bits + 0x7fffu + ((bits >> 16) & 1u)) >> 16);
        }
    }
}

static MPI_Op bf16_sum_op = MPI_OP_NULL;

/* The bfloat16 sum as an MPI operation, created at its first use. */
MPI_Op dtl_mpi_bf16_sum(void) {
    if (bf16_sum_op == MPI_OP_NULL) {
        MPI_Op_create(bf16_sum, 1, &bf16_sum_op);
    }
    return bf16_sum_op;
}
