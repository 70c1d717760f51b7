"""Settings declared once (``sugfw.settings``): the machinery on a hand-made declaration, and the
project's declarations: complete, documented (docs/settings.md up to date), shared by the
``sugfw`` command line and the backend, and covering every variable the backend reads."""

from __future__ import annotations

import argparse
import os
import re
from dataclasses import dataclass
from pathlib import Path

import pytest

from backend.config import BackendConfig
from backend.settings_doc import DOC, settings_markdown
from sugfw.errors import InvalidInputError
from sugfw.scorer_options import GRID, RayOptions, ScoringOptions
from sugfw.settings import (
    BOOLEAN,
    INTEGER,
    add_flags,
    at_least,
    check_all,
    declared,
    default_text,
    flag_of,
    from_args,
    from_environ,
    markdown_table,
    setting,
)

ROOT = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class Toy:
    count: int = setting(3, "TOY_COUNT", "how many", kind=INTEGER, check=at_least(1))
    name: str = setting("a", "TOY_NAME", "which one", choices=lambda: ("a", "b"))
    sizes: tuple[int, ...] | None = setting(None, "TOY_SIZES", "sizes", kind=GRID, many=True)
    loud: bool = setting(False, "TOY_LOUD", "shout", kind=BOOLEAN)
    token: str | None = setting(None, "TOY_TOKEN", "a secret", secret=True, strip=False)


def toy_parser(defaults: bool = False) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="toy", exit_on_error=False)
    add_flags(parser, Toy, defaults=defaults)
    return parser


# -- the machinery --------------------------------------------------------------------------------


def test_a_declaration_parses_the_environment():
    env = {"TOY_COUNT": " 5 ", "TOY_LOUD": "yes", "TOY_NAME": "", "TOY_TOKEN": " s3cret "}
    values = from_environ(Toy, env)
    # Empty means unset; a secret is taken verbatim.
    assert values == {"count": 5, "loud": True, "token": " s3cret "}
    assert Toy(**values) == Toy(count=5, loud=True, token=" s3cret ")
    assert from_environ(Toy, {"TOY_SIZES": "64, 96 128"}) == {"sizes": (64, 96, 128)}


def test_a_flag_overrides_the_environment():
    env = from_environ(Toy, {"TOY_COUNT": "5", "TOY_LOUD": "1", "TOY_NAME": "b"})
    args = toy_parser().parse_args(["--count", "7", "--sizes", "1,2", "3"])
    toy = Toy(**{**env, **from_args(Toy, args)})
    # Flags not given stay out, so the environment's values hold for them.
    assert (toy.count, toy.sizes, toy.loud, toy.name) == (7, (1, 2, 3), True, "b")


def test_with_defaults_the_namespace_holds_every_setting():
    args = toy_parser(defaults=True).parse_args([])
    assert (args.count, args.name, args.sizes, args.loud) == (3, "a", None, False)
    assert Toy(**from_args(Toy, args)) == Toy()


@pytest.mark.parametrize(
    "env,message",
    [
        ({"TOY_COUNT": "many"}, "TOY_COUNT='many': expected an integer"),
        ({"TOY_LOUD": "maybe"}, r"TOY_LOUD='maybe': expected 1 or 0"),
        ({"TOY_SIZES": "0"}, "TOY_SIZES='0': expected positive integers"),
    ],
)
def test_a_bad_variable_is_an_error_naming_it(env, message):
    with pytest.raises(InvalidInputError, match=message):
        from_environ(Toy, env)


def test_checks_name_the_variable():
    with pytest.raises(InvalidInputError, match=r"TOY_COUNT=0: expected an integer >= 1"):
        check_all(Toy(count=0))
    with pytest.raises(InvalidInputError, match=r"TOY_NAME='c': expected one of a, b"):
        check_all(Toy(name="c"))
    check_all(Toy())


def test_a_bad_flag_is_an_error_naming_the_flag():
    with pytest.raises(argparse.ArgumentError, match=r"--count=0: expected an integer >= 1"):
        toy_parser().parse_args(["--count", "0"])
    with pytest.raises(argparse.ArgumentError, match="invalid choice"):
        toy_parser().parse_args(["--name", "c"])


def test_a_secret_has_no_flag_and_shows_as_environment_only():
    names = {name: declaration for name, declaration, _ in declared(Toy)}
    assert flag_of("token", names["token"]) is None
    assert "--token" not in toy_parser().format_help()
    table = markdown_table(Toy)
    assert len(table.splitlines()) == 2 + len(names)
    assert "| `TOY_TOKEN` | environment only |" in table
    assert "| `TOY_NAME` | `--name` | a / b | a |" in table


# -- the project's declarations -------------------------------------------------------------------


def test_docs_settings_md_is_generated_from_the_declarations():
    assert DOC == ROOT / "docs" / "settings.md"
    assert DOC.read_text() == settings_markdown(), (
        "docs/settings.md is out of date: run `python -m backend.settings_doc`"
    )


def test_every_setting_has_a_variable_type_default_and_help():
    envs, flags = [], []
    for name, declaration, default in declared(BackendConfig):
        assert re.fullmatch(r"[A-Z][A-Z0-9_]+", declaration.env), name
        assert declaration.kind.name and declaration.help.strip(), name
        assert default_text(declaration, default), name
        envs.append(declaration.env)
        flag = flag_of(name, declaration)
        if flag is not None:
            flags.append(flag)
    assert len(envs) == len(set(envs)) and len(flags) == len(set(flags))


def test_secrets_are_environment_only_and_masked():
    secrets = {d.env for _, d, _ in declared(BackendConfig) if d.secret}
    assert secrets == {"LABEL_STUDIO_API_KEY", "BASIC_AUTH_PASS"}
    from backend._wsgi import build_parser

    help_text = build_parser().format_help()
    assert "--label-studio-api-key" not in help_text and "--basic-auth-pass" not in help_text


def _backend_sources() -> str:
    return "\n".join(path.read_text() for path in sorted((ROOT / "backend").rglob("*.py")))


def test_every_variable_the_backend_reads_is_declared():
    source = _backend_sources()
    read = set(re.findall(r"(?:environ\.get|getenv)\(\s*\"([A-Z][A-Z0-9_]+)\"", source))
    read |= set(re.findall(r"environ\[\"([A-Z][A-Z0-9_]+)\"\]", source))
    read |= set(re.findall(r"^\w+_ENV = \"([A-Z][A-Z0-9_]+)\"", source, re.MULTILINE))
    # Every SUGFW_* name the backend mentions, except the keys of Flask's app.config.
    read |= set(re.findall(r"\b(SUGFW_[A-Z0-9_]*[A-Z0-9])\b", source))
    read -= set(re.findall(r"config\[\"(SUGFW_[A-Z0-9_]+)\"\]", source))
    declared_envs = {d.env for _, d, _ in declared(BackendConfig)}
    assert read and read <= declared_envs, sorted(read - declared_envs)


def test_the_backend_exposes_every_scoring_setting_of_the_command_line():
    from backend._wsgi import build_parser as backend_parser
    from sugfw.cli import build_parser as cli_parser

    def flags(parser: argparse.ArgumentParser) -> set[str]:
        return {option for action in parser._actions for option in action.option_strings}

    score = cli_parser()._subparsers._group_actions[0].choices["score"]  # type: ignore[union-attr]
    scoring = {
        flag_of(name, d) for cls in (ScoringOptions, RayOptions) for name, d, _ in declared(cls)
    }
    assert scoring <= flags(score) and scoring <= flags(backend_parser())


def test_the_backend_scorer_gets_thresholds_and_precision(monkeypatch):
    from backend._wsgi import build_parser, config_from_args
    from backend.jobs.slice_scorer import scorer_spec
    from sugfw.cli import build_parser as cli_parser
    from sugfw.cli import scorer_spec as cli_scorer_spec

    for name in list(os.environ):
        if name.startswith("SUGFW_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("SUGFW_PRED_IOU_THRESH", "0.7")
    monkeypatch.setenv("SUGFW_PRECISION", "bf16")
    monkeypatch.setenv("SUGFW_GRID", "64,96")
    flags = ["--stability-thresh", "0.9", "--max-area", "0.5", "--box-nms-thresh", "0.6"]
    spec = scorer_spec(config_from_args(build_parser().parse_args(flags)))
    assert (spec.pred_iou_thresh, spec.stability_thresh, spec.precision, spec.grid) == (
        0.7,
        0.9,
        "bf16",
        (64, 96),
    )
    assert (spec.max_area_fraction, spec.box_nms_thresh) == (0.5, 0.6)
    # The same flags build the same scorer on the command line (which reads no scoring variable).
    cli_flags = [*flags, "--pred-iou-thresh", "0.7", "--precision", "bf16", "--grid", "64", "96"]
    assert cli_scorer_spec(cli_parser().parse_args(["score", "x", *cli_flags])) == spec


def test_the_ray_address_is_read_from_its_declaration():
    from sugfw.distributed import ray_address_from_env

    env = {"SUGFW_RAY_ADDRESS": " auto ", "SUGFW_RAY_ACTORS": "2"}
    config = BackendConfig.from_env(env)
    assert (config.ray_address, config.ray_actors) == ("auto", 2)
    assert ray_address_from_env(env) == "auto"
