"""Reading the answer out of a free-form reply, per task.

The paper lets the models answer as they will; some stimuli ask for more than the answer (EP01 a
confidence score, EP06 a confidence score and an explanation) and zero-shot chain of thought asks
for reasoning. :func:`extract_answer` returns the part of a reply that is the answer, by written
rules, or ``None`` when the reply has no answer of the task's form (an *extraction failure*, which
counts as wrong and is reported per condition).

Rules, in order:

1. Markdown emphasis, code fences and lines that state a confidence, an explanation or reasons
   are removed, as is a trailing confidence clause ("... (confidence: 0.9)").
2. The *span*: the text after the last answer marker ("the answer is", "Answer:", "Output:",
   "Final answer:") on its line, else the first non-empty line.
3. The task's form inside the span: numbers (``sum``, ``diff``): the last integer; a letter
   (``first_word_letter``, ``second_word_letter``): a quoted single letter, else the last letter
   standing alone; one word (plural, antonyms, synonyms, larger animal): the span itself when it
   has at most two words, else a quoted word, else the word after a final "is"/"are" (for
   ``larger_animal`` first: the input animal the span names; if it names both, the one that
   "is larger/bigger/heavier", else the one named last);
   lists and sentences (the other tasks): the span after a leading "...:" introduction.
"""

from __future__ import annotations

import re

NUMBER_TASKS = ("sum", "diff")
LETTER_TASKS = ("first_word_letter", "second_word_letter")
WORD_TASKS = ("singular_to_plural", "antonyms", "synonyms", "larger_animal")

_EMPH = re.compile(r"(\*\*|__|`+|^#+\s*)", re.M)
_DROP_LINE = re.compile(r"^\s*[-*]?\s*(confidence|explanation|reason(s|ing)?|main reasons|my confidence|"
                        r"i am \d|i'm \d)\b", re.I)
_CONF = re.compile(r"[\s,;(\[\-–—|]*(with\s+)?(a\s+|my\s+)?confidence(\s+score)?(\s+(of|is|level))?\s*[:=]?\s*"
                   r"(is\s+)?(about\s+)?\d*\.?\d+\s*%?[)\]]?\.?", re.I)
_MARKER = re.compile(r"(?:final answer|the answer|answer|output|result)\s*(?:is|would be|:|=)\s*:?\s*(.+)", re.I)
_INT = re.compile(r"(?<![\d.])-?\d+(?:,\d{3})*(?!\d)(?!\.\d)")
_RANGE = re.compile(r"\b0\s*(-|–|to)\s*1\b")
_QUOTED = re.compile(r"[\"'“‘]([^\"'“”‘’]{1,40})[\"'”’]")


def _clean(text: str) -> list[str]:
    text = _EMPH.sub("", text or "")
    lines = []
    for line in text.splitlines():
        if _DROP_LINE.match(line):
            continue
        line = _CONF.sub("", line).strip()
        if line:
            lines.append(line)
    return lines


def answer_span(text: str) -> str | None:
    """Rules 1-2: the text after the last answer marker, else the first non-empty line."""
    lines = _clean(text)
    if not lines:
        return None
    for line in reversed(lines):
        found = list(_MARKER.finditer(line))
        if found:
            span = found[-1].group(1).strip()
            if span:
                return span
    return lines[0]


def _words(text: str) -> list[str]:
    return re.findall(r"[A-Za-z][A-Za-z'-]*", text)


def extract_answer(task: str, text: str, example_input: str = "") -> str | None:
    """The answer in reply ``text`` to an item of ``task`` (see the module docstring), or ``None``."""
    span = answer_span(text)
    if span is None:
        return None
    if task in NUMBER_TASKS:
        numbers = _INT.findall(_RANGE.sub(" ", span))
        if not numbers:
            numbers = _INT.findall(_RANGE.sub(" ", " ".join(_clean(text))))
        return numbers[-1].replace(",", "") if numbers else None
    if task in LETTER_TASKS:
        quoted = [q for q in _QUOTED.findall(span) if len(q.strip()) == 1]
        if quoted:
            return quoted[-1].strip()
        singles = re.findall(r"(?<![A-Za-z'])([A-Za-z])(?![A-Za-z'])", span)
        singles = [s for s in singles if s not in ("a", "A", "I")] or singles
        return singles[-1] if singles else None
    if task in WORD_TASKS:
        words = _words(span)
        if not words:
            return None
        if task == "larger_animal" and example_input:
            animals = [a.strip().lower() for a in example_input.split(",")]
            named = [a for a in animals if re.search(rf"\b{re.escape(a)}", span, re.I)]
            if len(named) == 1:
                return named[0]
            if len(named) == 2:  # "X is larger than Y", else the one named last ("... is the elephant")
                m = re.search(r"\b([A-Za-z]+)\s+(?:is|are)\s+(?:much\s+)?(?:larger|bigger|heavier)", span, re.I)
                if m and m.group(1).lower() in animals:
                    return m.group(1).lower()
                return max(named, key=lambda a: span.lower().rfind(a))
        if len(words) <= 2:
            return span
        quoted = [q for q in _QUOTED.findall(span) if len(_words(q)) == 1]
        if quoted:
            return quoted[-1]
        tail = re.search(r"\b(?:is|are)\s+(?:the\s+|an?\s+)?([A-Za-z][A-Za-z'-]*)[.!]?\s*$", span, re.I)
        return tail.group(1) if tail else None
    intro = re.match(r"^[^:]{0,80}:\s*(.+)$", span)
    return (intro.group(1) if intro else span).strip() or None
