# Solution to the exercise of 02-queue-groups-and-request-reply.ipynb. It runs inside that
# notebook, with the notebook's `lab`:  %run -i solutions/02-queue-groups-and-request-reply.py
#     lesson02.check(lab, translators)   # the exercise's check, in the notebook
# ruff: noqa: F821 (the names come from the notebook)
from collections import Counter

TRANSLATE = "tasks.translate.assign"


def make_translator(name):
    def translate(msg):
        return {"translation": msg.json()["text"][::-1], "worker": name}
    return translate


translators = [lab.connect(name).serve(TRANSLATE, make_translator(name), queue="translators")
               for name in ("translator-a", "translator-b")]

words = ["agent", "subject", "stream", "queue", "reply", "server", "ack", "wildcard"]
answers = lab.gather([(TRANSLATE, {"text": word}) for word in words], timeout=2)

for word, answer in zip(words, answers, strict=True):
    print(f"{word:10} -> {answer.json()['translation']}")
print(Counter(answer.json()["worker"] for answer in answers))
assert [a.json()["translation"] for a in answers] == [w[::-1] for w in words]
