"""`edge-agent profile MODEL`: per layer, what it costs (work, bytes) and why, measured on this board."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from agent.commands.args import int_list, positive_int
from agent.commands.measure import add_model_arguments, measure_request, print_failures


def register(commands: Any) -> None:
    """Add the `profile` parser."""
    parser = commands.add_parser(
        "profile", help="per-layer MACs, bytes, measured time and roofline of a model on this board")
    add_model_arguments(parser, latency=True)
    parser.add_argument("--top", type=positive_int, default=20, metavar="N",
                        help="show the N costliest layers in the table (default 20; JSON has every layer)")
    parser.add_argument("--static", action="store_true",
                        help="run nothing: the static profile of every model file (roofline from cached peaks)")
    parser.add_argument("--scaling", action="store_true",
                        help="also measure latency at 1..N threads and fit Amdahl's law")
    parser.add_argument("--scaling-threads", type=int_list, metavar="N[,N]",
                        help="the thread counts of --scaling (default: 1..cores, powers of two above 8)")
    parser.add_argument("--plot", metavar="DIR",
                        help="write a roofline chart and a per-layer time/MACs chart as PNG (needs the plot extra)")
    parser.add_argument("--export-profile", metavar="FILE",
                        help="write the per-layer times as trtexec's --exportProfile JSON (one file per "
                             "configuration with per-layer times; several get -<backend>-<precision>-<format>)")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    """Profile, then print the table or JSON; the exit code is the first failure's (0 when none)."""
    from agent import report
    from agent.commands.progress import Progress
    from agent.device.detect import device_section
    from agent.errors import AgentError
    from agent.jobs import profile as profile_job
    from agent.profile.render import render_profiles

    if args.plot:
        from agent.profile.plot import require_matplotlib

        require_matplotlib()  # fail before anything runs
    request = profile_job.ProfileRequest(measure_request(args), static_only=args.static, scaling=args.scaling,
                                         scaling_threads=args.scaling_threads)
    progress = Progress()
    try:
        reports = profile_job.run_profile(request, device_section(), progress.start, progress.update)
    finally:
        progress.close()
    failures = profile_job.profile_failures(reports)
    if not any("layers" in (r.profile or {}) for r in reports):
        raise failures[0] if failures else AgentError("nothing could be profiled")
    if args.output:
        Path(args.output).write_text(report.to_json(reports) + "\n", encoding="utf-8")
    if args.export_profile:
        export_profiles(reports, Path(args.export_profile))
    if args.plot:
        from agent.profile.plot import write_plots

        for path in write_plots(reports, Path(args.plot)):
            print(f"wrote {path}", file=sys.stderr)
    print(report.to_json(reports) if args.json else render_profiles(reports, args.top))
    print_failures(failures)
    return failures[0].exit_code if failures else 0


def export_profiles(reports: Any, path: Path) -> None:
    """Each report with per-layer times to `path` in trtexec's shape (several: the label in the name)."""
    import json

    from agent.profile.export import export_profile

    arrays = [(r, export_profile(r.profile or {})) for r in reports]
    found = [(r, a) for r, a in arrays if a is not None]
    for report, array in found:
        target = path if len(found) == 1 else path.with_name(
            f"{path.stem}-{report.backend.get('name')}-{report.model.get('precision')}-"
            f"{report.model.get('format')}{path.suffix}")
        target.write_text(json.dumps(array, indent=2) + "\n", encoding="utf-8")
        print(f"wrote {target}", file=sys.stderr)
    if not found:
        print("--export-profile: no configuration has per-layer times (only ONNX Runtime traces them)",
              file=sys.stderr)
