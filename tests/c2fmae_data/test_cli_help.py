"""Every option of the built-in c2fmae-data verbs says what it does and its default, once."""
from __future__ import annotations

import argparse

import pytest

from c2fmae_data.cli import build_parser

VERBS = ("verify", "inspect", "manifest", "convert-coco", "download")


def subparser(name: str) -> argparse.ArgumentParser:
    sub = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    return sub.choices[name]


@pytest.mark.parametrize("verb", VERBS)
def test_every_option_has_help_with_one_default(verb):
    p = subparser(verb)
    assert p.description, f"{verb} has no description"
    for a in p._actions:
        if isinstance(a, argparse._HelpAction):
            continue
        assert a.help and len(a.help) > 12, f"{verb} {a.dest}: no help"
        if a.option_strings:
            text = a.help % {"default": a.default}
            assert text.count("default") == 1 or (a.required and "required" in text), \
                f"{verb} {a.option_strings[0]}: says its default {text.count('default')} times"
    rendered = p.format_help()
    assert "(default: None)" not in rendered and "%(" not in rendered


def test_defaults_are_the_real_ones():
    assert "(default: 16)" in subparser("inspect").format_help()
    assert "(default: 1000)" in " ".join(subparser("convert-coco").format_help().split())
    assert "(default: 4)" in subparser("download").format_help()
