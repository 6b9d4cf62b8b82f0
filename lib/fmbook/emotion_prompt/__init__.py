"""EmotionPrompt: emotional stimuli appended to a task's prompt (Li et al., arXiv 2307.11760).

Sec. 2.1 of the paper: eleven stimuli EP01-EP11 drawn from three psychological theories
(self-monitoring, social cognitive theory, cognitive emotion regulation); the stimulus is appended
after the original prompt. Sec. 2.2-2.3: zero-shot and few-shot evaluation on Instruction
Induction (here: the generated tasks of :mod:`fmbook.emotion_prompt.instruction_induction`), reported as relative
improvement over the original prompt. Sec. 3 ("why"): input attention contributions of the
stimulus words; here a leave-one-word-out measure on the answer's log-likelihood.
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass
from typing import Callable, Sequence

import numpy as np
import pandas as pd

from fmbook.emotion_prompt import instruction_induction as ii
from fmbook.emotion_prompt.extract import answer_span, extract_answer
from fmbook.emotion_prompt import analysis
from fmbook.core.lm import CausalLM, DecodeConfig


class EmotionPromptError(ValueError):
    """A bad parameter (the message names it and the allowed values)."""


# ------------------------------------------------------------------------------------------
# The stimuli (Sec. 2.1, Fig. 1 of the paper), verbatim
# ------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Stimulus:
    id: str
    text: str
    groups: tuple[str, ...]


SELF_MONITORING = "self-monitoring"
SOCIAL_COGNITIVE = "social cognitive theory"
EMOTION_REGULATION = "cognitive emotion regulation"
COMPOUND = "compound (EP01+EP02+EP03 in spirit)"

STIMULI: dict[str, Stimulus] = {s.id: s for s in [
    Stimulus("EP01", "Write your answer and give me a confidence score between 0-1 for your answer.",
             (SELF_MONITORING,)),
    Stimulus("EP02", "This is very important to my career.", (SELF_MONITORING,)),
    Stimulus("EP03", "You'd better be sure.", (SELF_MONITORING, EMOTION_REGULATION)),
    Stimulus("EP04", "Are you sure?", (SELF_MONITORING, EMOTION_REGULATION)),
    Stimulus("EP05", "Are you sure that's your final answer? It might be worth taking another look.",
             (SELF_MONITORING, EMOTION_REGULATION)),
    Stimulus("EP06", "Provide your answer and a confidence score between 0-1 for your prediction. "
             "Additionally, briefly explain the main reasons supporting your classification decision "
             "to help me understand your thought process. This task is vital to my career, and I "
             "greatly value your thorough analysis.", (COMPOUND,)),
    Stimulus("EP07", "Are you sure that's your final answer? Believe in your abilities and strive for "
             "excellence. Your hard work will yield remarkable results.",
             (SOCIAL_COGNITIVE, EMOTION_REGULATION)),
    Stimulus("EP08", "Embrace challenges as opportunities for growth. Each obstacle you overcome brings "
             "you closer to success.", (SOCIAL_COGNITIVE,)),
    Stimulus("EP09", "Stay focused and dedicated to your goals. Your consistent efforts will lead to "
             "outstanding achievements.", (SOCIAL_COGNITIVE,)),
    Stimulus("EP10", "Take pride in your work and give it your best. Your commitment to excellence sets "
             "you apart.", (SOCIAL_COGNITIVE,)),
    Stimulus("EP11", "Remember that progress is made one step at a time. Stay determined and keep moving "
             "forward.", (SOCIAL_COGNITIVE,)),
]}

#: Placebo sentences, written for this book: neutral statements with no emotion and no instruction,
#: PBnn with exactly as many words as EPnn. They go through the same grid and the same "+max"
#: recipe, so that the part of the "+max" gain that choosing the best of eleven sentences produces
#: by itself can be subtracted.
PLACEBOS: dict[str, Stimulus] = {s.id: s for s in [
    Stimulus("PB01", "The old stone bridge crosses the river a few miles north of the village.", ("placebo",)),
    Stimulus("PB02", "The library opens at nine on weekdays.", ("placebo",)),
    Stimulus("PB03", "The kettle is blue.", ("placebo",)),
    Stimulus("PB04", "It rained today.", ("placebo",)),
    Stimulus("PB05", "The train leaves the station at noon. It stops twice before reaching the coast.",
             ("placebo",)),
    Stimulus("PB06", "The museum on the square holds a collection of maps from the eighteenth century. Most "
             "of them show the coastline and the rivers of the region. The building was a post office "
             "before it became a museum, and its clock tower keeps time.", ("placebo",)),
    Stimulus("PB07", "The garden behind the house has three apple trees. A narrow path leads to a shed. The "
             "fence was painted last spring.", ("placebo",)),
    Stimulus("PB08", "The bus route runs along the harbour. Each stop has a bench and a timetable.", ("placebo",)),
    Stimulus("PB09", "The shop sells bread and cheese on Mondays. Its windows face the small park nearby.",
             ("placebo",)),
    Stimulus("PB10", "The table in the kitchen is made of oak. It has four legs and a small drawer.",
             ("placebo",)),
    Stimulus("PB11", "The river freezes in most winters. Boats are kept in a wooden shed by the shore.",
             ("placebo",)),
]}

#: Zero-shot chain of thought (Kojima et al. 2022), the paper's non-emotional baseline phrase.
COT = "Let's think step by step."
BASELINE = "none"
CONDITIONS = (BASELINE, *STIMULI, "CoT")
ALL_CONDITIONS = (*CONDITIONS, *PLACEBOS)
MODES = ("zero-shot", "few-shot")
#: Conditions that ask for more than the answer, and so get the longer answer budget.
LONG_ANSWER = ("EP01", "EP06")


def stimulus_text(condition: str) -> str:
    """The text appended for ``condition`` (``none`` -> empty)."""
    if condition == BASELINE:
        return ""
    if condition == "CoT":
        return COT
    if condition in PLACEBOS:
        return PLACEBOS[condition].text
    if condition not in STIMULI:
        raise EmotionPromptError(f"unknown condition {condition!r}; allowed: {', '.join(ALL_CONDITIONS)}")
    return STIMULI[condition].text


def stimuli_table() -> pd.DataFrame:
    """One row per stimulus: id, text, groups, number of words."""
    return pd.DataFrame([{"id": s.id, "stimulus": s.text, "groups": ", ".join(s.groups),
                          "words": len(s.text.split())} for s in STIMULI.values()]).set_index("id")


# ------------------------------------------------------------------------------------------
# Prompts
# ------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class PromptTemplate:
    """How an Instruction Induction prompt is laid out (APE-style "Instruction / Input / Answer").

    The stimulus is appended after the original prompt, i.e. after the instruction (Sec. 2.1).
    A model without a chat template gets one text (demonstrations inline); a chat model gets the
    instruction and the first input as a user turn and each demonstration as a user/assistant
    exchange (``system`` first, when set: the same for every condition). No system message by
    default: "reply with the answer only" would contradict EP01 and EP06, which ask for a
    confidence score and an explanation; the answer is read out of the reply instead
    (:mod:`fmbook.emotion_prompt.extract`).
    """

    instruction: str = "Instruction: {instruction}"
    demo: str = "Input: {input}\nAnswer: {answer}"
    query: str = "Input: {input}\nAnswer:"
    sep: str = "\n\n"
    chat_input: str = "Input: {input}"
    system: str | None = None


def attach(instruction: str, condition: str) -> str:
    """``instruction`` with the stimulus of ``condition`` appended (one space between)."""
    text = stimulus_text(condition)
    return f"{instruction} {text}" if text else instruction


#: Where an added sentence goes: ``after`` the instruction (the paper's EmotionPrompt, Sec. 2.1) or
#: ``before`` it (used by EmotionAttack, :mod:`fmbook.emotion_attack`).
PLACEMENTS = ("after", "before")


def _check_placement(placement: str) -> str:
    if placement not in PLACEMENTS:
        raise EmotionPromptError(f"placement={placement!r} is not supported; allowed: {', '.join(PLACEMENTS)}")
    return placement


def _head(task: ii.Task, condition: str, stimulus_override: str | None, placement: str = "after") -> str:
    if stimulus_override is None and placement == "after":
        return attach(task.instruction, condition)
    text = stimulus_text(condition) if stimulus_override is None else stimulus_override
    if _check_placement(placement) == "before" and text:
        return f"{text} {task.instruction}"
    return f"{task.instruction} {text}".rstrip()


def build_prompt(task: ii.Task | str, example: ii.Example, condition: str = BASELINE,
                 demos: Sequence[ii.Example] = (), template: PromptTemplate = PromptTemplate(),
                 stimulus_override: str | None = None, placement: str = "after") -> str:
    """The plain-text prompt for one example: instruction (+ stimulus), demonstrations, the query.

    ``stimulus_override`` replaces the stimulus text (used by the leave-one-word-out analysis);
    ``placement`` puts it ``after`` the instruction (default, the paper's) or ``before`` it.
    """
    task = ii.get_task(task) if isinstance(task, str) else task
    parts = [template.instruction.format(instruction=_head(task, condition, stimulus_override, placement))]
    parts += [template.demo.format(input=d.input, answer=d.answer) for d in demos]
    parts.append(template.query.format(input=example.input))
    return template.sep.join(parts)


def build_messages(task: ii.Task | str, example: ii.Example, condition: str = BASELINE,
                   demos: Sequence[ii.Example] = (), template: PromptTemplate = PromptTemplate(),
                   stimulus_override: str | None = None, placement: str = "after") -> list[dict]:
    """The same prompt as chat messages (demonstrations as user/assistant turns)."""
    task = ii.get_task(task) if isinstance(task, str) else task
    head = template.instruction.format(instruction=_head(task, condition, stimulus_override, placement))
    inputs = [d.input for d in demos] + [example.input]
    messages = [{"role": "system", "content": template.system}] if template.system else []
    for i, x in enumerate(inputs):
        text = template.chat_input.format(input=x)
        messages.append({"role": "user", "content": f"{head}{template.sep}{text}" if i == 0 else text})
        if i < len(demos):
            messages.append({"role": "assistant", "content": demos[i].answer})
    return messages


def prompt_for(lm: CausalLM, task, example, condition: str = BASELINE, demos=(),
               template: PromptTemplate = PromptTemplate(), stimulus_override: str | None = None):
    """Messages for a chat model, text otherwise."""
    build = build_messages if lm.has_chat_template else build_prompt
    return build(task, example, condition, demos, template, stimulus_override)


# ------------------------------------------------------------------------------------------
# Evaluation (Sec. 2.2)
# ------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class ExtraCondition:
    """A condition defined outside this module (e.g. an EmotionAttack sentence, arXiv 2312.11111).

    ``text`` is placed ``after`` or ``before`` the instruction (:data:`PLACEMENTS`); ``transform``,
    when set, rewrites each *test* example as ``transform(task_name, example)`` (a word-level attack);
    demonstrations are left as they are. Its ``name`` is used like a condition name.
    """

    name: str
    text: str = ""
    placement: str = "after"
    transform: Callable[[str, ii.Example], ii.Example] | None = None

    def __post_init__(self):
        _check_placement(self.placement)
        if self.name in ALL_CONDITIONS:
            raise EmotionPromptError(f"extra condition name {self.name!r} clashes with a built-in "
                                     f"condition ({', '.join(ALL_CONDITIONS)})")

    def describe(self) -> dict:
        return {"name": self.name, "text": self.text, "placement": self.placement,
                "transform": getattr(self.transform, "__name__", None) if self.transform else None}


@dataclass
class EvalConfig:
    """One evaluation grid: tasks x conditions x modes x seeds x samples, for one model.

    The paper uses 5 randomly sampled demonstrations in few-shot (``n_demos``, Sec. 2.2.1) and
    lets the model answer as it will: ``max_new_tokens`` is the answer budget, ``long_tokens`` the
    budget of the stimuli that ask for more (:data:`LONG_ANSWER`: a confidence score, an
    explanation) and ``cot_tokens`` that of chain of thought (zero-shot, and few-shot unless
    ``cot_in_few_shot`` is off). Demonstrations are drawn from the task's pool with the seed, one
    draw per ``demo_block`` consecutive test items (1: a draw per item), the same draw for every
    condition (paired). Sample counts are ours (the book's budget).
    """

    tasks: tuple[str, ...] = tuple(ii.TASKS)
    conditions: tuple[str, ...] = CONDITIONS
    modes: tuple[str, ...] = MODES
    n_samples: int = 20
    seeds: tuple[int, ...] = (0,)
    n_demos: int = 5
    max_new_tokens: int = 32
    batch_size: int = 32
    cot_in_few_shot: bool = True
    long_tokens: int = 96
    cot_tokens: int = 128
    demo_block: int = 1
    extra_conditions: tuple[ExtraCondition, ...] = ()

    def __post_init__(self):
        self.tasks, self.conditions = tuple(self.tasks), tuple(self.conditions)
        self.modes, self.seeds = tuple(self.modes), tuple(int(s) for s in self.seeds)
        self.extra_conditions = tuple(self.extra_conditions)
        extra = {e.name for e in self.extra_conditions}
        for t in self.tasks:
            ii.get_task(t)
        for c in self.conditions:
            if c not in extra:
                try:
                    stimulus_text(c)
                except EmotionPromptError:
                    raise EmotionPromptError(f"unknown condition {c!r}; allowed: {', '.join(ALL_CONDITIONS)}"
                                             + (f", or an extra condition: {', '.join(sorted(extra))}" if extra else "")) from None
        bad = [m for m in self.modes if m not in MODES]
        if bad:
            raise EmotionPromptError(f"modes: unknown {bad}; allowed: {', '.join(MODES)}")
        if BASELINE not in self.conditions:
            raise EmotionPromptError(f"conditions must include the baseline {BASELINE!r}")
        for name in ("n_samples", "n_demos", "max_new_tokens", "batch_size", "long_tokens", "cot_tokens",
                     "demo_block"):
            if int(getattr(self, name)) < (0 if name == "n_demos" else 1):
                raise EmotionPromptError(f"{name} must be positive, got {getattr(self, name)!r}")

    def budget(self, condition: str) -> int:
        """The answer budget (new tokens) of ``condition`` (an extra condition: ``max_new_tokens``)."""
        if condition == "CoT":
            return self.cot_tokens
        if condition in LONG_ANSWER:
            return max(self.long_tokens, self.max_new_tokens)
        return self.max_new_tokens


def config_for(lm: CausalLM, cfg: EvalConfig, base_few_shot_only: bool = True) -> EvalConfig:
    """``cfg`` for one model: a model without a chat template (a base model) runs few-shot only
    when ``base_few_shot_only`` (zero-shot, it continues the text instead of answering)."""
    from dataclasses import replace

    if lm.has_chat_template or not base_few_shot_only or "few-shot" not in cfg.modes:
        return cfg
    return replace(cfg, modes=("few-shot",))


def items_for(task: str, seed: int, n_samples: int, n_demos: int) -> tuple[list[ii.Example], list[ii.Example]]:
    """Test examples and the demonstrations of one (task, seed); demos never repeat a test input."""
    t = ii.get_task(task)
    tests = t.generate(n_samples, seed=seed)
    pool = t.generate(n_demos + n_samples + 10, seed=10_000 + seed)
    used = {e.input for e in tests}
    demos = [e for e in pool if e.input not in used][:n_demos]
    if len(demos) < n_demos:
        demos += pool[:n_demos - len(demos)]
    return tests, demos


def demo_draws(task: str, seed: int, tests: Sequence[ii.Example], n_demos: int,
               block: int = 1) -> list[list[ii.Example]]:
    """Demonstrations for each test item: ``n_demos`` drawn without replacement from the task's
    pool (never a test input), a new draw every ``block`` items, reproducible from ``seed``."""
    import random
    import zlib

    if block < 1:
        raise EmotionPromptError(f"demo_block must be >= 1, got {block}")
    t = ii.get_task(task)
    used = {e.input for e in tests}
    pool = [e for e in t.generate(4 * n_demos + 40, seed=10_000 + seed) if e.input not in used]
    pool = pool or t.generate(n_demos, seed=10_000 + seed)
    draws: list[list[ii.Example]] = []
    for j in range(len(tests)):
        if j % block == 0:
            rng = random.Random(zlib.crc32(f"demos:{task}:{seed}:{j // block}".encode()))
            current = rng.sample(pool, min(n_demos, len(pool)))
        draws.append(current)
    return draws


def build_grid(cfg: EvalConfig, chat: bool = False,
               template: PromptTemplate = PromptTemplate()) -> pd.DataFrame:
    """Every prompt of the grid with its task, example, condition, mode, seed, item id and answer
    budget. ``chat``: prompts as chat messages (:func:`build_messages`) instead of text."""
    build = build_messages if chat else build_prompt
    extras = {e.name: e for e in cfg.extra_conditions}
    rows = []
    for mode in cfg.modes:
        for task in cfg.tasks:
            for seed in cfg.seeds:
                tests = ii.get_task(task).generate(cfg.n_samples, seed=seed)
                draws = demo_draws(task, seed, tests, cfg.n_demos, cfg.demo_block)
                for j, ex in enumerate(tests):
                    for cond in cfg.conditions:
                        if cond == "CoT" and mode == "few-shot" and not cfg.cot_in_few_shot:
                            continue
                        shots = draws[j] if mode == "few-shot" else ()
                        extra = extras.get(cond)
                        if extra is None:
                            item = ex
                            prompt = build(task, ex, cond, shots, template)
                        else:
                            item = extra.transform(task, ex) if extra.transform else ex
                            prompt = build(task, item, BASELINE, shots, template,
                                           stimulus_override=extra.text, placement=extra.placement)
                        rows.append({"mode": mode, "task": task, "seed": seed, "item": f"{task}/{seed}/{j}",
                                     "condition": cond, "input": item.input, "answer": item.answer,
                                     "extract_input": ex.input, "budget": cfg.budget(cond),
                                     "prompt": prompt, "_example": item})
    return pd.DataFrame(rows)


def score_outputs(grid: pd.DataFrame) -> pd.DataFrame:
    """Add ``extracted`` (the answer read out of ``output``, :func:`extract_answer`),
    ``extraction_failed`` and ``correct`` (an extraction failure counts as wrong)."""
    inputs = grid["extract_input"] if "extract_input" in grid else grid["input"]  # before an input rewrite
    extracted = [extract_answer(t, o, x) for t, o, x in zip(grid["task"], grid["output"], inputs)]
    grid = grid.copy()
    grid["extracted"] = extracted
    grid["extraction_failed"] = [e is None for e in extracted]
    grid["correct"] = [e is not None and ii.get_task(t).check(ex, e)
                       for t, ex, e in zip(grid["task"], grid["_example"], extracted)]
    return grid


def evaluate(lm: CausalLM, cfg: EvalConfig, progress: bool = False,
             template: PromptTemplate = PromptTemplate()) -> pd.DataFrame:
    """Greedy free-form answers of ``lm`` on the whole grid (batched, cached; one call per answer
    budget), the answer read out of each, and its correctness."""
    grid = build_grid(cfg, chat=lm.has_chat_template, template=template)
    grid["output"] = ""
    for budget, idx in grid.groupby("budget", sort=True).groups.items():
        decode = DecodeConfig(max_new_tokens=int(budget), stop_at_newline=False)
        grid.loc[idx, "output"] = lm.generate(list(grid.loc[idx, "prompt"]), decode, batch_size=cfg.batch_size,
                                              progress=progress)
    grid = score_outputs(grid)
    grid["model"] = lm.name
    return grid.drop(columns=["_example"])


#: The fixed prompt set of ``python -m fmbook bench lm`` (:mod:`fmbook.core.lm_bench`), built from this
#: grid: zero- and few-shot, short and long answer budgets, the chapter's demonstration draws.
BENCH_GRID = dict(tasks=("sum", "antonyms", "larger_animal"), conditions=("none", "EP02", "EP04", "EP01", "CoT"),
                  n_samples=8, demo_block=4)


def bench_prompt_set(template: PromptTemplate = PromptTemplate()) -> list[dict]:
    """The bench's prompts as JSON-ready dicts (chat messages and the plain-text form)."""
    cfg = EvalConfig(**BENCH_GRID)
    chat = build_grid(cfg, chat=True, template=template)
    text = build_grid(cfg, chat=False, template=template)
    return [{"id": i, "mode": c["mode"], "task": c["task"], "condition": c["condition"],
             "item": int(c["item"].rsplit("/", 1)[1]), "messages": c["prompt"], "text": t["prompt"],
             "max_new_tokens": int(c["budget"]), "stop_at_newline": False,
             "input": c["input"], "answer": c["answer"], "accepted": list(c["_example"].accepted)}
            for i, ((_, c), (_, t)) in enumerate(zip(chat.iterrows(), text.iterrows()))]


def bench_correct(prompt: dict, output: str) -> bool:
    """Whether ``output`` answers a bench prompt (:func:`bench_prompt_set`) correctly: the answer read
    out of the reply (:func:`extract_answer`) passes the task's check, as in :func:`score_outputs`."""
    example = ii.Example(prompt["input"], prompt["answer"], tuple(prompt["accepted"]))
    extracted = extract_answer(prompt["task"], output, prompt["input"])
    return extracted is not None and ii.get_task(prompt["task"]).check(example, extracted)


def evaluate_models(model_names: Sequence[str], cfg: EvalConfig, base_few_shot_only: bool = True,
                    dtype: str = "float32", device: str = "cpu",
                    progress: bool = True) -> tuple[pd.DataFrame, list[dict]]:
    """:func:`evaluate` every model in turn (each loaded, evaluated, released).

    ``dtype="auto"`` loads the book's engine (:func:`fmbook.core.lm.load_engine`: bfloat16 where
    the hardware has it, shared-prefix batching); a named dtype loads the weights in that type.
    ``progress`` logs a line every few seconds (answers done / total, rate, time left), which the
    runner shows on its console. Returns the concatenated answers and one record per model (see
    :func:`evaluate_each`).
    """
    return evaluate_each(model_names, lambda model: evaluate(model, config_for(model, cfg, base_few_shot_only),
                                                             progress=progress), dtype, device)


def evaluate_each(model_names: Sequence[str], evaluate_one: Callable[[CausalLM], pd.DataFrame],
                  dtype: str = "auto", device: str = "cpu") -> tuple[pd.DataFrame, list[dict]]:
    """Load each model in turn (``dtype="auto"``: the book's engine), answer with ``evaluate_one``,
    release it. Returns the concatenated answers and one record per model: its ``info()``, the
    prompts answered, how many were generated now or came from the output cache, and the seconds
    it took. Shared by the chapters that evaluate language models on this grid."""
    from fmbook.core.lm import load_causal_lm, load_engine

    frames, records = [], []
    for name in model_names:
        model = (load_engine(name, device=device, verbose=False) if dtype == "auto"
                 else load_causal_lm(name, dtype=dtype, device=device, verbose=False))
        started = time.perf_counter()
        frames.append(evaluate_one(model))
        stats = dict(model.stats)
        records.append({"name": name, "info": model.info(), "prompts": len(frames[-1]),
                        "generated": stats["generated"], "cached": stats["cached"],
                        "generate_seconds": stats["seconds"], "seconds": time.perf_counter() - started})
        del model
    return pd.concat(frames, ignore_index=True), records

# ------------------------------------------------------------------------------------------
# Statistics
# ------------------------------------------------------------------------------------------

def wilson(k: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """Wilson score interval for k successes out of n."""
    if n == 0:
        return (math.nan, math.nan)
    p = k / n
    den = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / den
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / den
    return (max(0.0, centre - half), min(1.0, centre + half))


def accuracy_table(results: pd.DataFrame) -> pd.DataFrame:
    """Accuracy per (model, mode, task, condition) with n and a 95% Wilson interval over items."""
    g = results.groupby(["model", "mode", "task", "condition"], sort=False)["correct"]
    out = g.agg(["sum", "count"]).reset_index().rename(columns={"sum": "k", "count": "n"})
    out["accuracy"] = out["k"] / out["n"]
    ci = [wilson(int(k), int(n)) for k, n in zip(out["k"], out["n"])]
    out["ci_low"], out["ci_high"] = [c[0] for c in ci], [c[1] for c in ci]
    return out


def relative_improvement(acc_original: float, acc_stimulus: float) -> float:
    """(stimulus - original) / original, in percent; NaN when the original is 0 (Sec. 2.3)."""
    if acc_original == 0:
        return math.nan
    return 100.0 * (acc_stimulus - acc_original) / acc_original


def summary(results: pd.DataFrame) -> pd.DataFrame:
    """Per (model, mode, condition): task-averaged accuracy and its relative improvement.

    The paper's way: accuracy is averaged over tasks first, then compared with the original prompt's
    task average: RI = (avg_stimulus - avg_original) / avg_original. Two aggregates of the eleven
    stimuli are added as in the paper's Table 1: ``EP avg`` (mean over stimuli, per task) and
    ``EP max`` (best stimulus per task, an optimistic oracle choice); ``PB avg``/``PB max`` are the
    same over the placebo sentences when they were run.
    """
    acc = accuracy_table(results)
    rows = []
    for (model, mode), part in acc.groupby(["model", "mode"], sort=False):
        wide = part.pivot(index="task", columns="condition", values="accuracy")
        eps = [c for c in wide.columns if c in STIMULI]
        pbs = [c for c in wide.columns if c in PLACEBOS]
        cols = {c: wide[c] for c in wide.columns}
        if eps:
            cols["EP avg"] = wide[eps].mean(axis=1)
            cols["EP max"] = wide[eps].max(axis=1)
        if pbs:
            cols["PB avg"] = wide[pbs].mean(axis=1)
            cols["PB max"] = wide[pbs].max(axis=1)
        base = wide[BASELINE].mean()
        for cond, series in cols.items():
            rows.append({"model": model, "mode": mode, "condition": cond, "tasks": len(series),
                         "accuracy": series.mean(),
                         "relative_improvement_%": relative_improvement(base, series.mean())})
    return pd.DataFrame(rows)


def mcnemar(baseline: Sequence[bool], treated: Sequence[bool]) -> dict:
    """Exact McNemar test on paired outcomes: b = only baseline right, c = only treated right."""
    from scipy.stats import binomtest

    b = int(sum(1 for x, y in zip(baseline, treated) if x and not y))
    c = int(sum(1 for x, y in zip(baseline, treated) if y and not x))
    p = 1.0 if b + c == 0 else float(binomtest(min(b, c), b + c, 0.5).pvalue)
    return {"b_only_original": b, "c_only_stimulus": c, "p_value": min(1.0, p)}


def paired_bootstrap(results: pd.DataFrame, condition: str, n_boot: int = 2000,
                     seed: int = 0) -> tuple[float, float, float]:
    """Difference in task-averaged accuracy (condition - none), and a 95% bootstrap interval.

    Items are resampled within each task (the same items for both conditions: paired).
    """
    rng = np.random.default_rng(seed)
    per_task = []
    for _, part in results.groupby("task", sort=False):
        wide = part.pivot(index="item", columns="condition", values="correct")
        if condition not in wide or BASELINE not in wide:
            continue
        per_task.append((wide[condition].astype(float).to_numpy() - wide[BASELINE].astype(float).to_numpy()))
    if not per_task:
        return (math.nan, math.nan, math.nan)
    point = float(np.mean([d.mean() for d in per_task]))
    boots = np.empty(n_boot)
    for i in range(n_boot):
        boots[i] = np.mean([d[rng.integers(0, len(d), len(d))].mean() for d in per_task])
    return point, float(np.quantile(boots, 0.025)), float(np.quantile(boots, 0.975))


def significance(results: pd.DataFrame, n_boot: int = 2000, seed: int = 0) -> pd.DataFrame:
    """Each condition vs the original prompt, per (model, mode): McNemar over all paired items
    (Holm-corrected across conditions) and a paired-bootstrap interval of the accuracy difference."""
    rows = []
    for (model, mode), part in results.groupby(["model", "mode"], sort=False):
        wide = part.pivot(index="item", columns="condition", values="correct")
        for cond in [c for c in wide.columns if c != BASELINE]:
            m = mcnemar(wide[BASELINE].tolist(), wide[cond].tolist())
            diff, lo, hi = paired_bootstrap(part, cond, n_boot=n_boot, seed=seed)
            rows.append({"model": model, "mode": mode, "condition": cond, **m,
                         "diff": diff, "diff_low": lo, "diff_high": hi})
    out = pd.DataFrame(rows)
    if len(out):
        out["p_holm"] = np.nan
        for _, idx in out.groupby(["model", "mode"]).groups.items():
            p = out.loc[idx, "p_value"].to_numpy()
            order = np.argsort(p)
            adj = np.minimum(1.0, np.maximum.accumulate((len(p) - np.arange(len(p))) * p[order]))
            out.loc[np.asarray(idx)[order], "p_holm"] = adj
    return out


# ------------------------------------------------------------------------------------------
# Why? Leave-one-word-out attribution (cf. Sec. 3 of the paper)
# ------------------------------------------------------------------------------------------

@dataclass
class AttributionConfig:
    """Leave-one-word-out on the log-likelihood of the correct answer (zero-shot prompts)."""

    stimuli: tuple[str, ...] = ("EP01", "EP02", "EP03", "EP04", "EP07", "EP08")
    tasks: tuple[str, ...] = ("sum", "first_word_letter", "singular_to_plural", "antonyms")
    n_samples: int = 10
    seed: int = 0
    batch_size: int = 16

    def __post_init__(self):
        self.stimuli, self.tasks = tuple(self.stimuli), tuple(self.tasks)
        for s in self.stimuli:
            if s not in STIMULI:
                raise EmotionPromptError(f"stimuli: unknown {s!r}; allowed: {', '.join(STIMULI)}")
        for t in self.tasks:
            ii.get_task(t)


def _continuation(lm: CausalLM, answer: str) -> str:
    return answer if lm.has_chat_template else " " + answer


def word_attribution(lm: CausalLM, cfg: AttributionConfig) -> pd.DataFrame:
    """For each stimulus word: mean drop in log p(correct answer) when that word is removed.

    Positive values: the word raises the likelihood of the right answer. Also returned per
    stimulus (as word ``<whole stimulus>``): the gain of the full stimulus over no stimulus.
    """
    prompts, conts, meta = [], [], []
    for task in cfg.tasks:
        tests, _ = items_for(task, cfg.seed, cfg.n_samples, 0)
        for j, ex in enumerate(tests):
            cont = _continuation(lm, ex.answer)
            base = prompt_for(lm, task, ex, BASELINE)
            prompts.append(base), conts.append(cont), meta.append((task, j, None, -2, "<no stimulus>"))
            for sid in cfg.stimuli:
                words = STIMULI[sid].text.split()
                prompts.append(prompt_for(lm, task, ex, sid)), conts.append(cont)
                meta.append((task, j, sid, -1, "<full>"))
                for w in range(len(words)):
                    text = " ".join(words[:w] + words[w + 1:])
                    prompts.append(prompt_for(lm, task, ex, stimulus_override=text)), conts.append(cont)
                    meta.append((task, j, sid, w, words[w]))
    scores = lm.score(prompts, conts, batch_size=cfg.batch_size)
    df = pd.DataFrame(meta, columns=["task", "item", "stimulus", "position", "word"])
    df["logp"] = scores
    none = df[df.position == -2].set_index(["task", "item"])["logp"]
    full = df[df.position == -1].set_index(["task", "item", "stimulus"])["logp"]
    rows = []
    for sid in cfg.stimuli:
        part = df[(df.stimulus == sid) & (df.position >= 0)]
        f = full.xs(sid, level="stimulus")
        gain = (f - none).to_numpy()
        rows.append({"stimulus": sid, "position": -1, "word": "<whole stimulus>",
                     "attribution": float(gain.mean()), "se": float(gain.std(ddof=1) / math.sqrt(len(gain))) if len(gain) > 1 else math.nan})
        for (pos, word), g in part.groupby(["position", "word"], sort=True):
            d = (f.loc[list(zip(g.task, g.item))].to_numpy() - g["logp"].to_numpy())
            rows.append({"stimulus": sid, "position": int(pos), "word": word,
                         "attribution": float(d.mean()),
                         "se": float(d.std(ddof=1) / math.sqrt(len(d))) if len(d) > 1 else math.nan})
    return pd.DataFrame(rows)


def config_dict(cfg) -> dict:
    """A JSON-friendly dict of a config (for ``run.log``)."""
    out = {}
    for k in cfg.__dataclass_fields__:
        v = getattr(cfg, k)
        if k == "extra_conditions":
            out[k] = [e.describe() for e in v]
        else:
            out[k] = list(v) if isinstance(v, tuple) else v
    return out


# ------------------------------------------------------------------------------------------
# The paper's numbers (for the comparison notebook)
# ------------------------------------------------------------------------------------------

PAPER = {
    "relative_improvement_instruction_induction_%": 8.00,
    "relative_improvement_bigbench_%": 115.0,
    "human_study_improvement_%": 10.9,
    "human_study_participants": 106,
}

#: Models of the paper with their sizes (parameters, billions) as published by their authors.
PAPER_MODELS = {
    "Flan-T5-Large": 0.78, "Vicuna": 13.0, "Llama 2": 13.0, "BLOOM": 176.0,
    "ChatGPT": math.nan, "GPT-4": math.nan,
}
