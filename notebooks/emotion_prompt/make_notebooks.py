"""Writes the EmotionPrompt chapter's notebooks (no outputs).

Run: .venv/bin/python notebooks/emotion_prompt/make_notebooks.py

The parameters and bootstrap cells follow the book's contract (:mod:`fmbook.authoring`); edit the text
here and regenerate rather than editing the .ipynb files.
"""

from __future__ import annotations

from pathlib import Path

from fmbook.authoring import code, md, write_notebook

HERE = Path(__file__).resolve().parent
CHAPTER = "emotion_prompt"
QWEN = "qwen2.5-coder-0.5b-instruct-gguf"
GEMMA = "gemma-3-270m-gguf"

HEAD = '''profile = "auto"  # smoke | local | full; auto: full on a GPU, local otherwise
seed = 0  # seed of the generated tasks (examples and demonstrations)
'''

EVAL_PARAMS = f'''models = ["{QWEN}", "{GEMMA}"]  # offline asset names or hub ids (full)
modes = ["zero-shot", "few-shot"]  # zero-shot and/or few-shot (5 demonstrations, as in the paper)
tasks = ["sum", "first_word_letter", "singular_to_plural", "larger_animal", "antonyms"]  # Instruction Induction tasks (see 02_tasks)
conditions = ["none", "EP01", "EP02", "EP03", "EP04", "EP05", "EP06", "EP07", "EP08", "EP09", "EP10", "EP11", "CoT"]  # none = original prompt; CoT = zero-shot only
n_samples = 4  # test examples per task and seed
seeds = [0]  # task seeds (each gives other examples and demonstrations)
n_demos = 5  # demonstrations in few-shot prompts (the paper: 5)
max_new_tokens = 16  # greedy answer budget; a row stops at end of sequence or end of its first line
batch_size = 16  # prompts per forward pass
dtype = "float32"  # model weights: float32 (CPU) or bfloat16/float16 (GPU)
base_few_shot_only = True  # a model without a chat template (a base model) runs few-shot only
'''


def g(name: str, fmt: str = ".1f") -> str:
    """A glued value in the prose."""
    return f"{{glue:text}}`{name}:{fmt}`" if fmt else f"{{glue:text}}`{name}`"


# =========================================================================================== 01
NB01 = [
    md("""
# 1. The emotional stimuli

EmotionPrompt {cite}`emotionprompt2023` asks a simple question: if you add an emotional sentence such
as *"This is very important to my career."* to a prompt, does a large language model answer better?
The paper writes eleven such sentences, the *emotional stimuli* EP01 to EP11, and reports that they
improve many models on many tasks. This notebook shows the stimuli as data: their exact wording, the
psychological theory each one comes from, and how one is attached to a prompt.
"""),
    code("""
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from IPython.display import Markdown, display

from fmbook import emotion_prompt as ep
from fmbook import instruction_induction as ii

run.uses_data("instruction-induction-generated", source="fmbook.instruction_induction", seed=seed)
table = ep.stimuli_table()
display(table)
groups = [ep.SELF_MONITORING, ep.SOCIAL_COGNITIVE, ep.EMOTION_REGULATION, ep.COMPOUND]
members = {g: [s.id for s in ep.STIMULI.values() if g in s.groups] for g in groups}
run.glue("n_stimuli", len(ep.STIMULI))
run.glue("n_self_monitoring", len(members[ep.SELF_MONITORING]))
run.glue("n_social_cognitive", len(members[ep.SOCIAL_COGNITIVE]))
run.glue("n_regulation", len(members[ep.EMOTION_REGULATION]))
run.glue("shortest_words", int(table.words.min()))
run.glue("longest_words", int(table.words.max()))
run.log(stimuli=table.reset_index().to_dict("records"));
"""),
    md(f"""
## Three theories behind eleven sentences

The paper draws on three strands of psychology. {g("n_self_monitoring", ".0f")} stimuli (EP01-EP05) come
from **self-monitoring**: people adjust their behaviour when they are reminded that they are being
watched or that the outcome matters socially ("This is very important to my career", "Are you sure?").
{g("n_social_cognitive", ".0f")} (EP07-EP11) come from **social cognitive theory**, where self-efficacy
and goal setting drive performance ("Believe in your abilities", "Stay focused and dedicated to your
goals"). {g("n_regulation", ".0f")} of them (EP03-EP05 and EP07) also belong to **cognitive emotion
regulation**, which is about reappraising a situation: the questions "Are you sure?" invite the reader
to look again. EP06 is the odd one: a long compound instruction that asks for a confidence score, an
explanation and mentions the reader's career; the paper describes it as a combination of EP01-EP03.

The sentences range from {g("shortest_words", ".0f")} to {g("longest_words", ".0f")} words. That matters
for what follows: a long stimulus changes the prompt much more than a short one, so an effect could come
from the length or the content of the request ("give a confidence score", "explain your reasons")
rather than from its emotion.
"""),
    code("""
fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 3.6), gridspec_kw={"width_ratios": [1.2, 1]})
ids = list(ep.STIMULI)
matrix = np.array([[g in ep.STIMULI[s].groups for s in ids] for g in groups], dtype=float)
ax1.imshow(matrix, cmap="Blues", vmin=0, vmax=1.4, aspect="auto")
ax1.set_xticks(range(len(ids)), ids, rotation=90)
ax1.set_yticks(range(len(groups)), ["self-monitoring", "social cognitive", "emotion regulation", "compound"])
ax1.set_title("Which theory each stimulus draws on")
ax2.barh(ids[::-1], table.loc[ids[::-1], "words"], color="#4c72b0")
ax2.set_xlabel("words")
ax2.set_title("Length of each stimulus")
fig.tight_layout()
run.stamp(fig)
"""),
    md("""
## How a stimulus is attached

The paper appends the stimulus *after the original prompt*. In the Instruction Induction benchmark the
original prompt is the task instruction, such as "Write a word that means the opposite of the input
word." We keep the layout used by the automatic-prompt-engineering line of work that the paper builds
on: an `Instruction:` line, then (few-shot) five worked demonstrations, then the test input. Below, the
same antonyms example rendered without a stimulus and with the one chosen in the parameters; the only
difference is the appended sentence, a property the library's tests check for every stimulus.
"""),
    code("""
task = ii.get_task(example_task)
tests, demos = ep.items_for(example_task, seed, 1, 5)
plain = ep.build_prompt(task, tests[0], "none")
emotional = ep.build_prompt(task, tests[0], example_condition)
few_shot = ep.build_prompt(task, tests[0], example_condition, demos)
display(Markdown("**Zero-shot, original prompt**\\n```text\\n" + plain + "\\n```"))
display(Markdown(f"**Zero-shot, with {example_condition}**\\n```text\\n" + emotional + "\\n```"))
display(Markdown(f"**Few-shot ({len(demos)} demonstrations), with {example_condition}**\\n```text\\n" + few_shot + "\\n```"))
"""),
    md("""
A chat model (Qwen below) does not read this text directly: the library hands it the same content as
chat messages, with the instruction, the stimulus and the first input in the first user turn and every
demonstration as a user/assistant exchange. One short system message, *"Reply with the answer only."*,
is the same for every condition; it keeps the answers short enough to check by rule, and it is the
only wording we added to the paper's setting.
"""),
    code("""
for m in ep.build_messages(task, tests[0], example_condition, demos[:2]):
    print(f"[{m['role']}] {m['content']}")
"""),
    code("run.finish()"),
]

P01 = HEAD + '''example_task = "antonyms"  # task used to render the templates
example_condition = "EP02"  # stimulus shown attached to the prompt
'''

# =========================================================================================== 02
NB02 = [
    md("""
# 2. The tasks

The paper measures the stimuli on the 24 tasks of Instruction Induction {cite}`emotionprompt2023`:
short input/output problems, each with a one-sentence instruction ("Sum the two given numbers."). The
original data cannot be installed offline, so the book *generates* the tasks whose answers follow a
rule (arithmetic, letters, spelling numbers in words) and writes small word lists for those that need
knowledge (plurals, animal sizes, antonyms, synonyms). Every task comes with a checker, and this
notebook shows both, so that a reader can see exactly what "correct" means before any model is scored.
"""),
    code("""
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from IPython.display import display

from fmbook import instruction_induction as ii

run.uses_data("instruction-induction-generated", source="fmbook.instruction_induction", seed=seed)
rows = []
for task in ii.TASKS.values():
    examples = task.generate(n_examples, seed=seed)
    rows.append({"task": task.name, "instruction": task.instruction,
                 "examples": "; ".join(f"{e.input} → {e.answer}" for e in examples[:3]),
                 "correct when": task.rule, "data": task.source})
overview = pd.DataFrame(rows).set_index("task")
display(overview)
run.glue("n_tasks", len(ii.TASKS));
"""),
    md(f"""
## What the checker accepts

We implement {g("n_tasks", ".0f")} of the 24 tasks. Outputs are first **normalised**: only the first line
counts; a leading "Answer:" label, quotes, brackets and final punctuation are removed; case is ignored;
and a trailing confidence statement is dropped (two stimuli, EP01 and EP06, explicitly ask for a
confidence score, and we do not want to punish a model for obeying). Then each task applies its rule:
exact match for most tasks, any of several accepted answers for antonyms, synonyms, negation and
irregular plurals, the *set* of words for the two list tasks, and a number comparison for arithmetic.
A verbose answer such as "The sum of 12 and 30 is 42." is **wrong** under these rules, as it is
under the exact-match metric of the benchmark: the task asks for the answer, and a model that cannot
stop talking has not solved it.

Two checks of the checkers themselves: every generated reference answer must pass its own checker, and
the answer to a *different* example of the same task must fail (when it differs).
"""),
    code("""
checks = []
for task in ii.TASKS.values():
    examples = task.generate(n_check, seed=seed)
    own = np.mean([task.check(e, e.answer) for e in examples])
    shifted = [(e, o) for e, o in zip(examples, examples[1:] + examples[:1])
               if {ii.normalize(o.answer)} - {ii.normalize(a) for a in (e.answer, *e.accepted)}]
    rejected = np.mean([not task.check(e, o.answer) for e, o in shifted]) if shifted else np.nan
    distinct = len({e.input for e in examples})
    checks.append({"task": task.name, "own answer accepted": own, "other answer rejected": rejected,
                   "distinct inputs": distinct})
checks = pd.DataFrame(checks).set_index("task")
display(checks.style.format({"own answer accepted": "{:.0%}", "other answer rejected": "{:.0%}"}))
run.glue("own_accepted_pct", 100 * checks["own answer accepted"].mean())
run.glue("other_rejected_pct", 100 * checks["other answer rejected"].mean())
run.log(checker_self_test=checks.reset_index().to_dict("records"));
"""),
    md(f"""
Across all tasks {g("own_accepted_pct", ".0f")}% of the reference answers pass their own checker and
{g("other_rejected_pct", ".0f")}% of the answers to other examples are rejected. Some tasks have small
pools (about forty antonym or plural entries): the "distinct inputs" column shows how many different
questions `n_check` draws give, which is why the evaluation uses a handful of examples per task and
several seeds rather than hundreds of near-duplicates.

## Normalisation at work

A few outputs of the kind small models produce, and the verdict of the checker:
"""),
    code("""
cases = [("sum", ii.Example("12 30", "42"), "42"), ("sum", ii.Example("12 30", "42"), "Answer: 42."),
         ("sum", ii.Example("12 30", "42"), "42 (confidence: 0.95)"),
         ("sum", ii.Example("12 30", "42"), "The sum of 12 and 30 is 42."),
         ("letters_list", ii.Example("cat", "c a t"), "c, a, t"),
         ("num_to_verbal", ii.Example("47", "forty-seven"), "Forty seven"),
         ("singular_to_plural", ii.Example("mouse", "mice"), '"Mice"'),
         ("singular_to_plural", ii.Example("mouse", "mice"), "mouses"),
         ("antonyms", ii.Example("big", "small", ("little", "tiny")), "little")]
display(pd.DataFrame([{"task": t, "reference": e.answer, "model output": o, "normalised": ii.normalize(o),
                       "correct": ii.get_task(t).check(e, o)} for t, e, o in cases]))
"""),
    code("""
lengths = pd.DataFrame([{"task": t.name, "answer words": len(e.answer.split())}
                        for t in ii.TASKS.values() for e in t.generate(n_check, seed=seed)])
fig, ax = plt.subplots(figsize=(8, 3.4))
order = lengths.groupby("task")["answer words"].mean().sort_values().index
ax.boxplot([lengths[lengths.task == t]["answer words"] for t in order], vert=False)
ax.set_yticks(range(1, len(order) + 1), order)
ax.set_xlabel("words in the reference answer")
ax.set_title("How long a correct answer is")
fig.tight_layout()
run.stamp(fig)
"""),
    md("""
Most answers are one or two words, so a greedy budget of 16 new tokens, stopping at the end of the first
line, is enough; negation and spelled-out numbers are the longest.
"""),
    code("run.finish()"),
]

P02 = HEAD + '''n_examples = 3  # examples shown per task
n_check = 200  # generated examples per task for the checker self-test
'''

# =========================================================================================== 03
NB03 = [
    md("""
# 3. Does emotion help?

This is the paper's main experiment at our scale: for each offline language model, each task and each
stimulus, we compare the accuracy of the original prompt with the accuracy of the prompt plus the
stimulus, zero-shot and few-shot. The paper reports the result as a *relative improvement* of the
average accuracy over tasks {cite}`emotionprompt2023`; we do the same, and add what a small sample needs:
confidence intervals and a paired significance test against the original prompt.

The two models are far smaller than the paper's (Flan-T5-Large at 780M parameters is its smallest):
**Qwen2.5-Coder-0.5B-Instruct**, an instruction-tuned chat model, and **Gemma 3 270M**, a *base* model
that only continues text. Without demonstrations a base model continues the prompt instead of
answering it, so Gemma is asked few-shot only (`base_few_shot_only`); Qwen is asked both ways. Decoding
is greedy, as in the paper, so every answer is reproducible.
"""),
    code("""
import time

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns
from IPython.display import display

from fmbook import emotion_prompt as ep
from fmbook import lm

config = ep.EvalConfig(tasks=tuple(tasks), conditions=tuple(conditions), modes=tuple(modes),
                       n_samples=n_samples, seeds=tuple(seeds), n_demos=n_demos,
                       max_new_tokens=max_new_tokens, batch_size=batch_size)
run.uses_data("instruction-induction-generated", source="fmbook.instruction_induction",
              tasks=list(tasks), n_samples=n_samples, seeds=list(seeds))
run.log(eval_config=ep.config_dict(config))
results, per_model = ep.evaluate_models(models, config, base_few_shot_only, dtype=dtype, device=run.device,
                                        progress=True)
speed = []
for m in per_model:
    info = m["info"]
    run.uses_model(m["name"], **{k: v for k, v in info.items() if k not in ("name", "model_id")}, resolved_id=info["model_id"])
    speed.append({"model": m["name"], "prompts": m["prompts"], "generated now": m["generated"],
                  "from the output cache": m["cached"], "seconds": m["seconds"],
                  "prompts/s (generated)": m["generated"] / m["generate_seconds"] if m["generate_seconds"] else np.nan,
                  "load s": info["load_seconds"]})
speed = pd.DataFrame(speed)
display(speed.style.format({"seconds": "{:.1f}", "prompts/s (generated)": "{:.2f}", "load s": "{:.1f}"}))
run.log(speed=speed.to_dict("records"))
run.glue("n_prompts", len(results));
"""),
    md(f"""
The grid holds {g("n_prompts", ".0f")} prompts. The library batches them so that prompts sharing a long
prefix (system message, instruction, stimulus, demonstrations: everything but the test input) run
together; the keys and values of that prefix are computed once per batch and reused by every row, and
a row stops as soon as its first line is complete. Answers are stored in an on-disk cache keyed by the
model, the exact prompt and the decoding settings, so re-running this notebook costs almost nothing.
The *prompts/s* column counts only prompts generated in this run.
"""),
    code("""
if bench_prompts:
    bench_model = lm.load_causal_lm(models[0], dtype=dtype, device=run.device, verbose=False)
    # the first prompts of the real grid in the order the library runs it (sorted by text), so that
    # the shared prefixes are as long and the groups as large as in the evaluation above
    grid = ep.build_grid(ep.config_for(bench_model, config, base_few_shot_only), chat=bench_model.has_chat_template)
    order = sorted(range(len(grid)), key=lambda i: bench_model.render(grid.prompt[i]))
    prompts = [grid.prompt[i] for i in order[:bench_prompts]]
    decode = lm.DecodeConfig(max_new_tokens=8)
    bench, reference = [], None
    for label, bs, prefix in [("batch 1, plain generate", 1, False), ("batch 8, plain generate", 8, False),
                              ("batch 16, shared-prefix cache", 16, True)]:
        tp, answers = bench_model.throughput(prompts, bs, decode, setting=label, prefix_cache=prefix)
        reference = reference or answers
        bench.append({"setting": label, "prompts": tp.n_prompts, "seconds": tp.seconds,
                      "prompts/s": tp.prompts_per_s, "CPU s per prompt": tp.cpu_seconds / tp.n_prompts,
                      "same answers as batch 1": sum(a == b for a, b in zip(answers, reference))})
    bench = pd.DataFrame(bench)
    display(bench.style.format({"seconds": "{:.1f}", "prompts/s": "{:.2f}", "CPU s per prompt": "{:.2f}"}))
    run.log(throughput=bench.to_dict("records"), throughput_model=models[0])
    run.glue("tp_batch1", bench["prompts/s"].iloc[0])
    run.glue("tp_prefix", bench["prompts/s"].iloc[-1])
    run.glue("tp_speedup", bench["prompts/s"].iloc[-1] / bench["prompts/s"].iloc[0])
    del bench_model
"""),
    md("""
(When `bench_prompts` is set, the table above times the first prompts of the grid three ways, without
the output cache: one prompt at a time with `generate`, batches of 8 with left padding, and batches of 16
with the shared-prefix cache; the last column checks that the faster settings give the same greedy
answers. The prefix cache pays off in proportion to the number of examples that share a prefix, here
`n_samples` per task and stimulus.
The machine's other work makes these wall-clock numbers noisy; CPU seconds per prompt are steadier.)

## Accuracy per task

Each point is the accuracy of one condition on one task, with a 95% Wilson interval over the test
examples (and seeds). The original prompt is in black.
"""),
    code("""
acc = ep.accuracy_table(results)
run.log(accuracy=acc.to_dict("records"))
for (model_name, mode), part in acc.groupby(["model", "mode"], sort=False):
    fig, ax = plt.subplots(figsize=(9, 0.45 * part.task.nunique() + 1.4))
    conds = list(dict.fromkeys(part.condition))
    offsets = np.linspace(-0.35, 0.35, len(conds))
    task_order = list(dict.fromkeys(part.task))
    palette = sns.color_palette("husl", len(conds))
    for off, cond, colour in zip(offsets, conds, palette):
        rows = part[part.condition == cond].set_index("task").loc[task_order]
        y = np.arange(len(task_order)) + off
        c = "black" if cond == "none" else colour
        ax.errorbar(rows.accuracy, y, xerr=[rows.accuracy - rows.ci_low, rows.ci_high - rows.accuracy],
                    fmt="o", ms=4 if cond != "none" else 6, color=c, lw=0.8, label=cond, alpha=0.9)
    ax.set_yticks(range(len(task_order)), task_order)
    ax.set_xlim(-0.02, 1.02)
    ax.set_xlabel("accuracy")
    ax.set_title(f"{model_name}, {mode}")
    ax.legend(ncol=1, fontsize=7, bbox_to_anchor=(1.01, 1), loc="upper left")
    fig.tight_layout()
    run.stamp(fig, models=[model_name])
"""),
    md("""
## What the model actually says

Accuracy hides *how* an answer goes wrong. For the first model and the first task, here are the first
answers under every condition:
"""),
    code("""
first_task = results[(results.model == models[0]) & (results.task == tasks[0])]
seen = first_task.drop_duplicates(["mode", "condition", "input"])
show = seen.groupby(["mode", "condition"], sort=False).head(2)[["mode", "condition", "input", "answer", "output", "correct"]]
display(show.reset_index(drop=True))
"""),
    md("""
Read the outputs before the statistics. Some stimuli are answered *as if they were the question*: a
small chat model asked "Are you sure?" can reply that it is sure instead of solving the task, and one
asked for "a confidence score between 0-1" together with our "reply with the answer only" can return the
score alone. In those cases the stimulus does not motivate the model; it replaces the task. Larger models
keep the task and the stimulus apart, which is one reason the paper's effect need not carry over.

## Where the stimuli help and hurt

The heatmap shows, for each task and stimulus, the change in accuracy (percentage points) against the
original prompt. Blue cells are gains, red cells losses. With a handful of examples per task a single
answer moves a cell by several points, so read rows and columns, not single cells.
"""),
    code("""
for (model_name, mode), part in acc.groupby(["model", "mode"], sort=False):
    wide = part.pivot(index="task", columns="condition", values="accuracy")
    delta = 100 * wide.sub(wide["none"], axis=0).drop(columns="none")
    delta = delta[[c for c in conditions if c in delta.columns]]
    fig, ax = plt.subplots(figsize=(0.55 * delta.shape[1] + 3, 0.42 * delta.shape[0] + 1.5))
    sns.heatmap(delta, cmap="RdBu", center=0, vmin=-60, vmax=60, annot=True, fmt=".0f", cbar_kws={"label": "Δ accuracy (points)"}, ax=ax)
    ax.set_title(f"{model_name}, {mode}: stimulus − original")
    ax.set_xlabel(""), ax.set_ylabel("")
    fig.tight_layout()
    run.stamp(fig, models=[model_name])
"""),
    md("""
## Relative improvement, the paper's way

The paper averages accuracy over tasks and compares that average with the original prompt's:
relative improvement = (average with stimulus − original average) / original average. Besides the
eleven stimuli one by one we give the two aggregates of the paper's tables: **EP avg**, the mean over
the stimuli (what you can expect from picking one blindly), and **EP max**, the best stimulus *per
task* (an optimistic oracle: it chooses with hindsight on the test examples).
"""),
    code("""
summary = ep.summary(results)
run.log(summary=summary.to_dict("records"))
table = summary.pivot_table(index="condition", columns=["model", "mode"], values="relative_improvement_%", sort=False)
display(table.style.format("{:+.1f}%").background_gradient(cmap="RdBu", vmin=-60, vmax=60))
first = summary[summary.model == models[0]]
for mode in ep.MODES:  # a mode that this profile does not run is glued as NaN
    rows = first[first["mode"] == mode].set_index("condition")
    key = mode.replace("-", "_")
    get = lambda cond, col: rows.loc[cond, col] if cond in rows.index else float("nan")
    eps = rows.loc[[c for c in rows.index if c in ep.STIMULI]]
    run.glue(f"ri_avg_{key}", get("EP avg", "relative_improvement_%"))
    run.glue(f"ri_max_{key}", get("EP max", "relative_improvement_%"))
    run.glue(f"acc_none_{key}", 100 * get("none", "accuracy"))
    run.glue(f"n_helping_{key}", int((eps["relative_improvement_%"] > 0).sum()))
fig, ax = plt.subplots(figsize=(9, 3.6))
plot = summary[summary.condition.isin([c for c in conditions if c != "none"])].copy()
plot["setting"] = plot.model.str.split("-").str[0] + ", " + plot["mode"]
sns.barplot(data=plot, x="condition", y="relative_improvement_%", hue="setting", ax=ax)
ax.axhline(0, color="black", lw=0.8)
ax.set_ylabel("relative improvement (%)")
ax.set_xlabel("")
ax.set_title("Task-averaged accuracy with each stimulus, relative to the original prompt")
fig.tight_layout()
run.stamp(fig)
"""),
    md(f"""
For the first model (Qwen at the local profile), the average stimulus changes the task-averaged accuracy by
{g("ri_avg_zero_shot", "+.1f")}% zero-shot (original prompt: {g("acc_none_zero_shot", ".0f")}% correct)
and by {g("ri_avg_few_shot", "+.1f")}% few-shot (original: {g("acc_none_few_shot", ".0f")}%);
{g("n_helping_zero_shot", ".0f")} of the eleven stimuli help zero-shot and {g("n_helping_few_shot", ".0f")}
few-shot. Choosing the best stimulus per task with hindsight gives {g("ri_max_zero_shot", "+.1f")}% and
{g("ri_max_few_shot", "+.1f")}%, which says more about the noise of small samples than about emotion:
the maximum of eleven noisy numbers is above their mean even when no stimulus does anything.

## Is any of it significant?

For every stimulus we pair each test example with itself under the original prompt and run an exact
McNemar test on the examples where exactly one of the two prompts is right, then correct the eleven
(or twelve, with CoT) p-values of a model and mode with Holm's method. The interval is a paired bootstrap
of the task-averaged accuracy difference.
"""),
    code("""
sig = ep.significance(results, n_boot=n_boot, seed=seed)
run.log(significance=sig.to_dict("records"))
display(sig.style.format({"p_value": "{:.3f}", "p_holm": "{:.3f}", "diff": "{:+.3f}", "diff_low": "{:+.3f}",
                          "diff_high": "{:+.3f}"}).hide(axis="index"))
run.glue("n_significant", int((sig.p_holm < 0.05).sum()))
run.glue("n_tests", len(sig))
run.glue("n_significant_worse", int(((sig.p_holm < 0.05) & (sig["diff"] < 0)).sum()));
"""),
    md(f"""
{g("n_significant", ".0f")} of the {g("n_tests", ".0f")} comparisons are significant after correction
({g("n_significant_worse", ".0f")} of them are significant *losses*). At this sample size a stimulus would
need to flip the answer on many examples in one direction to be detected; an effect of the size the paper
reports on Instruction Induction (8% relative, a few points of accuracy) is far below what these tests can
see. The local profile is a first look, and the `full` profile (more examples, several seeds, larger
models) is the one that could detect small effects.
"""),
    code("run.finish()"),
]

P03 = HEAD + EVAL_PARAMS + '''n_boot = 1000  # paired-bootstrap resamples for the difference intervals
bench_prompts = 16  # prompts timed three ways (batch 1, batch 8, shared-prefix batches); 0 skips
'''

# =========================================================================================== 04
NB04 = [
    md("""
# 4. Why? Which words matter

The paper looks inside the models for an explanation: it measures how much each word of a stimulus
contributes to the output and reports that the stimuli's words carry weight, with words like
"confidence", "sure", "success" and "achievement" contributing most {cite}`emotionprompt2023`. We ask the
question in a way that needs only the model's output probabilities: **leave one word out**. For a test
example with its correct answer, we compute the log-probability the model gives to that answer with the
full stimulus, then again with one word of the stimulus deleted. If deleting a word lowers the
probability of the right answer, that word was helping.
"""),
    code("""
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from IPython.display import display

from fmbook import emotion_prompt as ep
from fmbook import lm

config = ep.AttributionConfig(stimuli=tuple(stimuli), tasks=tuple(tasks), n_samples=n_samples, seed=seed,
                              batch_size=batch_size)
model = lm.load_causal_lm(model_name, dtype=dtype, device=run.device)
info = model.info()
run.uses_model(model_name, **{k: v for k, v in info.items() if k not in ("name", "model_id")}, resolved_id=info["model_id"])
run.uses_data("instruction-induction-generated", source="fmbook.instruction_induction", tasks=list(tasks),
              n_samples=n_samples, seed=seed)
scores = ep.word_attribution(model, config)
run.log(attribution=scores.to_dict("records"), attribution_config=ep.config_dict(config),
        scored_prompts=model.stats["scored"])
whole = scores[scores.position == -1].set_index("stimulus")
display(whole[["attribution", "se"]].rename(columns={"attribution": "Δ log p(answer): stimulus vs none"}))
"""),
    md("""
The first number per stimulus is the effect of the whole sentence: the mean change in the log-probability
of the correct answer when the stimulus is added to the original prompt (positive: the stimulus makes
the right answer more likely). It is the continuous counterpart of the accuracy change in the previous
notebook and far less noisy, because it moves even when the greedy answer does not change.
"""),
    code("""
words = scores[scores.position >= 0]
fig, axes = plt.subplots(len(stimuli), 1, figsize=(9, 1.0 + 0.9 * len(stimuli) + 0.05 * len(words)), squeeze=False)
for ax, sid in zip(axes[:, 0], stimuli):
    part = words[words.stimulus == sid].sort_values("position")
    colours = ["#4c72b0" if v >= 0 else "#c44e52" for v in part.attribution]
    ax.bar(range(len(part)), part.attribution, yerr=part.se, color=colours, capsize=2)
    ax.set_xticks(range(len(part)), part.word, rotation=45, ha="right", fontsize=8)
    ax.axhline(0, color="black", lw=0.6)
    ax.set_ylabel(sid)
axes[0, 0].set_title("Leave one word out: drop in log p(correct answer) when the word is removed")
fig.tight_layout()
run.stamp(fig)
top = words.reindex(words.attribution.abs().sort_values(ascending=False).index).head(8)
display(top[["stimulus", "word", "attribution", "se"]].reset_index(drop=True))
best = words.loc[words.attribution.idxmax()]
run.glue("top_word", best.word)
run.glue("top_word_stimulus", best.stimulus)
run.glue("top_word_attr", best.attribution)
paper_words = ["confidence", "sure", "success", "achievements", "achievement"]
hits = words[words.word.str.lower().str.strip("?.,").isin(paper_words)]
run.glue("paper_words_mean", hits.attribution.mean() if len(hits) else float("nan"))
run.glue("all_words_mean", words.attribution.mean())
gap = hits.attribution.mean() - words.attribution.mean() if len(hits) else None
run.headline("Words like 'confidence', 'sure', 'success' contribute most (attribution above the average word)",
             ours=None if gap is None else round(float(gap), 3), paper=None, unit="nats",
             note=f"leave-one-word-out on log p(correct answer), {model_name}, stimuli {', '.join(stimuli)}; "
                  "the paper uses input attention contributions on larger models",
             holds=None if gap is None else bool(gap > 0));
"""),
    md(f"""
The word whose removal hurts the right answer most is "{g("top_word", "")}" in {g("top_word_stimulus", "")}
(Δ = {g("top_word_attr", ".2f")} nats). The words the paper singles out ("confidence", "sure",
"success", "achievements"), where they occur in the stimuli analysed here, have a mean attribution of
{g("paper_words_mean", ".3f")} nats against {g("all_words_mean", ".3f")} for all words.

Two cautions before reading meaning into single bars. First, a deletion changes the sentence's grammar
as well as its content, so a large effect of a function word ("your", "to") is common and says that
the model is sensitive to the form of the prompt, not that it "feels" anything. Second, the paper's
attribution is computed on much larger models that follow instructions well; at half a billion
parameters, much of what a stimulus changes is the surface form of the prompt.
"""),
    code("run.finish()"),
]

P04 = HEAD + f'''model_name = "{QWEN}"  # model analysed: offline asset name or hub id (full)
stimuli = ["EP01", "EP02", "EP04", "EP08"]  # stimuli whose words are removed one at a time
tasks = ["sum", "singular_to_plural", "antonyms"]  # tasks whose reference answer is scored
n_samples = 3  # examples per task
batch_size = 16  # prompts per forward pass
dtype = "float32"  # model weights: float32 (CPU) or bfloat16/float16 (GPU)
'''

# =========================================================================================== 05
NB05 = [
    md("""
# 5. The paper and us

This notebook puts the paper's headline numbers {cite}`emotionprompt2023` next to ours, says how big the
models are on each side, and gives an honest account of what transfers from GPT-4-sized models to
models of 270 to 500 million parameters. Our numbers are re-read from the evaluation of notebook 3 (the
same parameters; every answer comes from the output cache, so this costs seconds).
"""),
    code("""
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from IPython.display import display

from fmbook import emotion_prompt as ep

config = ep.EvalConfig(tasks=tuple(tasks), conditions=tuple(conditions), modes=tuple(modes),
                       n_samples=n_samples, seeds=tuple(seeds), n_demos=n_demos,
                       max_new_tokens=max_new_tokens, batch_size=batch_size)
run.uses_data("instruction-induction-generated", source="fmbook.instruction_induction",
              tasks=list(tasks), n_samples=n_samples, seeds=list(seeds))
results, per_model = ep.evaluate_models(models, config, base_few_shot_only, dtype=dtype, device=run.device)
sizes = {}
for m in per_model:
    info = m["info"]
    run.uses_model(m["name"], **{k: v for k, v in info.items() if k not in ("name", "model_id")}, resolved_id=info["model_id"])
    sizes[m["name"]] = info["parameters_M"] / 1000
    run.log(**{f"cache_hits_{m['name']}": m["cached"], f"generated_{m['name']}": m["generated"]})
summary = ep.summary(results)
"""),
    md("""
## Headline numbers
"""),
    code("""
rows = []
for (name, mode), part in summary.groupby(["model", "mode"], sort=False):
    p = part.set_index("condition")
    rows.append({"model": name, "parameters (B)": sizes[name], "mode": mode,
                 "original accuracy": p.loc["none", "accuracy"],
                 "RI, EP avg (%)": p.loc["EP avg", "relative_improvement_%"],
                 "RI, EP max (%)": p.loc["EP max", "relative_improvement_%"],
                 "RI, CoT (%)": p.loc["CoT", "relative_improvement_%"] if "CoT" in p.index else np.nan})
ours = pd.DataFrame(rows)
display(ours.style.format({"parameters (B)": "{:.2f}", "original accuracy": "{:.0%}", "RI, EP avg (%)": "{:+.1f}",
                           "RI, EP max (%)": "{:+.1f}", "RI, CoT (%)": "{:+.1f}"}).hide(axis="index"))
run.log(ours=ours.to_dict("records"))
paper = pd.DataFrame([{"model": k, "parameters (B)": v} for k, v in ep.PAPER_MODELS.items()])
display(paper.style.format({"parameters (B)": "{:.2f}"}, na_rep="not published").hide(axis="index"))
for _, r in ours.iterrows():
    short = r["model"].split("-")[0].split("/")[-1]
    ri = r["RI, EP avg (%)"]
    run.headline(f"Relative improvement on Instruction Induction, {r['mode']} ({short}, EP avg)",
                 ours=None if np.isnan(ri) else round(float(ri), 1),
                 paper=ep.PAPER["relative_improvement_instruction_induction_%"], unit="%",
                 note=f"{r['model']}, {r['parameters (B)']:.2f}B parameters, original accuracy "
                      f"{r['original accuracy']:.0%}; {len(tasks)} generated tasks, "
                      f"{n_samples} examples x {len(seeds)} seed(s); paper: 24 tasks, Flan-T5-Large to GPT-4",
                 holds=None if np.isnan(ri) else bool(ri > 0))
best = ours.iloc[0]
run.glue("ours_ri_avg", best["RI, EP avg (%)"])
run.glue("ours_ri_max", best["RI, EP max (%)"])
run.glue("ours_mode", best["mode"])
run.glue("ours_model", best["model"])
run.glue("paper_ri_ii", ep.PAPER["relative_improvement_instruction_induction_%"])
run.glue("paper_ri_bb", ep.PAPER["relative_improvement_bigbench_%"])
zs = ours[ours["mode"] == "zero-shot"].set_index("model")["RI, EP avg (%)"]
fs = ours[ours["mode"] == "few-shot"].set_index("model")["RI, EP avg (%)"]
both = [m for m in zs.index if m in fs.index]
if both:
    gap = float(fs[both[0]] - zs[both[0]])
    run.headline("Gains are larger few-shot than zero-shot (EP avg, few-shot minus zero-shot)",
                 ours=None if np.isnan(gap) else round(gap, 1), paper=None, unit="points of RI",
                 note=f"{both[0]}; the paper states the direction, not one number",
                 holds=None if np.isnan(gap) else bool(gap > 0))
run.headline("Relative improvement on BIG-Bench", ours=None, paper=ep.PAPER["relative_improvement_bigbench_%"],
             unit="%", note="not run: the curated BIG-Bench tasks are not available offline", holds=None)
run.headline("Human study: better responses with EmotionPrompt (GPT-4, 106 people)", ours=None,
             paper=ep.PAPER["human_study_improvement_%"], unit="%", note="not reproducible here", holds=None)
"""),
    code("""
fig, ax = plt.subplots(figsize=(7.5, 3.4))
labels = [f"{m.split('-')[0]}\\n{mode}" for m, mode in zip(ours["model"], ours["mode"])]
x = np.arange(len(ours))
ax.bar(x - 0.2, ours["RI, EP avg (%)"], 0.4, label="ours, EP avg", color="#4c72b0")
ax.bar(x + 0.2, ours["RI, EP max (%)"], 0.4, label="ours, EP max (oracle)", color="#8da0cb")
ax.axhline(ep.PAPER["relative_improvement_instruction_induction_%"], color="#c44e52", ls="--",
           label="paper: +8.00% (Instruction Induction)")
ax.axhline(0, color="black", lw=0.8)
ax.set_xticks(x, labels)
ax.set_ylabel("relative improvement (%)")
ax.legend(fontsize=8)
ax.set_title("Relative improvement over the original prompt")
fig.tight_layout()
run.stamp(fig)
"""),
    md(f"""
## What transfers, and what does not

The paper reports a relative improvement of {g("paper_ri_ii", ".2f")}% on Instruction Induction and
{g("paper_ri_bb", ".0f")}% on BIG-Bench, averaged over six models from Flan-T5-Large (0.78B parameters)
to GPT-4. For {g("ours_model", "")} in the {g("ours_mode", "")} setting we measure
{g("ours_ri_avg", "+.1f")}% for the average stimulus and {g("ours_ri_max", "+.1f")}% for the best one
chosen per task with hindsight.

* **The mechanism transfers; the size of the effect is not something we can confirm at this scale.**
  Appending a sentence to the instruction does change what these small models answer, on some tasks by
  a lot, and in both directions. But the average effect is small compared with the noise of a few
  examples per task, and most individual comparisons are not significant (notebook 3).
* **Small models react to the form of a stimulus more than to its emotion.** Stimuli that ask for
  something (EP01 "give me a confidence score", EP06 "briefly explain") change the *format* of the
  answer; an instruction-tuned model that obeys adds text that exact-match checking then has to cope
  with. Large models absorb such requests; a 0.5B model is pulled off the task by them.
* **The "max" number is an oracle.** Choosing, per task, the best of eleven stimuli on the test
  examples is optimistic by construction; the paper's tables report it alongside the average, and we
  show both so that the difference is visible.
* **A base model is a different animal.** Gemma 3 270M is not instruction-tuned; zero-shot it mostly
  continues the text rather than answering, and few-shot its answers follow the demonstrations. A
  stimulus there is just more context; there is no reason to expect the paper's effect.
* **What we could not do.** BIG-Bench and the human study are not reproducible offline; our tasks are
  13 of the 24, generated by rule with our own word lists rather than the benchmark's data; our models
  are one to three orders of magnitude smaller than the paper's. The `full` profile runs the same
  code on causal chat models of the paper's kind by hub id (Llama 2 chat, Vicuna) with more examples and
  seeds; Flan-T5 is a sequence-to-sequence model, which this causal-LM code does not load.
"""),
    code("run.finish()"),
]

P05 = HEAD + EVAL_PARAMS


def main() -> None:
    write_notebook(HERE / "01_stimuli.ipynb", CHAPTER, "01_stimuli", P01, NB01)
    write_notebook(HERE / "02_tasks.ipynb", CHAPTER, "02_tasks", P02, NB02)
    write_notebook(HERE / "03_does_emotion_help.ipynb", CHAPTER, "03_does_emotion_help", P03, NB03)
    write_notebook(HERE / "04_why.ipynb", CHAPTER, "04_why", P04, NB04)
    write_notebook(HERE / "05_paper_vs_ours.ipynb", CHAPTER, "05_paper_vs_ours", P05, NB05)


if __name__ == "__main__":
    main()
