"""The fused decode step (gpt/fused_decode.py) against the model's own forward, on both architectures.

It needs Triton: on a GPU (the device runs these), or on a CPU under Triton's interpreter (TRITON_INTERPRET=1 with
triton installed); elsewhere (CI's CPU-only torch) the module skips. References are independent of the fused code:
one full forward per row over its whole sequence (no cache), and gpt/sampling.py's `sample` on the same logits."""
import pytest
import torch

from conftest import make_tiny_model
from gpt import fused_decode
from gpt.fast import StaticDecoder
from gpt.nanochat import TODAY, TUTORIAL
from gpt.sampling import sample

DEVICE = torch.device("cuda" if torch.cuda.is_available() else "cpu")
pytestmark = pytest.mark.skipif(not fused_decode.available(DEVICE),
                                reason="needs Triton: a CUDA device, or TRITON_INTERPRET=1 with triton installed")

SEQ = 256  # the 2026 member's short window is 128 here: the long prompt below reaches past it
LENGTHS = (3, 40, 150)  # rows at different positions, one past the short window


def tiny(member, dtype=torch.float32, vocab=512):
    model = make_tiny_model(vocab, member=member, sequence_len=SEQ).to(DEVICE, dtype)
    model.fuse_qkv()
    return model


def prefilled(model, seqs, fused=True):
    """A decoder holding each sequence but its last token in its row's cache; the last token is the next input."""
    dec = StaticDecoder(model, len(seqs), graphs=False, fused=fused)
    for row, s in enumerate(seqs):
        dec.prefill(row, s[:-1], None)
        dec.tokens[row] = s[-1]
    return dec


def sequences(n_rows=len(LENGTHS), seed=0):
    g = torch.Generator().manual_seed(seed)
    return [torch.randint(512, (n,), generator=g).tolist() for n in LENGTHS[:n_rows]]


@torch.inference_mode()
def full_forward_last(model, seq):
    return model(torch.tensor([seq], device=DEVICE))[0, -1].float()


@pytest.fixture(params=[False, True], ids=["whole-K", "split-K"])
def split(request, monkeypatch):
    """split-K: 16-wide tiles of K, so every product of the tiny model is split (2 to 8 programs per tile) and its
    partial sums are added by the last program of each tile."""
    if request.param:
        monkeypatch.setattr(fused_decode, "matvec_config", lambda N, K: (16, 16, 4, 1))
    return request.param


@pytest.mark.parametrize("member", [TUTORIAL, TODAY], ids=["tutorial", "2026"])
@torch.inference_mode()
def test_fused_logits_equal_the_full_forward_of_every_row(member, split):
    """Three rows at different positions (one past the short window), 6 greedy steps: each step's fused logits
    equal one full forward over the row's whole sequence (float32), and the cache positions advance by one."""
    model = tiny(member)
    seqs = sequences()
    dec = prefilled(model, seqs)
    for _ in range(6):
        pos = dec.cache.pos.clone()
        nxt = dec.fused.step(len(seqs), dec.tokens, dec.temperature, dec.top_k, dec.top_p, dec.seed, 64)
        assert torch.equal(dec.cache.pos, pos + 1)
        for row, s in enumerate(seqs):
            want = full_forward_last(model, s)
            assert torch.allclose(dec.fused.logits[row], want, atol=2e-4, rtol=1e-4), (member.name, row, len(s))
            assert int(nxt[row]) == int(want.argmax())  # greedy rows (the decoder's idle setting)
            s.append(int(nxt[row]))


@pytest.mark.parametrize("member", [TUTORIAL, TODAY], ids=["tutorial", "2026"])
@torch.inference_mode()
def test_a_row_alone_and_in_a_batch_gives_the_same_bits(member, split):
    """Row 1's logits decoded with two other rows equal, bit for bit, the same row decoded alone: a seeded reply
    does not depend on who else is chatting."""
    model = tiny(member)
    seqs = sequences()
    batch = prefilled(model, seqs)
    together = batch.fused.logits_of(3, batch.tokens)[1].clone()
    solo = prefilled(model, [seqs[1]])
    alone = solo.fused.logits_of(1, solo.tokens)[0]
    assert torch.equal(alone, together)


@torch.inference_mode()
def test_fused_sampling_draws_what_gpt_sampling_draws():
    """The sampling kernels against gpt/sampling.py's `sample` on the same logits, for greedy and sampled rows with
    top-k and top-p, over many seeds (the same seeded Gumbel noise, the same filters). A vocabulary of 16384: 16
    chunks of 1024 logits, whose 1024 candidates take one more level of the candidate tree."""
    model = tiny(TODAY, vocab=16384)
    seqs = [s[:3] for s in sequences(1)] * 4
    dec = prefilled(model, seqs)
    settings = [(0.0, 1, 1.0), (0.7, 20, 0.9), (1.3, 50, 0.8), (1.0, 64, 1.0)]
    for row, (t, k, p) in enumerate(settings):
        dec.set_row(row, t, k, p, seed=0)
    for seed in range(25):
        dec.seed.copy_(torch.arange(4, device=DEVICE) * 1000 + seed)
        got = dec.fused.step(4, dec.tokens, dec.temperature, dec.top_k, dec.top_p, dec.seed, 64).clone()
        want = sample(dec.fused.logits[:4], dec.temperature, dec.top_k, dec.top_p, dec.seed, dec.cache.pos[:4], 64)
        assert torch.equal(got, want), seed
        assert torch.equal(dec.tokens[:4], got)


@pytest.mark.skipif(DEVICE.type != "cuda", reason="bf16 runs on the GPU")
@torch.inference_mode()
def test_bf16_fused_logits_are_close_to_float32():
    """bf16 weights through the fused step stay near the float32 model's logits (softcapped at 15)."""
    for member in (TUTORIAL, TODAY):
        m32, m16 = tiny(member), tiny(member, torch.bfloat16)
        seqs = sequences()
        want = torch.stack([full_forward_last(m32, s) for s in seqs])
        dec = prefilled(m16, seqs)
        got = dec.fused.logits_of(3, dec.tokens)
        assert (got - want).abs().max() < 0.1, member.name


@pytest.mark.parametrize("member", [TUTORIAL, TODAY], ids=["tutorial", "2026"])
@torch.inference_mode()
def test_decoder_with_the_fused_step_replies_as_the_eager_decoder(member):
    """StaticDecoder(fused=True) and the forward's StaticDecoder, the same seeded rows, 12 steps: the same tokens."""
    model = tiny(member)
    seqs = sequences()
    runs = []
    for fused in (True, False):
        dec = prefilled(model, [list(s) for s in seqs], fused=fused)
        for row in range(3):
            dec.set_row(row, 0.8, 50, 0.95, seed=7 + row)
        runs.append(torch.stack([dec.decode(3, 0, 64).clone() for _ in range(12)]))
    assert torch.equal(runs[0], runs[1])
