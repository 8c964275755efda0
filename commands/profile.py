"""CLI command `lbdeploy profile` (listed in cli.COMMAND_MODULES).

A thin wrapper: it parses options, plans with workflows.compare, measures with runtime.profiling
(runtime.profiling.rpc for --rpc), and prints a table, JSON (docs/profile.md) or a PNG
(runtime.profiling.plot).
"""

from __future__ import annotations

import json
import sys
import tempfile

import click

from lbdeploy.errors import ConfigError
from lbdeploy.outputs import check_image_file
from lbdeploy.runtime.backends.base import runtime_choices
from lbdeploy.workflows.compare import parse_backends, plan_targets


def _parse_compare(text: str | None) -> list[str] | None:
    names = parse_backends(text)
    if names is not None and len(names) < 2:
        raise ConfigError(f"--compare {text!r} needs at least two backends, e.g. --compare torch,ort")
    return names


def _format_table(report) -> str:
    """The results as a table. Load time and memory growth are shown for a single result only: with
    several, the backends share one process (libraries imported once, allocators reused), so each
    one's figure depends on which was loaded before it rather than on the backend."""
    alone = len(report.results) == 1
    ratios = report.ratios()
    header = (f"{'result':<14}" + (f"{'load s':>8}" if alone else "") + f"{'first ms':>10}{'min ms':>9}"
              f"{'p50 ms':>9}{'p90 ms':>9}{'p99 ms':>9}{'img/s':>9}{'x p50':>7}" + (f"{'rss+ MB':>9}" if alone else ""))
    lines = [header]
    for result in report.results:
        lat, label = result.latency_ms(), result.model.label
        growth = "-" if result.rss_growth_mb is None else f"{result.rss_growth_mb:.1f}"
        lines.append(f"{label[:13]:<14}" + (f"{result.load_s:>8.2f}" if alone else "") + f"{result.first_run_ms:>10.2f}"
                     f"{lat['min']:>9.2f}{lat['p50']:>9.2f}{lat['p90']:>9.2f}{lat['p99']:>9.2f}"
                     f"{result.throughput()['p50_images_per_s']:>9.1f}{ratios[label]['p50']:>7.2f}"
                     + (f"{growth:>9}" if alone else ""))
    if not alone:
        lines.append("(load time and memory growth per backend are left out: in one process they depend on the "
                     "order of loading; profile one source alone for them)")
    if report.peak_rss_mb is not None:
        lines.append(f"peak RSS of this process (high-water mark, all results): {report.peak_rss_mb:.1f} MB")
    return "\n".join(lines)


def _format_breakdown(result) -> str:
    breakdown = result.breakdown
    lines = [f"\n{result.model.label}: {breakdown.note}"]
    for title, rows in (("op type", breakdown.by_type), ("node", breakdown.by_node)):
        if rows:
            lines.append(f"  {title:<58}{'ms/run':>9}{'calls/run':>10}{'share':>8}")
            lines += [f"  {row['name'][:57]:<58}{row['per_run_ms']:>9.3f}"
                      f"{row['calls'] / max(breakdown.runs, 1):>10.1f}{row['share']:>8.1%}" for row in rows]
    return "\n".join(lines)


def _format_kernels(result) -> str:
    """Each ternary layer's kernel as the artifact records it (nothing for a model.pt)."""
    from lbdeploy.exporters.kernel_choice import choice_table

    manifest = result.model.manifest
    if not manifest or manifest.get("backend") == "torch":
        return ""
    if "kernels" not in manifest:
        note = "every ternary layer runs as our op" if manifest.get("custom_ops") else "no ternary op"
        return f"\n{result.model.label}: kernel choice not recorded (exported before it existed): {note}"
    return f"\n{result.model.label}: " + choice_table(manifest["kernels"])


def _profile_remote(source, rpc, key, runs, warmup, batch, timeout_s):
    from tqdm import tqdm

    from lbdeploy.runtime.profiling.report import ProfileReport
    from lbdeploy.runtime.profiling.rpc import connect, open_remote_artifact, parse_address, profile_remote

    parse_address(rpc)
    root, manifest = open_remote_artifact(source, batch)
    session = connect(rpc, key, timeout_s)
    with tqdm(total=runs, desc="profiling (rpc)", unit="run", file=sys.stderr, disable=None, leave=False) as bar:
        measurement = profile_remote(session, root, manifest, runs, warmup, batch, address=rpc, key=key, bar=bar)
    return ProfileReport([measurement], runs, max(warmup, 1), None)


@click.command("profile")
@click.argument("sources", nargs=-1, required=True, type=click.Path(exists=True))
@click.option("--backend", type=click.Choice(runtime_choices()), default="auto", help="Backend for every source.")
@click.option("--compare", metavar="B1,B2,...",
              help="Compare backends on one source, interleaved; a model.pt is exported on the fly.")
@click.option("--runs", type=click.IntRange(min=1), default=100, help="Timed runs per result.")
@click.option("--warmup", type=click.IntRange(min=1), default=10, help="Untimed runs first (the first is reported).")
@click.option("--threads", type=click.IntRange(min=1), default=None, help="Intra-op threads of every backend.")
@click.option("--batch", type=click.IntRange(min=1), default=1, help="Images per run.")
@click.option("--op-runs", type=click.IntRange(min=0), default=5, help="Runs of the separate per-op pass (0: skip).")
@click.option("--top", type=click.IntRange(min=1), default=10, help="Rows of each per-op list.")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON (schema in docs/profile.md).")
@click.option("--plot", type=click.Path(dir_okay=False), help="Write a latency histogram + per-op chart PNG here.")
@click.option("--rpc", metavar="HOST:PORT", help="Time a TVM artifact on a board: a tracker (with --key) or an RPC server.")
@click.option("--key", help="The board's device key at the RPC tracker.")
@click.option("--rpc-timeout", type=click.FloatRange(min=0.1), default=10.0, help="Seconds to wait for --rpc to answer.")
def profile(sources, backend, compare, runs, warmup, threads, batch, op_runs, top, as_json, plot, rpc, key,
            rpc_timeout):
    """Measure load time, latency percentiles, throughput, memory and per-op time of SOURCES.

    SOURCES are artifact folders or model.pt files; several are timed interleaved (one run of
    each in turn) and compared with the first. The per-op breakdown is a separate pass after the
    timed runs. Figures are for this machine only.

    \b
    Example:
      lbdeploy profile out/ --runs 200 --threads 2
      lbdeploy profile model.pt --compare torch,ort,tvm --json > profile.json
      lbdeploy profile out-ort/ out-tvm/ --plot profile.png
      lbdeploy profile out-rpi4/ --rpc 192.168.1.20:9190 --key rpi4
    """
    from lbdeploy.runtime.profiling import profile as run_profile

    if plot:
        check_image_file(plot, "--plot")
    compare_names = _parse_compare(compare)
    if key and not rpc:
        raise ConfigError("--key names a board at an RPC tracker; pass the tracker with --rpc HOST:PORT")
    if rpc:
        if len(sources) != 1 or compare_names:
            raise ConfigError("--rpc profiles one TVM artifact; pass a single folder and no --compare")
        if threads:
            raise ConfigError("--threads is not applied over --rpc; set TVM_NUM_THREADS where the board's "
                              "rpc_server starts")
        report = _profile_remote(sources[0], rpc, key, runs, warmup, batch, rpc_timeout)
    else:
        with tempfile.TemporaryDirectory(prefix="lbdeploy-profile-") as workdir:
            targets = plan_targets(sources, backend, compare_names, workdir,
                                   progress=lambda message: click.echo(message, err=True))
            report = run_profile(targets, runs, warmup, threads, batch, op_runs, top)
    if plot:
        from lbdeploy.runtime.profiling.plot import write_plot

        click.echo(f"Wrote {write_plot(report, plot)}", err=True)
    if as_json:
        click.echo(json.dumps(report.to_dict(), indent=2))
        return
    click.echo(f"{runs} timed runs after {max(warmup, 1)} warm-up, batch {batch}, threads {threads or 'default'}")
    click.echo(_format_table(report))
    for result in report.results:
        click.echo(_format_breakdown(result))
        kernels = _format_kernels(result)
        if kernels:
            click.echo(kernels)


COMMANDS = [profile]
