/* storage/f32.h: float32 storage, computed in float32. */
#define FO_STORAGE_f32_TYPE float
#define FO_STORAGE_f32_COMPUTE float
#define FO_STORAGE_f32_NAME "float32"
#define FO_STORAGE_f32_BLOCK 1
#define FO_STORAGE_f32_KIND WIDE
#define FO_STORAGE_f32_NARROW 0
#define FO_STORAGE_f32_SQRT sqrtf
#define FO_STORAGE_f32_ABS fabsf
#define FO_STORAGE_f32_LOAD(ptr, k) ((ptr)[k])
#define FO_STORAGE_f32_STORE(ptr, k, x) ((ptr)[k] = (x))
