#include "cuda_api.h"

#include <dlfcn.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>

void *cuda_api_dlopen_first(const char *const *names, char *why, size_t why_size)
{
    char first[256] = "";
    for (size_t i = 0; names[i]; i++) {
        void *h = dlopen(names[i], RTLD_NOW | RTLD_LOCAL);
        if (h)
            return h;
        if (!first[0]) {
            const char *e = dlerror();
            snprintf(first, sizeof first, "%s", e ? e : names[i]);
        }
    }
    snprintf(why, why_size, "%s not loadable (%s)", names[0], first);
    return NULL;
}

#ifdef PM_HAVE_CUDA_HEADERS

#define STR2(x) #x
#define STR(x) STR2(x)

static struct cuda_api api;
static const struct cuda_api *loaded;
static char load_error[512];
static pthread_once_t once = PTHREAD_ONCE_INIT;

// cudaDeviceProp's layout changes between major versions; the soname pins the major.
// CUDA 12 headers #define cudaGetDeviceProperties to cudaGetDeviceProperties_v2; STR()
// expands that macro, so the symbol looked up is the one the headers would call.
static __typeof__(cudaGetDeviceProperties) *get_props;

static int props_name(int dev, char *name, size_t size)
{
    struct cudaDeviceProp p;
    memset(&p, 0, sizeof p);
    cudaError_t e = get_props(&p, dev);
    if (e != cudaSuccess)
        return (int)e;
    snprintf(name, size, "%.*s", (int)sizeof p.name, p.name);
    return 0;
}

static void load_once(void)
{
    // CUDART_VERSION is major*1000 + minor*10: load the runtime of the headers' major.
    char soname[64];
    snprintf(soname, sizeof soname, "libcudart.so.%d", CUDART_VERSION / 1000);
    const char *names[] = {soname, NULL};
    void *h = cuda_api_dlopen_first(names, load_error, sizeof load_error);
    if (!h)
        return;
#define SYM(field, sym)                                                                            \
    do {                                                                                           \
        *(void **)&api.field = dlsym(h, sym);                                                      \
        if (!api.field) {                                                                          \
            snprintf(load_error, sizeof load_error, "%s lacks %s", soname, sym);                   \
            return;                                                                                \
        }                                                                                          \
    } while (0)
    SYM(GetDeviceCount, "cudaGetDeviceCount");
    SYM(SetDevice, "cudaSetDevice");
    SYM(MemGetInfo, "cudaMemGetInfo");
    SYM(DeviceGetAttribute, "cudaDeviceGetAttribute");
    SYM(Malloc, "cudaMalloc");
    SYM(Free, "cudaFree");
    SYM(Memcpy, "cudaMemcpy");
    SYM(Memset, "cudaMemset");
    SYM(DeviceSynchronize, "cudaDeviceSynchronize");
    SYM(StreamCreate, "cudaStreamCreate");
    SYM(StreamDestroy, "cudaStreamDestroy");
    SYM(StreamSynchronize, "cudaStreamSynchronize");
    SYM(EventCreate, "cudaEventCreate");
    SYM(EventDestroy, "cudaEventDestroy");
    SYM(EventRecord, "cudaEventRecord");
    SYM(EventSynchronize, "cudaEventSynchronize");
    SYM(EventElapsedTime, "cudaEventElapsedTime");
    SYM(GetErrorString, "cudaGetErrorString");
    SYM(RuntimeGetVersion, "cudaRuntimeGetVersion");
    SYM(DriverGetVersion, "cudaDriverGetVersion");
#undef SYM
    *(void **)&get_props = dlsym(h, STR(cudaGetDeviceProperties));
    if (!get_props) {
        snprintf(load_error, sizeof load_error, "%s lacks %s", soname,
                 STR(cudaGetDeviceProperties));
        return;
    }
    api.GetDevicePropertiesName = props_name;
    loaded = &api;
}

void cuda_api_no_device_reason(const struct cuda_api *cu, cudaError_t e, char *buf, size_t size)
{
    if (e == cudaErrorInsufficientDriver) {
        void *drv = dlopen("libcuda.so.1", RTLD_LAZY | RTLD_LOCAL);
        if (!drv) {
            snprintf(buf, size, "no NVIDIA driver (libcuda.so.1 not loadable)");
            return;
        }
        dlclose(drv);
    }
    snprintf(buf, size, "%s", e == cudaSuccess ? "0 devices" : cu->GetErrorString(e));
}

const struct cuda_api *cuda_api_load(char *why, size_t why_size)
{
    pthread_once(&once, load_once);
    if (!loaded)
        snprintf(why, why_size, "%s", load_error);
    return loaded;
}

#else

const struct cuda_api *cuda_api_load(char *why, size_t why_size)
{
    snprintf(why, why_size, "built without the CUDA toolkit headers");
    return NULL;
}

#endif
