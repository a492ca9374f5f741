"""The built-in corpus: simple children's stories, generated offline and deterministically.

It exists so that every model can be trained, tested and demonstrated on a machine with no network.
The grammar is small on purpose (a few hundred words) but combinatorial enough to give tens of
thousands of distinct sentences, so a small model has something real to learn: agreement between a
character's name and pronoun, dialogue that opens and closes its quotes, a beginning, a middle and
an ending.
"""

from __future__ import annotations

import random

CHARACTERS = [
    ("Lily", "she", "her"), ("Tom", "he", "his"), ("Mia", "she", "her"), ("Ben", "he", "his"),
    ("Sara", "she", "her"), ("Max", "he", "his"), ("Anna", "she", "her"), ("Leo", "he", "his"),
    ("Zoe", "she", "her"), ("Sam", "he", "his"), ("Lucy", "she", "her"), ("Jack", "he", "his"),
    ("Emma", "she", "her"), ("Tim", "he", "his"), ("Ella", "she", "her"), ("Finn", "he", "his"),
]
ANIMALS = ["cat", "dog", "bird", "frog", "bunny", "duck", "fox", "bear", "mouse", "puppy", "owl", "fish"]
ADJECTIVES = ["little", "happy", "small", "brave", "kind", "funny", "shy", "curious", "sleepy", "clever"]
PLACES = [
    "the park", "the garden", "the forest", "the beach", "the farm", "the lake", "the hill",
    "the town", "the school", "the zoo", "the river", "the meadow", "the kitchen", "the yard",
]
OBJECTS = [
    ("ball", "red"), ("kite", "blue"), ("box", "big"), ("book", "old"), ("hat", "yellow"),
    ("cake", "sweet"), ("boat", "tiny"), ("flower", "pink"), ("rock", "shiny"), ("toy", "new"),
    ("apple", "green"), ("key", "gold"), ("shell", "white"), ("drum", "loud"), ("map", "secret"),
]
FEELINGS = ["happy", "sad", "scared", "excited", "tired", "proud", "surprised", "worried", "glad"]
WEATHER = ["sunny", "rainy", "windy", "warm", "cold", "snowy", "cloudy", "bright"]
TIMES = ["One day", "One morning", "Once upon a time", "Long ago", "One sunny day", "One evening"]
ACTIONS = ["play", "run", "jump", "sing", "dance", "read", "swim", "draw", "climb", "explore"]
PROBLEMS = [
    "lost {poss} {obj}", "could not find {poss} {obj}", "dropped {poss} {obj} in the water",
    "saw that {poss} {obj} was stuck in a tree", "found that {poss} {obj} was broken",
]
HELPERS = ["mom", "dad", "grandma", "grandpa", "a friend", "a teacher", "an old man", "a kind woman"]
ENDINGS = [
    "From that day on, {name} always shared {poss} {obj} with friends.",
    "{name} learned that it is good to ask for help.",
    "They played together until the sun went down.",
    "{name} smiled and said thank you, and they were best friends forever.",
    "That night, {name} went to sleep with a big smile.",
    "{name} was {feeling}, and the day was the best day ever.",
    "And everyone in {place} was happy again.",
]
LESSONS = ["sharing is fun", "being kind is important", "you should never give up", "friends help each other"]


def _story(rng: random.Random) -> str:
    name, subj, poss = rng.choice(CHARACTERS)
    friend, f_subj, _ = rng.choice([c for c in CHARACTERS if c[0] != name])
    animal, adj = rng.choice(ANIMALS), rng.choice(ADJECTIVES)
    place, weather = rng.choice(PLACES), rng.choice(WEATHER)
    obj, color = rng.choice(OBJECTS)
    action, action2 = rng.sample(ACTIONS, 2)
    Subj = subj.capitalize()
    s = [
        f"{rng.choice(TIMES)}, a {adj} child named {name} went to {place}."
        if rng.random() < 0.3 else f"{rng.choice(TIMES)}, {name} went to {place} with {poss} {color} {obj}.",
        f"It was a {weather} day, and {subj} wanted to {action}.",
    ]
    if rng.random() < 0.6:
        s.append(f"At {place}, {name} met a {adj} {animal}.")
        s.append(f'"Hello, {animal}!" said {name}. "Do you want to {action} with me?"')
        s.append(rng.choice([
            f'The {animal} said, "Yes, I love to {action}!"',
            f"The {animal} nodded and wagged its tail.",
            f'The {animal} was {rng.choice(FEELINGS)}. "Can we {action2} first?" it asked.',
        ]))
    s.append(f"Then {name} {rng.choice(PROBLEMS).format(poss=poss, obj=obj)}.")
    s.append(f"{Subj} felt {rng.choice(['sad', 'scared', 'worried'])}.")
    helper = rng.choice(HELPERS + [friend])
    if helper == friend:
        s.append(f'{friend} saw {name} and said, "Do not worry, I will help you."')
        s.append(f"{f_subj.capitalize()} looked everywhere, and soon {f_subj} found the {obj}.")
    else:
        s.append(f'{name} asked {helper} for help. "Please help me find my {obj}," {subj} said.')
        place = rng.choice(['bench', 'tree', 'bed', 'table', 'bush'])
        s.append(f"Together they looked under the {place}, and there it was!")
    s.append(f'"Thank you!" said {name}. {Subj} was so {rng.choice(["happy", "glad", "proud"])}.')
    if rng.random() < 0.4:
        s.append(f"{name} knew that {rng.choice(LESSONS)}.")
    s.append(rng.choice(ENDINGS).format(name=name, poss=poss, obj=obj, place=place, feeling=rng.choice(FEELINGS)))
    return " ".join(s)


def generate_stories(num_stories: int = 10000, seed: int = 0) -> list[str]:
    """Return `num_stories` stories; the same (num_stories, seed) always gives the same list."""
    rng = random.Random(seed)
    return [_story(rng) for _ in range(num_stories)]
