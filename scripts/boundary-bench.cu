/* ds4 — what a kernel boundary costs in a chain of GEMV-like launches
 * (GPU machine; not part of the build or the tests).
 *
 *   nvcc -O3 -arch=sm_90a -o /tmp/boundary-bench scripts/boundary-bench.cu && /tmp/boundary-bench
 *
 * 86 launches in a CUDA graph (a decode step has about as many stage
 * boundaries on its main stream), each streaming its own weight bytes
 * (2 to 36 MB, every block its stretch by 16-byte no-allocate loads) and
 * reading the launch before it's 4,096 floats. Four ways for a launch to
 * wait for the one before, all launched programmatically (PDL), the first
 * weight loads always issued before the wait:
 *   pdl          griddepcontrol.wait, as the engine's kernels wait;
 *   spin+exit    a counter the blocks of the launch before add to (release)
 *                and one thread a block polls (acquire), then
 *                griddepcontrol.wait before the block exits, so a launch's
 *                completion still implies its predecessor's;
 *   spin         the counter alone;
 *   nodep        no wait at all (the launches overlap freely): the bound.
 * Prints microseconds a launch (best of five replays of ten graphs) for
 * three grid sizes. docs/bench/history-7.md, "thirty-seventh", has the H200's. */
#include <cstdio>
#include <cstdlib>
#include <cstdint>
#include <cuda_runtime.h>
#define CK(x)                                                                        \
    do {                                                                             \
        cudaError_t e_ = (x);                                                        \
        if (e_ != cudaSuccess) {                                                     \
            printf("%s:%d %s\n", __FILE__, __LINE__, cudaGetErrorString(e_));        \
            exit(1);                                                                 \
        }                                                                            \
    } while (0)

__device__ __forceinline__ void pwait() { asm volatile("griddepcontrol.wait;" ::: "memory"); }
__device__ __forceinline__ void ptrig() { asm volatile("griddepcontrol.launch_dependents;" ::: "memory"); }
__device__ __forceinline__ uint4 ldnc(const uint4 *p) {
    uint4 r;
    asm volatile("ld.global.nc.L1::no_allocate.v4.u32 {%0,%1,%2,%3}, [%4];"
                 : "=r"(r.x), "=r"(r.y), "=r"(r.z), "=r"(r.w)
                 : "l"(p));
    return r;
}
__device__ __forceinline__ unsigned ld_acq(const unsigned *p) {
    unsigned v;
    asm volatile("ld.acquire.gpu.global.u32 %0, [%1];" : "=r"(v) : "l"(p) : "memory");
    return v;
}

#define XN 4096
// mode 0: PDL wait; 1: counter spin (one thread, others at a barrier), PDL wait at exit;
// 2: counter spin, no PDL wait at all; 3: no dependency (lower bound)
template <int MODE>
__global__ void __launch_bounds__(256) chain(const uint4 *W, size_t per_block_u4, const float *xin, float *xout,
                                              unsigned *cnt, int k, int G) {
    const uint4 *w = W + (size_t)blockIdx.x * per_block_u4;
    // first loads before the wait (weights do not depend on the kernel ahead),
    // within the block's stretch (a 2 MB launch on 528 blocks has 248 units)
    const uint4 z = make_uint4(0, 0, 0, 0);
    uint4 a = threadIdx.x < per_block_u4 ? ldnc(w + threadIdx.x) : z;
    uint4 b = 256 + threadIdx.x < per_block_u4 ? ldnc(w + 256 + threadIdx.x) : z;
    if (MODE == 0) { pwait(); ptrig(); }
    if (MODE == 1 || MODE == 2) {
        if (k > 0 && threadIdx.x == 0) {
            while (ld_acq(cnt + k - 1) < (unsigned)G) __nanosleep(20);
        }
        __syncthreads();
        ptrig();
    }
    if (MODE == 3) ptrig();
    // read x (the previous kernel's output)
    float xs = 0.f;
    for (int i = threadIdx.x; i < XN; i += 256) xs += __ldcg(xin + i);
    unsigned acc = a.x ^ a.y ^ a.z ^ a.w ^ b.x ^ b.y ^ b.z ^ b.w;
    for (size_t i = 512 + threadIdx.x; i < per_block_u4; i += 1024) {
        uint4 c = ldnc(w + i), d = i + 256 < per_block_u4 ? ldnc(w + i + 256) : z;
        uint4 e = i + 512 < per_block_u4 ? ldnc(w + i + 512) : z;
        uint4 f = i + 768 < per_block_u4 ? ldnc(w + i + 768) : z;
        acc += c.x ^ c.y ^ c.z ^ c.w ^ d.x ^ d.y ^ d.z ^ d.w ^ e.x ^ e.y ^ e.z ^ e.w ^ f.x ^ f.y ^ f.z ^ f.w;
    }
    // block sum
    __shared__ float red[8];
    float v = xs * 1e-9f + (float)(acc & 0xff) * 1e-9f;
    for (int o = 16; o; o >>= 1) v += __shfl_xor_sync(~0u, v, o);
    if ((threadIdx.x & 31) == 0) red[threadIdx.x >> 5] = v;
    __syncthreads();
    if (threadIdx.x < 16) {
        float s = 0; for (int i = 0; i < 8; i++) s += red[i];
        for (int j = blockIdx.x * 16 + threadIdx.x; j < XN; j += G * 16) xout[j] = s;
    }
    if (MODE == 1 || MODE == 2) {
        __syncthreads();
        if (threadIdx.x == 0) { __threadfence(); atomicAdd(cnt + k, 1u); }
    }
    if (MODE == 1) pwait();
}

template <int MODE>
static void launch(cudaStream_t s, int G, const uint4 *W, size_t pb, const float *xi, float *xo, unsigned *cnt, int k) {
    cudaLaunchConfig_t cfg = {};
    cfg.gridDim = dim3(G); cfg.blockDim = dim3(256); cfg.stream = s;
    cudaLaunchAttribute at; at.id = cudaLaunchAttributeProgrammaticStreamSerialization;
    at.val.programmaticStreamSerializationAllowed = 1;
    cfg.attrs = &at; cfg.numAttrs = 1;
    CK(cudaLaunchKernelEx(&cfg, chain<MODE>, W, pb, xi, xo, cnt, k, G));
}

typedef void (*launch_fn)(cudaStream_t, int, const uint4 *, size_t, const float *, float *, unsigned *, int);
static const launch_fn launches[4] = {launch<0>, launch<1>, launch<2>, launch<3>};

int main(void) {
    const int L = 86;
    int sms; CK(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, 0));
    size_t sizes_mb[] = {2, 8, 26, 36};
    uint4 *W; size_t maxb = (size_t)36 << 20;
    CK(cudaMalloc(&W, maxb * L));
    CK(cudaMemset(W, 1, maxb * L));
    float *x; CK(cudaMalloc(&x, sizeof(float) * XN * (L + 1))); CK(cudaMemset(x, 0, sizeof(float) * XN * (L + 1)));
    unsigned *cnt; CK(cudaMalloc(&cnt, 4 * L));
    cudaStream_t s; CK(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking));
    cudaEvent_t e0, e1; cudaEventCreate(&e0); cudaEventCreate(&e1);
    int grids[] = {sms * 2, sms, sms * 4};
    for (int gi = 0; gi < 3; gi++)
    for (int si = 0; si < 4; si++) {
        const int G = grids[gi];
        const size_t bytes = sizes_mb[si] << 20, pb = bytes / 16 / G;
        float res[4];
        for (int mode = 0; mode < 4; mode++) {
            cudaGraph_t g; cudaGraphExec_t ge;
            CK(cudaStreamBeginCapture(s, cudaStreamCaptureModeGlobal));
            CK(cudaMemsetAsync(cnt, 0, 4 * L, s));
            for (int k = 0; k < L; k++)
                launches[mode](s, G, W + (size_t)k * (maxb / 16), pb, x + XN * k, x + XN * (k + 1), cnt, k);
            CK(cudaStreamEndCapture(s, &g));
            CK(cudaGraphInstantiate(&ge, g, 0));
            for (int r = 0; r < 5; r++) CK(cudaGraphLaunch(ge, s));
            CK(cudaStreamSynchronize(s));
            float best = 1e30f;
            for (int rep = 0; rep < 5; rep++) {
                cudaEventRecord(e0, s);
                for (int r = 0; r < 10; r++) CK(cudaGraphLaunch(ge, s));
                cudaEventRecord(e1, s);
                CK(cudaEventSynchronize(e1));
                float ms; cudaEventElapsedTime(&ms, e0, e1);
                if (ms < best) best = ms;
            }
            res[mode] = best * 1000.f / 10 / L;
            cudaGraphExecDestroy(ge); cudaGraphDestroy(g);
        }
        printf("grid %4d  %2zu MB/kernel: us/kernel pdl %.2f  spin+exit %.2f  spin %.2f  nodep %.2f"
               "  (bytes at 4 TB/s %.2f)\n",
               G, sizes_mb[si], res[0], res[1], res[2], res[3], bytes / 4e6);
    }
    return 0;
}
