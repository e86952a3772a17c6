"""``lthash personalize``: one concept (class x generator) from the base model and the split."""

from __future__ import annotations

import argparse


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``personalize`` subcommand."""
    from lthash.cli import add_common_arguments
    from lthash.generate.personalize.method import personalised_names

    parser = subparsers.add_parser(
        "personalize", help="personalise the base model to one class (AttnDreamBooth, DreamBooth, Textual Inversion)",
        description="Personalise the base text-to-image model to one class of the long-tail training split "
                    "and write a concept folder (concept.json, [V] embedding, changed UNet, sample grids).")
    parser.add_argument("--base", required=True, help="base model folder (tiny base or Stable Diffusion, diffusers format)")
    parser.add_argument("--split", required=True, help="split file (HDF5); only its long-tail 'train' group is read")
    parser.add_argument("--class", dest="class_index", type=int, required=True, help="class index")
    parser.add_argument("--generator", required=True,
                        help=f"the personalisation method, one of {', '.join(personalised_names())}")
    parser.add_argument("--out", required=True, help="concept folder to write")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    add_common_arguments(parser)
    parser.set_defaults(func=personalize_command)

    joint = subparsers.add_parser(
        "personalize-joint", help="personalise the base model to every class at once (generator joint)",
        description="Teach the base text-to-image model every class of the long-tail training split in one run "
                    "(one token per class + the UNet, class-balanced batches, the base's category captions "
                    "replayed from its corpus) and write a joint concept folder (joint.json, token embeddings, "
                    "UNet, loss.csv, sample grid).")
    joint.add_argument("--base", required=True, help="base model folder (tiny base or Stable Diffusion, diffusers format)")
    joint.add_argument("--split", required=True, help="split file (HDF5); only its long-tail 'train' group is read")
    joint.add_argument("--generator", default="joint", help="the joint personalisation method (joint)")
    joint.add_argument("--out", required=True, help="joint concept folder to write")
    joint.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    add_common_arguments(joint)
    joint.set_defaults(func=personalize_joint_command)


def personalize_command(args: argparse.Namespace) -> None:
    from lthash.errors import LthashError
    from lthash.generate.personalize.method import get_method
    from lthash.generate.personalize.runner import personalize
    from lthash.runtime import select_device

    if get_method(args.generator).joint:
        raise LthashError(f"generator {args.generator!r} teaches every class in one run: use "
                          f"lthash personalize-joint --generator {args.generator}")
    personalize(args.base, args.split, args.class_index, args.generator, args.out, args.config["generate"],
                device=select_device(args.device))


def personalize_joint_command(args: argparse.Namespace) -> None:
    from lthash.errors import LthashError
    from lthash.generate.personalize.joint_trainer import personalize_joint
    from lthash.generate.personalize.method import get_method
    from lthash.runtime import select_device

    if not get_method(args.generator).joint:
        raise LthashError(f"generator {args.generator!r} personalises one class at a time: use lthash personalize")
    personalize_joint(args.base, args.split, args.out, args.config["generate"], device=select_device(args.device))
