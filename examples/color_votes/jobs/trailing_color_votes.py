"""Trailing 7- and 28-day vote counts for one colour.

One run reads the 28 daily partitions ending on its date and writes both windows, so one
config covers ``color_votes_1w/<date>/<color>`` and ``color_votes_1m/<date>/<color>``.
"""

from shared import (
    COLOR,
    DATE,
    config,
    days_ending,
    main,
    parse_ref,
    read_partition,
    write_partition,
)

WINDOWS = {"color_votes_1w": 7, "color_votes_1m": 28}
PATTERN = f"(?P<window>{'|'.join(WINDOWS)})/{DATE}/{COLOR}"
LONGEST = max(WINDOWS.values())


def configure(refs):
    runs = {}
    for ref in refs:
        date, color = parse_ref(PATTERN, ref)
        runs[(date, color)] = None
    configs = []
    for date, color in runs:
        day = date.isoformat()
        configs.append(
            config(
                [f"{window}/{day}/{color}" for window in WINDOWS],
                [f"daily_color_votes/{d.isoformat()}/{color}" for d in days_ending(date, LONGEST)],
                [day, color],
            )
        )
    return configs


def execute(job_config, outputs):
    for ref in outputs:
        window = ref.split("/", 1)[0]
        date, color = parse_ref(PATTERN, ref)
        days = days_ending(date, WINDOWS[window])
        votes = sum(
            read_partition(f"daily_color_votes/{d.isoformat()}/{color}")["votes"] for d in days
        )
        write_partition(ref, {"votes": votes, "days": len(days)})


if __name__ == "__main__":
    main(configure, execute)
