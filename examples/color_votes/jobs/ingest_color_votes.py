"""Ingests the votes for one colour on one day: a source job, it has no inputs.

The "votes" are pseudo-random but deterministic, seeded by date and colour.
"""

import hashlib

from shared import COLOR, DATE, config, main, parse_ref, write_partition

PATTERN = f"daily_color_votes/{DATE}/{COLOR}"


def votes_for(day: str, color: str) -> int:
    digest = hashlib.sha256(f"{day}/{color}".encode()).digest()
    return 100 + int.from_bytes(digest[:4], "big") % 900


def configure(refs):
    configs = []
    for ref in refs:
        date, color = parse_ref(PATTERN, ref)
        configs.append(config([ref], [], [date.isoformat(), color]))
    return configs


def execute(job_config, outputs):
    for ref in outputs:
        date, color = parse_ref(PATTERN, ref)
        write_partition(ref, {"votes": votes_for(date.isoformat(), color)})


if __name__ == "__main__":
    main(configure, execute)
