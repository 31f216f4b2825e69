"""`edge-agent zoo`: the classic tables of lightweight networks and of INT8 ResNets, regenerated on this board."""

from __future__ import annotations

import argparse
import json
from typing import Any

from agent.commands.args import positive_int, seconds


def register(commands: Any) -> None:
    """Add `zoo`."""
    zoo = commands.add_parser("zoo", help="MobileNet V1/V2, ShuffleNet built here: params, MACs, latency beside the "
                                          "published tables; --resnet: ResNet-50/101 FP32 vs INT8")
    zoo.add_argument("--only", action="append", metavar="NAME",
                     help="only this network of the lightweight table (repeat for more), e.g. 'MobileNet V2'")
    zoo.add_argument("--static", action="store_true", help="count only: no latency")
    zoo.add_argument("--resnet", action="store_true",
                     help="also ResNet-50 and ResNet-101 at batch 8, FP32 vs INT8 made on the device (minutes)")
    zoo.add_argument("--batch", type=positive_int, default=8, help="the ResNets' batch (default 8)")
    zoo.add_argument("--backend", choices=("onnxruntime", "tensorrt"), default="onnxruntime",
                     help="what runs the ResNets' FP32 and INT8 (default onnxruntime; tensorrt on a Jetson)")
    zoo.add_argument("--warmup", default="3", metavar="N|Ss", help="warm-up calls or seconds (default 3)")
    zoo.add_argument("--iterations", type=positive_int, default=20, metavar="N",
                     help="measure at least N calls (default 20)")
    zoo.add_argument("--min-seconds", type=seconds, default=0.5, metavar="S",
                     help="and for at least S seconds (default 0.5)")
    zoo.add_argument("--json", action="store_true", help="print the tables as JSON")
    zoo.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    """Build, count and time the networks; print the tables."""
    from agent.commands.progress import Progress
    from agent.device.detect import device_section
    from agent.jobs.zoo import ZooRequest, render_zoo, run_zoo
    from agent.measure.latency import Warmup

    request = ZooRequest(names=args.only, latency=not args.static, resnet=args.resnet, backend=args.backend,
                         batch=args.batch,
                         warmup=Warmup.parse(args.warmup), iterations=args.iterations, min_seconds=args.min_seconds)
    progress = Progress()
    try:
        document = run_zoo(request, device_section(), progress.start, progress.update)
    finally:
        progress.close()
    print(json.dumps(document, indent=2, allow_nan=False) if args.json else render_zoo(document))
    return 0
