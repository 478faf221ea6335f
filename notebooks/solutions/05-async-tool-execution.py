# Solution to the exercise of 05-async-tool-execution.ipynb. It runs inside that notebook,
# with the notebook's `lab`, `ToolWorkerPool`, `ToolClient`, `time` and `uuid`:
#     %run -i solutions/05-async-tool-execution.py
#     lesson05.check(weather_pool, FORECASTS)   # the exercise's check, in the notebook
# ruff: noqa: F821 (the names come from the notebook)

FORECASTS = {"Paris": "sunny, 24 °C", "Oslo": "rain, 12 °C", "Lagos": "storms, 29 °C",
             "Lima": "cloudy, 18 °C"}


def weather(city):
    time.sleep(0.5)  # a slow weather API
    if city not in FORECASTS:
        raise ValueError(f"no forecast for {city!r}")
    return FORECASTS[city]


weather_pool = ToolWorkerPool(lab.connect("weather-host"), "weather", weather,
                              workers=3).start()
planner = ToolClient(lab.connect("planner"), f"conv-{uuid.uuid4().hex[:6]}")
planner.start()

began = time.monotonic()
cities = {planner.call_async("weather", city=city): city for city in [*FORECASTS, "Atlantis"]}
print(f"{len(cities)} calls out after {time.monotonic() - began:.2f} s; "
      "the planner drafts the trip while they run")

results = [planner.result(call_id, timeout=5) for call_id in cities]
took = time.monotonic() - began
for result in results:
    outcome = result.value if result.ok else f"{result.error.type}: {result.error.message}"
    print(f"  {cities[result.call_id]:9} {outcome}")
print(f"all {len(results)} in {took:.1f} s (one after another: {len(results) * 0.5:.1f} s)")

planner.close()  # the pool keeps running: the check calls it too
