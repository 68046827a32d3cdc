"""Lessons tab: the syllabus's questions, a short answer to each, and a button that opens the live view answering it."""
from __future__ import annotations

from dataclasses import dataclass

import gradio as gr

from demo.i18n import Relabel, t


@dataclass(frozen=True)
class Lesson:
    question: tuple[str, str]  # (en, zh)
    answer: tuple[str, str]
    tab: str  # "inside" or "generate"
    settings: dict  # link keys -> values to set before the view runs (see demo.app.link_fields)


LESSONS: list[Lesson] = [
    Lesson(("What does `forward` do, stage by stage?", "`forward` 分几个阶段，每个阶段做什么？"),
           ("It takes token ids [B, T] and returns scores [B, T, V]. First it picks the rotary angles for these "
            "positions, then embeds and normalises the ids, runs every block (attention mixes in earlier positions, "
            "the MLP reworks each one), normalises again, projects onto the vocabulary and softcaps. Given targets it "
            "returns a loss instead. The shapes figure walks through every tensor.",
            "输入 token id [B, T]，输出分数 [B, T, V]。先取出这些位置对应的旋转角度，再把 id 嵌入成向量并归一化，"
            "依次经过每个 Block（注意力汇集前面位置的信息，MLP 逐位置加工），再归一化，投影到词表并做 softcap。"
            "如果给了 targets，就改为返回损失。形状图逐个展示了途经的每个张量。"),
           "inside", {"preset": "story", "focus": "shapes"}),
    Lesson(("Input [2, 5] gave logits [2, 5, 50304]. What do the three numbers mean?",
            "输入 [2, 5] 得到 logits [2, 5, 50304]，这三个数分别是什么意思？"),
           ("2 is the batch: two independent sequences. 5 is the position: each sequence has five tokens and every "
            "one of them gets an output. 50304 is the vocabulary: one score per possible next token. This runs the "
            "tutorial's own random-init config (4 layers, 4 heads, width 128) on its own ids.",
            "2 是批次：两条互不相干的序列。5 是位置：每条序列 5 个 token，每个位置都有一份输出。50304 是词表大小："
            "每个可能的下一个 token 各一个分数。这里运行的正是教程中的随机初始化配置（4 层、4 头、宽 128）和它的输入 id。"),
           "inside", {"preset": "tutorial_2x5", "focus": "shapes"}),
    Lesson(("Only the next token is needed — why predict at every position?",
            "只需要预测下一个 token，为什么每个位置都要预测？"),
           ("Generation reads only the last row. But position i predicts token i+1 from tokens 0…i, so one forward over "
            "T tokens is T next-token predictions at once. The figure shows each position's guesses, and how likely "
            "the token that really comes next was.",
            "生成时只读最后一行。但位置 i 是根据第 0…i 个 token 预测第 i+1 个，所以对 T 个 token 做一次前向就是同时做了 "
            "T 次下一个 token 预测。图中给出每个位置的候选，以及真正的下一个 token 的概率。"),
           "inside", {"preset": "story", "focus": "next_token"}),
    Lesson(("How does training use all positions — [2, 128] in, one number out?",
            "训练怎样用上所有位置——输入 [2, 128]，输出一个数？"),
           ("The targets are the input shifted left by one. Cross-entropy is computed at each of the 2 × 128 "
            "positions and averaged into the loss: one forward, 256 training examples. The view lists the loss at "
            "every position and checks that their mean is the returned loss.",
            "targets 就是把输入左移一位。每个位置（共 2 × 128 个）各算一个交叉熵，再取平均得到损失：一次前向，256 个训练样本。"
            "该视图列出每个位置的损失，并核对它们的平均值就是返回的损失。"),
           "inside", {"preset": "tutorial_train", "focus": "training"}),
    Lesson(("If every position is trained at once, can position 0 peek at later tokens?",
            "所有位置一起训练，位置 0 会不会偷看后面的 token？"),
           ("No: the causal mask lets position i attend only to positions ≤ i. The proof changes one token and "
            "measures how every position's logits move: positions before the change do not move at all.",
            "不会：因果掩码只允许位置 i 关注不超过 i 的位置。证明方法是改掉一个 token，再看每个位置的 logits 怎么变："
            "改动之前的位置一点也不变。"),
           "inside", {"preset": "story", "focus": "causality"}),
    Lesson(("What is the softcap 15·tanh(x/15) for?", "softcap 15·tanh(x/15) 有什么用？"),
           ("It keeps every score inside (−15, 15) smoothly: small scores pass almost unchanged, huge ones are "
            "flattened, so no single logit can explode. The figure puts this position's real logits on the curve.",
            "它把每个分数平滑地限制在 (−15, 15) 内：小的分数几乎不变，特别大的被压平，任何一个 logit 都不会爆炸。"
            "图中把当前位置的真实 logits 画在这条曲线上。"),
           "inside", {"preset": "story", "focus": "softcap"}),
    Lesson(("What does `generate` do, one token at a time?", "`generate` 是怎样一个 token 一个 token 地生成的？"),
           ("It calls forward on the whole sequence, keeps only the last position's scores, cuts them to the top k, "
            "divides by the temperature, samples one token with a seeded generator, appends it and repeats. Step "
            "through it and watch the distribution each time.",
            "它对整条序列调用 forward，只保留最后一个位置的分数，截取前 k 个，除以温度，用固定种子的随机数生成器抽一个 token，"
            "拼到序列末尾，然后重复。逐步执行，观察每一步的分布。"),
           "generate", {"gprompt": "Once upon a time", "gtemp": 0.8, "gtopk": 50, "gseed": 42}),
    Lesson(("Temperature 0 versus 1: what changes?", "温度 0 与温度 1 有什么不同？"),
           ("Temperature 0 always takes the most likely token, so the text is the same every run. Higher "
            "temperatures flatten the distribution and the seed decides which token is drawn. Try 0, then raise it.",
            "温度 0 总是选概率最高的 token，所以每次结果相同。温度越高分布越平坦，由种子决定抽到哪个 token。先试 0，再调高。"),
           "generate", {"gprompt": "Once upon a time", "gtemp": 0.0, "gtopk": 0, "gseed": 42}),
    Lesson(("`forward` versus `generate`, and why the naive loop gets slow",
            "`forward` 与 `generate` 的区别，以及朴素循环为什么越来越慢"),
           ("forward is one computation: ids in, scores out, no randomness. generate is the loop around it that "
            "decides and appends tokens. The naive loop re-reads the whole prefix for every new token (cost grows "
            "with the square of the length); the engine keeps keys and values in a cache and reads one new "
            "position per step. The comparison counts and times both.",
            "forward 是一次计算：输入 id，输出分数，没有随机性。generate 是包在外面的循环，负责挑选并拼接 token。"
            "朴素循环每生成一个 token 都要重读整个前缀（代价随长度平方增长）；引擎把 key 和 value 存在缓存里，每步只算一个新位置。"
            "对比图统计并计时了两者。"),
           "generate", {"gprompt": "Once upon a time", "gcost": True}),
    Lesson(("With a KV cache, how does the next call know it starts at position 3?",
            "有了 KV 缓存，下一次调用怎么知道从位置 3 开始？"),
           ("After [100, 200, 300] the cache holds 3 positions, so T0 = 3. Feeding [400] slices the rotary table at "
            "[3:4] and lets that one query attend to all 4 keys. The view checks that this incremental result equals "
            "one full forward over all four tokens.",
            "处理完 [100, 200, 300] 后缓存里有 3 个位置，所以 T0 = 3。再输入 [400] 时，旋转表取 [3:4] 这一行，"
            "这个查询可以关注全部 4 个 key。该视图核对增量计算的结果与对四个 token 做一次完整前向完全相同。"),
           "inside", {"preset": "tutorial_kv", "focus": "kv_cache"}),
]


@dataclass
class LessonsTab:
    buttons: list[gr.Button]
    texts: list[gr.Markdown]


def lesson_md(lesson: Lesson, i: int, lang: str) -> str:
    zh = lang == "zh"
    return f"### {i + 1}. {lesson.question[zh]}\n\n{lesson.answer[zh]}"


def build(relabel: Relabel) -> LessonsTab:
    intro = gr.Markdown(t("lessons_intro"))
    relabel(intro, value="lessons_intro")
    buttons, texts = [], []
    for i, lesson in enumerate(LESSONS):
        with gr.Group():
            md = gr.Markdown(lesson_md(lesson, i, "en"), elem_id=f"lesson-{i}", elem_classes=["lesson"])
            relabel(md, value=lambda lang, lesson=lesson, i=i: lesson_md(lesson, i, lang))
            btn = relabel(gr.Button(t("show_me"), size="sm", elem_id=f"lesson-btn-{i}"), value="show_me")
        buttons.append(btn)
        texts.append(md)
    return LessonsTab(buttons, texts)
