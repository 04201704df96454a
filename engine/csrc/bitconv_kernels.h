// Generic XNOR-popcount kernels, compiled once per instruction-set variant.
//
// bitconv.cpp includes this file inside a namespace that first defines
//   BF_TARGET    the function attribute selecting the instruction set, and
//   struct Simd  the variant's primitives (see the variants in bitconv.cpp):
//     Vec, Acc, kLanes, kP, kQ, kFlushEvery, kCarrySave, zero(), load(), broadcast(),
//     flush(), finish(), pack_position(), position_masks(), store_block(), and either
//     accumulate() (direct popcount) or xor_(), csa(), half_add(), byte_counts(),
//     add_bytes() (carry-save).
//
// A tile computes P neighbouring output positions of one row times Q weight groups
// (8 output channels each), reading the activation words straight from the halo-padded
// packed input (im2col-free) with all accumulators in registers:
//  * direct: for every tap and 64-channel word, the Q groups' weight words are loaded once
//    and XORed with each position's broadcast activation word, then popcounted;
//  * carry-save (no vector popcount instruction): Harley-Seal, the XORed words of eight
//    steps go through a tree of carry-save adders (ones, twos, fours, eights bit planes)
//    and only the eights plane is popcounted (nibble lookup).
// A whole output row is computed into a channels-last scratch row, then stored transposed
// into the NCDHW output.

// Clears a tile's P x J accumulators.
template <int P, int J, class S>
BF_TARGET static inline void zero_tile(typename S::Acc (&acc)[P][J]) {
  BF_UNROLL for (int p = 0; p < P; ++p) {
    BF_UNROLL for (int j = 0; j < J; ++j) acc[p][j] = S::zero();
  }
}

// Writes a tile's counts through the epilogue: P positions x Q groups of V vectors each.
template <int P, int Q, int V, class S>
BF_TARGET static inline void finish_tile(const ConvPlan& c, const typename S::Acc (&acc)[P][Q * V], int64_t group,
                                         float* out) {
  BF_UNROLL for (int p = 0; p < P; ++p) {
    BF_UNROLL for (int q = 0; q < Q; ++q) {
      const int64_t channel = (group + q) * kGroup;
      const int64_t valid = std::min<int64_t>(kGroup, c.epilogue.out_channels - channel);
      S::finish(&acc[p][q * V], c.epilogue, channel, valid, out + p * c.scratch_col_step + channel);
    }
  }
}

template <int P, int Q, class S>
BF_TARGET static void conv_tile(const ConvPlan& c, const uint64_t* in, int64_t group, float* out) {
  constexpr int V = kGroup / S::kLanes;
  typename S::Acc acc[P][Q * V];
  zero_tile<P, Q * V, S>(acc);
  const int64_t group_words = c.taps * c.words * kGroup;
  const uint64_t* w = c.weight + group * group_words;
  int since_flush = 0;
  for (int64_t tap = 0; tap < c.taps; ++tap) {
    const uint64_t* a = in + c.tap_offsets[tap];
    for (int64_t k = 0; k < c.words; ++k, w += kGroup) {
      typename S::Vec wv[Q * V];
      BF_UNROLL for (int q = 0; q < Q; ++q) {
        BF_UNROLL for (int v = 0; v < V; ++v) wv[q * V + v] = S::load(w + q * group_words + v * S::kLanes);
      }
      BF_UNROLL for (int p = 0; p < P; ++p) {
        const typename S::Vec av = S::broadcast(a[p * c.in_col_step + k]);
        BF_UNROLL for (int j = 0; j < Q * V; ++j) S::accumulate(acc[p][j], av, wv[j]);
      }
      if constexpr (S::kFlushEvery > 0) {
        if (++since_flush == S::kFlushEvery) {
          since_flush = 0;
          BF_UNROLL for (int p = 0; p < P; ++p) {
            BF_UNROLL for (int j = 0; j < Q * V; ++j) S::flush(acc[p][j]);
          }
        }
      }
    }
  }
  finish_tile<P, Q, V, S>(c, acc, group, out);
}

// Activation word of position p at step s XOR the weight vector of that step at w.
template <class S>
BF_TARGET static inline typename S::Vec step_input(const ConvPlan& c, const uint64_t* in, const uint64_t* w, int p,
                                                   int64_t s) {
  return S::xor_(S::broadcast(in[p * c.in_col_step + c.step_offsets[s]]), S::load(w + s * kGroup));
}

// Adds steps s .. s+7 to a carry-save counter (ones + 2 twos + 4 fours + 8 eights).
template <class S>
BF_TARGET static inline void add_eight(typename S::Acc& a, const ConvPlan& c, const uint64_t* in, const uint64_t* w,
                                       int p, int64_t s) {
  typename S::Vec twos_a, twos_b, fours_a, fours_b, eights;
  S::csa(twos_a, a.ones, a.ones, step_input<S>(c, in, w, p, s), step_input<S>(c, in, w, p, s + 1));
  S::csa(twos_b, a.ones, a.ones, step_input<S>(c, in, w, p, s + 2), step_input<S>(c, in, w, p, s + 3));
  S::csa(fours_a, a.twos, a.twos, twos_a, twos_b);
  S::csa(twos_a, a.ones, a.ones, step_input<S>(c, in, w, p, s + 4), step_input<S>(c, in, w, p, s + 5));
  S::csa(twos_b, a.ones, a.ones, step_input<S>(c, in, w, p, s + 6), step_input<S>(c, in, w, p, s + 7));
  S::csa(fours_b, a.twos, a.twos, twos_a, twos_b);
  S::csa(eights, a.fours, a.fours, fours_a, fours_b);
  a.eights = S::add_bytes(a.eights, S::byte_counts(eights));
}

// Adds one step to a carry-save counter (a ripple through the bit planes).
template <class S>
BF_TARGET static inline void add_one(typename S::Acc& a, typename S::Vec x) {
  typename S::Vec twos, fours, eights;
  S::half_add(twos, a.ones, a.ones, x);
  S::half_add(fours, a.twos, a.twos, twos);
  S::half_add(eights, a.fours, a.fours, fours);
  a.eights = S::add_bytes(a.eights, S::byte_counts(eights));
}

template <int P, int Q, class S>
BF_TARGET static void conv_tile_carry_save(const ConvPlan& c, const uint64_t* in, int64_t group, float* out) {
  constexpr int V = kGroup / S::kLanes;
  typename S::Acc acc[P][Q * V];
  zero_tile<P, Q * V, S>(acc);
  const int64_t group_words = c.taps * c.words * kGroup;
  const uint64_t* w = c.weight + group * group_words;
  const int64_t steps = c.taps * c.words;
  int since_flush = 0;
  for (int64_t s = 0; s < steps;) {
    const bool block = s + 8 <= steps;
    BF_UNROLL for (int p = 0; p < P; ++p) {
      BF_UNROLL for (int j = 0; j < Q * V; ++j) {
        const uint64_t* wj = w + (j / V) * group_words + (j % V) * S::kLanes;
        if (block) {
          add_eight<S>(acc[p][j], c, in, wj, p, s);
        } else {
          add_one<S>(acc[p][j], step_input<S>(c, in, wj, p, s));
        }
      }
    }
    s += block ? 8 : 1;
    if (++since_flush == S::kFlushEvery) {  // each add puts at most 8 into a byte of eights
      since_flush = 0;
      BF_UNROLL for (int p = 0; p < P; ++p) {
        BF_UNROLL for (int j = 0; j < Q * V; ++j) S::flush(acc[p][j]);
      }
    }
  }
  finish_tile<P, Q, V, S>(c, acc, group, out);
}

template <int P, int Q>
BF_TARGET static inline void run_tile(const ConvPlan& c, const uint64_t* in, int64_t group, float* out) {
  if constexpr (Simd::kCarrySave) {
    conv_tile_carry_save<P, Q, Simd>(c, in, group, out);
  } else {
    conv_tile<P, Q, Simd>(c, in, group, out);
  }
}

// The last R < kP columns of a row: picks the tile of exactly R positions.
template <int R, int Q>
BF_TARGET static void conv_tail(const ConvPlan& c, const uint64_t* in, int64_t group, float* out, int64_t remaining) {
  if constexpr (R > 0) {
    if (remaining == R) {
      run_tile<R, Q>(c, in, group, out);
    } else {
      conv_tail<R - 1, Q>(c, in, group, out, remaining);
    }
  }
}

template <int Q>
BF_TARGET static void conv_columns(const ConvPlan& c, const uint64_t* in, int64_t group, float* out) {
  int64_t col = 0;
  for (; col + Simd::kP <= c.cols; col += Simd::kP) {
    run_tile<Simd::kP, Q>(c, in + col * c.in_col_step, group, out + col * c.scratch_col_step);
  }
  conv_tail<Simd::kP - 1, Q>(c, in + col * c.in_col_step, group, out + col * c.scratch_col_step, c.cols - col);
}

// Row `row` (batch, depth, height) of plan c, all columns and channels, into the scratch row.
BF_TARGET static void conv_plan_row(const ConvPlan& c, int64_t row, float* scratch) {
  const int64_t h = row % c.height;
  const int64_t t = (row / c.height) % c.depth;
  const int64_t b = row / (c.height * c.depth);
  const uint64_t* in = c.input + c.in_base + b * c.in_b + t * c.in_t + h * c.in_h;
  float* out = scratch + c.scratch_offset;
  int64_t group = 0;
  for (; group + Simd::kQ <= c.groups; group += Simd::kQ) conv_columns<Simd::kQ>(c, in, group, out);
  for (; group < c.groups; ++group) conv_columns<1>(c, in, group, out);
}

// Scratch row [cols][channels] -> NCDHW output row: out[c * channel_stride + w].
BF_TARGET static void store_row(const float* scratch, int64_t cols, int64_t channels, float* out, int64_t channel_stride) {
  int64_t c0 = 0;
  for (; c0 + 8 <= channels; c0 += 8) {
    int64_t w0 = 0;
    for (; w0 + 8 <= cols; w0 += 8) Simd::store_block(scratch + w0 * channels + c0, channels, out + c0 * channel_stride + w0, channel_stride);
    for (int64_t c = c0; c < c0 + 8; ++c) {
      for (int64_t w = w0; w < cols; ++w) out[c * channel_stride + w] = scratch[w * channels + c];
    }
  }
  for (int64_t c = c0; c < channels; ++c) {
    for (int64_t w = 0; w < cols; ++w) out[c * channel_stride + w] = scratch[w * channels + c];
  }
}

BF_TARGET static void conv_job_rows(const ConvJob& job, int64_t begin, int64_t end, float* scratch) {
  for (int64_t row = begin; row < end; ++row) {
    for (int i = 0; i < job.plan_count; ++i) conv_plan_row(job.plans[i], row, scratch);
    const int64_t h = row % job.plans[0].height;
    const int64_t t = (row / job.plans[0].height) % job.plans[0].depth;
    const int64_t b = row / (job.plans[0].height * job.plans[0].depth);
    float* out = job.output + b * job.out_b + t * job.out_t + h * job.out_h + job.out_offset;
    store_row(scratch, job.out_cols, job.plans[0].epilogue.out_channels, out, job.out_channel_stride);
  }
}

// 64x64 bit-matrix transpose, bit j of rows[i] <-> bit i of rows[j] (recursive block swaps).
BF_TARGET static inline void transpose_bits64(uint64_t* rows) {
  uint64_t mask = 0x00000000FFFFFFFFull;
  for (int j = 32; j != 0; j >>= 1, mask ^= mask << j) {
    for (int k = 0; k < 64; k = ((k | j) + 1) & ~j) {
      const uint64_t t = ((rows[k] >> j) ^ rows[k | j]) & mask;
      rows[k] ^= t << j;
      rows[k | j] ^= t;
    }
  }
}

// One row (b, t, h) of a channels-last float tensor -> its packed sign words.
BF_TARGET static void pack_row_channels_last(const PackPlan& p, int64_t row, uint64_t* out) {
  const float* x = p.input + row * p.width * p.channels;
  for (int64_t w = 0; w < p.width; ++w) {
    Simd::pack_position(x + w * p.channels, p.channels, p.scale, p.shift, out + w * p.words);
  }
}

// One row (b, t, h) of an NCDHW float tensor: per 64 channels x 64 positions, one mask of
// positions per channel, then a bit transpose gives one channel word per position.
BF_TARGET static void pack_row_channels_first(const PackPlan& p, int64_t row, uint64_t* out) {
  const int64_t h = row % p.height;
  const int64_t t = (row / p.height) % p.depth;
  const int64_t b = row / (p.height * p.depth);
  const int64_t offset = (t * p.height + h) * p.width;
  alignas(64) uint64_t block[64];
  for (int64_t k = 0; k < p.words; ++k) {
    for (int64_t w0 = 0; w0 < p.width; w0 += 64) {
      const int64_t n = std::min<int64_t>(64, p.width - w0);
      for (int64_t i = 0; i < 64; ++i) {
        const int64_t c = 64 * k + i;
        const float* x = c < p.channels ? p.planes[c] + b * p.batch_strides[c] + offset + w0 : nullptr;
        block[i] = x ? Simd::position_masks(x, n, p.scale[c], p.shift[c]) : 0;
      }
      transpose_bits64(block);
      for (int64_t i = 0; i < n; ++i) out[(w0 + i) * p.words + k] = block[i];
    }
  }
}

// Zeroes the halo words (the +1 one-padding) that belong to interior row (b, t, h): its own
// left and right border, the padded rows next to it at h = 0 / H-1, the padded planes next to
// it at t = 0 / T-1 (with their corner rows), so the rows of a batch cover every halo word once.
static void zero_halo(const PackPlan& p, int64_t b, int64_t t, int64_t h) {
  const int64_t Hp = p.height + 2, Wp = p.width + 2;
  const int64_t row_words = Wp * p.words;
  uint64_t* sample = p.output + b * (p.depth + 2) * Hp * row_words;
  auto zero_row = [&](int64_t tp, int64_t hp) { std::fill_n(sample + (tp * Hp + hp) * row_words, row_words, 0); };
  uint64_t* own = sample + ((t + 1) * Hp + h + 1) * row_words;
  std::fill_n(own, p.words, 0);
  std::fill_n(own + (Wp - 1) * p.words, p.words, 0);
  for (const int64_t tp : {int64_t{0}, p.depth + 1}) {
    if ((tp == 0 && t != 0) || (tp != 0 && t != p.depth - 1)) continue;
    zero_row(tp, h + 1);
    if (h == 0) zero_row(tp, 0);
    if (h == p.height - 1) zero_row(tp, p.height + 1);
  }
  if (h == 0) zero_row(t + 1, 0);
  if (h == p.height - 1) zero_row(t + 1, p.height + 1);
}

BF_TARGET static void pack_rows(const PackPlan& p, int64_t begin, int64_t end) {
  for (int64_t row = begin; row < end; ++row) {
    const int64_t h = row % p.height;
    const int64_t t = (row / p.height) % p.depth;
    const int64_t b = row / (p.height * p.depth);
    zero_halo(p, b, t, h);
    uint64_t* out = p.output + (((b * (p.depth + 2) + t + 1) * (p.height + 2) + h + 1) * (p.width + 2) + 1) * p.words;
    if (p.input != nullptr) {
      pack_row_channels_last(p, row, out);
    } else {
      pack_row_channels_first(p, row, out);
    }
  }
}
