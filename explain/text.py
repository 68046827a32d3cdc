"""Every explanatory text and label of explain/, in English and Simplified Chinese, keyed by view.

TEXT[view][key] = (english, chinese). Bodies are Markdown; `{name}` placeholders are filled by the view with the
numbers of this forward (the same placeholders in both languages — a test checks it).
"""
from __future__ import annotations

LANGS = ("en", "zh")

TEXT: dict[str, dict[str, tuple[str, str]]] = {
    "shapes": {
        "title": ("Shapes and stages of forward: input [B, T] = [{B}, {T}], T0 = {T0}",
                  "forward 的形状与阶段：输入 [B, T] = [{B}, {T}]，T0 = {T0}"),
        "stage1": ("1 · rotary slice", "1 · 旋转位置切片"),
        "stage2": ("2 · trunk", "2 · 主干"),
        "stage3": ("3 · logits", "3 · logits"),
        "stage4": ("4 · branch", "4 · 分支"),
        "inference": ("targets=None → logits", "targets=None → 返回 logits"),
        "training": ("targets given → loss", "给出 targets → 返回 loss"),
        "body": (
            "**Letters:** B = {B} rows in the batch, T = {T} new tokens per row, T0 = {T0} positions already in the KV "
            "cache (so keys span Tk = {Tk}), C = n_embd = {C}, H = {H} query heads, Hkv = {Hkv} key/value heads, "
            "hd = C / H = {hd}, V = vocab_size = {V}, n_layer = {L}.\n\n"
            "**Four stages.** (1) Take the rows T0 … T0+T−1 of the rotary cos/sin tables: these are the positions of "
            "the new tokens. (2) Look up each token id in `wte` (the id becomes a vector of C numbers), normalise, then "
            "run the {L} blocks: attention lets each position mix in information from earlier positions, the MLP "
            "transforms each position on its own; both add to the residual stream, whose shape never changes. "
            "(3) `lm_head` turns each position's vector into V scores, one per vocabulary entry, and the softcap "
            "squashes them into (−15, 15). (4) Without targets forward returns these logits [B, T, V]; with targets "
            "it returns one number, the mean cross-entropy.\n\n"
            "**Why [B, T, V] and not [B, V]?** Every position predicts the token that follows it: position i has "
            "seen tokens 0 … i. Generation only needs the last position, but training uses all T of them at once.\n\n"
            "The shapes come from running the model's own forward on PyTorch's *meta* device (shapes without "
            "data), so any config and size can be shown instantly.",
            "**符号：** B = {B} 为批次中的序列条数，T = {T} 为每条序列本次输入的新 token 数，T0 = {T0} 为 KV 缓存中已有的位置数"
            "（因此 key 一共覆盖 Tk = {Tk} 个位置），C = n_embd = {C}，H = {H} 个查询头，Hkv = {Hkv} 个键/值头，"
            "hd = C / H = {hd}，V = vocab_size = {V}，n_layer = {L}。\n\n"
            "**四个阶段。** (1) 从旋转位置编码的 cos/sin 表中取出第 T0 … T0+T−1 行，也就是这批新 token 所在的位置。"
            "(2) 用 `wte` 把每个 token id 查成一个长度为 C 的向量，做归一化，再依次经过 {L} 个 Block：注意力让每个位置"
            "汇集它之前各位置的信息，MLP 则对每个位置单独做变换；两者的结果都加回残差流，残差流的形状始终不变。"
            "(3) `lm_head` 把每个位置的向量变成 V 个分数（词表中每个 token 一个），softcap 再把它们压进 (−15, 15)。"
            "(4) 没有 targets 时，forward 返回这些 logits [B, T, V]；给出 targets 时，只返回一个数：平均交叉熵损失。\n\n"
            "**为什么是 [B, T, V] 而不是 [B, V]？** 每个位置都在预测紧跟其后的那个 token：位置 i 只看到了第 0 … i 个 token。"
            "生成时只用最后一个位置，训练时则一次用上全部 T 个位置。\n\n"
            "这些形状来自在 PyTorch 的 *meta* 设备（只有形状、没有数据的张量）上运行模型自己的 forward，"
            "所以任何配置、任何规模都能瞬间给出。"),
    },
    "rotary": {
        "title": ("Rotary tables: this call uses rows [{T0}:{T1}] (outlined)",
                  "旋转位置编码表：本次调用使用第 [{T0}:{T1}] 行（黑框）"),
        "windowed": (" — showing positions {lo}…{hi} only", " —— 仅显示位置 {lo}…{hi}"),
        "position": ("position", "位置"),
        "pair": ("channel pair i (fast → slow rotation)", "通道对 i（从快转到慢转）"),
        "body": (
            "Rotary position embedding does not add a position vector: it **rotates** each pair of channels of q and "
            "k by an angle that grows with the position. Pair i turns at its own speed, from fast (left) to slow "
            "(right); the model precomputes cos and sin for {n_pos} positions (10× the context) and each forward "
            "only **slices** the rows it needs.\n\n"
            "This call covers positions {T0} … {T1}−1, i.e. `cos[:, {T0}:{T1}]`. Without a cache T0 = 0. With a KV "
            "cache, T0 is the number of tokens already cached, so a new token is rotated as position T0 — exactly "
            "where it sits in the full sequence. Because q and k are both rotated, the score q·k depends only on how "
            "far apart the two positions are. As in nanochat, the table values are rounded to bfloat16.",
            "旋转位置编码（RoPE）不是把一个位置向量加到输入上，而是把 q 和 k 的每一对通道**旋转**一个随位置增大的角度。"
            "第 i 对通道有自己的转速，左边转得快、右边转得慢；模型预先算好 {n_pos} 个位置（上下文长度的 10 倍）"
            "的 cos 与 sin，每次 forward 只**切出**自己需要的那几行。\n\n"
            "本次调用覆盖位置 {T0} … {T1}−1，即 `cos[:, {T0}:{T1}]`。没有缓存时 T0 = 0；使用 KV 缓存时，T0 等于缓存里"
            "已有的 token 数，所以新 token 按位置 T0 旋转，恰好是它在完整序列中的位置。由于 q 和 k 都被旋转，"
            "点积 q·k 只取决于两个位置之间的距离。与 nanochat 一样，表中的数值取 bfloat16 精度。"),
    },
    "mask": {
        "title": ("Causal mask, three regimes, for this prompt of {T} tokens (blue = may attend)",
                  "因果掩码的三种情形，本提示共 {T} 个 token（蓝色 = 可以关注）"),
        "windowed": (" — last positions {lo}…{hi} shown", " —— 仅显示最后的位置 {lo}…{hi}"),
        "no_cache": ("no cache: {Tq} queries × {Tk} keys", "无缓存：{Tq} 个查询 × {Tk} 个键"),
        "one_query": ("decode: {Tq} query × {Tk} keys", "逐个解码：{Tq} 个查询 × {Tk} 个键"),
        "chunk": ("chunk after cache: {Tq} × {Tk}", "缓存后接一段：{Tq} × {Tk}"),
        "no_cache_call": ("sdpa(is_causal=True)", "sdpa(is_causal=True)"),
        "one_query_call": ("sdpa(is_causal=False): every cached key is in the past",
                           "sdpa(is_causal=False)：缓存里的键全都在过去"),
        "chunk_call": ("sdpa(attn_mask=causal_mask_for(Tq, Tk))", "sdpa(attn_mask=causal_mask_for(Tq, Tk))"),
        "body": (
            "Row = a query (the position that is predicting), column = a key (a position it may read). A position "
            "may only look at itself and the past, so the model can never peek at the token it must predict.\n\n"
            "- **No cache** (training, or a first prefill): the lower triangle. This is why training can score all "
            "{T} positions in one forward: each row is a separate, honest prediction problem.\n"
            "- **One query over the cache** (generating one token at a time): the single new token is the latest "
            "position, so everything in the cache is its past — no mask needed.\n"
            "- **A chunk after a cached prefix** ({chunk} new tokens after {prefix} cached): the prefix is fully "
            "visible and the chunk is triangular within itself.\n\n"
            "The grids are drawn by the model's own `causal_mask_for`; the table lists every cell shown.",
            "行是查询（正在做预测的位置），列是键（它可以读取的位置）。每个位置只能看它自己和它之前的位置，"
            "因此模型永远无法偷看它要预测的那个 token。\n\n"
            "- **无缓存**（训练，或第一次预填充）：下三角。正因为如此，训练时一次 forward 就能给全部 {T} 个位置打分："
            "每一行都是一个独立且不作弊的预测题。\n"
            "- **一个查询面对缓存**（逐个生成 token）：新 token 是最新的位置，缓存里的一切都是它的过去，不需要掩码。\n"
            "- **缓存之后接一段**（已缓存 {prefix} 个，新来 {chunk} 个）：前缀完全可见，新的一段内部是三角形。\n\n"
            "这些网格由模型自己的 `causal_mask_for` 画出；表格列出图中的每一个格子。"),
    },
    "attention": {
        "title": ("Attention weights, layer {layer}, head {head} (reads kv head {kv})",
                  "注意力权重：第 {layer} 层，第 {head} 个头（读取第 {kv} 个 kv 头）"),
        "windowed": ("<br>queries/keys {lo}…{hi} of {T}; first column = weight summed over all earlier keys",
                     "<br>显示 {T} 个位置中的 {lo}…{hi}；第一列 = 更早所有键的权重之和"),
        "earlier": ("◀ earlier {n} (sum)", "◀ 更早 {n} 个（合计）"),
        "key": ("key (position being read)", "键（被读取的位置）"),
        "query": ("query (position reading)", "查询（读取的位置）"),
        "body": (
            "Each row shows where one position looks: the weights are softmax(q·kᵀ / √hd + mask) over the keys "
            "it may see, so every row sums to 1 and everything right of the diagonal is empty (the causal mask). "
            "q and k are the recorded ones, after the rotary rotation and the QK norm, so this is exactly what "
            "the model computed inside `scaled_dot_product_attention` (which never shows the weights; a test "
            "checks that these weights times v give back the recorded output).\n\n"
            "This layer has H = {H} query heads of size hd = {hd} and Hkv = {Hkv} key/value heads"
            " (when Hkv < H, several query heads share one key/value head: grouped-query attention). Try other "
            "heads and layers: some look at the previous token, some at the first token, some at matching words.",
            "每一行表示一个位置在看哪里：权重 = softmax(q·kᵀ / √hd + 掩码)，只在它能看到的键上取 softmax，"
            "所以每行之和为 1，对角线右侧全空（因果掩码）。这里的 q、k 是记录下来的、已经过旋转位置编码和 QK 归一化"
            "的张量，因此这正是模型在 `scaled_dot_product_attention` 内部算出的结果（该函数不会输出权重；"
            "有测试检查：这些权重乘以 v 能还原记录下来的注意力输出）。\n\n"
            "这一层有 H = {H} 个查询头，每个头 hd = {hd} 维，以及 Hkv = {Hkv} 个键/值头"
            "（Hkv < H 时，几个查询头共用一个键/值头：分组查询注意力 GQA）。换一换头和层：有的头看前一个 token，"
            "有的看第一个 token，有的看相同的词。"),
    },
    "softcap": {
        "title": ("Softcap at position {pos} ({token}): logits squashed into ±{cap:g}",
                  "位置 {pos}（{token}）的 softcap：logits 被压进 ±{cap:g}"),
        "curve": ("capped = 15·tanh(raw/15)", "截断后 = 15·tanh(原始/15)"),
        "hist": ("how the V logits are spread", "V 个 logits 的分布"),
        "probs": ("top {n} tokens: p without / with cap", "前 {n} 个 token：不加 / 加 softcap 的概率"),
        "points": ("this position's logits", "本位置的 logits"),
        "raw": ("raw logits", "原始 logits"),
        "capped": ("capped logits", "softcap 后"),
        "p_raw": ("p without cap", "不加 softcap 的概率"),
        "p_cap": ("p with cap (what the model uses)", "加 softcap 的概率（模型实际使用）"),
        "raw_axis": ("raw logit (lm_head output)", "原始 logit（lm_head 输出）"),
        "capped_axis": ("capped logit", "softcap 后的 logit"),
        "body": (
            "`lm_head` can produce any number; before the softmax the model passes every logit through "
            "{cap:g}·tanh(x/{cap:g}). Near zero this is the identity (the dashed line); large values bend towards "
            "±{cap:g} and can never pass it. That keeps the model from becoming arbitrarily confident and keeps "
            "training numerically calm.\n\n"
            "Here (position {pos}, {token}): the largest raw logit in magnitude is {max_raw:.2f}; {beyond} of the "
            "{V} raw logits lie beyond ±{cap:g}. The cap moves the distribution by a total variation distance of "
            "{tv:.4f} (0 = no change, 1 = completely different). The red dots are recorded (raw, capped) pairs "
            "from this forward: they sit on the curve.",
            "`lm_head` 可以输出任意大小的数；在 softmax 之前，模型让每个 logit 经过 {cap:g}·tanh(x/{cap:g})。"
            "在 0 附近它几乎就是恒等映射（虚线）；数值越大越被压弯，趋近 ±{cap:g} 但永远越不过去。"
            "这样模型不会变得无限自信，训练时数值也更稳定。\n\n"
            "本例（位置 {pos}，{token}）：原始 logit 的最大绝对值为 {max_raw:.2f}；{V} 个原始 logits 中有 {beyond} 个"
            "超出 ±{cap:g}。softcap 使概率分布改变了 {tv:.4f}（总变差距离：0 表示不变，1 表示完全不同）。"
            "红点是这次 forward 记录下的（原始，截断后）数值对，它们正好落在曲线上。"),
    },
    "next_token": {
        "title": ("What each position predicts next (the bar chart: position {pos}, {token})",
                  "每个位置预测的下一个 token（柱状图：位置 {pos}，{token}）"),
        "windowed": ("<br>heatmap: positions {lo}…{hi} of {T}", "<br>热力图：显示 {T} 个位置中的 {lo}…{hi}"),
        "heat": ("top {k} next tokens per position (red box = the real next token)",
                 "每个位置概率最高的 {k} 个候选（红框 = 实际的下一个 token）"),
        "bar": ("top {k} at position {pos} ({token})", "位置 {pos}（{token}）的前 {k} 名"),
        "lines": ("uncertainty and the real next token, every position", "每个位置的不确定度与实际下一个 token 的概率"),
        "actual": ("real next token", "实际的下一个 token"),
        "rank": ("rank", "名次"),
        "entropy": ("entropy (nats)", "熵（nats）"),
        "p_next": ("p(real next token)", "p（实际下一个 token）"),
        "body": (
            "The logits are [B, T, V]: one score per vocabulary entry **at every position**. Row i is the "
            "model's guess for the token after position i, made from tokens 0 … i only. The last row is the one "
            "generation uses; all the others are what training learns from.\n\n"
            "Softmax turns each row into probabilities. Entropy measures the uncertainty: 0 = sure of one token, "
            "ln V = {max_entropy:.2f} nats = a uniform guess over all {V} tokens. Where the prompt continues we know "
            "the right answer: over its {n} known next tokens the model gave on average p = {mean_p:.3f}, and ranked "
            "it first {top1} times. (Top-k is taken on the device; only these numbers leave it.)",
            "logits 的形状是 [B, T, V]：**每个位置**都给词表里的每个 token 打一个分。第 i 行是模型根据第 0 … i 个 "
            "token 对第 i 个位置之后那个 token 的猜测。生成时只用最后一行，其余各行都是训练时学习的材料。\n\n"
            "softmax 把每一行变成概率。熵衡量不确定度：0 表示确定是某一个 token，ln V = {max_entropy:.2f} nats 表示在全部 "
            "{V} 个 token 中均匀乱猜。提示后面还有内容的位置，我们知道正确答案：在这 {n} 个已知的下一个 token 上，"
            "模型给出的平均概率为 {mean_p:.3f}，其中 {top1} 次把它排在第一。（top-k 在设备上计算，只有这些数字被传回。）"),
    },
    "training": {
        "title": ("One forward, {n} training examples: loss = {loss:.4f}",
                  "一次 forward，{n} 个训练样本：loss = {loss:.4f}"),
        "ce": ("cross-entropy (nats)", "交叉熵（nats）"),
        "loss_line": ("forward(idx, targets) = {loss:.4f} = mean", "forward(idx, targets) = {loss:.4f} = 平均值"),
        "uniform_line": ("uniform guess ln V = {u:.2f}", "均匀乱猜 ln V = {u:.2f}"),
        "pair_axis": ("position: input token → target token", "位置：输入 token → 目标 token"),
        "body": (
            "For training, the targets are the input shifted left by one: the target of position i is token i+1. "
            "The last position has no known next token, so its target is −1 and the loss ignores it. With B = {B} "
            "row(s) of T = {T} tokens that is {n} examples — all scored by **one** forward, because the causal mask "
            "makes each position's prediction depend only on its own prefix.\n\n"
            "Each bar is −log p(target) at that position. Their mean, {mean:.6f}, equals the loss that "
            "`forward(idx, targets)` returns, {loss:.6f} (difference {diff:.1e}). `loss_reduction='none'` would "
            "return the bars themselves. A model that knows nothing scores about ln {V} = {u:.2f} everywhere.\n\n"
            "Doing it one prediction at a time would need T separate forwards of growing length; the logits "
            "[B, T, V] are the price of getting all of them at once.",
            "训练时，targets 就是把输入向左平移一位：位置 i 的目标是第 i+1 个 token。最后一个位置没有已知的下一个 token，"
            "所以它的目标设为 −1，损失函数会忽略它。B = {B} 条、每条 T = {T} 个 token，共 {n} 个样本——全部由**一次** "
            "forward 打分，因为因果掩码保证每个位置的预测只依赖它自己的前缀。\n\n"
            "每根柱子是该位置的 −log p(目标)。它们的平均值 {mean:.6f} 等于 `forward(idx, targets)` 返回的 loss "
            "{loss:.6f}（差 {diff:.1e}）。`loss_reduction='none'` 返回的就是这些柱子本身。什么都没学到的模型，"
            "每个位置大约都是 ln {V} = {u:.2f}。\n\n"
            "如果每次只预测一个 token，就需要 T 次长度递增的 forward；输出 [B, T, V] 的 logits 就是一次拿到全部预测的代价。"),
    },
    "causality": {
        "title": ("Change token {j} ({old} → {new}): largest change before position {j} = {leak:g}",
                  "修改第 {j} 个 token（{old} → {new}）：位置 {j} 之前的最大变化 = {leak:g}"),
        "windowed": ("<br>positions {lo}…{hi} of {T}", "<br>显示 {T} 个位置中的 {lo}…{hi}"),
        "heat": ("log10 max |change| of the residual stream (blank = exactly 0)",
                 "残差流最大变化量的 log10（空白 = 恰好为 0）"),
        "bars": ("max |change| of the logits per position", "每个位置 logits 的最大变化量"),
        "body": (
            "We run forward a second time with token {j} replaced ({old} → {new}) and compare every recorded stage "
            "with the first run. Positions 0 … {j}−1 ({n_before} of them) do not change **at all**: the largest "
            "difference there is {leak:g}, exactly zero, not merely small. From position {j} on the change "
            "spreads (up to {after:.3g} in the logits).\n\n"
            "This is the causal mask at work, and it is why training on all positions at once is honest: the "
            "prediction at position i cannot depend on tokens after i, including the token it is asked to predict.",
            "我们把第 {j} 个 token 换掉（{old} → {new}）再跑一次 forward，并把每个记录点与第一次的结果比较。位置 "
            "0 … {j}−1（共 {n_before} 个）**完全没有**变化：那里的最大差异是 {leak:g}，恰好为零，而不仅仅是很小。"
            "从位置 {j} 开始，变化向后扩散（logits 最多变化 {after:.3g}）。\n\n"
            "这就是因果掩码的作用，也是一次性在所有位置上训练不会作弊的原因：位置 i 的预测不可能依赖 i 之后的 token，"
            "包括它要预测的那个 token。"),
    },
    "logit_lens": {
        "title": ("Logit lens: each layer's best guess (text) and p(final answer) (colour)",
                  "logit lens：每一层的最佳猜测（文字）与最终答案的概率（颜色）"),
        "windowed": ("<br>positions {lo}…{hi} of {T}", "<br>显示 {T} 个位置中的 {lo}…{hi}"),
        "x": ("position (input token)", "位置（输入 token）"),
        "body": (
            "The residual stream has the same shape [B, T, C] after every block, so we can read it early: push the "
            "stream after the embedding and after each of the {L} blocks through the model's own final norm, "
            "`lm_head` and softcap, as if the model stopped there. Each cell shows that layer's top token; the "
            "colour is the probability it already gives to the model's final answer.\n\n"
            "The last row is exactly the real output (at the last block the lens *is* forward): it agrees with "
            "the model's top token at {agree:.0%} of the positions shown. At the last position ({last}) the final "
            "answer first becomes the top guess at: {first_layer}.",
            "残差流在每个 Block 之后形状都一样，都是 [B, T, C]，所以可以提前读取：把嵌入之后以及 {L} 个 Block 各自输出的"
            "残差流，送进模型自己的最终归一化、`lm_head` 和 softcap，就好像模型在那里就停下了。每个格子显示该层的首选 "
            "token；颜色表示它给模型最终答案的概率。\n\n"
            "最后一行就是真正的输出（在最后一个 Block 处，logit lens 就是 forward 本身）：在所显示的位置中，"
            "它与模型首选 token 一致的比例为 {agree:.0%}。在最后一个位置（{last}），最终答案第一次成为首选是在：{first_layer}。"),
    },
    "kv_cache": {
        "title": ("KV cache: {n} incremental steps vs one full forward — max |Δ logit| = {diff:.2g}",
                  "KV 缓存：{n} 步增量计算 vs 一次完整 forward —— 最大 |Δ logit| = {diff:.2g}"),
        "step": ("step {s}: T0={T0}, +{Tq} ({regime})", "第 {s} 步：T0={T0}，+{Tq}（{regime}）"),
        "prefill": ("prefill", "预填充"),
        "one_query": ("one token", "单个 token"),
        "chunk": ("chunk", "一段"),
        "fill": ("cache rows: light = already cached (T0), dark = written by this step",
                 "缓存占用：浅色 = 已缓存（T0），深色 = 本步写入"),
        "diff": ("|incremental − full| logits per position", "每个位置增量与完整 logits 之差"),
        "body": (
            "The same {T} tokens are fed in pieces ({steps}) through a KV cache instead of all at once. Each "
            "step only computes the new tokens; their keys and values are written into the cache, and attention "
            "reads everything cached so far. T0 — the number of positions already cached — is where the rotary "
            "slice starts, so each new token is rotated as its true position.\n\n"
            "The logits agree with the single full forward to {diff:.2g} (floating-point rounding of a different "
            "order of operations, not a different computation). The cache holds keys and values for "
            "{L} layers × {B} row(s) × {Hkv} kv heads × hd {hd}: {kib:.1f} KiB for these positions. "
            "This is what makes generation linear: old tokens are never recomputed.",
            "同样的 {T} 个 token，不再一次性输入，而是分段（{steps}）经过 KV 缓存输入。每一步只计算新 token；"
            "它们的键和值写入缓存，注意力读取到目前为止缓存的全部内容。T0（缓存里已有的位置数）就是旋转位置切片的起点，"
            "所以每个新 token 都按它真实的位置旋转。\n\n"
            "得到的 logits 与一次完整 forward 的差别不超过 {diff:.2g}（只是运算顺序不同带来的浮点舍入，而不是不同的计算）。"
            "缓存保存 {L} 层 × {B} 条 × {Hkv} 个 kv 头 × hd {hd} 的键和值：这些位置共 {kib:.1f} KiB。"
            "正因如此生成才是线性的：旧 token 永远不会被重新计算。"),
    },
    "generate": {
        "title": ("generate, {n} steps: temperature {temperature:g}, top-k {top_k}, seed {seed}",
                  "generate 共 {n} 步：温度 {temperature:g}，top-k {top_k}，随机种子 {seed}"),
        "off": ("off", "关闭"),
        "heat": ("sampled from (after top-k, temperature); red box = chosen",
                 "采样分布（经 top-k 与温度后）；红框 = 选中"),
        "cost": ("cost of generating n tokens after a {P}-token prompt (counted FLOPs)",
                 "在 {P} 个 token 的提示之后生成 n 个 token 的计算量（按 FLOPs 计）"),
        "step": ("step {s} → {token}", "第 {s} 步 → {token}"),
        "below": (" (rank {rank}, p={p:.3f})", "（第 {rank} 名，p={p:.3f}）"),
        "sampled": ("sampled token", "采样到的 token"),
        "rank": ("rank in the distribution", "在分布中的名次"),
        "naive": ("naive generate (recomputes the prefix)", "朴素 generate（每步重算整个前缀）"),
        "cached": ("with KV cache", "使用 KV 缓存"),
        "n_new": ("new tokens n", "新生成的 token 数 n"),
        "body": (
            "`forward` computes; `generate` decides. Each step runs forward on the whole sequence so far, keeps "
            "only the **last** position's logits, optionally keeps the top-k of them (the rest become −∞), divides by "
            "the temperature (below 1 sharpens, above 1 flattens; 0 means always take the most likely token), turns "
            "them into probabilities and draws one token with a random generator seeded with {seed}. The token is "
            "appended and the loop repeats. Same seed, same settings → same tokens (temperature {temperature:g}, "
            "top-k {top_k} here). Generated: “{text}”.\n\n"
            "This naive loop recomputes the whole prefix every step, so its cost grows quadratically: for n = {n} "
            "new tokens after a {P}-token prompt it spends {naive:.3g} GFLOP against {cached:.3g} GFLOP with a KV "
            "cache ({ratio:.1f}×). Counted FLOPs: 2 per multiply-add of every weight matrix, plus attention over the "
            "keys; see `flops_per_token`.",
            "`forward` 负责计算，`generate` 负责决策。每一步都对目前为止的整个序列运行一次 forward，只保留**最后一个**位置的 "
            "logits；可以只保留其中最大的 top-k 个（其余设为 −∞），再除以温度（小于 1 分布更尖锐，大于 1 更平坦，"
            "0 表示总是取概率最大的 token），转成概率后，用种子为 {seed} 的随机数生成器抽出一个 token。"
            "把它接到序列末尾，再循环。相同的种子和设置 → 相同的结果（这里温度 {temperature:g}，top-k {top_k}）。"
            "生成内容：“{text}”。\n\n"
            "这个朴素循环每一步都重算整个前缀，所以代价按平方增长：在 {P} 个 token 的提示之后生成 n = {n} 个 token，"
            "需要 {naive:.3g} GFLOP，而使用 KV 缓存只需 {cached:.3g} GFLOP（{ratio:.1f} 倍）。FLOPs 的计数方法：每个权重矩阵的"
            "每次乘加算 2 次，再加上对所有键的注意力计算；见 `flops_per_token`。"),
    },
    "generate_time": {
        "title": ("Measured time: naive generate vs KV cache (greedy, {P}-token prompt, {device})",
                  "实测时间：朴素 generate vs KV 缓存（贪婪解码，提示 {P} 个 token，{device}）"),
        "body": (
            "Wall-clock time on this machine with this model (time.perf_counter). For {n} new tokens the naive loop "
            "took {naive:.1f} ms and the cached one {cached:.1f} ms ({speedup:.1f}× faster). The gap widens with "
            "length because the naive loop redoes the whole prefix at every step.",
            "在本机、本模型上测得的墙钟时间（time.perf_counter）。生成 {n} 个新 token 时，朴素循环用了 {naive:.1f} ms，"
            "使用缓存的循环用了 {cached:.1f} ms（快 {speedup:.1f} 倍）。长度越长差距越大，因为朴素循环每一步都要重做整个前缀。"),
    },
}


def t(view: str, key: str, lang: str = "en", **values) -> str:
    """The text for (view, key) in `lang` ("en" or "zh"), with {placeholders} filled from `values`."""
    if lang not in LANGS:
        raise ValueError(f"lang must be one of {LANGS}, got {lang!r}")
    text = TEXT[view][key][LANGS.index(lang)]
    return text.format(**values) if values else text
