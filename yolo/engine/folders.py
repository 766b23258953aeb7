"""New names for results: a run or a result never replaces an earlier one. The first gets the name asked for, the
next ones the name with 2, 3 ... appended (runs/exp, runs/exp2; merge/mt.pt, merge/mt2.pt).

A name is taken by creating it (mkdir, or opening the file with O_EXCL), which fails when it exists: two processes
asking for one name at once get two different names. Checking first and creating after would let both see the name
free and one of them crash.
"""
import re
from pathlib import Path


def next_free_dir(base):
    """Create and return the first of base, base2, base3 ... that does not exist (its parents are created too)."""
    base = Path(base)
    return take_first_free(lambda n: base if n == 1 else base.with_name(f"{base.name}{n}"), Path.mkdir)


def next_free_path(path):
    """Create (empty) and return the first of path, then the name with 2, 3 ... before its suffix (x.pt, x2.pt ...),
    that does not exist. The caller replaces the empty file with the result (save_checkpoint writes beside it and
    renames over it)."""
    path = Path(path)
    return take_first_free(lambda n: path if n == 1 else path.with_name(f"{path.stem}{n}{path.suffix}"),
                           lambda candidate: open(candidate, "x").close())


def take_first_free(name_of, create):
    """name_of(1), name_of(2) ...: the first that create() makes without FileExistsError (it fails when the name is
    taken, by an earlier result or by a process that got there first)."""
    name_of(1).parent.mkdir(parents=True, exist_ok=True)
    n = 1
    while True:
        try:
            create(name_of(n))
            return name_of(n)
        except FileExistsError:
            n += 1


def numbered_dirs(base):
    """The existing folders next_free_dir(base) made: base, base2, base3 ..., oldest first (numeric order: base10
    comes after base9). Other folders that start with the name (base_evolve, base02) are not among them."""
    base = Path(base)
    found = [(1, base)] if base.is_dir() else []
    if base.parent.is_dir():
        found += [(n, path) for path in base.parent.iterdir()
                  if (n := copy_number(path.name, base.name)) and path.is_dir()]
    return [path for _, path in sorted(found)]


def numbered_paths(path):
    """The existing files next_free_path(path) made: path, then the name with 2, 3 ... before its suffix, oldest first
    (numeric order: x10.pt comes after x9.pt). Other files that start with the name (x_old.pt, x02.pt) are not."""
    path = Path(path)
    found = [(1, path)] if path.is_file() else []
    if path.parent.is_dir():
        found += [(n, other) for other in path.parent.iterdir()
                  if other.suffix == path.suffix and (n := copy_number(other.stem, path.stem)) and other.is_file()]
    return [other for _, other in sorted(found)]


def copy_number(name, first_name):
    """n when `name` is first_name followed by n >= 2 (the n-th name next_free_* gives), else None: a leading zero
    (x02) or any other tail (x_old) is not one of those names."""
    number = name[len(first_name):] if name.startswith(first_name) else ""
    return int(number) if re.fullmatch(r"[1-9][0-9]*", number) and int(number) >= 2 else None
