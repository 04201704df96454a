// The NEON kernel variant against the portable scalar one, on aarch64 (natively, or on x86
// under qemu-aarch64): tests/native/check_neon.sh builds and runs it.
//
// The pytest suite checks every variant a machine runs against F.conv3d / F.conv_transpose3d,
// which on x86 covers the scalar variant; this program checks that the NEON variant gives
// exactly the scalar variant's packed signs and convolution outputs on the same random inputs
// (and popcounts equal to std::popcount's), so that NEON is covered too where no aarch64 machine runs the suite.
// Exit status 0 when every case agrees bit for bit, 1 otherwise.

#include "../../engine/csrc/bitconv.cpp"

#include <cstdio>

namespace bitconv {
namespace {

int failures = 0;

void expect_equal(const at::Tensor& neon, const at::Tensor& scalar, const std::string& what) {
  const bool same = neon.sizes() == scalar.sizes() && at::equal(neon, scalar);
  std::printf("%-72s %s\n", what.c_str(), same ? "ok" : "DIFFERENT");
  failures += same ? 0 : 1;
}

// Random packed weight words with the unused high bits of the last word cleared.
at::Tensor random_weight(at::IntArrayRef sizes, int64_t in_channels, at::Generator& gen) {
  at::Tensor words = at::randint(std::numeric_limits<int64_t>::min(), std::numeric_limits<int64_t>::max(), sizes, gen,
                                 at::TensorOptions().dtype(at::kLong));
  const int64_t used = in_channels % 64;
  if (used != 0) {
    const int64_t word_axis = words.dim() - 2;
    at::Tensor last = words.select(word_axis, words.size(word_axis) - 1);
    last.bitwise_and_(static_cast<int64_t>((uint64_t{1} << used) - 1));
  }
  return words;
}

std::string describe(const char* op, int64_t c_in, int64_t c_out, std::optional<double> slope, const std::string& extra) {
  return std::string(op) + " C_in=" + std::to_string(c_in) + " C_out=" + std::to_string(c_out) + extra +
         (slope ? " slope=" + std::to_string(*slope).substr(0, 3) : " linear");
}

void check_case(int64_t c_in, int64_t c_out, at::Generator& gen) {
  const int64_t groups = (c_out + kGroup - 1) / kGroup, words = (c_in + 63) / 64;
  const at::Tensor x = at::randn({2, c_in, 3, 5, 11}, gen);
  const at::Tensor scale = at::randn({c_in}, gen), shift = 0.1 * at::randn({c_in}, gen);
  const at::Tensor multiplier = at::rand({c_out}, gen), bias = at::randn({c_out}, gen);
  const std::string sizes = " C_in=" + std::to_string(c_in);

  const at::Tensor packed = pack_signs_op({x}, scale, shift, "scalar");
  expect_equal(pack_signs_op({x}, scale, shift, "neon"), packed, "pack_signs NCDHW" + sizes);
  const at::Tensor last = x.contiguous(at::MemoryFormat::ChannelsLast3d);
  expect_equal(pack_signs_op({last}, scale, shift, "neon"), pack_signs_op({last}, scale, shift, "scalar"),
               "pack_signs channels-last" + sizes);
  const int64_t half = c_in / 2;
  const std::vector<at::Tensor> parts = {x.narrow(1, 0, half).contiguous(), x.narrow(1, half, c_in - half).contiguous()};
  expect_equal(pack_signs_op(parts, scale, shift, "neon"), packed, "pack_signs of two concatenated inputs" + sizes);

  for (const std::optional<double> slope : {std::optional<double>(), std::optional<double>(0.0), std::optional<double>(0.2)}) {
    for (const int64_t taps : {int64_t{27}, int64_t{1}}) {
      const at::Tensor weight = random_weight({groups, taps, words, kGroup}, c_in, gen);
      const std::vector<std::vector<int64_t>> strides = {{1, 1, 1}, {1, 2, 2}, {2, 2, 2}};
      for (const auto& stride : strides) {
        const std::string extra = " taps=" + std::to_string(taps) + " stride=" + std::to_string(stride[0]) +
                                  std::to_string(stride[1]) + std::to_string(stride[2]);
        expect_equal(conv3d_op(packed, weight, c_in, stride, multiplier, bias, slope, "neon"),
                     conv3d_op(packed, weight, c_in, stride, multiplier, bias, slope, "scalar"),
                     describe("conv3d", c_in, c_out, slope, extra));
      }
    }
    const at::Tensor weight = random_weight({4, groups, 12, words, kGroup}, c_in, gen);
    expect_equal(conv_transpose3d_op(packed, weight, c_in, multiplier, bias, slope, "neon"),
                 conv_transpose3d_op(packed, weight, c_in, multiplier, bias, slope, "scalar"),
                 describe("conv_transpose3d", c_in, c_out, slope, ""));
  }
}

// The peak loop's total popcount against std::popcount over the same words: a[s] XOR the
// first streams * lanes columns of w[s], for every thread and pass.
void check_peak(at::Generator& gen) {
  const at::Tensor a = random_weight({64}, 64, gen), w = random_weight({64, 64}, 64, gen);
  const int64_t lanes = resolve_variant("neon").lanes, reps = 3;
  const auto* aw = reinterpret_cast<const uint64_t*>(a.data_ptr<int64_t>());
  const auto* ww = reinterpret_cast<const uint64_t*>(w.data_ptr<int64_t>());
  for (const int64_t streams : {int64_t{1}, int64_t{2}, int64_t{4}, int64_t{8}}) {
    int64_t expected = 0;
    for (int64_t s = 0; s < 64; ++s) {
      for (int64_t j = 0; j < streams * lanes; ++j) expected += std::popcount(aw[s] ^ ww[s * 64 + j]);
    }
    expected *= reps * at::get_num_threads();
    const int64_t neon = std::get<2>(popcount_peak_op(a, w, reps, streams, "neon"));
    const bool same = neon == expected;
    std::printf("%-72s %s\n", ("popcount_peak streams=" + std::to_string(streams)).c_str(), same ? "ok" : "DIFFERENT");
    failures += same ? 0 : 1;
  }
}

}  // namespace
}  // namespace bitconv

int main() {
  using namespace bitconv;
  const std::vector<std::string> variants = supported_variants();
  if (std::find(variants.begin(), variants.end(), "neon") == variants.end()) {
    std::printf("this build has no NEON variant (variants: %s); build it for aarch64\n", c10::Join(", ", variants).c_str());
    return 1;
  }
  at::Generator gen = at::make_generator<at::CPUGeneratorImpl>(0);
  for (const auto& [c_in, c_out] : std::vector<std::pair<int64_t, int64_t>>{{16, 8}, {64, 24}, {100, 13}, {130, 16}}) {
    check_case(c_in, c_out, gen);
  }
  check_peak(gen);
  std::printf("%s: %d case(s) differ\n", failures == 0 ? "NEON matches scalar" : "FAILED", failures);
  return failures == 0 ? 0 : 1;
}
