// Generic XNOR-popcount kernels, compiled once per instruction-set variant.
//
// bitconv.cpp includes this file inside a namespace that first defines
//   BF_TARGET    the function attribute selecting the instruction set, and
//   struct Simd  the variant's primitives (see the variants in bitconv.cpp):
//     Vec, Acc, kLanes, kP, kQ, kFlushEvery, kCarrySave, kDirectStore, zero(), load(),
//     broadcast(), flush(), total(), finish(), pack_position(), position_masks(),
//     store_block(), and either accumulate() (direct popcount; finish() takes an Acc) or
//     kStreamsTogether, xor_(), csa(), byte_counts(), add_bytes(), zero_bytes(), counts()
//     (carry-save; finish() takes the Vec of counts()).
//
// A tile computes P neighbouring output positions of one row times Q weight groups
// (8 output channels each), reading the activation words straight from the halo-padded
// packed input (im2col-free) with all accumulators in registers:
//  * direct: for every tap and 64-channel word, the Q groups' weight words are loaded once
//    and XORed with each position's broadcast activation word, then popcounted;
//  * carry-save (no vector popcount instruction): Harley-Seal, the XORed words of eight
//    steps go through a tree of carry-save adders (ones, twos, fours, eights bit planes)
//    and only the eights plane is popcounted (nibble lookup); the last taps * words % 8
//    steps and the other planes are popcounted once, at the end of the tile.
// kDirectStore variants (few positions per tile) write each tile's channels straight into
// the NCDHW output planes; the others compute a whole output row into a channels-last
// scratch row, then store it transposed into the output.

// Floats between neighbouring output columns and channels where tiles write.
BF_TARGET static inline int64_t column_floats(const ConvPlan& c) {
  return Simd::kDirectStore ? 1 : c.epilogue.out_channels;
}
BF_TARGET static inline int64_t channel_floats(const ConvPlan& c) { return Simd::kDirectStore ? c.channel_stride : 1; }

// Clears a tile's P x J accumulators.
template <int P, int J, class S>
BF_TARGET static inline void zero_tile(typename S::Acc (&acc)[P][J]) {
  BF_UNROLL for (int p = 0; p < P; ++p) {
    BF_UNROLL for (int j = 0; j < J; ++j) acc[p][j] = S::zero();
  }
}

// Writes a tile's counts through the epilogue: P positions x Q groups of V vectors each.
template <int P, int Q, int V, class S, class Counts>
BF_TARGET static inline void finish_tile(const ConvPlan& c, const Counts (&acc)[P][Q * V], int64_t group, float* out) {
  BF_UNROLL for (int p = 0; p < P; ++p) {
    BF_UNROLL for (int q = 0; q < Q; ++q) {
      const int64_t channel = (group + q) * kGroup;
      const int64_t valid = std::min<int64_t>(kGroup, c.epilogue.out_channels - channel);
      float* dst = out + p * c.col_step * column_floats(c) + channel * channel_floats(c);
      if constexpr (S::kDirectStore) {
        alignas(64) float y[kGroup];
        S::finish(&acc[p][q * V], c.epilogue, channel, valid, y);
        for (int64_t i = 0; i < valid; ++i) dst[i * c.channel_stride] = y[i];
      } else {
        S::finish(&acc[p][q * V], c.epilogue, channel, valid, dst);
      }
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

// The XORed words of a conv tile's steps for position p and weight vector w.
template <class S>
struct ConvSteps {
  const ConvPlan* c;
  const uint64_t* in;
  const uint64_t* w;
  int p;
  BF_TARGET typename S::Vec operator()(int64_t s) const { return step_input<S>(*c, in, w, p, s); }
};

// Adds steps s .. s+7 (x(s) .. x(s+7)) to a carry-save counter (ones + 2 twos + 4 fours + 8 eights).
template <class S, class Steps>
BF_TARGET static inline void add_eight(typename S::Acc& a, const Steps& x, int64_t s) {
  typename S::Vec twos_a, twos_b, fours_a, fours_b, eights;
  S::csa(twos_a, a.ones, a.ones, x(s), x(s + 1));
  S::csa(twos_b, a.ones, a.ones, x(s + 2), x(s + 3));
  S::csa(fours_a, a.twos, a.twos, twos_a, twos_b);
  S::csa(twos_a, a.ones, a.ones, x(s + 4), x(s + 5));
  S::csa(twos_b, a.ones, a.ones, x(s + 6), x(s + 7));
  S::csa(fours_b, a.twos, a.twos, twos_a, twos_b);
  S::csa(eights, a.fours, a.fours, fours_a, fours_b);
  a.eights = S::add_bytes(a.eights, S::byte_counts(eights));
}

// Counts of N streams (kLanes outputs each) over all steps x[n](0 .. taps * words), one
// carry-save counter each. A tile runs kStreamsTogether streams at a time: fewer than all
// of them where the counters, their temporaries and the lookup constants would not fit in
// the registers (AVX2: one).
template <int N, class S>
BF_TARGET static inline void stream_counts(const ConvPlan& c, const ConvSteps<S>* x, typename S::Vec* counts) {
  typename S::Acc acc[N];
  BF_UNROLL for (int n = 0; n < N; ++n) acc[n] = S::zero();
  const int64_t steps = c.taps * c.words, blocks_end = steps - steps % 8;
  int since_flush = 0;
  for (int64_t s = 0; s < blocks_end; s += 8) {
    BF_UNROLL for (int n = 0; n < N; ++n) add_eight<S>(acc[n], x[n], s);
    if (++since_flush == S::kFlushEvery) {  // each add puts at most 8 into a byte of eights
      since_flush = 0;
      BF_UNROLL for (int n = 0; n < N; ++n) S::flush(acc[n]);
    }
  }
  BF_UNROLL for (int n = 0; n < N; ++n) {
    typename S::Vec tail = S::zero_bytes();  // at most 7 * 8 per byte
    for (int64_t s = blocks_end; s < steps; ++s) tail = S::add_bytes(tail, S::byte_counts(x[n](s)));
    counts[n] = S::counts(acc[n], tail);
  }
}

template <int P, int Q, class S>
BF_TARGET static void conv_tile_carry_save(const ConvPlan& c, const uint64_t* in, int64_t group, float* out) {
  constexpr int V = kGroup / S::kLanes, N = std::min(S::kStreamsTogether, P * Q * V);
  static_assert(P * Q * V % N == 0, "streams run in equal batches");
  const int64_t group_words = c.taps * c.words * kGroup;
  const uint64_t* w = c.weight + group * group_words;
  ConvSteps<S> x[P * Q * V];
  BF_UNROLL for (int i = 0; i < P * Q * V; ++i) {
    const int j = i % (Q * V);
    x[i] = {&c, in, w + (j / V) * group_words + (j % V) * S::kLanes, i / (Q * V)};
  }
  typename S::Vec counts[P][Q * V];
  BF_UNROLL for (int i = 0; i < P * Q * V; i += N) stream_counts<N, S>(c, x + i, &counts[0][0] + i);
  finish_tile<P, Q, V, S>(c, counts, group, out);
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
    run_tile<Simd::kP, Q>(c, in + col * c.in_col_step, group, out + col * c.col_step * column_floats(c));
  }
  conv_tail<Simd::kP - 1, Q>(c, in + col * c.in_col_step, group, out + col * c.col_step * column_floats(c), c.cols - col);
}

// Row `row` (batch, depth, height) of plan c, all columns and channels, into `dst`: the
// output row (kDirectStore) or the scratch row.
BF_TARGET static void conv_plan_row(const ConvPlan& c, int64_t row, float* dst) {
  const int64_t h = row % c.height;
  const int64_t t = (row / c.height) % c.depth;
  const int64_t b = row / (c.height * c.depth);
  const uint64_t* in = c.input + c.in_base + b * c.in_b + t * c.in_t + h * c.in_h;
  float* out = dst + c.col_offset * column_floats(c);
  int64_t group = 0;
  for (; group + Simd::kQ <= c.groups; group += Simd::kQ) conv_columns<Simd::kQ>(c, in, group, out);
  for (; group < c.groups; ++group) conv_columns<1>(c, in, group, out);
}

// Scratch row [cols][channels] -> NCDHW output row: out[c * channel_stride + w]. The lines
// of the next row this thread writes, `ahead` floats on (0: none), are prefetched for
// writing: the many channel planes are too many streams for the hardware prefetchers.
BF_TARGET static void store_row(const float* scratch, int64_t cols, int64_t channels, float* out, int64_t channel_stride,
                                int64_t ahead) {
  int64_t c0 = 0;
  for (; c0 + 8 <= channels; c0 += 8) {
    int64_t w0 = 0;
    for (; w0 + 8 <= cols; w0 += 8) {
      float* block = out + c0 * channel_stride + w0;
      Simd::store_block(scratch + w0 * channels + c0, channels, block, channel_stride);
      if (ahead != 0 && w0 % 16 == 0) {
        for (int64_t c = 0; c < 8; ++c) BF_PREFETCH_WRITE(block + c * channel_stride + ahead);
      }
    }
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
    const int64_t h = row % job.plans[0].height;
    const int64_t t = (row / job.plans[0].height) % job.plans[0].depth;
    const int64_t b = row / (job.plans[0].height * job.plans[0].depth);
    float* out = job.output + b * job.out_b + t * job.out_t + h * job.out_h + job.out_offset;
    for (int i = 0; i < job.plan_count; ++i) conv_plan_row(job.plans[i], row, Simd::kDirectStore ? out : scratch);
    if constexpr (!Simd::kDirectStore) {
      const int64_t ahead = row + 1 < end && h + 1 < job.plans[0].height ? job.out_h : 0;
      store_row(scratch, job.out_cols, job.plans[0].epilogue.out_channels, out, job.plans[0].channel_stride, ahead);
    }
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

// XOR+popcount peak (benchmarks/bench_popcount_peak.py): the variant's accumulation alone,
// J independent weight vectors per broadcast activation word (J * kLanes words wide), no
// tails, offsets or epilogue.

// Step s of stream j: activation word a[s] broadcast, XOR weight vector w[s][j].
template <int J, class S>
struct PeakSteps {
  const uint64_t* a;
  const uint64_t* w;
  int j;
  BF_TARGET typename S::Vec operator()(int64_t s) const {
    return S::xor_(S::broadcast(a[s]), S::load(w + (s * J + j) * S::kLanes));
  }
};

// Steps s .. s+7 of every stream into its counter.
template <int J, class S>
BF_TARGET static inline void peak_eight(typename S::Acc (&acc)[J], const uint64_t* a, const uint64_t* w, int64_t s) {
  if constexpr (S::kCarrySave) {
    BF_UNROLL for (int j = 0; j < J; ++j) add_eight<S>(acc[j], PeakSteps<J, S>{a, w, j}, s);
  } else {
    BF_UNROLL for (int64_t i = s; i < s + 8; ++i) {
      const typename S::Vec av = S::broadcast(a[i]);
      BF_UNROLL for (int j = 0; j < J; ++j) S::accumulate(acc[j], av, S::load(w + (i * J + j) * S::kLanes));
    }
  }
}

// `reps` passes over a[steps] and w[steps][J * kLanes] (steps: a multiple of 8, at most
// 248); returns the total popcount of a[s] XOR w[s][i] over all passes.
template <int J>
BF_TARGET static uint64_t peak_passes(const uint64_t* a, const uint64_t* w, int64_t steps, int64_t reps) {
  typename Simd::Acc acc[J];
  for (auto& counter : acc) counter = Simd::zero();
  for (int64_t r = 0; r < reps; ++r) {
    clobber(a);  // every pass reloads its words
    clobber(w);
    for (int64_t s = 0; s < steps; s += 8) peak_eight<J, Simd>(acc, a, w, s);
    for (auto& counter : acc) Simd::flush(counter);
  }
  uint64_t total = 0;
  for (const auto& counter : acc) total += Simd::total(counter);
  return total;
}

// peak_passes with 1, 2, 4 or 8 (any other value) streams.
BF_TARGET static uint64_t peak(const uint64_t* a, const uint64_t* w, int64_t steps, int64_t reps, int streams) {
  switch (streams) {
    case 1: return peak_passes<1>(a, w, steps, reps);
    case 2: return peak_passes<2>(a, w, steps, reps);
    case 4: return peak_passes<4>(a, w, steps, reps);
    default: return peak_passes<8>(a, w, steps, reps);
  }
}
