"""One colour's share of the votes on a day, over the trailing week and month."""

from shared import COLOR, DATE, config, main, parse_ref, read_partition, write_partition

PATTERN = f"color_vote_report/{DATE}/{COLOR}"
PERIODS = {  # period: (the colour's votes, everyone's votes)
    "daily": ("daily_color_votes/{day}/{color}", "daily_votes/{day}"),
    "weekly": ("color_votes_1w/{day}/{color}", "votes_1w/{day}"),
    "monthly": ("color_votes_1m/{day}/{color}", "votes_1m/{day}"),
}


def sources(ref):
    date, color = parse_ref(PATTERN, ref)
    day = date.isoformat()
    return {
        period: (mine.format(day=day, color=color), total.format(day=day))
        for period, (mine, total) in PERIODS.items()
    }


def configure(refs):
    return [
        config([ref], [r for pair in sources(ref).values() for r in pair], [ref]) for ref in refs
    ]


def execute(job_config, outputs):
    for ref in outputs:
        report = {}
        for period, (mine, total) in sources(ref).items():
            report[f"{period}_share"] = round(
                read_partition(mine)["votes"] / read_partition(total)["votes"], 4
            )
        write_partition(ref, report)


if __name__ == "__main__":
    main(configure, execute)
