"""Question templates: how a label of a given task is asked about.

Video-STaR turns labels into questions by drawing one of many paraphrases per task, so
the fine-tuned model learns the task rather than one sentence. Each template may hold
``{slot}`` fields (the thing to count, the event to localize, ...) but never the answer:
the gold label is what the model must produce. ``make_question`` also refuses to return
a question that contains any string passed as ``avoid`` (e.g. the class name), trying
the other paraphrases first.

Randomness comes from the ``random.Random`` passed in, so a seeded ``prepare`` run
writes the same questions every time.
"""

from __future__ import annotations

import functools
import random
import string
from collections.abc import Iterable, Mapping, Sequence
from types import MappingProxyType

_ACTION_RECOGNITION = (
    "What action is being performed in this video?",
    "What is the person in the video doing?",
    "Which activity can be seen in this video?",
    "Describe the main action taking place in the video.",
    "What activity is shown in this clip?",
    "Can you identify the action performed in the video?",
    "What is happening in this video?",
    "Name the activity that the video shows.",
    "What are the people in this video doing?",
    "Which human action does this clip depict?",
    "What kind of activity is captured in this video?",
    "Identify the action carried out in this clip.",
    "What is the subject of the video doing?",
    "What action does this video show?",
    "Watch the video and tell me what action is being done.",
    "What is the main activity in this video clip?",
    "Could you tell what someone is doing in this video?",
    "Which action best describes what happens in the video?",
    "What physical activity is taking place here?",
    "Looking at this clip, what is being done?",
    "What does the video show someone doing?",
    "Classify the action that appears in this video.",
)

_OBJECT_RECOGNITION = (
    "What object can be seen in this video?",
    "Which object appears in the video?",
    "What is the main object shown in this clip?",
    "Name the object visible in the video.",
    "What item does the video show?",
    "Can you identify the object in this video?",
    "What thing is being shown in the clip?",
    "Which item can you see in this video?",
    "What object is present in the video?",
    "Identify the object that appears in this clip.",
    "What is the object in this video?",
    "Which object does the clip feature?",
    "Tell me what object is visible in the video.",
    "What kind of object is shown here?",
    "Looking at the video, what object do you see?",
    "What is the item that appears in this clip?",
    "Which thing is visible in this video?",
    "What object is the video about?",
    "Name the item that can be seen in this clip.",
    "What object stands out in this video?",
)

_COLOUR = (
    "What colour is the object in the video?",
    "What is the colour of the shape in this video?",
    "Which colour does the moving object have?",
    "Name the colour of the object shown in the clip.",
    "What colour is the shape that appears in the video?",
    "Can you tell the colour of the object in this clip?",
    "Which colour is the shape in this video?",
    "What is the object's colour in the video?",
    "Identify the colour of the shape in this clip.",
    "What colour can you see on the object in the video?",
    "Tell me the colour of the object in this video.",
    "Of what colour is the shape shown in the clip?",
    "What colour is the thing moving in the video?",
    "Describe the colour of the object in this video.",
    "Which colour does the shape in the clip have?",
    "Looking at the video, what colour is the object?",
    "What is the colour of the item shown in this clip?",
    "What colour is the figure in the video?",
    "Which colour best describes the object in this video?",
    "Watch the clip: what colour is the shape?",
)

_SHAPE = (
    "What shape is the object in the video?",
    "Which shape appears in this video?",
    "What is the shape of the object shown in the clip?",
    "Name the shape that can be seen in the video.",
    "What kind of shape is moving in this clip?",
    "Can you identify the shape in this video?",
    "Which geometric shape does the video show?",
    "What shape does the object in this clip have?",
    "Identify the shape visible in the video.",
    "What is the form of the object in this video?",
    "Tell me which shape appears in the clip.",
    "What geometric figure is shown in this video?",
    "Which shape is the object in the clip?",
    "Describe the shape of the object in this video.",
    "Looking at the video, what shape do you see?",
    "What shape is the figure in this clip?",
    "What is the outline of the object in the video?",
    "Which form does the object in this video take?",
    "What shape is the thing that appears in the clip?",
    "Watch the video: what shape is the object?",
)

_MOTION_DIRECTION = (
    "In which direction does the object move in the video?",
    "Which way is the shape moving in this clip?",
    "What direction does the object travel in the video?",
    "Describe the direction of motion of the object in this video.",
    "Where is the object in the clip moving to?",
    "Which direction is the shape heading in this video?",
    "How does the object move across the frame?",
    "In what direction does the shape travel in this clip?",
    "Tell me the direction in which the object moves.",
    "Which way does the object go in the video?",
    "What is the direction of the object's movement in this clip?",
    "Along which direction does the object move in this video?",
    "Describe how the shape moves through the video.",
    "Toward which side of the frame does the object move?",
    "What direction is the motion of the shape in the clip?",
    "Which way is the object heading over the course of the video?",
    "Watch the clip: in which direction does the object move?",
    "How is the object moving in this video?",
    "What is the movement direction of the shape in this clip?",
    "Looking at the video, which direction does the object move in?",
)

_COUNTING = (
    "How many {thing} are there in the video?",
    "How many {thing} can you see in this video?",
    "Count the {thing} in this clip.",
    "What is the number of {thing} in the video?",
    "How many {thing} appear in this clip?",
    "Can you count how many {thing} are shown in the video?",
    "What is the total number of {thing} in this video?",
    "How many {thing} are visible in the clip?",
    "Tell me how many {thing} the video shows.",
    "Count the number of {thing} that appear in this video.",
    "How many {thing} does this clip contain?",
    "What count of {thing} can be seen in the video?",
    "How many {thing} are present in this video?",
    "Please count the {thing} in this clip.",
    "How many {thing} show up in the video?",
    "Looking at the video, how many {thing} are there?",
    "Give the number of {thing} visible in this clip.",
    "How many {thing} can be counted in this video?",
    "In total, how many {thing} appear in the clip?",
    "Watch the video and count the {thing}.",
)

_SCORE = (
    "What score would this performance receive?",
    "How would you score the performance in this video?",
    "What is the final score of the action in this video?",
    "Can you rate the quality of the performance shown in this clip?",
    "Assess the quality of the action and give its score.",
    "What score did the athlete earn for this performance?",
    "How well was the action performed? Give a score.",
    "Rate the execution of the action in this video.",
    "What final score does this performance deserve?",
    "Evaluate the performance in the clip and give it a score.",
    "Judge the action in this video: what is its score?",
    "What would the judges score this performance?",
    "How many points is this performance worth?",
    "Give the overall score for the action shown in the video.",
    "Can you analyze this video and provide a score for the performance?",
    "Considering its execution and difficulty, what score does this action get?",
    "What is the quality score of the performance in this clip?",
    "How would a judge score the action seen in this video?",
    "Score the performance shown in this clip.",
    "Watch the performance and estimate its final score.",
)

_DIFFICULTY = (
    "What is the difficulty of the action performed in this video?",
    "How difficult is the action shown in the clip?",
    "What difficulty degree does this performance have?",
    "Rate the difficulty of the action in this video.",
    "What is the degree of difficulty of this performance?",
    "How hard is the action performed in the clip?",
    "Can you estimate the difficulty of the action in this video?",
    "What difficulty would be assigned to this action?",
    "Give the difficulty degree of the action shown in the video.",
    "How complex is the action performed here? Give its difficulty.",
    "What is the difficulty level of the performance in this clip?",
    "Assess the difficulty of the action in this video.",
    "Which degree of difficulty does this action carry?",
    "What difficulty rating does the action in the video have?",
    "How difficult would judges rate this action?",
    "Estimate the degree of difficulty of the performance shown.",
    "What is the official difficulty of the action in this clip?",
    "Looking at the video, how difficult is the action?",
    "Tell me the difficulty of the action performed in this video.",
    "Watch the clip and give the difficulty of the action.",
)

_TEMPORAL_LOCALIZATION = (
    "When does {event} happen in the video?",
    "At what time does {event} occur in this video?",
    "During which part of the video does {event} take place?",
    "Give the start and end time of {event} in the video.",
    "In which time span does {event} happen in this clip?",
    "From when to when does {event} occur in the video?",
    "Find the segment of the video where {event} happens.",
    "Localize {event} in time within the video.",
    "Between which times does {event} take place in this clip?",
    "What is the time range in which {event} occurs?",
    "When in this video can {event} be seen?",
    "Identify when {event} starts and ends in the video.",
    "Which portion of the clip shows {event}?",
    "Tell me when {event} happens in this video.",
    "Over what interval does {event} occur in the clip?",
    "At which moments does {event} begin and end in the video?",
    "Locate the part of the video in which {event} occurs.",
    "In the video, when does {event} take place?",
    "What are the start and end times of {event} in this clip?",
    "Watch the video and say when {event} happens.",
)

_TIMESTAMP = (
    "At what moment does {event} happen in the video?",
    "When exactly does {event} occur in this video?",
    "At which time does {event} take place in the clip?",
    "Give the time at which {event} happens in the video.",
    "What is the timestamp of {event} in this video?",
    "At what point in the clip does {event} occur?",
    "When in the video does {event} happen?",
    "At which second does {event} occur in this video?",
    "Tell me the moment when {event} takes place.",
    "Find the time in the video when {event} happens.",
    "At what time can {event} be seen in the clip?",
    "Identify the moment of {event} in this video.",
    "What time does {event} occur at in the video?",
    "Pinpoint when {event} happens in this clip.",
    "At which instant does {event} take place in the video?",
    "When does {event} occur? Give a time.",
    "Locate the moment of {event} in the video.",
    "At what time in this clip does {event} happen?",
    "Say at which moment {event} occurs in the video.",
    "Watch the video and give the time of {event}.",
)

_GROUNDING = (
    "Where is the {thing} in the video?",
    "Give the bounding box of the {thing} in this video.",
    "Locate the {thing} in the frame.",
    "Where in the frame can the {thing} be found?",
    "Provide the coordinates of the {thing} in the video.",
    "Draw a bounding box around the {thing} in this clip.",
    "In which region of the video is the {thing}?",
    "Where does the {thing} appear in the frame?",
    "What is the location of the {thing} in this video?",
    "Find the {thing} and give its bounding box.",
    "Point out where the {thing} is in the clip.",
    "Which part of the frame contains the {thing}?",
    "Give the position of the {thing} as a bounding box.",
    "Where is the {thing} located in this clip?",
    "Identify the region where the {thing} is visible.",
    "Where can you see the {thing} in the video?",
    "Mark the location of the {thing} in the frame.",
    "Tell me where the {thing} is in the video.",
    "What box encloses the {thing} in this clip?",
    "Watch the video and locate the {thing}.",
)

_STEP_SEQUENCE = (
    "What sequence of steps is performed in this video?",
    "List the steps of the action shown in the video, in order.",
    "Which sub-actions make up the performance in this clip?",
    "Describe the steps of the action in the order they happen.",
    "What are the stages of the action in this video?",
    "Break down the action in the clip into its steps.",
    "In what order are the steps performed in this video?",
    "What steps does the performer go through in this clip?",
    "Name the sub-actions of the performance, in order.",
    "What is the sequence of movements in this video?",
    "List the phases of the action shown in the clip.",
    "Which steps, in order, make up the action in the video?",
    "Describe the sequence of actions performed in this clip.",
    "What are the consecutive steps seen in this video?",
    "Give the ordered list of sub-actions in the video.",
    "How does the action unfold, step by step?",
    "What series of steps is carried out in this clip?",
    "Identify each step of the action in the order performed.",
    "What is the order of the steps in this performance?",
    "Watch the video and list the steps in order.",
)

_YES_NO = (
    "Is it true that {statement}? Answer yes or no.",
    "Does the video show that {statement}?",
    "Based on the video, is it true that {statement}?",
    "Watch the video: is it the case that {statement}?",
    "Can you confirm from the clip whether {statement}?",
    "True or false, according to the video: {statement}?",
    "Looking at the video, would you say that {statement}? Answer yes or no.",
    "Judging from this clip, is it correct that {statement}?",
    "According to the video, does it hold that {statement}?",
    "Is the following true for this video: {statement}?",
    "From what you see in the video, is it so that {statement}?",
    "Yes or no: in this clip, {statement}?",
    "Does this clip support the claim that {statement}?",
    "Tell me yes or no: {statement}?",
    "Would you agree, based on the video, that {statement}?",
    "Is it accurate to say that {statement}, given the video?",
    "Check the video: {statement}. Is that correct?",
    "Given this clip, is it true that {statement}?",
    "Based on what happens in the video, {statement}. Yes or no?",
    "Consider the clip. Is it the case that {statement}?",
)

_MULTIPLE_CHOICE = (
    "{question}\n{options}",
    "{question}\nChoose one of the following options:\n{options}",
    "{question}\nOptions:\n{options}",
    "Answer the question about the video by picking an option.\n{question}\n{options}",
    "{question}\nSelect the correct answer:\n{options}",
    "Watch the video and answer: {question}\n{options}",
    "{question}\nWhich of these options is correct?\n{options}",
    "Based on the video, {question}\n{options}",
    "{question}\nPick the best option:\n{options}",
    "Question about the video: {question}\nPossible answers:\n{options}",
    "{question}\nThe choices are:\n{options}",
    "Look at the video. {question}\n{options}",
    "{question}\nAnswer with the letter of the correct option.\n{options}",
    "Considering what happens in the clip: {question}\n{options}",
    "{question}\nOne of these options is right:\n{options}",
    "From the video: {question}\nSelect one:\n{options}",
    "{question}\nChoose the option that fits the video best:\n{options}",
    "Here is a question about the clip. {question}\n{options}",
    "{question}\nCandidate answers:\n{options}",
    "After watching the video, answer: {question}\n{options}",
)

_OPEN_QUESTION = (
    "{question}",
    "Answer the question about the video: {question}",
    "Based on the video, {question}",
    "Watch the clip and answer: {question}",
    "Looking at the video, {question}",
    "Here is a question about the clip. {question}",
    "Question about the video: {question}",
    "After watching the video, answer this: {question}",
    "Considering what happens in the video: {question}",
    "From what you see in the clip, {question}",
)

_CAPTION = (
    "Describe what happens in this video.",
    "Give a short description of the video.",
    "What is going on in this clip?",
    "Summarize the content of the video.",
    "Write a caption for this video.",
    "Describe the events shown in the clip.",
    "Can you describe this video in a sentence?",
    "Provide a brief summary of what the video shows.",
    "Tell me what happens in this video.",
    "Explain what is shown in the clip.",
    "Describe the scene in this video.",
    "What does this video depict?",
    "Write a one-sentence description of the clip.",
    "Narrate what takes place in the video.",
    "Give an account of the events in this clip.",
    "How would you describe this video?",
    "Summarize the events of the clip briefly.",
    "What story does this video tell?",
    "Describe the video's content in your own words.",
    "Watch the video and describe what you see.",
)

QUESTION_TEMPLATES: Mapping[str, tuple[str, ...]] = MappingProxyType(
    {
        "action_recognition": _ACTION_RECOGNITION,
        "object_recognition": _OBJECT_RECOGNITION,
        "colour": _COLOUR,
        "shape": _SHAPE,
        "motion_direction": _MOTION_DIRECTION,
        "counting": _COUNTING,
        "score": _SCORE,
        "difficulty": _DIFFICULTY,
        "temporal_localization": _TEMPORAL_LOCALIZATION,
        "timestamp": _TIMESTAMP,
        "grounding": _GROUNDING,
        "step_sequence": _STEP_SEQUENCE,
        "yes_no": _YES_NO,
        "multiple_choice": _MULTIPLE_CHOICE,
        "open_question": _OPEN_QUESTION,
        "caption": _CAPTION,
    }
)


@functools.lru_cache(maxsize=4096)
def template_slots(template: str) -> frozenset[str]:
    """The ``{slot}`` names a template needs.

    >>> sorted(template_slots("How many {thing} are in {place}?"))
    ['place', 'thing']
    """
    return frozenset(name for _, name, _, _ in string.Formatter().parse(template) if name)


def task_slots(task: str) -> frozenset[str]:
    """The slots every template of ``task`` needs (the same set for all its paraphrases)."""
    return template_slots(_templates(task)[0])


def format_options(options: Mapping[str, str]) -> str:
    """Lay out multiple-choice options one a line, in key order.

    >>> format_options({"B": "The door.", "A": "The towel."})
    '(A) The towel.\\n(B) The door.'
    """
    return "\n".join(f"({key}) {text}" for key, text in sorted(options.items()))


def event_phrase(text: str, *, quote: bool = False) -> str:
    """A class name or caption as it reads inside "When does ... happen?".

    Class names start lower-case ("Someone is" dropped, as in Charades); whole sentences
    read better quoted.

    >>> event_phrase("Someone is cooking something"), event_phrase("A man sings.", quote=True)
    ('cooking something', '"a man sings"')
    """
    phrase = text.strip().rstrip(".").strip().removeprefix("Someone is ")
    if phrase[:1].isupper() and not phrase[1:2].isupper():
        phrase = phrase[:1].lower() + phrase[1:]
    return f'"{phrase}"' if quote else phrase


def _templates(task: str) -> tuple[str, ...]:
    try:
        return QUESTION_TEMPLATES[task]
    except KeyError:
        raise ValueError(f"unknown question task {task!r}; known tasks: {', '.join(QUESTION_TEMPLATES)}") from None


def _contains_phrase(text: str, phrase: str) -> bool:
    """Whole-word, case-insensitive containment ("run" is not in "running late").

    >>> _contains_phrase("What is the Runner doing?", "runner"), _contains_phrase("running late", "run")
    (True, False)
    """
    text, phrase = text.casefold(), phrase.strip().casefold()
    if not phrase:
        return False
    start = text.find(phrase)
    while start >= 0:
        end = start + len(phrase)
        before_ok = start == 0 or not (text[start - 1].isalnum() or text[start - 1] == "_")
        after_ok = end == len(text) or not (text[end].isalnum() or text[end] == "_")
        if before_ok and after_ok:
            return True
        start = text.find(phrase, start + 1)
    return False


def fill_template(
    templates: Sequence[str], rng: random.Random, *, avoid: Iterable[str] = (), label: str = "question", **slots: str
) -> str:
    """Draw one of ``templates`` with ``rng``, fill its slots, and keep ``avoid`` out.

    The engine behind :func:`make_question`, also used for the templates a generic
    dataset mapping brings along. ``label`` names the template set in error messages.

    >>> fill_template(["Where is the {thing}?"], random.Random(0), thing="cup")
    'Where is the cup?'
    """
    if not templates:
        raise ValueError(f"{label}: no question templates")
    needed = frozenset().union(*(template_slots(template) for template in templates))
    missing, unknown = needed - set(slots), set(slots) - needed
    if missing or unknown:
        raise ValueError(
            f"{label} needs slot(s) {sorted(needed)}; missing {sorted(missing)}, unexpected {sorted(unknown)}"
        )
    empty = sorted(name for name, value in slots.items() if not isinstance(value, str) or not value.strip())
    if empty:
        raise ValueError(f"{label}: slot(s) {empty} must be non-empty strings")
    avoid = [phrase for phrase in avoid if phrase and phrase.strip()]
    order = list(range(len(templates)))
    rng.shuffle(order)
    for index in order:
        question = templates[index].format(**{name: value.strip() for name, value in slots.items()})
        if not any(_contains_phrase(question, phrase) for phrase in avoid):
            return question
    raise ValueError(f"every {label} paraphrase would contain the answer ({avoid!r}); check the slots")


def make_question(task: str, rng: random.Random, *, avoid: Iterable[str] = (), **slots: str) -> str:
    """Draw a paraphrase for ``task`` with ``rng`` and fill its slots.

    ``avoid`` lists strings the question must not contain (the answer and its synonyms);
    paraphrases that would contain one are skipped, and if all would, ValueError.

    >>> make_question("counting", random.Random(0), thing="red squares").count("red squares")
    1
    """
    return fill_template(_templates(task), rng, avoid=avoid, label=f"question task {task!r}", **slots)
