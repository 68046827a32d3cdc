"""UI labels in English and Simplified Chinese, and a registry that relabels every component on a language switch.

Only the app's own chrome lives here (buttons, sliders, tab names, notices). The explanations of the views come from
explain/ and the lesson answers from demo/lessons.py.
"""
from __future__ import annotations

from typing import Callable

import gradio as gr

LANGS = {"en": "English", "zh": "简体中文"}

LABELS: dict[str, tuple[str, str]] = {
    # header
    "title": ("Inside Forward — a nanochat GPT, and what happens inside its forward pass",
              "Inside Forward —— 一个 nanochat GPT，以及它的前向传播里发生了什么"),
    "model_line": ("Model", "模型"),
    "params": ("params", "参数"),
    "layers": ("layers", "层"),
    "context": ("context", "上下文"),
    "language": ("Language", "语言"),
    "copy_link": ("🔗 Copy link", "🔗 复制链接"),
    "link": ("Link to this view (Copy link fills it in and copies it)", "当前视图的链接（点“复制链接”生成并复制）"),
    # tabs
    "tab_chat": ("Chat", "对话"),
    "tab_inside": ("Inside forward", "前向传播内部"),
    "tab_generate": ("Generate step by step", "逐步生成"),
    "tab_lessons": ("Lessons", "课程"),
    # chat
    "chatbot": ("Conversation", "对话"),
    "message": ("Your message", "你的消息"),
    "message_ph": ("Type a message and press Enter…", "输入消息后按回车…"),
    "send": ("Send", "发送"),
    "stop": ("⏹ Stop", "⏹ 停止"),
    "regenerate": ("🔄 Regenerate", "🔄 重新生成"),
    "clear": ("🗑 Clear", "🗑 清空"),
    "look_inside": ("🔍 Look inside this reply", "🔍 查看这条回复的内部"),
    "sampling": ("Sampling settings", "采样设置"),
    "temperature": ("Temperature (0 = greedy)", "温度（0 = 贪婪）"),
    "top_k": ("Top-k (0 = off)", "Top-k（0 = 关闭）"),
    "top_p": ("Top-p (1 = off)", "Top-p（1 = 关闭）"),
    "max_tokens": ("Max new tokens", "最多生成 token 数"),
    "seed": ("Seed (a number, or 'random')", "随机种子（数字，或 'random'）"),
    "gen_seed": ("Seed", "随机种子"),
    "stats_tokens": ("tokens", "个 token"),
    "stats_tps": ("tokens/s", "token/秒"),
    "stats_ttft": ("first token after", "首个 token 用时"),
    "stats_seed": ("seed", "种子"),
    "stats_stop": ("stopped by", "结束原因"),
    "stop_assistant_end": ("end of reply", "回复结束"),
    "stop_max_tokens": ("max tokens", "达到最大 token 数"),
    "stop_context_full": ("context full", "上下文已满"),
    "stop_stopped": ("Stop button", "停止按钮"),
    "dropped_turns": ("⚠️ The conversation outgrew the model's context of {ctx} tokens: the {n} oldest message(s) "
                      "were left out of the prompt.",
                      "⚠️ 对话超出了模型 {ctx} 个 token 的上下文：最早的 {n} 条消息没有放进提示词。"),
    "empty_message": ("Type a message first.", "请先输入消息。"),
    "message_too_long": ("This message alone is {n} tokens; the context holds {ctx} with room for the reply. "
                         "Please shorten it.",
                         "这条消息本身就有 {n} 个 token，而上下文只有 {ctx} 个（还要留给回复）。请缩短它。"),
    "nothing_to_regenerate": ("There is no reply to regenerate yet.", "还没有可以重新生成的回复。"),
    "bad_seed": ("Seed must be a whole number or 'random'.", "种子必须是整数或 'random'。"),
    "no_reply_yet": ("Chat first: there is no conversation to look inside yet.", "请先对话：还没有可以查看的内容。"),
    # inside forward
    "preset": ("Example", "示例"),
    "prompt": ("Prompt (text)", "提示词（文本）"),
    "prompt_ph": ("Any text; it is tokenized and run through one forward pass.", "任意文本；分词后做一次前向传播。"),
    "ids": ("…or token ids (rows separated by ';', a '|' marks the cached prefix)",
            "……或者 token id（用 ';' 分隔每一行，'|' 标出已缓存的前缀）"),
    "model_choice": ("Model for this view", "此视图使用的模型"),
    "model_loaded": ("Loaded model", "已加载的模型"),
    "model_tutorial": ("Random-init tutorial config (4 layers, 4 heads, 128 wide, vocab 50304)",
                       "随机初始化的教程配置（4 层、4 头、宽 128、词表 50304）"),
    "run_forward": ("▶ Run forward", "▶ 运行前向传播"),
    "focus": ("Show", "显示"),
    "view_all": ("All views", "全部视图"),
    "view_shapes": ("Shapes and stages", "形状与阶段"),
    "view_rotary": ("Rotary slice", "旋转位置切片"),
    "view_mask": ("Causal mask", "因果掩码"),
    "view_attention": ("Attention", "注意力"),
    "view_softcap": ("Softcap", "Softcap"),
    "view_next_token": ("Next-token distribution", "下一个 token 的分布"),
    "view_training": ("Training loss per position", "逐位置的训练损失"),
    "view_causality": ("Causality proof", "因果性证明"),
    "view_logit_lens": ("Logit lens", "Logit lens"),
    "view_kv_cache": ("KV cache", "KV 缓存"),
    "layer": ("Layer", "层"),
    "head": ("Head", "头"),
    "position": ("Position", "位置"),
    "data": ("Data", "数据"),
    "download_csv": ("⬇ CSV", "⬇ CSV"),
    "download_html": ("⬇ Figure (HTML)", "⬇ 图（HTML）"),
    "png_note": ("PNG export needs the kaleido package, which is not installed; the HTML file is interactive and "
                 "its camera icon saves a PNG.",
                 "导出 PNG 需要 kaleido 包（未安装）；HTML 文件可交互，其中的相机图标可以保存 PNG。"),
    "empty_prompt": ("The prompt is empty: type some text or token ids.", "提示词为空：请输入文本或 token id。"),
    "too_big": ("At most {rows} rows (sequences) of at most {T} ids at once.",
                "一次最多 {rows} 行（序列），每行最多 {T} 个 id。"),
    "prompt_too_long": ("The prompt is {n} tokens; this model's context is {ctx}. It was cut to the last {ctx}.",
                        "提示词有 {n} 个 token，超过模型上下文 {ctx}，已截取最后 {ctx} 个。"),
    "bad_ids": ("Token ids must be whole numbers in [0, {v}): {bad}", "token id 必须是 [0, {v}) 范围内的整数：{bad}"),
    "ragged_ids": ("Every row of token ids must have the same length.", "每一行 token id 的长度必须相同。"),
    "batch_note": ("Batch of {b} rows: the pictures show row 0, the shapes table shows the whole batch.",
                   "批次共 {b} 行：图中显示第 0 行，形状表显示整个批次。"),
    "random_label": ("random-init", "随机初始化"),
    # generate step by step
    "gen_prompt": ("Prompt", "提示词"),
    "gen_reset": ("⟲ Start over", "⟲ 重新开始"),
    "gen_step": ("➜ Next token", "➜ 下一个 token"),
    "gen_play": ("▶ Auto-play", "▶ 自动播放"),
    "gen_pause": ("⏸ Pause", "⏸ 暂停"),
    "gen_steps": ("Tokens to generate", "生成 token 数"),
    "gen_text": ("Text so far", "目前的文本"),
    "gen_history": ("Steps", "各步"),
    "gen_cost": ("⚖ Compare naive generate with the cached engine", "⚖ 比较朴素 generate 与带缓存的引擎"),
    "gen_cost_len": ("Tokens to generate in the comparison", "比较中生成的 token 数"),
    "gen_done": ("Reached the step limit — start over or raise it.", "已到步数上限——重新开始或调高上限。"),
    # lessons
    "lessons_intro": ("Questions a newcomer asks about `forward` and `generate`. Each answer is short; the button "
                      "opens the live view that shows it on a real model.",
                      "初学者关于 `forward` 和 `generate` 的常见问题。每个回答都很短；按钮会打开在真实模型上演示它的实时视图。"),
    "show_me": ("Show me live →", "现场演示 →"),
    # errors
    "load_failed": ("⚠️ Could not load the requested model ({why}); serving {name} instead.",
                    "⚠️ 无法加载指定的模型（{why}）；改用 {name}。"),
}


def t(key: str, lang: str = "en", **fmt) -> str:
    """The label `key` in `lang` ("en" or "zh"), formatted with `fmt`."""
    en, zh = LABELS[key]
    text = zh if lang == "zh" else en
    return text.format(**fmt) if fmt else text


def lang_code(choice: str | None) -> str:
    """Radio value ("English" / "简体中文") or code ("en" / "zh") -> code."""
    for code, name in LANGS.items():
        if choice in (code, name):
            return code
    return "en"


class Relabel:
    """Remembers which property of which component shows which label, so one event can switch them all."""

    def __init__(self) -> None:
        self._items: dict[int, tuple[gr.components.Component, dict[str, str | Callable[[str], object]]]] = {}

    def __call__(self, component, key: str | None = None, **props: str | Callable[[str], object]):
        """Register `component`: its `label` shows `key`. Other props: a key (value="send") or a function of the
        language code (choices=lambda lang: [...])."""
        if key is not None:
            props = {"label": key, **props}
        entry = self._items.setdefault(id(component), (component, {}))
        entry[1].update(props)
        return component

    @property
    def components(self) -> list:
        return [c for c, _ in self._items.values()]

    def updates(self, lang: str) -> list:
        return [gr.update(**{prop: key(lang) if callable(key) else t(key, lang) for prop, key in props.items()})
                for _, props in self._items.values()]
