# Solution to the exercise of 04-meetings.ipynb. It runs inside that notebook, with the
# notebook's `lab`, `meeting`, `cfo_seat`, `Meeting`, `wait_until` and `show`:
#     %run -i solutions/04-meetings.py
#     lesson04.check(meeting, minutes)   # the exercise's check, in the notebook
# ruff: noqa: F821 (the names come from the notebook)

minutes = []


def take_minutes(entry):
    if entry.kind == "decision":
        minutes.append(entry)


secretary = Meeting.join(lab.connect("secretary"), meeting.id)
minute_feed = secretary.follow(take_minutes, replay=True)

meeting.decide("ceo", "Press release on 14 May", owner="cmo")
last = cfo_seat.decide("cfo", "Keep 5k in reserve for launch week", amount=5_000)
wait_until(lambda: any(entry.id == last.id for entry in minutes))
minute_feed.stop()

print(f"minutes of '{meeting.id}': {len(minutes)} decisions")
for number, entry in enumerate(minutes, 1):
    print(f"  {number}. {entry.text} ({entry.sender})")
