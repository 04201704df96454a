// Bit-packed XNOR-popcount convolutions for binary FLAVR (CPU), registered as torch ops
// in the `bitconv` namespace (see engine/ops.py for the Python side and the semantics).
//
// Layouts (all words uint64 stored in int64 tensors; bit i of word k = channel 64k + i,
// bit = 1 for a -1 sign, unused high bits are zero):
//   packed activations  [B, T+2, H+2, W+2, words]  channels-last, one-voxel halo of zero
//                       words (= +1 signs: the model's one-padding)
//   conv weights        [groups, taps, words, 8]   8 output channels per group, taps in
//                       (kt, kh, kw) order
//   transposed weights  [4, groups, 12, words, 8]  one (3,2,2) sub-kernel per output phase
// Each output is  y = (K - 2 * popcount(a XOR w)) * multiplier[c] + bias[c]  (K = taps *
// in_channels), optionally followed by y < 0 ? y * negative_slope : y, written as a
// contiguous (NCDHW) float tensor. Activations are packed from NCDHW or channels-last input.
//
// One build serves every x86 CPU: each instruction-set variant is compiled with its own
// function target attribute and picked at run time with __builtin_cpu_supports. On aarch64
// the NEON variant (part of the base instruction set there) replaces them.

#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <atomic>
#include <bit>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <map>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <tuple>
#include <vector>

#if defined(__linux__)
#include <sys/mman.h>
#endif

#if (defined(__GNUC__) || defined(__clang__)) && defined(__x86_64__)
#define BITCONV_X86 1
#include <immintrin.h>
#endif

#if defined(__aarch64__)
#define BITCONV_NEON 1
#include <arm_neon.h>
#endif

#if defined(__GNUC__) || defined(__clang__)
#define BF_PREFETCH_WRITE(p) __builtin_prefetch((p), 1)
#else
#define BF_PREFETCH_WRITE(p) ((void)(p))
#endif

#if defined(__clang__)
#define BF_UNROLL _Pragma("unroll")
#elif defined(__GNUC__)
#define BF_UNROLL _Pragma("GCC unroll 32")
#else
#define BF_UNROLL
#endif

namespace bitconv {

constexpr int64_t kGroup = 8;  // output channels per packed weight group

struct Epilogue {
  int64_t dot_terms;  // K: number of +-1 products per output
  int64_t out_channels;
  const float* multiplier;
  const float* bias;
  bool activate;
  float slope;
};

// One strided family of outputs (a plain conv has one, a transposed conv one per phase),
// computed row by row, into a channels-last scratch row or straight into the output row.
struct ConvPlan {
  const uint64_t* input;
  const uint64_t* weight;
  const int64_t* tap_offsets;   // words from the window origin to each tap
  const int64_t* step_offsets;  // words from the window origin to word k of tap t, at step t * words + k
  int64_t taps, words, groups;
  int64_t depth, height, cols;  // grid of this plan per batch sample: rows (depth x height) x columns
  int64_t in_base, in_b, in_t, in_h, in_col_step;  // words
  int64_t col_offset, col_step;  // column j of the plan is output column col_offset + j * col_step
  int64_t channel_stride;         // floats between output channels (NCDHW planes)
  Epilogue epilogue;
};

// Plans that fill the same output rows (transposed conv: the two column phases), and where
// each output row starts in the NCDHW output.
struct ConvJob {
  ConvPlan plans[2];
  int plan_count;
  float* output;
  int64_t out_b, out_t, out_h, out_offset, out_cols;  // floats
};

struct PackPlan {
  const float* input;             // channels-last input [B, T, H, W, C], or null
  const float* const* planes;     // NCDHW input: channel c of sample 0 starts at planes[c]
  const int64_t* batch_strides;   // NCDHW input: floats between samples, per channel
  uint64_t* output;               // [B, T+2, H+2, W+2, words]
  int64_t depth, height, width, channels, words;
  const float* scale;  // per channel: sign = +1 where fma(x, scale, shift) >= 0
  const float* shift;
};

// The reference epilogue; every variant produces bit-identical floats (mul, then add).
static inline float finish_one(int64_t count, const Epilogue& e, int64_t channel) {
  const float dot = static_cast<float>(e.dot_terms - 2 * count);
  float y = dot * e.multiplier[channel];
  y = y + e.bias[channel];
  if (e.activate && !(y >= 0.f)) y = y * e.slope;
  return y;
}

// Makes the compiler assume the words at p changed, so that a benchmark loop reloads them.
static inline void clobber(const void* p) {
#if defined(__GNUC__) || defined(__clang__)
  asm volatile("" : : "r"(p) : "memory");
#else
  std::atomic_signal_fence(std::memory_order_seq_cst);
#endif
}

// Bit i of word k is set (sign -1) unless fma(x[c], scale[c], shift[c]) >= 0, c = 64k + i.
static inline void pack_position_scalar(const float* x, int64_t channels, const float* scale,
                                        const float* shift, uint64_t* out) {
  const int64_t words = (channels + 63) / 64;
  for (int64_t k = 0; k < words; ++k) {
    uint64_t bits = 0;
    const int64_t end = std::min<int64_t>(64, channels - 64 * k);
    for (int64_t i = 0; i < end; ++i) {
      const int64_t c = 64 * k + i;
      bits |= static_cast<uint64_t>(!(std::fma(x[c], scale[c], shift[c]) >= 0.f)) << i;
    }
    out[k] = bits;
  }
}

// Bit i set (sign -1) unless fma(x[i], scale, shift) >= 0, for the n <= 64 positions x[0..n).
static inline uint64_t position_masks_scalar(const float* x, int64_t n, float scale, float shift) {
  uint64_t bits = 0;
  for (int64_t i = 0; i < n; ++i) bits |= static_cast<uint64_t>(!(std::fma(x[i], scale, shift) >= 0.f)) << i;
  return bits;
}

// out[c * out_stride + w] = in[w * in_stride + c] for an 8 x 8 block.
static inline void store_block_scalar(const float* in, int64_t in_stride, float* out, int64_t out_stride) {
  for (int64_t c = 0; c < 8; ++c) {
    for (int64_t w = 0; w < 8; ++w) out[c * out_stride + w] = in[w * in_stride + c];
  }
}

// Sign packing and the transposed store in portable C++, shared by the NEON and scalar variants.
struct ScalarIo {
  static inline void pack_position(const float* x, int64_t channels, const float* scale,
                                   const float* shift, uint64_t* out) {
    pack_position_scalar(x, channels, scale, shift, out);
  }
  static inline uint64_t position_masks(const float* x, int64_t n, float scale, float shift) {
    return position_masks_scalar(x, n, scale, shift);
  }
  static inline void store_block(const float* in, int64_t in_stride, float* out, int64_t out_stride) {
    store_block_scalar(in, in_stride, out, out_stride);
  }
};

#ifdef BITCONV_X86

#define BF_AVX2_BASE __attribute__((target("avx2,fma")))

BF_AVX2_BASE static inline void store_block_avx2(const float* in, int64_t in_stride, float* out, int64_t out_stride) {
  __m256 r[8], t[8];
  for (int i = 0; i < 8; ++i) r[i] = _mm256_loadu_ps(in + i * in_stride);
  for (int i = 0; i < 8; i += 2) {
    t[i] = _mm256_unpacklo_ps(r[i], r[i + 1]);
    t[i + 1] = _mm256_unpackhi_ps(r[i], r[i + 1]);
  }
  for (int i = 0; i < 8; i += 4) {
    r[i] = _mm256_shuffle_ps(t[i], t[i + 2], _MM_SHUFFLE(1, 0, 1, 0));
    r[i + 1] = _mm256_shuffle_ps(t[i], t[i + 2], _MM_SHUFFLE(3, 2, 3, 2));
    r[i + 2] = _mm256_shuffle_ps(t[i + 1], t[i + 3], _MM_SHUFFLE(1, 0, 1, 0));
    r[i + 3] = _mm256_shuffle_ps(t[i + 1], t[i + 3], _MM_SHUFFLE(3, 2, 3, 2));
  }
  for (int i = 0; i < 4; ++i) {
    _mm256_storeu_ps(out + i * out_stride, _mm256_permute2f128_ps(r[i], r[i + 4], 0x20));
    _mm256_storeu_ps(out + (i + 4) * out_stride, _mm256_permute2f128_ps(r[i], r[i + 4], 0x31));
  }
}

BF_AVX2_BASE static inline uint64_t position_masks_avx2(const float* x, int64_t n, float scale, float shift) {
  const __m256 s = _mm256_set1_ps(scale), b = _mm256_set1_ps(shift);
  uint64_t bits = 0;
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) {
    const __m256 v = _mm256_fmadd_ps(_mm256_loadu_ps(x + i), s, b);
    bits |= static_cast<uint64_t>(_mm256_movemask_ps(_mm256_cmp_ps(v, _mm256_setzero_ps(), _CMP_NGE_UQ))) << i;
  }
  for (; i < n; ++i) bits |= static_cast<uint64_t>(!(std::fma(x[i], scale, shift) >= 0.f)) << i;
  return bits;
}

#define BF_AVX512_BASE __attribute__((target("avx512f,avx512dq,avx512bw,avx512vl")))

BF_AVX512_BASE static inline void finish_avx512(__m512i count, const Epilogue& e, int64_t channel,
                                                int64_t valid, float* dst) {
  const __m512i dot = _mm512_sub_epi64(_mm512_set1_epi64(e.dot_terms), _mm512_slli_epi64(count, 1));
  const __mmask8 mask = valid >= 8 ? 0xFF : static_cast<__mmask8>((1u << valid) - 1);
  __m256 y = _mm256_mul_ps(_mm512_cvtepi64_ps(dot), _mm256_maskz_loadu_ps(mask, e.multiplier + channel));
  y = _mm256_add_ps(y, _mm256_maskz_loadu_ps(mask, e.bias + channel));
  if (e.activate) {
    const __mmask8 negative = _mm256_cmp_ps_mask(y, _mm256_setzero_ps(), _CMP_NGE_UQ);
    y = _mm256_mask_mul_ps(y, negative, y, _mm256_set1_ps(e.slope));
  }
  _mm256_mask_storeu_ps(dst, mask, y);
}

BF_AVX512_BASE static inline uint64_t position_masks_avx512(const float* x, int64_t n, float scale, float shift) {
  const __m512 s = _mm512_set1_ps(scale), b = _mm512_set1_ps(shift);
  uint64_t bits = 0;
  for (int64_t i = 0; i < n; i += 16) {
    const int64_t m = std::min<int64_t>(16, n - i);
    const __mmask16 valid = m == 16 ? 0xFFFF : static_cast<__mmask16>((1u << m) - 1);
    const __m512 v = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(valid, x + i), s, b);
    bits |= static_cast<uint64_t>(_mm512_mask_cmp_ps_mask(valid, v, _mm512_setzero_ps(), _CMP_NGE_UQ)) << i;
  }
  return bits;
}

BF_AVX512_BASE static inline void pack_position_avx512(const float* x, int64_t channels, const float* scale,
                                                       const float* shift, uint64_t* out) {
  const int64_t words = (channels + 63) / 64;
  for (int64_t k = 0; k < words; ++k) {
    uint64_t bits = 0;
    for (int j = 0; j < 4; ++j) {
      const int64_t c = 64 * k + 16 * j;
      if (c >= channels) break;
      const int64_t n = std::min<int64_t>(16, channels - c);
      const __mmask16 valid = n == 16 ? 0xFFFF : static_cast<__mmask16>((1u << n) - 1);
      const __m512 v = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(valid, x + c), _mm512_maskz_loadu_ps(valid, scale + c),
                                       _mm512_maskz_loadu_ps(valid, shift + c));
      const __mmask16 negative = _mm512_mask_cmp_ps_mask(valid, v, _mm512_setzero_ps(), _CMP_NGE_UQ);
      bits |= static_cast<uint64_t>(negative) << (16 * j);
    }
    out[k] = bits;
  }
}

// Sign packing and the transposed store, shared by both AVX-512 variants.
struct Avx512Io {
  BF_AVX512_BASE static inline void pack_position(const float* x, int64_t channels, const float* scale,
                                                  const float* shift, uint64_t* out) {
    pack_position_avx512(x, channels, scale, shift, out);
  }
  BF_AVX512_BASE static inline uint64_t position_masks(const float* x, int64_t n, float scale, float shift) {
    return position_masks_avx512(x, n, scale, shift);
  }
  BF_AVX512_BASE static inline void store_block(const float* in, int64_t in_stride, float* out, int64_t out_stride) {
    store_block_avx2(in, in_stride, out, out_stride);
  }
};

// AVX-512 with VPOPCNTQ: one instruction counts eight 64-bit words.
namespace avx512_vpopcnt {
#define BF_TARGET __attribute__((target("avx512f,avx512dq,avx512bw,avx512vl,avx512vpopcntdq")))
struct Simd : Avx512Io {
  using Vec = __m512i;
  using Acc = __m512i;
  static constexpr int kLanes = 8, kP = 6, kQ = 4, kFlushEvery = 0;
  static constexpr bool kCarrySave = false, kDirectStore = false;
  BF_TARGET static inline Acc zero() { return _mm512_setzero_si512(); }
  BF_TARGET static inline Vec load(const uint64_t* p) { return _mm512_loadu_si512(p); }
  BF_TARGET static inline Vec broadcast(uint64_t a) { return _mm512_set1_epi64(static_cast<long long>(a)); }
  BF_TARGET static inline void accumulate(Acc& acc, Vec a, Vec w) {
    acc = _mm512_add_epi64(acc, _mm512_popcnt_epi64(_mm512_xor_si512(a, w)));
  }
  BF_TARGET static inline void flush(Acc&) {}
  BF_TARGET static inline uint64_t total(const Acc& acc) { return _mm512_reduce_add_epi64(acc); }
  BF_TARGET static inline void finish(const Vec* count, const Epilogue& e, int64_t channel, int64_t valid, float* dst) {
    finish_avx512(count[0], e, channel, valid, dst);
  }
};
#include "bitconv_kernels.h"
#undef BF_TARGET
}  // namespace avx512_vpopcnt

// AVX-512BW without VPOPCNTQ: Harley-Seal carry-save adders (VPTERNLOGQ) over eight steps,
// then a nibble-lookup popcount (VPSHUFB) of the eights plane into byte counters (VPSADBW).
namespace avx512bw {
#define BF_TARGET BF_AVX512_BASE
struct Simd : Avx512Io {
  using Vec = __m512i;
  struct Acc {
    __m512i ones, twos, fours, eights, total;  // bit planes; eights: byte counts; total: flushed eights
  };
  static constexpr int kLanes = 8, kP = 2, kQ = 2, kFlushEvery = 31, kStreamsTogether = 4;  // 31 * 8 < 256
  static constexpr bool kCarrySave = true, kDirectStore = false;
  BF_TARGET static inline Acc zero() {
    const __m512i z = _mm512_setzero_si512();
    return {z, z, z, z, z};
  }
  BF_TARGET static inline Vec load(const uint64_t* p) { return _mm512_loadu_si512(p); }
  BF_TARGET static inline Vec broadcast(uint64_t a) { return _mm512_set1_epi64(static_cast<long long>(a)); }
  BF_TARGET static inline Vec xor_(Vec a, Vec b) { return _mm512_xor_si512(a, b); }
  // high:low = a + b + c per bit (majority and parity)
  BF_TARGET static inline void csa(Vec& high, Vec& low, Vec a, Vec b, Vec c) {
    const Vec majority = _mm512_ternarylogic_epi64(a, b, c, 0xE8), parity = _mm512_ternarylogic_epi64(a, b, c, 0x96);
    high = majority;
    low = parity;
  }
  BF_TARGET static inline Vec byte_counts(Vec x) {
    const __m512i lut = _mm512_broadcast_i32x4(_mm_setr_epi8(0, 1, 1, 2, 1, 2, 2, 3, 1, 2, 2, 3, 2, 3, 3, 4));
    const __m512i low_nibble = _mm512_set1_epi8(0x0f);
    const __m512i lo = _mm512_shuffle_epi8(lut, _mm512_and_si512(x, low_nibble));
    const __m512i hi = _mm512_shuffle_epi8(lut, _mm512_and_si512(_mm512_srli_epi16(x, 4), low_nibble));
    return _mm512_add_epi8(lo, hi);
  }
  BF_TARGET static inline Vec add_bytes(Vec a, Vec b) { return _mm512_add_epi8(a, b); }
  BF_TARGET static inline Vec zero_bytes() { return _mm512_setzero_si512(); }
  BF_TARGET static inline Vec lane_sums(Vec bytes) { return _mm512_sad_epu8(bytes, _mm512_setzero_si512()); }
  BF_TARGET static inline void flush(Acc& acc) {
    acc.total = _mm512_add_epi64(acc.total, lane_sums(acc.eights));
    acc.eights = _mm512_setzero_si512();
  }
  // Per-lane counts of a counter plus `tail` byte counts (each byte at most 56).
  BF_TARGET static inline Vec counts(const Acc& a, Vec tail) {
    Vec bytes = byte_counts(a.fours);
    bytes = add_bytes(add_bytes(bytes, bytes), byte_counts(a.twos));
    bytes = add_bytes(add_bytes(bytes, bytes), byte_counts(a.ones));
    bytes = add_bytes(bytes, tail);  // 4 fours + 2 twos + ones + tail <= 112
    return _mm512_add_epi64(_mm512_slli_epi64(_mm512_add_epi64(a.total, lane_sums(a.eights)), 3), lane_sums(bytes));
  }
  BF_TARGET static inline uint64_t total(const Acc& acc) { return _mm512_reduce_add_epi64(counts(acc, zero_bytes())); }
  BF_TARGET static inline void finish(const Vec* count, const Epilogue& e, int64_t channel, int64_t valid, float* dst) {
    finish_avx512(count[0], e, channel, valid, dst);
  }
};
#include "bitconv_kernels.h"
#undef BF_TARGET
}  // namespace avx512bw

// AVX2: Harley-Seal carry-save adders (five logic ops each) over eight steps, then a
// nibble-lookup popcount (VPSHUFB) of the eights plane; a weight group is two vectors,
// counted one after the other (16 registers hold one counter and its temporaries), and
// the tile's eight results go straight into the output planes.
namespace avx2 {
#define BF_TARGET BF_AVX2_BASE
struct Simd {
  using Vec = __m256i;
  struct Acc {
    __m256i ones, twos, fours, eights, total;  // bit planes; eights: byte counts; total: flushed eights
  };
  static constexpr int kLanes = 4, kP = 1, kQ = 1, kFlushEvery = 31, kStreamsTogether = 1;  // 31 * 8 < 256
  static constexpr bool kCarrySave = true, kDirectStore = true;
  BF_TARGET static inline Acc zero() {
    const __m256i z = _mm256_setzero_si256();
    return {z, z, z, z, z};
  }
  BF_TARGET static inline Vec load(const uint64_t* p) { return _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p)); }
  BF_TARGET static inline Vec broadcast(uint64_t a) { return _mm256_set1_epi64x(static_cast<long long>(a)); }
  BF_TARGET static inline Vec xor_(Vec a, Vec b) { return _mm256_xor_si256(a, b); }
  // high:low = a + b + c per bit; a (the running plane) enters last, one op deep in low.
  BF_TARGET static inline void csa(Vec& high, Vec& low, Vec a, Vec b, Vec c) {
    const Vec u = _mm256_xor_si256(b, c);
    const Vec majority = _mm256_or_si256(_mm256_and_si256(b, c), _mm256_and_si256(u, a));
    high = majority;
    low = _mm256_xor_si256(u, a);
  }
  BF_TARGET static inline Vec byte_counts(Vec x) {
    const __m256i lut = _mm256_setr_epi8(0, 1, 1, 2, 1, 2, 2, 3, 1, 2, 2, 3, 2, 3, 3, 4,
                                         0, 1, 1, 2, 1, 2, 2, 3, 1, 2, 2, 3, 2, 3, 3, 4);
    const __m256i low_nibble = _mm256_set1_epi8(0x0f);
    const __m256i lo = _mm256_shuffle_epi8(lut, _mm256_and_si256(x, low_nibble));
    const __m256i hi = _mm256_shuffle_epi8(lut, _mm256_and_si256(_mm256_srli_epi16(x, 4), low_nibble));
    return _mm256_add_epi8(lo, hi);
  }
  BF_TARGET static inline Vec add_bytes(Vec a, Vec b) { return _mm256_add_epi8(a, b); }
  BF_TARGET static inline Vec zero_bytes() { return _mm256_setzero_si256(); }
  BF_TARGET static inline Vec lane_sums(Vec bytes) { return _mm256_sad_epu8(bytes, _mm256_setzero_si256()); }
  BF_TARGET static inline void flush(Acc& acc) {
    acc.total = _mm256_add_epi64(acc.total, lane_sums(acc.eights));
    acc.eights = _mm256_setzero_si256();
  }
  // Per-lane counts of a counter plus `tail` byte counts (each byte at most 56).
  BF_TARGET static inline Vec counts(const Acc& a, Vec tail) {
    Vec bytes = byte_counts(a.fours);
    bytes = add_bytes(add_bytes(bytes, bytes), byte_counts(a.twos));
    bytes = add_bytes(add_bytes(bytes, bytes), byte_counts(a.ones));
    bytes = add_bytes(bytes, tail);  // 4 fours + 2 twos + ones + tail <= 112
    return _mm256_add_epi64(_mm256_slli_epi64(_mm256_add_epi64(a.total, lane_sums(a.eights)), 3), lane_sums(bytes));
  }
  BF_TARGET static inline uint64_t total(const Acc& acc) {
    alignas(32) uint64_t lanes[4];
    _mm256_store_si256(reinterpret_cast<__m256i*>(lanes), counts(acc, zero_bytes()));
    return lanes[0] + lanes[1] + lanes[2] + lanes[3];
  }
  BF_TARGET static inline void finish(const Vec* lanes, const Epilogue& e, int64_t channel, int64_t valid, float* dst) {
    const __m256i first = lanes[0], second = lanes[1];
    const __m256i even = _mm256_setr_epi32(0, 2, 4, 6, 0, 2, 4, 6);
    const __m256i count = _mm256_set_m128i(_mm256_castsi256_si128(_mm256_permutevar8x32_epi32(second, even)),
                                           _mm256_castsi256_si128(_mm256_permutevar8x32_epi32(first, even)));
    if (valid < 8) {
      alignas(32) int32_t lane_counts[8];
      _mm256_store_si256(reinterpret_cast<__m256i*>(lane_counts), count);
      for (int64_t i = 0; i < valid; ++i) dst[i] = finish_one(lane_counts[i], e, channel + i);
      return;
    }
    const __m256i dot = _mm256_sub_epi32(_mm256_set1_epi32(static_cast<int32_t>(e.dot_terms)), _mm256_slli_epi32(count, 1));
    __m256 y = _mm256_mul_ps(_mm256_cvtepi32_ps(dot), _mm256_loadu_ps(e.multiplier + channel));
    y = _mm256_add_ps(y, _mm256_loadu_ps(e.bias + channel));
    if (e.activate) {
      const __m256 negative = _mm256_cmp_ps(y, _mm256_setzero_ps(), _CMP_NGE_UQ);
      y = _mm256_blendv_ps(y, _mm256_mul_ps(y, _mm256_set1_ps(e.slope)), negative);
    }
    _mm256_storeu_ps(dst, y);
  }
  BF_TARGET static inline void pack_position(const float* x, int64_t channels, const float* scale,
                                             const float* shift, uint64_t* out) {
    const int64_t words = (channels + 63) / 64;
    for (int64_t k = 0; k < words; ++k) {
      uint64_t bits = 0;
      const int64_t end = std::min<int64_t>(64, channels - 64 * k);
      int64_t i = 0;
      for (; i + 8 <= end; i += 8) {
        const int64_t c = 64 * k + i;
        const __m256 v = _mm256_fmadd_ps(_mm256_loadu_ps(x + c), _mm256_loadu_ps(scale + c), _mm256_loadu_ps(shift + c));
        const int negative = _mm256_movemask_ps(_mm256_cmp_ps(v, _mm256_setzero_ps(), _CMP_NGE_UQ));
        bits |= static_cast<uint64_t>(negative) << i;
      }
      for (; i < end; ++i) {
        const int64_t c = 64 * k + i;
        bits |= static_cast<uint64_t>(!(std::fma(x[c], scale[c], shift[c]) >= 0.f)) << i;
      }
      out[k] = bits;
    }
  }
  BF_TARGET static inline uint64_t position_masks(const float* x, int64_t n, float scale, float shift) {
    return position_masks_avx2(x, n, scale, shift);
  }
  BF_TARGET static inline void store_block(const float* in, int64_t in_stride, float* out, int64_t out_stride) {
    store_block_avx2(in, in_stride, out, out_stride);
  }
};
#include "bitconv_kernels.h"
#undef BF_TARGET
}  // namespace avx2

#endif  // BITCONV_X86

#ifdef BITCONV_NEON

// NEON (aarch64): per-byte popcount (CNT) of the XORed words, widened pairwise into 32-bit
// lanes (UADDLP, UADALP); a weight group is four 128-bit vectors.
namespace neon {
#define BF_TARGET
struct Simd : ScalarIo {
  using Vec = uint64x2_t;
  using Acc = uint32x4_t;  // two 32-bit partial counts per 64-bit lane
  static constexpr int kLanes = 2, kP = 2, kQ = 2, kFlushEvery = 0;
  static constexpr bool kCarrySave = false, kDirectStore = true;
  static inline Acc zero() { return vdupq_n_u32(0); }
  static inline Vec load(const uint64_t* p) { return vld1q_u64(p); }
  static inline Vec broadcast(uint64_t a) { return vdupq_n_u64(a); }
  static inline void accumulate(Acc& acc, Vec a, Vec w) {
    acc = vpadalq_u16(acc, vpaddlq_u8(vcntq_u8(vreinterpretq_u8_u64(veorq_u64(a, w)))));
  }
  static inline void flush(Acc&) {}
  static inline uint64_t total(const Acc& acc) { return vaddlvq_u32(acc); }
  static inline void finish(const Acc* acc, const Epilogue& e, int64_t channel, int64_t valid, float* dst) {
    for (int64_t i = 0; i < valid; ++i) {
      const uint64x2_t lanes = vpaddlq_u32(acc[i / 2]);
      const uint64_t count = i % 2 == 0 ? vgetq_lane_u64(lanes, 0) : vgetq_lane_u64(lanes, 1);
      dst[i] = finish_one(static_cast<int64_t>(count), e, channel + i);
    }
  }
};
#include "bitconv_kernels.h"
#undef BF_TARGET
}  // namespace neon

#endif  // BITCONV_NEON

// Portable: std::popcount on single words (compiles to __builtin_popcountll / CNT).
namespace scalar {
#define BF_TARGET
struct Simd : ScalarIo {
  using Vec = uint64_t;
  using Acc = uint64_t;
  static constexpr int kLanes = 1, kP = 2, kQ = 1, kFlushEvery = 0;
  static constexpr bool kCarrySave = false, kDirectStore = true;
  static inline Acc zero() { return 0; }
  static inline Vec load(const uint64_t* p) { return *p; }
  static inline Vec broadcast(uint64_t a) { return a; }
  static inline void accumulate(Acc& acc, Vec a, Vec w) { acc += static_cast<uint64_t>(std::popcount(a ^ w)); }
  static inline void flush(Acc&) {}
  static inline uint64_t total(const Acc& acc) { return acc; }
  static inline void finish(const Vec* count, const Epilogue& e, int64_t channel, int64_t valid, float* dst) {
    for (int64_t i = 0; i < valid; ++i) dst[i] = finish_one(static_cast<int64_t>(count[i]), e, channel + i);
  }
};
#include "bitconv_kernels.h"
#undef BF_TARGET
}  // namespace scalar

// ---------------------------------------------------------------------------------------
// Run-time variant selection

struct Variant {
  const char* name;
  bool (*supported)();
  void (*pack)(const PackPlan&, int64_t, int64_t);
  void (*conv)(const ConvJob&, int64_t, int64_t, float*);
  bool row_scratch;  // conv needs a channels-last scratch row (no kDirectStore)
  uint64_t (*peak)(const uint64_t*, const uint64_t*, int64_t, int64_t, int);
  int64_t lanes;  // 64-bit words per vector
};

#ifdef BITCONV_X86
static bool has_avx512_base() {
  __builtin_cpu_init();
  return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512dq") &&
         __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512vl");
}
static bool has_avx512_vpopcnt() { return has_avx512_base() && __builtin_cpu_supports("avx512vpopcntdq"); }
static bool has_avx2() {
  __builtin_cpu_init();
  return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
}
#endif
static bool always() { return true; }

static const std::vector<Variant>& all_variants() {  // best first
  static const std::vector<Variant> table = {
#ifdef BITCONV_X86
      {"avx512_vpopcnt", has_avx512_vpopcnt, avx512_vpopcnt::pack_rows, avx512_vpopcnt::conv_job_rows,
       !avx512_vpopcnt::Simd::kDirectStore, avx512_vpopcnt::peak, avx512_vpopcnt::Simd::kLanes},
      {"avx512bw", has_avx512_base, avx512bw::pack_rows, avx512bw::conv_job_rows,
       !avx512bw::Simd::kDirectStore, avx512bw::peak, avx512bw::Simd::kLanes},
      {"avx2", has_avx2, avx2::pack_rows, avx2::conv_job_rows,
       !avx2::Simd::kDirectStore, avx2::peak, avx2::Simd::kLanes},
#endif
#ifdef BITCONV_NEON
      {"neon", always, neon::pack_rows, neon::conv_job_rows, !neon::Simd::kDirectStore, neon::peak,
       neon::Simd::kLanes},
#endif
      {"scalar", always, scalar::pack_rows, scalar::conv_job_rows,
       !scalar::Simd::kDirectStore, scalar::peak, scalar::Simd::kLanes},
  };
  return table;
}

static std::vector<std::string> supported_variants() {
  std::vector<std::string> names;
  for (const Variant& v : all_variants()) {
    if (v.supported()) names.emplace_back(v.name);
  }
  return names;
}

static const Variant& resolve_variant(std::string_view name) {
  for (const Variant& v : all_variants()) {
    if (name == "auto" && v.supported()) return v;
    if (name == v.name) {
      TORCH_CHECK(v.supported(), "bitconv: kernel variant '", v.name, "' needs CPU features this machine lacks; supported: ",
                  c10::Join(", ", supported_variants()));
      return v;
    }
  }
  TORCH_CHECK(false, "bitconv: unknown kernel variant '", name, "'; choose auto or one of: ",
              c10::Join(", ", supported_variants()));
}

// ---------------------------------------------------------------------------------------
// Ops

static void check_cpu(const at::Tensor& t, const char* what, at::ScalarType dtype) {
  TORCH_CHECK(t.device().is_cpu(), "bitconv: ", what, " must be a CPU tensor");
  TORCH_CHECK(t.scalar_type() == dtype, "bitconv: ", what, " must be ", dtype, ", got ", t.scalar_type());
}

static std::vector<std::string> variants_op() { return supported_variants(); }

// Packs the channel-wise concatenation of `xs` (each B x C_i x T x H x W, NCDHW or
// channels-last) without materialising it.
static at::Tensor pack_signs_op(at::TensorList xs, const at::Tensor& scale, const at::Tensor& shift,
                                std::string_view variant) {
  TORCH_CHECK(!xs.empty(), "bitconv: pack_signs needs at least one input tensor");
  check_cpu(scale, "scale", at::kFloat);
  check_cpu(shift, "shift", at::kFloat);
  const at::Tensor& first = xs[0];
  TORCH_CHECK(first.dim() == 5, "bitconv: input must be B x C x T x H x W, got ", first.sizes());
  const int64_t B = first.size(0), T = first.size(2), H = first.size(3), W = first.size(4);
  std::vector<at::Tensor> inputs;
  std::vector<const float*> planes;
  std::vector<int64_t> batch_strides;
  const bool channels_last = xs.size() == 1 && !first.is_contiguous() && first.is_contiguous(at::MemoryFormat::ChannelsLast3d);
  for (const at::Tensor& x : xs) {
    check_cpu(x, "input", at::kFloat);
    TORCH_CHECK(x.dim() == 5 && x.size(0) == B && x.size(2) == T && x.size(3) == H && x.size(4) == W,
                "bitconv: inputs to concatenate must share B, T, H, W: ", first.sizes(), " vs ", x.sizes());
    inputs.push_back(channels_last ? x : x.contiguous());
    const float* base = inputs.back().data_ptr<float>();
    for (int64_t c = 0; c < x.size(1); ++c) {
      planes.push_back(base + c * T * H * W);
      batch_strides.push_back(x.size(1) * T * H * W);
    }
  }
  const int64_t C = static_cast<int64_t>(planes.size());
  TORCH_CHECK(scale.numel() == C && shift.numel() == C, "bitconv: scale and shift need ", C, " entries");
  const Variant& v = resolve_variant(variant);
  const at::Tensor sc = scale.contiguous(), sh = shift.contiguous();
  const int64_t words = (C + 63) / 64;
  at::Tensor out = at::empty({B, T + 2, H + 2, W + 2, words}, first.options().dtype(at::kLong));  // halo zeroed by pack
  const PackPlan plan{channels_last ? inputs[0].data_ptr<float>() : nullptr, planes.data(), batch_strides.data(),
                      reinterpret_cast<uint64_t*>(out.data_ptr<int64_t>()), T, H, W, C, words,
                      sc.data_ptr<float>(), sh.data_ptr<float>()};
  at::parallel_for(0, B * T * H, 1, [&](int64_t begin, int64_t end) { v.pack(plan, begin, end); });
  return out;
}

struct PackedInput {
  const uint64_t* data;
  int64_t batch, depth, height, width, words;  // unpadded sizes
  int64_t plane_words, row_words;              // strides of the padded depth and height axes
};

static PackedInput check_packed_input(const at::Tensor& x, int64_t in_channels, int64_t weight_words) {
  check_cpu(x, "packed input", at::kLong);
  TORCH_CHECK(x.dim() == 5 && x.is_contiguous(), "bitconv: packed input must be a contiguous B x (T+2) x (H+2) x (W+2) x words tensor");
  TORCH_CHECK(x.size(1) > 2 && x.size(2) > 2 && x.size(3) > 2, "bitconv: packed input has no interior voxels: ", x.sizes());
  TORCH_CHECK(x.size(4) == (in_channels + 63) / 64 && weight_words == x.size(4), "bitconv: packed input has ", x.size(4),
              " words per voxel, weights ", weight_words, ", in_channels=", in_channels, " needs ", (in_channels + 63) / 64);
  return {reinterpret_cast<const uint64_t*>(x.data_ptr<int64_t>()), x.size(0), x.size(1) - 2, x.size(2) - 2, x.size(3) - 2,
          x.size(4), x.size(2) * x.size(3) * x.size(4), x.size(3) * x.size(4)};
}

static Epilogue make_epilogue(int64_t dot_terms, int64_t groups, const at::Tensor& multiplier, const at::Tensor& bias,
                              std::optional<double> negative_slope) {
  check_cpu(multiplier, "multiplier", at::kFloat);
  check_cpu(bias, "bias", at::kFloat);
  const int64_t out_channels = multiplier.numel();
  TORCH_CHECK(multiplier.is_contiguous() && bias.is_contiguous() && bias.numel() == out_channels,
              "bitconv: multiplier and bias must be contiguous with one entry per output channel");
  TORCH_CHECK(out_channels > (groups - 1) * kGroup && out_channels <= groups * kGroup, "bitconv: ", out_channels,
              " output channels do not match ", groups, " weight groups of ", kGroup);
  return {dot_terms, out_channels, multiplier.data_ptr<float>(), bias.data_ptr<float>(), negative_slope.has_value(),
          static_cast<float>(negative_slope.value_or(0.0))};
}

// Word offsets of a kt x kh x kw window's taps, (kt, kh, kw) order.
static std::vector<int64_t> window_offsets(const PackedInput& in, int64_t kt, int64_t kh, int64_t kw) {
  std::vector<int64_t> offsets;
  for (int64_t t = 0; t < kt; ++t)
    for (int64_t h = 0; h < kh; ++h)
      for (int64_t w = 0; w < kw; ++w) offsets.push_back(t * in.plane_words + h * in.row_words + w * in.words);
  return offsets;
}

// Word offsets of every (tap, word) step, in the order the weights store them.
static std::vector<int64_t> step_offsets(const std::vector<int64_t>& taps, int64_t words) {
  std::vector<int64_t> steps;
  for (const int64_t tap : taps)
    for (int64_t k = 0; k < words; ++k) steps.push_back(tap + k);
  return steps;
}

static void run_jobs(const Variant& v, const std::vector<ConvJob>& jobs, int64_t rows_per_job) {
  const int64_t scratch_floats = v.row_scratch ? jobs[0].out_cols * jobs[0].plans[0].epilogue.out_channels : 0;
  at::parallel_for(0, rows_per_job * static_cast<int64_t>(jobs.size()), 1, [&](int64_t begin, int64_t end) {
    std::vector<float> scratch(scratch_floats);
    for (int64_t i = begin; i < end;) {  // split [begin, end) at job boundaries
      const int64_t job = i / rows_per_job, row = i % rows_per_job;
      const int64_t stop = std::min(end - i, rows_per_job - row);
      v.conv(jobs[job], row, row + stop, scratch.data());
      i += stop;
    }
  });
}

// Output blocks above 32 MiB (glibc's largest mmap threshold: glibc maps them afresh for every
// allocation, one page fault per 4 KiB on first write) are mapped here, their pages populated in
// one call (MADV_POPULATE_WRITE, Linux 5.14+; far cheaper than faulting them one by one, and than
// huge pages, whose allocation stalls on memory compaction once the page cache has fragmented
// memory), and recycled: a freed block waits in this cache and the next request of the same
// rounded size takes it back with its pages in place (a forward's layers repeat their output
// sizes). Before mapping a new block, cached blocks are unmapped until the blocks in use, the
// cached ones and the new one are together no more than the most ever in use at once
// (`high_water`), so the cache never raises the engine's peak; release() (at the end of every
// packed forward) unmaps the cache, so that it holds no memory while PyTorch's own layers run.
// Smaller blocks come from at::empty (heap, reused by malloc).
#if defined(__linux__)
#define BITCONV_OUTPUT_BLOCKS 1
class OutputBlocks {
 public:
  static constexpr size_t kRound = size_t{2} << 20, kMmapThreshold = size_t{32} << 20;  // kRound: size classes

  // A block of at least `bytes` (`mapped` bytes, page-aligned); nullptr when mmap fails.
  void* take(size_t bytes, size_t& mapped) {
    mapped = (bytes + kRound - 1) / kRound * kRound;
    std::lock_guard<std::mutex> lock(mutex_);
    auto found = free_.find(mapped);
    void* block = nullptr;
    if (found != free_.end()) {
      block = found->second;
      free_.erase(found);
      cached_ -= mapped;
    } else {
      while (!free_.empty() && in_use_ + cached_ + mapped > high_water_) {
        const auto largest = std::prev(free_.end());
        munmap(largest->second, largest->first);
        cached_ -= largest->first;
        free_.erase(largest);
      }
      block = mmap(nullptr, mapped, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
      if (block == MAP_FAILED) return nullptr;
#ifdef MADV_POPULATE_WRITE
      madvise(block, mapped, MADV_POPULATE_WRITE);  // fails harmlessly on older kernels
#endif
    }
    in_use_ += mapped;
    high_water_ = std::max(high_water_, in_use_ + cached_);
    return block;
  }

  void give(void* block, size_t mapped) {
    std::lock_guard<std::mutex> lock(mutex_);
    free_.emplace(mapped, block);
    in_use_ -= mapped;
    cached_ += mapped;
  }

  // Unmaps every cached block.
  void release() {
    std::lock_guard<std::mutex> lock(mutex_);
    for (const auto& [mapped, block] : free_) munmap(block, mapped);
    free_.clear();
    cached_ = 0;
  }

  // Bytes of blocks in use, cached, and the most in use at once (mapped sizes).
  std::tuple<int64_t, int64_t, int64_t> stats() {
    std::lock_guard<std::mutex> lock(mutex_);
    return {static_cast<int64_t>(in_use_), static_cast<int64_t>(cached_), static_cast<int64_t>(high_water_)};
  }

 private:
  std::mutex mutex_;
  std::multimap<size_t, void*> free_;  // mapped bytes -> block
  size_t in_use_ = 0, cached_ = 0, high_water_ = 0;
};

static OutputBlocks& output_blocks() {
  static OutputBlocks* blocks = new OutputBlocks;  // never destroyed: tensors may outlive static destructors
  return *blocks;
}
#endif

// A float tensor for an output (see OutputBlocks).
static at::Tensor empty_output(at::IntArrayRef sizes, const at::TensorOptions& options) {
#ifdef BITCONV_OUTPUT_BLOCKS
  const size_t bytes = static_cast<size_t>(c10::multiply_integers(sizes)) * sizeof(float);
  if (bytes > OutputBlocks::kMmapThreshold) {
    size_t mapped = 0;
    if (void* block = output_blocks().take(bytes, mapped)) {
      return at::from_blob(block, sizes, [block, mapped](void*) { output_blocks().give(block, mapped); },
                           options.dtype(at::kFloat));
    }
  }
#endif
  return at::empty(sizes, options.dtype(at::kFloat));
}

static void release_output_blocks_op() {
#ifdef BITCONV_OUTPUT_BLOCKS
  output_blocks().release();
#endif
}

// (bytes in use, bytes cached, the most in use at once) of the recycled output blocks.
static std::tuple<int64_t, int64_t, int64_t> output_blocks_op() {
#ifdef BITCONV_OUTPUT_BLOCKS
  return output_blocks().stats();
#else
  return {0, 0, 0};
#endif
}

static at::Tensor conv3d_op(const at::Tensor& x, const at::Tensor& weight, int64_t in_channels, at::IntArrayRef stride,
                            const at::Tensor& multiplier, const at::Tensor& bias, std::optional<double> negative_slope,
                            std::string_view variant) {
  check_cpu(weight, "packed weight", at::kLong);
  TORCH_CHECK(weight.dim() == 4 && weight.size(3) == kGroup && weight.is_contiguous(),
              "bitconv: conv weight must be a contiguous groups x taps x words x 8 tensor, got ", weight.sizes());
  const int64_t taps = weight.size(1);
  TORCH_CHECK(taps == 27 || taps == 1, "bitconv: conv3d supports 3x3x3 and 1x1x1 kernels, got ", taps, " taps");
  TORCH_CHECK(stride.size() == 3 && stride[0] >= 1 && stride[1] >= 1 && stride[2] >= 1, "bitconv: bad stride ", stride);
  const PackedInput in = check_packed_input(x, in_channels, weight.size(2));
  const Variant& v = resolve_variant(variant);
  const int64_t k = taps == 27 ? 3 : 1, C = multiplier.numel();
  const int64_t To = (in.depth - 1) / stride[0] + 1, Ho = (in.height - 1) / stride[1] + 1, Wo = (in.width - 1) / stride[2] + 1;
  at::Tensor out = empty_output({in.batch, C, To, Ho, Wo}, x.options());
  const std::vector<int64_t> offsets = window_offsets(in, k, k, k), steps = step_offsets(offsets, in.words);
  const int64_t origin = k == 1 ? in.plane_words + in.row_words + in.words : 0;  // 1x1x1 reads the window centre
  const ConvPlan plan{in.data, reinterpret_cast<const uint64_t*>(weight.data_ptr<int64_t>()), offsets.data(),
                      steps.data(), taps, in.words, weight.size(0), To, Ho, Wo,
                      origin, (in.depth + 2) * in.plane_words, stride[0] * in.plane_words, stride[1] * in.row_words,
                      stride[2] * in.words, 0, 1, To * Ho * Wo,
                      make_epilogue(taps * in_channels, weight.size(0), multiplier, bias, negative_slope)};
  const ConvJob job{{plan, plan}, 1, out.data_ptr<float>(), C * To * Ho * Wo, Ho * Wo, Wo, 0, Wo};
  run_jobs(v, {job}, in.batch * To * Ho);
  return out;
}

// Transposed conv, kernel (3,4,4), stride (1,2,2), padding (1,1,1), one-padded: output phase
// (py, px) at (t, 2m+py, 2n+px) is a stride-1 (3,2,2) conv whose window starts at halo
// coordinates (t, m+py, n+px). One job per py fills whole output rows from both px phases.
static at::Tensor conv_transpose3d_op(const at::Tensor& x, const at::Tensor& weight, int64_t in_channels,
                                      const at::Tensor& multiplier, const at::Tensor& bias,
                                      std::optional<double> negative_slope, std::string_view variant) {
  check_cpu(weight, "packed weight", at::kLong);
  TORCH_CHECK(weight.dim() == 5 && weight.size(0) == 4 && weight.size(2) == 12 && weight.size(4) == kGroup && weight.is_contiguous(),
              "bitconv: transposed conv weight must be a contiguous 4 x groups x 12 x words x 8 tensor, got ", weight.sizes());
  const PackedInput in = check_packed_input(x, in_channels, weight.size(3));
  const Variant& v = resolve_variant(variant);
  const int64_t C = multiplier.numel(), groups = weight.size(1);
  const int64_t Ho = 2 * in.height, Wo = 2 * in.width;
  at::Tensor out = empty_output({in.batch, C, in.depth, Ho, Wo}, x.options());
  const std::vector<int64_t> offsets = window_offsets(in, 3, 2, 2), steps = step_offsets(offsets, in.words);
  const Epilogue epilogue = make_epilogue(12 * in_channels, groups, multiplier, bias, negative_slope);
  const uint64_t* packed_weight = reinterpret_cast<const uint64_t*>(weight.data_ptr<int64_t>());
  std::vector<ConvJob> jobs;
  for (int64_t py = 0; py < 2; ++py) {
    ConvJob job{{}, 2, out.data_ptr<float>(), C * in.depth * Ho * Wo, Ho * Wo, 2 * Wo, py * Wo, Wo};
    for (int64_t px = 0; px < 2; ++px) {
      job.plans[px] = {in.data, packed_weight + (2 * py + px) * weight.stride(0), offsets.data(), steps.data(), 12,
                       in.words, groups,
                       in.depth, in.height, in.width,
                       py * in.row_words + px * in.words, (in.depth + 2) * in.plane_words, in.plane_words, in.row_words,
                       in.words, px, 2, in.depth * Ho * Wo, epilogue};
    }
    jobs.push_back(job);
  }
  run_jobs(v, jobs, in.batch * in.depth * in.height);
  return out;
}

// The XOR+popcount peak of a variant on at::get_num_threads() threads, each running `reps`
// passes of its peak loop with `streams` (1, 2, 4 or 8) weight vectors per activation word
// over its own 64-byte aligned copy of a[steps] and the first streams * lanes columns of
// w[steps][64] (steps: a multiple of 8, at most 64; L1-resident). Returns (wall seconds,
// binary MACs = XORed bits, total popcount over threads and passes).
static std::tuple<double, int64_t, int64_t> popcount_peak_op(const at::Tensor& a, const at::Tensor& w, int64_t reps,
                                                             int64_t streams, std::string_view variant) {
  check_cpu(a, "a", at::kLong);
  check_cpu(w, "w", at::kLong);
  const int64_t steps = a.numel();
  TORCH_CHECK(a.dim() == 1 && steps > 0 && steps % 8 == 0 && steps <= 64 && w.dim() == 2 && w.size(0) == steps &&
                  w.size(1) == 64 && reps > 0,
              "bitconv: popcount_peak needs a[steps] (steps a multiple of 8, at most 64), w[steps][64] and reps > 0");
  TORCH_CHECK(streams == 1 || streams == 2 || streams == 4 || streams == 8, "bitconv: streams must be 1, 2, 4 or 8");
  const Variant& v = resolve_variant(variant);
  const int64_t width = streams * v.lanes, row = width + 1;
  const at::Tensor words = at::cat({a.view({steps, 1}), w.narrow(1, 0, width)}, 1).contiguous();
  const int64_t threads = at::get_num_threads();
  std::vector<uint64_t> counts(threads);
  const auto start = std::chrono::steady_clock::now();
  at::parallel_for(0, threads, 1, [&](int64_t begin, int64_t end) {
    std::vector<uint64_t> buffer(steps * row + 8);
    uint64_t* x = buffer.data() + (64 - reinterpret_cast<uintptr_t>(buffer.data()) % 64) % 64 / 8;
    uint64_t* y = x + steps;  // both 64-byte aligned when steps % 8 == 0
    for (int64_t s = 0; s < steps; ++s) {
      const uint64_t* from = reinterpret_cast<const uint64_t*>(words.data_ptr<int64_t>()) + s * row;
      x[s] = from[0];
      std::copy_n(from + 1, width, y + s * width);
    }
    for (int64_t t = begin; t < end; ++t) counts[t] = v.peak(x, y, steps, reps, static_cast<int>(streams));
  });
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  uint64_t total = 0;
  for (const uint64_t count : counts) total += count;
  return {seconds, threads * reps * steps * width * 64, static_cast<int64_t>(total)};
}

// ---------------------------------------------------------------------------------------
// Fused in-place epilogues of FLAVR's blocks, with PyTorch's per-element arithmetic
// (multiply, then add, each rounded), in one pass instead of three.

static void check_gated(const at::Tensor& y, const at::Tensor& gate) {
  check_cpu(y, "y", at::kFloat);
  check_cpu(gate, "gate", at::kFloat);
  TORCH_CHECK(y.dim() == 5 && y.is_contiguous(), "bitconv: y must be a contiguous B x C x T x H x W tensor");
  TORCH_CHECK(gate.numel() == y.size(0) * y.size(1) && gate.is_contiguous(), "bitconv: gate must be B x C x 1 x 1 x 1");
}

// y = relu(y * gate + shortcut): feature gating, shortcut and ReLU of a basic block.
static at::Tensor gate_add_relu_op(at::Tensor y, const at::Tensor& gate, const at::Tensor& shortcut) {
  check_gated(y, gate);
  check_cpu(shortcut, "shortcut", at::kFloat);
  TORCH_CHECK(shortcut.sizes() == y.sizes() && shortcut.is_contiguous(), "bitconv: shortcut must be contiguous like y");
  const int64_t planes = gate.numel(), size = y.numel() / std::max<int64_t>(planes, 1);
  float* out = y.data_ptr<float>();
  const float* g = gate.data_ptr<float>();
  const float* s = shortcut.data_ptr<float>();
  at::parallel_for(0, planes, 1, [&](int64_t begin, int64_t end) {
    for (int64_t plane = begin; plane < end; ++plane) {
      float* o = out + plane * size;
      const float* r = s + plane * size;
      const float scale = g[plane];
      for (int64_t i = 0; i < size; ++i) {
        float v = o[i] * scale;
        v = v + r[i];
        o[i] = v < 0.f ? 0.f : v;
      }
    }
  });
  return y;
}

// y = leaky_relu(y * gate, slope): feature gating and LeakyReLU of a decoder stage.
static at::Tensor gate_leaky_relu_op(at::Tensor y, const at::Tensor& gate, double negative_slope) {
  check_gated(y, gate);
  const int64_t planes = gate.numel(), size = y.numel() / std::max<int64_t>(planes, 1);
  float* out = y.data_ptr<float>();
  const float* g = gate.data_ptr<float>();
  const float slope = static_cast<float>(negative_slope);
  at::parallel_for(0, planes, 1, [&](int64_t begin, int64_t end) {
    for (int64_t plane = begin; plane < end; ++plane) {
      float* o = out + plane * size;
      const float scale = g[plane];
      for (int64_t i = 0; i < size; ++i) {
        const float v = o[i] * scale;
        o[i] = v > 0.f ? v : v * slope;
      }
    }
  });
  return y;
}

TORCH_LIBRARY(bitconv, m) {
  m.def("variants() -> str[]", &variants_op);
  m.def("pack_signs(Tensor[] xs, Tensor scale, Tensor shift, str variant) -> Tensor", &pack_signs_op);
  m.def("conv3d(Tensor x, Tensor weight, int in_channels, int[] stride, Tensor multiplier, Tensor bias, "
        "float? negative_slope, str variant) -> Tensor",
        &conv3d_op);
  m.def("conv_transpose3d(Tensor x, Tensor weight, int in_channels, Tensor multiplier, Tensor bias, "
        "float? negative_slope, str variant) -> Tensor",
        &conv_transpose3d_op);
  m.def("popcount_peak(Tensor a, Tensor w, int reps, int streams, str variant) -> (float, int, int)", &popcount_peak_op);
  m.def("empty_output(int[] size) -> Tensor", [](at::IntArrayRef size) { return empty_output(size, at::TensorOptions()); });
  m.def("output_blocks() -> (int, int, int)", &output_blocks_op);
  m.def("release_output_blocks() -> ()", &release_output_blocks_op);
  m.def("gate_add_relu_(Tensor(a!) y, Tensor gate, Tensor shortcut) -> Tensor(a!)", &gate_add_relu_op);
  m.def("gate_leaky_relu_(Tensor(a!) y, Tensor gate, float negative_slope) -> Tensor(a!)", &gate_leaky_relu_op);
}

}  // namespace bitconv
