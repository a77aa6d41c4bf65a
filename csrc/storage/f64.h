/* storage/f64.h: float64 storage, computed in float64. */
#define FO_STORAGE_f64_TYPE double
#define FO_STORAGE_f64_COMPUTE double
#define FO_STORAGE_f64_NAME "float64"
#define FO_STORAGE_f64_BLOCK 1
#define FO_STORAGE_f64_KIND WIDE
#define FO_STORAGE_f64_NARROW 0
#define FO_STORAGE_f64_SQRT sqrt
#define FO_STORAGE_f64_ABS fabs
#define FO_STORAGE_f64_LOAD(ptr, k) ((ptr)[k])
#define FO_STORAGE_f64_STORE(ptr, k, x) ((ptr)[k] = (x))
