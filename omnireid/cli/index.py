"""``omnireid index``: build and update a gallery search index (faiss) from image folders.

    omnireid index build --artifact deploy/model.onnx --images gallery/ --output index/
    omnireid index add --index index/ --images new_photos/
    omnireid index remove --index index/ cam1/0001.jpg cam2/0042.jpg
    omnireid index info --index index/

Item ids are the image paths relative to ``--images`` (``/``-separated); each item's metadata holds
its ``path`` plus the columns of ``--metadata FILE.csv`` (header row; an ``id`` column). ``--kind``:
``flat`` (exact) by default below 100,000 images, ``ivf`` above; ``hnsw`` on request. Approximate
indexes print the recall@10 they measured against exact search. Every change is written as a new
snapshot, atomically: an interrupted command leaves the previous index as it was.
"""
from __future__ import annotations

import argparse
import csv
import logging
import os
import sys

from omnireid.cli.main import COMMAND_REGISTRY
from omnireid.utils.errors import MissingFileError

logger = logging.getLogger("omnireid")

AUTO_FLAT_LIMIT = 100_000  # galleries below this are searched exactly by default


def read_metadata_csv(path: str) -> dict[str, dict[str, str]]:
    """``id -> {column: value}`` from a CSV with a header row that has an ``id`` column."""
    from omnireid.serve.index import GalleryIndexError

    if not os.path.isfile(path):
        raise MissingFileError(f"--metadata: no such file: {path}")
    with open(path, newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    if rows and "id" not in rows[0]:
        raise GalleryIndexError(f"--metadata {path}: the header has no 'id' column (got {list(rows[0])})")
    return {row["id"]: {k: v for k, v in row.items() if k != "id"} for row in rows}


def _image_items(folder: str, metadata_csv: str | None) -> tuple[list[str], list[str], list[dict]]:
    from omnireid.cli.extract import list_images

    paths = list_images(folder)
    ids = [os.path.relpath(p, folder).replace(os.sep, "/") for p in paths]
    extra = read_metadata_csv(metadata_csv) if metadata_csv else {}
    metas = [{"path": os.path.abspath(p), **extra.get(i, {})} for p, i in zip(paths, ids)]
    return paths, ids, metas


def _features(encoder, paths: list[str], batch_size: int):
    from omnireid.cli.extract import extract_features

    return extract_features(encoder.predictor, paths, encoder.transform, batch_size)


def run_build(args: argparse.Namespace) -> int:
    from omnireid.cli.export import split_trailing_flags
    from omnireid.engine.setup import setup_cfg, setup_logging
    from omnireid.serve.encoder import ImageEncoder
    from omnireid.serve.index import GalleryIndex, GalleryIndexError

    args = split_trailing_flags(args, _add_build_flags)
    missing = [flag for flag in ("artifact", "images", "output") if not getattr(args, flag)]
    if missing:
        raise GalleryIndexError(f"index build needs {', '.join('--' + m for m in missing)}")
    setup_logging()
    cfg = setup_cfg(args.config_file or None, args.opts)
    paths, ids, metas = _image_items(args.images, args.metadata)
    encoder = ImageEncoder.from_artifact(args.artifact, cfg=cfg, size=args.size, config_file=args.config_file or None,
                                         opts=args.opts)
    features = _features(encoder, paths, args.batch_size)
    kind = args.kind if args.kind != "auto" else ("flat" if len(ids) < AUTO_FLAT_LIMIT else "ivf")
    params = {"flat": {}, "ivf": {"nlist": args.nlist, "nprobe": args.nprobe},
              "hnsw": {"m": args.hnsw_m, "ef_search": args.ef_search}}.get(kind, {})
    index = GalleryIndex.create(args.output, features, ids, metas, kind=kind, params=params,
                                info=encoder.describe(), overwrite=args.overwrite)
    index.close()
    print(_summary(index.manifest, args.output))
    return 0


def _open_for_change(args: argparse.Namespace):
    from omnireid.serve.encoder import ImageEncoder, check_compatible
    from omnireid.serve.index import GalleryIndex

    index = GalleryIndex.open(args.index)
    try:
        manifest = index.manifest
        artifact = args.artifact or manifest["model"]["artifact"]
        encoder = ImageEncoder.from_artifact(artifact, preprocess=manifest["preprocess"], size=manifest["input_size"],
                                             config_file=args.config_file or None)
        check_compatible(encoder, manifest, args.allow_model_change)
    except BaseException:
        index.close(compact=False)
        raise
    return index, encoder


def run_add(args: argparse.Namespace) -> int:
    from omnireid.engine.setup import setup_logging

    setup_logging()
    paths, ids, metas = _image_items(args.images, args.metadata)
    if args.prefix:
        ids = [args.prefix + i for i in ids]
    index, encoder = _open_for_change(args)
    with index:
        index.add(ids, _features(encoder, paths, args.batch_size), metas, durable=False)
    print(_summary(index.manifest, args.index))
    return 0


def run_remove(args: argparse.Namespace) -> int:
    from omnireid.serve.index import GalleryIndex

    with GalleryIndex.open(args.index) as index:
        index.remove(args.ids, durable=False)
    print(_summary(index.manifest, args.index))
    return 0


def run_info(args: argparse.Namespace) -> int:
    from omnireid.serve.index import GalleryIndex

    index = GalleryIndex.open(args.index, writable=False)
    print(_summary({**index.manifest, "count": len(index)}, args.index))
    if index.unsaved:
        print(f"  {index.unsaved} change(s) in the journal since the last snapshot")
    return 0


def _summary(manifest: dict, root: str) -> str:
    lines = [f"{root}: {manifest.get('count', 0)} items, {manifest['dim']}-d, kind {manifest['kind']} "
             f"{manifest.get('params', {})}, generation {manifest['generation']}",
             f"  model {manifest.get('model', {}).get('artifact')} ({manifest.get('model', {}).get('backend')}), "
             f"input {manifest.get('input_size')}"]
    recall = manifest.get("recall")
    if recall:
        lines.append(f"  recall@{recall['k']} vs exact search: {recall['recall']:.4f} ({recall['queries']} sampled "
                     "gallery items as queries)")
    return "\n".join(lines)


def _add_build_flags(parser: argparse.ArgumentParser, suppress: bool = False) -> None:
    """``index build`` flags (``suppress``: for flags written after the config's KEY VALUE overrides)."""
    def default(value):
        return argparse.SUPPRESS if suppress else value

    parser.add_argument("--artifact", metavar="FILE", default=default(None),
                        help="exported model (.onnx, .ts, .xml, .engine, .prototxt) or a .pth with its config")
    parser.add_argument("--batch-size", type=int, default=default(32), help="images per forward pass")
    parser.add_argument("--images", metavar="DIR", default=default(None), help="gallery images (searched recursively)")
    parser.add_argument("--output", metavar="DIR", default=default(None), help="index folder")
    parser.add_argument("--metadata", metavar="CSV", default=default(None),
                        help="extra metadata per id (header with an 'id' column)")
    parser.add_argument("--kind", choices=("auto", "flat", "ivf", "hnsw"), default=default("auto"),
                        help=f"auto: flat below {AUTO_FLAT_LIMIT} images, else ivf")
    parser.add_argument("--nlist", type=int, default=default(None), help="ivf: number of cells (default 4*sqrt(N))")
    parser.add_argument("--nprobe", type=int, default=default(None), help="ivf: cells searched per query (default 32)")
    parser.add_argument("--hnsw-m", type=int, default=default(None), help="hnsw: graph degree (default 32)")
    parser.add_argument("--ef-search", type=int, default=default(None), help="hnsw: search breadth (default 128)")
    parser.add_argument("--size", type=int, nargs=2, metavar=("H", "W"), default=default(None),
                        help="input size when the artifact declares none (default INPUT.SIZE_TEST)")
    parser.add_argument("--overwrite", action="store_true", default=default(False),
                        help="replace an existing index (atomically)")


@COMMAND_REGISTRY.register("index")
def add_index_command(subparsers: argparse._SubParsersAction) -> None:
    from omnireid.cli.train import add_config_arguments

    parser = subparsers.add_parser("index", help="build or update a gallery search index", description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="action", required=True, metavar="ACTION")

    build = sub.add_parser("build", help="index a folder of images")
    _add_build_flags(build)
    add_config_arguments(build)
    build.set_defaults(func=run_build)

    add = sub.add_parser("add", help="add a folder of images to an index")
    add.add_argument("--artifact", metavar="FILE", help="the model (default: the one the index was built with)")
    add.add_argument("--batch-size", type=int, default=32, help="images per forward pass")
    add.add_argument("--index", metavar="DIR", required=True)
    add.add_argument("--images", metavar="DIR", required=True)
    add.add_argument("--metadata", metavar="CSV")
    add.add_argument("--prefix", default="", help="prepended to the new ids (e.g. 'batch2/')")
    add.add_argument("--config-file", metavar="FILE", default="", help="config of a .pth artifact")
    add.add_argument("--allow-model-change", action="store_true",
                     help="accept an artifact other than the index's (the same model in another format)")
    add.set_defaults(func=run_add)

    remove = sub.add_parser("remove", help="remove items by id")
    remove.add_argument("--index", metavar="DIR", required=True)
    remove.add_argument("ids", nargs="+", metavar="ID")
    remove.set_defaults(func=run_remove)

    info = sub.add_parser("info", help="describe an index")
    info.add_argument("--index", metavar="DIR", required=True)
    info.set_defaults(func=run_info)
