"""A scratch copy of the working tree, for the tests that build in it
(test_install.py, test_package.py) without racing a build in the repo or
leaving one there."""

import fnmatch
import os
import re
import shutil
import stat
import subprocess
from pathlib import Path

from .base import REPO_DIR, HarnessError

PACKAGE = "libapache2-mod-gwe-balancer"
# Build products a developer's in-tree package build could leave in debian/
# (untracked, not ignored); never copied.
DEBIAN_BUILD_PRODUCTS = re.compile(
    r"^debian/(\.debhelper/|tmp/|%s(-dbgsym)?/|files$|.*\.substvars$"
    r"|debhelper-build-stamp$|.*\.debhelper\.log$|.*\.debhelper$)" % PACKAGE)


def copy_working_tree(dest, repo=REPO_DIR):
    """Copy the working tree's files as they are now (edits and new files
    not committed yet included) to dest, minus build output: what git
    ignores.  In a git checkout with git installed, git says which files
    those are; elsewhere (a release tarball, `git archive` output, a
    machine without git) the top .gitignore's patterns do."""
    repo, dest = Path(repo), Path(dest)
    if (repo / ".git").exists() and shutil.which("git"):
        files = _git_files(repo)
    else:
        files = _unignored_files(repo)
    for rel in files:
        if DEBIAN_BUILD_PRODUCTS.match(rel):
            continue
        src = repo / rel
        if not os.path.lexists(src):      # deleted, not yet committed
            continue
        mode = os.lstat(src).st_mode
        if not (stat.S_ISREG(mode) or stat.S_ISLNK(mode)):
            continue
        target = dest / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(src, target, follow_symlinks=False)


def tree_entries(root):
    """(relative path, path, os.lstat() of it) for everything under root,
    directories included, links not followed; nothing if root is absent."""
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            path = Path(dirpath) / name
            yield str(path.relative_to(root)), path, os.lstat(path)


def _git_files(repo):
    """Tracked and untracked files that git does not ignore."""
    proc = subprocess.run(["git", "-C", str(repo), "ls-files", "-z",
                           "--cached", "--others", "--exclude-standard"],
                          stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, timeout=60)
    if proc.returncode != 0:
        raise HarnessError("git ls-files exited %d: %s" % (
            proc.returncode, proc.stderr.decode(errors="replace")))
    return [rel for rel in proc.stdout.decode().split("\0") if rel]


def _unignored_files(repo):
    """Every file under repo that repo/.gitignore does not ignore, and
    nothing of git's own (.git, a directory, or a file in a worktree)."""
    patterns = _gitignore_patterns(repo / ".gitignore")
    files = []
    for dirpath, dirnames, filenames in os.walk(repo):
        top = Path(dirpath).relative_to(repo)
        dirnames[:] = sorted(
            d for d in dirnames if d != ".git"
            and not _ignored((top / d).parts, True, patterns))
        files += [str(top / f) for f in sorted(filenames) if f != ".git"
                  and not _ignored((top / f).parts, False, patterns)]
    return files


def _gitignore_patterns(path):
    """The patterns of a .gitignore as (anchored, directory only, parts),
    for the subset of gitignore(5) this project uses: globs, a leading /
    (anchored at the top) or a / inside (anchored too), a trailing / (a
    directory only).  Negation and ** raise HarnessError: a copy made
    without git must not silently differ from one made with it."""
    if not path.exists():
        return []
    patterns = []
    for line in path.read_text().splitlines():
        line = line.rstrip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("!") or "**" in line:
            raise HarnessError("%s: %r is beyond what copy_working_tree() "
                               "understands" % (path, line))
        dir_only = line.endswith("/")
        body = line.rstrip("/")
        patterns.append(("/" in body, dir_only,
                         tuple(body.lstrip("/").split("/"))))
    return patterns


def _ignored(parts, is_dir, patterns):
    """Whether the path parts (relative to the top) match a pattern."""
    for anchored, dir_only, pattern in patterns:
        if dir_only and not is_dir:
            continue
        candidate = parts if anchored else parts[-1:]
        if len(candidate) == len(pattern) and all(
                fnmatch.fnmatchcase(part, glob)
                for part, glob in zip(candidate, pattern)):
            return True
    return False
