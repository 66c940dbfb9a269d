"""The verifier on answers written like Video-LLaVA's: one table, one reason per case.

Each case is (answer, labels, expected pass, why). The answers are long and chatty the
way LVLM answers with step-by-step reasoning are; the reasons say what the case pins
down, including the failure modes of the original Video-STaR verifier (fuzzy near
spellings, listed classes, negation, corner boxes read as centre boxes, the closest of
all numbers).
"""

from __future__ import annotations

from typing import Any, NamedTuple

import pytest

from llava_star.datasets.finediving import step_synonyms
from llava_star.records import Label
from llava_star.verify import verify

ACTIONS = (
    "swimming",
    "diving",
    "surfing",
    "running",
    "skateboarding",
    "singing",
    "dancing",
    "playing guitar",
    "playing bass guitar",
    "playing ukulele",
    "brushing teeth",
    "washing dishes",
    "pushing cart",
    "driving car",
    "juggling balls",
    "walking the dog",
    "climbing",
)


class Case(NamedTuple):
    answer: str
    labels: list[Label]
    passed: bool
    why: str
    rationalized: bool = False


def cls(value: str, vocabulary: Any = ACTIONS, **fields: Any) -> Label:
    return Label("class", value, vocabulary=vocabulary, **fields)


def num(value: float, **fields: Any) -> Label:
    return Label("number", value, **fields)


def ts(value: float, **fields: Any) -> Label:
    return Label("timestamp", value, **fields)


def rng(start: float, end: float, **fields: Any) -> Label:
    return Label("time_range", [start, end], **fields)


def box(value: list[float], **fields: Any) -> Label:
    return Label("box", value, **fields)


def yn(value: bool) -> Label:
    return Label("yes_no", value)


POOL = {
    "A": "The man jumps into the pool",
    "B": "The man walks away from the pool",
    "C": "The man sits on a bench",
    "D": "The man swims laps",
}


def choice(value: str, options: dict[str, str] = POOL) -> Label:
    return Label("choice", value, options=options)


RECIPE = ["pick up the knife", "cut the onion", "put the onion in the pan"]


def seq(steps: list[str] = RECIPE) -> Label:
    return Label("sequence", steps)


GUITAR = (
    "The video shows a young man sitting on a couch in a living room. He is holding an acoustic "
    "guitar and strumming its strings with his right hand while his left hand presses chords on "
    "the neck. Based on these observations, the person is playing the guitar."
)

CLASS_CASES = [
    Case(GUITAR, [cls("playing guitar")], True, "an article between the content words does not matter"),
    Case(GUITAR, [cls("playing guitar", "kinetics700")], True, "a packaged vocabulary given by name works the same"),
    Case(
        "In the clip, a woman on a small stage plays the guitar and smiles at the audience.",
        [cls("playing guitar")],
        True,
        "present tense 'plays' is the lemma of 'playing'",
    ),
    Case(
        "Step 1: The man sits down. Step 2: He played guitar for the camera, strumming slowly.",
        [cls("playing guitar")],
        True,
        "past tense 'played' is the lemma of 'playing'",
    ),
    Case(
        "The guitar that the man is playing looks old and worn, with a cracked body.",
        [cls("playing guitar")],
        True,
        "content words may come in any order",
    ),
    Case(
        "Step 1: I notice a bathroom sink and a mirror. Step 2: A child holds a toothbrush and moves it back and forth in his mouth. Therefore, the child is brushing his teeth.",
        [cls("brushing teeth")],
        True,
        "a possessive between the words is allowed",
    ),
    Case(
        "The toddler carefully brushes each tooth while her father watches from the doorway.",
        [cls("brushing teeth")],
        True,
        "'tooth' is the lemma of 'teeth'",
    ),
    Case(
        "A woman stands at the kitchen sink and washes the dishes with a yellow sponge, rinsing each plate.",
        [cls("washing dishes")],
        True,
        "'washes the dishes' asserts 'washing dishes'",
    ),
    Case(
        "She is washing a dish under the running tap before placing it on the rack.",
        [cls("washing dishes")],
        True,
        "singular 'dish' matches 'dishes'",
    ),
    Case(
        "In the video, the dirty dishes are being washed by a young man wearing an apron.",
        [cls("washing dishes")],
        True,
        "the passive voice asserts the class too",
    ),
    Case(
        "The video shows a man pushing a car down a quiet street after it broke down.",
        [cls("pushing cart")],
        False,
        "'car' is not 'cart' (the original's fuzzy ratio > 85 passed it)",
    ),
    Case(
        "A woman pushes a shopping cart through the supermarket aisles, stopping at the shelves.",
        [cls("pushing cart")],
        True,
        "'pushes a shopping cart' asserts 'pushing cart'",
    ),
    Case(
        "The man is driving his cart across the golf course toward the next hole.",
        [cls("driving car")],
        False,
        "'cart' is not 'car'",
    ),
    Case(
        "The man is not playing the guitar; he is only holding it while talking to the camera.",
        [cls("playing guitar")],
        False,
        "'not playing' negates the class",
    ),
    Case(
        "No one in the video is swimming. The pool is empty and the water is perfectly still.",
        [cls("swimming")],
        False,
        "'no one' negates the class",
    ),
    Case(
        "Nobody is swimming here; people are just sitting around the pool and chatting.",
        [cls("swimming")],
        False,
        "'nobody' negates the class",
    ),
    Case(
        "The girl isn't surfing. She is standing on the beach holding her board.",
        [cls("surfing")],
        False,
        "'isn't' negates the class",
    ),
    Case(
        "Although he stands on the high platform for a long time, he never actually dives into the water.",
        [cls("diving")],
        False,
        "'never' negates the class",
    ),
    Case(
        "Instead of swimming, the boy climbs the ladder and jumps off the board, diving headfirst.",
        [cls("swimming")],
        False,
        "'instead of' negates what follows it",
    ),
    Case(
        "Instead of swimming, the boy climbs the ladder and jumps off the board, diving headfirst.",
        [cls("diving")],
        True,
        "the class after 'instead of X,' is asserted",
    ),
    Case(
        "The athlete is diving rather than swimming, as she leaves the platform in a pike position.",
        [cls("swimming")],
        False,
        "'rather than' negates what follows it",
    ),
    Case(
        "The athlete is diving rather than swimming, as she leaves the platform in a pike position.",
        [cls("diving")],
        True,
        "the class before 'rather than' is asserted",
    ),
    Case(
        "Without a doubt, the person in the video is skateboarding down the concrete ramp.",
        [cls("skateboarding")],
        True,
        "'without a doubt' is not a negation of the action",
    ),
    Case(
        "The performer is not only juggling balls but also balancing on a unicycle.",
        [cls("juggling balls")],
        True,
        "'not only' asserts",
    ),
    Case(
        "He is not running, but he is swimming across the lake with steady strokes.",
        [cls("swimming")],
        True,
        "a negation does not reach past 'but'",
    ),
    Case(
        "The person isn't running. The person is swimming in the lake near the shore.",
        [cls("swimming")],
        True,
        "a negation in another sentence does not count",
    ),
    Case(
        "The swimmer is not wearing a cap, and he is swimming freestyle in the outdoor pool.",
        [cls("swimming")],
        True,
        "'and he' opens a new clause",
    ),
    Case(
        "It's definitely not swimming; the person stays completely dry the whole time.",
        [cls("swimming")],
        False,
        "'definitely not' negates",
    ),
    Case(
        "The person is surfing, not swimming, as he rides the wave on a board.",
        [cls("swimming")],
        False,
        "'not swimming' after a comma is negated",
    ),
    Case(
        "The person is surfing, not swimming, as he rides the wave on a board.",
        [cls("surfing")],
        True,
        "the class next to a negated alternative is asserted",
    ),
    Case(
        "Swimming is not what he is doing; he is only standing in shallow water.",
        [cls("swimming")],
        False,
        "a negation right after the class counts",
    ),
    Case(
        "The activity could be swimming, diving, or surfing, since the person is near water.",
        [cls("swimming")],
        False,
        "'could be X, Y, or Z' hedges",
    ),
    Case(
        "It is either swimming or diving; it is hard to say from these few frames.",
        [cls("swimming")],
        False,
        "'either X or Y' hedges",
    ),
    Case("Looking at the splashes, the person is swimming or diving.", [cls("swimming")], False, "'X or Y' hedges"),
    Case(
        "Possible actions: swimming, diving, surfing, running.",
        [cls("swimming")],
        False,
        "a bare list of classes hedges (listing many classes)",
    ),
    Case(
        "The person is swimming. The person is diving. The person is surfing. The person is running. The person is skateboarding.",
        [cls("swimming")],
        False,
        "naming many classes as separate facts is a list too",
    ),
    Case(
        "First the man walks to the edge of the pool. He dives in and starts swimming laps with a steady rhythm.",
        [cls("swimming")],
        True,
        "another class mentioned as a separate fact is not hedging",
    ),
    Case(
        "The man is swimming in the lake. Earlier in the video he was running along the shore.",
        [cls("swimming")],
        True,
        "another class in another sentence is a separate fact",
    ),
    Case(
        "The girl is singing and playing guitar at the same time on the porch.",
        [cls("playing guitar")],
        True,
        "two activities joined by 'and' are facts, not alternatives",
    ),
    Case(
        "Listening carefully and watching her hands, she is singing, dancing and playing guitar.",
        [cls("playing guitar")],
        False,
        "a list of three classes hedges",
    ),
    Case(
        "The climber is rappelling down a steep cliff face, controlling the rope with both hands.",
        [cls("abseiling", "kinetics700", synonyms=("rappelling",))],
        True,
        "a synonym from the label counts",
    ),
    Case(
        "The person is abseiling down the cliff, secured by a harness and rope.",
        [cls("abseiling", "kinetics700")],
        True,
        "the class of a 700-class vocabulary",
    ),
    Case(
        "The person is scaling a rock wall, using small holds for hands and feet.",
        [cls("abseiling", "kinetics700")],
        False,
        "the class is not named",
    ),
    Case(
        "Is the person swimming? Looking closely, he is actually surfing on a board.",
        [cls("swimming")],
        False,
        "a question does not assert the class",
    ),
    Case(
        "The gymnast performs a backflip on the mat and lands cleanly.",
        [cls("backflip (human)", "kinetics700")],
        True,
        "qualifiers in parentheses are optional",
    ),
    Case(
        "The musician is on stage. He is playing a bass guitar with four thick strings.",
        [cls("playing guitar")],
        False,
        "the answer names the more specific class 'playing bass guitar'",
    ),
    Case(
        "The musician is on stage. He is playing a bass guitar with four thick strings.",
        [cls("playing bass guitar")],
        True,
        "the less specific class inside the gold one is no alternative",
    ),
    Case(
        "She is probably dancing or something similar to it.",
        [cls("dancing", None)],
        False,
        "'X or ...' hedges even without a vocabulary",
    ),
    Case(
        "The person appears to be swimming, moving both arms in a crawl stroke.",
        [cls("swimming")],
        True,
        "'appears to be' is an assertion",
    ),
    Case(
        "**Answer:** Swimming.\n\nThe person moves through the water using a front crawl.",
        [cls("swimming")],
        True,
        "markdown and capitals do not matter",
    ),
    Case(
        "The man playing in the yard with his little dog later picks up an old guitar from the porch.",
        [cls("playing guitar")],
        False,
        "content words far apart do not form the class",
    ),
    Case(
        "The kids are playing outside. A guitar lies on the sofa next to the window.",
        [cls("playing guitar")],
        False,
        "content words in different sentences do not form the class",
    ),
    Case(
        "Rather than running, the woman decides to swim across the lake to the other side.",
        [cls("swimming")],
        True,
        "'rather than X,' does not negate the next clause",
    ),
    Case(
        "The video could show playing guitar or playing ukulele, as the instrument is small.",
        [cls("playing guitar", "kinetics700")],
        False,
        "alternatives from the 700-class vocabulary hedge",
    ),
    Case(
        "Although the frames are a bit blurry, the person is clearly swimming in the pool.",
        [cls("swimming")],
        True,
        "a remark on image quality is no refusal",
    ),
    Case(
        "A man paddles down the river. He is kayaking through the rapids with a double-bladed paddle.",
        [cls("canoeing or kayaking", "kinetics400")],
        True,
        "a class name's own 'or' offers alternatives: either word asserts it",
    ),
    Case(
        "The player is catching a baseball with his glove near second base.",
        [cls("catching or throwing baseball", "kinetics400")],
        True,
        "'catching or throwing baseball' is asserted by 'catching a baseball'",
    ),
    Case(
        "The person lifts a glass to their lips and drinks the water.",
        [cls("Drinking from a cup/glass/bottle", "ssv2")],
        True,
        "slash alternatives in a class name: 'glass' suffices",
    ),
    Case(
        "The man is walking the dog along the beach. Nearby, some people are swimming in the sea.",
        [cls("walking the dog")],
        True,
        "a stop word inside the class name is skipped",
    ),
]

NUMBER_CASES = [
    Case(
        "Looking at the dive, the entry was clean with minimal splash. The judges would likely give it a score of 85.5.",
        [num(85.5, name="score")],
        True,
        "the value after the name",
    ),
    Case(
        "The diver rotates three and a half times. I would estimate the final score to be seventy-five points.",
        [num(75, name="score")],
        True,
        "number words are read ('seventy-five')",
    ),
    Case(
        "There are three people in the video: a man, a woman and a child sitting at the table.",
        [num(3, name="count")],
        True,
        "a count in words",
    ),
    Case(
        "Counting row by row, I can see that there are sixteen people standing on the stage.",
        [num(16, name="count")],
        True,
        "'sixteen' is read whole, not as 'six'",
    ),
    Case(
        "Step 1: I count the cars in the lot. Step 2: I add the ones by the gate. In total there are seventeen cars.",
        [num(17, name="count")],
        True,
        "'seventeen' is read whole",
    ),
    Case(
        "The group is large; after counting everyone carefully, I find nineteen dancers on the floor.",
        [num(19, name="count")],
        True,
        "'nineteen' is read whole",
    ),
    Case(
        "I count the birds sitting on the wire carefully, and there are fourteen of them in total.",
        [num(14, name="count")],
        True,
        "'fourteen' is read whole",
    ),
    Case(
        "Judging by the clean entry, I would give this dive a score of eighty points overall.",
        [num(80, name="score")],
        True,
        "'eighty' is read whole",
    ),
    Case(
        "The crowd in the bleachers looks big. I estimate sixty spectators in the stands.",
        [num(60, name="count")],
        True,
        "'sixty' is read whole",
    ),
    Case(
        "Counting row by row, I can see that there are sixteen people standing on the stage.",
        [num(6, name="count")],
        False,
        "'sixteen' is not six",
    ),
    Case(
        "The stadium is packed. I estimate roughly 1,200 spectators are watching the match.",
        [num(1200, name="count")],
        True,
        "thousands separators are read",
    ),
    Case(
        "The execution was very good overall. I would rate it 8 out of 10.",
        [num(8, name="score")],
        True,
        "'out of 10' is a denominator",
    ),
    Case(
        "The execution was very good overall. I would rate it 8 out of 10.",
        [num(10, name="score")],
        False,
        "a denominator is never the stated value",
    ),
    Case(
        "Score: 7/10. The athlete landed well but bent the knees slightly.",
        [num(7, name="score")],
        True,
        "'/10' is a denominator",
    ),
    Case(
        "The score is probably between 50 and 85, depending on how strict the judges are.",
        [num(85, name="score")],
        False,
        "a hedged range states no value",
    ),
    Case(
        "I think the dive would receive a score of 75 or 80 from the panel.",
        [num(80, name="score")],
        False,
        "two values offered as alternatives state none",
    ),
    Case(
        "The score could be 60, 70, 80 or 90 depending on the judges.",
        [num(70, name="score")],
        False,
        "a list of alternatives states none (the original took the closest)",
    ),
    Case(
        "Frame 1 shows 10 swimmers in a pool with 8 lanes, the race is 100 meters long, and the final answer is 4.",
        [num(8, name="count")],
        False,
        "not the closest of all numbers: the answer states 4",
    ),
    Case(
        "Frame 1 shows 10 swimmers in a pool with 8 lanes, the race is 100 meters long, and the final answer is 4.",
        [num(4, name="count")],
        True,
        "the concluding value counts",
    ),
    Case(
        "The difficulty of this dive is 3.2, and the overall score is 76.5 points.",
        [num(3.2, name="difficulty"), num(76.5, name="score")],
        True,
        "each value is read next to its own name",
    ),
    Case(
        "A score of 76.5 seems fair for a dive with a difficulty of 3.2.",
        [num(76.5, name="score"), num(3.2, name="difficulty")],
        True,
        "names before their values, in any order",
    ),
    Case(
        "No one else appears later; there is only one person in the video.",
        [num(1, name="count")],
        True,
        "'no one' is a pronoun, 'only one person' a count",
    ),
    Case(
        "Judging by the clean entry, the score is about 74.",
        [num(75, name="score", tolerance=1)],
        True,
        "within the absolute tolerance",
    ),
    Case(
        "Judging by the clean entry, the score is about 72.",
        [num(75, name="score", tolerance=1)],
        False,
        "outside the absolute tolerance",
    ),
    Case(
        "Given the splash, I estimate the score at 68.",
        [num(75, name="score", rel_tolerance=0.1)],
        True,
        "within the relative tolerance",
    ),
    Case(
        "Given the splash, I estimate the score at 60.",
        [num(75, name="score", rel_tolerance=0.1)],
        False,
        "outside the relative tolerance",
    ),
    Case(
        "The diver does 2 twists.\n3. The entry into the water is clean.",
        [num(2, name="twists")],
        True,
        "an enumeration marker is not a value",
    ),
    Case(
        "In the 3rd second, the 2nd athlete jumps; overall there are 5 athletes on the field.",
        [num(5, name="count")],
        True,
        "ordinals are not values",
    ),
    Case(
        "The difficulty degree of the dive is 3.0 according to the table.",
        [num(3, name="difficulty")],
        True,
        "3.0 equals 3",
    ),
    Case(
        "After 3 seconds, the 2 dogs start running across the yard.",
        [num(2, name="count")],
        True,
        "a duration is not a count",
    ),
    Case(
        "The diver performs well and the judges seem pleased with the result.",
        [num(80, name="score")],
        False,
        "no number stated",
    ),
    Case(
        "The final score is eighty two point five, reflecting the high difficulty.",
        [num(82.5, name="score")],
        True,
        "decimal number words ('eighty two point five')",
    ),
    Case(
        "I looked at every frame, and there are no people in the video at all.",
        [num(0, name="count")],
        True,
        "'there are no people' states a count of zero",
    ),
    Case(
        "The count is 4, not 5, because one person leaves early.",
        [num(4, name="count")],
        True,
        "a negated number does not count",
    ),
    Case(
        "I see 3 cars, 2 bicycles and a truck; so the total number of vehicles is 6.",
        [num(6, name="vehicles")],
        True,
        "the total after the name, not the first number",
    ),
    Case(
        "I count two dogs and one cat, so there are 3 animals in total.",
        [num(3, name="count")],
        True,
        "the name used as a verb ('I count two') is no anchor",
    ),
]

TIME_CASES = [
    Case(
        "Watching the sequence, the person starts jumping at around 4.3 seconds into the video.",
        [ts(4.3)],
        True,
        "seconds with a unit",
    ),
    Case("The ball is kicked at the 0:12 mark, right after the whistle.", [ts(12)], True, "m:ss"),
    Case("The speaker stands up at 1:02:03 according to the timer in the corner.", [ts(3723)], True, "h:mm:ss"),
    Case(
        "The glass falls at 4 seconds and shatters on the floor.",
        [ts(4.3)],
        True,
        "within the default one-second tolerance",
    ),
    Case("The glass falls at 8 seconds and shatters on the floor.", [ts(4.3)], False, "outside the tolerance"),
    Case(
        "The dog jumps about 20% of the way through the video, catching the frisbee.",
        [ts(6, duration=30)],
        True,
        "percent of the duration",
    ),
    Case(
        "The dog jumps about 20% of the way through the video, catching the frisbee.",
        [ts(6)],
        False,
        "a percent without the label's duration is no time",
    ),
    Case(
        "The door opens somewhere between 3 and 6 seconds into the clip.",
        [ts(4.5)],
        False,
        "a range is not a point in time",
    ),
    Case("The door opens at 4 or 9 seconds, it is hard to tell exactly.", [ts(4)], False, "alternative times hedge"),
    Case(
        "The clock shows that the bell rings after 2 minutes and 5 seconds.",
        [ts(125)],
        True,
        "minutes and seconds add up",
    ),
    Case(
        "He first appears at 2 seconds, walks across the room, and jumps at 7.5 seconds.",
        [ts(7.5)],
        True,
        "the last stated time",
    ),
    Case(
        "Step 1: The man enters. Step 2: He sits down at 5 s. Step 3: He reads.",
        [ts(5)],
        True,
        "step numbers are not times",
    ),
    Case(
        "The person is chopping vegetables from 4 to 9 seconds, then puts the knife down.",
        [rng(4, 9)],
        True,
        "'from A to B seconds': the unit applies to both",
    ),
    Case("The chopping happens from 0:04 to 0:09 in the video.", [rng(4, 9)], True, "m:ss ranges"),
    Case(
        "The chopping happens between 4.5 s and 8 s, while the camera stays still.",
        [rng(4, 9)],
        True,
        "IoU 0.7 passes the default 0.5",
    ),
    Case("The chopping happens from 0 to 20 seconds, basically the whole video.", [rng(4, 9)], False, "IoU 0.25 fails"),
    Case(
        "The event spans from 20% to 40% of the video.",
        [rng(4, 8, duration=20)],
        True,
        "percent ranges of the duration",
    ),
    Case("The goal celebration lasts 4-9 seconds.", [rng(4, 9)], True, "'A-B seconds'"),
    Case(
        "It starts at 4 seconds and ends at 9 seconds, when the man leaves.",
        [rng(4, 9)],
        True,
        "'starts at A and ends at B'",
    ),
    Case("The action is either in 0-5 s or in 5-10 s of the clip.", [rng(4, 9)], False, "alternative ranges hedge"),
    Case(
        "The action happens at 6 seconds, when the man raises his hand.",
        [rng(4, 9)],
        False,
        "a point in time is no range",
    ),
    Case("The action lasts from 4.5 to 9 seconds.", [rng(4, 9, min_iou=0.9)], True, "IoU 0.9 meets min_iou 0.9"),
    Case("The action lasts from 5 to 9 seconds.", [rng(4, 9, min_iou=0.9)], False, "IoU 0.8 misses min_iou 0.9"),
    Case(
        "The jump happens from the 4 second mark to the 9 second mark.",
        [rng(4, 9)],
        True,
        "'from the A second mark to the B second mark'",
    ),
    Case(
        "The dancer spins from 1:05 to 1:10, right before the music stops.",
        [rng(65, 70)],
        True,
        "minutes in m:ss ranges",
    ),
]

BOX_CASES = [
    Case(
        "The cup is located at [0.10, 0.20, 0.50, 0.60] in the frame, on the left side of the table.",
        [box([0.1, 0.2, 0.5, 0.6])],
        True,
        "a corner box in brackets",
    ),
    Case(
        "The bounding box of the cup is (0.1, 0.2, 0.5, 0.6).",
        [box([0.1, 0.2, 0.5, 0.6], box_format="xyxy")],
        True,
        "a corner box is read as corners, not as a centre box",
    ),
    Case(
        "Using centre coordinates, the cup is at [0.3, 0.4, 0.4, 0.4].",
        [box([0.1, 0.2, 0.5, 0.6], box_format="cxcywh")],
        True,
        "a centre box is converted when the label asks for centres",
    ),
    Case(
        "The cup is at [0.3, 0.4, 0.4, 0.4].",
        [box([0.1, 0.2, 0.5, 0.6])],
        False,
        "the same numbers read as corners have no area",
    ),
    Case(
        "The cup's box (x, y, width, height) is [0.1, 0.2, 0.4, 0.4].",
        [box([0.1, 0.2, 0.5, 0.6], box_format="xywh")],
        True,
        "xywh is converted",
    ),
    Case(
        "The cup is at [0.45, 0.55, 0.85, 0.95] near the bottom right.",
        [box([0.1, 0.2, 0.5, 0.6])],
        False,
        "IoU below 0.5",
    ),
    Case(
        "The cup is at [120, 45, 300, 260] in the image.",
        [box([0.1, 0.2, 0.5, 0.6])],
        False,
        "pixel coordinates are not normalized",
    ),
    Case(
        "The cup is either at [0.1, 0.2, 0.5, 0.6] or at [0.6, 0.6, 0.9, 0.9].",
        [box([0.1, 0.2, 0.5, 0.6])],
        False,
        "two different boxes hedge",
    ),
    Case(
        "The person is at [0.0, 0.0, 0.3, 0.9] and the cup is at [0.1, 0.2, 0.5, 0.6].",
        [box([0.1, 0.2, 0.5, 0.6], name="cup")],
        True,
        "the box next to the label's name",
    ),
    Case("The cup is on the table to the left of the laptop.", [box([0.1, 0.2, 0.5, 0.6])], False, "no box stated"),
    Case(
        "The cup is at [0.12, 0.22, 0.52, 0.62].",
        [box([0.1, 0.2, 0.5, 0.6], min_iou=0.7)],
        True,
        "IoU 0.81 meets min_iou 0.7",
    ),
    Case(
        "The cup is at [0.2, 0.3, 0.6, 0.7].",
        [box([0.1, 0.2, 0.5, 0.6], min_iou=0.7)],
        False,
        "IoU 0.39 misses min_iou 0.7",
    ),
]

YES_NO_CASES = [
    Case("Yes, the man is holding a red cup in his left hand throughout the video.", [yn(True)], True, "a leading yes"),
    Case("No, there is no dog in the video; only a cat appears near the sofa.", [yn(False)], True, "a leading no"),
    Case("Yes.", [yn(False)], False, "the wrong answer"),
    Case(
        "Looking at the frames, the man lifts the cup twice. Therefore, the answer is yes.",
        [yn(True)],
        True,
        "'the answer is yes' at the end",
    ),
    Case("Yes and no; the man holds a cup at first but puts it down later.", [yn(True)], False, "'yes and no' hedges"),
    Case(
        "Maybe. It is hard to see whether the man holds anything in his hands.",
        [yn(True)],
        False,
        "no committed answer",
    ),
    Case(
        "The statement is false because the man is sitting, not standing.",
        [yn(False)],
        True,
        "'the statement is false' is a no",
    ),
    Case(
        "Yes, the man is standing. Looking again, he sits the whole time, so the answer is no.",
        [yn(False)],
        False,
        "contradictory answers fail",
    ),
    Case("Answer: no. The woman never opens the door during the clip.", [yn(False)], True, "'Answer: no'"),
    Case("The man is indeed holding a cup while he talks to the woman.", [yn(True)], False, "no yes/no stated"),
    Case("**Yes**, the child is wearing a blue helmet while riding.", [yn(True)], True, "markdown around the yes"),
    Case(
        "No one can be seen holding a cup, but the question is about the man. The answer is no.",
        [yn(False)],
        True,
        "'No one' is not the leading no; the stated answer is",
    ),
    Case(
        "Yes, the man is probably holding a cup, it is hard to say for sure.",
        [yn(True)],
        False,
        "a hedge in the committing sentence",
    ),
]

CHOICE_CASES = [
    Case(
        "After watching the video carefully, the man turns around and leaves. The answer is B.",
        [choice("B")],
        True,
        "'the answer is B'",
    ),
    Case("(B) The man walks away from the pool.", [choice("B")], True, "a leading '(B)'"),
    Case("B", [choice("B")], True, "a bare letter"),
    Case("Option B is correct because the man never enters the water.", [choice("B")], True, "'Option B is correct'"),
    Case(
        "A man is standing near a pool. He turns around and leaves. The correct option is B.",
        [choice("B")],
        True,
        "the article 'A' is not option A",
    ),
    Case(
        "A man is standing at the edge of the pool in the video.",
        [choice("A")],
        False,
        "the article 'A' alone is no answer",
    ),
    Case(
        "The man stands at the edge for a moment. Then the man walks away from the pool without looking back.",
        [choice("B")],
        True,
        "the option's text asserts it",
    ),
    Case(
        "The man does not jump in. Instead, he walks away from the pool.",
        [choice("B")],
        True,
        "a negated option text is not chosen",
    ),
    Case("The answer is A or B, since the man is near the pool in both.", [choice("B")], False, "two options offered"),
    Case("I think the answer is C because he looks tired.", [choice("B")], False, "the wrong option"),
    Case(
        "Option A and option C do not match what happens, so it must be B.",
        [choice("B")],
        True,
        "'it must be B' concludes",
    ),
    Case(
        "(A) is incorrect since he stays dry. (B) is correct: he walks off.",
        [choice("B")],
        True,
        "'(B) is correct' concludes",
    ),
    Case("The answer is: **D**", [choice("D")], True, "markdown around the letter"),
    Case(
        "Option A and option B both seem plausible from the frames.",
        [choice("B")],
        False,
        "naming two options without concluding",
    ),
    Case(
        "The answer is A because the man jumps right into the water.",
        [choice("A")],
        True,
        "'A because' is option A, not the article",
    ),
    Case("The answer is B or C.", [choice("B")], False, "'B or C' hedges even when the first is gold"),
    Case(
        "The answer is B, or maybe D, as the frames are blurry.",
        [choice("B")],
        False,
        "'B, or maybe D' after a conclusion hedges",
    ),
    Case("B or C, the man is hard to see.", [choice("B")], False, "a leading 'B or C' hedges"),
    Case("(B) or (C): both could fit the last frames.", [choice("B")], False, "a leading '(B) or (C)' hedges"),
    Case(
        "A. The man jumps into the pool. B. The man walks away from the pool. C. The man sits on a bench. D. The man swims laps.",
        [choice("A")],
        False,
        "an echoed option list is no answer",
    ),
    Case(
        "A) The man jumps into the pool\nB) The man walks away from the pool\nC) The man sits on a bench",
        [choice("A")],
        False,
        "an echoed option list on lines is no answer",
    ),
    Case("The answer is B.", [choice("B")], True, "a plain 'the answer is B.'"),
    Case("(B) the man walks away from the pool.", [choice("B")], True, "a leading '(B)' with its own option text"),
    Case("B, because the man never enters the water.", [choice("B")], True, "a leading 'B, because'"),
    Case(
        "B. The man walks away from the pool; option A is wrong since he stays dry.",
        [choice("B")],
        True,
        "a leading 'B.' with its text, another option only named",
    ),
    Case(
        "A. The man jumps into the pool. B. The man walks away from the pool. The answer is B.",
        [choice("B")],
        True,
        "an echoed list followed by a conclusion",
    ),
    Case("The answer is B and the man walks away.", [choice("B")], True, "'B and the man' is not a second option"),
    Case(
        "The answer is B, A man walks away from the pool.",
        [choice("B")],
        True,
        "'B, A man' is the article, not a second option",
    ),
]

SEQUENCE_CASES = [
    Case(
        "First, the chef picks up a knife from the counter. Then she cuts the onion into small pieces. Finally, she puts the onion in the pan.",
        [seq()],
        True,
        "all steps in order, inflected",
    ),
    Case(
        "The chef cuts the onion first. Then she picks up the knife and puts the onion in the pan.",
        [seq()],
        False,
        "steps out of order",
    ),
    Case("First, the chef picks up a knife. Then she puts the onion in the pan.", [seq()], False, "a missing step"),
    Case(
        "The chef picked up the knife. She did not cut the onion. She put the onion in the pan.",
        [seq()],
        False,
        "a negated step does not count",
    ),
    Case(
        "Step 1: picking up the knife. Step 2: cutting the onion. Step 3: putting the onion in the pan.",
        [seq()],
        True,
        "gerunds in numbered steps",
    ),
    Case(
        "He picks up the knife, cuts the onion, and puts the onion in the pan, all in one smooth motion.",
        [seq()],
        True,
        "steps in one sentence",
    ),
    Case("She opens the fridge, takes out an onion and washes it under the tap.", [seq()], False, "no step named"),
]

DIVE = ["Forward", "2.5 Soms.Pike", "Entry"]


def dive(steps: list[str] = DIVE) -> Label:
    """A sub-action sequence as the FineDiving adapter emits it, synonyms included."""
    return Label("sequence", steps, name="sub-actions", synonyms=step_synonyms(tuple(steps)))


DIVE_CASES = [
    Case(
        "First Forward, then 2.5 Soms.Pike, then the Entry.",
        [Label("sequence", DIVE)],
        True,
        "the sub-action names themselves, 'Soms.Pike' split at the dot",
    ),
    Case(
        "Step 1: the takeoff is Arm.Back. Step 2: 2 Soms.Tuck. Step 3: Entry.",
        [Label("sequence", ["Arm.Back", "2 Soms.Tuck", "Entry"])],
        True,
        "'Arm.Back' split at the dot like the label",
    ),
    Case(
        "The diver takes off forward, performs two and a half somersaults in the pike position, and enters the water.",
        [dive()],
        True,
        "number words for the count, 'Soms' spelled out, 'enters the water' for Entry",
    ),
    Case(
        "Let me go through the dive. The athlete leaves the board with a forward takeoff. Then she completes 2.5 somersaults in a piked position. Finally, she makes a clean entry into the water.",
        [dive()],
        True,
        "digits for the count, 'piked' for Pike, over three sentences",
    ),
    Case(
        "The diver takes off forward, performs two-and-a-half somersaults piked, then enters the pool with little splash.",
        [dive()],
        True,
        "a hyphenated count",
    ),
    Case(
        "The diver takes off forward, performs three and a half somersaults in the pike position, and enters the water.",
        [dive()],
        False,
        "a wrong count in words (3.5 for 2.5)",
    ),
    Case(
        "The diver takes off forward, performs 3.5 somersaults in the pike position, and enters the water.",
        [dive()],
        False,
        "a wrong count in digits",
    ),
    Case(
        "The diver takes off forward, performs two and a half somersaults in the tuck position, and enters the water.",
        [dive()],
        False,
        "a wrong position (tuck for pike)",
    ),
    Case(
        "The diver takes off forward, performs two somersaults in the pike position, and enters the water.",
        [dive()],
        False,
        "two somersaults is not two and a half",
    ),
    Case(
        "The diver enters the water after two and a half somersaults in the pike position from a forward takeoff.",
        [dive()],
        False,
        "sub-actions out of order",
    ),
    Case(
        "The diver takes off forward and enters the water; he does not perform two and a half somersaults in the pike position.",
        [dive()],
        False,
        "a negated somersault step",
    ),
    Case(
        "First, a reverse takeoff. Then three and a half somersaults in the tuck position. Finally, the entry.",
        [dive(["Reverse", "3.5 Soms.Tuck", "Entry"])],
        True,
        "the real label of the Video-STaR paper, Fig. 5",
    ),
    Case(
        "He starts from an armstand facing back, does two somersaults tucked with one and a half twists, then enters the water.",
        [dive(["Arm.Back", "2 Soms.Tuck", "1.5 Twists", "Entry"])],
        True,
        "an armstand takeoff and twists counted in words",
    ),
    Case(
        "He starts from an armstand facing back, does two somersaults tucked with two twists, then enters the water.",
        [dive(["Arm.Back", "2 Soms.Tuck", "1.5 Twists", "Entry"])],
        False,
        "a wrong twist count",
    ),
    Case(
        "He starts from an armstand facing back, does two and a half somersaults tucked with 1.5 twists, then enters the water.",
        [dive(["Arm.Back", "2 Soms.Tuck", "1.5 Twists", "Entry"])],
        False,
        "two and a half somersaults is not two",
    ),
    Case(
        "The diver takes off inward, performs one somersault in the pike position with a half twist, and enters the water.",
        [dive(["Inward", "1 Som.Pike", "0.5 Twist", "Entry"])],
        True,
        "'one somersault' and 'a half twist'",
    ),
    Case(
        "The diver takes off inward, performs one and a half somersaults in the pike position with a half twist, and enters the water.",
        [dive(["Inward", "1 Som.Pike", "0.5 Twist", "Entry"])],
        False,
        "'one and a half' is not one",
    ),
]

GUARD_CASES = [
    Case("", [cls("swimming")], False, "an empty answer"),
    Case("   \n\t  ", [cls("swimming")], False, "only whitespace"),
    Case("...", [cls("swimming")], False, "no words"),
    Case(
        "I'm sorry, but I cannot determine what the person is doing from the video.",
        [cls("swimming")],
        False,
        "a refusal",
    ),
    Case(
        "As an AI, I cannot watch videos, but swimming is a popular activity.",
        [cls("swimming")],
        False,
        "a refusal that still names the class",
    ),
    Case(
        "It is impossible to tell what the person is doing because the video is too dark.",
        [cls("swimming")],
        False,
        "'impossible to tell' refuses",
    ),
    Case(
        "There is not enough information in the video to determine the score of the dive.",
        [num(80, name="score")],
        False,
        "'not enough information' refuses",
    ),
    Case(
        "I am unable to determine whether the man is holding a cup. Yes.",
        [yn(True)],
        False,
        "'unable to determine' refuses",
    ),
    Case(
        "I'm sorry, the clip is too short. Yes, he holds a cup.", [yn(True)], False, "an apology ('I'm sorry') refuses"
    ),
    Case(
        "I’m not able to tell what the man holds.",
        [yn(True)],
        False,
        "'I'm not able to tell' refuses (curly apostrophe)",
    ),
    Case(
        "The man is swimming. The man is swimming. The man is swimming. The man is swimming.",
        [cls("swimming")],
        False,
        "the same sentence repeated",
    ),
    Case(
        "The person is swimming and then and then and then and then and then and then",
        [cls("swimming")],
        False,
        "a phrase looping back to back",
    ),
    Case("The person is swimming very " + "very " * 12 + "fast.", [cls("swimming")], False, "a word looping"),
    Case("Swimming " * 30, [cls("swimming")], False, "the class name repeated many times"),
    Case(
        "Based on the given answer, the person is swimming in the pool.",
        [cls("swimming")],
        False,
        "hint leakage: 'the given answer'",
        True,
    ),
    Case(
        "Based on the given answer, the person is swimming in the pool.",
        [cls("swimming")],
        True,
        "'given answer' is fine when the answer was not rationalized",
    ),
    Case(
        "As stated, the person is swimming; his arms move in a crawl stroke.",
        [cls("swimming")],
        False,
        "hint leakage: 'as stated'",
        True,
    ),
    Case(
        "The provided label says swimming, and indeed the person moves through the water.",
        [cls("swimming")],
        False,
        "hint leakage: 'the provided label'",
        True,
    ),
    Case(
        "According to the hint, the man is diving off the board.",
        [cls("diving")],
        False,
        "hint leakage: 'according to the hint'",
        True,
    ),
    Case(
        "The answer says B, and the man does walk away, so the answer is B.",
        [choice("B")],
        False,
        "hint leakage: 'the answer says'",
        True,
    ),
    Case(
        "Step 1: The man stands on the board. Step 2: He jumps and rotates. So the correct answer is diving.",
        [cls("diving")],
        True,
        "'the correct answer' is no hint leakage",
        True,
    ),
    Case(
        "The person is swimming in a pool. The water is blue, and the person moves quickly from one end to the other.",
        [cls("swimming")],
        True,
        "normal repetition of words is not degenerate",
    ),
]

MULTI_LABEL_CASES = [
    Case(
        "The diver performs a forward dive with a difficulty of 3.2. The entry is clean, so I would give it a score of 80.",
        [cls("diving"), num(3.2, name="difficulty"), num(80, name="score")],
        True,
        "every label passes",
    ),
    Case(
        "The diver performs a forward dive with a difficulty of 3.2. The entry is clean, so I would give it a score of 70.",
        [cls("diving"), num(3.2, name="difficulty"), num(80, name="score")],
        False,
        "one failing label fails the answer",
    ),
    Case(
        "Yes, the man jumps into the pool at about 4 seconds.",
        [yn(True), ts(4.2)],
        True,
        "a yes/no and a timestamp together",
    ),
    Case(
        "The woman is dancing from 2 to 8 seconds in the middle of the room.",
        [cls("dancing"), rng(2, 8)],
        True,
        "a class and a range together",
    ),
    Case(
        "The woman is not dancing from 2 to 8 seconds; she is stretching.",
        [cls("dancing"), rng(2, 8)],
        False,
        "the class is negated though the range matches",
    ),
]

ALL_CASES = (
    CLASS_CASES
    + NUMBER_CASES
    + TIME_CASES
    + BOX_CASES
    + YES_NO_CASES
    + CHOICE_CASES
    + SEQUENCE_CASES
    + DIVE_CASES
    + GUARD_CASES
    + MULTI_LABEL_CASES
)


def _case_id(case: Case) -> str:
    return case.why


def test_there_are_enough_cases_for_every_type_and_guard() -> None:
    assert len(ALL_CASES) >= 150
    types = {label.type for case in ALL_CASES for label in case.labels}
    assert types >= {"class", "number", "timestamp", "time_range", "box", "yes_no", "choice", "sequence"}
    assert len({case.why for case in ALL_CASES}) == len(ALL_CASES), "each case has its own reason"


@pytest.mark.parametrize("case", ALL_CASES, ids=_case_id)
def test_verdict(case: Case) -> None:
    verdict = verify(case.answer, case.labels, rationalized=case.rationalized)
    assert verdict.passed is case.passed, f"{case.why}: {verdict.to_dict()}"
    if not case.passed:
        assert verdict.reason, "a failing verdict says why"
