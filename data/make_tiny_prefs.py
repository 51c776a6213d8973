"""Write the small bundled preference data set ``data/tiny_prefs/`` (UltraFeedback-binarized layout).

Each row asks a short question about a thing (an animal, a fruit, a city, a colour, a tool) and pairs a
helpful, on-topic answer (chosen) with an unhelpful one (rejected): a curt refusal, a repetitive loop, an
off-topic reply or a rude dismissal. The preference is visible in the words used, so a tiny
random-initialised model learns it within a couple of minutes on a CPU, yet the answers vary in length
and wording, and the test split holds question/answer combinations not seen in training.

Rows have the fields of ``HuggingFaceH4/ultrafeedback_binarized``: ``prompt``, ``prompt_id``,
``chosen`` and ``rejected`` (message lists ending with the assistant turn), ``messages`` (= chosen),
``score_chosen`` and ``score_rejected``. Run ``python data/make_tiny_prefs.py`` to regenerate; the output
is deterministic.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import random
from pathlib import Path

from simpo.io import write_text

SUBJECTS: dict[str, list[tuple[str, str]]] = {
    "animal": [
        ("cat", "a small furry pet that likes to sleep in the sun"),
        ("dog", "a loyal companion that enjoys long walks"),
        ("horse", "a strong animal that people have ridden for centuries"),
        ("owl", "a bird that hunts quietly at night"),
        ("whale", "the largest animal that has ever lived in the ocean"),
        ("rabbit", "a gentle animal with long ears that eats plants"),
        ("eagle", "a bird of prey with very sharp eyesight"),
        ("dolphin", "a clever sea mammal that lives in groups"),
        ("turtle", "a slow reptile that carries its shell everywhere"),
        ("bee", "an insect that makes honey and pollinates flowers"),
    ],
    "fruit": [
        ("apple", "a crisp fruit that grows on trees in cool climates"),
        ("banana", "a soft yellow fruit rich in potassium"),
        ("mango", "a sweet tropical fruit with a large stone"),
        ("grape", "a small fruit that grows in bunches on vines"),
        ("lemon", "a sour citrus fruit used in drinks and cooking"),
        ("cherry", "a small red fruit with a hard pit"),
        ("pear", "a juicy fruit that is wide at the bottom"),
        ("orange", "a citrus fruit full of vitamin C"),
    ],
    "city": [
        ("Paris", "the capital of France, known for its museums and cafes"),
        ("Tokyo", "the busy capital of Japan with excellent trains"),
        ("Cairo", "a large city on the river Nile in Egypt"),
        ("Lima", "the capital of Peru on the Pacific coast"),
        ("Oslo", "the capital of Norway, surrounded by forests and a fjord"),
        ("Rome", "the capital of Italy, full of ancient history"),
        ("Nairobi", "the capital of Kenya, close to a national park"),
        ("Toronto", "the largest city in Canada, on the shore of a great lake"),
    ],
    "colour": [
        ("blue", "the colour of a clear sky and the deep sea"),
        ("green", "the colour of grass and fresh leaves"),
        ("red", "a warm colour often used for warnings"),
        ("yellow", "the bright colour of sunflowers and lemons"),
        ("purple", "a colour made by mixing red and blue"),
    ],
    "tool": [
        ("hammer", "a tool for driving nails into wood"),
        ("saw", "a tool with a toothed blade for cutting"),
        ("wrench", "a tool for turning nuts and bolts"),
        ("ladder", "a frame with steps for reaching high places"),
        ("shovel", "a tool for digging and moving soil"),
    ],
}

QUESTIONS = [
    "Can you tell me about the {name}?",
    "What is a {name}?",
    "Please describe the {name} in one or two sentences.",
    "I am curious: what do you know about the {name}?",
    "Explain what a {name} is to a child.",
    "Give me a short fact about the {name}.",
]

HELPFUL = [
    "Sure! The {name} is {fact}.",
    "Of course. The {name} is {fact}. I hope that helps!",
    "Happy to help: the {name} is {fact}.",
    "Great question! The {name} is {fact}. Let me know if you want to learn more.",
    "The {name} is {fact}. Many people find it interesting.",
]

UNHELPFUL = [
    "No.",
    "I will not answer that.",
    "Why would I tell you? Figure it out yourself.",
    "{name} {name} {name} {name} {name} {name}",
    "Whatever. I do not care about the {name} at all and neither should you.",
    "The weather today is cloudy and the stock market went down.",
    "I refuse. This question is boring, {name} or not.",
    "Ask someone else, I am busy.",
]


def make_row(rng: random.Random, kind: str, name: str, fact: str) -> dict:
    """One preference row in the UltraFeedback-binarized layout."""
    prompt = rng.choice(QUESTIONS).format(name=name)
    chosen = rng.choice(HELPFUL).format(name=name, fact=fact)
    rejected = rng.choice(UNHELPFUL).format(name=name)
    user = {"role": "user", "content": prompt}
    chosen_msgs = [user, {"role": "assistant", "content": chosen}]
    return {
        "prompt": prompt,
        "prompt_id": hashlib.sha256(f"{kind}:{prompt}".encode()).hexdigest(),
        "chosen": chosen_msgs,
        "rejected": [user, {"role": "assistant", "content": rejected}],
        "messages": chosen_msgs,
        "score_chosen": float(rng.choice([8, 9, 10])),
        "score_rejected": float(rng.choice([1, 2, 3])),
    }


def make_splits(n_train: int, n_test: int, seed: int) -> tuple[list[dict], list[dict]]:
    """Draw ``n_train + n_test`` rows; no (prompt, chosen, rejected) triple appears in both splits."""
    rng = random.Random(seed)
    subjects = [(kind, name, fact) for kind, items in SUBJECTS.items() for name, fact in items]
    rows, seen = [], set()
    while len(rows) < n_train + n_test:
        row = make_row(rng, *rng.choice(subjects))
        key = (row["prompt"], row["chosen"][-1]["content"], row["rejected"][-1]["content"])
        if key in seen:
            continue
        seen.add(key)
        rows.append(row)
    return rows[:n_train], rows[n_train:]


def write_jsonl(rows: list[dict], path: Path) -> None:
    """Write one JSON object per line."""
    write_text(path, "".join(json.dumps(row) + "\n" for row in rows))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "tiny_prefs")
    parser.add_argument("--train", type=int, default=640, help="rows in train_prefs")
    parser.add_argument("--test", type=int, default=256, help="rows in test_prefs")
    parser.add_argument("--seed", type=int, default=1234)
    args = parser.parse_args()
    train, test = make_splits(args.train, args.test, args.seed)
    args.out.mkdir(parents=True, exist_ok=True)
    write_jsonl(train, args.out / "train_prefs.jsonl")
    write_jsonl(test, args.out / "test_prefs.jsonl")
    print(f"wrote {len(train)} train and {len(test)} test rows to {args.out}")


if __name__ == "__main__":
    main()
