/* What the Rust side needs of MPI that rsmpi does not give. */
#include <mpi.h>
#include <stdlib.h>
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
