"""Subcommands of the generation group: base, plan, personalize, filter-judge, synthesize, quality.

Each handler reads the validated ``generate`` section from ``args.config`` (``lthash.cli.main``
read ``--params``: ``{"generate": {...}}`` as the workflow passes it, or the bare section).
"""

from __future__ import annotations

import argparse


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add this group's subcommands to the ``lthash`` parser."""
    from lthash.cli import add_common_arguments

    base = subparsers.add_parser(
        "base", help="train the tiny text-to-image base model with class-agnostic prompts",
        description="Train the tiny pixel-space text-to-image model from scratch on the split's long-tail "
                    "'train' group, prompted only with 'a photo of a <super-category>'. Resumes from "
                    "<out>.partial/ after a kill.")
    base.add_argument("--split", required=True, help="split file (HDF5)")
    base.add_argument("--out", required=True, help="model folder to write (diffusers format)")
    base.add_argument("--samples", default=None, help="also write the sample grid PNG here")
    base.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    add_common_arguments(base)
    base.set_defaults(func=base_command)

    plan = subparsers.add_parser(
        "plan", help="balancing plan: synthetic images per class and purpose, cut into shards",
        description="From the long-tail class counts, how many synthetic images every class needs for the "
                    "balanced pretraining set and for the balanced synthetic+real mix, and their shards.")
    plan.add_argument("--split-summary", required=True, help="split.json (or the split HDF5 file)")
    plan.add_argument("--out", required=True, help="plan JSON to write")
    add_common_arguments(plan)
    plan.set_defaults(func=plan_command)

    synth = subparsers.add_parser(
        "synthesize", help="draw one shard of synthetic images of one class",
        description="Draw one shard of the plan from a concept folder (lthash personalize) or, with "
                    "--model = the base folder, from the base with its own caption of the class "
                    "(generator 'base'). A complete shard is never redrawn.")
    synth.add_argument("--model", required=True, help="concept folder, or a model folder")
    synth.add_argument("--base", default=None, help="base model folder the concept was made from")
    synth.add_argument("--class", dest="class_index", type=int, required=True, help="class index")
    synth.add_argument("--purpose", required=True, choices=("pretrain", "mix"))
    synth.add_argument("--shard", type=int, required=True, help="shard number within (class, purpose)")
    synth.add_argument("--plan", required=True, help="plan JSON (lthash plan)")
    synth.add_argument("--split", required=True, help="split file (HDF5): shards take its image size")
    synth.add_argument("--out", required=True, help="shard file to write (HDF5)")
    synth.add_argument("--judge", default=None,
                       help="filter judge folder (lthash filter-judge); required when "
                            "generate.synthesis.filter_factor > 1, refused otherwise")
    synth.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    add_common_arguments(synth)
    synth.set_defaults(func=synthesize_command)

    judge = subparsers.add_parser(
        "filter-judge", help="train the synthesis filter's classifier on the long-tail training set",
        description="Train the small CNN that filters over-generated synthetic images "
                    "(generate.synthesis.filter_factor > 1) on the split's long-tail 'train' group alone, "
                    "with class-balanced cross-entropy. Writes judge.safetensors and judge.json (accuracy on "
                    "the split's 'validation' group, if any; never the query group).")
    judge.add_argument("--split", required=True, help="split file (HDF5)")
    judge.add_argument("--out", required=True, help="judge folder to write")
    add_common_arguments(judge)
    judge.set_defaults(func=filter_judge_command)

    quality = subparsers.add_parser(
        "quality", help="class fidelity and diversity of synthetic shards, and a real-vs-synthetic grid",
        description="Judge synthetic images with a classifier trained on the real balanced training set: "
                    "class fidelity, category fidelity, diversity and closeness to the training images, per "
                    "generator and class.")
    quality.add_argument("--split", required=True, help="split file (HDF5)")
    quality.add_argument("--shards", nargs="+", required=True, help="shard files")
    quality.add_argument("--generator", default=None, help="keep only shards of this generator")
    quality.add_argument("--out", required=True, help="metrics JSON to write")
    quality.add_argument("--grid", default=None, help="real-vs-synthetic PNG to write")
    add_common_arguments(quality)
    quality.set_defaults(func=quality_command)

    _register_knowledge(subparsers)

    from lthash.generate.personalize.cli import register as register_personalize

    register_personalize(subparsers)


def _register_knowledge(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``knowledge`` subcommand."""
    from lthash.cli import add_common_arguments

    knowledge = subparsers.add_parser(
        "knowledge", help="what a generator knows of each class, before synthesis (held-out denoising accuracy)",
        description="Classify held-out validation images by the class prompt under which the generator denoises "
                    "them best (the Diffusion Classifier, lthash.generate.knowledge): accuracy over all classes "
                    "and within each super-category group, beside its chance level.")
    knowledge.add_argument("--models", nargs="+", required=True,
                           help="what synthesis draws each class from, in class order: one folder for every class "
                                "(the base, a joint concept) or one concept folder per class")
    knowledge.add_argument("--base", default=None, help="the base model the concepts were personalised from")
    knowledge.add_argument("--split", required=True, help="split file (HDF5); its 'validation' group is read")
    knowledge.add_argument("--generator", required=True, help="the generator's name, recorded in the output")
    knowledge.add_argument("--out", required=True, help="knowledge JSON to write")
    knowledge.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    add_common_arguments(knowledge)
    knowledge.set_defaults(func=knowledge_command)


def base_command(args: argparse.Namespace) -> None:
    from lthash.generate.base import run_base as train
    from lthash.runtime import select_device

    train(args.split, args.out, args.config["generate"], device=select_device(args.device),
          samples_png=args.samples)


def plan_command(args: argparse.Namespace) -> None:
    import logging

    from lthash.generate.plan import plan_from_params, read_summary
    from lthash.io import write_json

    params = args.config["generate"]
    plan = plan_from_params(read_summary(args.split_summary), params["synthesis"])
    plan["seed"] = params["seed"]
    write_json(args.out, plan)
    logging.getLogger("lthash.plan").info(
        "plan: target %d per class, %d pretrain + %d mix synthetic images", plan["target"],
        plan["totals"]["pretrain"], plan["totals"]["mix"])


def synthesize_command(args: argparse.Namespace) -> None:
    from lthash.generate.plan import read_plan
    from lthash.generate.synthesize import synthesize_shard
    from lthash.runtime import select_device

    from lthash.errors import LthashError

    params = args.config["generate"]
    if args.judge is not None and params["synthesis"]["filter_factor"] <= 1:
        raise LthashError("--judge given but config key 'generate.synthesis.filter_factor' is "
                          f"{params['synthesis']['filter_factor']:g}: no filtering happens; drop --judge or raise the factor")
    synthesize_shard(args.model, args.base, args.class_index, args.purpose, args.shard, read_plan(args.plan),
                     args.split, args.out, params, device=select_device(args.device), judge_dir=args.judge)


def filter_judge_command(args: argparse.Namespace) -> None:
    import logging

    from lthash.generate.judge import train_filter_judge

    record = train_filter_judge(args.split, args.out, args.config["generate"])
    logging.getLogger("lthash.filter_judge").info(
        "filter judge written to %s (validation accuracy %s)", args.out, record["validation_accuracy"])


def quality_command(args: argparse.Namespace) -> None:
    from lthash.errors import LthashError
    from lthash.generate.quality import evaluate_quality, save_real_vs_synthetic_grid
    from lthash.io import read_attrs, write_json

    params = args.config["generate"]
    shards = list(args.shards)
    if args.generator is not None:
        shards = [path for path in shards if str(read_attrs(path, "synthetic").get("generator")) == args.generator]
        if not shards:
            raise LthashError(f"no shard of generator {args.generator!r} among {len(args.shards)} file(s)")
    metrics, grid = evaluate_quality(args.split, shards, params)
    write_json(args.out, metrics)
    if args.grid:
        save_real_vs_synthetic_grid(args.grid, grid, params["quality"]["grid_images"])


def knowledge_command(args: argparse.Namespace) -> None:
    import logging

    from lthash.errors import LthashError
    from lthash.generate.knowledge import measure_generator
    from lthash.io import read_attrs, write_json
    from lthash.runtime import select_device

    classes = len(read_attrs(args.split)["class_names"])
    models = list(args.models)
    if len(models) == 1:
        models = models * classes
    if len(models) != classes:
        raise LthashError(f"--models: {len(args.models)} folders for {classes} classes: give one for every class "
                          f"or one per class")
    metrics = measure_generator(models, args.base, args.split, args.config["generate"], args.generator,
                                device=select_device(args.device))
    write_json(args.out, metrics)
    logging.getLogger("lthash.knowledge").info(
        "%s: held-out denoising accuracy %.3f (chance %.3f), within super-category groups %.3f (chance %.3f)",
        args.generator, metrics["accuracy"], metrics["chance"], metrics["within_group_accuracy"],
        metrics["within_group_chance"])
