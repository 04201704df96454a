// The warp head's output frame in one pass over its pixels (CPU), registered as the torch op
// bitconv::warp_blend (engine/ops.py warp_blend is the Python side). Per output pixel it
// reads the head's 8 channels from the network's smaller output by bilinear upsampling,
// adds the prior's flows, samples the two middle frames there (bicubic or bilinear,
// borders replicated), and blends them with the head's mask and correction; the model's
// PyTorch path (model/unet3d.py full_resolution, model/motion_prior.py warp_blend) does the
// same in seven full-size passes, and `grid_sample` recomputes the 16 bicubic taps' clipped
// positions once per channel where this computes them once per pixel.
//
// The arithmetic follows PyTorch's CPU kernels operation by operation (-ffp-contract=off):
// upsampling as upsample_bilinear2d (align_corners=False), sampling positions as
// backward_warp's grid and grid_sample's unnormalisation (align_corners=True), the cubic
// coefficients (A = -0.75) and tap order of grid_sample, and torch.lerp's two-sided formula,
// so results match the PyTorch path to float rounding (exp, and PyTorch's vector code).

#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <optional>
#include <string_view>
#include <vector>

#if (defined(__GNUC__) || defined(__clang__)) && defined(__x86_64__)
#define WARP_BLEND_X86 1
#include <immintrin.h>
#endif

namespace bitconv {
namespace {

constexpr int64_t kHeadChannels = 8;  // flow to before (x, y), flow to after (x, y), mask logit, correction (RGB)
constexpr float kCubicA = -0.75f;

struct LinearTap {  // a destination index's two source indices and weights
  int64_t first, second;
  float first_weight, second_weight;
};

// upsample_bilinear2d's taps along one axis (align_corners=False, no scale factor given).
std::vector<LinearTap> linear_taps(int64_t in_size, int64_t out_size) {
  std::vector<LinearTap> taps(out_size);
  const float scale = static_cast<float>(in_size) / static_cast<float>(out_size);
  for (int64_t i = 0; i < out_size; ++i) {
    const float real = std::max(scale * (static_cast<float>(i) + 0.5f) - 0.5f, 0.0f);
    const int64_t index = static_cast<int64_t>(real);
    const float lambda = std::min(std::max(real - static_cast<float>(index), 0.0f), 1.0f);
    taps[i] = {index, index + (index < in_size - 1 ? 1 : 0), 1.0f - lambda, lambda};
  }
  return taps;
}

// The head upsampled along x only (B x 8 x h x W): upsample_bilinear2d interpolates along x
// first, so each output row is then one weighted sum of two of these rows, as in PyTorch.
at::Tensor widened(const at::Tensor& head, int64_t width) {
  const int64_t rows = head.size(0) * head.size(1) * head.size(2), low_width = head.size(3);
  const std::vector<LinearTap> taps = linear_taps(low_width, width);
  at::Tensor wide = at::empty({head.size(0), head.size(1), head.size(2), width}, head.options());
  const float* in = head.data_ptr<float>();
  float* out = wide.data_ptr<float>();
  at::parallel_for(0, rows, 64, [&](int64_t begin, int64_t end) {
    for (int64_t r = begin; r < end; ++r) {
      const float* source = in + r * low_width;
      for (int64_t x = 0; x < width; ++x) {
        const LinearTap& tap = taps[x];
        out[r * width + x] = source[tap.first] * tap.first_weight + source[tap.second] * tap.second_weight;
      }
    }
  });
  return wide;
}

inline float cubic_near(float x) { return ((kCubicA + 2.0f) * x - (kCubicA + 3.0f)) * x * x + 1.0f; }
inline float cubic_far(float x) { return ((kCubicA * x - 5.0f * kCubicA) * x + 8.0f * kCubicA) * x - 4.0f * kCubicA; }

inline int64_t clipped(int64_t i, int64_t size) { return std::min(std::max(i, int64_t{0}), size - 1); }

// max and min as x86's maxps and minps (and the vector loop) compute them: the second
// operand where the comparison fails, so a NaN position becomes the bound.
inline float at_least(float x, float bound) { return x > bound ? x : bound; }
inline float at_most(float x, float bound) { return x < bound ? x : bound; }

// A sampling position kept where float -> int conversion is defined (NaN included): beyond
// a few pixels outside the frame every tap is clipped to the border anyway.
inline float bounded(float position, int64_t size) {
  return at_most(at_least(position, -8.0f), static_cast<float>(size + 8));
}

// A frame's 3 channels (3 x H x W) sampled at (x, y) pixels: bicubic (grid_sample's 4 x 4
// taps, each clipped to the frame) or bilinear (the position clipped to the frame).
struct Frame {
  const float* planes;
  int64_t height, width;

  void bicubic(float x, float y, float out[3]) const {
    x = bounded(x, width), y = bounded(y, height);
    const float fx = std::floor(x), fy = std::floor(y);
    const float tx = x - fx, ty = y - fy;
    const float wx[4] = {cubic_far(tx + 1.0f), cubic_near(tx), cubic_near(1.0f - tx), cubic_far(2.0f - tx)};
    const float wy[4] = {cubic_far(ty + 1.0f), cubic_near(ty), cubic_near(1.0f - ty), cubic_far(2.0f - ty)};
    bicubic_taps(static_cast<int64_t>(fx) - 1, static_cast<int64_t>(fy) - 1, wx, wy, out);
  }

  // The 4 x 4 taps from column x0 and row y0 on, each clipped to the frame, weighted by wx
  // along x then wy along y, each sum in tap order.
  void bicubic_taps(int64_t x0, int64_t y0, const float wx[4], const float wy[4], float out[3]) const {
    int64_t cols[4], rows[4];
    for (int i = 0; i < 4; ++i) {
      cols[i] = clipped(x0 + i, width);
      rows[i] = clipped(y0 + i, height) * width;
    }
    for (int c = 0; c < 3; ++c) {
      const float* plane = planes + c * height * width;
      float along_x[4];
      for (int j = 0; j < 4; ++j) {
        const float* row = plane + rows[j];
        along_x[j] = row[cols[0]] * wx[0] + row[cols[1]] * wx[1] + row[cols[2]] * wx[2] + row[cols[3]] * wx[3];
      }
      out[c] = along_x[0] * wy[0] + along_x[1] * wy[1] + along_x[2] * wy[2] + along_x[3] * wy[3];
    }
  }

  // The east or south tap past the last column or row has weight exactly 0 there (the
  // position is clipped), so it reads the border instead of grid_sample's zero: same sum.
  void bilinear(float x, float y, float out[3]) const {
    x = at_most(at_least(x, 0.0f), static_cast<float>(width - 1));
    y = at_most(at_least(y, 0.0f), static_cast<float>(height - 1));
    const float fx = std::floor(x), fy = std::floor(y);
    const float w = x - fx, e = 1.0f - w, n = y - fy, s = 1.0f - n;
    const float nw = s * e, ne = s * w, sw = n * e, se = n * w;
    const int64_t west = static_cast<int64_t>(fx), north = static_cast<int64_t>(fy) * width;
    const int64_t east = std::min(west + 1, width - 1), south = std::min(north + width, (height - 1) * width);
    for (int c = 0; c < 3; ++c) {
      const float* plane = planes + c * height * width;
      out[c] = nw * plane[north + west] + ne * plane[north + east] + sw * plane[south + west] + se * plane[south + east];
    }
  }
};

// One output frame's constants and tensors (see warp_blend_op).
struct WarpBlend {
  const float* wide;  // B x 8 x h x W: the head widened
  const float* before;
  const float* after;
  const float* motion;  // B x motion_channels x H x W or null: the half motion, then a quadratic prior's shift
  float* out;
  int64_t height, width, low_height;
  std::vector<LinearTap> row_taps;
  float gain, mask_offset, prior_before, prior_after, grid_x, grid_y, half_x, half_y;
  bool bicubic;
  int64_t motion_channels;  // 2, or 4 with the shift (both flows move by it times prior_shift)
  float prior_shift;

  int64_t plane() const { return height * width; }
  const float* wide_row(int64_t b, int64_t c, int64_t low_row) const {
    return wide + ((b * kHeadChannels + c) * low_height + low_row) * width;
  }
  // backward_warp's grid (p + flow) * scale - 1, then grid_sample's (g + 1) * (size - 1) / 2.
  float position_x(float flow, float x) const { return ((flow + x) * grid_x - 1.0f + 1.0f) * half_x; }
  float position_y(float flow, float y) const { return ((flow + y) * grid_y - 1.0f + 1.0f) * half_y; }

  void pixel(int64_t b, int64_t y, int64_t x) const;
  void row(int64_t b, int64_t y, bool vectorized) const;
};

void WarpBlend::pixel(int64_t b, int64_t y, int64_t x) const {
  const LinearTap& ry = row_taps[y];
  float h[kHeadChannels];
  for (int64_t c = 0; c < kHeadChannels; ++c) {
    h[c] = wide_row(b, c, ry.first)[x] * ry.first_weight + wide_row(b, c, ry.second)[x] * ry.second_weight;
  }
  float flows[4] = {h[0] * gain, h[1] * gain, h[2] * gain, h[3] * gain};
  if (motion) {
    const float* m = motion + b * motion_channels * plane() + y * width + x;
    float shift_x = 0.0f, shift_y = 0.0f;  // prior_flows: (v * -2t + shift, v * 2(1 - t) + shift)
    if (motion_channels == 4) shift_x = m[2 * plane()] * prior_shift, shift_y = m[3 * plane()] * prior_shift;
    flows[0] = flows[0] + (m[0] * prior_before + shift_x);
    flows[1] = flows[1] + (m[plane()] * prior_before + shift_y);
    flows[2] = flows[2] + (m[0] * prior_after + shift_x);
    flows[3] = flows[3] + (m[plane()] * prior_after + shift_y);
  }
  const float px = static_cast<float>(x), py = static_cast<float>(y);
  const Frame first{before + b * 3 * plane(), height, width}, second{after + b * 3 * plane(), height, width};
  float from_before[3], from_after[3];
  if (bicubic) {
    first.bicubic(position_x(flows[0], px), position_y(flows[1], py), from_before);
    second.bicubic(position_x(flows[2], px), position_y(flows[3], py), from_after);
  } else {
    first.bilinear(position_x(flows[0], px), position_y(flows[1], py), from_before);
    second.bilinear(position_x(flows[2], px), position_y(flows[3], py), from_after);
  }
  const float mask = 1.0f / (1.0f + std::exp(-(h[4] + mask_offset)));
  float* o = out + b * 3 * plane() + y * width + x;
  for (int c = 0; c < 3; ++c) {  // torch.lerp(after, before, mask), then the correction
    const float difference = from_before[c] - from_after[c];
    const float blend = mask < 0.5f ? from_after[c] + mask * difference : from_before[c] - difference * (1.0f - mask);
    o[c * plane()] = blend + h[5 + c];
  }
}

#ifdef WARP_BLEND_X86
#define WB_AVX2 __attribute__((target("avx2")))

WB_AVX2 inline __m256 cubic_near8(__m256 x) {
  const __m256 a2 = _mm256_set1_ps(kCubicA + 2.0f), a3 = _mm256_set1_ps(kCubicA + 3.0f);
  return _mm256_add_ps(_mm256_mul_ps(_mm256_mul_ps(_mm256_sub_ps(_mm256_mul_ps(a2, x), a3), x), x), _mm256_set1_ps(1.0f));
}

WB_AVX2 inline __m256 cubic_far8(__m256 x) {
  const __m256 a = _mm256_set1_ps(kCubicA), a5 = _mm256_set1_ps(5.0f * kCubicA);
  const __m256 a8 = _mm256_set1_ps(8.0f * kCubicA), a4 = _mm256_set1_ps(4.0f * kCubicA);
  return _mm256_sub_ps(_mm256_mul_ps(_mm256_add_ps(_mm256_mul_ps(_mm256_sub_ps(_mm256_mul_ps(a, x), a5), x), a8), x), a4);
}

WB_AVX2 inline __m256i clipped8(__m256i i, __m256i last) {
  return _mm256_min_epi32(_mm256_max_epi32(i, _mm256_setzero_si256()), last);
}

// Frame::bicubic for 8 positions. The weights are computed 8 at a time; then each position
// reads its 4 x 4 taps as four 4-float rows (one load each, transposed so that each row's
// sum is Frame::bicubic's sum, in its order), or through Frame::bicubic's clipped taps where
// they leave the frame's columns: the same values either way.
WB_AVX2 void bicubic8(const Frame& frame, __m256 x, __m256 y, __m256 out[3]) {
  x = _mm256_min_ps(_mm256_max_ps(x, _mm256_set1_ps(-8.0f)), _mm256_set1_ps(static_cast<float>(frame.width + 8)));
  y = _mm256_min_ps(_mm256_max_ps(y, _mm256_set1_ps(-8.0f)), _mm256_set1_ps(static_cast<float>(frame.height + 8)));
  const __m256 fx = _mm256_floor_ps(x), fy = _mm256_floor_ps(y), one = _mm256_set1_ps(1.0f), two = _mm256_set1_ps(2.0f);
  const __m256 tx = _mm256_sub_ps(x, fx), ty = _mm256_sub_ps(y, fy);
  alignas(32) float wx[4][8], wy[4][8], sums[3][8];
  alignas(32) int32_t x0[8], y0[8];
  _mm256_store_ps(wx[0], cubic_far8(_mm256_add_ps(tx, one)));
  _mm256_store_ps(wx[1], cubic_near8(tx));
  _mm256_store_ps(wx[2], cubic_near8(_mm256_sub_ps(one, tx)));
  _mm256_store_ps(wx[3], cubic_far8(_mm256_sub_ps(two, tx)));
  _mm256_store_ps(wy[0], cubic_far8(_mm256_add_ps(ty, one)));
  _mm256_store_ps(wy[1], cubic_near8(ty));
  _mm256_store_ps(wy[2], cubic_near8(_mm256_sub_ps(one, ty)));
  _mm256_store_ps(wy[3], cubic_far8(_mm256_sub_ps(two, ty)));
  _mm256_store_si256(reinterpret_cast<__m256i*>(x0), _mm256_sub_epi32(_mm256_cvttps_epi32(fx), _mm256_set1_epi32(1)));
  _mm256_store_si256(reinterpret_cast<__m256i*>(y0), _mm256_sub_epi32(_mm256_cvttps_epi32(fy), _mm256_set1_epi32(1)));
  const int64_t plane = frame.height * frame.width;
  for (int k = 0; k < 8; ++k) {
    const float lane_wx[4] = {wx[0][k], wx[1][k], wx[2][k], wx[3][k]};
    const float lane_wy[4] = {wy[0][k], wy[1][k], wy[2][k], wy[3][k]};
    if (x0[k] < 0 || x0[k] + 3 >= frame.width) {
      float values[3];
      frame.bicubic_taps(x0[k], y0[k], lane_wx, lane_wy, values);
      for (int c = 0; c < 3; ++c) sums[c][k] = values[c];
      continue;
    }
    const __m128 w0 = _mm_set1_ps(lane_wx[0]), w1 = _mm_set1_ps(lane_wx[1]), w2 = _mm_set1_ps(lane_wx[2]),
                 w3 = _mm_set1_ps(lane_wx[3]), weights_y = _mm_loadu_ps(lane_wy);
    int64_t rows[4];
    for (int j = 0; j < 4; ++j) rows[j] = clipped(y0[k] + j, frame.height) * frame.width + x0[k];
    for (int c = 0; c < 3; ++c) {
      const float* p = frame.planes + c * plane;
      __m128 r0 = _mm_loadu_ps(p + rows[0]), r1 = _mm_loadu_ps(p + rows[1]), r2 = _mm_loadu_ps(p + rows[2]),
             r3 = _mm_loadu_ps(p + rows[3]);
      _MM_TRANSPOSE4_PS(r0, r1, r2, r3);  // r_i: tap i of the 4 rows
      __m128 along_x = _mm_mul_ps(r0, w0);
      along_x = _mm_add_ps(along_x, _mm_mul_ps(r1, w1));
      along_x = _mm_add_ps(along_x, _mm_mul_ps(r2, w2));
      along_x = _mm_add_ps(along_x, _mm_mul_ps(r3, w3));
      alignas(16) float terms[4];
      _mm_store_ps(terms, _mm_mul_ps(along_x, weights_y));
      sums[c][k] = terms[0] + terms[1] + terms[2] + terms[3];
    }
  }
  for (int c = 0; c < 3; ++c) out[c] = _mm256_load_ps(sums[c]);
}

// Frame::bilinear for 8 positions.
WB_AVX2 void bilinear8(const Frame& frame, __m256 x, __m256 y, __m256 out[3]) {
  x = _mm256_min_ps(_mm256_max_ps(x, _mm256_setzero_ps()), _mm256_set1_ps(static_cast<float>(frame.width - 1)));
  y = _mm256_min_ps(_mm256_max_ps(y, _mm256_setzero_ps()), _mm256_set1_ps(static_cast<float>(frame.height - 1)));
  const __m256 fx = _mm256_floor_ps(x), fy = _mm256_floor_ps(y), one = _mm256_set1_ps(1.0f);
  const __m256 w = _mm256_sub_ps(x, fx), e = _mm256_sub_ps(one, w), n = _mm256_sub_ps(y, fy), s = _mm256_sub_ps(one, n);
  const __m256 nw = _mm256_mul_ps(s, e), ne = _mm256_mul_ps(s, w), sw = _mm256_mul_ps(n, e), se = _mm256_mul_ps(n, w);
  const __m256i west = _mm256_cvttps_epi32(fx), stride = _mm256_set1_epi32(static_cast<int>(frame.width));
  const __m256i north = _mm256_mullo_epi32(_mm256_cvttps_epi32(fy), stride);
  const __m256i east = _mm256_min_epi32(_mm256_add_epi32(west, _mm256_set1_epi32(1)),
                                        _mm256_set1_epi32(static_cast<int>(frame.width - 1)));
  const __m256i south = _mm256_min_epi32(_mm256_add_epi32(north, stride),
                                         _mm256_set1_epi32(static_cast<int>((frame.height - 1) * frame.width)));
  for (int c = 0; c < 3; ++c) {
    const float* plane = frame.planes + c * frame.height * frame.width;
    __m256 sum = _mm256_mul_ps(nw, _mm256_i32gather_ps(plane, _mm256_add_epi32(north, west), 4));
    sum = _mm256_add_ps(sum, _mm256_mul_ps(ne, _mm256_i32gather_ps(plane, _mm256_add_epi32(north, east), 4)));
    sum = _mm256_add_ps(sum, _mm256_mul_ps(sw, _mm256_i32gather_ps(plane, _mm256_add_epi32(south, west), 4)));
    out[c] = _mm256_add_ps(sum, _mm256_mul_ps(se, _mm256_i32gather_ps(plane, _mm256_add_epi32(south, east), 4)));
  }
}

// WarpBlend::position_x / position_y for 8 pixels.
WB_AVX2 inline __m256 position8(__m256 flow, __m256 p, __m256 grid, __m256 half) {
  const __m256 one = _mm256_set1_ps(1.0f);
  return _mm256_mul_ps(_mm256_add_ps(_mm256_sub_ps(_mm256_mul_ps(_mm256_add_ps(flow, p), grid), one), one), half);
}

// WarpBlend::pixel for the 8 pixels from x on (the same operations, lane by lane; exp per lane).
WB_AVX2 void pixels8(const WarpBlend& job, int64_t b, int64_t y, int64_t x) {
  const LinearTap& ry = job.row_taps[y];
  const __m256 upper = _mm256_set1_ps(ry.first_weight), lower = _mm256_set1_ps(ry.second_weight);
  __m256 h[kHeadChannels];
  for (int64_t c = 0; c < kHeadChannels; ++c) {
    h[c] = _mm256_add_ps(_mm256_mul_ps(_mm256_loadu_ps(job.wide_row(b, c, ry.first) + x), upper),
                         _mm256_mul_ps(_mm256_loadu_ps(job.wide_row(b, c, ry.second) + x), lower));
  }
  const __m256 gain = _mm256_set1_ps(job.gain);
  __m256 flows[4];
  for (int i = 0; i < 4; ++i) flows[i] = _mm256_mul_ps(h[i], gain);
  if (job.motion) {
    const float* m = job.motion + b * job.motion_channels * job.plane() + y * job.width + x;
    const __m256 mx = _mm256_loadu_ps(m), my = _mm256_loadu_ps(m + job.plane());
    const __m256 to_before = _mm256_set1_ps(job.prior_before), to_after = _mm256_set1_ps(job.prior_after);
    __m256 shift_x = _mm256_setzero_ps(), shift_y = _mm256_setzero_ps();
    if (job.motion_channels == 4) {
      const __m256 to_shift = _mm256_set1_ps(job.prior_shift);
      shift_x = _mm256_mul_ps(_mm256_loadu_ps(m + 2 * job.plane()), to_shift);
      shift_y = _mm256_mul_ps(_mm256_loadu_ps(m + 3 * job.plane()), to_shift);
    }
    flows[0] = _mm256_add_ps(flows[0], _mm256_add_ps(_mm256_mul_ps(mx, to_before), shift_x));
    flows[1] = _mm256_add_ps(flows[1], _mm256_add_ps(_mm256_mul_ps(my, to_before), shift_y));
    flows[2] = _mm256_add_ps(flows[2], _mm256_add_ps(_mm256_mul_ps(mx, to_after), shift_x));
    flows[3] = _mm256_add_ps(flows[3], _mm256_add_ps(_mm256_mul_ps(my, to_after), shift_y));
  }
  const __m256 px = _mm256_add_ps(_mm256_set1_ps(static_cast<float>(x)), _mm256_setr_ps(0, 1, 2, 3, 4, 5, 6, 7));
  const __m256 py = _mm256_set1_ps(static_cast<float>(y)), one = _mm256_set1_ps(1.0f);
  const __m256 grid_x = _mm256_set1_ps(job.grid_x), grid_y = _mm256_set1_ps(job.grid_y);
  const __m256 half_x = _mm256_set1_ps(job.half_x), half_y = _mm256_set1_ps(job.half_y);
  const Frame first{job.before + b * 3 * job.plane(), job.height, job.width};
  const Frame second{job.after + b * 3 * job.plane(), job.height, job.width};
  __m256 from_before[3], from_after[3];
  const __m256 before_x = position8(flows[0], px, grid_x, half_x), before_y = position8(flows[1], py, grid_y, half_y);
  const __m256 after_x = position8(flows[2], px, grid_x, half_x), after_y = position8(flows[3], py, grid_y, half_y);
  if (job.bicubic) {
    bicubic8(first, before_x, before_y, from_before);
    bicubic8(second, after_x, after_y, from_after);
  } else {
    bilinear8(first, before_x, before_y, from_before);
    bilinear8(second, after_x, after_y, from_after);
  }
  alignas(32) float logits[8];
  _mm256_store_ps(logits, _mm256_add_ps(h[4], _mm256_set1_ps(job.mask_offset)));
  for (float& v : logits) v = 1.0f / (1.0f + std::exp(-v));
  const __m256 mask = _mm256_load_ps(logits), below_half = _mm256_cmp_ps(mask, _mm256_set1_ps(0.5f), _CMP_LT_OQ);
  float* o = job.out + b * 3 * job.plane() + y * job.width + x;
  for (int c = 0; c < 3; ++c) {
    const __m256 difference = _mm256_sub_ps(from_before[c], from_after[c]);
    const __m256 low = _mm256_add_ps(from_after[c], _mm256_mul_ps(mask, difference));
    const __m256 high = _mm256_sub_ps(from_before[c], _mm256_mul_ps(difference, _mm256_sub_ps(one, mask)));
    _mm256_storeu_ps(o + c * job.plane(), _mm256_add_ps(_mm256_blendv_ps(high, low, below_half), h[5 + c]));
  }
}

bool has_avx2() {
  __builtin_cpu_init();
  return __builtin_cpu_supports("avx2");
}
#endif

void WarpBlend::row(int64_t b, int64_t y, bool vectorized) const {
  int64_t x = 0;
#ifdef WARP_BLEND_X86
  if (vectorized) {
    for (; x + 8 <= width; x += 8) pixels8(*this, b, y, x);
  }
#endif
  for (; x < width; ++x) pixel(b, y, x);
}

void check_frames(const at::Tensor& t, const char* what, int64_t channels, const at::Tensor& like) {
  TORCH_CHECK(t.device().is_cpu() && t.scalar_type() == at::kFloat && t.is_contiguous() && t.dim() == 4,
              "warp_blend: ", what, " must be a contiguous float32 CPU tensor B x C x H x W");
  TORCH_CHECK(t.size(0) == like.size(0) && t.size(1) == channels && t.size(2) == like.size(2) &&
                  t.size(3) == like.size(3),
              "warp_blend: ", what, " must be B x ", channels, " x H x W like the frames");
}

// The frame at time t (B x 3 x H x W) from the head's output `head` (B x 8 x h x w, its flows
// already in full-resolution pixels / flow_scale), the middle frames `before` and `after`
// (B x 3 x H x W) and the prior's motion `motion` (B x 2 x H x W pixels, optional; B x 4 x H x W for a quadratic
// prior: the half motion, then the middle time's shift, which moves both flows by 4 t (1 - t) times it).
// variant "scalar" runs the portable loop; any other the AVX2 one where the CPU has AVX2.
at::Tensor warp_blend_op(const at::Tensor& head, const at::Tensor& before, const at::Tensor& after,
                         const std::optional<at::Tensor>& motion, double t, double flow_scale, bool bicubic,
                         std::string_view variant) {
  check_frames(before, "before", 3, before);
  check_frames(after, "after", 3, before);
  TORCH_CHECK(head.device().is_cpu() && head.scalar_type() == at::kFloat && head.is_contiguous() && head.dim() == 4 &&
                  head.size(0) == before.size(0) && head.size(1) == kHeadChannels,
              "warp_blend: head must be a contiguous float32 CPU tensor B x 8 x h x w");
  const int64_t motion_channels = motion ? motion->size(1) : 2;
  if (motion) check_frames(*motion, "motion", motion_channels == 4 ? 4 : 2, before);
  TORCH_CHECK(t > 0.0 && t < 1.0, "warp_blend: t must be in (0, 1)");
  const int64_t batch = before.size(0), height = before.size(2), width = before.size(3);
  TORCH_CHECK(3 * height * width < (int64_t{1} << 31), "warp_blend: frames of at most 2^31 / 3 pixels");
  const at::Tensor wide = widened(head, width);
  at::Tensor out = at::empty_like(before);
  WarpBlend job{wide.data_ptr<float>(), before.data_ptr<float>(), after.data_ptr<float>(),
                motion ? motion->data_ptr<float>() : nullptr, out.data_ptr<float>(), height, width, head.size(2),
                linear_taps(head.size(2), height), static_cast<float>(flow_scale),
                static_cast<float>(std::log((1.0 - t) / t)), static_cast<float>(-2.0 * t),
                static_cast<float>(2.0 * (1.0 - t)),
                static_cast<float>(2.0 / std::max<int64_t>(width - 1, 1)),  // backward_warp's grid scale
                static_cast<float>(2.0 / std::max<int64_t>(height - 1, 1)), static_cast<float>(width - 1) / 2.0f,
                static_cast<float>(height - 1) / 2.0f, bicubic, motion_channels,
                static_cast<float>(4.0 * t * (1.0 - t))};
  bool vectorized = false;
#ifdef WARP_BLEND_X86
  vectorized = variant != "scalar" && has_avx2();
#endif
  at::parallel_for(0, batch * height, 16, [&](int64_t begin, int64_t end) {
    for (int64_t row = begin; row < end; ++row) job.row(row / height, row % height, vectorized);
  });
  return out;
}

}  // namespace

TORCH_LIBRARY_FRAGMENT(bitconv, m) {
  m.def("warp_blend(Tensor head, Tensor before, Tensor after, Tensor? motion, float t, float flow_scale, "
        "bool bicubic, str variant) -> Tensor",
        &warp_blend_op);
}

}  // namespace bitconv
