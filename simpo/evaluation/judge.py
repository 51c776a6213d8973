"""The ``judge`` task: score two sets of answers to the same prompts with a reward model; win rate with a
95% confidence interval, mean lengths, and the win rate over pairs of similar length."""

from __future__ import annotations

import math

from tqdm import tqdm

from simpo.errors import UserError
from simpo.loading.reward import RewardModel


def win_rate(outcomes: list[float]) -> tuple[float, float, float]:
    """Mean of per-prompt outcomes (1 win, 0.5 tie, 0 loss) and its 95% normal-approximation interval."""
    n = len(outcomes)
    if n == 0:
        return float("nan"), float("nan"), float("nan")
    mean = sum(outcomes) / n
    var = sum((o - mean) ** 2 for o in outcomes) / (n - 1) if n > 1 else 0.0
    half = 1.96 * math.sqrt(var / n)
    return mean, max(0.0, mean - half), min(1.0, mean + half)


def compare(
    reward_model: RewardModel,
    prompts: dict[str, str],
    answers: dict[str, str],
    baseline: dict[str, str],
    length_tolerance: float = 0.1,
) -> dict[str, float]:
    """Judge ``answers`` against ``baseline`` on their shared prompts.

    Args:
        prompts: prompt text by key; answers and baseline: answer text by the same keys.
        length_tolerance: pairs whose lengths (characters) differ by at most this fraction of the longer
            one count as "similar length".

    Returns:
        ``win_rate``, ``win_rate_ci_low``, ``win_rate_ci_high``, ``prompts``, ``mean_length`` and
        ``baseline_mean_length`` (characters), ``similar_length_pairs``, ``similar_length_win_rate``,
        ``mean_reward``, ``baseline_mean_reward``.

    Raises:
        ValueError: when the two sets share no prompt.
    """
    keys = [k for k in answers if k in baseline]
    if not keys:
        raise UserError("judge.outputs and judge.baseline share no prompt: they must answer the same prompt set")
    missing = [k for k in keys if k not in prompts]
    if missing:
        raise UserError(f"no prompt text for {len(missing)} answers (e.g. {missing[0]!r}): set generate.prompts")
    outcomes, similar, ours, theirs = [], [], [], []
    for key in tqdm(keys, desc="judge", unit="prompt"):
        a, b = reward_model.score(prompts[key], answers[key]), reward_model.score(prompts[key], baseline[key])
        outcome = 1.0 if a > b else 0.5 if a == b else 0.0
        outcomes.append(outcome)
        ours.append(a)
        theirs.append(b)
        la, lb = len(answers[key]), len(baseline[key])
        if abs(la - lb) <= length_tolerance * max(la, lb, 1):
            similar.append(outcome)
    rate, low, high = win_rate(outcomes)
    return {
        "prompts": float(len(keys)),
        "win_rate": rate,
        "win_rate_ci_low": low,
        "win_rate_ci_high": high,
        "mean_length": sum(len(answers[k]) for k in keys) / len(keys),
        "baseline_mean_length": sum(len(baseline[k]) for k in keys) / len(keys),
        "similar_length_pairs": float(len(similar)),
        "similar_length_win_rate": win_rate(similar)[0],
        "mean_reward": sum(ours) / len(ours),
        "baseline_mean_reward": sum(theirs) / len(theirs),
    }
