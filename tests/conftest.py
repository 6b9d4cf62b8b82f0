"""Shared fixtures: a miniature book in a temporary folder, for the machinery's tests."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]


CHAT_TEMPLATE = ("{% for m in messages %}<{{ m['role'] }}>{{ m['content'] }}<eos>\n{% endfor %}"
                 "{% if add_generation_prompt %}<assistant>{% endif %}")


def save_tiny_qwen2(folder, corpus, vocab_size, **config):
    """A randomly initialised tiny Qwen2 and a byte-level BPE tokenizer trained on ``corpus``, saved in
    ``folder`` (unit tests only; ``config`` overrides the small default shape)."""
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast, Qwen2Config, Qwen2ForCausalLM

    bpe = Tokenizer(models.BPE(unk_token="<unk>"))
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    bpe.train_from_iterator(corpus, trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=["<unk>", "<eos>", "<pad>"],
                                                        initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    tok = PreTrainedTokenizerFast(tokenizer_object=bpe, eos_token="<eos>", pad_token="<pad>", unk_token="<unk>")
    tok.chat_template = CHAT_TEMPLATE
    torch.manual_seed(0)
    shape = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                 num_key_value_heads=2, max_position_embeddings=512)
    shape.update(config)
    Qwen2ForCausalLM(Qwen2Config(vocab_size=len(tok), eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id,
                                 **shape)).save_pretrained(folder)
    tok.save_pretrained(folder)
    return folder


@pytest.fixture()
def tiny(tiny_folder, tmp_path):
    """The test module's tiny model (its ``tiny_folder`` fixture) as a CausalLM with its own output cache."""
    from fmbook.core import lm

    model = lm.load_causal_lm(str(tiny_folder), verbose=False)
    model.cache = lm.OutputCache(tmp_path / "outputs.sqlite")
    return model


FRONT = """---
jupytext:
  formats: ipynb,md:myst
  text_representation: {extension: .md, format_name: myst, format_version: 0.13, jupytext_version: 1.19.6}
kernelspec: {display_name: Python 3, language: python, name: python3}
---
"""


def text_notebook(title: str, parameters: str, bootstrap: str, body: list[str]) -> str:
    """A MyST text notebook: title, parameters cell, bootstrap cell, code cells of ``body``."""
    cells = [f"```{{code-cell}}\n:tags: [parameters]\n\n{parameters.strip()}\n```",
             f"```{{code-cell}}\n:tags: [hide-input]\n\n{bootstrap}\n```",
             *[f"```{{code-cell}}\n{code.strip()}\n```" for code in body]]
    return FRONT + f"\n# {title}\n\n" + "\n\n".join(cells) + "\n"


@pytest.fixture
def mini_book(tmp_path, monkeypatch):
    """A book with one chapter 'demo' of two notebooks; FMBOOK_ROOT points at it."""
    from fmbook.book.nb import bootstrap_cell
    from fmbook.book.pairs import sync

    (tmp_path / "_toc.yml").write_text(
        "format: jb-book\nroot: book/intro\nchapters:\n"
        "  - file: notebooks/demo/01_first\n  - file: notebooks/demo/02_second\n")
    (tmp_path / "book").mkdir()
    url = yaml.safe_load((REPO / "_config.yml").read_text())["repository"]["url"]
    (tmp_path / "_config.yml").write_text(f"title: mini\nrepository: {{url: {url}}}\n")
    folder = tmp_path / "notebooks/demo"
    folder.mkdir(parents=True)
    params = ('profile = "auto"  # smoke | local | full\nseed = 0  # random seed\n'
              'n = 10  # sample size\nscale = 1.5  # spread\nlabel = "x"  # a name\nfail = False  # raise on purpose\n')
    body = [
        "import numpy as np\nx = np.random.default_rng(seed).normal(size=n) * scale\n"
        "run.uses_data('demo-normal', n=n)\nrun.log(mean=float(x.mean()), n=n)",
        "if fail:\n    raise ValueError('asked to fail')",
        "from fmbook.core import stats\nfrom fmbook.core.claims import Claim\n"
        "run.claims([Claim.from_interval('mean is near zero', stats.t_interval(x), 'mean, t-interval',"
        " direction='equivalent', margin=5.0)])\nrun.finish()",
    ]
    (folder / "01_first.md").write_text(text_notebook("First", params, bootstrap_cell("demo", "01_first"), body))
    (folder / "02_second.md").write_text(text_notebook(
        "Second", 'profile = "auto"  # profile\nseed = 0  # seed\nn = 5  # size\n',
        bootstrap_cell("demo", "02_second"), ["run.log(n=n)\nrun.finish()"]))
    sync(tmp_path / "notebooks")
    (folder / "profiles.yml").write_text(
        "smoke:\n  _all: {n: 3}\n  01_first: {scale: 0.5}\nlocal: {}\nfull:\n  _all: {n: 1000}\n")
    monkeypatch.setenv("FMBOOK_ROOT", str(tmp_path))
    for var in ("FMBOOK_RESULTS", "FMBOOK_BUILD", "FMBOOK_RESULT_PATH"):
        monkeypatch.delenv(var, raising=False)
    return tmp_path


@pytest.fixture(scope="session")
def smoke_run():
    """Every notebook of every chapter executed at the smoke profile (skips unchanged ones)."""
    from fmbook.book import runner

    outcomes = runner.run([], profile="smoke", jobs=2)
    failed = [o.message for o in outcomes if o.status not in ("ran", "skipped")]
    assert not failed, "\n".join(failed)
    return outcomes


@pytest.fixture(scope="session")
def built_book(smoke_run):
    """The HTML book built strictly (-W -n) from the smoke run; returns the folder of index.html."""
    from fmbook.book.build import build

    return build(profile="smoke")
