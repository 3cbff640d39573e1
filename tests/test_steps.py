"""Property tests for selector.steps: what a step is, for policies (cut) and PRMs (split)."""
from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from selector.steps import cut_at_delimiter, split_steps

# Short alphabets so delimiters, whitespace and content collide often.
_TEXT = st.text(alphabet=st.sampled_from(list("ab \n\t#.")), max_size=40)
_DELIM = st.sampled_from(["\n\n", "\n", "##", ".", " ", "a\n"])


@settings(max_examples=400)
@given(_TEXT, _DELIM)
def test_split_steps_round_trips_and_every_step_but_the_last_ends_at_its_first_delimiter(text: str, delim: str) -> None:
    steps = split_steps(text, delim)
    assert "".join(steps) == text
    assert (steps == []) == (text == "")
    for step in steps[:-1]:
        assert step.endswith(delim)
        # A step is cut at the first delimiter after its content: cutting it again is itself.
        assert cut_at_delimiter(step, delim) == step
    # No blank step: only a lone step (a blank text) may be whitespace.
    assert len(steps) <= 1 or all(s.strip() for s in steps)


@settings(max_examples=400)
@given(_TEXT, _DELIM)
def test_cut_is_the_first_step_and_growing_step_by_step_gives_the_same_steps(text: str, delim: str) -> None:
    cut = cut_at_delimiter(text, delim)
    steps = split_steps(text, delim)
    if cut is not None:
        assert text.startswith(cut) and cut.endswith(delim)
        # ... unless only whitespace follows, which split_steps keeps in the last step.
        assert steps[0] == cut or (steps == [text] and not text[len(cut):].strip())
    # A policy cuts its continuation one step at a time; the pieces are the PRM's steps, and
    # a trailing blank rest belongs to the last one.
    grown, rest = [], text
    while rest and (piece := cut_at_delimiter(rest, delim)) is not None:
        grown.append(piece)
        rest = rest[len(piece):]
    if rest.strip() or not grown:
        grown += [rest] if rest else []
    else:
        grown[-1] += rest
    assert grown == steps


@given(_TEXT)
def test_no_delimiter_means_one_step(text: str) -> None:
    assert split_steps(text, None) == ([text] if text else [])
    assert split_steps(text, "") == ([text] if text else [])
    assert cut_at_delimiter(text, None) is None
