/**
 * cuda_api — the CUDA runtime, loaded at run time with dlopen, so that `pixelmill` runs
 * on machines without CUDA and the GPU checks report "skipped" there.
 *
 * Built with the toolkit's headers when CMake finds them (PM_HAVE_CUDA_HEADERS): every
 * pointer below has the exact type of the header's declaration, and the library loaded is
 * the one whose soname matches the headers' major version (libcudart.so.13 for CUDA 13),
 * so structures and enums agree. Without the headers, cuda_api_load() always fails with
 * "built without the CUDA toolkit headers".
 *
 * The library handle is process-wide and never closed (CUDA does not support unloading).
 * Thread-safe after the first successful load.
 */
#ifndef PM_CUDA_API_H
#define PM_CUDA_API_H

#include <stddef.h>

#ifdef PM_HAVE_CUDA_HEADERS
#include <cuda_runtime_api.h>

/** The runtime functions the checks use. */
struct cuda_api {
    __typeof__(cudaGetDeviceCount) *GetDeviceCount;
    __typeof__(cudaSetDevice) *SetDevice;
    __typeof__(cudaMemGetInfo) *MemGetInfo;
    __typeof__(cudaDeviceGetAttribute) *DeviceGetAttribute;
    __typeof__(cudaMalloc) *Malloc;
    __typeof__(cudaFree) *Free;
    __typeof__(cudaMemcpy) *Memcpy;
    __typeof__(cudaMemset) *Memset;
    __typeof__(cudaDeviceSynchronize) *DeviceSynchronize;
    __typeof__(cudaStreamCreate) *StreamCreate;
    __typeof__(cudaStreamDestroy) *StreamDestroy;
    __typeof__(cudaStreamSynchronize) *StreamSynchronize;
    __typeof__(cudaEventCreate) *EventCreate;
    __typeof__(cudaEventDestroy) *EventDestroy;
    __typeof__(cudaEventRecord) *EventRecord;
    __typeof__(cudaEventSynchronize) *EventSynchronize;
    __typeof__(cudaEventElapsedTime) *EventElapsedTime;
    __typeof__(cudaGetErrorString) *GetErrorString;
    __typeof__(cudaRuntimeGetVersion) *RuntimeGetVersion;
    __typeof__(cudaDriverGetVersion) *DriverGetVersion;
    int (*GetDevicePropertiesName)(int dev, char *name, size_t size); // filled by us
};
#else
struct cuda_api {
    int unused;
};
#endif

/**
 * Load the runtime (once per process). Returns a pointer to the shared table, or NULL
 * with the reason (library not found, symbol missing, built without headers) in `why`.
 */
const struct cuda_api *cuda_api_load(char *why, size_t why_size);

#ifdef PM_HAVE_CUDA_HEADERS
/**
 * Why cudaGetDeviceCount() found no device, in words: the runtime's message, or "no
 * NVIDIA driver (libcuda.so.1 not loadable)" when the runtime's "driver version is
 * insufficient" really means there is no driver at all.
 */
void cuda_api_no_device_reason(const struct cuda_api *cu, cudaError_t e, char *buf, size_t size);
#endif

/**
 * dlopen the first of `names` (NULL-terminated) that loads; on failure writes
 * "NAME not loadable: dlerror" for the first name into `why`. Returns the handle or NULL.
 */
void *cuda_api_dlopen_first(const char *const *names, char *why, size_t why_size);

#endif
