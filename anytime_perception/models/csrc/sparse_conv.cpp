// CPU kernels of the sparse masked-convolution backend (anytime_perception.models.sparse).
//
// Activations are channels_last: a (B, C, H, W) tensor is a (B*H*W, C) row matrix, one row per pixel. A masked conv
// computes only its active output pixels ("rows"):
//   conv_rows:  for chunks of active rows, gather their im2col rows (k*k*C_in values, zeros outside the image) into a
//               preallocated buffer, one GEMM per chunk (at::mm_out: MKL sgemm / oneDNN bf16 on AMX) into a compact
//               (N_active, C_out) matrix Y.
//   epilogue:   one pass over every output row that writes the finished unit output
//                 active:   z = Y[row] + b_act                     (conv bias and eval-BN folded into W and b_act)
//                 band:     z = sum_o w_o Y[nbr_o] + u * sum_o w_o + t   (RBF fill from active neighbours; u = b_act - t)
//                 elsewhere z = t                                  (the fill is zero there; t = BN shift)
//               then z += residual, z = max(z, 0) as asked. Y is either the compact matrix (rows found through
//               cmap) or a dense conv output (rows = pixel index: the per-layer dense fallback).
// Nothing here allocates per call except what ATen's GEMM does internally. Python builds the index tables once per
// exit and resolution (anytime_perception/models/sparse/tables.py).
#include <torch/extension.h>
#include <ATen/Parallel.h>

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <vector>
#if defined(__AVX512F__)
#include <immintrin.h>
#endif

namespace {

inline float bf16_to_float(uint16_t v) {
  uint32_t bits = static_cast<uint32_t>(v) << 16;
  float f;
  std::memcpy(&f, &bits, sizeof(f));
  return f;
}

inline uint16_t float_to_bf16(float f) {  // round to nearest even (finite values; NaN/Inf are not produced here)
  uint32_t bits;
  std::memcpy(&bits, &f, sizeof(bits));
  bits += 0x7FFFu + ((bits >> 16) & 1u);
  return static_cast<uint16_t>(bits >> 16);
}

template <typename T> struct Cvt;
template <> struct Cvt<float> {
  static inline float load(const float* p, int64_t i) { return p[i]; }
  static inline void store(float* p, int64_t i, float v) { p[i] = v; }
};
template <> struct Cvt<uint16_t> {
  static inline float load(const uint16_t* p, int64_t i) { return bf16_to_float(p[i]); }
  static inline void store(uint16_t* p, int64_t i, float v) { p[i] = float_to_bf16(v); }
};

// Copies of a few hundred bytes per tap dominate the gather; a libc memcpy call per tap costs more than the copy.
inline void copy_bytes(void* dst, const void* src, int64_t n) {
#if defined(__AVX512F__)
  auto* d = static_cast<char*>(dst);
  const auto* s = static_cast<const char*>(src);
  int64_t i = 0;
  for (; i + 64 <= n; i += 64) _mm512_storeu_si512(d + i, _mm512_loadu_si512(s + i));
  if (i < n) {
    const __mmask64 tail = _cvtu64_mask64((~0ULL) >> (64 - (n - i)));
    _mm512_mask_storeu_epi8(d + i, tail, _mm512_maskz_loadu_epi8(tail, s + i));
  }
#else
  std::memcpy(dst, src, n);
#endif
}

inline void zero_bytes(void* dst, int64_t n) {
#if defined(__AVX512F__)
  auto* d = static_cast<char*>(dst);
  int64_t i = 0;
  for (; i + 64 <= n; i += 64) _mm512_storeu_si512(d + i, _mm512_setzero_si512());
  if (i < n) _mm512_mask_storeu_epi8(d + i, _cvtu64_mask64((~0ULL) >> (64 - (n - i))), _mm512_setzero_si512());
#else
  std::memset(dst, 0, n);
#endif
}

struct Geometry {
  int64_t B, H, W, C;      // input (channels_last)
  int64_t Ho, Wo;          // output
  int64_t k, stride, pad;  // square kernel
};

template <typename T>
void gather_rows(const T* x, const Geometry& g, const int32_t* act, int64_t n, T* A) {
  const int64_t K = g.k * g.k * g.C;
  const int64_t hw = g.Ho * g.Wo;
  const int64_t taprow = g.k * g.C;
  at::parallel_for(0, n, 16, [&](int64_t begin, int64_t end) {
    for (int64_t r = begin; r < end; ++r) {
      const int64_t f = act[r];
      const int64_t b = f / hw;
      const int64_t rem = f - b * hw;
      const int64_t oh = rem / g.Wo;
      const int64_t ow = rem - oh * g.Wo;
      T* dst = A + r * K;
      const int64_t iw0 = ow * g.stride - g.pad;
      for (int64_t kh = 0; kh < g.k; ++kh) {
        T* d = dst + kh * taprow;
        const int64_t ih = oh * g.stride - g.pad + kh;
        if (ih < 0 || ih >= g.H) {
          zero_bytes(d, taprow * sizeof(T));
          continue;
        }
        const T* row = x + ((b * g.H + ih) * g.W) * g.C;
        if (g.stride == 1 && iw0 >= 0 && iw0 + g.k <= g.W) {  // the k taps of a row are adjacent pixels
          copy_bytes(d, row + iw0 * g.C, taprow * sizeof(T));
          continue;
        }
        for (int64_t kw = 0; kw < g.k; ++kw) {
          const int64_t iw = iw0 + kw;
          if (iw < 0 || iw >= g.W)
            zero_bytes(d + kw * g.C, g.C * sizeof(T));
          else
            copy_bytes(d + kw * g.C, row + iw * g.C, g.C * sizeof(T));
        }
      }
    }
  });
}

// x: (B, H, W, C_in) contiguous; act: int32 active output rows (b*Ho*Wo + oh*Wo + ow), sorted; wt: (k*k*C_in, C_out);
// abuf: (chunk, k*k*C_in) workspace; y: (N_active, C_out) output.
void conv_rows(const at::Tensor& x, const at::Tensor& act, const at::Tensor& wt, int64_t Ho, int64_t Wo, int64_t k,
               int64_t stride, int64_t pad, at::Tensor& abuf, at::Tensor& y) {
  TORCH_CHECK(x.dim() == 4 && x.is_contiguous(), "conv_rows: x must be a contiguous (B, H, W, C) tensor");
  TORCH_CHECK(act.scalar_type() == at::kInt && act.is_contiguous(), "conv_rows: act must be contiguous int32");
  TORCH_CHECK(x.scalar_type() == wt.scalar_type() && x.scalar_type() == abuf.scalar_type() &&
                  x.scalar_type() == y.scalar_type(), "conv_rows: dtypes differ");
  TORCH_CHECK(abuf.is_contiguous() && y.is_contiguous(), "conv_rows: buffers must be contiguous");
  Geometry g{x.size(0), x.size(1), x.size(2), x.size(3), Ho, Wo, k, stride, pad};
  const int64_t K = k * k * g.C;
  TORCH_CHECK(wt.size(0) == K && abuf.size(1) == K, "conv_rows: K mismatch");
  const int64_t n = act.size(0);
  const int64_t chunk = abuf.size(0);
  const int32_t* a = act.data_ptr<int32_t>();
  for (int64_t start = 0; start < n; start += chunk) {
    const int64_t m = std::min(chunk, n - start);
    if (x.scalar_type() == at::kFloat) {
      gather_rows<float>(x.data_ptr<float>(), g, a + start, m, abuf.data_ptr<float>());
    } else if (x.scalar_type() == at::kBFloat16) {
      gather_rows<uint16_t>(reinterpret_cast<const uint16_t*>(x.data_ptr<at::BFloat16>()), g, a + start, m,
                            reinterpret_cast<uint16_t*>(abuf.data_ptr<at::BFloat16>()));
    } else {
      TORCH_CHECK(false, "conv_rows: float32 or bfloat16 only");
    }
    auto out = y.narrow(0, start, m);
    at::mm_out(out, abuf.narrow(0, 0, m), wt);
  }
}


#if defined(__AVX512F__)
// fp32 implicit GEMM on AVX-512 ("indirect" convolution): no im2col buffer. For a block of 8 active output pixels the
// kernel keeps 8 x NV accumulators of 16 channels in registers and walks the k*k taps and C_in channels, reading each
// input pixel's channels straight from x through a pointer per (pixel, tap) (a zero row for taps in the padding).
// Weights are packed per block of 48 output channels as (tap, c_in, 48).
constexpr int MR = 8;

template <int NV, bool Accumulate>
inline void igemm_block(const float* const* ptr /* [MR][T] */, int64_t T, int64_t t0, int64_t t1, int64_t C,
                        const float* w /* (T, C, NV*16) */, float* y, int64_t ldy, int rows, __mmask16 last) {
  __m512 acc[MR][NV];
#pragma GCC unroll 8
  for (int r = 0; r < MR; ++r)
#pragma GCC unroll 3
    for (int v = 0; v < NV; ++v) acc[r][v] = _mm512_setzero_ps();
  if (Accumulate)
    for (int r = 0; r < rows; ++r)
#pragma GCC unroll 3
      for (int v = 0; v < NV; ++v)
        acc[r][v] = _mm512_maskz_loadu_ps(v == NV - 1 ? last : __mmask16(0xFFFF), y + r * ldy + v * 16);
  for (int64_t t = t0; t < t1; ++t) {
    const float* p[MR];
#pragma GCC unroll 8
    for (int r = 0; r < MR; ++r) p[r] = ptr[r * T + t];
    const float* wt = w + t * C * NV * 16;
    for (int64_t c = 0; c < C; ++c) {
      __m512 wv[NV];
#pragma GCC unroll 3
      for (int v = 0; v < NV; ++v) wv[v] = _mm512_loadu_ps(wt + (c * NV + v) * 16);
#pragma GCC unroll 8
      for (int r = 0; r < MR; ++r) {
        const __m512 a = _mm512_set1_ps(p[r][c]);
#pragma GCC unroll 3
        for (int v = 0; v < NV; ++v) acc[r][v] = _mm512_fmadd_ps(a, wv[v], acc[r][v]);
      }
    }
  }
  for (int r = 0; r < rows; ++r)
#pragma GCC unroll 3
    for (int v = 0; v < NV; ++v)
      _mm512_mask_storeu_ps(y + r * ldy + v * 16, v == NV - 1 ? last : __mmask16(0xFFFF), acc[r][v]);
}

constexpr int64_t MIN_ROW_CHUNK = 64;         // rows sharing one pass over a weight panel, at least
constexpr int64_t MAX_ROW_CHUNK = 2048;
constexpr int64_t PANEL_BYTES = 192 * 1024;   // one (taps x C_in x 48) weight panel, kept in L2

// x: (B, H, W, C_in) fp32; act: int32 active output rows; wp: pack_direct(weight); y: (N_active, C_out), C_out a
// multiple of 16. Rows in chunks of 64; per chunk, per block of 48 output channels, per group of taps whose weights
// fit in L2, every block of 8 rows.
void conv_rows_direct(const at::Tensor& x, const at::Tensor& act, const at::Tensor& wp, int64_t Ho, int64_t Wo,
                      int64_t k, int64_t stride, int64_t pad, at::Tensor& y) {
  TORCH_CHECK(x.scalar_type() == at::kFloat && x.is_contiguous() && x.dim() == 4, "conv_rows_direct: fp32 NHWC x");
  TORCH_CHECK(y.scalar_type() == at::kFloat && y.is_contiguous() && wp.is_contiguous(), "conv_rows_direct: buffers");
  const int64_t H = x.size(1), W = x.size(2), C = x.size(3);
  const int64_t Cout = y.size(1), T = k * k, n = act.numel();
  const int64_t CoutP = (Cout + 15) / 16 * 16;  // weights are packed with C_out padded to whole vectors
  TORCH_CHECK(wp.numel() == T * C * CoutP, "conv_rows_direct: packed weights do not match");
  const int32_t* a = act.data_ptr<int32_t>();
  const float* xp = x.data_ptr<float>();
  const float* wpp = wp.data_ptr<float>();
  float* yp = y.data_ptr<float>();
  const int64_t hw = Ho * Wo;
  const int64_t taps_per_group = std::max<int64_t>(1, PANEL_BYTES / (C * 48 * 4));
  const int64_t nblocks = (CoutP + 47) / 48;
  // As few row chunks as keep every thread busy (each chunk streams all weights once), within [64, 2048] rows.
  const int64_t threads = at::get_num_threads();
  const int64_t want_chunks = std::max<int64_t>(1, (2 * threads + nblocks - 1) / nblocks);
  const int64_t ROW_CHUNK =
      (std::clamp<int64_t>((n + want_chunks - 1) / want_chunks, MIN_ROW_CHUNK, MAX_ROW_CHUNK) + MR - 1) / MR * MR;
  const int64_t nchunks = (n + ROW_CHUNK - 1) / ROW_CHUNK;
  // work items: (row chunk, block of 48 output channels), so that small layers still split across threads
  at::parallel_for(0, nchunks * nblocks, 1, [&](int64_t begin, int64_t end) {
    std::vector<float> zeros(C, 0.f);
    std::vector<const float*> ptr(ROW_CHUNK * T);
    int64_t have = -1;
    for (int64_t item = begin; item < end; ++item) {
      const int64_t chunk = item / nblocks, nb = item - chunk * nblocks;
      const int64_t c0 = chunk * ROW_CHUNK;
      const int64_t crow = std::min<int64_t>(ROW_CHUNK, n - c0);
      if (chunk != have) {
        have = chunk;
        const int64_t padded = (crow + MR - 1) / MR * MR;
        for (int64_t r = 0; r < padded; ++r) {
          if (r >= crow) {
            for (int64_t t = 0; t < T; ++t) ptr[r * T + t] = zeros.data();
            continue;
          }
          const int64_t f = a[c0 + r];
          const int64_t b = f / hw, rem = f - b * hw, oh = rem / Wo, ow = rem - (rem / Wo) * Wo;
          for (int64_t kh = 0; kh < k; ++kh) {
            const int64_t ih = oh * stride - pad + kh;
            for (int64_t kw = 0; kw < k; ++kw) {
              const int64_t iw = ow * stride - pad + kw;
              ptr[r * T + kh * k + kw] = (ih < 0 || ih >= H || iw < 0 || iw >= W)
                                             ? zeros.data() : xp + ((b * H + ih) * W + iw) * C;
            }
          }
        }
      }
      const int64_t n0 = nb * 48;
      const int64_t nr = std::min<int64_t>(48, CoutP - n0);
      const int64_t tail = std::min<int64_t>(16, (Cout - n0) - (nr - 16));  // valid columns of the last vector
      const __mmask16 last = static_cast<__mmask16>((1u << tail) - 1u);
      const float* w = wpp + T * C * n0;  // blocks before this one are 48 wide
      for (int64_t t0 = 0; t0 < T; t0 += taps_per_group) {
        const int64_t t1 = std::min(T, t0 + taps_per_group);
        for (int64_t r0 = 0; r0 < crow; r0 += MR) {
          const int rows = static_cast<int>(std::min<int64_t>(MR, crow - r0));
          float* yb = yp + (c0 + r0) * Cout + n0;
          const float* const* pr = ptr.data() + r0 * T;
          if (t0 > 0) {
            if (nr == 48) igemm_block<3, true>(pr, T, t0, t1, C, w, yb, Cout, rows, last);
            else if (nr == 32) igemm_block<2, true>(pr, T, t0, t1, C, w, yb, Cout, rows, last);
            else igemm_block<1, true>(pr, T, t0, t1, C, w, yb, Cout, rows, last);
          } else {
            if (nr == 48) igemm_block<3, false>(pr, T, t0, t1, C, w, yb, Cout, rows, last);
            else if (nr == 32) igemm_block<2, false>(pr, T, t0, t1, C, w, yb, Cout, rows, last);
            else igemm_block<1, false>(pr, T, t0, t1, C, w, yb, Cout, rows, last);
          }
        }
      }
    }
  });
}

// (C_out, C_in, k, k) fp32 -> C_out zero-padded to whole vectors of 16, blocks of 48 output channels, each
// (tap, c_in, 48) (the last block 16 or 32 wide).
at::Tensor pack_direct(const at::Tensor& weight) {
  const int64_t Cout = weight.size(0), C = weight.size(1), T = weight.size(2) * weight.size(3);
  const int64_t CoutP = (Cout + 15) / 16 * 16;
  auto wt = weight.to(at::kFloat).permute({2, 3, 1, 0}).reshape({T, C, Cout});  // (tap, c_in, c_out)
  if (CoutP != Cout) wt = at::constant_pad_nd(wt, {0, CoutP - Cout});
  wt = wt.contiguous();
  std::vector<at::Tensor> blocks;
  for (int64_t n0 = 0; n0 < CoutP; n0 += 48) {
    const int64_t nr = std::min<int64_t>(48, CoutP - n0);
    blocks.push_back(wt.narrow(2, n0, nr).contiguous().reshape({-1}));
  }
  return at::cat(blocks);
}
#endif

template <typename T, bool Dense>
void epilogue_impl(T* out, const T* Y, int64_t R, int64_t C, const int32_t* cmap, const int32_t* bandmap,
                   const int32_t* tab, int64_t ntab, int64_t nuse, const float* w, const float* bact, const float* t,
                   const float* u, const T* res, bool relu) {
  at::parallel_for(0, R, 256, [&](int64_t begin, int64_t end) {
    std::vector<float> zbuf(C);
    float* z = zbuf.data();
    for (int64_t f = begin; f < end; ++f) {
      const int32_t ci = cmap[f];
      if (ci >= 0) {
        const T* src = Y + (Dense ? f : static_cast<int64_t>(ci)) * C;
        for (int64_t c = 0; c < C; ++c) z[c] = Cvt<T>::load(src, c) + bact[c];
      } else {
        const int32_t bi = bandmap ? bandmap[f] : -1;
        if (bi >= 0) {
          const int32_t* nb = tab + static_cast<int64_t>(bi) * ntab;
          float ws = 0.f;
          for (int64_t o = 0; o < nuse; ++o) ws += nb[o] >= 0 ? w[o] : 0.f;
          for (int64_t c = 0; c < C; ++c) z[c] = t[c] + u[c] * ws;
          for (int64_t o = 0; o < nuse; ++o) {
            const int32_t nf = nb[o];
            if (nf < 0) continue;
            const float wo = w[o];
            const T* src = Y + (Dense ? static_cast<int64_t>(nf) : static_cast<int64_t>(cmap[nf])) * C;
            for (int64_t c = 0; c < C; ++c) z[c] += wo * Cvt<T>::load(src, c);
          }
        } else {
          for (int64_t c = 0; c < C; ++c) z[c] = t[c];
        }
      }
      T* dst = out + f * C;
      if (res) {
        const T* r = res + f * C;
        if (relu)
          for (int64_t c = 0; c < C; ++c) Cvt<T>::store(dst, c, std::max(z[c] + Cvt<T>::load(r, c), 0.f));
        else
          for (int64_t c = 0; c < C; ++c) Cvt<T>::store(dst, c, z[c] + Cvt<T>::load(r, c));
      } else {
        if (relu)
          for (int64_t c = 0; c < C; ++c) Cvt<T>::store(dst, c, std::max(z[c], 0.f));
        else
          for (int64_t c = 0; c < C; ++c) Cvt<T>::store(dst, c, z[c]);
      }
    }
  });
}

// out: (R, C) output rows; y: compact (N, C) or dense (R, C) conv output without bias; cmap: (R,) int32 compact index
// or -1; bandmap: (R,) int32 band index or -1 (or empty); tab: (N_band, ntab) int32 neighbour pixel index or -1, the
// first nuse columns used with weights w (fp32); bact/t/u: fp32 (C,); residual: (R, C) or empty.
void epilogue(at::Tensor& out, const at::Tensor& y, bool dense, const at::Tensor& cmap, const at::Tensor& bandmap,
              const at::Tensor& tab, int64_t nuse, const at::Tensor& w, const at::Tensor& bact, const at::Tensor& t,
              const at::Tensor& u, const at::Tensor& residual, bool relu) {
  TORCH_CHECK(out.dim() == 2 && out.is_contiguous() && y.is_contiguous(), "epilogue: contiguous 2-d out and y");
  const int64_t R = out.size(0), C = out.size(1);
  TORCH_CHECK(y.size(1) == C && cmap.numel() == R, "epilogue: shape mismatch");
  const bool has_band = bandmap.numel() > 0 && tab.size(0) > 0;
  TORCH_CHECK(!has_band || (bandmap.numel() == R && tab.dim() == 2 && tab.size(1) >= nuse && w.numel() >= nuse),
              "epilogue: band table mismatch");
  const bool has_res = residual.numel() > 0;
  TORCH_CHECK(!has_res || (residual.is_contiguous() && residual.numel() == R * C &&
                           residual.scalar_type() == out.scalar_type()), "epilogue: residual mismatch");
  for (const auto* p : {&bact, &t, &u})
    TORCH_CHECK(p->scalar_type() == at::kFloat && p->numel() == C && p->is_contiguous(), "epilogue: fp32 (C,) vectors");
  const int32_t* cm = cmap.data_ptr<int32_t>();
  const int32_t* bm = has_band ? bandmap.data_ptr<int32_t>() : nullptr;
  const int32_t* tb = has_band ? tab.data_ptr<int32_t>() : nullptr;
  const int64_t ntab = has_band ? tab.size(1) : 0;
  const float* wp = has_band ? w.data_ptr<float>() : nullptr;
  const int64_t nu = has_band ? nuse : 0;
#define ANYTIME_EPILOGUE(T, PTR)                                                                                   \
  do {                                                                                                             \
    T* o = reinterpret_cast<T*>(out.PTR());                                                                        \
    const T* yy = reinterpret_cast<const T*>(y.PTR());                                                             \
    const T* rr = has_res ? reinterpret_cast<const T*>(residual.PTR()) : nullptr;                                 \
    if (dense)                                                                                                     \
      epilogue_impl<T, true>(o, yy, R, C, cm, bm, tb, ntab, nu, wp, bact.data_ptr<float>(), t.data_ptr<float>(),   \
                             u.data_ptr<float>(), rr, relu);                                                       \
    else                                                                                                           \
      epilogue_impl<T, false>(o, yy, R, C, cm, bm, tb, ntab, nu, wp, bact.data_ptr<float>(), t.data_ptr<float>(),  \
                              u.data_ptr<float>(), rr, relu);                                                      \
  } while (0)
  TORCH_CHECK(out.scalar_type() == y.scalar_type(), "epilogue: dtypes differ");
  if (out.scalar_type() == at::kFloat) {
    ANYTIME_EPILOGUE(float, data_ptr<float>);
  } else if (out.scalar_type() == at::kBFloat16) {
    ANYTIME_EPILOGUE(uint16_t, data_ptr<at::BFloat16>);
  } else {
    TORCH_CHECK(false, "epilogue: float32 or bfloat16 only");
  }
#undef ANYTIME_EPILOGUE
}

}  // namespace

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.doc() = "anytime_perception sparse masked convolution: CPU gather-GEMM and fused scatter epilogue";
  m.def("conv_rows", &conv_rows, "GEMM of the active rows' im2col, gathered chunk by chunk");
#if defined(__AVX512F__)
  m.def("conv_rows_direct", &conv_rows_direct, "fp32 AVX-512 implicit GEMM of the active rows (no im2col buffer)");
  m.def("pack_direct", &pack_direct, "weights packed for conv_rows_direct");
#endif
  m.def("epilogue", &epilogue, "finished unit output: active rows, RBF fill band, BN shift, residual, ReLU");
  m.attr("ABI") = 1;
}
