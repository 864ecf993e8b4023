"""benchmarks/results/ takes numbers only from a clean tree; ``--scratch`` and pinned worktrees are the ways around.

Each test builds a tiny git repository in ``tmp_path`` to stand for the project's tree.
"""

from __future__ import annotations

import argparse
import importlib
import subprocess
import sys
from pathlib import Path

import pytest

from benchmarks import common, pinned, tree

# every benchmark that writes into benchmarks/results/ (camvid_multilabel writes a derived data set)
WRITERS = ("budget", "classification", "ladder", "loss_speed", "plan_compare", "pretrained_size", "quality", "select",
           "speed", "unet11_from_scratch")  # fmt: skip


def git(root: Path, *arguments: str) -> str:
    command = ["git", "-c", "user.name=test", "-c", "user.email=test@example.com", *arguments]
    return subprocess.run(command, cwd=root, capture_output=True, text=True, check=True).stdout.strip()


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    """A committed tree with a source file and a results file."""
    root = tmp_path / "project"
    (root / "benchmarks" / "results").mkdir(parents=True)
    (root / "model.py").write_text("x = 1\n")
    (root / "benchmarks" / "results" / "old.md").write_text("old\n")
    git(root, "init", "--quiet")
    git(root, "add", ".")
    git(root, "commit", "--quiet", "-m", "first")
    return root


def scratch(flag: bool) -> argparse.Namespace:
    return argparse.Namespace(scratch=flag)


def test_a_clean_tree_writes_into_the_results(repo):
    (repo / "notes.txt").write_text("untracked files do not count\n")
    (repo / "benchmarks" / "results" / "old.md").write_text("a benchmark's own rewrite does not count\n")
    assert common.results_dir(scratch(False), repo) == repo / "benchmarks" / "results"
    assert tree.git_commit(repo) == git(repo, "rev-parse", "--short", "HEAD")


@pytest.mark.parametrize("staged", [False, True])
def test_a_dirty_tree_is_refused_in_one_line_naming_the_files(repo, capsys, staged):
    (repo / "model.py").write_text("x = 2\n")
    if staged:
        git(repo, "add", "model.py")
    with pytest.raises(SystemExit) as raised:
        common.results_dir(scratch(False), repo)
    assert raised.value.code == 2
    error = capsys.readouterr().err
    assert error.count("\n") == 1 and "uncommitted: model.py." in error and "--scratch" in error
    assert tree.git_commit(repo).endswith("+uncommitted")


def test_scratch_writes_elsewhere_from_a_dirty_tree(repo):
    (repo / "model.py").write_text("x = 2\n")
    folder = common.results_dir(scratch(True), repo)
    assert folder == repo / "runs" / "scratch_results" and folder.is_dir()


def test_outside_a_git_checkout_nothing_is_written_into_the_results(tmp_path, capsys):
    with pytest.raises(SystemExit) as raised:
        common.results_dir(scratch(False), tmp_path)
    assert raised.value.code == 2 and "not a git checkout" in capsys.readouterr().err


def test_a_benchmark_refuses_a_dirty_tree_before_it_runs(repo, monkeypatch, capsys):
    """Through a benchmark's own parser: the refusal comes when the options are parsed."""
    from benchmarks import ladder

    (repo / "model.py").write_text("x = 2\n")
    monkeypatch.setattr(common, "ROOT", repo)
    monkeypatch.setattr(sys, "argv", ["ladder.py", "--dataset", "membrane"])
    with pytest.raises(SystemExit) as raised:
        ladder.parse()
    assert raised.value.code == 2 and "model.py" in capsys.readouterr().err
    monkeypatch.setattr(sys, "argv", ["ladder.py", "--dataset", "membrane", "--scratch"])
    assert ladder.parse().scratch


@pytest.mark.parametrize("name", WRITERS)
def test_every_benchmark_takes_scratch(name, monkeypatch, capsys):
    module = importlib.import_module(f"benchmarks.{name}")
    monkeypatch.setattr(sys, "argv", [f"{name}.py", "--help"])
    with pytest.raises(SystemExit) as raised:
        (module.parse if hasattr(module, "parse") else module.main)()
    assert raised.value.code == 0 and "--scratch" in capsys.readouterr().out


WRITE_RESULT = (
    "import os, pathlib, subprocess; "
    "commit = subprocess.run(['git', 'rev-parse', '--short=12', 'HEAD'], capture_output=True, text=True).stdout; "
    "pathlib.Path('benchmarks/results/new.md').write_text(commit.strip() + ' ' + os.environ['PYTHONPATH']); "
    "raise SystemExit(3)"
)


def test_pinned_runs_in_a_worktree_of_the_commit_and_copies_its_results_back(repo, capsys):
    first = git(repo, "rev-parse", "--short=12", "HEAD")
    (repo / "model.py").write_text("x = 2\n")
    git(repo, "commit", "--quiet", "-am", "second")
    (repo / "model.py").write_text("x = 3, being edited\n")
    (repo / "benchmarks" / "results" / "old.md").write_text("the main tree's newer result\n")

    assert pinned.main([first, "--", sys.executable, "-c", WRITE_RESULT], root=repo) == 3  # the command's status
    worktree = repo / "runs" / "worktrees" / first
    assert (worktree / "model.py").read_text() == "x = 1\n"
    commit, path = (repo / "benchmarks" / "results" / "new.md").read_text().split(" ", 1)
    assert commit == first and path.split(":")[0] == str(worktree)  # its own code first on the path
    # only what the command wrote comes back: the worktree's old.md is older than the main tree's
    assert (repo / "benchmarks" / "results" / "old.md").read_text() == "the main tree's newer result\n"
    assert "pinned: copied benchmarks/results/new.md" in capsys.readouterr().err

    (worktree / "benchmarks" / "results" / "new.md").unlink()  # reused, and clean apart from its results
    assert pinned.main(["HEAD~1", "--", sys.executable, "-c", WRITE_RESULT], root=repo) == 3
    assert (worktree / "benchmarks" / "results" / "new.md").is_file()


def test_pinned_refuses_an_unknown_commit_and_an_edited_worktree(repo, capsys):
    with pytest.raises(SystemExit) as raised:
        pinned.main(["nosuchcommit", "--", "true"], root=repo)
    assert raised.value.code == 2 and "'nosuchcommit' is not a commit" in capsys.readouterr().err
    assert pinned.main(["HEAD", "--", "true"], root=repo) == 0
    worktree = next((repo / "runs" / "worktrees").iterdir())
    (worktree / "model.py").write_text("edited in the worktree\n")
    with pytest.raises(SystemExit) as raised:
        pinned.main(["HEAD", "--", "true"], root=repo)
    assert raised.value.code == 2 and "uncommitted changes (model.py)" in capsys.readouterr().err


@pytest.mark.skipif(__import__("torch").cuda.is_available(), reason="this machine has CUDA: the check would run")
def test_the_gpu_check_refuses_a_machine_without_cuda() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "benchmarks.gpu_check", "--scratch"], capture_output=True, text=True, check=False
    )
    assert done.returncode == 2 and done.stderr.count("\n") == 1 and "no CUDA device" in done.stderr
