// CPU kernels of the sparse masked-convolution backend (anytime_perception.models.sparse).
//
// Activations are channels_last: a (B, C, H, W) tensor is a (B*H*W, C) row matrix, one row per pixel. A masked conv
// computes only its active output pixels ("rows"):
//   conv_rows:  for chunks of active rows, gather their im2col rows (k*k*C_in values, zeros outside the image) into a
//               preallocated buffer, one GEMM per chunk (at::mm_out: MKL sgemm / oneDNN bf16 on AMX) into a compact
//               (N_active, C_out) matrix Y.
//   conv_rows_direct (fp32, AVX-512) and conv_rows_amx (bf16, AMX tiles, gather into an L2-sized buffer; runs of 16 active
//               pixels of a stride-1 conv load their tiles straight from the input instead): the same
//               without a GEMM call per chunk. All three can finish the active rows themselves (Finish: bias,
//               residual, ReLU, written to the output while the results are in registers or cache); the epilogue
//               then only writes skipped rows.
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
#if defined(__AMX_TILE__)
#include <sys/syscall.h>
#include <unistd.h>
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

// The finished unit output of active rows, written where the conv result is still in cache (fused epilogue):
// out[act[r]] = relu?(Y[r] + b_act (+ residual[act[r]])), in the same float arithmetic as `epilogue`.
struct Finish {
  void* out = nullptr;        // (R, C_out) rows, or nullptr: no fused finalisation
  const void* res = nullptr;  // (R, C_out) residual rows or nullptr
  const float* bact = nullptr;
  bool relu = false;
};

template <typename T>
void finish_rows(const Finish& fin, const T* Y, const int32_t* act, int64_t n, int64_t C) {
  T* out = static_cast<T*>(fin.out);
  const T* res = static_cast<const T*>(fin.res);
  const float* bact = fin.bact;
  const bool relu = fin.relu;
  at::parallel_for(0, n, 64, [&](int64_t begin, int64_t end) {
    for (int64_t r = begin; r < end; ++r) {
      const int64_t f = act[r];
      const T* src = Y + r * C;
      T* dst = out + f * C;
      const T* rr = res ? res + f * C : nullptr;
      if (rr && relu)
        for (int64_t c = 0; c < C; ++c)
          Cvt<T>::store(dst, c, std::max(Cvt<T>::load(src, c) + bact[c] + Cvt<T>::load(rr, c), 0.f));
      else if (rr)
        for (int64_t c = 0; c < C; ++c) Cvt<T>::store(dst, c, Cvt<T>::load(src, c) + bact[c] + Cvt<T>::load(rr, c));
      else if (relu)
        for (int64_t c = 0; c < C; ++c) Cvt<T>::store(dst, c, std::max(Cvt<T>::load(src, c) + bact[c], 0.f));
      else
        for (int64_t c = 0; c < C; ++c) Cvt<T>::store(dst, c, Cvt<T>::load(src, c) + bact[c]);
    }
  });
}

// Checks the optional fused-finalisation arguments: out (R, C_out) or empty (none), residual (R, C_out) or empty,
// bact fp32 (C_out,).
Finish make_finish(const at::Tensor& y, const at::Tensor& out, const at::Tensor& bact, const at::Tensor& residual,
                   bool relu) {
  Finish fin;
  if (out.numel() == 0) return fin;
  const int64_t C = y.size(1);
  TORCH_CHECK(out.dim() == 2 && out.size(1) == C && out.is_contiguous() && out.scalar_type() == y.scalar_type(),
              "fused finish: out must be contiguous (R, C_out) in y's dtype");
  TORCH_CHECK(bact.scalar_type() == at::kFloat && bact.numel() == C && bact.is_contiguous(),
              "fused finish: bact must be fp32 (C_out,)");
  if (residual.numel() > 0) {
    TORCH_CHECK(residual.is_contiguous() && residual.numel() == out.numel() &&
                residual.scalar_type() == out.scalar_type(), "fused finish: residual mismatch");
    fin.res = residual.data_ptr();
  }
  fin.out = out.data_ptr();
  fin.bact = bact.data_ptr<float>();
  fin.relu = relu;
  return fin;
}

// x: (B, H, W, C_in) contiguous; act: int32 active output rows (b*Ho*Wo + oh*Wo + ow), sorted; wt: (k*k*C_in, C_out);
// abuf: (chunk, k*k*C_in) workspace; y: (N_active, C_out) output. With a non-empty `out` every chunk's active rows
// are also finished into out (see Finish) right after its GEMM.
void conv_rows(const at::Tensor& x, const at::Tensor& act, const at::Tensor& wt, int64_t Ho, int64_t Wo, int64_t k,
               int64_t stride, int64_t pad, at::Tensor& abuf, at::Tensor& y, const at::Tensor& out,
               const at::Tensor& bact, const at::Tensor& residual, bool relu) {
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
  const Finish fin = make_finish(y, out, bact, residual, relu);
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
    auto ychunk = y.narrow(0, start, m);
    at::mm_out(ychunk, abuf.narrow(0, 0, m), wt);
    if (fin.out) {
      if (x.scalar_type() == at::kFloat)
        finish_rows<float>(fin, y.data_ptr<float>() + start * y.size(1), a + start, m, y.size(1));
      else
        finish_rows<uint16_t>(fin, reinterpret_cast<const uint16_t*>(y.data_ptr<at::BFloat16>()) + start * y.size(1),
                              a + start, m, y.size(1));
    }
  }
}


#if defined(__AVX512F__)
// fp32 implicit GEMM on AVX-512 ("indirect" convolution): no im2col buffer. For a block of 8 active output pixels the
// kernel keeps 8 x NV accumulators of 16 channels in registers and walks the k*k taps and C_in channels, reading each
// input pixel's channels straight from x through a pointer per (pixel, tap) (a zero row for taps in the padding).
// Weights are packed per block of 48 output channels as (tap, c_in, 48).
constexpr int MR = 8;

// Where the last tap group of a block also finishes its rows (Finish, columns n0.. of the block): frow = active rows
// of the block, keep = which Y rows the fill needs (nullptr: all).
struct BlockFinish {
  float* out;
  const float* res;
  const float* bact;
  const int32_t* frow;
  const uint8_t* keep;
  int64_t ldo;
  bool relu;
};

template <int NV, bool Accumulate>
inline void igemm_block(const float* const* ptr /* [MR][T] */, int64_t T, int64_t t0, int64_t t1, int64_t C,
                        const float* w /* (T, C, NV*16) */, float* y, int64_t ldy, int rows, __mmask16 last,
                        const BlockFinish* fin = nullptr) {
  if (fin) {  // the rows this block finishes: fetch their residual and output lines while the products run
    for (int r = 0; r < rows; ++r) {
      const int64_t off = static_cast<int64_t>(fin->frow[r]) * fin->ldo;
      for (int v = 0; v < NV; ++v) {
        if (fin->res) _mm_prefetch(reinterpret_cast<const char*>(fin->res + off + v * 16), _MM_HINT_T0);
        _m_prefetchw(fin->out + off + v * 16);
      }
    }
  }
  __m512 acc[MR][NV];
#pragma GCC unroll 8
  for (int r = 0; r < MR; ++r)
#pragma GCC unroll 3
    for (int v = 0; v < NV; ++v) acc[r][v] = _mm512_setzero_ps();
  // Every loop over acc runs to MR with constant indices (rows < MR tested inside): a runtime bound on acc's index
  // can make GCC keep acc in memory instead of registers (measured 2x slower for 16-32 output channels).
  if (Accumulate)
#pragma GCC unroll 8
    for (int r = 0; r < MR; ++r)
#pragma GCC unroll 3
      for (int v = 0; v < NV; ++v)
        if (r < rows)
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
  if (fin) {
#pragma GCC unroll 8
    for (int r = 0; r < MR; ++r) {
      if (r >= rows) break;
      const int64_t f = fin->frow[r];
      float* o = fin->out + f * fin->ldo;
      const float* rs = fin->res ? fin->res + f * fin->ldo : nullptr;
      const bool keep = !fin->keep || fin->keep[r];
#pragma GCC unroll 3
      for (int v = 0; v < NV; ++v) {
        const __mmask16 mk = v == NV - 1 ? last : __mmask16(0xFFFF);
        if (keep) _mm512_mask_storeu_ps(y + r * ldy + v * 16, mk, acc[r][v]);
        __m512 z = _mm512_add_ps(acc[r][v], _mm512_maskz_loadu_ps(mk, fin->bact + v * 16));
        if (rs) z = _mm512_add_ps(z, _mm512_maskz_loadu_ps(mk, rs + v * 16));
        if (fin->relu) z = _mm512_max_ps(z, _mm512_setzero_ps());
        _mm512_mask_storeu_ps(o + v * 16, mk, z);
      }
    }
    return;
  }
#pragma GCC unroll 8
  for (int r = 0; r < MR; ++r)
#pragma GCC unroll 3
    for (int v = 0; v < NV; ++v)
      if (r < rows) _mm512_mask_storeu_ps(y + r * ldy + v * 16, v == NV - 1 ? last : __mmask16(0xFFFF), acc[r][v]);
}

constexpr int64_t MIN_ROW_CHUNK = 64;         // rows sharing one pass over a weight panel, at least
constexpr int64_t MAX_ROW_CHUNK = 2048;
constexpr int64_t PANEL_BYTES = 192 * 1024;   // one (taps x C_in x 48) weight panel, kept in L2
constexpr int64_t CHUNK_INPUT_BYTES = 1 << 20;  // input rows a chunk reads, kept in L2 across its channel blocks

// x: (B, H, W, C_in) fp32; act: int32 active output rows; wp: pack_direct(weight); y: (N_active, C_out).
// Rows in chunks of 64; per chunk, per block of 48 output channels, per group of taps whose weights fit in L2, every
// block of 8 rows. With a non-empty `out` the last tap group also writes the finished rows (Finish) from registers,
// and stores Y only for the rows with keep[r] != 0 (keep empty: all rows).
void conv_rows_direct(const at::Tensor& x, const at::Tensor& act, const at::Tensor& wp, int64_t Ho, int64_t Wo,
                      int64_t k, int64_t stride, int64_t pad, at::Tensor& y, const at::Tensor& out,
                      const at::Tensor& bact, const at::Tensor& residual, bool relu, const at::Tensor& keep) {
  TORCH_CHECK(x.scalar_type() == at::kFloat && x.is_contiguous() && x.dim() == 4, "conv_rows_direct: fp32 NHWC x");
  TORCH_CHECK(y.scalar_type() == at::kFloat && y.is_contiguous() && wp.is_contiguous(), "conv_rows_direct: buffers");
  const int64_t H = x.size(1), W = x.size(2), C = x.size(3);
  const int64_t Cout = y.size(1), T = k * k, n = act.numel();
  const int64_t CoutP = (Cout + 15) / 16 * 16;  // weights are packed with C_out padded to whole vectors
  TORCH_CHECK(wp.numel() == T * C * CoutP, "conv_rows_direct: packed weights do not match");
  const int32_t* a = act.data_ptr<int32_t>();
  const float* xp = x.data_ptr<float>();
  const float* wpp = wp.data_ptr<float>();
  const Finish fin = make_finish(y, out, bact, residual, relu);
  TORCH_CHECK(keep.numel() == 0 || (keep.scalar_type() == at::kByte && keep.numel() == n && keep.is_contiguous()),
              "conv_rows_direct: keep must be uint8 (N_active,) or empty");
  const uint8_t* kp = (fin.out && keep.numel()) ? keep.data_ptr<uint8_t>() : nullptr;
  float* yp = y.data_ptr<float>();
  const int64_t hw = Ho * Wo;
  const int64_t taps_per_group = std::max<int64_t>(1, PANEL_BYTES / (C * 48 * 4));
  const int64_t nblocks = (CoutP + 47) / 48;
  // As few row chunks as keep every thread busy (each chunk streams all weights once), within [64, 2048] rows, of
  // equal size and with a number of (chunk, block) items that the threads share evenly: parallel_for hands each
  // thread one contiguous range of items, so one short chunk or one item too many leaves a thread idle.
  // With several channel blocks a thread runs all blocks of a chunk in turn: the chunk's input rows (about k image
  // rows of C_in channels per output row) should stay in L2 across them (1x1 720->720: 2048-row chunks streamed
  // 5.9 MB of input from memory once per block).
  const int64_t threads = at::get_num_threads();
  const int64_t want_chunks = std::max<int64_t>(1, (2 * threads + nblocks - 1) / nblocks);
  const int64_t max_rows =
      nblocks > 1 ? std::clamp<int64_t>(CHUNK_INPUT_BYTES / (C * k * 4), MIN_ROW_CHUNK, MAX_ROW_CHUNK) : MAX_ROW_CHUNK;
  int64_t nchunks = std::max(want_chunks, (n + max_rows - 1) / max_rows);
  nchunks = std::min(nchunks, std::max<int64_t>(1, n / MIN_ROW_CHUNK));
  while ((nchunks * nblocks) % threads != 0 && (nchunks + 1) * MIN_ROW_CHUNK <= n) ++nchunks;
  const int64_t ROW_CHUNK = ((n + nchunks - 1) / nchunks + MR - 1) / MR * MR;
  nchunks = (n + ROW_CHUNK - 1) / ROW_CHUNK;
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
          BlockFinish bf;
          const BlockFinish* pf = nullptr;
          if (fin.out && t1 == T) {
            bf = BlockFinish{static_cast<float*>(fin.out) + n0,
                             fin.res ? static_cast<const float*>(fin.res) + n0 : nullptr, fin.bact + n0,
                             a + c0 + r0, kp ? kp + c0 + r0 : nullptr, Cout, fin.relu};
            pf = &bf;
          }
          if (t0 > 0) {
            if (nr == 48) igemm_block<3, true>(pr, T, t0, t1, C, w, yb, Cout, rows, last, pf);
            else if (nr == 32) igemm_block<2, true>(pr, T, t0, t1, C, w, yb, Cout, rows, last, pf);
            else igemm_block<1, true>(pr, T, t0, t1, C, w, yb, Cout, rows, last, pf);
          } else {
            if (nr == 48) igemm_block<3, false>(pr, T, t0, t1, C, w, yb, Cout, rows, last, pf);
            else if (nr == 32) igemm_block<2, false>(pr, T, t0, t1, C, w, yb, Cout, rows, last, pf);
            else igemm_block<1, false>(pr, T, t0, t1, C, w, yb, Cout, rows, last, pf);
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

#if defined(__AVX512F__) && defined(__AVX512BF16__)
// 16 channels at a time (masked tail) of fp32 or bf16 rows, as fp32; bf16 stores round to nearest even like
// float_to_bf16.
template <typename T> struct V16;
template <> struct V16<float> {
  static inline __m512 load(const float* p, __mmask16 m) { return _mm512_maskz_loadu_ps(m, p); }
  static inline void store(float* p, __mmask16 m, __m512 v) { _mm512_mask_storeu_ps(p, m, v); }
};
template <> struct V16<uint16_t> {
  static inline __m512 load(const uint16_t* p, __mmask16 m) {
    return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(_mm256_maskz_loadu_epi16(m, p)), 16));
  }
  static inline void store(uint16_t* p, __mmask16 m, __m512 v) {
    _mm256_mask_storeu_epi16(p, m, (__m256i)_mm512_cvtneps_pbh(v));
  }
};

// The epilogue with AVX-512 vectors across channels (same arithmetic, in the same order, as the scalar version).
template <typename T, bool Dense>
void epilogue_vec(T* out, const T* Y, int64_t R, int64_t C, const int32_t* cmap, const int32_t* bandmap,
                  const int32_t* tab, int64_t ntab, int64_t nuse, const float* w, const float* bact, const float* t,
                  const float* u, const T* res, bool relu, bool skip_active) {
  at::parallel_for(0, R, 256, [&](int64_t begin, int64_t end) {
    const __m512 zero = _mm512_setzero_ps();
    for (int64_t f = begin; f < end; ++f) {
      const int32_t ci = cmap[f];
      if (ci >= 0 && skip_active) continue;
      const int32_t bi = (ci < 0 && bandmap) ? bandmap[f] : -1;
      const int32_t* nb = bi >= 0 ? tab + static_cast<int64_t>(bi) * ntab : nullptr;
      float ws = 0.f;
      if (nb)
        for (int64_t o = 0; o < nuse; ++o) ws += nb[o] >= 0 ? w[o] : 0.f;
      const T* src = ci >= 0 ? Y + (Dense ? f : static_cast<int64_t>(ci)) * C : nullptr;
      const T* rr = res ? res + f * C : nullptr;
      T* dst = out + f * C;
      for (int64_t c = 0; c < C; c += 16) {
        const __mmask16 mk = C - c >= 16 ? __mmask16(0xFFFF) : static_cast<__mmask16>((1u << (C - c)) - 1u);
        __m512 z;
        if (src) {
          z = _mm512_add_ps(V16<T>::load(src + c, mk), _mm512_maskz_loadu_ps(mk, bact + c));
        } else if (nb) {
          z = _mm512_add_ps(_mm512_maskz_loadu_ps(mk, t + c),
                            _mm512_mul_ps(_mm512_maskz_loadu_ps(mk, u + c), _mm512_set1_ps(ws)));
          for (int64_t o = 0; o < nuse; ++o) {
            const int32_t nf = nb[o];
            if (nf < 0) continue;
            const T* ys = Y + (Dense ? static_cast<int64_t>(nf) : static_cast<int64_t>(cmap[nf])) * C;
            z = _mm512_add_ps(z, _mm512_mul_ps(_mm512_set1_ps(w[o]), V16<T>::load(ys + c, mk)));
          }
        } else {
          z = _mm512_maskz_loadu_ps(mk, t + c);
        }
        if (rr) z = _mm512_add_ps(z, V16<T>::load(rr + c, mk));
        if (relu) z = _mm512_max_ps(z, zero);
        V16<T>::store(dst + c, mk, z);
      }
    }
  });
}
#endif

template <typename T, bool Dense>
void epilogue_impl(T* out, const T* Y, int64_t R, int64_t C, const int32_t* cmap, const int32_t* bandmap,
                   const int32_t* tab, int64_t ntab, int64_t nuse, const float* w, const float* bact, const float* t,
                   const float* u, const T* res, bool relu, bool skip_active) {
  at::parallel_for(0, R, 256, [&](int64_t begin, int64_t end) {
    std::vector<float> zbuf(C);
    float* z = zbuf.data();
    for (int64_t f = begin; f < end; ++f) {
      const int32_t ci = cmap[f];
      if (ci >= 0 && skip_active) continue;  // finished by the conv (fused)
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
// first nuse columns used with weights w (fp32); bact/t/u: fp32 (C,); residual: (R, C) or empty. skip_active: leave
// active rows as they are (the conv finished them).
void epilogue(at::Tensor& out, const at::Tensor& y, bool dense, const at::Tensor& cmap, const at::Tensor& bandmap,
              const at::Tensor& tab, int64_t nuse, const at::Tensor& w, const at::Tensor& bact, const at::Tensor& t,
              const at::Tensor& u, const at::Tensor& residual, bool relu, bool skip_active) {
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
#if defined(__AVX512F__) && defined(__AVX512BF16__)
#define ANYTIME_EPILOGUE_FN epilogue_vec
#else
#define ANYTIME_EPILOGUE_FN epilogue_impl
#endif
#define ANYTIME_EPILOGUE(T, PTR)                                                                                   \
  do {                                                                                                             \
    T* o = reinterpret_cast<T*>(out.PTR());                                                                        \
    const T* yy = reinterpret_cast<const T*>(y.PTR());                                                             \
    const T* rr = has_res ? reinterpret_cast<const T*>(residual.PTR()) : nullptr;                                 \
    if (dense)                                                                                                     \
      ANYTIME_EPILOGUE_FN<T, true>(o, yy, R, C, cm, bm, tb, ntab, nu, wp, bact.data_ptr<float>(), t.data_ptr<float>(),   \
                             u.data_ptr<float>(), rr, relu, skip_active);                                                       \
    else                                                                                                           \
      ANYTIME_EPILOGUE_FN<T, false>(o, yy, R, C, cm, bm, tb, ntab, nu, wp, bact.data_ptr<float>(), t.data_ptr<float>(),  \
                              u.data_ptr<float>(), rr, relu, skip_active);                                                      \
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
#undef ANYTIME_EPILOGUE_FN
}

#if defined(__AMX_TILE__) && defined(__AMX_BF16__) && defined(__AVX512F__)
// bf16 on AMX with the gather fused: active rows are gathered (im2col, K = k*k*C_in padded to 32) a few hundred at a
// time into a per-thread buffer that stays in L2, and multiplied by VNNI-packed weights with tile dot products
// (blocks of 32 rows x 32 output channels: 2 A, 2 B and 4 accumulator tiles, all 16 x 64 bytes). The fp32 sums are
// rounded to bf16 (what a bf16 GEMM returns) and the rows finished from there (Finish), so values match the
// gather + oneDNN GEMM route up to the order of the fp32 sums. No per-chunk GEMM call, no A round trip to memory.
namespace amx {

bool request_permission() {
  static const bool ok = [] {
    constexpr long ARCH_REQ_XCOMP_PERM = 0x1023, XFEATURE_XTILEDATA = 18;
    return syscall(SYS_arch_prctl, ARCH_REQ_XCOMP_PERM, XFEATURE_XTILEDATA) == 0;
  }();
  return ok;
}

struct alignas(64) TileConfig {
  uint8_t palette_id = 1;
  uint8_t start_row = 0;
  uint8_t reserved[14] = {};
  uint16_t colsb[16] = {};
  uint8_t rows[16] = {};
};

inline void configure() {
  TileConfig cfg;
  for (int t = 0; t < 8; ++t) {
    cfg.colsb[t] = 64;
    cfg.rows[t] = 16;
  }
  _tile_loadconfig(&cfg);
}

bool direct_loads = true;  // set_amx_direct: off = every row gathered (for tests and A/B runs)
constexpr int64_t MB = 32;                 // rows per tile block
constexpr int64_t CHUNK_BYTES = 192 * 1024;  // gathered rows per pass over the weights, about this many bytes

}  // namespace amx

// (K, C_out) bf16 weights (taps (ky, kx, c_in) as gathered) -> VNNI tiles: K padded to 32, C_out to 16, laid out as
// [C_out/16][K/32][16 pairs of k][16 columns][2], one contiguous 1 KiB B tile per (column block, k block).
at::Tensor pack_amx(const at::Tensor& wt) {
  TORCH_CHECK(wt.dim() == 2 && wt.scalar_type() == at::kBFloat16, "pack_amx: (K, C_out) bf16 weights");
  const int64_t K = wt.size(0), N = wt.size(1);
  const int64_t Kp = (K + 31) / 32 * 32, Np = (N + 15) / 16 * 16;
  auto w = at::constant_pad_nd(wt, {0, Np - N, 0, Kp - K});
  return w.view({Kp / 32, 16, 2, Np / 16, 16}).permute({3, 0, 1, 4, 2}).contiguous().view({Kp, Np});
}

bool amx_available() { return amx::request_permission(); }

// x: (B, H, W, C_in) bf16; act: int32 active rows; wv: pack_amx(weights) (K padded, C_out padded); y: (N_active, C_out)
// bf16 raw conv output, stored for rows with keep[r] != 0 (keep empty: all); out/bact/residual/relu: Finish (out must
// be given).
void conv_rows_amx(const at::Tensor& x, const at::Tensor& act, const at::Tensor& wv, int64_t Ho, int64_t Wo, int64_t k,
                   int64_t stride, int64_t pad, at::Tensor& y, const at::Tensor& out, const at::Tensor& bact,
                   const at::Tensor& residual, bool relu, const at::Tensor& keep) {
  TORCH_CHECK(amx::request_permission(), "conv_rows_amx: AMX is not available");
  TORCH_CHECK(x.scalar_type() == at::kBFloat16 && x.is_contiguous() && x.dim() == 4, "conv_rows_amx: bf16 NHWC x");
  TORCH_CHECK(y.scalar_type() == at::kBFloat16 && y.is_contiguous() && wv.is_contiguous() &&
                  wv.scalar_type() == at::kBFloat16, "conv_rows_amx: buffers");
  TORCH_CHECK(out.numel() > 0, "conv_rows_amx: out is required");
  Geometry g{x.size(0), x.size(1), x.size(2), x.size(3), Ho, Wo, k, stride, pad};
  const int64_t K = k * k * g.C, Kp = (K + 31) / 32 * 32;
  const int64_t Cout = y.size(1), Np = (Cout + 15) / 16 * 16;
  TORCH_CHECK(wv.size(0) == Kp && wv.size(1) == Np, "conv_rows_amx: packed weights do not match");
  const int64_t n = act.numel();
  TORCH_CHECK(y.size(0) == n, "conv_rows_amx: y rows");
  TORCH_CHECK(keep.numel() == 0 || (keep.scalar_type() == at::kByte && keep.numel() == n && keep.is_contiguous()),
              "conv_rows_amx: keep must be uint8 (N_active,) or empty");
  const Finish fin = make_finish(y, out, bact, residual, relu);
  const uint8_t* kp = keep.numel() ? keep.data_ptr<uint8_t>() : nullptr;
  const int32_t* a = act.data_ptr<int32_t>();
  const uint16_t* xp = reinterpret_cast<const uint16_t*>(x.data_ptr<at::BFloat16>());
  const uint16_t* wp = reinterpret_cast<const uint16_t*>(wv.data_ptr<at::BFloat16>());
  uint16_t* yp = reinterpret_cast<uint16_t*>(y.data_ptr<at::BFloat16>());
  uint16_t* op = static_cast<uint16_t*>(fin.out);
  const uint16_t* rp = static_cast<const uint16_t*>(fin.res);
  const float* bp = fin.bact;
  const int64_t KC = Kp / 32, NB = Np / 16;
  // rows per chunk: a multiple of 32 whose A fits the budget; at least two chunks per thread when there are rows
  const int64_t threads = at::get_num_threads();
  int64_t chunk = std::max<int64_t>(amx::MB, amx::CHUNK_BYTES / (Kp * 2) / amx::MB * amx::MB);
  const int64_t per_thread = ((n + 2 * threads - 1) / (2 * threads) + amx::MB - 1) / amx::MB * amx::MB;
  chunk = std::min(chunk, std::max<int64_t>(amx::MB, per_thread));
  const int64_t nchunks = (n + chunk - 1) / chunk;
  const bool use_direct = amx::direct_loads && g.stride == 1 && 2 * g.pad == g.k - 1 && g.Ho == g.H && g.Wo == g.W;
  at::parallel_for(0, nchunks, 1, [&](int64_t begin, int64_t end) {
    std::vector<uint16_t, std::allocator<uint16_t>> abuf_v(chunk * Kp + 32);
    uint16_t* abuf = abuf_v.data();
    alignas(64) float cbuf[2 * amx::MB * 32];
    amx::configure();
    std::vector<const uint16_t*> ptab(chunk / 16 * KC);
    std::vector<int64_t> stab(chunk / 16 * KC);
    alignas(64) uint16_t ztile[16 * 32] = {};
    for (int64_t ch = begin; ch < end; ++ch) {
      const int64_t r0 = ch * chunk, m = std::min(chunk, n - r0);
      const int64_t mp = (m + amx::MB - 1) / amx::MB * amx::MB;
      // gather (zero K padding and padding rows); a "direct" half block (16 rows of consecutive active pixels in one
      // image row, their whole window inside the row: stride-1 same-size convs) is not gathered: its A tiles are
      // loaded straight from x (row stride C), except K blocks that straddle kernel rows or hold K padding, which
      // are gathered into the block's own rows of the buffer; taps above or below the image load a zero tile.
      auto gather_row = [&](int64_t r) {
        uint16_t* dst = abuf + r * Kp;
        if (r >= m) {
          zero_bytes(dst, Kp * 2);
          return;
        }
        const int64_t f = a[r0 + r];
        const int64_t b = f / (g.Ho * g.Wo), rem = f - b * (g.Ho * g.Wo), oh = rem / g.Wo, ow = rem - oh * g.Wo;
        const int64_t iw0 = ow * g.stride - g.pad, taprow = g.k * g.C;
        for (int64_t kh = 0; kh < g.k; ++kh) {
          uint16_t* d = dst + kh * taprow;
          const int64_t ih = oh * g.stride - g.pad + kh;
          if (ih < 0 || ih >= g.H) {
            zero_bytes(d, taprow * 2);
            continue;
          }
          const uint16_t* row = xp + ((b * g.H + ih) * g.W) * g.C;
          if (g.stride == 1 && iw0 >= 0 && iw0 + g.k <= g.W) {
            copy_bytes(d, row + iw0 * g.C, taprow * 2);
            continue;
          }
          for (int64_t kw = 0; kw < g.k; ++kw) {
            const int64_t iw = iw0 + kw;
            if (iw < 0 || iw >= g.W) zero_bytes(d + kw * g.C, g.C * 2);
            else copy_bytes(d + kw * g.C, row + iw * g.C, g.C * 2);
          }
        }
        if (Kp > K) zero_bytes(dst + K, (Kp - K) * 2);
      };
      for (int64_t hh = 0; hh < mp / 16; ++hh) {
        const int64_t rs = hh * 16;
        const uint16_t** pt = ptab.data() + hh * KC;
        int64_t* st = stab.data() + hh * KC;
        int64_t b = 0, oh = 0, ow0 = 0;
        bool direct = false;
        if (use_direct && rs + 16 <= m && a[r0 + rs + 15] - a[r0 + rs] == 15) {
          const int64_t f0 = a[r0 + rs];
          b = f0 / (g.Ho * g.Wo);
          const int64_t rem = f0 - b * (g.Ho * g.Wo);
          oh = rem / g.Wo, ow0 = rem - oh * g.Wo;
          direct = ow0 - g.pad >= 0 && ow0 + 15 + g.pad < g.W;
        }
        if (!direct) {
          for (int64_t r = rs; r < rs + 16; ++r) gather_row(r);
          for (int64_t kc = 0; kc < KC; ++kc) pt[kc] = abuf + rs * Kp + kc * 32, st[kc] = Kp * 2;
          continue;
        }
        const int64_t taprow = g.k * g.C;
        for (int64_t kc = 0; kc < KC; ++kc) {
          const int64_t e0 = kc * 32, kh0 = e0 / taprow;
          if (e0 + 32 <= K && (e0 + 31) / taprow == kh0) {
            const int64_t ih = oh - g.pad + kh0;
            if (ih < 0 || ih >= g.H) {
              pt[kc] = ztile, st[kc] = 64;
            } else {
              pt[kc] = xp + ((b * g.H + ih) * g.W + ow0 - g.pad) * g.C + (e0 - kh0 * taprow), st[kc] = g.C * 2;
            }
            continue;
          }
          for (int64_t e = e0; e < e0 + 32;) {  // at most a few segments, each contiguous in x for every row
            if (e >= K) {
              for (int64_t i = 0; i < 16; ++i) zero_bytes(abuf + (rs + i) * Kp + e, (e0 + 32 - e) * 2);
              break;
            }
            const int64_t kh = e / taprow, ih = oh - g.pad + kh;
            const int64_t se = std::min(std::min(e0 + 32, (kh + 1) * taprow), K);
            for (int64_t i = 0; i < 16; ++i) {
              uint16_t* dst = abuf + (rs + i) * Kp + e;
              if (ih < 0 || ih >= g.H) zero_bytes(dst, (se - e) * 2);
              else copy_bytes(dst, xp + ((b * g.H + ih) * g.W + ow0 + i - g.pad) * g.C + (e - kh * taprow), (se - e) * 2);
            }
            e = se;
          }
          pt[kc] = abuf + rs * Kp + e0, st[kc] = Kp * 2;
        }
      }
      // tiles: per pair of 16-column blocks, every 32-row block of the chunk (a lone last column block takes two
      // row blocks at a time: four independent accumulators either way). A block's results are finished while the
      // next block's tile products run: its tiles are stored to one of two buffers and read back one block later.
      int64_t pending_rb = -1, pending_nb = 0, pending_cols = 0;
      int pending_buf = 0;
      const __m512 zero = _mm512_setzero_ps();
      auto finish_block = [&](int64_t rb, int64_t nb, int64_t ncols, const float* cb) {
        const int64_t rows = std::min<int64_t>(amx::MB, m - rb);
        const int64_t c0 = nb * 16;
        for (int64_t r = 0; r < rows; ++r) {
          const int64_t ri = r0 + rb + r;
          const int64_t f = a[ri];
          const bool keep_y = !kp || kp[ri];
          for (int64_t j = 0; j * 16 < ncols; ++j) {
            const int64_t c = c0 + j * 16;
            const int64_t left = std::min<int64_t>(16, ncols - j * 16);
            const __mmask16 mk = static_cast<__mmask16>((1u << left) - 1u);
            const __m256i yv = (__m256i)_mm512_cvtneps_pbh(_mm512_load_ps(cb + r * 32 + j * 16));
            if (keep_y) _mm256_mask_storeu_epi16(yp + ri * Cout + c, mk, yv);
            __m512 z = _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(yv), 16));
            z = _mm512_add_ps(z, _mm512_maskz_loadu_ps(mk, bp + c));
            if (rp) {
              const __m256i rv = _mm256_maskz_loadu_epi16(mk, rp + f * Cout + c);
              z = _mm512_add_ps(z, _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(rv), 16)));
            }
            if (relu) z = _mm512_max_ps(z, zero);
            _mm256_mask_storeu_epi16(op + f * Cout + c, mk, (__m256i)_mm512_cvtneps_pbh(z));
          }
        }
      };
      auto retire = [&](int64_t rb, int64_t nb, int64_t ncols, int buf) {  // finish the previous block, queue this one
        if (pending_rb >= 0) finish_block(pending_rb, pending_nb, pending_cols, cbuf + pending_buf * amx::MB * 32);
        pending_rb = rb, pending_nb = nb, pending_cols = ncols, pending_buf = buf;
      };
      int buf = 0;
      for (int64_t nb = 0; nb < NB; nb += 2) {
        const bool two = nb + 1 < NB;
        const uint16_t* b0 = wp + nb * KC * 512;
        const uint16_t* b1 = b0 + KC * 512;
        const int64_t ncols = std::min<int64_t>(two ? 32 : 16, Cout - nb * 16);
        for (int64_t rb = 0; rb < mp; rb += amx::MB) {
          const uint16_t* const* a0 = ptab.data() + rb / 16 * KC;  // per K block: A tile address and row stride
          const uint16_t* const* a1 = a0 + KC;
          const int64_t* s0 = stab.data() + rb / 16 * KC;
          const int64_t* s1 = s0 + KC;
          const bool pair_rows = !two && rb + amx::MB < mp;  // lone column block: rows rb.. and rb+32.. together
          const uint16_t* const* a2 = pair_rows ? a0 + 2 * KC : a0;
          const uint16_t* const* a3 = pair_rows ? a0 + 3 * KC : a0;
          const int64_t* s2 = pair_rows ? s0 + 2 * KC : s0;
          const int64_t* s3 = pair_rows ? s0 + 3 * KC : s0;
          // fetch the residual and output lines of the rows this block finishes while its tile products run
          for (int64_t r = rb, re = std::min(m, rb + (pair_rows ? 2 : 1) * amx::MB); r < re; ++r) {
            const int64_t off = static_cast<int64_t>(a[r0 + r]) * Cout + nb * 16;
            for (int64_t c = 0; c < ncols; c += 32) {
              if (rp) _mm_prefetch(reinterpret_cast<const char*>(rp + off + c), _MM_HINT_T0);
              _m_prefetchw(op + off + c);
            }
          }
          _tile_zero(4);
          _tile_zero(5);
          _tile_zero(6);
          _tile_zero(7);
          for (int64_t kc = 0; kc < KC; ++kc) {
            _tile_loadd(2, b0 + kc * 512, 64);
            _tile_loadd(0, a0[kc], s0[kc]);
            _tile_dpbf16ps(4, 0, 2);
            _tile_loadd(1, a1[kc], s1[kc]);
            _tile_dpbf16ps(6, 1, 2);
            if (two) {
              _tile_loadd(3, b1 + kc * 512, 64);
              _tile_dpbf16ps(5, 0, 3);
              _tile_dpbf16ps(7, 1, 3);
            } else if (pair_rows) {
              _tile_loadd(0, a2[kc], s2[kc]);
              _tile_dpbf16ps(5, 0, 2);
              _tile_loadd(1, a3[kc], s3[kc]);
              _tile_dpbf16ps(7, 1, 2);
            }
          }
          float* cb = cbuf + buf * amx::MB * 32;
          _tile_stored(4, cb, 128);
          _tile_stored(6, cb + 16 * 32, 128);
          if (two) {
            _tile_stored(5, cb + 16, 128);
            _tile_stored(7, cb + 16 * 32 + 16, 128);
          }
          retire(rb, nb, ncols, buf);
          buf ^= 1;
          if (pair_rows) {
            float* cb2 = cbuf + buf * amx::MB * 32;
            _tile_stored(5, cb2, 128);
            _tile_stored(7, cb2 + 16 * 32, 128);
            rb += amx::MB;
            retire(rb, nb, ncols, buf);
            buf ^= 1;
          }
        }
      }
      if (pending_rb >= 0) finish_block(pending_rb, pending_nb, pending_cols, cbuf + pending_buf * amx::MB * 32);
    }
    _tile_release();
  });
}
#endif

}  // namespace

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.doc() = "anytime_perception sparse masked convolution: CPU gather-GEMM and fused scatter epilogue";
  m.def("conv_rows", &conv_rows, "GEMM of the active rows' im2col, gathered chunk by chunk (optionally finished)");
#if defined(__AVX512F__)
  m.def("conv_rows_direct", &conv_rows_direct, "fp32 AVX-512 implicit GEMM of the active rows (no im2col buffer)");
  m.def("pack_direct", &pack_direct, "weights packed for conv_rows_direct");
#endif
#if defined(__AMX_TILE__) && defined(__AMX_BF16__) && defined(__AVX512F__)
  m.def("amx_available", &amx_available, "whether this process may use AMX tiles (asks the kernel once)");
  m.def("pack_amx", &pack_amx, "bf16 (K, C_out) weights packed as AMX VNNI tiles for conv_rows_amx");
  m.def("set_amx_direct", [](bool on) { amx::direct_loads = on; }, "conv_rows_amx: load runs of 16 active pixels straight from x (default on)");
  m.def("conv_rows_amx", &conv_rows_amx, "bf16 AMX conv of the active rows, gather fused, rows finished");
#endif
  m.def("epilogue", &epilogue, "finished unit output: active rows, RBF fill band, BN shift, residual, ReLU");
  m.attr("ABI") = 2;
}
