"""The multi-task branching grammar: which tasks share each of the neck's 8 blocks (yolo/models/neck.py numbers them).

Torch-free on purpose: the config validates `branching` with it before any model exists, and the branching search
enumerates trees with it.
"""

NECK_BLOCK_NAMES = ("top5", "out5", "up5", "top4", "out4", "up4", "top3", "out3")


def neck_groups(branching, num_tasks):
    """Which tasks share each neck block, from config `branching`: groups[j] lists the task groups of block j, one
    group per copy of the block. Raises ValueError naming the first entry that breaks the grammar.

    branching = [[layer_index, [[task ids], ...]], ...]: after block `layer_index` each listed group gets its own
    copy of the remaining blocks. The first entry lists every task once; a later entry splits groups further: it
    lists all the tasks of each group it splits, and groups it does not mention stay as they are. -1 splits right
    after the backbone. Example, 3 tasks: [[2, [[2], [0, 1]]], [4, [[0], [1]]]] -> blocks 0-2 shared by all;
    3-4 one copy for task 2 and one for tasks 0 and 1; 5-7 one copy per task (copies in the order [2], [0], [1]).
    """
    everyone = list(range(num_tasks))
    groups = [[everyone] for _ in NECK_BLOCK_NAMES]
    previous_index, previous_groups = -2, [everyone]
    for n, entry in enumerate(branching or []):
        where = f"config field 'branching', entry {n} {entry!r}"
        if (not isinstance(entry, (list, tuple)) or len(entry) != 2 or not isinstance(entry[0], int)
                or not isinstance(entry[1], (list, tuple))
                or not all(isinstance(g, (list, tuple)) and all(isinstance(t, int) for t in g) for g in entry[1])):
            raise ValueError(f"{where}: must be [layer_index, [[task ids], [task ids], ...]]")
        index, split = entry[0], [sorted(g) for g in entry[1]]
        if index == -2:
            raise ValueError(f"{where}: -2 (a split at the input, which --task rsa may recommend) makes separate "
                             f"models, not one: train each of its groups as its own config (recommended.txt lists "
                             f"them)")
        if not -1 <= index <= len(NECK_BLOCK_NAMES) - 2:
            raise ValueError(f"{where}: layer index {index} is out of range; split after a neck layer -1 (right "
                             f"after the backbone) ... {len(NECK_BLOCK_NAMES) - 2} (python main.py --task info lists them)")
        if index <= previous_index:
            raise ValueError(f"{where}: layer indices must increase from one entry to the next")
        listed = [t for g in split for t in g]
        if len(listed) != len(set(listed)) or not set(listed) <= set(everyone):
            raise ValueError(f"{where}: each task id 0..{num_tasks - 1} may appear once, got {sorted(listed)}")
        if any(not group for group in split):
            raise ValueError(f"{where}: an empty group has no task to serve")
        for group in split:
            if not any(set(group) <= set(parent) for parent in previous_groups):
                raise ValueError(f"{where}: group {group} is not inside one group of the previous entries "
                                 f"{previous_groups}: a branch can only split further, never merge")
        groups_now = []
        for parent in previous_groups:  # each group so far is kept as it is, or split completely
            inside = [g for g in split if set(g) <= set(parent)]
            covered = sorted(t for g in inside for t in g)
            if inside and covered != parent:
                raise ValueError(f"{where}: splits group {parent} but leaves out task(s) "
                                 f"{sorted(set(parent) - set(covered))}; list each of its tasks once")
            groups_now += inside or [parent]
        for j in range(index + 1, len(NECK_BLOCK_NAMES)):
            groups[j] = groups_now
        previous_index, previous_groups = index, groups_now
    return groups


def neck_routes(groups):
    """routes[t][j] = the copy of neck block j that task t runs, for neck_groups' `groups` (block 0 has several
    copies when the split is right after the backbone)."""
    num_tasks = sum(len(g) for g in groups[0])
    return [[next(c for c, g in enumerate(block) if t in g) for block in groups] for t in range(num_tasks)]
