/*
 * prefetch_nt.c: does software prefetch or non-temporal stores help the Adam step at DRAM
 * sizes?  A standalone float32 Adam loop over 3.2e7 elements, 2 OpenMP threads, three
 * variants interleaved 15 times: plain (what csrc/ ships), __builtin_prefetch 4 KiB ahead
 * on all four streams, and _mm256_stream_ps stores.  x86-64 with AVX2 only.
 *
 *   cc -O3 -ffp-contract=off -fno-math-errno -fopenmp bench/prefetch_nt.c -o /tmp/prefetch_nt -lm
 *   OMP_NUM_THREADS=2 /tmp/prefetch_nt
 *
 * Result on the 2-core Zen 3 development machine (two runs): plain 25.5 / 27.9 ms,
 * prefetch 26.3 / 28.6 ms, non-temporal 29.4 / 34.1 ms (medians).  Neither helps: the
 * hardware prefetcher already follows four linear streams, and a non-temporal store
 * of a line the loop has just read saves no read-for-ownership.  So csrc/ keeps the plain loop.
 */
#include <immintrin.h>
#include <math.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <stdint.h>
#include <string.h>
#define N 32000000L  /* 4 x 128 MB: far beyond any cache */
static double now(void){ return omp_get_wtime(); }
__attribute__((target("avx2,fma"))) static void plain(float *restrict p, const float *restrict g, float *restrict m, float *restrict v, long n) {
    const float b1=0.9f, omb1=0.1f, b2=0.999f, omb2=0.001f, ss=1e-3f, ib=1.0f, eps=1e-8f;
    #pragma omp simd
    for (long k=0;k<n;k++){ float gr=g[k]; float mm=b1*m[k]+omb1*gr; float vv=b2*v[k]+omb2*(gr*gr); m[k]=mm; v[k]=vv; p[k]=p[k]-ss*mm/(sqrtf(vv)*ib+eps);} }
__attribute__((target("avx2,fma"))) static void prefetch(float *restrict p, const float *restrict g, float *restrict m, float *restrict v, long n) {
    const float b1=0.9f, omb1=0.1f, b2=0.999f, omb2=0.001f, ss=1e-3f, ib=1.0f, eps=1e-8f;
    const long D = 1024; /* elements ahead: 4 KiB */
    for (long k0=0;k0<n;k0+=16){
        __builtin_prefetch(p+k0+D,1); __builtin_prefetch(g+k0+D,0); __builtin_prefetch(m+k0+D,1); __builtin_prefetch(v+k0+D,1);
        long e = k0+16<n?k0+16:n;
        #pragma omp simd
        for (long k=k0;k<e;k++){ float gr=g[k]; float mm=b1*m[k]+omb1*gr; float vv=b2*v[k]+omb2*(gr*gr); m[k]=mm; v[k]=vv; p[k]=p[k]-ss*mm/(sqrtf(vv)*ib+eps);} } }
__attribute__((target("avx2,fma"))) static void ntstore(float *restrict p, const float *restrict g, float *restrict m, float *restrict v, long n) {
    const __m256 b1=_mm256_set1_ps(0.9f), omb1=_mm256_set1_ps(0.1f), b2=_mm256_set1_ps(0.999f), omb2=_mm256_set1_ps(0.001f), ss=_mm256_set1_ps(1e-3f), ib=_mm256_set1_ps(1.0f), eps=_mm256_set1_ps(1e-8f);
    for (long k=0;k+8<=n;k+=8){ __m256 gr=_mm256_load_ps(g+k); __m256 mm=_mm256_add_ps(_mm256_mul_ps(b1,_mm256_load_ps(m+k)),_mm256_mul_ps(omb1,gr));
      __m256 vv=_mm256_add_ps(_mm256_mul_ps(b2,_mm256_load_ps(v+k)),_mm256_mul_ps(omb2,_mm256_mul_ps(gr,gr)));
      __m256 pp=_mm256_sub_ps(_mm256_load_ps(p+k),_mm256_div_ps(_mm256_mul_ps(ss,mm),_mm256_add_ps(_mm256_mul_ps(_mm256_sqrt_ps(vv),ib),eps)));
      _mm256_stream_ps(m+k,mm); _mm256_stream_ps(v+k,vv); _mm256_stream_ps(p+k,pp);} }
typedef void (*fn)(float*,const float*,float*,float*,long);
int main(void){
    float *p=aligned_alloc(64,N*4),*g=aligned_alloc(64,N*4),*m=aligned_alloc(64,N*4),*v=aligned_alloc(64,N*4);
    #pragma omp parallel for
    for(long i=0;i<N;i++){p[i]=1;g[i]=0.001f;m[i]=0;v[i]=0;}
    fn fns[3]={plain,prefetch,ntstore}; const char*names[3]={"plain","prefetch","ntstore"};
    double best[3]={1e9,1e9,1e9}; double med[3][15];
    for(int r=0;r<15;r++) for(int f=0;f<3;f++){
        double t0=now();
        #pragma omp parallel
        { int t=omp_get_thread_num(), nt=omp_get_num_threads(); long b=N/nt*t/16*16, e=t==nt-1?N:N/nt*(t+1)/16*16; fns[f](p+b,g+b,m+b,v+b,e-b); _mm_sfence(); }
        double dt=now()-t0; med[f][r]=dt; if(dt<best[f])best[f]=dt; }
    for(int f=0;f<3;f++){ double s[15]; memcpy(s,med[f],sizeof s); for(int i=0;i<15;i++)for(int j=i+1;j<15;j++)if(s[j]<s[i]){double x=s[i];s[i]=s[j];s[j]=x;}
      printf("%-9s median %.2f ms  best %.2f ms  %.1f GB/s (median)\n",names[f],s[7]*1e3,best[f]*1e3,28.0*N/s[7]/1e9);}
    return 0; }
