"""bench/: the benchmark scripts run end to end on CPU (--quick) and write the JSON they promise; the helpers that
the numbers depend on (weight bytes per token, roofline fractions, targets, the stand-in model) are checked exactly.
No timing is asserted here: speed is reported by the scripts, never tested."""
from __future__ import annotations

import json
import math
import statistics
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench import common, decode_bench, explain_bench  # noqa: E402
from explain.build import VIEWS  # noqa: E402
from gpt.checkpoint import LoadedModel  # noqa: E402
from gpt.nanochat import GPTConfig, new_model  # noqa: E402
from gpt.tokenizer import SPECIAL_TOKENS  # noqa: E402

SMALL = GPTConfig(sequence_len=64, vocab_size=600, n_layer=2, n_head=2, n_kv_head=1, n_embd=32)


@pytest.mark.parametrize("vocab", [265, 600, 8192])
def test_synthetic_tokenizer_has_exactly_the_vocab(vocab):
    tok = common.synthetic_tokenizer(vocab)
    assert tok.vocab_size == vocab
    assert [tok.special_id(s) for s in SPECIAL_TOKENS] == list(range(vocab - len(SPECIAL_TOKENS), vocab))
    text = "The cat 猫 😀"
    assert tok.decode(tok.encode(text)) == text


def test_synthetic_tokenizer_rejects_too_small_vocab():
    with pytest.raises(ValueError):
        common.synthetic_tokenizer(256)


def test_weight_bytes_per_token_counts_one_embedding_row():
    model = new_model(SMALL)  # the tutorial's forward (4a87a0d)
    C, V, L = SMALL.n_embd, SMALL.vocab_size, SMALL.n_layer
    kv = SMALL.n_kv_head * (C // SMALL.n_head)
    per_layer = C * C + 2 * C * kv + C * C + 8 * C * C  # c_q, c_k, c_v, c_proj, mlp
    assert common.weight_bytes_per_token(model) == 4 * (L * per_layer + C * V + C)
    assert common.weight_bytes_per_token(model.bfloat16()) == 2 * (L * per_layer + C * V + C)


def test_random_weights_give_nonzero_logits_and_same_values_in_bf16():
    m32 = common.random_weights(SMALL, "cpu", torch.float32)
    m16 = common.random_weights(SMALL, "cpu", torch.bfloat16)
    assert m32.lm_head.weight.abs().sum() > 0  # nanochat's init would make every logit 0
    assert m16.lm_head.weight.dtype == torch.bfloat16 and m16.cos.dtype == torch.bfloat16
    torch.testing.assert_close(m16.lm_head.weight, m32.lm_head.weight.bfloat16())
    logits = m32(torch.tensor([[1, 2, 3]]))
    assert logits.std() > 0.1


def test_model_under_test_falls_back_to_a_labelled_standin(monkeypatch):
    def missing(**_):
        raise FileNotFoundError("no shipped model")

    monkeypatch.setattr(common, "load_default", missing)
    mut = common.model_under_test(torch.device("cpu"), torch.float32)
    assert mut.standin and "STAND-IN" in mut.name and "FileNotFoundError" in mut.note
    assert mut.model.config == common.default_config()[0]
    assert mut.tokenizer.vocab_size == mut.model.config.vocab_size


def test_model_under_test_uses_the_default_model_when_it_loads(monkeypatch):
    tok = common.synthetic_tokenizer(SMALL.vocab_size)
    model = new_model(SMALL)  # the tutorial's forward (4a87a0d)
    loaded = LoadedModel(model, tok, "d2 test", "dir", torch.device("cpu"), torch.float32)
    monkeypatch.setattr(common, "load_default", lambda **_: loaded)
    mut = common.model_under_test(torch.device("cpu"), torch.float32)
    assert not mut.standin and mut.model is model and mut.name == "default: d2 test"


def test_mode_rows_fractions_and_ratios():
    main = dict(weight_bytes_per_token=1000, naive=dict(b1_tok_s=10.0), eager=dict(b1_tok_s=50.0, ttft_ms=4.0),
                server=dict(b1_tok_s=200.0, ttft_ms=2.0, batch=8, bB_tok_s=1600.0, bB_e2e_tok_s=1200.0))
    rows = decode_bench.mode_rows("x", main, None, bw=1e6, device=torch.device("cuda"))  # roofline b1 = 1000 tok/s
    naive, eager, server = rows
    assert server["app"] == "*" and eager["app"] == ""
    assert server["b1_roof"] == pytest.approx(0.2) and server["b1_x_eager"] == pytest.approx(4.0)
    assert server["b1_x_naive"] == pytest.approx(20.0)
    assert server["bB_roof"] == pytest.approx(1600 / 8000) and server["bB_x_eager"] == pytest.approx(32.0)
    assert server["ttft_roof"] == pytest.approx(1.0 / 2.0)  # floor: 1000 B / 1e6 B/s = 1 ms
    assert decode_bench.pct(0.2) == "20%" and decode_bench.pct(0.0025) == "0.25%"
    cpu_rows = decode_bench.mode_rows("x", main, None, bw=1e6, device=torch.device("cpu"))
    assert [r["app"] for r in cpu_rows] == ["", "", "*"]  # the app's chats go through the server on a CPU too
    main["eager_threads"] = dict(b1_tok_s=40.0)
    cpu_rows = decode_bench.mode_rows("x", main, None, bw=1e6, device=torch.device("cpu"))
    assert [r["app"] for r in cpu_rows] == ["", "", "*", ""] and cpu_rows[3]["b1_x_eager"] == pytest.approx(0.8)
    fused = dict(server_fused=dict(b1_tok_s=400.0), kernels=dict(per_step=104), kernels_forward=dict(per_step=539))
    rows = decode_bench.mode_rows("x", main, None, bw=1e6, device=torch.device("cuda"), fused=fused)
    assert [(r["path"], r["kernels_per_step"]) for r in rows] == [("naive", None), ("eager", None), ("server", 539),
                                                                  ("eager_threads", None), ("fused", 104)]
    assert rows[4]["b1_x_eager"] == pytest.approx(8.0)


def test_targets_are_checked_on_the_app_path_and_the_compiled_and_fused_steps_only():
    rows = {"d20": [dict(path="eager", b1_tok_s=9e9),
                    dict(path="server", app="*", b1_tok_s=1000.0, bB_tok_s=60000.0, ttft_ms=1.5, kernels_per_step=540),
                    dict(path="fused", b1_tok_s=2500.0, bB_tok_s=None, ttft_ms=2.5, kernels_per_step=104)],
            "tiny": [dict(path="server", app="*", b1_tok_s=7000.0)]}
    got = {(r["target"], r["path"]): r["result"]
           for r in decode_bench.target_rows(rows, torch.device("cuda"), quick=False)}
    assert got == {("d20 b1_tok_s >= 2200", "app"): False, ("d20 bB_tok_s >= 50000", "app"): True,
                   ("d20 ttft_ms < 2", "app"): True, ("d20 kernels_per_step < 150", "app"): False,
                   ("d20 b1_tok_s >= 2200", "fused"): True, ("d20 bB_tok_s >= 50000", "fused"): "-",
                   ("d20 ttft_ms < 2", "fused"): False, ("d20 kernels_per_step < 150", "fused"): True}
    assert decode_bench.target_rows(rows, torch.device("cpu"), quick=False) == []  # no 'default' here
    rows["default"] = [dict(path="eager_threads", b1_tok_s=9e9), dict(path="server", app="*", b1_tok_s=98.0),
                       dict(path="compile", b1_tok_s=268.0)]
    got = [(r["path"], r["measured"], r["result"]) for r in decode_bench.target_rows(rows, torch.device("cpu"), False)]
    assert got == [("app", 98.0, False), ("compile", 268.0, True)]
    quick = decode_bench.target_rows(rows, torch.device("cuda"), quick=True)
    assert quick and all(r["result"] == "n/a (--quick sizes)" for r in quick)


def test_copy_bandwidth_is_bytes_copied_over_the_median_copy_time(monkeypatch):
    """The copies it times move the bytes it reports (counted at the aten level), and the rate is 2 x buffer bytes
    (read + write) over the median of the timed copies (a fake clock gives each copy a known duration)."""
    from torch.utils._python_dispatch import TorchDispatchMode

    class Copies(TorchDispatchMode):
        def __init__(self):
            super().__init__()
            self.bytes = []

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            if func.overloadpacket is torch.ops.aten.copy_:
                dst, src = args[0], args[1]
                assert dst.data_ptr() != src.data_ptr()
                self.bytes.append(src.numel() * src.element_size())
            return func(*args, **(kwargs or {}))

    durations = [0.004, 0.001, 0.009, 0.002, 0.003]  # median 0.003 (mean 0.0038, min 0.001)
    ticks = iter([t for i, d in enumerate(durations) for t in (10.0 * i, 10.0 * i + d)])
    monkeypatch.setattr(decode_bench, "time", type("FakeTime", (), {"perf_counter": staticmethod(lambda: next(ticks))}))
    nbytes = 3 * 2**16
    with Copies() as copies:
        bw = decode_bench.copy_bandwidth(torch.device("cpu"), nbytes, len(durations))
    assert next(ticks, None) is None  # the clock was read around every timed copy, and nothing else
    assert copies.bytes == [nbytes] * (3 + len(durations))  # 3 warm-up copies, then the timed ones
    assert bw["buffer_bytes"] == nbytes and bw["iters"] == len(durations)
    assert bw["seconds_per_copy"] == pytest.approx(0.003)
    assert bw["bytes_per_s"] == pytest.approx(2 * nbytes / 0.003)


def test_explain_bench_quick_writes_every_view(tmp_path):
    out = tmp_path / "explain.json"
    data = explain_bench.main(["--quick", "--out", str(out)])
    saved = json.loads(out.read_text())
    assert saved["bar"] == json.loads(json.dumps(data["bar"]))
    res, threaded = saved["results"]
    assert (res["torch_threads_alive"], threaded["torch_threads_alive"]) == (1, 2)
    assert set(saved["bar"]) == {"alone", "threads", "standin"}
    assert set(res["json_bytes"]) == set(VIEWS) == set(res["view_s"])
    assert res["total_bytes"] == sum(res["json_bytes"].values())
    for key in ("date", "command", "nproc", "cpu_model", "torch"):
        assert saved["machine"][key]
    assert saved["model"]["config"]["n_layer"] > 0


def test_decode_bench_quick_runs_every_path_on_cpu(tmp_path):
    """The same code paths the GPU run takes (workers, checks, naive, eager, server; --compile is left to the real
    runs: each of its batch and span buckets is a compile of ~40 s on a CPU)."""
    out = tmp_path / "decode.json"
    cmd = [sys.executable, str(ROOT / "bench" / "decode_bench.py"), "--device", "cpu", "--quick",
           "--configs", "tiny,default", "--out", str(out)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600, cwd=ROOT)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    data = json.loads(out.read_text())
    assert data["summary"]["errors"] == {}
    # the bandwidth: a 64 MiB buffer (--quick on a CPU) copied 5 times, read + written, over the time of one copy
    bw = data["bandwidth"]
    assert (bw["buffer_bytes"], bw["iters"]) == (2**26, 5)
    assert bw["bytes_per_s"] == pytest.approx(2 * 2**26 / bw["seconds_per_copy"])
    # every speed is the median of the runs recorded next to it, as many runs as asked (--quick: repeats 1, TTFT 2)
    args = data["args"]
    assert (args["repeats"], args["ttft_repeats"], args["steps"]) == (1, 2, 32)

    def medians(result: dict, pairs: list[tuple[str, str]], runs: int):
        for value, recorded in pairs:
            assert len(result[recorded]) == runs and all(math.isfinite(x) and x > 0 for x in result[recorded])
            assert result[value] == statistics.median(result[recorded]), (value, recorded)

    for name in ("tiny", "default"):
        main = data["results"][name]["main"]
        assert main["checks"]["greedy_fp32"]["ok"] and main["checks"]["bf16_logits"]["ok"]
        assert main["naive"]["tokens"] == 3
        medians(main["naive"], [("b1_tok_s", "b1_runs")], 1)
        for mode in ("eager", "eager_threads", "server"):
            assert main[mode]["steps"] == 32
            medians(main[mode], [("b1_tok_s", "b1_runs")], 1)
            medians(main[mode], [("ttft_ms", "ttft_runs")], 2)
        server = main["server"]
        assert server["batch"] == 4
        medians(server, [("bB_e2e_tok_s", "bB_e2e_runs")], 1)
        # decode rate = B (N - 1) / (t_N - t_1), end to end = B N / t_N, with t_1 > 0: decode > e2e (N - 1) / N;
        # the bench records nan where noise made t_1 >= t_N (possible on a busy machine, so allowed here)
        (decode,), (e2e,) = server["bB_runs"], server["bB_e2e_runs"]
        assert decode > e2e * 31 / 32 or math.isnan(decode)
        assert server["bB_tok_s"] == decode or math.isnan(decode) and math.isnan(server["bB_tok_s"])
        assert main["ops"]["per_step"] > main["model_config"]["n_layer"] * 6  # 4 matmuls a layer, and more
    modes = [(r["config"], r["app"]) for r in data["summary"]["rows"]]
    assert modes == [(c, a) for c in ("tiny", "default") for a in ("", "", "*", "")]  # the server, as the app
    assert [t["result"] for t in data["targets"]] == ["n/a (--quick sizes)"]
    assert "b1 tok/s" in proc.stdout and "greedy fp32" in proc.stdout


def test_first_mismatch_and_its_description():
    assert decode_bench.first_mismatch([[1, 2, 3]], [[1, 2, 3]]) is None
    assert decode_bench.first_mismatch([[1, 2], [4, 5, 9]], [[1, 2], [4, 5, 6]]) == (1, 2)
    assert decode_bench.first_mismatch([[1, 2]], [[1, 2, 3]]) == (0, 2)  # a row ended early
    model = common.random_weights(SMALL, "cpu", torch.float32)
    got = decode_bench.describe_mismatch(model, [[1, 2, 3]], [[7, 8]], (0, 1), n_sampled=SMALL.vocab_size)
    with torch.no_grad():
        top = model(torch.tensor([[1, 2, 3, 7]]))[0, -1].topk(2).values
    assert got == dict(row=0, step=1, eager_top2_gap=pytest.approx(float(top[0] - top[1])))
    assert decode_bench.describe_mismatch(model, [[1]], [[2]], None, SMALL.vocab_size) is None


def test_app_dtype_follows_the_app_unless_forced():
    cpu = torch.device("cpu")
    assert common.app_dtype(cpu) == torch.float32  # a CPU serves float32: seeded replies stay batch-invariant
    assert common.app_dtype(cpu, "float32") == torch.float32
    assert common.app_dtype(cpu, "bfloat16") == torch.bfloat16
