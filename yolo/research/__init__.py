"""Research systems built on the detector, apart from the training path (yolo/engine/ keeps only what training runs):

    evolve.py       hyperparameter evolution (YOLOv5's algorithm): search table, mutation, evolve.csv
    evolve_ray.py   the same search through Ray Tune (searchers, ASHA), optional
    confirm.py      evolve's winner chosen on the mean of retrainings with other seeds (confirm.csv)
    rsa.py          representation similarity analysis: layer features, RDMs, their comparison across tasks
    tree_search.py  every branching tree of the multi-task neck, scored by RSA dissimilarity and compute
    merge.py        merge single-task checkpoints into one multi-task checkpoint, peel one task back out
    head_search.py  the head search's steps: cached backbone + neck features, the start from a trained detector,
                    the first- or second-order architecture step with its latency term

The commands in yolo/tasks/ (evolve, rsa, merge, peel, search_head) drive them; they import the engine and the
layers below.
"""
