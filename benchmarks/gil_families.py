"""Where a build's GIL time goes, per job: a ``py-spy record --gil -f raw`` profile by family.

    .venv/bin/python benchmarks/gil_families.py gil.txt JOBS [--rate 200]

Each sample is charged to the innermost frame of ``databuild`` in its stack, by module (so
the Deferred and coroutine machinery a module drives counts as that module's), except that
the ``posix_spawn`` call, ``twisted.logger`` and handing work to a thread pool are
families of their own; samples with no ``databuild`` frame are Twisted's or Python's own.
Prints microseconds per job (samples / rate / jobs) and the share of all samples.
"""

from __future__ import annotations

import argparse
import collections
import re

FRAME = re.compile(r"(?P<function>.*) \((?P<file>.*?):\d+\)$")
BELOW = (
    ("_trySpawnInsteadOfFork", "proc/process.py: posix_spawn"),  # before 72d0e15
    ("twisted/logger/", "twisted.logger"),
    ("threadpool.py", "handing work to a thread"),
)


def family(frames: list[str]) -> str:
    for depth in range(len(frames) - 1, -1, -1):
        match = FRAME.match(frames[depth])
        if match and "databuild/" in match["file"] and "benchmarks/" not in match["file"]:
            if match["function"].endswith("._fork"):  # the posix_spawn call itself
                return "proc/process.py: posix_spawn"
            for below in frames[depth + 1:]:
                for needle, name in BELOW:
                    if needle in below:
                        return name
            return match["file"].rpartition("databuild/")[2]
    if any("Thread._bootstrap" in f for f in frames):
        return "(other threads)"
    if any("importlib" in f for f in frames):
        return "(imports)"
    return "(Twisted, Python)"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("profile")
    parser.add_argument("jobs", type=int)
    parser.add_argument("--rate", type=int, default=200)
    args = parser.parse_args()
    spent: collections.Counter[str] = collections.Counter()
    with open(args.profile) as f:
        for line in f:
            stack, _, count = line.rstrip("\n").rpartition(" ")
            spent[family(stack.split(";"))] += int(count)
    total = sum(spent.values())
    per_job = 1e6 / args.rate / args.jobs
    print(f"{total} samples, {total * per_job:.0f} µs of GIL time per job")
    for name, samples in spent.most_common():
        print(f"{samples * per_job:8.0f} µs  {samples / total:6.1%}  {name}")


if __name__ == "__main__":
    main()
