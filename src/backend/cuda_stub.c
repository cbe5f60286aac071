/* ds4 — the CUDA entry points of a build without CUDA (`make` rather than
 * `make cuda`): no backend, never available. */
#include "backend/backend.h"

#ifndef DS4_WITH_CUDA
const ds4_backend_ops *ds4_cuda_backend(void) { return NULL; }
bool ds4_cuda_available(void) { return false; }
int ds4_cuda_cmp_ring(const ds4_session *s) {
    (void)s;
    return 0;
}
#endif
