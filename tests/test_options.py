"""Options from one source: command lines generated from dataclass fields, and back."""

from __future__ import annotations

import argparse
import dataclasses

import pytest

from src_train import DEFAULT_DATA_DIR
from src_train.augment import AUGMENTATIONS
from src_train.cli import build_parser
from src_train.commands.infer_folder import InferRunOptions
from src_train.losses import LOSSES
from src_train.masks import available_methods
from src_train.model import ARCHITECTURES
from src_train.options import add_options, option, options_from_args
from src_train.train import AMP_MODES, TrainConfig


def _subparser(name: str) -> argparse.ArgumentParser:
    sub = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    return sub.choices[name]


def _cli_fields(cls: type) -> list[str]:
    return [
        f.name
        for f in dataclasses.fields(cls)
        if f.metadata.get("lunaseg_option", {}).get("cli", False)
    ]


def test_every_train_config_field_is_one_train_option() -> None:
    parser = _subparser("train")
    dests = [a.dest for a in parser._actions]
    for name in _cli_fields(TrainConfig):
        assert dests.count(name) == 1, name
    assert "data_dir" in dests  # the positional DATA_DIR


def test_no_options_give_the_dataclass_defaults() -> None:
    args = _subparser("train").parse_args([])
    assert options_from_args(TrainConfig, args, data_dir=args.data_dir) == TrainConfig()
    assert args.data_dir == DEFAULT_DATA_DIR


def test_values_flags_and_renamed_options_reach_their_fields() -> None:
    args = _subparser("train").parse_args(
        ["DATA", "--epochs", "7", "--lr", "0.01", "--workers", "3", "--no-tensorboard", "--resume"]
    )
    config = options_from_args(TrainConfig, args, data_dir=args.data_dir)
    assert (config.data_dir, config.epochs, config.lr, config.num_workers) == ("DATA", 7, 0.01, 3)
    assert config.tensorboard is False and config.resume is True
    assert config.overwrite is False  # not given: the default


def test_choices_come_from_the_core_registries() -> None:
    parser = _subparser("train")
    choices = {a.dest: tuple(a.choices) for a in parser._actions if a.choices}
    assert choices["model"] == ARCHITECTURES and choices["loss"] == LOSSES
    assert choices["amp"] == AMP_MODES
    assert choices["mask_method"] == tuple(available_methods())
    assert all(name in parser.format_help() for name in AUGMENTATIONS)


def test_help_shows_each_default() -> None:
    text = " ".join(_subparser("train").format_help().split())
    assert "(default: 1024)" in text and "(default: bce)" in text


def test_nested_options_are_flat_on_the_command_line() -> None:
    args = _subparser("infer").parse_args(
        ["--out", "o", "--min-diameter-mm", "3.5", "--no-crop", "--series", "a", "b"]
    )
    options = options_from_args(InferRunOptions, args)
    assert options.series == ("a", "b")
    assert options.inference.crop_to_body is False
    assert options.inference.candidates.min_diameter_mm == 3.5
    assert options.inference.threshold == InferRunOptions().inference.threshold


def test_a_new_field_is_a_new_option() -> None:
    @dataclasses.dataclass
    class Toy:
        size_mm: float = option(2.5, help="a size")
        name: str = option("a", help="a name", choices=("a", "b"))
        hidden: int = option(1, help="set in code only", cli=False)

    parser = argparse.ArgumentParser()
    add_options(parser, Toy)
    assert options_from_args(Toy, parser.parse_args(["--size-mm", "4"])) == Toy(size_mm=4.0)
    with pytest.raises(SystemExit):
        parser.parse_args(["--name", "c"])
    with pytest.raises(SystemExit):
        parser.parse_args(["--hidden", "2"])


@dataclasses.dataclass
class _Lists:
    names: tuple[str, ...] = option(("a", "b"), help="names", choices=("a", "b", "c"))
    counts: tuple[int, int, int] = option((1, 2, 3), help="three counts")
    free: tuple[str, ...] = option((), help="any words")


def _lists(argv: list[str]) -> _Lists:
    parser = argparse.ArgumentParser()
    add_options(parser, _Lists)
    return options_from_args(_Lists, parser.parse_args(argv))


@pytest.mark.parametrize(
    "argv",
    [["--names", "c,a"], ["--names", "c", "a"], ["--names", "c", "a", "--names", "c,a"]],
)
def test_tuple_options_take_commas_or_spaces(argv: list[str]) -> None:
    assert _lists(argv).names == ("c", "a")


def test_tuple_options_convert_check_and_count_their_items() -> None:
    got = _lists(["--counts", "100,50", "50", "--free", "x,y", "z"])
    assert got.counts == (100, 50, 50) and got.free == ("x", "y", "z")
    assert _lists([]) == _Lists()  # not given: the dataclass defaults
    for bad in (
        ["--names", "a,d"],  # d is not a choice
        ["--counts", "1,2"],  # three values needed
        ["--counts", "1,x,3"],  # not an int
        ["--names", "a,,b"],  # an empty item
    ):
        with pytest.raises(SystemExit):
            _lists(bad)


def test_tuple_help_shows_the_comma_default_and_choices() -> None:
    parser = argparse.ArgumentParser()
    add_options(parser, _Lists)
    text = " ".join(parser.format_help().split())
    assert "names (from a, b, c) (default: a,b)" in text
    assert "three counts (default: 1,2,3)" in text


def test_option_args_write_the_command_line_the_parser_reads_back() -> None:
    """A form (the viewer's Training widget) builds its command line from the same metadata:
    flags, negated bools, comma lists; what it writes parses back to the same values."""
    from src_train.images2d.options import CompareOptions
    from src_train.options import option_args, option_choices

    tokens = option_args(
        TrainConfig,
        {"num_workers": 0, "tensorboard": False, "overwrite": True, "resume": False, "lr": 0.01},
    )
    assert tokens == ["--workers", "0", "--no-tensorboard", "--overwrite", "--lr", "0.01"]
    args = _subparser("train").parse_args(["DATA", *tokens])
    config = options_from_args(TrainConfig, args, data_dir="DATA")
    assert (config.num_workers, config.tensorboard, config.overwrite) == (0, False, True)
    compare = option_args(CompareOptions, {"models": ("unet", "segnet"), "split": (60, 20, 20)})
    assert compare == ["--models", "unet,segnet", "--split", "60,20,20"]
    parsed = options_from_args(CompareOptions, _subparser("compare").parse_args(["D", *compare]))
    assert parsed.models == ("unet", "segnet") and parsed.split == (60, 20, 20)
    assert option_choices(TrainConfig, "model") == list(ARCHITECTURES)
    with pytest.raises(KeyError):
        option_args(TrainConfig, {"data_dir": "x"})  # set in code only, no option
