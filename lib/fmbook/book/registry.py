"""Every chapter of the book, registered in one place.

The table of contents, the status page, the intro's chapter table, the related-work lists and the
tests read this registry; nothing else lists the chapters. A chapter about a paper carries the
paper's bibliographic key, arXiv id and the headline claims as the paper states them (facts about
the paper, with where they are printed); our numbers never live here, they come from each chapter's
``claims(...)`` through the results files.

Add a chapter with ``python -m fmbook new-chapter NAME`` (it writes the entry below for you to
complete) and see CONTRIBUTING.md.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class PaperClaim:
    """A headline claim as the paper states it (shown until our measurement of it exists)."""

    claim: str
    paper: str
    source: str = ""


@dataclass(frozen=True)
class Chapter:
    id: str
    title: str
    kind: str = "paper"  # "paper" | "atlas" | "appendix"
    arxiv: str = ""
    bibkey: str = ""
    short: str = ""  # a short name for tables and figures
    question: str = ""  # what the chapter asks, in one line (the intro's chapter table)
    claims: tuple[PaperClaim, ...] = field(default_factory=tuple)

    @property
    def landing_page(self) -> str:
        return f"book/chapters/{self.id}"

    @property
    def notebooks_folder(self) -> str:
        return f"notebooks/{self.id}"


CHAPTERS: tuple[Chapter, ...] = (
    Chapter("nmtune", "Understanding and Mitigating the Label Noise in Pre-training on Downstream Tasks",
            arxiv="2309.17002", bibkey="nmtune2024", short="NMTune",
            question="Does noise in pre-training labels help or hurt transfer, and can a light head on frozen features repair it?",
            claims=(PaperClaim("Slight pre-training label noise (5-10%) can help in-domain transfer", "qualitative", "Figure 2"),
                    PaperClaim("Pre-training label noise hurts out-of-domain transfer", "qualitative", "Figure 2"),
                    PaperClaim("NMTune improves over linear probing on noisy encoders", "qualitative", "Table 16"))),
    Chapter("emotion_prompt", "Large Language Models Understand and Can Be Enhanced by Emotional Stimuli",
            arxiv="2307.11760", bibkey="emotionprompt2023", short="EmotionPrompt",
            question="Does adding an emotional sentence to a prompt make a language model answer better?",
            claims=(PaperClaim("Relative improvement of EmotionPrompt on Instruction Induction", "8.00%", "Abstract; Table 1"),
                    PaperClaim("Relative improvement of EmotionPrompt on BIG-Bench", "115%", "Abstract"))),
    Chapter("emotion_v2", "The Good, The Bad, and Why: Unveiling Emotions in Generative AI",
            arxiv="2312.11111", bibkey="emotionv2_2024", short="EmotionAttack / EmotionDecode",
            question="Can emotional stimuli also attack a model, and what happens inside it?",
            claims=(PaperClaim("EmotionPrompt improves and EmotionAttack degrades LLM performance", "qualitative", "Abstract"),)),
    Chapter("culture_llm", "CultureLLM: Incorporating Cultural Differences into Large Language Models",
            arxiv="2402.10946", bibkey="culturellm2024", short="CultureLLM",
            question="Can a few survey questions, augmented, teach a model a culture's opinions?",
            claims=(PaperClaim("CultureLLM over GPT-3.5 (macro-F1, 59 culture-specific datasets)", "+8.1%", "Abstract"),
                    PaperClaim("CultureLLM over Gemini Pro", "+9.5%", "Abstract"))),
    Chapter("zoopfl", "ZooPFL: Exploring Black-box Foundation Models for Personalized Federated Learning",
            arxiv="2310.05143", bibkey="zoopfl2023", short="ZooPFL",
            question="Can federated clients personalise a black-box foundation model they can only query?",
            claims=(PaperClaim("ZooPFL beats black-box baselines in personalized FL", "qualitative", "Abstract"),)),
    Chapter("imbalance", "Exploring Vision-Language Models for Imbalanced Learning", arxiv="2304.01457",
            bibkey="imbalancevlm2024", short="VLMs for imbalance",
            question="Do vision-language models fix long-tailed classification?",
            claims=(PaperClaim("Gain over zero-shot CLIP on ImageNet-LT / iNaturalist18 / Places-LT",
                               "+6.58 / +69.82 / +6.17 points", "Abstract"),)),
    Chapter("fedclip", "FedCLIP: Fast Generalization and Personalization for CLIP in Federated Learning",
            arxiv="2302.13485", bibkey="fedclip2023", short="FedCLIP",
            question="Can a small adapter make CLIP generalise and personalise in federated learning?",
            claims=(PaperClaim("FedCLIP accuracy on PACS (held-out domain, mean)", "95.24%", "official README"),
                    PaperClaim("Fewer trained/communicated parameters than FedAvg on CLIP", "283x", "Abstract"))),
    Chapter("atlas", "The related-work atlas", kind="atlas", short="Related-work atlas",
            question="Where do these papers sit in their field?"),
    Chapter("models_and_data", "The models and data of this book", kind="appendix", short="Appendix: models and data",
            question="Which real models and data run offline, and how good are the ones we train?"),
)

BY_ID: dict[str, Chapter] = {c.id: c for c in CHAPTERS}
PAPERS: tuple[Chapter, ...] = tuple(c for c in CHAPTERS if c.kind == "paper")
CHAPTER_ARXIV: dict[str, str] = {c.arxiv: c.id for c in PAPERS}


def chapter(chapter_id: str) -> Chapter:
    """The registered chapter ``chapter_id``; an unknown id names the registered ones."""
    try:
        return BY_ID[chapter_id]
    except KeyError:
        raise KeyError(f"unknown chapter {chapter_id!r}; registered: {', '.join(BY_ID)}") from None
