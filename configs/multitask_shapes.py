"""Multi-task demo on two built-in datasets: one model, a shared backbone, a neck that splits after layer 2, one
head per task.

    python main.py --config configs/multitask_shapes.py --task info    # the branching tree, params per task
    python main.py --config configs/multitask_shapes.py --task train
    python main.py --config configs/multitask_shapes.py --task predict # labels read task/class

Task "shapes" is the default dataset's classes, task "symbols" a second synthetic dataset with other classes
(another generator seed, so other images). Each optimizer step takes one batch of each task.
"""
from configs.my_config import MyConfig


class MultiTaskShapesConfig(MyConfig):  # the default run's model and schedule, on two tasks
    def __init__(self):
        super().__init__()
        self.run_name = "multitask_shapes"
        self.tasks = [
            dict(name="shapes", dataset="shapes", data_root="data/shapes_mt", class_names=["circle", "square", "triangle"]),
            dict(name="symbols", dataset="shapes", data_root="data/symbols", class_names=["star", "cross", "ring"],
                 shapes_seed=1),
        ]
        # neck layers 0-2 (top5, out5, up5) shared; each task its own copy of layers 3-7 (python main.py --task info)
        self.branching = [[2, [[0], [1]]]]
        self.task_weights = [1.0, 1.0]
        self.shapes_num_train = 1000           # per task: one epoch is then as long as the default run's
        self.shapes_num_val = 200
