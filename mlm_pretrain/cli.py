"""The ``mlm-pretrain`` command line: thin callers of the stage functions.

    mlm-pretrain run        [--config NAME|FILE] [key=value ...]   # tokenizer -> prepare -> pretrain -> finetune (-> push)
    mlm-pretrain tokenizer  [--config NAME|FILE] [key=value ...]
    mlm-pretrain prepare    ...      mlm-pretrain pretrain ...      mlm-pretrain finetune ...
    mlm-pretrain evaluate   --model DIR [--file LABELLED] [--predict UNLABELLED --output OUT] ...
    mlm-pretrain suite      --suite glue [--tasks cola,rte] [--data DIR] finetune.model=DIR   # one table of tasks
    mlm-pretrain push       [PATH] hub.repo_id=user/name ...
    mlm-pretrain config     [--config NAME|FILE] [key=value ...]  # print the resolved config
    mlm-pretrain recipes                                          # list the packaged recipes
    accelerate launch --num_processes N -m mlm_pretrain pretrain --config ...

With no ``--config`` the packaged ``tiny`` recipe is used (it runs on the bundled ``data/``).
Bad input exits with status 2 and one message naming the problem and the fix.
"""
from __future__ import annotations

import argparse
import importlib
import logging
import sys
from typing import Callable, Optional

import yaml

from .config import Config, describe_fields, load_config, recipe_names, to_dict
from .errors import UserError

logger = logging.getLogger("mlm_pretrain")

#: subcommand -> (module, function, one-line help); modules are imported when their command runs.
STAGES: dict[str, tuple[str, str, str]] = {
    "run": ("pipeline", "run_pipeline", "chain every stage from one recipe"),
    "tokenizer": ("tokenizer", "train_tokenizer", "train (or check) the tokenizer: WordPiece, BPE or Unigram"),
    "prepare": ("prepare", "prepare_pretraining_data", "build the cached NSP/SOP/MLM pretraining examples"),
    "pretrain": ("pretrain", "pretrain", "pretrain the encoder with Accelerate"),
    "finetune": ("finetune", "finetune", "fine-tune a sequence classifier"),
    "evaluate": ("predict", "evaluate_model", "score a classifier on a labelled file / write predictions"),
    "suite": ("suite", "run_suite", "fine-tune an encoder on a suite of tasks (glue, reviews, a YAML file): one table"),
    "push": ("hub", "push_to_hub", "push a run artifact to the Hugging Face Hub"),
}


def _stage(name: str) -> Callable:
    module, func, _ = STAGES[name]
    return getattr(importlib.import_module(f"mlm_pretrain.{module}"), func)


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", "-c", default=None,
                   help=f"packaged recipe name ({', '.join(recipe_names())}) or YAML file; default: tiny")
    p.add_argument("overrides", nargs="*", metavar="key=value",
                   help="dotted config overrides, e.g. pretrain.max_steps=200 (see `mlm-pretrain config --fields`)")
    p.add_argument("--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"])


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mlm-pretrain",
        description="Pretrain a BERT-style encoder from scratch and fine-tune it for text classification.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, (_, _, help_) in STAGES.items():
        p = sub.add_parser(name, help=help_, description=help_)
        if name == "push":
            p.add_argument("path", nargs="?", default=None,
                           help="artifact directory to push (default: <output_dir>/pretrain/final)")
        if name == "run":
            p.add_argument("--suite", default=None, help="also fine-tune the encoder on this task suite (glue, "
                           "reviews or a suite YAML file); the report gains its table and mean")
            p.add_argument("--data", default=None, help="with --suite: read the tasks' local files under this folder")
        if name == "suite":
            p.add_argument("--suite", required=True, help="packaged suite (glue, reviews) or a suite YAML file")
            p.add_argument("--tasks", default=None, help="comma-separated subset of the suite's tasks")
            p.add_argument("--data", default=None, help="read the tasks' local files under this folder instead of the Hub")
            p.add_argument("--baselines", default="random,tfidf",
                           help="comma-separated baselines beside the encoder: random, tfidf (or none)")
        if name == "evaluate":
            p.add_argument("--model", required=True, help="classifier directory (or Hub id)")
            p.add_argument("--file", default=None, help="labelled file to score")
            p.add_argument("--predict", default=None, help="unlabelled file to predict")
            p.add_argument("--output", default=None, help="where predictions go (default beside --predict)")
        _common(p)
    p = sub.add_parser("config", help="print the resolved config (or every field with --fields)")
    p.add_argument("--fields", action="store_true", help="list every key with its type, default and meaning")
    _common(p)
    sub.add_parser("recipes", help="list the packaged recipes")
    return parser


def main(argv: Optional[list[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "recipes":
        print("\n".join(recipe_names()))
        return 0
    logging.basicConfig(level=getattr(logging, args.log_level), format="%(asctime)s %(levelname)s %(name)s: %(message)s",
                        datefmt="%H:%M:%S")
    try:
        if args.command == "config":
            if args.fields:
                for key, tp, default, doc in describe_fields():
                    print(f"{key} ({tp}, default {default!r})\n    {doc}")
            else:
                cfg = load_config(args.config, args.overrides)
                print(yaml.safe_dump(to_dict(cfg), sort_keys=False, allow_unicode=True), end="")
            return 0
        cfg = load_config(args.config, args.overrides)
        fn = _stage(args.command)
        result = _call(args, fn, cfg)
    except UserError as e:
        print(f"mlm-pretrain {args.command}: error: {e}", file=sys.stderr)
        return 2
    if result is not None:
        print(result)
    return 0


def _call(args: argparse.Namespace, fn: Callable, cfg: Config):
    if args.command == "push":
        return fn(args.path, cfg)
    if args.command == "evaluate":
        return fn(cfg, model=args.model, file=args.file, predict=args.predict, output=args.output)
    if args.command == "run":
        return fn(cfg, suite=args.suite, suite_data=args.data)
    if args.command == "suite":
        split = lambda s: [x for x in (s or "").split(",") if x and x != "none"]  # noqa: E731
        return fn(cfg, args.suite, tasks=split(args.tasks) or None, data=args.data, overrides=args.overrides,
                  baselines=split(args.baselines))
    return fn(cfg)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
