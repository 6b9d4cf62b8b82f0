"""The seven papers of the book: bibliographic keys, chapter ids and the headline claims we test.

The paper's numbers here are facts about the papers (see each chapter's notebooks for where in the
paper they appear); our numbers never live here, they come from the results files.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Claim:
    claim: str
    paper: str  # as the paper states it


@dataclass(frozen=True)
class Paper:
    chapter: str
    title: str
    arxiv: str
    bibkey: str
    claims: list[Claim] = field(default_factory=list)


PAPERS: list[Paper] = [
    Paper("emotion_prompt", "Large Language Models Understand and Can Be Enhanced by Emotional Stimuli",
          "2307.11760", "emotionprompt2023",
          [Claim("Relative improvement of EmotionPrompt on Instruction Induction", "8.00%"),
           Claim("Relative improvement of EmotionPrompt on BIG-Bench", "115%")]),
    Paper("emotion_v2", "The Good, The Bad, and Why: Unveiling Emotions in Generative AI",
          "2312.11111", "emotionv2_2024",
          [Claim("EmotionPrompt improves and EmotionAttack degrades LLM performance", "qualitative")]),
    Paper("culture_llm", "CultureLLM: Incorporating Cultural Differences into Large Language Models",
          "2402.10946", "culturellm2024",
          [Claim("CultureLLM over GPT-3.5 (macro-F1, 59 culture-specific datasets)", "+8.1%"),
           Claim("CultureLLM over Gemini Pro", "+9.5%")]),
    Paper("nmtune", "Understanding and Mitigating the Label Noise in Pre-training on Downstream Tasks",
          "2309.17002", "nmtune2024",
          [Claim("Slight pre-training label noise (5-10%) can help in-domain transfer", "qualitative"),
           Claim("Pre-training label noise hurts out-of-domain transfer", "qualitative"),
           Claim("NMTune improves over linear probing on noisy encoders", "qualitative")]),
    Paper("zoopfl", "ZooPFL: Exploring Black-box Foundation Models for Personalized Federated Learning",
          "2310.05143", "zoopfl2023",
          [Claim("ZooPFL beats black-box baselines in personalized FL", "qualitative")]),
    Paper("imbalance", "Exploring Vision-Language Models for Imbalanced Learning", "2304.01457",
          "imbalancevlm2024",
          [Claim("Gain over zero-shot CLIP on ImageNet-LT / iNaturalist18 / Places-LT",
                 "+6.58 / +69.82 / +6.17 points")]),
    Paper("fedclip", "FedCLIP: Fast Generalization and Personalization for CLIP in Federated Learning",
          "2302.13485", "fedclip2023",
          [Claim("FedCLIP accuracy on PACS (held-out domain, mean)", "95.24%"),
           Claim("Fewer trained/communicated parameters than FedAvg on CLIP", "283x")]),
]

BY_CHAPTER = {p.chapter: p for p in PAPERS}
