"""Orchestration overhead (SPEC §7): N trivial jobs through the orchestrator vs ``xargs -P``.

    .venv/bin/python benchmarks/orchestration_bench.py [--jobs 500] [--parallel 4]
        [--cases python:0 sh:0 python:50] [--repeat 3]
    .venv/bin/python benchmarks/orchestration_bench.py --scale 5000 20000 [--stub-exec]

Each case is ``KIND:WORK_MS``. ``python`` jobs are ``job.py`` run by this interpreter
(``sys.executable``: in the venv, the real interpreter, not the pyenv shim), the realistic
minimal job of this project; ``sh`` jobs are ``job.sh`` run by ``/bin/sh``, the harsh case, as
a shell starts in a fraction of Python's time. Either job's ``config`` entrypoint answers every
requested ref in one call (one config per ref, no inputs); its ``exec`` entrypoint does nothing
but sleep for WORK_MS milliseconds (0 = exit at once: a pure measure of per-job overhead, the
process start included on both sides).

For each case, in one run:

- baseline: exactly the commands the executor runs, ``JOB exec REF``, started by
  ``xargs -P <parallel> -n 1``;
- databuild: a fresh workspace and SQLite event log in a temporary directory, an Executor
  with ``max_parallel_jobs = <parallel>`` and an Orchestrator; the time from ``submit`` of
  all N refs in one build to the ``build_finished`` of the progress hub (analysis, the job
  graph, every job and partition event durably committed, run logs and running-process
  records included), run like the service, with the workspace as working directory;
- executor: the same runs handed straight to an Executor (no orchestrator, no event log), to
  show how the extra time splits between starting processes and orchestrating them.

Each runs ``--repeat`` times, interleaved; the table shows medians and the ratio of the
databuild median to the xargs median (target: at most 1.25).

``--scale N ...`` measures instead, once per N (SPEC §7: 5,000, 20,000 and 100,000), a build
of N ``sh`` no-op jobs (``sh jobs/noop.sh exec REF``, exiting 0) with ``max_parallel_jobs =
2`` against a bare Twisted reactor spawning the same processes (target: at most 1.3 times it),
with ``seq 1 N | xargs -P 2 -I@ sh jobs/noop.sh exec @`` printed beside both, in the same run.
Each databuild build runs in a child process of its own, set up as ``twistd`` sets up the
service (logging begun, to a file), which first runs a warm-up build of ``WARM_UP_JOBS`` other
refs, as a service that has built before: the first build of a fresh process pays about 4 MiB
more than later ones, whether of 300 runs or of 5,000 (the RSS the warm-up added is printed as
"warm-up"). The child reports its peak RSS: the growth over the RSS it had before ``submit``,
per 1,000 jobs (target: at most 2 MiB), is the memory the graph costs; it also reports its CPU
time and the time its garbage collector took.

A second baseline, also in a child process of its own: a bare Twisted reactor starting the
same processes with ``spawnProcess``, two at a time, each with its config on stdin and its
stdout and stderr on pipes, and nothing else (no event, no log, no process group): the floor
of any service built on one Twisted reactor. With ``--stub-exec`` the executor starts no
process: each run's "child" ends with exit code 0 at once, so the build's
CPU is the service's own (orchestrator, executor bookkeeping, event log) per job.

The second table splits the CPU: the databuild process's and its job processes' (the children
it reaped), the bare reactor's and its job processes', and the ratio of the two sums. On two
cores both keep the cores busy, so the build's time follows that ratio: it tells what the
service may spend per job for the target, whatever the order it does its work in.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from attrs import define, field
from twisted.internet import task
from twisted.internet.defer import Deferred, ensureDeferred, gatherResults
from twisted.internet.protocol import ProcessProtocol
from twisted.logger import globalLogBeginner, textFileLogObserver

from databuild.bel import open_event_log
from databuild.executor import runner
from databuild.executor.local import LocalLauncher
from databuild.executor.runner import Executor
from databuild.executor.running import RunningJournal
from databuild.graph.workspace import load_workspace
from databuild.ids import new_id
from databuild.model import JobConfig, JobRun
from databuild.orchestrator import Orchestrator
from databuild.proc.process import ProcessResult
from databuild.proc.tether import Tether

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from tests.shell_jobs import one_run_per_ref

TARGET_RATIO = 1.25
SCALE_TARGET_RATIO = 1.3
"""Of the bare Twisted reactor's time (SPEC §7)."""
SCALE_MIB_PER_1000 = 2.0
SCALE_PARALLEL = 2
WARM_UP_JOBS = 200
ENV = {"PATH": "/usr/bin:/bin"}

JOB_SH = one_run_per_ref('[ "$WORK_S" = 0 ] || sleep "$WORK_S"')

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


NOOP_SH = one_run_per_ref()


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
        ["xargs", "-P", str(parallel), "-n", "1", *command, "exec"],
        input="\n".join(refs).encode(),
        cwd=root,
        env={**ENV, "WORK_S": work_s},
        check=True,
    )
    return time.perf_counter() - start


def bench_executor(
    reactor, root: Path, parallel: int, work_s: str, *, tethered: bool = True
) -> Executor:
    """An executor as the service has it: its runs tethered to a watchdog process (unless
    there are no processes to hold: ``--stub-exec``)."""
    tether = None
    if tethered:
        tether = Tether(reactor)
        tether.startService()
        reactor.addSystemEventTrigger("before", "shutdown", tether.stopService)
    return Executor(reactor, root, parallel, base_env={**ENV, "WORK_S": work_s}, tether=tether)


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


async def run_databuild(
    reactor, root: Path, refs: list[str], parallel: int, work_s: str, *, tethered: bool = True,
    at_submit: Callable[[], None] = lambda: None, warm_up: Sequence[str] = (),
) -> float:
    """Seconds from ``submit`` to ``build_finished``; ``at_submit`` is called just before
    ``submit``, with the log open, the orchestrator started and a build of ``warm_up`` (if
    any) done."""
    # The service runs in its workspace (the CLI starts it there); so does this one.
    previous = os.getcwd()
    os.chdir(root)
    workspace = load_workspace(root)
    log = open_event_log(str(root / ".databuild" / "bel.sqlite"), root, reactor)
    await log.open()
    executor = bench_executor(reactor, root, parallel, work_s, tethered=tethered)
    orchestrator = Orchestrator(reactor, workspace, log, LocalLauncher(reactor, executor))
    await orchestrator.startService()
    try:
        if warm_up:
            await build_once(orchestrator, warm_up)
        at_submit()
        start = time.perf_counter()
        await build_once(orchestrator, refs)
        return time.perf_counter() - start
    finally:
        await orchestrator.stopService()
        await log.close()
        os.chdir(previous)


def log_as_twistd(path: Path) -> None:
    """Begin logging to ``path``, as twistd does for the service: until logging begins,
    Twisted keeps every log event in memory, and what its fields hold (a build's analysis)."""
    observer = textFileLogObserver(path.open("a"))
    globalLogBeginner.beginLoggingTo([observer], redirectStandardIO=False)


async def build_once(orchestrator: Orchestrator, refs: Sequence[str]) -> None:
    """Submit a build of ``refs`` and wait for its end; exit unless it completed."""
    build_id = await orchestrator.submit(refs)
    subscription = await orchestrator.hub.subscribe(build_id, None, lambda event: None)
    finished = await subscription.finished
    if finished["status"] != "BUILD_REQUEST_COMPLETED":
        raise SystemExit(f"the benchmark build failed: {finished['message']}")


def make_noop_workspace(root: Path) -> None:
    """A workspace whose one job is ``sh jobs/noop.sh``."""
    (root / "jobs").mkdir(parents=True)
    (root / "databuild.toml").write_text(GRAPH.format(command="['sh', 'jobs/noop.sh']"))
    (root / "jobs" / "noop.sh").write_text(NOOP_SH)


def run_seq_xargs(root: Path, jobs: int) -> float:
    """``seq 1 N | xargs -P 2 -I@ sh jobs/noop.sh exec @``, timed."""
    start = time.perf_counter()
    subprocess.run(
        f"seq 1 {jobs} | xargs -P {SCALE_PARALLEL} -I@ sh jobs/noop.sh exec @",
        shell=True, cwd=root, env=ENV, check=True,
    )
    return time.perf_counter() - start


class _BareJob(ProcessProtocol):
    def __init__(self, stdin: bytes, ended: Deferred[None]) -> None:
        self._stdin = stdin
        self._ended = ended

    def connectionMade(self) -> None:
        self.transport.write(self._stdin)
        self.transport.closeStdin()

    def processEnded(self, reason: Any) -> None:
        self._ended.callback(None)


async def bare_child(reactor, root: Path, jobs: int) -> None:
    """``sh jobs/noop.sh exec REF`` for N refs through bare ``reactor.spawnProcess``, two at a
    time; prints the seconds as JSON."""
    os.chdir(root)
    env = {**ENV, "WORK_S": "0"}

    async def slot(refs: Any) -> None:
        for ref in refs:
            ended: Deferred[None] = Deferred()
            stdin = json.dumps({"outputs": [ref], "args": [ref]}).encode()
            reactor.spawnProcess(_BareJob(stdin, ended), "/bin/sh",
                                 ["sh", "jobs/noop.sh", "exec", ref], env=env,
                                 childFDs={0: "w", 1: "r", 2: "r"})
            await ended

    refs = iter(f"bench/{i}" for i in range(1, jobs + 1))
    before = cpu_seconds()
    start = time.perf_counter()
    await gatherResults([ensureDeferred(slot(refs)) for _ in range(SCALE_PARALLEL)])
    seconds = time.perf_counter() - start
    print(json.dumps({"seconds": seconds, **cpu_spent(before)}))


def cpu_seconds() -> tuple[float, float]:
    """User and system CPU seconds of this process and of its children that ended."""
    mine = resource.getrusage(resource.RUSAGE_SELF)
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return mine.ru_utime + mine.ru_stime, children.ru_utime + children.ru_stime


def cpu_spent(before: tuple[float, float]) -> dict[str, float]:
    """The CPU seconds spent since ``before``: ``cpu`` this process's, ``jobs_cpu`` that of
    the children it reaped (the job processes)."""
    mine, children = cpu_seconds()
    return {"cpu": mine - before[0], "jobs_cpu": children - before[1]}


def rss_mib() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def time_collections(spent: dict[str, float]) -> None:
    """Add the time the garbage collector takes to ``spent["gc"]``."""
    spent["gc"] = 0.0
    began = [0.0]

    def observe(phase: str, _: dict[str, int]) -> None:
        if phase == "start":
            began[0] = time.perf_counter()
        else:
            spent["gc"] += time.perf_counter() - began[0]

    gc.callbacks.append(observe)


def timed(module: Any, name: str, spent: dict[str, float]) -> None:
    """Replace ``module.name`` by a wrapper adding its wall time to ``spent[name]``."""
    original = getattr(module, name)
    spent[name] = 0.0

    def wrapper(*args: Any, **kwargs: Any) -> Any:
        start = time.perf_counter()
        try:
            return original(*args, **kwargs)
        finally:
            spent[name] += time.perf_counter() - start

    setattr(module, name, wrapper)


@define(eq=False)
class StubChild:
    """What the executor uses of a ChildProcess, for a "process" that ends with 0 at once."""

    pid: int = field(factory=os.getpid)
    start_time: int | None = None
    result: Deferred[ProcessResult] = field(factory=Deferred)

    def terminate(self, *, timed_out: bool = False) -> Deferred[ProcessResult]:
        return self.result


def stub_spawn(reactor, argv, **_: Any) -> StubChild:
    child = StubChild()
    reactor.callLater(0, child.result.callback, ProcessResult(exit_code=0, signal=None))
    return child


async def scale_child(reactor, root: Path, jobs: int, stub_exec: bool) -> None:
    """One no-op build of ``jobs`` jobs in this process; prints seconds, RSS and where the
    reactor thread's time went (the executor's spawn and running-journal calls) as JSON."""
    refs = [f"bench/{i}" for i in range(1, jobs + 1)]
    warm_up = [f"bench/{i}" for i in range(jobs + 1, jobs + 1 + WARM_UP_JOBS)]
    (root / ".databuild").mkdir(exist_ok=True)
    log_as_twistd(root / ".databuild" / "service.log")
    spent: dict[str, float] = {}
    if stub_exec:
        runner.spawn = stub_spawn
    timed(runner, "spawn", spent)
    timed(RunningJournal, "started", spent)
    timed(RunningJournal, "ended", spent)
    marks: dict[str, Any] = {"fresh": rss_mib()}

    def at_submit() -> None:
        marks["rss"] = rss_mib()
        marks["cpu"] = cpu_seconds()
        time_collections(spent)

    elapsed = await run_databuild(
        reactor, root, refs, SCALE_PARALLEL, "0", tethered=not stub_exec, at_submit=at_submit,
        warm_up=warm_up,
    )
    print(json.dumps({
        "seconds": elapsed,
        "rss_fresh": marks["fresh"],
        "rss_before": marks["rss"],
        "rss_peak": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        **cpu_spent(marks["cpu"]),
        **spent,
    }))


def run_scale(args: argparse.Namespace) -> None:
    rows = []
    load_before = os.getloadavg()[0]
    with tempfile.TemporaryDirectory(prefix="orchestration-scale-") as tmp:
        for jobs in args.scale:
            root = Path(tmp) / f"noop-{jobs}"
            make_noop_workspace(root)
            base = run_seq_xargs(root, jobs)
            bare = json.loads(subprocess.run(
                [sys.executable, __file__, "--bare-child", str(root), str(jobs)],
                check=True, stdout=subprocess.PIPE, text=True,
            ).stdout.strip().splitlines()[-1])
            stub = ["--stub-exec"] if args.stub_exec else []
            child = subprocess.run(
                [sys.executable, __file__, "--scale-child", str(root), str(jobs), *stub],
                check=True, stdout=subprocess.PIPE, text=True,
            )
            ours = json.loads(child.stdout.strip().splitlines()[-1])
            rows.append((jobs, base, bare, ours))
            shutil.rmtree(root)
    stubbed = ", databuild with --stub-exec (no processes)" if args.stub_exec else ""
    print(f"sh no-op jobs, max_parallel_jobs {SCALE_PARALLEL}, one run each{stubbed}")
    print(f"load average (1 min) {load_before:.1f} before, {os.getloadavg()[0]:.1f} after")
    print()
    header = (f"{'jobs':>7}  {'xargs -P2 (s)':>13}  {'bare Twisted (s)':>16}  {'bare/xargs':>10}  "
              f"{'databuild (s)':>13}  {'ratio':>6}  {'vs bare':>7}  "
              f"{'warm-up (MiB)':>13}  {'RSS before (MiB)':>16}  {'RSS peak (MiB)':>14}  "
              f"{'MiB / 1,000 jobs':>16}  target")
    print(header)
    print("-" * len(header))
    for jobs, base, bare_run, ours in rows:
        bare = bare_run["seconds"]
        ratio = ours["seconds"] / base
        growth = (ours["rss_peak"] - ours["rss_before"]) / jobs * 1000
        fits = ours["seconds"] / bare <= SCALE_TARGET_RATIO and growth <= SCALE_MIB_PER_1000
        verdict = "ok" if fits else "MISSED"
        # Without processes the ratio says what the service alone costs, not the target.
        target = "n/a (no processes)" if args.stub_exec else (
            f"vs bare <= {SCALE_TARGET_RATIO}, <= {SCALE_MIB_PER_1000:g} MiB: {verdict}"
        )
        print(
            f"{jobs:>7,}  {base:>13.2f}  {bare:>16.2f}  {bare / base:>10.2f}  "
            f"{ours['seconds']:>13.2f}  {ratio:>6.2f}  {ours['seconds'] / bare:>7.2f}  "
            f"{ours['rss_before'] - ours['rss_fresh']:>13.1f}  "
            f"{ours['rss_before']:>16.0f}  {ours['rss_peak']:>14.0f}  {growth:>16.2f}  "
            f"{target}"
        )
    print()
    print("xargs = seq 1 N | xargs -P 2 -I@ sh jobs/noop.sh exec @; databuild = one build of N")
    print("refs from submit to build_finished (every event committed), in a fresh process;")
    print("bare Twisted = the same processes through reactor.spawnProcess, two at a time, with")
    print("stdin and pipes and nothing else; ratio = databuild / xargs; vs bare = databuild /")
    print("bare Twisted (the target's, with the peak RSS growth per 1,000 jobs); warm-up = the")
    print(f"RSS the warm-up build of {WARM_UP_JOBS} other refs added before (see the docstring)")
    print()
    header = (f"{'jobs':>7}  {'process CPU':>11}  {'in spawn()':>10}  "
              f"{'in running journal':>18}  {'in gc':>6}  {'jobs CPU':>8}  {'bare CPU':>8}  "
              f"{'its jobs CPU':>12}  {'CPU vs bare':>11}  (ms per job)")
    print(header)
    print("-" * len(header))
    for jobs, _, bare_run, ours in rows:
        journal = ours["started"] + ours["ended"]
        cpu_ratio = (ours["cpu"] + ours["jobs_cpu"]) / (bare_run["cpu"] + bare_run["jobs_cpu"])
        print(f"{jobs:>7,}  {ours['cpu'] / jobs * 1000:>11.2f}  "
              f"{ours['spawn'] / jobs * 1000:>10.2f}  {journal / jobs * 1000:>18.2f}  "
              f"{ours['gc'] / jobs * 1000:>6.2f}  {ours['jobs_cpu'] / jobs * 1000:>8.2f}  "
              f"{bare_run['cpu'] / jobs * 1000:>8.2f}  "
              f"{bare_run['jobs_cpu'] / jobs * 1000:>12.2f}  {cpu_ratio:>11.2f}")
    print()
    print("process CPU = the databuild process's, jobs CPU = its job processes'; bare CPU = the")
    print("bare reactor's, its jobs CPU = the same processes' under it; CPU vs bare = databuild's")
    print("CPU with its jobs' over the bare reactor's with its jobs'. Both keep the cores busy,")
    print("so the time follows the CPU: 'vs bare' above stays near this ratio, and the target")
    print("asks the service to spend no more CPU per job than keeps it at most 1.3")


async def main(reactor, args: argparse.Namespace) -> None:
    refs = [f"bench/{i}" for i in range(args.jobs)]
    rows = []
    load_before = os.getloadavg()[0]
    with tempfile.TemporaryDirectory(prefix="orchestration-bench-") as tmp:
        log_as_twistd(Path(tmp) / "service.log")
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
    parser.add_argument("--scale", type=int, nargs="+", metavar="N",
                        help="sh no-op builds of N jobs at parallelism 2 (see above)")
    parser.add_argument("--stub-exec", action="store_true",
                        help="with --scale: the executor starts no processes (see above)")
    parser.add_argument("--scale-child", nargs=2, help=argparse.SUPPRESS)
    parser.add_argument("--bare-child", nargs=2, help=argparse.SUPPRESS)
    return parser.parse_args(argv)


if __name__ == "__main__":
    arguments = parse_args(sys.argv[1:])
    if arguments.scale_child:
        where, count = arguments.scale_child
        task.react(lambda reactor: ensureDeferred(
            scale_child(reactor, Path(where), int(count), arguments.stub_exec)
        ))
    elif arguments.bare_child:
        where, count = arguments.bare_child
        task.react(lambda reactor: ensureDeferred(bare_child(reactor, Path(where), int(count))))
    elif arguments.scale:
        run_scale(arguments)
    else:
        task.react(lambda reactor: ensureDeferred(main(reactor, arguments)))
