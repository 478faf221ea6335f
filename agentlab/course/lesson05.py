"""Lesson 05, Async tool execution: a slow `weather` tool, run by a pool, called without waiting.

    lesson05.check(weather_pool, ["Paris", "Oslo", "Lagos", "Lima"])

The check calls the learner's running pool for real, through a ToolClient of its own (a
conversation of its own, so that nothing it asks mixes with the learner's): every city the
learner says the tool knows, and `"Atlantis"`, all at once. Each known city must get a
forecast, Atlantis an error result of type ValueError, and the batch must have run side by
side: in less wall time than its calls' own durations added up (each result says how long
its call ran, and on which worker).
"""

from __future__ import annotations

import statistics
import time
import uuid
from typing import Any

from ..org import ToolClient, ToolResult, ToolWorkerPool
from .check import CheckResult, Exercise, listing, not_given

EXERCISE = Exercise("05", "A weather tool, called without waiting")
UNKNOWN = "Atlantis"
RESULT_TIMEOUT = 15.0  # seconds for each call's result: a loaded machine, a queue to drain


def _calls(pool: ToolWorkerPool, cities: list[str]) -> tuple[dict[str, ToolResult], float]:
    """Call the pool's tool for every city at once; each city's result, and the wall time."""
    client = pool.client.connect("course-check-05")
    try:
        caller = ToolClient(client, f"check-{uuid.uuid4().hex[:8]}", subjects=pool.subjects)
        caller.start()
        try:
            began = time.monotonic()
            asked = {caller.call_async(pool.tool, city=city): city for city in cities}
            results = {asked[call_id]: caller.result(call_id, timeout=RESULT_TIMEOUT)
                       for call_id in asked}
            return results, time.monotonic() - began
        finally:
            caller.close()
    finally:
        client.close()


def _outcome(result: ToolResult) -> str:
    if result.ok:
        return repr(result.value)
    assert result.error is not None
    return f"{result.error.type}: {result.error.message}"


@EXERCISE.check
def check(weather_pool: Any, known_cities: Any) -> CheckResult:
    """Does the pool answer every known city, fail Atlantis with ValueError, side by side?"""
    if not_given(weather_pool, known_cities):
        return EXERCISE.not_done(
            "there is no `weather_pool` yet (the cell still says `weather_pool = ...`)",
            "write `weather(city)`, then `weather_pool = ToolWorkerPool(lab.connect("
            "\"weather-host\"), \"weather\", weather, workers=3).start()`, and pass the "
            "cities your tool knows as the second argument")
    if not isinstance(weather_pool, ToolWorkerPool):
        return EXERCISE.failed(
            f"`weather_pool` is a {type(weather_pool).__name__}, not a ToolWorkerPool",
            "`ToolWorkerPool(client, \"weather\", weather, workers=3).start()` returns the pool")
    subject = weather_pool.subjects.tool_execute(weather_pool.tool)
    if weather_pool.tool != "weather":
        return EXERCISE.failed(
            f"your pool runs the tool `{weather_pool.tool}` (calls on `{subject}`); the "
            "exercise's tool is called `weather`",
            "the pool's second argument is the tool's name: `ToolWorkerPool(client, "
            "\"weather\", weather, workers=3)`")
    if not weather_pool.is_running:
        return EXERCISE.failed(
            f"your pool `{weather_pool.name}` is {weather_pool.service_state}: nobody takes "
            f"the calls on `{subject}`",
            "start it (`.start()`) and keep it running until the check has run")
    cities = [known_cities] if isinstance(known_cities, str) else list(known_cities)
    if len(cities) < 2 or not all(isinstance(c, str) and c for c in cities):
        return EXERCISE.failed(
            f"the second argument should list the cities your tool knows, not {known_cities!r}",
            "pass them as a list, e.g. `[\"Paris\", \"Oslo\", \"Lagos\", \"Lima\"]` (four, "
            "with Atlantis the check makes five calls)")
    cities = [c for c in dict.fromkeys(cities) if c != UNKNOWN]
    results, wall = _calls(weather_pool, [*cities, UNKNOWN])
    told = [f"{city}: {_outcome(result)} (worker {result.worker}, "
            f"{result.duration_ms:.0f} ms)" for city, result in results.items()]

    no_forecast = [city for city in cities if not results[city].ok]
    if no_forecast:
        return EXERCISE.failed(
            f"`weather` failed for {listing(no_forecast)}, which you listed as known",
            "return a forecast for every city of your dict; raise only for the others", *told)
    atlantis = results[UNKNOWN]
    if atlantis.ok:
        return EXERCISE.failed(
            f"`weather` answered {atlantis.value!r} for {UNKNOWN!r}, a city it does not know",
            "raise `ValueError(f\"no forecast for {city!r}\")` for an unknown city: the pool "
            "turns it into an error result, which the caller reads", *told)
    assert atlantis.error is not None
    if atlantis.error.type != "ValueError":
        return EXERCISE.failed(
            f"{UNKNOWN!r} failed with {atlantis.error.type}, not with a ValueError",
            "raise `ValueError(...)` for an unknown city", *told)
    durations = [r.duration_ms / 1000 for r in results.values()]
    if statistics.median(durations) < 0.3:
        return EXERCISE.failed(
            f"your tool answers in {statistics.median(durations) * 1000:.0f} ms; the "
            "exercise's takes 0.5 s, so that calling without waiting shows",
            "start `weather` with `time.sleep(0.5)`, a slow weather API", *told)
    workers = sorted({r.worker for r in results.values()})
    one_by_one = sum(durations)
    if wall >= 0.8 * one_by_one:
        return EXERCISE.failed(
            f"the {len(results)} calls took {wall:.1f} s, as long as one after another "
            f"({one_by_one:.1f} s): your pool ran them on {len(workers)} worker(s), "
            f"{listing(workers)}",
            "give the pool three workers (`workers=3`), so that three calls run at once",
            *told)
    return EXERCISE.passed(
        f"{len(results)} calls on `{subject}` took {wall:.1f} s on {len(workers)} workers "
        f"(one after another: {one_by_one:.1f} s); {UNKNOWN!r} failed with a ValueError",
        *told)
