"""Packaged configs (:mod:`drama.packaged_configs`, :func:`drama.config.find_config_file`): the files of the
repository's ``conf/`` addressed by name from any directory, ``drama config list|show``, one-line errors."""

from __future__ import annotations

import json

import pytest

from conftest import ROOT
from drama import packaged_configs
from drama.cli import main
from drama.config import ConfigError, find_config_file, load_config

NAMES = ["atari", "cartpole", "debug", "laptop", "sweeps/atari100k", "sweeps/backbones", "sweeps/tiny"]


def listing(folder):
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*"))


def test_the_packaged_configs_are_the_repositorys_conf_files():
    assert packaged_configs.names() == NAMES
    for name in NAMES:  # one source: the same bytes as conf/ (in a checkout, the very same files)
        assert packaged_configs.path(name).read_bytes() == (ROOT / "conf" / f"{name}.yaml").read_bytes()
        assert packaged_configs.description(name)
    assert sorted(p.relative_to(ROOT / "conf").with_suffix("").as_posix() for p in (ROOT / "conf").rglob("*.yaml")) \
        == sorted(NAMES)  # every file in conf/ is packaged (pyproject's package data lists conf/*.yaml, sweeps/)


def test_names_resolve_from_any_directory_and_paths_win(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    for spelling in ("atari", "atari.yaml", "conf/atari.yaml"):
        assert find_config_file(spelling) == packaged_configs.path("atari")
    assert load_config("debug").env.id == load_config(ROOT / "conf/debug.yaml").env.id
    mine = tmp_path / "atari"
    mine.write_text("train: {total_steps: 7}\n")  # a file of that name here: the path wins
    assert find_config_file("atari").resolve() == mine and load_config("atari").train.total_steps == 7
    with pytest.raises(ConfigError, match="sweep file not found: nosuch .*sweeps/tiny; see drama config list"):
        find_config_file("nosuch", "sweep file")


def test_fit_with_an_unknown_config_is_one_line_listing_the_names(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(["fit", "--config", "nosuch", f"runtime.output_dir={tmp_path / 'runs'}"]) == 2
    err = capsys.readouterr().err
    assert err == ("drama: error: config file not found: nosuch (neither a file nor a packaged config: "
                   f"{', '.join(NAMES)}; see drama config list)\n")
    assert listing(tmp_path) == []


def test_config_list_and_show(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(["config", "list"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [line.split()[0] for line in lines] == NAMES and all(len(line.split()) > 3 for line in lines)
    assert main(["config", "show", "atari"]) == 0
    copy = tmp_path / "my.yaml"
    copy.write_text(capsys.readouterr().out)  # drama config show atari > my.yaml
    assert copy.read_text() == (ROOT / "conf/atari.yaml").read_text()
    assert main(["info", "--config", str(copy)]) == 0
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["world_model_total"] == 7_155_459
    assert main(["config", "show", "nosuch"]) == 2
    assert capsys.readouterr().err == f"drama: error: no packaged config 'nosuch': the names are {', '.join(NAMES)}\n"


def test_a_packaged_sweep_by_name(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(["sweep", "sweeps/tiny", "--dry-run"]) == 0
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["trials"] == 4
    assert listing(tmp_path) == []
