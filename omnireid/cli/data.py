"""``omnireid data synth``: write the built-in synthetic reID dataset (Market-1501 layout).

``--domain shifted`` writes the domain-shifted variant (other scenes, illumination and cameras,
other people): the target of ``omnireid adapt`` (registered dataset ``SyntheticShifted``)."""
from __future__ import annotations

import argparse
import os
import time

from omnireid.cli.main import COMMAND_REGISTRY

# the registered dataset that reads what each domain writes (both are read straight from --out)
DATASET_OF_DOMAIN = {"source": "Market1501", "shifted": "SyntheticShifted"}


def _synth(args: argparse.Namespace) -> int:
    from omnireid.data.synthetic import write_synthetic_reid

    start = time.perf_counter()
    summary = write_synthetic_reid(args.out, seed=args.seed, num_train_ids=args.train_ids,
                                   num_test_ids=args.test_ids, num_cameras=args.cameras, workers=args.workers,
                                   domain=args.domain)
    print(f"wrote {summary.num_train_images} training, {summary.num_query_images} query and "
          f"{summary.num_gallery_images} gallery images ({summary.num_train_ids} + {summary.num_test_ids} "
          f"identities, {summary.num_cameras} cameras) to {os.path.abspath(args.out)} "
          f"in {time.perf_counter() - start:.1f} s")
    name = DATASET_OF_DOMAIN[args.domain]
    print(f"use it with: DATASETS.ROOT {args.out} DATASETS.NAMES {name} DATASETS.TESTS {name}")
    return 0


@COMMAND_REGISTRY.register("data")
def add_data_command(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("data", help="dataset utilities")
    actions = parser.add_subparsers(dest="action", required=True, metavar="ACTION")
    synth = actions.add_parser(
        "synth", help="write the synthetic person reID dataset (Market-1501 layout, attributes.csv)",
        description="Writes bounding_box_train/, bounding_box_test/, query/ and attributes.csv into --out; "
                    "point DATASETS.ROOT at that folder and use DATASETS.NAMES Market1501.")
    synth.add_argument("--out", required=True, help="output folder (the dataset folder itself)")
    synth.add_argument("--seed", type=int, default=0, help="random seed; same seed, same bytes (default 0)")
    synth.add_argument("--train-ids", type=int, default=200, help="training identities (default 200)")
    synth.add_argument("--test-ids", type=int, default=200, help="test identities (default 200)")
    synth.add_argument("--cameras", type=int, default=6, help="cameras, 2..9 (default 6)")
    synth.add_argument("--domain", default="source",
                       help="source (default: the demo's data) or shifted (other scenes, illumination, cameras "
                            "and people: a target for `omnireid adapt`)")
    synth.add_argument("--workers", type=int, default=2, help="rendering processes (default 2; output is identical for any count)")
    synth.set_defaults(func=_synth)
