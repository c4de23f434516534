# Sourced by the project's scripts: puts the virtualenv's tools (python,
# mpirun, mpicc) first on PATH. The dtl binary itself needs none of this: it
# finds libtorch and Open MPI through its rpath.
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
export PATH="$root/.venv/bin:$PATH"
# Open MPI refuses to run as root without these.
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
