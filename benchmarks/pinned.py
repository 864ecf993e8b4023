"""Run a benchmark from a pinned commit in its own git worktree, so that editing this tree cannot disturb it.

    nohup python -m benchmarks.pinned cdd315f -- python -m benchmarks.budget --minutes 60 > runs/budget.log 2>&1 &

Creates ``runs/worktrees/<commit>`` with ``git worktree add --detach`` (or reuses it: a resumable benchmark
resumes there) and runs the command in it with this venv's ``bin`` first on ``PATH`` and the worktree first on
``PYTHONPATH``: the venv's editable install points at this tree, so without it the worktree's benchmarks would
import this tree's ``ternaus_zoo``. ``TERNAUS_ZOO_DATA`` defaults to this tree's data folder. The results name
the pinned commit (the worktree is clean); every file the command wrote into the worktree's
``benchmarks/results/`` is copied into this tree's when it ends, however it ends, to be committed from here. The
exit status is the command's; SIGTERM is passed on to it.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

from benchmarks.tree import ROOT, data_root, uncommitted_files

WORKTREES = Path("runs") / "worktrees"  # under the tree's root; ignored by git
RESULTS = Path("benchmarks") / "results"


def fail(message: str) -> None:
    print(message, file=sys.stderr)
    raise SystemExit(2)


def worktree(commit: str, root: Path) -> Path:
    """The clean worktree of ``commit`` under ``root/runs/worktrees/``, created on first use."""
    resolved = subprocess.run(
        ["git", "rev-parse", "--verify", "--quiet", "--short=12", f"{commit}^{{commit}}"],
        cwd=root,
        capture_output=True,
        text=True,
    )
    if resolved.returncode != 0:
        fail(f"{commit!r} is not a commit of {root}")
    short = resolved.stdout.strip()
    folder = root / WORKTREES / short
    if not folder.is_dir():
        subprocess.run(["git", "worktree", "prune"], cwd=root, check=True)  # forgets folders deleted by hand
        subprocess.run(["git", "worktree", "add", "--detach", "--quiet", str(folder), short], cwd=root, check=True)
    head = subprocess.run(["git", "rev-parse", "--short=12", "HEAD"], cwd=folder, capture_output=True, text=True)
    if head.stdout.strip() != short:
        fail(f"{folder} is checked out at {head.stdout.strip() or 'no commit'}, not {short}: remove it")
    changed = uncommitted_files(folder)
    if changed:
        fail(f"{folder} has uncommitted changes ({', '.join(changed)}): the results would not be {short}'s")
    return folder


def snapshot(folder: Path) -> dict[Path, tuple[int, int]]:
    """``{path relative to folder: (mtime_ns, size)}`` of every file under ``folder``."""
    files = (path for path in folder.rglob("*") if path.is_file()) if folder.is_dir() else ()
    return {path.relative_to(folder): (path.stat().st_mtime_ns, path.stat().st_size) for path in files}


def main(argv: Sequence[str] | None = None, root: Path = ROOT) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("commit", help="the commit to run (anything git rev-parse accepts: a hash, a tag, HEAD)")
    parser.add_argument("command", nargs=argparse.REMAINDER, help="-- then the command, run in the worktree")
    options = parser.parse_args(argv)
    command = options.command[1:] if options.command[:1] == ["--"] else options.command
    if not command:
        parser.error("no command: pass -- then the command to run, e.g. -- python -m benchmarks.speed")
    folder = worktree(options.commit, root)
    environment = dict(os.environ)
    environment["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), environment.get("PATH", "")])
    environment["PYTHONPATH"] = os.pathsep.join(filter(None, [str(folder), environment.get("PYTHONPATH")]))
    environment.setdefault("TERNAUS_ZOO_DATA", str(data_root()))
    before = snapshot(folder / RESULTS)
    print(f"pinned: running in {folder}", file=sys.stderr, flush=True)
    process = subprocess.Popen(command, cwd=folder, env=environment)
    previous = signal.signal(signal.SIGTERM, lambda signum, frame: process.send_signal(signum))
    try:
        code = process.wait()
    except KeyboardInterrupt:  # the command got the same Ctrl-C: let it save its state and end first
        code = process.wait()
    signal.signal(signal.SIGTERM, previous)
    for path, stamp in snapshot(folder / RESULTS).items():
        if before.get(path) != stamp:
            (root / RESULTS / path).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(folder / RESULTS / path, root / RESULTS / path)
            print(f"pinned: copied {RESULTS / path}", file=sys.stderr, flush=True)
    return code


if __name__ == "__main__":
    sys.exit(main())
