"""``space_timesteps`` must select exactly the steps Improved DDPM selects.

Reference: openai/improved-diffusion, ``improved_diffusion/respace.py::space_timesteps`` (Nichol &
Dhariwal 2021, "Improved Denoising Diffusion Probabilistic Models", Sec. 4 "Improving Sampling
Speed"); DiT (facebookresearch/DiT, ``diffusion/respace.py``) uses the same function for its
250-step sampler. A checkpoint trained with that code and sampled with "250" or "ddim50" only
reproduces the reference samples if the same original indices are kept, so "close" is not enough:
the sets must be equal.

The reference walks each section with a running float position (``cur += stride``) and rounds it
at every step. Rounding ``k * stride`` instead gives the same number almost always, but where
``k * (size - 1) / (count - 1)`` is a half-integer the two differ by the last bit, and builtin
``round`` (ties to even) then goes different ways (T = 1000, 21 steps: the reference keeps 499,
``round(10 * 49.95) = round(499.5)`` keeps 500). ``_transcribed_rule`` below is an independent
plain-Python transcription of the reference rule; the hard-coded values were produced by running
the reference function itself.
"""

from __future__ import annotations

import random
from typing import Sequence

import pytest

from ssl_bench.diffusion.respace import space_timesteps


def _transcribed_rule(num_timesteps: int, section_counts: str | Sequence[int]) -> set[int]:
    """The reference rule, written out independently of the code under test."""
    if isinstance(section_counts, str):
        if section_counts.startswith("ddim"):
            want = int(section_counts[4:])
            # the smallest stride in 1..T-1 whose range(0, T, stride) has exactly `want` steps
            stride = 1
            while stride < num_timesteps:
                steps = list(range(0, num_timesteps, stride))
                if len(steps) == want:
                    return set(steps)
                stride += 1
            raise ValueError("no integer stride")
        section_counts = [int(part) for part in section_counts.split(",")]
    n = len(section_counts)
    out: set[int] = set()
    first = 0
    for j in range(n):
        size = num_timesteps // n + (1 if j < num_timesteps % n else 0)
        count = section_counts[j]
        if count > size:
            raise ValueError("section too small")
        step = (size - 1) / (count - 1) if count > 1 else 1
        position = 0.0
        taken = 0
        while taken < count:
            out.add(first + round(position))
            position = position + step
            taken += 1
        first += size
    return out


# ---- the transcription agrees with values produced by the reference function itself ----------

# T -> {section string: every kept step, sorted}, as returned by the reference space_timesteps
_KNOWN: dict[int, dict[str, list[int]]] = {
    100: {"15": [0, 7, 14, 21, 28, 35, 42, 49, 57, 64, 71, 78, 85, 92, 99]},
    1000: {
        "21": [0, 50, 100, 150, 200, 250, 300, 350, 400, 450, 499,
               549, 599, 649, 699, 749, 799, 849, 899, 949, 999],
        "ddim3": [0, 334, 668],
    },
    4000: {
        "31": [0, 133, 267, 400, 533, 666, 800, 933, 1066, 1200, 1333, 1466, 1600, 1733, 1866, 1999,
               2133, 2266, 2399, 2533, 2666, 2799, 2933, 3066, 3199, 3333, 3466, 3599, 3732, 3866, 3999],
    },
    300: {
        "10,15,20": [0, 11, 22, 33, 44, 55, 66, 77, 88, 99,
                     100, 107, 114, 121, 128, 135, 142, 149, 157, 164, 171, 178, 185, 192, 199,
                     200, 205, 210, 216, 221, 226, 231, 236, 242, 247, 252, 257, 263, 268, 273, 278,
                     283, 289, 294, 299],
    },
    10: {"1,1,1": [0, 4, 7], "3,0,2": [0, 2, 3, 7, 9], "0": [], "ddim10": list(range(10))},
    7: {"ddim4": [0, 2, 4, 6]},
    1: {"1": [0]},
}
_KNOWN_CASES = [(T, spec, steps) for T, specs in _KNOWN.items() for spec, steps in specs.items()]


@pytest.mark.parametrize(("T", "spec", "steps"), _KNOWN_CASES)
def test_known_reference_values(T: int, spec: str, steps: list[int]) -> None:
    assert sorted(_transcribed_rule(T, spec)) == steps  # guards the transcription itself
    assert sorted(space_timesteps(T, spec)) == steps
    if not spec.startswith("ddim"):
        assert sorted(space_timesteps(T, [int(c) for c in spec.split(",")])) == steps


def test_t1000_count21_keeps_499_not_500() -> None:
    kept = space_timesteps(1000, "21")
    assert 499 in kept and 500 not in kept


def test_dit_250_steps() -> None:
    """DiT's sampler: gaps of 4 except three gaps of 5 after the 41st, 124th and 207th kept step."""
    kept = sorted(space_timesteps(1000, "250"))
    gaps = [b - a for a, b in zip(kept, kept[1:])]
    assert len(kept) == 250 and kept[0] == 0 and kept[-1] == 999
    assert [i for i, g in enumerate(gaps) if g != 4] == [41, 124, 207]
    assert all(gaps[i] == 5 for i in (41, 124, 207))


# ---- exhaustive single-section sweep ----------------------------------------------------------


@pytest.mark.parametrize("T", [100, 1000, 4000])
def test_every_single_section_count_matches(T: int) -> None:
    """Every count 1..T, as an int list and as a string (4000 covers IDDPM's cosine runs)."""
    wrong: list[int] = []
    for count in range(1, T + 1):
        expected = _transcribed_rule(T, [count])
        if space_timesteps(T, [count]) != expected or space_timesteps(T, str(count)) != expected:
            wrong.append(count)
    assert not wrong, f"T={T}: {len(wrong)} counts select other steps than IDDPM, e.g. {wrong[:10]}"


# ---- multi-section strings --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("T", "spec"),
    [(300, "10,15,20"), (10, "1,1,1"), (1000, "21,21"), (1001, "21,21,21"), (4000, "31,0,1,100"),
     (7, "3,2,2"), (1000, "500,500")],
)
def test_multi_section_strings(T: int, spec: str) -> None:
    assert space_timesteps(T, spec) == _transcribed_rule(T, spec)


def test_random_multi_section_strings() -> None:
    """A few hundred random section lists with a valid count (0..size) in every section."""
    rng = random.Random(20210218)
    wrong: list[tuple[int, str]] = []
    for _ in range(300):
        T = rng.randint(1, 4000)
        n = rng.randint(1, min(T, 8))
        sizes = [T // n + (1 if j < T % n else 0) for j in range(n)]
        counts = [rng.randint(0, size) if rng.random() < 0.1 else rng.randint(1, min(size, 300))
                  for size in sizes]
        spec = ",".join(map(str, counts))
        expected = _transcribed_rule(T, spec)
        if space_timesteps(T, spec) != expected or space_timesteps(T, counts) != expected:
            wrong.append((T, spec))
    assert not wrong, f"{len(wrong)} section lists differ from IDDPM, e.g. {wrong[:5]}"


# ---- DDIM strides -----------------------------------------------------------------------------


@pytest.mark.parametrize("T", [100, 1000])
def test_every_ddim_count_matches(T: int) -> None:
    for n in range(0, T + 2):
        try:
            expected = _transcribed_rule(T, f"ddim{n}")
        except ValueError:
            with pytest.raises(ValueError, match=f"cannot make exactly {n} steps out of {T}"):
                space_timesteps(T, f"ddim{n}")
        else:
            assert space_timesteps(T, f"ddim{n}") == expected, n


def test_ddim_values() -> None:
    assert space_timesteps(1000, "ddim50") == set(range(0, 1000, 20))
    assert space_timesteps(1000, "ddim250") == set(range(0, 1000, 4))
    assert space_timesteps(1000, "ddim1000") == set(range(1000))


@pytest.mark.parametrize(("T", "spec"), [(1000, "ddim999"), (1000, "ddim1"), (1000, "ddim0"), (1, "ddim1")])
def test_ddim_impossible_count_raises(T: int, spec: str) -> None:
    """Only strides 1..T-1 are tried (as in the reference), so even "ddim1" has no stride."""
    n = spec[len("ddim"):]
    with pytest.raises(ValueError, match=f"^cannot make exactly {n} steps out of {T} with an integer stride$"):
        space_timesteps(T, spec)


# ---- other errors and edge cases ------------------------------------------------------------


@pytest.mark.parametrize(("T", "counts", "count", "size"), [(10, [11], 11, 10), (10, "4,6", 6, 5), (10, [5, 6], 6, 5)])
def test_count_larger_than_section_raises(T: int, counts: str | list[int], count: int, size: int) -> None:
    with pytest.raises(ValueError, match=f"^cannot take {count} steps from a section of {size}$"):
        space_timesteps(T, counts)


def test_zero_count_section_keeps_nothing() -> None:
    assert space_timesteps(10, [0]) == set()
    assert space_timesteps(10, "0,5") == {5, 6, 7, 8, 9}


@pytest.mark.parametrize("spec", ["", "10,,20", "ddim", "ddim10,20"])
def test_malformed_strings_raise(spec: str) -> None:
    with pytest.raises(ValueError):
        space_timesteps(100, spec)


def test_no_sections_raises() -> None:
    with pytest.raises(ValueError, match="at least one section"):
        space_timesteps(100, [])
