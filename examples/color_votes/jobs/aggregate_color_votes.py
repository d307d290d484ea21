"""Total votes over all colours: daily, trailing week and trailing month."""

from shared import COLORS, DATE, config, main, parse_ref, read_partition, write_partition

SOURCES = {
    "daily_votes": "daily_color_votes",
    "votes_1w": "color_votes_1w",
    "votes_1m": "color_votes_1m",
}
PATTERN = f"(?P<kind>{'|'.join(SOURCES)})/{DATE}"


def inputs_of(ref):
    kind = ref.split("/", 1)[0]
    date, _ = parse_ref(PATTERN, ref)
    return [f"{SOURCES[kind]}/{date.isoformat()}/{color}" for color in COLORS]


def configure(refs):
    return [config([ref], inputs_of(ref), [ref]) for ref in refs]


def execute(job_config, outputs):
    for ref in outputs:
        votes = sum(read_partition(source)["votes"] for source in inputs_of(ref))
        write_partition(ref, {"votes": votes})


if __name__ == "__main__":
    main(configure, execute)
