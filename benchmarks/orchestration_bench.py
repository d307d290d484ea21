"""Orchestration overhead (SPEC §7): N trivial jobs through the orchestrator vs ``xargs -P``.

    .venv/bin/python benchmarks/orchestration_bench.py [--jobs 500] [--parallel 4]
        [--cases python:0 sh:0 python:50] [--repeat 3]

Each case is ``KIND:WORK_MS``. ``python`` jobs are ``job.py`` run by this interpreter
(``sys.executable``: in the venv, the real interpreter, not the pyenv shim), the realistic
minimal job of this project; ``sh`` jobs are ``job.sh`` run by ``/bin/sh``, the harsh case, as
a shell starts in a fraction of Python's time. Either job's ``config`` entrypoint answers every
requested ref in one call (one config per ref, no inputs); its ``exec`` entrypoint does nothing
but sleep for WORK_MS milliseconds (0 = exit at once: a pure measure of per-job overhead, the
process start included on both sides).

For each case, in one run:

- baseline: exactly the commands the executor runs, ``JOB exec REF`` (under the same
  ``setsid`` as the executor's), started by ``xargs -P <parallel> -n 1``;
- databuild: a fresh workspace and SQLite event log in a temporary directory, an Executor
  with ``max_parallel_jobs = <parallel>`` and an Orchestrator; the time from ``submit`` of
  all N refs in one build to the ``build_finished`` of the progress hub (analysis, the job
  graph, every job and partition event durably committed, run logs and running-process
  records included), run like the service, with the workspace as working directory;
- executor: the same runs handed straight to an Executor (no orchestrator, no event log), to
  show how the extra time splits between starting processes and orchestrating them.

Each runs ``--repeat`` times, interleaved; the table shows medians and the ratio of the
databuild median to the xargs median (target: at most 1.25).
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from twisted.internet import task
from twisted.internet.defer import ensureDeferred, gatherResults

from databuild.bel import open_event_log
from databuild.executor.runner import Executor
from databuild.graph.workspace import load_workspace
from databuild.model import JobConfig, JobRun, new_id
from databuild.orchestrator import Orchestrator
from databuild.proc.process import SETSID

TARGET_RATIO = 1.25
ENV = {"PATH": "/usr/bin:/bin"}

JOB_SH = """\
if [ "$1" = config ]; then
  shift
  printf '{"configs": ['
  sep=
  for ref in "$@"; do
    printf '%s{"outputs": ["%s"], "args": ["%s"]}' "$sep" "$ref" "$ref"
    sep=,
  done
  printf ']}\\n'
  exit 0
fi
[ "$WORK_S" = 0 ] || sleep "$WORK_S"
"""

JOB_PY = """\
import os, sys
if sys.argv[1] == "config":
    import json
    configs = [{"outputs": [ref], "args": [ref]} for ref in sys.argv[2:]]
    print(json.dumps({"configs": configs}))
    sys.exit(0)
if os.environ["WORK_S"] != "0":
    import time
    time.sleep(float(os.environ["WORK_S"]))
"""

GRAPH = """\
[graph]
label = "bench"

[[jobs]]
label = "trivial"
outputs = ['bench/\\d+']
command = {command}
"""

KINDS = {
    "python": (("job.py", JOB_PY), (sys.executable, "job.py")),
    "sh": (("job.sh", JOB_SH), ("/bin/sh", "job.sh")),
}


def parse_case(text: str) -> tuple[str, int]:
    kind, _, work = text.partition(":")
    if kind not in KINDS or not work.isdigit():
        raise argparse.ArgumentTypeError(f"{text!r}: write KIND:WORK_MS, KIND one of {list(KINDS)}")
    return kind, int(work)


def make_workspace(root: Path, kind: str) -> tuple[str, ...]:
    """A workspace whose one job is of ``kind``; returns the job's command."""
    (name, text), command = KINDS[kind]
    root.mkdir(parents=True)
    toml_command = "[" + ", ".join(f"'{part}'" for part in command) + "]"
    (root / "databuild.toml").write_text(GRAPH.format(command=toml_command))
    (root / name).write_text(text)
    return command


def run_xargs(
    root: Path, command: tuple[str, ...], refs: list[str], parallel: int, work_s: str
) -> float:
    start = time.perf_counter()
    subprocess.run(
        ["xargs", "-P", str(parallel), "-n", "1", SETSID, *command, "exec"],
        input="\n".join(refs).encode(),
        cwd=root,
        env={**ENV, "WORK_S": work_s},
        check=True,
    )
    return time.perf_counter() - start


def bench_executor(reactor, root: Path, parallel: int, work_s: str) -> Executor:
    return Executor(reactor, root, parallel, base_env={**ENV, "WORK_S": work_s})


async def run_executor(
    reactor, root: Path, command: tuple[str, ...], refs: list[str], parallel: int, work_s: str
) -> float:
    """The executor alone: the same runs, no orchestrator and no event log."""
    previous = os.getcwd()
    os.chdir(root)
    try:
        executor = bench_executor(reactor, root, parallel, work_s)
        runs = [JobRun(new_id(), "trivial", JobConfig(outputs=(r,), args=(r,))) for r in refs]
        start = time.perf_counter()
        handles = [executor.run(run, "bench", command, None) for run in runs]
        results = await gatherResults([h.result for h in handles])
        elapsed = time.perf_counter() - start
        if not all(r.succeeded for r in results):
            raise SystemExit("a benchmark job failed under the executor")
        return elapsed
    finally:
        os.chdir(previous)


async def run_databuild(reactor, root: Path, refs: list[str], parallel: int, work_s: str) -> float:
    # The service runs in its workspace (the CLI starts it there); so does this one.
    previous = os.getcwd()
    os.chdir(root)
    workspace = load_workspace(root)
    log = open_event_log(str(root / ".databuild" / "bel.sqlite"), root, reactor)
    await log.open()
    executor = bench_executor(reactor, root, parallel, work_s)
    orchestrator = Orchestrator(reactor, workspace, log, executor)
    await orchestrator.startService()
    try:
        start = time.perf_counter()
        build_id = await orchestrator.submit(refs)
        subscription = await orchestrator.hub.subscribe(build_id, None, lambda event: None)
        finished = await subscription.finished
        elapsed = time.perf_counter() - start
        if finished["status"] != "BUILD_REQUEST_COMPLETED":
            raise SystemExit(f"the benchmark build failed: {finished['message']}")
        return elapsed
    finally:
        await orchestrator.stopService()
        await log.close()
        os.chdir(previous)


async def main(reactor, args: argparse.Namespace) -> None:
    refs = [f"bench/{i}" for i in range(args.jobs)]
    rows = []
    load_before = os.getloadavg()[0]
    with tempfile.TemporaryDirectory(prefix="orchestration-bench-") as tmp:
        for kind, work_ms in args.cases:
            work_s = "0" if work_ms == 0 else f"{work_ms / 1000:g}"
            baseline, alone, ours = [], [], []
            for i in range(args.repeat):
                root = Path(tmp) / f"{kind}{work_ms}-{i}"
                command = make_workspace(root, kind)
                baseline.append(run_xargs(root, command, refs, args.parallel, work_s))
                alone.append(
                    await run_executor(reactor, root, command, refs, args.parallel, work_s)
                )
                ours.append(await run_databuild(reactor, root, refs, args.parallel, work_s))
                shutil.rmtree(root)
            rows.append(
                (kind, work_ms, *(statistics.median(x) for x in (baseline, alone, ours)))
            )
    print(f"{args.jobs} jobs, parallelism {args.parallel}, median of {args.repeat} runs each")
    print(f"load average (1 min) {load_before:.1f} before, {os.getloadavg()[0]:.1f} after")
    print()
    header = f"{'job':>6}  {'exec work':>9}  {'xargs -P (s)':>12}  {'executor (s)':>12}  "
    header += f"{'databuild (s)':>13}  {'ratio':>6}  {'per job (ms)':>12}  target"
    print(header)
    print("-" * len(header))
    for kind, work_ms, base, alone, ours in rows:
        ratio = ours / base
        per_job = (ours - base) / args.jobs * 1000
        verdict = "ok" if ratio <= TARGET_RATIO else "MISSED"
        print(
            f"{kind:>6}  {work_ms:>7}ms  {base:>12.2f}  {alone:>12.2f}  {ours:>13.2f}  "
            f"{ratio:>6.2f}  {per_job:>12.2f}  <= {TARGET_RATIO} {verdict}"
        )
    print()
    print(f"python = {sys.executable} job.py; sh = /bin/sh job.sh")
    print("executor = the same runs through the Executor alone (no orchestrator, no event log)")
    print("ratio = databuild / xargs; per job = (databuild - xargs) / jobs")


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=500)
    parser.add_argument("--parallel", type=int, default=4)
    parser.add_argument(
        "--cases",
        type=parse_case,
        nargs="+",
        default=[("python", 0), ("sh", 0), ("python", 50)],
        metavar="KIND:WORK_MS",
    )
    parser.add_argument("--repeat", type=int, default=3)
    return parser.parse_args(argv)


if __name__ == "__main__":
    arguments = parse_args(sys.argv[1:])
    task.react(lambda reactor: ensureDeferred(main(reactor, arguments)))
