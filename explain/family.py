"""Which member of the nanochat family a model is, in words: its commit, and each feature it adds to the tutorial's
forward with the commit that introduced it (gpt/nanochat/features.py's card; text: feature.<name>)."""
from __future__ import annotations

from gpt.nanochat import CARD, Features, GPTConfig, Member, member as member_named
from text import t


def feature_values(config: GPTConfig, f: Features) -> dict:
    """The numbers the feature.<name> texts name, for this config and these switches."""
    return dict(V=config.vocab_size, Vp=f.padded_vocab(config.vocab_size), pattern=config.window_pattern,
                L=config.sequence_len, S=f.short_window_of(config.sequence_len), scale=f"{f.ve_gate_scale:g}",
                channels=f.ve_gate_channels, cap=f"{f.softcap:g}", base=f"{f.rotary_base:g}", qk=f"{f.qk_scale:g}",
                mid=f.backout_layer(config.n_layer))


def feature_line(name: str, commit: str, values: dict, lang: str) -> str:
    """One feature as a Markdown list item: its title, the commit that introduced it, what it does (with `values`)."""
    return t("family.item", lang, name=t(f"feature_title.{name}", lang), commit=commit,
             what=t(f"feature.{name}", lang, **values))


def feature_card_md(config: GPTConfig, member: Member, lang: str = "en", same_files: tuple[str, ...] = ()) -> str:
    """Markdown: the member and date, then one line per feature it adds (with this config's numbers), and, when other
    members write identical files, which ones and that `--arch` picks."""
    f = member.features
    values = feature_values(config, f)
    card = f.changed()
    intro = t("family.intro_later" if card else "family.intro_tutorial", lang)
    lines = [t("family.heading", lang, member=member.name, date=member.date, intro=intro)]
    lines += [feature_line(name, commit, values, lang) for name, commit in CARD if name in card]
    if same_files:
        which = "; ".join(f"{m}: {member_named(m).title}" for m in same_files)
        lines.append(t("family.same_files", lang, others=", ".join(same_files), which=which, member=member.name))
    return "\n".join(lines)
