"""The fast path on CPU: per-row positions (RowKVCache) against one full forward per row, the static decoder against
the eager engine, and the batched server against each session run alone. (CUDA-graph capture itself is checked by
bench/decode_bench.py on a GPU: greedy tokens equal the eager engine's, bf16 logits near fp32.)"""
import threading

import pytest
import torch

from conftest import make_tiny_model
from gpt.engine import Engine, SamplingParams
import gpt.fast
from gpt.fast import MIN_SPAN, StaticDecoder, bucket, cpu_compiler
from gpt.nanochat import TODAY, TUTORIAL
from gpt.kv_cache import RowKVCache
from gpt.serving import BatchServer
from gpt.torch_thread import TorchThread

SEQ = 256  # > MIN_SPAN, so attention windows shorter than the cache are exercised

PARAMS = [
    SamplingParams(temperature=0.0, top_k=None, max_tokens=40),
    SamplingParams(temperature=1.0, top_k=None, seed=4, max_tokens=40),
    SamplingParams(temperature=0.7, top_k=20, top_p=0.9, seed=5, max_tokens=40),
    SamplingParams(temperature=1.3, top_k=100, top_p=0.8, seed=6, max_tokens=40),  # wider than the top-k bucket
]
TEXTS = ["The teacher", "Attention lets each position look back at the positions before it", "老师", "It"]


@pytest.fixture
def model(tiny_tokenizer):
    return make_tiny_model(tiny_tokenizer.vocab_size, sequence_len=SEQ)


def prompts(tok):
    return [[tok.bos_token_id] + tok.encode(t) for t in TEXTS]


def no_stop_tokens(monkeypatch, model, tok):
    """Make the stop tokens impossible, so that runs are long enough to compare."""
    forward = model.forward
    stop = [tok.special_id("<|assistant_end|>"), tok.bos_token_id]

    def wrapped(*args, **kwargs):
        logits = forward(*args, **kwargs).clone()
        logits[..., stop] = -1e4
        return logits

    monkeypatch.setattr(model, "forward", wrapped)


def alone(model, tok, prompt, params, **kwargs):
    return [e.token for e in Engine(model, tok).stream(prompt, params, **kwargs) if not e.done]


@torch.inference_mode()
def test_row_positions_match_full_forward_for_32_steps(model):
    """Rows of different lengths, prefilled one at a time, then decoded together: every step's logits equal one
    full forward over that row's whole sequence."""
    g = torch.Generator().manual_seed(0)
    V, c = model.config.vocab_size, model.config
    seqs = [torch.randint(V, (n,), generator=g).tolist() for n in (3, 17, 100)]
    cache = RowKVCache(3, c.n_kv_head, SEQ, c.n_embd // c.n_head, c.n_layer)
    for r, s in enumerate(seqs):
        model(torch.tensor([s]), kv_cache=cache.step(SEQ, rows=torch.tensor([r])))
    assert cache.pos.tolist() == [3, 17, 100]
    steps, spans = [], []
    for _ in range(34):
        nxt = torch.randint(V, (3,), generator=g)
        spans.append(bucket(int(cache.pos.max()) + 1, MIN_SPAN, SEQ))
        steps.append(model(nxt[:, None], kv_cache=cache.step(spans[-1]))[:, -1])
        for r, s in enumerate(seqs):
            s.append(int(nxt[r]))
    assert spans[-1] == SEQ  # the last steps crossed from the 128-window to the full cache
    for r, s in enumerate(seqs):
        full = model(torch.tensor([s]))[0, -34:]  # position t predicts token t + 1: the 34 decode steps
        torch.testing.assert_close(torch.stack([step[r] for step in steps]), full, rtol=1e-5, atol=1e-5)


def test_static_decoder_equals_eager_engine(model, tiny_tokenizer, monkeypatch):
    no_stop_tokens(monkeypatch, model, tiny_tokenizer)
    ps = prompts(tiny_tokenizer)
    expected = [alone(model, tiny_tokenizer, p, sp) for p, sp in zip(ps, PARAMS)]
    dec = StaticDecoder(model, 5, graphs=False)  # one row more than sessions: an idle row rides along
    dec.clear_row(4)
    got = []
    for r, (p, sp) in enumerate(zip(ps, PARAMS)):
        dec.set_row(r, sp.temperature, sp.top_k, sp.top_p, sp.seed or 0)
        width = None if r >= 1 else 64  # both sampling-width paths
        got.append([int(dec.prefill(r, p, width)[0])])
    lengths = [len(p) + 1 for p in ps]
    for step in range(39):
        # batch 5 runs the idle row along, batch 4 only the busy rows: neither changes a busy row's tokens
        out = dec.decode(5 if step % 2 else 4, bucket(max(lengths), MIN_SPAN, SEQ), None)
        for r in range(4):
            got[r].append(int(out[r]))
        lengths = [n + 1 for n in lengths]
    assert got == expected
    assert len(set(expected[1])) > 5


def test_server_sessions_equal_each_session_alone(model, tiny_tokenizer, monkeypatch):
    """Sessions join at different times (and queue: max_batch 3 < 4 sessions); each stream is its own run."""
    no_stop_tokens(monkeypatch, model, tiny_tokenizer)
    ps = prompts(tiny_tokenizer)
    expected = [alone(model, tiny_tokenizer, p, sp) for p, sp in zip(ps, PARAMS)]
    server = BatchServer(model, tiny_tokenizer, max_batch=3)
    results = [None] * 4

    def read(i):
        events = list(server.stream(ps[i], PARAMS[i]))
        results[i] = ([e.token for e in events[:-1]], events[-1].stop_reason, "".join(e.text for e in events))

    first = server.stream(ps[0], PARAMS[0])
    head = [next(first).token for _ in range(5)]  # session 0 is mid-reply when the others join
    threads = [threading.Thread(target=read, args=(i,)) for i in (1, 2, 3)]
    for t in threads:
        t.start()
    rest = [e.token for e in first if not e.done]
    for t in threads:
        t.join(timeout=60)
    assert head + rest == expected[0]
    for i in (1, 2, 3):
        tokens, reason, text = results[i]
        assert tokens == expected[i], i
        assert reason == "max_tokens" and text == tiny_tokenizer.decode(tokens)


def test_server_runs_its_torch_work_through_run(model, tiny_tokenizer, monkeypatch):
    """The app on a CPU: BatchServer(run=TorchThread.run) does every forward on that thread, not its loop's, and
    each session still gets its own run's tokens."""
    no_stop_tokens(monkeypatch, model, tiny_tokenizer)
    ps = prompts(tiny_tokenizer)[:2]
    expected = [alone(model, tiny_tokenizer, p, sp) for p, sp in zip(ps, PARAMS)]
    worker = TorchThread()
    server = worker.run(BatchServer, model, tiny_tokenizer, max_batch=2, run=worker.run)
    threads = []
    forward = model.forward

    def spy(*args, **kwargs):
        threads.append(threading.current_thread().name)
        return forward(*args, **kwargs)

    monkeypatch.setattr(model, "forward", spy)
    streams = [server.stream(p, sp) for p, sp in zip(ps, PARAMS)]
    assert [[e.token for e in s if not e.done] for s in streams] == expected
    assert threads and set(threads) == {worker.run(lambda: threading.current_thread().name)}


def test_server_fails_the_sessions_in_hand_and_keeps_serving(model, tiny_tokenizer, monkeypatch):
    no_stop_tokens(monkeypatch, model, tiny_tokenizer)
    prompt = prompts(tiny_tokenizer)[1]
    expected = alone(model, tiny_tokenizer, prompt, PARAMS[1])
    server = BatchServer(model, tiny_tokenizer, max_batch=2)
    forward, broken = model.forward, [True]

    def flaky(*args, **kwargs):
        if broken[0]:
            raise RuntimeError("out of memory (simulated)")
        return forward(*args, **kwargs)

    monkeypatch.setattr(model, "forward", flaky)
    with pytest.raises(RuntimeError, match="batch server failed.*simulated"):
        list(server.stream(prompt, PARAMS[1]))
    broken[0] = False
    assert [e.token for e in server.stream(prompt, PARAMS[1]) if not e.done] == expected


def test_server_stop_reasons_and_leaving(model, tiny_tokenizer, monkeypatch):
    no_stop_tokens(monkeypatch, model, tiny_tokenizer)
    ps = prompts(tiny_tokenizer)
    server = BatchServer(model, tiny_tokenizer, max_batch=2)
    greedy = SamplingParams(temperature=0.0, max_tokens=1000)
    # context_full: the sequence never exceeds sequence_len
    long_prompt = (ps[1] * SEQ)[: SEQ - 6]
    events = list(server.stream(long_prompt, greedy))
    assert len(events) == 7 and events[-1].stop_reason == "context_full"
    assert [e.token for e in events[:-1]] == alone(model, tiny_tokenizer, long_prompt, greedy)
    # should_stop: the session ends with "stopped" and its row is free again
    events = []
    for e in server.stream(ps[0], greedy, should_stop=lambda: len(events) >= 3):
        events.append(e)
    assert events[-1].stop_reason == "stopped" and len(events) < SEQ // 2
    # a reader that walks away: its row is freed, a waiting session gets it
    abandoned = server.stream(ps[2], greedy)
    next(abandoned)
    abandoned.close()
    other = server.stream(ps[3], SamplingParams(temperature=0.0, max_tokens=5))
    third = server.stream(ps[0], SamplingParams(temperature=0.0, max_tokens=3))
    assert [e.token for e in other if not e.done] == alone(model, tiny_tokenizer, ps[3], greedy)[:5]
    assert [e.token for e in third if not e.done] == alone(model, tiny_tokenizer, ps[0], greedy)[:3]
    assert server.rows == [None, None]
    # bad input: a clear error, and the server keeps serving
    with pytest.raises(ValueError, match="more than the model's context"):
        server.stream([1] * (SEQ + 1), greedy)
    zero = list(server.stream(ps[0], SamplingParams(max_tokens=0)))
    assert zero[-1].stop_reason == "max_tokens" and len(zero) == 1


def test_server_stops_on_assistant_end(model, tiny_tokenizer, monkeypatch):
    end = tiny_tokenizer.special_id("<|assistant_end|>")
    free = alone(model, tiny_tokenizer, prompts(tiny_tokenizer)[0], SamplingParams(temperature=0.0, max_tokens=6))
    forward, calls = model.forward, [0]

    def force_after_three(*args, **kwargs):  # call 0 is the prefill (first token), calls 1, 2, 3 decode steps
        logits = forward(*args, **kwargs).clone()
        logits[..., end] = 1e4 if calls[0] == 3 else -1e4
        calls[0] += 1
        return logits

    monkeypatch.setattr(model, "forward", force_after_three)
    server = BatchServer(model, tiny_tokenizer, max_batch=2)
    events = list(server.stream(prompts(tiny_tokenizer)[0], SamplingParams(temperature=0.0, max_tokens=6)))
    assert [e.token for e in events[:-1]] == free[:3] and events[-1].stop_reason == "assistant_end"


def test_engine_batched_generate_batch_equals_sequential(model, tiny_tokenizer, monkeypatch):
    no_stop_tokens(monkeypatch, model, tiny_tokenizer)
    ps = prompts(tiny_tokenizer)
    batched = Engine(model, tiny_tokenizer, batched=True, max_batch=4).generate_batch(ps, PARAMS)
    sequential = Engine(model, tiny_tokenizer).generate_batch(ps, PARAMS)
    assert batched == sequential


def test_bucket():
    assert [bucket(n, 16, 100) for n in (1, 16, 17, 64, 65, 1000)] == [16, 16, 32, 64, 100, 100]


def test_decode_step_traces_as_one_graph_and_keeps_its_tokens(model):
    """torch.compile(fullgraph=True) of the decode step (what StaticDecoder(compile=True) compiles) must trace
    without a graph break, and give the eager step's tokens. backend="eager" checks the tracing on any machine."""
    model.fuse_qkv()  # as a loaded model is
    prompt = list(range(1, 20))
    decoders = [StaticDecoder(model, 2, graphs=False) for _ in range(2)]
    compiled = decoders[0]
    compiled._decode_fn = torch.compile(compiled._decode_step, dynamic=False, fullgraph=True, backend="eager")
    tokens = []
    for d in decoders:
        d.set_row(0, 0.8, 50, 1.0, 3)
        d.prefill(0, prompt, 64)
        tokens.append([int(d.decode(1, 128, 64)[0]) for _ in range(8)])
    assert tokens[0] == tokens[1]


@pytest.mark.skipif(cpu_compiler() is None, reason="no C++ compiler here: no compiled CPU decode step")
@pytest.mark.parametrize("member", [TUTORIAL, TODAY], ids=lambda m: m.name)
def test_cpu_compiled_step_gives_each_row_its_eager_tokens(tiny_tokenizer, member, monkeypatch):
    """StaticDecoder(compile=True) on a CPU (frozen weights in inductor's own GEMM kernels, a C++ wrapper): two rows
    decoded together, one greedy and one seeded, give the tokens each gets alone from the eager engine. One compile
    (batch 2, span 128, width 64) per architecture."""
    model = make_tiny_model(tiny_tokenizer.vocab_size, member=member, sequence_len=SEQ)
    model.fuse_qkv()
    no_stop_tokens(monkeypatch, model, tiny_tokenizer)
    ps, params = prompts(tiny_tokenizer)[:2], [PARAMS[0], PARAMS[2]]
    steps = 24
    expected = [alone(model, tiny_tokenizer, p, sp)[:steps] for p, sp in zip(ps, params)]
    dec = StaticDecoder(model, 2, compile=True)
    got = []
    for r, (p, sp) in enumerate(zip(ps, params)):
        dec.set_row(r, sp.temperature, sp.top_k, sp.top_p, sp.seed or 0)
        got.append([int(dec.prefill(r, p, 64)[0])])
    for _ in range(steps - 1):
        out = dec.decode(2, MIN_SPAN, 64)
        for r in range(2):
            got[r].append(int(out[r]))
    assert got == expected
    assert len(set(expected[1])) > 5  # the seeded row really samples


def test_compiled_step_takes_more_keys_than_dynamos_default_limit_from_another_thread(model, monkeypatch):
    """Each (batch, span, width) key is a recompile of the same code: more than dynamo's default limit of 8, and run
    from the server's thread, whose dynamo config is its own (backend="eager": tracing only, any machine)."""
    compile = torch.compile
    monkeypatch.setattr(torch, "compile", lambda fn, **kw: compile(fn, **kw, backend="eager"))
    monkeypatch.setattr(gpt.fast, "cpu_compiler", lambda: "c++")  # the eager backend compiles no C++
    model.fuse_qkv()
    dec = StaticDecoder(model, 1, graphs=False, compile=True)
    dec.set_row(0, 0.8, 50, 1.0, 3)
    dec.prefill(0, list(range(1, 20)), 64)
    failure = []

    def steps():
        try:
            for span in range(MIN_SPAN, MIN_SPAN + 10):  # 10 keys
                dec.decode(1, span, 64)
        except Exception as e:  # noqa: BLE001 - reported below
            failure.append(e)
    thread = threading.Thread(target=steps)
    thread.start()
    thread.join()
    assert failure == []
    assert int(dec.cache.pos[0]) == 19 + 10


def test_compile_on_a_cpu_without_a_compiler_is_refused_with_the_reason(model, monkeypatch):
    """No C++ compiler: StaticDecoder says so when it is built, not in the first chat's step (the app then decodes
    eagerly with a warning: demo/models.py)."""
    monkeypatch.setattr(torch._inductor.config.cpp, "cxx", (None, "no-such-cxx-here"))
    assert cpu_compiler() is None
    with pytest.raises(RuntimeError, match="needs a C\\+\\+ compiler"):
        StaticDecoder(model, 1, compile=True)


def test_compile_and_fused_are_refused_together(model):
    """Two ways to fuse one decode step: asking for both is a programmer's error, said before anything is built."""
    with pytest.raises(ValueError, match="pick one"):
        StaticDecoder(model, 1, compile=True, fused=True)


def test_a_product_splits_only_while_its_row_tiles_fit_the_fused_steps_tickets():
    """gpt/fused_decode.py gives each split product tile a ticket and sizes them on this: a product splits K across
    programs only while W has fewer than SPLIT_TARGET tiles of rows (so a batch's row tiles times SPLIT_TARGET
    tickets are enough at any batch); below that it does split, where K has more than one step."""
    from gpt.fused_decode import SPLIT_TARGET, split_of

    seen = set()
    for N in (16, 64, 512, 1280, 3840, 5120, 8448, 16384, 16896, 65536):
        for K in (64, 256, 1280, 5120):
            for block_n in (16, 32, 64, 128):
                for block_k in (64, 128, 256):
                    split, tiles = split_of(N, K, block_n, block_k), -(-N // block_n)
                    assert 1 <= split <= -(-K // block_k)
                    seen.add(split > 1)
                    if split > 1:
                        assert tiles < SPLIT_TARGET, (N, K, block_n, block_k)
                    elif K > block_k:
                        assert tiles >= SPLIT_TARGET, (N, K, block_n, block_k)
    assert seen == {True, False}
