"""One decode step of any nanochat in a few fused Triton kernels (the GPU's fast path; gpt/fast.py runs it).

Why. At batch 1 a d20 step as the model's forward runs it is ~540 kernels, most of them tiny: norms, rotary, the
cache write, the residual adds, the softcap and the sampling tail each launch their own. The weights are read once
per step whatever we do, so the step's time is (weight bytes / bandwidth) plus everything else; this module makes
"everything else" small by giving each layer five kernels, each reading its weights once:

    1. qkv   = W_qkv · norm(x)                         (the norm's 1/rms folded in after the product)
    2. attn  : rotary, QK norm and scale of q and the new k, the value embedding's gated add to v, the new k/v
               written to the cache, then attention of each query head over its row's keys (its window's)
    3. x    += W_o · y
    4. h     = relu(W_fc · norm(x))²
    5. x    += W_proj · h   (the backout kept, the next layer's λr·x + λ0·x0 applied in place)

plus one kernel for the embedding (norm, smear, the first mix), one for the head (backout, final norm, lm_head,
softcap) and the chat's sampling: the top 64 of each 1,024 logits, merged 512 at a time down to the last 64 (one
merge for a 65,536-token vocabulary), then temperature, top-k, top-p and the seeded Gumbel noise of gpt/sampling.py:
5·n_layer + 5 kernels for a d20. Every member's differences are read from the model (its
`features`, `window_sizes`, `backout_layer`, `has_value_embedding`), never from a version name.

What it is checked against (tests/test_fused_decode.py, on a GPU, or anywhere with TRITON_INTERPRET=1): the model's
own forward through the same cache, for both architectures, float32 and bfloat16, batch 1 and batched; seeded
sampling against gpt/sampling.py. Each row's numbers do not depend on the other rows: every matrix product runs in
tiles of a fixed BLOCK_B rows, the same code whatever the batch.

Numerics: the residual stream, q/k/v and the logits stay in float32 between kernels (the model's forward rounds
them to its dtype after each op); products read the weights in the model's dtype and accumulate in float32.
"""
from __future__ import annotations

import os

import torch

from gpt.nanochat import GPT
from gpt.kv_cache import RowKVCache
from gpt.sampling import sample

try:  # Triton ships with PyTorch's CUDA build; a CPU install has none, and then nothing here is available
    import triton
    import triton.language as tl
except ImportError:  # pragma: no cover - depends on the install
    triton = None

BLOCK_B = 16  # rows per matrix-product tile (tl.dot's smallest M): a row's result never depends on the others
CANDIDATES = 64  # the sampling candidates: every row with 0 < top_k <= 64 (gpt/fast.py's TOPK_BUCKET is this)
CHUNK = 1024  # logits per program in the first sampling kernel (its 64 largest kept)
ATTN_SPLIT = 8  # programs sharing one (row, kv head)'s keys
ATTN_BLOCK_T = 32  # keys per step of each
GROUP = 512  # candidates per program in the next levels (a sort of 512 keys is ~10x cheaper than one of 4096)


def available(device: torch.device | str) -> bool:
    """Whether the fused step can run on `device` (a CUDA device with Triton, or Triton's CPU interpreter)."""
    if triton is None:
        return False
    return torch.device(device).type == "cuda" or os.environ.get("TRITON_INTERPRET") == "1"


if triton is not None:
    @triton.jit
    def _tanh(z):
        return 1.0 - 2.0 / (tl.exp(2.0 * z) + 1.0)  # exact limits: exp overflow gives 1, underflow -1

    @triton.jit
    def _embed_kernel(tok_ptr, pos_ptr, wte_ptr, prev_ptr, x_ptr, x0_ptr, smear_w_ptr, C, eps, smear_lam, lam_r,
                      lam_0, SMEAR: tl.constexpr, SMEAR_CH: tl.constexpr, MIX: tl.constexpr, BLOCK_C: tl.constexpr):
        """Row b: x0 = norm(wte[token]) (+ the smear of the carried embedding), x = λr[0]·x0 + λ0[0]·x0."""
        b = tl.program_id(0)
        offs = tl.arange(0, BLOCK_C)
        m = offs < C
        t = tl.load(tok_ptr + b)
        e = tl.load(wte_ptr + t * C + offs, mask=m, other=0.0).to(tl.float32)
        xn = e * tl.rsqrt(tl.sum(e * e, 0) / C + eps)
        if SMEAR:
            p = tl.load(pos_ptr + b)
            before = tl.load(prev_ptr + b * C + offs, mask=m, other=0.0).to(tl.float32)
            before = tl.where(p == 0, 0.0, before)  # a row at its start has no token before
            tl.store(prev_ptr + b * C + offs, xn.to(prev_ptr.dtype.element_ty), mask=m)  # carried to the next step
            w = tl.load(smear_w_ptr + offs, mask=offs < SMEAR_CH, other=0.0).to(tl.float32)
            xn = xn + smear_lam * tl.sigmoid(tl.sum(xn * w, 0)) * before
        tl.store(x0_ptr + b * C + offs, xn, mask=m)
        if MIX:
            xn = lam_r * xn + lam_0 * xn
        tl.store(x_ptr + b * C + offs, xn, mask=m)

    @triton.jit
    def _matvec_kernel(x_ptr, xb_ptr, w_ptr, out_ptr, keep_ptr, x0_ptr, rms_ptr, part_ptr, sq_ptr, tick_ptr, B, N, K,
                       K_SPLIT, eps, lam_b, lam_r, lam_0, cap, NORM: tl.constexpr, BACKOUT: tl.constexpr,
                       ACT: tl.constexpr, RESID: tl.constexpr, KEEP: tl.constexpr, MIX: tl.constexpr,
                       SOFTCAP: tl.constexpr, SAVE_RMS: tl.constexpr, SPLIT: tl.constexpr, BLOCK_B: tl.constexpr,
                       BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr):
        """out[b, n] = epilogue(Σ_k prologue(x)[b, k] · W[n, k]) for a tile of BLOCK_B rows × BLOCK_N outputs.

        prologue: x − λb·xb (BACKOUT), its 1/rms over the whole row applied after the product (NORM). epilogue:
        relu² (ACT), softcap (SOFTCAP), + out (RESID: in place), kept in keep (KEEP), then λr·out + λ0·x0 (MIX: the
        next block's mix).

        Split K: with SPLIT > 1, program s of a tile sums only k in [s·K_SPLIT, (s+1)·K_SPLIT) (more programs than
        tiles: every SM streams weights even where a matrix has few rows) and writes its partial sums; the last of
        the tile's programs to finish (a ticket counter) adds the SPLIT partials in order s = 0, 1, ... and runs the
        epilogue. The order is fixed, so the result is the same bits on every run, whichever program finishes last."""
        pid_n = tl.program_id(0)
        pid_b = tl.program_id(1)
        pid_s = tl.program_id(2)
        rb = pid_b * BLOCK_B + tl.arange(0, BLOCK_B)
        rn = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
        rk = tl.arange(0, BLOCK_K)
        acc = tl.zeros((BLOCK_B, BLOCK_N), dtype=tl.float32)
        sumsq = tl.zeros((BLOCK_B,), dtype=tl.float32)
        k_lo = pid_s * K_SPLIT
        k_hi = tl.minimum(k_lo + K_SPLIT, K)
        for k0 in range(k_lo, k_hi, BLOCK_K):
            kk = k0 + rk
            xm = (rb[:, None] < B) & (kk[None, :] < k_hi)
            xv = tl.load(x_ptr + rb[:, None] * K + kk[None, :], mask=xm, other=0.0).to(tl.float32)
            if BACKOUT:
                xv = xv - lam_b * tl.load(xb_ptr + rb[:, None] * K + kk[None, :], mask=xm, other=0.0).to(tl.float32)
            if NORM:
                sumsq += tl.sum(xv * xv, 1)
            wv = tl.load(w_ptr + rn[:, None] * K + kk[None, :], mask=(rn[:, None] < N) & (kk[None, :] < k_hi),
                         other=0.0)
            acc += tl.dot(xv.to(wv.dtype), tl.trans(wv), input_precision="ieee")
        tile = pid_b * tl.num_programs(0) + pid_n
        if SPLIT > 1:
            here = (pid_s * tl.num_programs(1) + pid_b) * BLOCK_B + tl.arange(0, BLOCK_B)  # [split, row] slots
            tl.store(part_ptr + here[:, None] * N + rn[None, :], acc, mask=rn[None, :] < N)
            tl.store(sq_ptr + here * tl.num_programs(0) + pid_n, sumsq)
            tl.debug_barrier()  # every thread's partials written before the ticket releases them
            last = tl.atomic_add(tick_ptr + tile, 1, sem="acq_rel") == SPLIT - 1
        else:
            last = True
        if last:
            if SPLIT > 1:
                acc = tl.zeros((BLOCK_B, BLOCK_N), dtype=tl.float32)
                sumsq = tl.zeros((BLOCK_B,), dtype=tl.float32)
                for s in tl.static_range(SPLIT):
                    slot = (s * tl.num_programs(1) + pid_b) * BLOCK_B + tl.arange(0, BLOCK_B)
                    acc += tl.load(part_ptr + slot[:, None] * N + rn[None, :], mask=rn[None, :] < N, other=0.0,
                                   cache_modifier=".cg")
                    sumsq += tl.load(sq_ptr + slot * tl.num_programs(0) + pid_n, cache_modifier=".cg")
                tl.store(tick_ptr + tile, 0)  # ready for the next product
            if NORM:
                inv = tl.rsqrt(sumsq / K + eps)
                acc = acc * inv[:, None]
                if SAVE_RMS:
                    if pid_n == 0:
                        tl.store(rms_ptr + rb, inv, mask=rb < B)
            if ACT:
                acc = tl.maximum(acc, 0.0)
                acc = acc * acc
            if SOFTCAP:
                acc = cap * _tanh(acc / cap)
            om = (rb[:, None] < B) & (rn[None, :] < N)
            at = rb[:, None] * N + rn[None, :]
            if RESID:
                acc += tl.load(out_ptr + at, mask=om, other=0.0).to(tl.float32)
            if KEEP:
                tl.store(keep_ptr + at, acc, mask=om)
            if MIX:
                acc = lam_r * acc + lam_0 * tl.load(x0_ptr + at, mask=om, other=0.0)
            tl.store(out_ptr + at, acc.to(out_ptr.dtype.element_ty), mask=om)

    @triton.jit
    def _rotate_norm(ptr, c, s, d, eps, scale, HALF: tl.constexpr):
        """A head's two halves (x1, x2) rotated (x1·c + x2·s, x2·c − x1·s), RMS-normed over the head, scaled."""
        x1 = tl.load(ptr + d)
        x2 = tl.load(ptr + HALF + d)
        r1 = x1 * c + x2 * s
        r2 = x2 * c - x1 * s
        inv = tl.rsqrt((tl.sum(r1 * r1, 0) + tl.sum(r2 * r2, 0)) / (2 * HALF) + eps) * scale
        return r1 * inv, r2 * inv

    @triton.jit
    def _attn_kernel(qkv_ptr, pos_ptr, k_ptr, v_ptr, y_ptr, cos_ptr, sin_ptr, x_ptr, rms_ptr, gate_w_ptr, ve_ptr,
                     tok_ptr, m_ptr, l_ptr, acc_ptr, tick_ptr, NQKV, H, HKV, seq_len, C, window, sm_scale, qk_scale,
                     eps, ve_scale, HD: tl.constexpr, G: tl.constexpr, VE: tl.constexpr, VE_CH: tl.constexpr,
                     VE_BLOCK: tl.constexpr, SPLIT: tl.constexpr, BLOCK_T: tl.constexpr):
        """Row b, kv head j, split s: each of the G query heads of j over the s-th of SPLIT equal runs of the keys
        it sees, [max(0, p − window), p]; the program whose run holds p first writes the new k (rotary, norm,
        scale) and v (+ gate·value embedding) to the cache there. Each run's (max, sum, weighted values) is a
        partial softmax; the last program of (b, j) to finish (a ticket) joins them in the order s = 0, 1, ...
        (flash-decoding: a short sequence of positions spread over many programs, the same bits on every run)."""
        HALF: tl.constexpr = HD // 2
        b = tl.program_id(0)
        j = tl.program_id(1)
        sp = tl.program_id(2)
        p = tl.load(pos_ptr + b)
        d = tl.arange(0, HALF)
        dd = tl.arange(0, HD)
        c = tl.load(cos_ptr + p * HALF + d).to(tl.float32)
        s = tl.load(sin_ptr + p * HALF + d).to(tl.float32)
        row = qkv_ptr + b * NQKV
        base = (b * HKV + j) * seq_len * HD
        lo = tl.where(window >= 0, tl.maximum(p - window, 0), 0)
        run = tl.cdiv(tl.cdiv(p + 1 - lo, SPLIT), BLOCK_T) * BLOCK_T
        a = lo + sp * run
        e = tl.minimum(a + run, p + 1)
        if (a <= p) & (p < e):
            k1, k2 = _rotate_norm(row + (H + j) * HD, c, s, d, eps, qk_scale, HALF)
            v = tl.load(row + (H + HKV + j) * HD + dd)
            if VE:
                cm = tl.arange(0, VE_BLOCK) < VE_CH
                xg = tl.load(x_ptr + b * C + tl.arange(0, VE_BLOCK), mask=cm, other=0.0)
                wg = tl.load(gate_w_ptr + j * VE_CH + tl.arange(0, VE_BLOCK), mask=cm, other=0.0).to(tl.float32)
                gate = ve_scale * tl.sigmoid(tl.sum(xg * wg, 0) * tl.load(rms_ptr + b))  # reads norm(x)[:VE_CH]
                t = tl.load(tok_ptr + b)
                v = v + gate * tl.load(ve_ptr + t * (HKV * HD) + j * HD + dd).to(tl.float32)
            tl.store(k_ptr + base + p * HD + d, k1.to(k_ptr.dtype.element_ty))
            tl.store(k_ptr + base + p * HD + HALF + d, k2.to(k_ptr.dtype.element_ty))
            tl.store(v_ptr + base + p * HD + dd, v.to(v_ptr.dtype.element_ty))
            tl.debug_barrier()  # the new key and value are read back below by other threads of this program
        for g in tl.static_range(G):
            h = j * G + g
            q1, q2 = _rotate_norm(row + h * HD, c, s, d, eps, qk_scale * sm_scale, HALF)
            m_i = tl.max(tl.full((BLOCK_T,), float("-inf"), tl.float32), 0)
            l_i = tl.sum(tl.zeros((BLOCK_T,), tl.float32), 0)
            acc = tl.zeros((HD,), dtype=tl.float32)
            for t0 in range(a, e, BLOCK_T):
                tt = t0 + tl.arange(0, BLOCK_T)
                tm = tt < e
                kt = k_ptr + base + tt[:, None] * HD
                score = (tl.sum(tl.load(kt + d[None, :], mask=tm[:, None], other=0.0).to(tl.float32)
                                * q1[None, :], 1)
                         + tl.sum(tl.load(kt + HALF + d[None, :], mask=tm[:, None], other=0.0).to(tl.float32)
                                  * q2[None, :], 1))
                score = tl.where(tm, score, float("-inf"))
                m_new = tl.maximum(m_i, tl.max(score, 0))
                alpha = tl.exp(m_i - m_new)
                w = tl.exp(score - m_new)
                vt = tl.load(v_ptr + base + tt[:, None] * HD + dd[None, :], mask=tm[:, None], other=0.0)
                acc = acc * alpha + tl.sum(w[:, None] * vt.to(tl.float32), 0)
                l_i = l_i * alpha + tl.sum(w, 0)
                m_i = m_new
            at = (b * H + h) * SPLIT + sp
            tl.store(m_ptr + at, m_i)
            tl.store(l_ptr + at, l_i)
            tl.store(acc_ptr + at * HD + dd, acc)
        tl.debug_barrier()  # every thread's partials written before the ticket releases them
        if tl.atomic_add(tick_ptr + b * HKV + j, 1, sem="acq_rel") == SPLIT - 1:
            runs = tl.arange(0, SPLIT)
            for g in tl.static_range(G):
                h = j * G + g
                slots = (b * H + h) * SPLIT + runs
                m_s = tl.load(m_ptr + slots, cache_modifier=".cg")
                scale = tl.exp(m_s - tl.max(m_s, 0))  # an empty run (max -inf) weighs 0
                scale = tl.where(m_s == float("-inf"), 0.0, scale)
                l_s = tl.load(l_ptr + slots, cache_modifier=".cg")
                acc_s = tl.load(acc_ptr + slots[:, None] * HD + dd[None, :], cache_modifier=".cg")
                y = tl.sum(scale[:, None] * acc_s, 0) / tl.sum(scale * l_s, 0)
                tl.store(y_ptr + b * (H * HD) + h * HD + dd, y.to(y_ptr.dtype.element_ty))
            tl.store(tick_ptr + b * HKV + j, 0)  # ready for the next layer

    @triton.jit
    def _sortable(v):
        """float32 -> int64 keys that sort as the floats do (the sign bit flips the order of the rest)."""
        bits = v.to(tl.int32, bitcast=True)
        return (bits ^ ((bits >> 31) & 0x7FFFFFFF)).to(tl.int64)

    @triton.jit
    def _top_chunk_kernel(logits_ptr, keys_ptr, V, N_KEYS, CHUNK: tl.constexpr, KEEP: tl.constexpr):
        """Row b, chunk c: the KEEP largest logits of the chunk as keys (value, then the smaller id first)."""
        b = tl.program_id(0)
        c = tl.program_id(1)
        ids = c * CHUNK + tl.arange(0, CHUNK)
        v = tl.load(logits_ptr + b * V + ids, mask=ids < V, other=float("-inf"))
        key = (_sortable(v) << 32) | (0xFFFFFFFF - ids.to(tl.int64))
        key = tl.sort(key, descending=True)
        offs = tl.arange(0, CHUNK)
        tl.store(keys_ptr + b * N_KEYS + c * KEEP + offs, key, mask=offs < KEEP)

    @triton.jit
    def _top_merge_kernel(keys_ptr, out_ptr, n_keys, IN_STRIDE, OUT_STRIDE, GROUP: tl.constexpr, KEEP: tl.constexpr):
        """Row b, group g: the KEEP largest of GROUP keys (GROUP / KEEP lists of the previous level)."""
        b = tl.program_id(0)
        g = tl.program_id(1)
        offs = g * GROUP + tl.arange(0, GROUP)
        key = tl.load(keys_ptr + b * IN_STRIDE + offs, mask=offs < n_keys, other=-(2**63))
        key = tl.sort(key, descending=True)
        at = tl.arange(0, GROUP)
        tl.store(out_ptr + b * OUT_STRIDE + g * KEEP + at, key, mask=at < KEEP)

    @triton.jit
    def _mix32(x):
        x = x ^ (x >> 16)
        x = x * 0x7FEB352D
        x = x ^ (x >> 15)
        x = x * 0x846CA68B
        return x ^ (x >> 16)

    @triton.jit
    def _sample_kernel(keys_ptr, logits_ptr, temp_ptr, top_k_ptr, top_p_ptr, seed_ptr, pos_ptr, tok_ptr, out_ptr,
                       V, seq_len, n_keys, STRIDE, N_KEYS: tl.constexpr, K: tl.constexpr):
        """Row b: its K best candidates, then gpt/sampling.py's `sample` on them (temperature, top-k, top-p, the
        seeded Gumbel noise; greedy = the largest logit, smallest id on ties); the token is written as the row's
        next input and its position advances by one (clamped as the cache clamps)."""
        b = tl.program_id(0)
        offs = tl.arange(0, N_KEYS)
        key = tl.sort(tl.load(keys_ptr + b * STRIDE + offs, mask=offs < n_keys, other=-(2**63)), descending=True)
        rows = tl.reshape(key, (N_KEYS // K, K))  # in order: row 0 holds the K largest
        first = tl.sum(tl.where(tl.arange(0, N_KEYS // K)[:, None] == 0, rows, 0), 0)
        rank = tl.arange(0, K)
        ids = (0xFFFFFFFF - (first & 0xFFFFFFFF)).to(tl.int32)
        values = tl.load(logits_ptr + b * V + ids, mask=ids < V, other=float("-inf"))
        temp = tl.load(temp_ptr + b)
        top_k = tl.load(top_k_ptr + b)
        top_p = tl.load(top_p_ptr + b)
        scaled = values / tl.maximum(temp, 1e-5)
        keep = rank < tl.where(top_k > 0, top_k, K)
        scaled = tl.where(keep, scaled, float("-inf"))
        e = tl.exp(scaled - tl.max(scaled, 0))
        probs = e / tl.sum(e, 0)
        before = tl.cumsum(probs, 0) - probs
        keep = keep & (before < tl.where(top_p >= 1.0, float("inf"), top_p))  # top_p >= 1: off
        scaled = tl.where(keep, scaled, float("-inf"))
        p = tl.load(pos_ptr + b)
        counter = tl.minimum(p + 1, seq_len - 1)
        seed = tl.load(seed_ptr + b)
        lo = (seed & 0xFFFFFFFF).to(tl.uint32)
        hi = ((seed >> 32) & 0xFFFFFFFF).to(tl.uint32)
        key32 = _mix32(_mix32(lo ^ _mix32(hi)) ^ (counter & 0xFFFFFFFF).to(tl.uint32))
        h = _mix32(key32 ^ _mix32(ids.to(tl.uint32)))
        u = ((h >> 8).to(tl.float32) + 0.5) * (1.0 / (1 << 24))
        noisy = scaled - tl.log(-tl.log(u))
        best = tl.max(noisy, 0)
        choice = tl.min(tl.where(noisy == best, rank, K), 0)  # the first of equal maxima, as argmax
        sampled = tl.sum(tl.where(rank == choice, ids, 0), 0)
        greedy = tl.sum(tl.where(rank == 0, ids, 0), 0)
        token = tl.where(temp > 0, sampled, greedy).to(tl.int64)
        tl.store(tok_ptr + b, token)
        tl.store(out_ptr + b, token)
        tl.store(pos_ptr + b, counter)


def matvec_config(N: int, K: int) -> tuple[int, int, int, int]:
    """(BLOCK_N, BLOCK_K, num_warps, num_stages) of a product with N outputs over K inputs, from a sweep of 24 tile
    configurations on an H100 (bench/fused_bench.py, bench/results/fused_cuda_h100.json): wide tiles of rows where
    there are many rows, longer tiles along K (more bytes in flight per program) where there are few."""
    if N >= 4096:
        return 64, 128, 4, 3
    return 32, (256 if N <= 2048 else 128), 4, (4 if N <= 2048 else 3)


SPLIT_TARGET = 264  # programs a product should have: 2 per SM of an H200 (132 SMs)


def split_of(N: int, K: int, block_n: int, block_k: int) -> int:
    """How many programs share each tile's K (gpt: a decode's product has few tiles: 40 for a 1280-row matrix in
    32-row tiles, a third of an H200's SMs): enough for SPLIT_TARGET programs, at most one per BLOCK_K of K. It
    depends on the shape only, never on the batch, so a row's sums are the same alone or batched."""
    tiles = -(-N // block_n)
    return max(1, min(-(-SPLIT_TARGET // tiles), -(-K // block_k)))


def _pow2(n: int) -> int:
    return 1 << max(0, (n - 1).bit_length())


class FusedDecode:
    """The decode step of `model` over `cache` (a RowKVCache of the model) in 5·n_layer + 2 kernels and the sampling's.

    Built once per decoder: it reads the model's weights (the fused q/k/v matrix included: call model.fuse_qkv()
    first), its per-layer windows and its scalars (lambdas, gates' scales, softcap), and allocates its buffers for
    the cache's batch size. `logits_of(b, tokens)` runs the forward of the first b rows' next tokens; `step(...)`
    also samples them (the chat's top-k <= 64 sampling in two kernels, else gpt/sampling.py's `sample`)."""

    def __init__(self, model: GPT, cache: RowKVCache, n_sampled: int | None = None,
                 configs: dict[tuple[int, int], tuple[int, int, int, int]] | None = None):
        if not available(model.get_device()):
            raise RuntimeError("the fused decode step needs a CUDA device and Triton (it ships with PyTorch's CUDA "
                               "build), or Triton's interpreter (TRITON_INTERPRET=1)")
        c, f = model.config, model.features
        self.model, self.cache = model, cache
        self.configs = configs or {}  # (N, K) -> matvec_config's tuple, for a benchmark's sweep
        dev, dtype = model.get_device(), model.lm_head.weight.dtype
        self.C, self.H, self.Hkv = c.n_embd, c.n_head, c.n_kv_head
        self.hd = c.n_embd // c.n_head
        if self.hd % 2 or self.hd & (self.hd - 1):
            raise ValueError(f"the fused step needs a power-of-two head dim, got {self.hd}")
        self.V = n_sampled or c.vocab_size
        self.eps = torch.finfo(dtype).eps  # F.rms_norm's default for the model's dtype, as the forward uses
        self.seq_len = cache.seq_len
        B = cache.pos.size(0)
        blocks = model.transformer.h
        if any(blk.attn.w_qkv is None or not blk.attn.is_fused() for blk in blocks):
            raise ValueError("call model.fuse_qkv() before building the fused decode step")
        self.layers = [dict(qkv=blk.attn.w_qkv, out=blk.attn.c_proj.weight, fc=blk.mlp.c_fc.weight,
                            proj=blk.mlp.c_proj.weight, window=-1 if w is None else int(w),
                            gate=blk.attn.ve_gate.weight if getattr(blk.attn, "ve_gate", None) is not None else None,
                            ve=model.value_embeds[str(i)].weight if model.has_value_embedding(i) else None)
                       for i, (blk, w) in enumerate(zip(blocks, model.window_sizes))]
        lam = f.lambdas
        self.lam_r = [float(v) for v in model.resid_lambdas] if lam else [1.0] * c.n_layer
        self.lam_0 = [float(v) for v in model.x0_lambdas] if lam else [0.0] * c.n_layer
        self.mix = lam
        self.smear = f.smear
        self.smear_w = model.smear_gate.weight.reshape(-1) if f.smear else None  # reads x[:smear_ch]
        self.smear_ch = self.smear_w.numel() if f.smear else 0
        self.smear_lam = float(model.smear_lambda) if f.smear else 0.0
        self.backout_layer = model.backout_layer
        self.backout_lam = float(model.backout_lambda) if self.backout_layer is not None else 0.0
        self.qk_scale, self.ve_scale, self.ve_ch = float(f.qk_scale), float(f.ve_gate_scale), f.ve_gate_channels
        self.softcap = float(model.softcap)
        self.cos = model.cos[0, :, 0, :]  # [positions, hd/2], contiguous as the model stores them
        self.sin = model.sin[0, :, 0, :]
        n_qkv = (self.H + 2 * self.Hkv) * self.hd
        f32 = dict(device=dev, dtype=torch.float32)
        self.x, self.x0, self.xb = (torch.zeros(B, self.C, **f32) for _ in range(3))
        self.qkv = torch.zeros(B, n_qkv, **f32)
        self.rms = torch.zeros(B, **f32)
        self.y = torch.zeros(B, self.C, device=dev, dtype=dtype)
        self.h = torch.zeros(B, 4 * self.C, device=dev, dtype=dtype)
        self.logits = torch.zeros(B, self.V, **f32)
        self.n_chunks = triton.cdiv(self.V, CHUNK)
        self.keys = []  # each level of the candidate tree: [B, keys]
        n = self.n_chunks * CANDIDATES
        while True:
            self.keys.append(torch.empty(B, n, device=dev, dtype=torch.long))
            if n <= GROUP:
                break
            n = triton.cdiv(n, GROUP) * CANDIDATES
        self.out = torch.zeros(B, device=dev, dtype=torch.long)
        self.scratch: dict[int, torch.Tensor] = {}  # split-K partials by size (two per product shape)
        # per split product tile, and per (row, kv head) of attention: its programs done so far. A product splits
        # only while W has fewer than SPLIT_TARGET tiles of rows (split_of), so its tiles number fewer than
        # SPLIT_TARGET per BLOCK_B rows of the batch
        self.tickets = torch.zeros(max(B * self.Hkv, triton.cdiv(B, BLOCK_B) * SPLIT_TARGET), device=dev,
                                   dtype=torch.int32)
        runs = B * self.H * ATTN_SPLIT
        self.att_m, self.att_l = torch.zeros(runs, **f32), torch.zeros(runs, **f32)
        self.att_acc = torch.zeros(runs * self.hd, **f32)

    def _matvec(self, b: int, x: torch.Tensor, w: torch.Tensor, out: torch.Tensor, *, norm: bool = False,
                act: bool = False, resid: bool = False, keep: torch.Tensor | None = None, mix: tuple | None = None,
                backout: torch.Tensor | None = None, softcap: bool = False, save_rms: bool = False) -> None:
        N, K = out.size(1), x.size(1)
        block_n, block_k, warps, stages = self.configs.get((N, K)) or matvec_config(N, K)
        split = split_of(N, K, block_n, block_k)
        k_split = -(-K // block_k // split) * block_k  # whole BLOCK_K tiles per program
        split = -(-K // k_split)
        grid = (triton.cdiv(N, block_n), triton.cdiv(b, BLOCK_B), split)
        lam_r, lam_0 = mix if mix is not None else (1.0, 0.0)
        part, sq = self._partials(split * grid[1] * BLOCK_B * N), self._partials(split * grid[1] * BLOCK_B * grid[0])
        _matvec_kernel[grid](x, backout if backout is not None else x, w, out, keep if keep is not None else out,
                             self.x0, self.rms, part, sq, self.tickets, b, N, K, k_split, self.eps, self.backout_lam,
                             lam_r, lam_0, self.softcap, NORM=norm, BACKOUT=backout is not None, ACT=act,
                             RESID=resid, KEEP=keep is not None, MIX=mix is not None, SOFTCAP=softcap,
                             SAVE_RMS=save_rms, SPLIT=split, BLOCK_B=BLOCK_B, BLOCK_N=block_n, BLOCK_K=block_k,
                             num_warps=warps, num_stages=stages)

    def _partials(self, n: int) -> torch.Tensor:
        """A float32 scratch of n elements, one per size (split-K partial sums; made before a graph capture, never
        during one: the first eager step of each shape makes it)."""
        if self.scratch.get(n) is None:
            self.scratch[n] = torch.empty(max(n, 1), device=self.x.device, dtype=torch.float32)
        return self.scratch[n]

    def logits_of(self, b: int, tokens: torch.Tensor) -> torch.Tensor:
        """The softcapped float32 logits [b, n_sampled] of the first b rows' `tokens` at their cache positions;
        their keys and values are written to the cache (positions are not advanced: `step` does)."""
        cache, C = self.cache, self.C
        _embed_kernel[(b,)](tokens, cache.pos, self.model.transformer.wte.weight, cache.prev, self.x, self.x0,
                            self.smear_w if self.smear else self.x, C, self.eps, self.smear_lam, self.lam_r[0],
                            self.lam_0[0], SMEAR=self.smear, SMEAR_CH=self.smear_ch, MIX=self.mix,
                            BLOCK_C=_pow2(C))
        n_layer = len(self.layers)
        for i, L in enumerate(self.layers):
            self._matvec(b, self.x, L["qkv"], self.qkv, norm=True, save_rms=True)
            ve = L["ve"] is not None
            _attn_kernel[(b, self.Hkv, ATTN_SPLIT)](
                self.qkv, cache.pos, cache.k[i], cache.v[i], self.y, self.cos, self.sin, self.x, self.rms,
                L["gate"] if ve else self.x, L["ve"] if ve else self.x, tokens, self.att_m, self.att_l, self.att_acc,
                self.tickets, self.qkv.size(1), self.H, self.Hkv, cache.seq_len, C, L["window"], self.hd ** -0.5,
                self.qk_scale, self.eps, self.ve_scale, HD=self.hd, G=self.H // self.Hkv, VE=ve, VE_CH=self.ve_ch,
                VE_BLOCK=_pow2(self.ve_ch), SPLIT=ATTN_SPLIT, BLOCK_T=ATTN_BLOCK_T, num_warps=4)
            self._matvec(b, self.y, L["out"], self.x, resid=True)
            self._matvec(b, self.x, L["fc"], self.h, norm=True, act=True)
            last = i == n_layer - 1
            self._matvec(b, self.h, L["proj"], self.x, resid=True,
                         keep=self.xb if i == self.backout_layer else None,
                         mix=None if last or not self.mix else (self.lam_r[i + 1], self.lam_0[i + 1]))
        self._matvec(b, self.x, self.model.lm_head.weight, self.logits, norm=True, softcap=True,
                     backout=self.xb if self.backout_layer is not None else None)
        return self.logits[:b]

    def step(self, b: int, tokens: torch.Tensor, temperature: torch.Tensor, top_k: torch.Tensor, top_p: torch.Tensor,
             seed: torch.Tensor, width: int | None) -> torch.Tensor:
        """One token for each of the first b rows, as StaticDecoder's step: sampled, fed back as the row's next
        input (tokens[:b]) and its position advanced. Returns [b] (a buffer, overwritten by the next step)."""
        logits = self.logits_of(b, tokens)
        if width is not None and width <= CANDIDATES:
            keys, n = self.keys[0], self.n_chunks * CANDIDATES
            _top_chunk_kernel[(b, self.n_chunks)](logits, keys, self.V, keys.size(1), CHUNK=CHUNK, KEEP=CANDIDATES,
                                                  num_warps=4)
            for nxt in self.keys[1:]:  # a tree: GROUP keys -> CANDIDATES, until one group is left
                groups = triton.cdiv(n, GROUP)
                _top_merge_kernel[(b, groups)](keys, nxt, n, keys.size(1), nxt.size(1), GROUP=GROUP,
                                               KEEP=CANDIDATES, num_warps=4)
                keys, n = nxt, groups * CANDIDATES
            _sample_kernel[(b,)](keys, logits, temperature, top_k, top_p, seed, self.cache.pos, tokens, self.out,
                                 self.V, self.seq_len, n, keys.size(1), N_KEYS=_pow2(max(n, CANDIDATES)),
                                 K=CANDIDATES, num_warps=4)
            return self.out[:b]
        pos = self.cache.pos[:b]
        pos.add_(1).clamp_(max=self.seq_len - 1)
        nxt = sample(logits, temperature[:b], top_k[:b], top_p[:b], seed[:b], pos, width)
        tokens[:b].copy_(nxt)
        return nxt
